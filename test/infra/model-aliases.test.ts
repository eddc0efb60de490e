import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { describeProblems, validateConfig } from "../../infra/config.ts";
import type { ConfigProblem, TenantConfig } from "../../infra/config.ts";
import { formatProblem } from "../../infra/config/checks.ts";
import { renderBundle } from "../../infra/render/bundle.ts";
import { planFor } from "../../infra/plan.ts";
import { parseShimConfig } from "../../api-shim/src/config.ts";

const base = { region: "us-ord", allowedCidrs: ["0.0.0.0/0"], adminCidrs: ["81.2.69.160/32"] };
const groq = { model: "groq/llama-3.3-70b-versatile", apiKey: "gsk_x" };

function ok(raw: Record<string, unknown>): TenantConfig {
  const result = validateConfig(raw, { stack: "acme" });
  if (!result.ok) throw new Error(`expected valid config, got:\n${describeProblems(result.problems, "test")}`);
  return result.config;
}

function problems(raw: Record<string, unknown>): string[] {
  const result = validateConfig(raw, { stack: "acme" });
  if (result.ok) throw new Error("expected problems, config was accepted");
  return result.problems.map((p: ConfigProblem) => formatProblem(p, "gpu-sandbox"));
}

const NAME_RULE = "must be 1-128 characters of letters, digits and . _ - / :, starting with a letter, digit or _";
const TAKEN = "is already the name of another model or alias";

describe("validateConfig: model.aliases and providers[].aliases", () => {
  it("takes aliases for the served model and for a provider's model, none by default", () => {
    const c = ok({ ...base, model: { id: "a/b", servedName: "qwen", aliases: ["gpt-4o-mini", "gpt-3.5-turbo"] }, providers: [{ ...groq, name: "llama-70b", aliases: ["gpt-4o"] }] });
    expect(c.model.aliases).toEqual(["gpt-4o-mini", "gpt-3.5-turbo"]);
    expect(c.providers[0]!.aliases).toEqual(["gpt-4o"]);
    expect(ok({ ...base, model: { id: "a/b" }, providers: [{ ...groq }] })).toMatchObject({ model: { aliases: [] }, providers: [{ aliases: [] }] });
  });

  it("shows the aliases in the plan `npm run render` prints, and none when there are none", () => {
    const model = (raw: Record<string, unknown>) => planFor(ok({ ...base, model: raw })).lines.find(([k]) => k === "Model")![1];
    expect(model({ id: "a/b", servedName: "qwen", aliases: ["gpt-4o-mini", "gpt-4o"] })).toMatch(/^a\/b served as "qwen" \(aliases: "gpt-4o-mini", "gpt-4o"\), up to 8192 tokens/);
    expect(model({ id: "a/b", servedName: "qwen" })).toMatch(/^a\/b served as "qwen", up to 8192 tokens/);
  });

  it("takes a key's allow-list naming an alias as the model's name (an alias is allowed with its model)", () => {
    const c = ok({ ...base, model: { id: "a/b", servedName: "qwen", aliases: ["gpt-4o-mini"] }, keys: [{ name: "app", credits: 1, models: ["gpt-4o-mini", "qwen"] }] });
    expect(c.keys[0]!.models).toEqual(["qwen"]);
  });

  it.each<[string, Record<string, unknown>, string[]]>([
    ["aliases not a list", { ...base, model: { id: "a/b", aliases: "gpt-4o" } }, ['gpu-sandbox:model.aliases = "gpt-4o": must be a list; `pulumi config set` without --path stores one string. ' +
      "Set the first item with `pulumi config set --path 'gpu-sandbox:model.aliases[0]' <value>` (then [1], [2], …)"]],
    ["an alias vLLM-style flags would refuse", { ...base, model: { id: "a/b", aliases: ["-x", "", 7] } },
      [`gpu-sandbox:model.aliases[0] = "-x": ${NAME_RULE}`, `gpu-sandbox:model.aliases[1] = "": ${NAME_RULE}`, "gpu-sandbox:model.aliases[2] = 7: must be a string"]],
    ["an alias that is the served name", { ...base, model: { id: "a/b", servedName: "qwen", aliases: ["qwen"] } },
      [`gpu-sandbox:model.aliases[0] = "qwen": ${TAKEN} (model.servedName); names must be unique`]],
    ["an alias that is the default served name (the id)", { ...base, model: { id: "a/b", aliases: ["a/b"] } },
      [`gpu-sandbox:model.aliases[0] = "a/b": ${TAKEN} (model.servedName); names must be unique`]],
    ["an alias written twice", { ...base, model: { id: "a/b", aliases: ["gpt-4o", "gpt-4o"] } },
      [`gpu-sandbox:model.aliases[1] = "gpt-4o": ${TAKEN} (model.aliases[0]); names must be unique`]],
    ["a provider named as the model's alias", { ...base, model: { id: "a/b", aliases: ["gpt-4o"] }, providers: [{ ...groq, name: "gpt-4o" }] },
      [`gpu-sandbox:providers[0].name = "gpt-4o": ${TAKEN} (model.aliases[0]); names must be unique`]],
    ["a provider's alias that is the served name", { ...base, model: { id: "a/b", servedName: "qwen" }, providers: [{ ...groq, aliases: ["qwen"] }] },
      [`gpu-sandbox:providers[0].aliases[0] = "qwen": ${TAKEN} (model.servedName); names must be unique`]],
    ["a provider's alias that is another provider's name", { ...base, providers: [{ ...groq, name: "fast", aliases: ["slow"] }, { ...groq, name: "slow" }] },
      [`gpu-sandbox:providers[1].name = "slow": ${TAKEN} (providers[0].aliases[0]); names must be unique`]],
    ["a price for an alias", { ...base, model: { id: "a/b", servedName: "qwen", aliases: ["gpt-4o"] }, pricing: { models: { "gpt-4o": { promptPer1k: 1 } } } },
      ['gpu-sandbox:pricing.models.gpt-4o = {"promptPer1k":1}: is an alias of qwen, whose price it is charged; price qwen']],
  ])("refuses %s", (_, raw, expected) => {
    expect(problems(raw)).toEqual(expected);
  });
});

