import type { ShimConfig } from "../config.ts";

/**
 * Model aliases (SHIM_CONFIG models[].aliases): other names a client may send for a configured
 * model, such as the `gpt-4o-mini` or LiteLLM `model_name` its code already sends. The shim
 * resolves them itself, at admission, and forwards the model's own name: the upstream never sees
 * an alias, so adding one changes neither vLLM's command (a restart reloads the model) nor
 * LiteLLM's list, and the answer's `model` is the model's own name whichever was sent, as OpenAI
 * answers a resolved name (docs/decisions.md). Everything after admission (price, context, allow-
 * list, tokens/min, ledger rows, usage reports) sees the model's name only, so an invoice is
 * never split across the names a model was asked by.
 */

type Aliases = Pick<ShimConfig, "modelAliases">;

/** The configured model `name` stands for: its model when it is an alias, else `name` itself. */
export function modelNamed(config: Aliases, name: string): string {
  return config.modelAliases.get(name) ?? name;
}

/** The aliases of `model`, in the order SHIM_CONFIG lists them (none for a name that is not a model's). */
export function aliasesOf(config: Aliases, model: string): string[] {
  const out: string[] = [];
  for (const [alias, of] of config.modelAliases) if (of === model) out.push(alias);
  return out;
}
