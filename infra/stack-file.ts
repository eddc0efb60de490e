import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { isMap, isScalar, isSeq, parse, parseDocument } from "yaml";
import { NUMBERS_AS_WRITTEN, SHADOWED_SETTINGS } from "./config/settings.ts";
import { CONFIG_NAMESPACE } from "./config/types.ts";
import { Secret } from "./secret.ts";

/** Where stack files live (Pulumi.yaml: `stackConfigDir: stacks`). */
export const STACKS_DIR = "stacks";

export function stackFilePath(root: string, stack: string): string {
  return join(root, STACKS_DIR, `Pulumi.${stack}.yaml`);
}

/**
 * Stack names that have a file in `stacks/`, sorted. Only `.yaml`: Pulumi names a stack's file
 * after the project file (Pulumi.yaml), so it never reads a `Pulumi.<stack>.yml`.
 */
export function listStackNames(root: string): string[] {
  const dir = join(root, STACKS_DIR);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((f) => /^Pulumi\.(.+)\.yaml$/.exec(f)?.[1])
    .filter((s): s is string => s !== undefined)
    .sort();
}

export class StackFileError extends Error {
  override name = "StackFileError";
}

/**
 * Reads the `gpu-sandbox:*` keys of a stack file without Pulumi (for `render` and the operator
 * scripts). Encrypted values (`secure: v1:…`) cannot be read here; they become
 * `Secret.encrypted()` so validation still knows they are set.
 */
export function readStackConfig(root: string, stack: string): Record<string, unknown> {
  const path = stackFilePath(root, stack);
  if (!existsSync(path)) {
    const known = listStackNames(root);
    throw new StackFileError(
      `no stack file ${path}; ${known.length ? `stacks: ${known.join(", ")}` : "create one with `npm run new-tenant`"}`,
    );
  }
  return parseStackConfig(readText(path), path);
}

/** A stack file's text; failing to read it is a StackFileError, as a file that does not parse is. */
function readText(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    // A directory by that name (EISDIR), a file this user may not read (EACCES, e.g. cron's).
    throw new StackFileError(`cannot read ${path}: ${(err as Error).message}`);
  }
}

/**
 * The pure part of `readStackConfig`: stack-file text → raw config without the namespace. A bare
 * key beside its `gpu-sandbox:` twin is kept apart, under SHADOWED_SETTINGS, for the validator to
 * refuse (and to check for a plaintext secret): the twin's value is the one read here.
 */
export function parseStackConfig(text: string, source = "stack file"): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  const shadowed: Record<string, unknown> = {};
  const config = configMap(text, source);
  for (const [key, value] of Object.entries(config)) {
    const setting = settingOf(key, (k) => Object.hasOwn(config, k));
    if (setting) (setting.shadowed ? shadowed : raw)[setting.name] = decodeSecure(value);
  }
  // Only when there is one, so that a file without any reads as plain settings (and compares so).
  if (Object.keys(shadowed).length > 0) Object.assign(raw, { [SHADOWED_SETTINGS]: shadowed });
  const written = numbersAsWritten(text);
  if (written.size > 0) Object.assign(raw, { [NUMBERS_AS_WRITTEN]: written });
  return raw;
}

/**
 * The setting a stack file's config key sets, if any: `gpu-sandbox:region`, or a bare `region`,
 * which Pulumi reads as the project's; a bare one beside its `gpu-sandbox:` twin is `shadowed`
 * (the twin's value is the one read). `has`: whether the file's config has a key.
 */
function settingOf(key: string, has: (key: string) => boolean): { name: string; shadowed: boolean } | undefined {
  const prefix = `${CONFIG_NAMESPACE}:`;
  if (key.startsWith(prefix)) return { name: key.slice(prefix.length), shadowed: false };
  return key.includes(":") ? undefined : { name: key, shadowed: has(`${prefix}${key}`) };
}

/**
 * The text of each number under `config:` that is not written as its own digits (see
 * NUMBERS_AS_WRITTEN), by config path without the namespace, for the settings read (settingOf).
 * `text` has parsed already.
 */