describe("rendering aliases", () => {
  const raw = { ...base, model: { id: "a/b", servedName: "qwen" }, providers: [{ ...groq, name: "llama-70b" }], pricing: { models: { qwen: { promptPer1k: 1 } } } };
  const withAliases = { ...raw, model: { ...raw.model, aliases: ["gpt-4o-mini", "on"] }, providers: [{ ...raw.providers[0], aliases: ["gpt-4o"] }] };
  const bundleOf = (r: Record<string, unknown>) => {
    const c = ok(r);
    return renderBundle(c, { images: c.images, bootstrapKeys: [] });
  };

  it("gives the shim each model's aliases in SHIM_CONFIG, which its own parser maps to the model", () => {
    const text = bundleOf(withAliases).get("shim/config.yaml")!;
    const parsed = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/app/config.yaml" }, () => text);
    expect([...parsed.modelAliases]).toEqual([["gpt-4o-mini", "qwen"], ["on", "qwen"], ["gpt-4o", "llama-70b"]]);
    expect([...parsed.models!.keys()]).toEqual(["qwen", "llama-70b"]);
    // Without aliases, SHIM_CONFIG is the file it was before: the shim is not recreated for nothing.
    expect(bundleOf(raw).get("shim/config.yaml")).not.toContain("aliases");
  });

  it("leaves vLLM's command and LiteLLM's model list as they were: the shim resolves aliases, so adding one restarts neither", () => {
    const before = bundleOf(raw);
    const after = bundleOf(withAliases);
    // Only the shim's service changes (its mounted config's hash): it alone is recreated, in seconds.
    const services = (b: typeof before) => parse(b.get("compose.yaml")!).services;
    expect(services(after).vllm).toEqual(services(before).vllm);
    expect(services(after).litellm).toEqual(services(before).litellm);
    expect(services(after).shim).not.toEqual(services(before).shim);
    expect(after.get("litellm/config.yaml")).toBe(before.get("litellm/config.yaml"));
    expect(parse(after.get("litellm/config.yaml")!).model_list.map((m: { model_name: string }) => m.model_name)).toEqual(["qwen", "llama-70b"]);
  });
});
