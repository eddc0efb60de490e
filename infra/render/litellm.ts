import type { TenantConfig } from "../config.ts";
import { providerKeyVar } from "./env-file.ts";
import { readYamlDocument, yamlText } from "./template.ts";

/** LiteLLM's address for the local vLLM: the compose service, OpenAI path included. */
export const VLLM_API_BASE = "http://vllm:8000/v1";

/** LiteLLM's config: the tenant's vLLM model, then each external provider's, keys from the environment. */
export function renderLitellmConfig(config: TenantConfig): string {
  const doc = readYamlDocument("litellm.yaml");
  doc.setIn(["model_list"], [
    {
      model_name: config.model.servedName,
      litellm_params: {
        model: `hosted_vllm/${config.model.servedName}`,
        api_base: VLLM_API_BASE,
        api_key: "os.environ/VLLM_API_KEY",
      },
      // LiteLLM's proxy registers a deployment's model_info in its price map. Without it the model
      // is unknown there, and for an unknown model LiteLLM fakes a Responses API stream (utils.py
      // supports_native_streaming answers False; OpenAIResponsesAPIConfig.should_fake_stream):
      // it asks vLLM for the whole answer, then replays it, so a long one reaches no client byte
      // before the shim's upstream timeout (BerriAI/litellm#21090).
      model_info: { supports_native_streaming: true },
    },
    ...config.providers.map((p, i) => ({
      model_name: p.name,
      litellm_params: { model: p.model, api_key: `os.environ/${providerKeyVar(p, i)}` },
    })),
  ]);
  return yamlText(doc);
}
