// The parser table's edges: anchored names, and only the families vLLM's tool-calling docs list.
import { describe, expect, it } from "vitest";
import { toolCallParser } from "../../infra/config/tool-calling.ts";

describe("tool-call parser table, at its edges", () => {
  it("Hermes 2 Theta is one of the docs' hermes models", () => {
    expect(toolCallParser("NousResearch/Hermes-2-Theta-Llama-3-8B")).toBe("hermes");
  });
  it("a family name inside another model's name is not that family (the table is anchored)", () => {
    expect(toolCallParser("someone/Distill-Qwen2.5-7B")).toBeUndefined();
  });
  it("Llama 3.3 is not named by the docs' Llama section (3.1, 3.2, 4): warned, not guessed", () => {
    expect(toolCallParser("meta-llama/Llama-3.3-70B-Instruct")).toBeUndefined();
  });
  it("a Hermes before 2 Pro is not given a parser by a loose match", () => {
    expect(toolCallParser("NousResearch/Hermes-2-Mixtral-8x7B")).toBeUndefined();
  });
});
