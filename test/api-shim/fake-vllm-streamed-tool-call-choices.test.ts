import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeVllm } from "../support/fake-vllm.ts";
import { postText, sseDataEvents } from "../support/tools.ts";

/** Killing test (session-8 mutation review): a streamed forced call with n > 1. */
describe("fake vLLM, forced tool call streamed with n: 2", () => {
  let fake: FakeVllm;
  beforeAll(async () => { fake = await new FakeVllm().start(); });
  afterAll(() => fake.close());
  it("each choice's call is tool_calls[0] of that choice (index 0), with its own id", async () => {
    const tool = { type: "function", function: { name: "f", parameters: { type: "object", properties: { a: { type: "string" } }, required: ["a"] } } };
    const text = await postText(`${fake.url}/chat/completions`, { model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], tools: [tool], tool_choice: "required", n: 2, stream: true });
    const deltas = sseDataEvents<{ choices: { index: number; delta: { tool_calls?: { index: number; id?: string }[] } }[] }>(text)
      .flatMap((c) => c.choices).filter((c) => c.delta.tool_calls);
    expect(new Set(deltas.map((c) => c.index))).toEqual(new Set([0, 1]));
    for (const c of deltas) expect(c.delta.tool_calls!.map((t) => t.index)).toEqual([0]);
    const ids = deltas.flatMap((c) => c.delta.tool_calls!.map((t) => t.id)).filter(Boolean);
    expect(new Set(ids).size).toBe(2);
  });
});