function numbersAsWritten(text: string): Map<string, string> {
  const found = new Map<string, string>();
  const keyOf = (pair: { key: unknown }) => String(isScalar(pair.key) ? pair.key.value : pair.key);
  const walk = (node: unknown, path: string): void => {
    if (isScalar(node)) {
      if (typeof node.value === "number" && node.source !== undefined && node.source !== String(node.value)) found.set(path, node.source);
    } else if (isSeq(node)) node.items.forEach((item, i) => walk(item, `${path}[${i}]`));
    else if (isMap(node)) for (const pair of node.items) walk(pair.value, `${path}.${keyOf(pair)}`);
  };
  const config = parseDocument(text).get("config", true);
  if (!isMap(config)) return found;
  const keys = new Set(config.items.map(keyOf));
  for (const pair of config.items) {
    const setting = settingOf(keyOf(pair), (k) => keys.has(k));
    if (setting && !setting.shadowed) walk(pair.value, setting.name);
  }
  return found;
}

/**
 * The keys, with their namespace (`linode:token`), whose values a stack file holds encrypted
 * (`secure:`): the secrets `pulumi config set --secret` has stored in it. A key set in plain text
 * (`linode:token: typed-by-hand`) is not one: it still has to be stored as a secret. Empty when
 * the file is not there.
 */
export function storedSecretKeys(root: string, stack: string): string[] {
  const file = readStackDoc(root, stack);
  return file ? Object.entries(configOf(file.doc, file.path)).filter(([, value]) => holdsSecure(value)).map(([key]) => key) : [];
}

/**
 * Whether a stack file holds what only a stack that Pulumi created writes into it: an
 * `encryptionsalt`, a `secretsprovider`, or a `secure:` value. False when the file is not there.
 */
export function stackFileHoldsSecrets(root: string, stack: string): boolean {
  const file = readStackDoc(root, stack);
  if (!file) return false;
  const { doc, path } = file;
  if (doc !== null && typeof doc === "object" && ("encryptionsalt" in doc || "secretsprovider" in doc)) return true;
  return Object.values(configOf(doc, path)).some(holdsSecure);
}

/** Whether a setting's value is, or holds at any depth, a `secure:` value. */
function holdsSecure(value: unknown): boolean {
  return isSecure(value) || (value !== null && typeof value === "object" && Object.values(value).some(holdsSecure));
}

/**
 * What to say of a setting written at the top level of a stack file, not under `config:` (a
 * first edit's likely slip), or undefined. Pulumi ignores such a key, so every reader still reads
 * `config:` alone (`pulumi up`, reap-expired and new-tenant agree with Pulumi); render and
 * list-tenants say this where the validator would say "region is required" of a file setting it.
 */
export function misplacedSetting(root: string, stack: string): string | undefined {
  const file = readStackDoc(root, stack);
  const doc = file?.doc;
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) return undefined;
  const key = Object.keys(doc).find((k) => k.includes(":"));
  return key === undefined ? undefined : `${file!.path}: settings must be under "config:" (found ${key} at the top level)`;
}

/** A stack file parsed, with its path; undefined when it is not there. */
function readStackDoc(root: string, stack: string): { doc: unknown; path: string } | undefined {
  const path = stackFilePath(root, stack);
  return existsSync(path) ? { doc: parseYaml(readText(path), path), path } : undefined;
}

function parseYaml(text: string, source: string): unknown {
  try {
    return parse(text);
  } catch (err) {
    throw new StackFileError(`${source} is not valid YAML: ${(err as Error).message}`);
  }
}

/** A stack file's `config` map, as written. */
function configMap(text: string, source: string): Record<string, unknown> {
  return configOf(parseYaml(text, source), source);
}

function configOf(doc: unknown, source: string): Record<string, unknown> {
  if (doc === null || doc === undefined) return {}; // an empty file: every setting missing, each said by the validator
  if (typeof doc !== "object" || Array.isArray(doc)) throw new StackFileError(`${source}: a stack file must be a map with a config: key holding the settings`);
  const config = (doc as { config?: unknown }).config ?? {};
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new StackFileError(`${source}: "config" must be a map of keys to values`);
  }
  return config as Record<string, unknown>;
}

/** `{ secure: v1:… }`: a value Pulumi encrypted with the stack's key. */
function isSecure(value: unknown): boolean {
  return value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length === 1 && "secure" in value;
}

/** Replaces every `{ secure: … }` (at any depth) with an encrypted Secret. */
function decodeSecure(value: unknown): unknown {
  if (isSecure(value)) return Secret.encrypted();
  if (Array.isArray(value)) return value.map(decodeSecure);
  if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, decodeSecure(v)]));
  return value;
}
