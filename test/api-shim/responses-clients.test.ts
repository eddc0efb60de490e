import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Found by driving the AI SDK (`@ai-sdk/openai` 4.0.126), the Agents SDK (0.20.0) and LangChain
 * (`@langchain/openai` 1.6.0, useResponsesApi) against `npm run shim` without SHIM_CONFIG: every
 * function tool, in the Responses API's flat shape ({type, name, description, parameters, strict}),
 * is refused with chat's "has 'name', which a function of your own does not take". The same for a
 * model configured without maxModelLen (config.ts mayBeProviders).
 */
const TOOL = { type: "function" as const, name: "weather", description: "weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }, strict: true };

for (const [what, file] of [
  ["no models configured (npm run shim without SHIM_CONFIG)", {}],
  ["a model configured without maxModelLen", { models: [{ name: "qwen2.5-7b" }] }],
] as const) {
  describe(`POST /v1/responses with a function tool, ${what}`, () => {
    let h: Harness;
    beforeAll(async () => {
      h = await startShim({ file: file });
    });
    afterAll(() => h.close());

    it("forwards a Responses function tool (flat name/parameters/strict), as OpenAI's SDK sends it", async () => {
      const { key } = await h.createKey({ credits: 1000 });
      const r = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "Weather in Paris?", tools: [TOOL] });
      expect(r.status).toBe("completed");
    });

    it("forwards it streamed", async () => {
      const { key } = await h.createKey({ credits: 1000 });
      const stream = await h.client(key).responses.create({ model: "qwen2.5-7b", input: "Weather in Paris?", tools: [TOOL], stream: true });
      const types: string[] = [];
      for await (const e of stream) types.push(e.type);
      expect(types.at(-1)).toBe("response.completed");
    });

    // Codex CLI 0.171 sends its agent tools so by default ("multi_agent_v1"); the shim refused it
    // here as a provider's hosted tool, though each is the client's own function.
    it("forwards a namespace of function tools, as Codex CLI sends them, and refuses one holding a provider's tool, naming it", async () => {
      const { key } = await h.createKey({ credits: 1000 });
      const namespace = { type: "namespace", name: "multi_agent_v1", description: "agents", tools: [TOOL, { ...TOOL, name: "spawn_agent" }] };
      const r = await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "Weather in Paris?", tools: [TOOL, namespace] });
      expect(r.status).toBe(200);
      const refused = await h.post(key, "/v1/responses", { model: "qwen2.5-7b", input: "x", tools: [{ ...namespace, tools: [TOOL, { type: "web_search" }] }] });
      expect(refused.status).toBe(400);
      expect(((await refused.json()) as { error: { message: string } }).error.message).toContain("tools[0].tools[1]");
    });
  });
}
