import * as pulumi from "@pulumi/pulumi";
import { formatProblem } from "./config/checks.ts";
import { CONFIG_NAMESPACE } from "./config/types.ts";
import type { ConfigProblem, TenantConfig } from "./config/types.ts";
import { validateConfig } from "./config/validate.ts";
import { REPO_ROOT } from "./repo-root.ts";
import { readStackConfig, StackFileError } from "./stack-file.ts";

export { checkTtlHours, validateConfig } from "./config/validate.ts";
export type * from "./config/types.ts";

/**
 * The one place that reads Pulumi stack config. Reads every `gpu-sandbox:*` key once, validates
 * them all with the same pure function `npm run render` uses, and either returns the frozen
 * config or stops the deployment, before any resource exists, with every problem listed.
 */
export function loadConfig(): TenantConfig {
  const raw: Record<string, unknown> = {};
  const prefix = `${CONFIG_NAMESPACE}:`;
  for (const [fullKey, text] of Object.entries(pulumi.runtime.allConfig())) {
    if (fullKey.startsWith(prefix)) raw[fullKey.slice(prefix.length)] = parseConfigValue(text);
  }
  const stack = pulumi.getStack();
  // Pulumi hands over encrypted and plaintext values alike; only the stack file tells them apart.
  const result = validateConfig(raw, { stack, fileConfig: stackFileConfig(stack) });
  if (!result.ok) throw new pulumi.RunError(describeProblems(result.problems, stack));
  if (result.deployProblems.length > 0) throw new pulumi.RunError(describeProblems(result.deployProblems, stack));
  return result.config;
}

/** The stack file's settings, or none when there is no file (config kept elsewhere). */
function stackFileConfig(stack: string): Record<string, unknown> {
  try {
    return readStackConfig(REPO_ROOT, stack);
  } catch (err) {
    if (err instanceof StackFileError) return {};
    throw err;
  }
}

/**
 * Pulumi hands every value over as a string: structured values as JSON, scalars set with
 * `pulumi config set` as plain text ("us-ord", "24"). The validator coerces numbers itself.
 */
function parseConfigValue(text: string): unknown {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === "object" && value !== null ? value : text;
  } catch {
    return text;
  }
}

/** The message shown when `stack`'s config is invalid: one line per problem, then where to fix it. */
export function describeProblems(problems: readonly ConfigProblem[], stack: string): string {
  const lines = problems.map((p) => `  - ${formatProblem(p, CONFIG_NAMESPACE)}`);
  const noun = problems.length === 1 ? "problem" : "problems";
  return `gpu-sandbox: the stack config has ${problems.length} ${noun}:\n${lines.join("\n")}\n` +
    `Fix them in stacks/Pulumi.${stack}.yaml or with \`pulumi config set\`; the reference is in docs/configuration.md.`;
}
