import { parse } from "yaml";
import { expect, it } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { renderBundle } from "../../infra/render/bundle.ts";

/**
 * How the rendered compose file wires the services together: what a typo in templates/compose.yaml
 * would break on the host and no other test saw (found by a mutation review).
 */
function renderedCompose() {
  const result = validateConfig({ region: "us-ord", adminCidrs: ["203.0.113.7/32"], tls: { mode: "self-signed" } }, { stack: "acme" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return parse(renderBundle(result.config, { images: result.config.images, bootstrapKeys: [] }).get("compose.yaml")!);
}

it("wires the shim to LiteLLM (not straight to vLLM), with LiteLLM's master key, on LiteLLM's port", () => {
  const compose = renderedCompose();
  const { shim, litellm } = compose.services;
  const upstream = new URL(shim.environment.SHIM_UPSTREAM_URL);
  expect(upstream.hostname).toBe("litellm");
  const port = litellm.command[litellm.command.indexOf("--port") + 1];
  expect(upstream.port).toBe(String(port));
  expect(upstream.pathname).toBe("/v1");
  // The key the shim sends is the one LiteLLM checks (its master key), not vLLM's.
  expect(shim.environment.SHIM_UPSTREAM_API_KEY).toMatch(/^\$\{LITELLM_MASTER_KEY[:?}]/);
  expect(litellm.environment.LITELLM_MASTER_KEY).toMatch(/^\$\{LITELLM_MASTER_KEY[:?}]/);
});

it("keeps the shim's ledger (SQLite file and its temp files) on the Block Storage Volume, not in the container or a tmpfs", () => {
  const compose = renderedCompose();
  const { shim } = compose.services;
  const dbUrl: string = shim.environment.SHIM_DATABASE_URL;
  expect(dbUrl).toMatch(/^sqlite:\//);
  const dbPath = dbUrl.slice("sqlite:".length);
  const onVolume = (path: string) => (shim.volumes as string[]).some((v) => {
    const m = /^(.*):(\/[^:]+?)(?::(?:ro|rw))?$/.exec(v);
    if (!m) return false;
    const [, source, target] = m as unknown as [string, string, string];
    return source.startsWith("${GS_DATA_DIR") && (path === target || path.startsWith(`${target}/`));
  });
  expect(onVolume(dbPath), `${dbPath} is on a volume from GS_DATA_DIR`).toBe(true);
  expect(onVolume(shim.environment.SQLITE_TMPDIR)).toBe(true);
  // tmpfs paths are wiped at every container restart
  for (const t of shim.tmpfs ?? []) expect(dbPath.startsWith(`${t}/`)).toBe(false);
});

it("hands the stack's hfToken (.env's HF_TOKEN) to vLLM, which downloads gated models with it", () => {
  const compose = renderedCompose();
  expect(compose.services.vllm.environment.HF_TOKEN).toMatch(/^\$\{HF_TOKEN[:?}-]/);
});

it("opts vLLM out of its usage statistics, and Hugging Face's libraries out of telemetry: no call out but the model's download", () => {
  // vLLM sends them to its collector by default (docs.vllm.ai, "Usage Stats Collection"); each
  // variable alone is its documented opt-out, so a typo in one still leaves the other.
  const { environment } = renderedCompose().services.vllm;
  expect(environment.VLLM_NO_USAGE_STATS).toBe("1");
  expect(environment.DO_NOT_TRACK).toBe("1");
  expect(environment.HF_HUB_DISABLE_TELEMETRY).toBe("1");
});
