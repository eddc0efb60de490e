import { CONFIG_NAMESPACE } from "./types.ts";

/** Every key the program reads, without the `gpu-sandbox:` namespace. */
export const CONFIG_KEYS = [
  "region", "plan", "image", "model", "hfToken", "allowedCidrs", "adminCidrs", "tls", "keys", "tiers",
  "pricing", "providers", "volumeSizeGb", "ttlHours", "tags", "limits", "logs", "storage", "images", "readyTimeoutMinutes",
  "previousAdminToken", "previousAdminTokenUntil",
] as const;

/**
 * The settings that are lists, with the `--path` of their first item that messages suggest: an
 * item of a list of maps is set one field at a time, so theirs names a field.
 */
const LIST_FIRST_ITEM = {
  allowedCidrs: "[0]", adminCidrs: "[0]", tags: "[0]", keys: "[0].name", providers: "[0].model",
} as const satisfies Partial<Record<(typeof CONFIG_KEYS)[number], string>>;

/**
 * Where a stack file's settings (as `readStackConfig` returns them) keep the bare keys that a
 * `gpu-sandbox:` twin shadows, as written. Pulumi rewrites a bare key to its namespaced name in a
 * map that already holds the twin, in Go's random map order, so either value may be the one
 * deployed: the validator refuses them. A symbol, so that no reader takes it for a setting.
 */
export const SHADOWED_SETTINGS: unique symbol = Symbol("bare keys shadowed by their gpu-sandbox: twin");

/** The bare keys a stack file's settings shadow (see SHADOWED_SETTINGS); none for config from elsewhere. */
export function shadowedSettings(fileConfig: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  return (fileConfig as { [SHADOWED_SETTINGS]?: Record<string, unknown> })[SHADOWED_SETTINGS] ?? {};
}

/**
 * Where a stack file's settings (as `readStackConfig` returns them) keep the text of each number
 * not written as its own digits (`0123456`, `1.10`, `1e3`, `0x1F`), by config path
 * (`model.extraArgs[1]`): the number read no longer shows it, and Pulumi's reader and the yaml
 * package's disagree on some (a leading 0 is octal to Pulumi's). A symbol, as SHADOWED_SETTINGS.
 */
export const NUMBERS_AS_WRITTEN: unique symbol = Symbol("numbers' text in the stack file, by config path");

/** The stack file's text for the number at config path `path` (see NUMBERS_AS_WRITTEN), when it is not its digits. */
export function numberAsWritten(fileConfig: Readonly<Record<string, unknown>>, path: string): string | undefined {
  return (fileConfig as { [NUMBERS_AS_WRITTEN]?: ReadonlyMap<string, string> })[NUMBERS_AS_WRITTEN]?.get(path);
}

/**
 * Settings whose values may be secrets, whatever shape they were given in: `hfToken`,
 * `previousAdminToken` (not its `…Until`), and all of
 * `providers` but each provider's name, aliases, model, maxOutputTokens, maxModelLen and mediaPartTokens (`providers.apiKey`, a missing `[0]`, made the
 * list an object holding the key, printed with "must be a list").
 */
export function isSecretSetting(key: string): boolean {
  return /^(hfToken|previousAdminToken|providers)(?![\w])/.test(key) && !/^providers\[\d+\]\.(name|aliases(\[\d+\])?|model|maxOutputTokens|maxModelLen|mediaPartTokens)$/.test(key);
}

/**
 * The command that stores secret setting `path` (`hfToken`, `providers[0].apiKey`) for `stack`:
 * the value on stdin, from an environment variable (HF_TOKEN for `hfToken`, as `new-tenant`
 * reads it; PROVIDER_API_KEY, a name to set first, for a provider's key), never as an argument,
 * which shell history and `ps` keep. `pulumi config set` reads stdin when the value is left out
 * and stdin is not a terminal (at a terminal it prompts).
 */
export function setSecretCommand(path: string, stack?: string): string {
  return `printenv ${secretVariable(path)} | pulumi config set --secret --path '${CONFIG_NAMESPACE}:${path}'${stack === undefined ? "" : ` --stack ${stack}`}`;
}

/** The environment variable setSecretCommand pipes secret setting `path` from. */
export function secretVariable(path: string): string {
  return path === "hfToken" ? "HF_TOKEN" : path === "previousAdminToken" ? "PREVIOUS_ADMIN_TOKEN" : "PROVIDER_API_KEY";
}

/**
 * Why a top-level key is not a setting. `pulumi config set gpu-sandbox:tls.mode x` without `--path`
 * makes a setting named "tls.mode" (and `adminCidrs[0]` one named so), so a name whose part before
 * the first `.` or `[` is a setting gets the command that sets it, and the one that removes the
 * misplaced one. Never with its value: it may be a secret (see isSecretSetting).
 */
export function unknownSettingMessage(key: string): string {
  const head = /^[^.[]+/.exec(key)?.[0] ?? key;
  if (head === key || !(CONFIG_KEYS as readonly string[]).includes(head)) {
    return `is not a gpu-sandbox setting; known: ${CONFIG_KEYS.join(", ")}`;
  }
  const path = listItemPath(head, key.slice(head.length));
  const set = isSecretSetting(path) ? setSecretCommand(path) : `pulumi config set --path '${CONFIG_NAMESPACE}:${path}' <value>`;
  return `is not a gpu-sandbox setting: \`pulumi config set\` without --path took "${key}" for one name. ` +
    `Set ${head}'s part with \`${set}\`, ` +
    `then remove this one with \`pulumi config rm '${CONFIG_NAMESPACE}:${key}'\``;
}

/**
 * The path under `head` that `rest` (`.apiKey`, `[1].name`) meant. A list's item needs its index:
 * `--path 'gpu-sandbox:providers.apiKey'` would store a map, which is then refused as not a list.
 */
function listItemPath(head: string, rest: string): string {
  if (!(head in LIST_FIRST_ITEM) || rest.startsWith("[")) return `${head}${rest}`;
  return `${head}${firstItemPath(head, rest.slice(1))}`;
}

/**
 * The `--path` of a list setting's first item (`[0]`), or of `field` in it for a list of maps
 * (`[0].apiKey`; without a field, the one LIST_FIRST_ITEM names). `key` may be any list (`keys[0].models`).
 */
export function firstItemPath(key: string, field?: string): string {
  const first = (LIST_FIRST_ITEM as Readonly<Record<string, string>>)[key] ?? "[0]";
  return field !== undefined && first.includes(".") ? `[0].${field}` : first;
}
