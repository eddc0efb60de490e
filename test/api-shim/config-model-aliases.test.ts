import { describe, expect, it } from "vitest";
import { ConfigError, parseShimConfig } from "../../api-shim/src/config.ts";

const HASH = `sha256:${"a".repeat(64)}`;
const parse = (yaml: string) => parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/cfg.yaml" }, () => yaml);
const problems = (yaml: string): string[] => {
  try {
    parse(yaml);
  } catch (e) {
    if (e instanceof ConfigError) return [...e.problems];
    throw e;
  }
  throw new Error("expected a ConfigError");
};
const MODELS = "models:\n  - { name: qwen, maxModelLen: 8192, aliases: [gpt-4o-mini, gpt-3.5-turbo] }\n  - { name: bge, maxModelLen: 8192 }\n";

describe("SHIM_CONFIG models[].aliases", () => {
  it("maps each alias to its model, in the order written, and leaves the models' own names as they were", () => {
    const c = parse(MODELS);
    expect([...c.models!.keys()]).toEqual(["qwen", "bge"]);
    expect([...c.modelAliases]).toEqual([["gpt-4o-mini", "qwen"], ["gpt-3.5-turbo", "qwen"]]);
    expect(parse("models:\n  - { name: qwen, maxModelLen: 8192 }\n").modelAliases.size).toBe(0);
    expect(parse("").modelAliases.size).toBe(0); // no model list: a pass-through shim has no aliases
  });

  it("takes a bootstrap key's allow-list naming an alias as its model's name", () => {
    const c = parse(`${MODELS}bootstrapKeys:\n  - { id: AbCdEf123456, hash: "${HASH}", credits: 1, models: [gpt-4o-mini, bge] }\n`);
    expect(c.bootstrapKeys[0]!.models).toEqual(["qwen", "bge"]);
  });

  it.each([
    ["not a list", "models:\n  - { name: qwen, aliases: gpt-4o }\n",
      'SHIM_CONFIG models[0].aliases: "gpt-4o" is not valid; expected a list of other names clients may send for this model'],
    ["an empty name", 'models:\n  - { name: qwen, aliases: [""] }\n',
      'SHIM_CONFIG models[0].aliases[0]: "" is not valid; expected a model name: 1 to 256 characters, without control characters'],
    ["a model's own name", "models:\n  - { name: qwen, aliases: [bge] }\n  - { name: bge }\n",
      'SHIM_CONFIG models[0].aliases[0]: "bge" is not valid; expected a name that is not a model\'s (models[1] is bge)'],
    ["its own model's name", "models:\n  - { name: qwen, aliases: [qwen] }\n",
      'SHIM_CONFIG models[0].aliases[0]: "qwen" is not valid; expected a name that is not a model\'s (models[0] is qwen)'],
    ["a model's own name, after a refused entry (the entry's own index)", "models:\n  - { name: qwen, aliases: [bge] }\n  - { name: qwen }\n  - { name: bge }\n",
      ['SHIM_CONFIG models[1].name: "qwen" is not valid; expected a name no other entry of models has',
        'SHIM_CONFIG models[0].aliases[0]: "bge" is not valid; expected a name that is not a model\'s (models[2] is bge)']],
    ["another model's alias", "models:\n  - { name: qwen, aliases: [gpt-4o] }\n  - { name: bge, aliases: [gpt-4o] }\n",
      'SHIM_CONFIG models[1].aliases[0]: "gpt-4o" is not valid; expected a name no other alias has (it is already an alias of qwen)'],
    ["a price under an alias", `${MODELS}pricing:\n  models:\n    gpt-4o-mini: { promptPer1k: 1 }\n`,
      'SHIM_CONFIG pricing.models.gpt-4o-mini: "gpt-4o-mini" is not valid; expected a configured model\'s name: it is an alias of qwen, charged at qwen\'s price (price qwen)'],
  ])("refuses %s", (_, yaml, message) => {
    expect(problems(yaml)).toEqual(Array.isArray(message) ? message : [message]);
  });
});
