// vLLM refuses a chat request with tools and tool_choice "auto" (the default with tools) unless it
// was started with --enable-auto-tool-choice and a --tool-call-parser: the kit adds both for the
// models whose parser vLLM's tool-calling docs name, never over the operator's own choice, and
// warns for the others.
import { describe, expect, it } from "vitest";
import { validateConfig, type TenantConfig } from "../../infra/config.ts";
import { toolCallingVllmFlags, toolCallParser } from "../../infra/config/tool-calling.ts";
import { configWarnings } from "../../infra/plan.ts";

const AUTO = "--enable-auto-tool-choice";

function config(model: Record<string, unknown>): TenantConfig {
  const result = validateConfig({
    region: "us-ord", adminCidrs: ["81.2.69.160/32"], model: { servedName: "m", ...model },
    keys: [{ name: "app", credits: 10 }],
  }, { stack: "acme" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result.config;
}

describe("the tool-call parser the kit picks from model.id", () => {
  it("is the one vLLM's tool-calling docs name for the model's family", () => {
    expect(toolCallParser("Qwen/Qwen2.5-7B-Instruct")).toBe("hermes");
    expect(toolCallParser("Qwen/Qwen2.5-72B-Instruct-AWQ")).toBe("hermes");
    expect(toolCallParser("Qwen/QwQ-32B")).toBe("hermes");
    expect(toolCallParser("NousResearch/Hermes-3-Llama-3.1-8B")).toBe("hermes");
    expect(toolCallParser("NousResearch/Hermes-2-Pro-Mistral-7B")).toBe("hermes");
    // "All Nous Research Hermes-series models newer than Hermes 2 Pro should be supported".
    for (const id of ["NousResearch/Hermes-4-14B", "NousResearch/Hermes-4-70B", "NousResearch/Hermes-4-405B-FP8"]) expect(toolCallParser(id), id).toBe("hermes");
    expect(toolCallParser("mistralai/Mistral-7B-Instruct-v0.3")).toBe("mistral");
    expect(toolCallParser("meta-llama/Llama-3.1-8B-Instruct")).toBe("llama3_json");
    expect(toolCallParser("meta-llama/Meta-Llama-3.1-70B-Instruct")).toBe("llama3_json");
    expect(toolCallParser("meta-llama/Llama-3.2-3B-Instruct")).toBe("llama3_json");
    expect(toolCallParser("openai/gpt-oss-20b")).toBe("openai");
    expect(toolCallParser("Qwen/Qwen3-Coder-30B-A3B-Instruct")).toBe("qwen3_xml");
  });

  it("reads the repository's name, so a quantized copy in another organisation gets its family's parser", () => {
    expect(toolCallParser("hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4")).toBe("llama3_json");
    expect(toolCallParser("someone/qwen2.5-7b-instruct-gptq-int4")).toBe("hermes");
  });

  it("is none for a model the docs name no parser for (or only with a chat template the kit does not ship)", () => {
    for (const id of ["a/b", "Qwen/Qwen2-7B-Instruct", "Qwen/Qwen3-8B", "meta-llama/Meta-Llama-3-8B-Instruct",
      "meta-llama/Llama-4-Scout-17B-16E-Instruct", "mistralai/Mistral-7B-Instruct-v0.2", "Qwen/QwQ-32B-Preview", "google/gemma-3-12b-it"]) {
      expect(toolCallParser(id), id).toBeUndefined();
    }
  });
});

describe("the tool-calling flags added to vLLM's command", () => {
  it("enable auto tool choice with the model's parser", () => {
    expect(toolCallingVllmFlags([], "Qwen/Qwen2.5-7B-Instruct")).toEqual([AUTO, "--tool-call-parser", "hermes"]);
    expect(toolCallingVllmFlags(["--enable-prefix-caching"], "openai/gpt-oss-120b")).toEqual([AUTO, "--tool-call-parser", "openai"]);
  });

  it("leave each flag the operator sets in model.extraArgs to them, in any spelling vLLM reads, and add the other half of the pair", () => {
    // vLLM exits at start on --enable-auto-tool-choice without a parser (cli_args.py
    // validate_parsed_serve_args), and a parser without it refuses "auto" with a 400: half a pair is never left.
    for (const both of [[AUTO, "--tool-call-parser", "pythonic"], ["--enable_auto_tool_choice", "--tool_call_parser=llama4_pythonic"]]) {
      expect(toolCallingVllmFlags(both, "Qwen/Qwen2.5-7B-Instruct"), both.join(" ")).toEqual([]);
    }
    expect(toolCallingVllmFlags(["--tool-call-parser", "pythonic"], "Qwen/Qwen2.5-7B-Instruct")).toEqual([AUTO]);
    expect(toolCallingVllmFlags(["--tool_call_parser=pythonic"], "Qwen/Qwen3-8B")).toEqual([AUTO]);
    expect(toolCallingVllmFlags([AUTO], "Qwen/Qwen2.5-7B-Instruct")).toEqual(["--tool-call-parser", "hermes"]);
    expect(toolCallingVllmFlags(["--enable_auto_tool_choice"], "Qwen/Qwen2.5-7B-Instruct")).toEqual(["--tool-call-parser", "hermes"]);
  });

  it("are none when the operator keeps auto tool choice off", () => {
    expect(toolCallingVllmFlags(["--no-enable-auto-tool-choice"], "Qwen/Qwen2.5-7B-Instruct")).toEqual([]);
    expect(toolCallingVllmFlags(["--no-enable-auto-tool-choice", "--tool-call-parser", "hermes"], "Qwen/Qwen3-8B")).toEqual([]);
  });

  it("are none for a model without a known parser", () => {
    expect(toolCallingVllmFlags([], "Qwen/Qwen3-8B")).toEqual([]);
  });
});

describe("the warning for a model without a known tool-call parser", () => {
  const warning = (c: TenantConfig) => configWarnings(c).filter((w) => w.includes("--tool-call-parser"));

  it("says vLLM will refuse tool_choice \"auto\" and how to set a parser in model.extraArgs", () => {
    expect(warning(config({ id: "Qwen/Qwen3-8B" }))).toEqual([
      'model.id Qwen/Qwen3-8B has no tool-call parser the kit knows: vLLM will refuse chat requests with tools and tool_choice "auto" ' +
      "(the default with tools, which the AI SDK, LangChain and OpenAI's Agents SDK send) with a 400, \"auto\" tool choice requires " +
      "--enable-auto-tool-choice and --tool-call-parser to be set; add [\"--enable-auto-tool-choice\", \"--tool-call-parser\", \"<parser>\"] " +
      "to model.extraArgs with the parser vLLM's tool-calling docs name for the model, or \"--no-enable-auto-tool-choice\" to say it stays off",
    ]);
  });

  it("says vLLM will not start when model.extraArgs turns auto tool choice on without a parser and the kit knows none", () => {
    expect(warning(config({ id: "Qwen/Qwen3-8B", extraArgs: [AUTO] }))).toEqual([
      'model.extraArgs turns on --enable-auto-tool-choice for model.id Qwen/Qwen3-8B without a --tool-call-parser, and the kit knows none for it: ' +
      "vLLM exits at start (\"--enable-auto-tool-choice requires --tool-call-parser\"); add [\"--tool-call-parser\", \"<parser>\"] to model.extraArgs " +
      "with the parser vLLM's tool-calling docs name for the model, or use \"--no-enable-auto-tool-choice\"",
    ]);
  });

  it("is not given for a model with a known parser, nor when model.extraArgs chooses", () => {
    expect(warning(config({ id: "Qwen/Qwen2.5-7B-Instruct" }))).toEqual([]);
    expect(warning(config({ id: "Qwen/Qwen3-8B", extraArgs: [AUTO, "--tool-call-parser", "hermes"] }))).toEqual([]);
    expect(warning(config({ id: "Qwen/Qwen3-8B", extraArgs: ["--no-enable-auto-tool-choice"] }))).toEqual([]);
    expect(warning(config({ id: "Qwen/Qwen3-8B", extraArgs: ["--tool-call-parser", "hermes"] }))).toEqual([]); // the kit adds auto
    expect(warning(config({ id: "Qwen/Qwen2.5-7B-Instruct", extraArgs: [AUTO] }))).toEqual([]); // the kit adds its parser
  });

  it("is not given for an embedding (pooling) model, which serves no chat: by its name or by vLLM's --runner pooling", () => {
    expect(warning(config({ id: "Qwen/Qwen3-Embedding-0.6B" }))).toEqual([]);
    expect(warning(config({ id: "BAAI/bge-m3" }))).toEqual([]);
    expect(warning(config({ id: "intfloat/multilingual-e5-large-instruct" }))).toEqual([]);
    expect(warning(config({ id: "Qwen/Qwen3-8B", extraArgs: ["--runner", "pooling"] }))).toEqual([]);
    expect(warning(config({ id: "Qwen/Qwen3-8B", extraArgs: ["--runner=pooling"] }))).toEqual([]);
    // A chat model is still warned about, whatever else its extraArgs say.
    expect(warning(config({ id: "Qwen/Qwen3-8B", extraArgs: ["--runner", "generate"] }))).toHaveLength(1);
  });
});
