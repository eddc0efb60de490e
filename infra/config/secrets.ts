// The secret settings' checks: a secret's shape, and the stack file's plaintext (committed) ones.
import { Secret } from "../secret.ts";
import type { Problems } from "./checks.ts";
import { ENV_VALUE_CHARACTERS, fitsEnvFile } from "./env-value.ts";
import { isSecretSetting, secretVariable, setSecretCommand, shadowedSettings } from "./settings.ts";
import { CONFIG_NAMESPACE } from "./types.ts";

export interface ValidationContext {
  stack: string;
  /**
   * The stack file's own settings, when there is one. Pulumi hands over encrypted and plaintext
   * values alike, so only the file can tell that a secret was written in plaintext (and so
   * committed); each secret setting is checked against it where it is read.
   */
  fileConfig?: Readonly<Record<string, unknown>>;
}

/** A secret setting; refused when the stack file holds it in plaintext (see ValidationContext). */
export function checkSecret(p: Problems, key: string, value: unknown, context: ValidationContext): Secret | undefined {
  if (context.fileConfig) refusePlaintext(p, key, settingAt(context.fileConfig, key), context);
  if (value === undefined || value === null) return undefined;
  const secret = value instanceof Secret ? value : typeof value === "string" ? Secret.of(value) : undefined;
  if (!secret) return p.add(key, "[secret]", `must be a string; set it with \`${setSecretCommand(key)}\``, true);
  // Not "no secret": it is what the stdin hint stores when the variable was set without export,
  // and an hfToken taken as none fails a gated model's download on a host that already bills.
  if (secret.readable && secret.reveal() === "") return p.add(key, "", emptySecretMessage(key), true);
  // It goes to the host's .env: refused here, naming the setting, not by the render of .env after
  // the GPU host exists, naming a variable. (An encrypted one is checked when pulumi up reads it.)
  if (secret.readable && !fitsEnvFile(secret.reveal())) p.add(key, "[secret]", `has characters the host's .env cannot carry (a space, quote, $ or #, a line break…); it may hold only ${ENV_VALUE_CHARACTERS}`, true);
  return secret;
}

/** Why secret setting `key` is empty, and what to do: export its variable and set it again, or remove it. */
function emptySecretMessage(key: string): string {
  const env = secretVariable(key);
  // A provider's key is required: what can go is the provider (`providers[0]`).
  const item = /^providers\[\d+\]/.exec(key)?.[0];
  const remove = item === undefined
    ? `if no token is wanted, remove it: \`pulumi config rm '${CONFIG_NAMESPACE}:${key}'\``
    : `if the provider is not wanted, remove it: \`pulumi config rm --path '${CONFIG_NAMESPACE}:${item}'\``;
  return `is set but empty, which is what \`${setSecretCommand(key)}\` stores when ${env} was set without \`export\` (printenv sees only exported variables): ` +
    `was it exported? \`export ${env}=…\`, then set it again; ${remove}`;
}

/**
 * The one rule for plaintext secrets: a secret setting's value at `path` in the stack file
 * (`inFile`), refused when it is a non-empty string, as the file is committed. `bareKey`: the
 * value is under that bare key, which a `gpu-sandbox:` twin shadows (so the fix is removing it).
 */
function refusePlaintext(p: Problems, path: string, inFile: unknown, context: ValidationContext, bareKey?: string): void {
  if (typeof inFile !== "string" || inFile === "") return;
  const file = `stacks/Pulumi.${context.stack}.yaml`;
  const fix = setSecretCommand(path, context.stack);
  p.add(path, "[plaintext]", bareKey === undefined
    ? `is in plaintext in ${file}, which is committed; store it encrypted: ${fix}`
    : `is in plaintext in ${file}, as \`${bareKey}\`, which is committed; remove \`${bareKey}\``, true);
}

/**
 * A bare key of the stack file beside its `gpu-sandbox:` twin (see SHADOWED_SETTINGS): refused,
 * naming both spellings, whatever it holds; a secret in it is refused as any plaintext one is.
 */
export function checkShadowed(p: Problems, context: ValidationContext): void {
  if (!context.fileConfig) return;
  for (const [key, value] of Object.entries(shadowedSettings(context.fileConfig))) {
    const twin = `${CONFIG_NAMESPACE}:${key}`;
    p.add(key, value, `\`${key}\` is shadowed by \`${twin}\` in stacks/Pulumi.${context.stack}.yaml (Pulumi reads both as ${twin} and keeps either one); remove \`${key}\``);
    for (const [path, leaf] of leaves(key, value)) if (isSecretSetting(path)) refusePlaintext(p, path, leaf, context, key);
  }
}

/** Every value in `value` that is not a list or map, with its config path (`providers[0].apiKey`). */
function leaves(path: string, value: unknown): [string, unknown][] {
  if (Array.isArray(value)) return value.flatMap((v, i) => leaves(`${path}[${i}]`, v));
  if (value !== null && typeof value === "object" && !(value instanceof Secret)) {
    return Object.entries(value).flatMap(([k, v]) => leaves(`${path}.${k}`, v));
  }
  return [[path, value]];
}

/** The value at a config path such as `providers[0].apiKey`, as `pulumi config --path` names it. */
function settingAt(config: Readonly<Record<string, unknown>>, path: string): unknown {
  let at: unknown = config;
  for (const part of path.split(/\.|\[(\d+)\]/).filter((x) => x !== undefined && x !== "")) {
    if (at === null || typeof at !== "object") return undefined;
    at = (at as Record<string, unknown>)[part];
  }
  return at;
}
