// Whether a stack file is the one new-tenant would write for these flags: a re-run finds its own
// earlier file (finish the set-up, or nothing to do) or one that differs (refused, saying how).
// The settings are compared, not the text: the header holds the time it was written, and
// Pulumi adds to the file (`encryptionsalt` at `stack init`, `secure:` values at `config set`).
import { isDeepStrictEqual } from "node:util";
import { parse } from "yaml";
import { NUMBERS_AS_WRITTEN, SHADOWED_SETTINGS } from "../../infra/config/settings.ts";
import { CONFIG_NAMESPACE } from "../../infra/config/types.ts";
import { parseStackConfig } from "../../infra/stack-file.ts";

/** Top-level keys Pulumi itself writes into a stack file (`stack init`, a secrets provider). */
const PULUMI_WRITES = new Set(["config", "encryptionsalt", "secretsprovider", "encryptedkey"]);

/** `{ secure: v1:… }`: a value `pulumi config set --secret` stored. */
const isSecure = (v: unknown) => v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 1 && "secure" in v;

const shown = (v: unknown) => JSON.stringify(v);

/**
 * How the stack file's text differs from what new-tenant would write (`wanted`, configFromFlags'
 * settings without the namespace) with these `secrets` stored encrypted (namespaced keys, e.g.
 * linode:token): one phrase each; none when it is the same tenant.
 */
export function stackFileDifferences(text: string, wanted: Readonly<Record<string, unknown>>, secrets: readonly string[]): string[] {
  let doc: unknown;
  let settings: Record<string, unknown>;
  try {
    doc = parse(text);
    settings = parseStackConfig(text);
  } catch (err) {
    return [`it cannot be read (${(err as Error).message.split("\n")[0]})`];
  }
  if (doc === null || doc === undefined) return ["it is empty"];
  const differences: string[] = [];
  for (const key of Object.keys(doc as object)) {
    if (!PULUMI_WRITES.has(key)) differences.push(`it has a top-level ${key}, which new-tenant does not write`);
  }
  const config = ((doc as { config?: unknown }).config ?? {}) as Record<string, unknown>;
  const prefix = `${CONFIG_NAMESPACE}:`;
  const secretSettings = new Set<string>();
  for (const [key, value] of Object.entries(config)) {
    const name = key.startsWith(prefix) ? key.slice(prefix.length) : key.includes(":") ? undefined : key;
    if (secrets.includes(key)) {
      // A token typed in plain text is not what `config set --secret` stores, and must not stay in a committed file.
      if (!isSecure(value)) differences.push(`${key} is in plain text (new-tenant stores it encrypted)`);
      if (name !== undefined) secretSettings.add(name);
    } else if (name === undefined) {
      differences.push(`${key} is set${isSecure(value) ? " (encrypted)" : ""}, which new-tenant does not write`);
    } else if (isSecure(value)) {
      differences.push(`${key} is stored encrypted, which this run would not store`);
      secretSettings.add(name);
    }
  }
  const shadowed = (settings as { [SHADOWED_SETTINGS]?: Record<string, unknown> })[SHADOWED_SETTINGS] ?? {};
  for (const key of Object.keys(shadowed)) differences.push(`${key} is set beside ${prefix}${key}`);
  const written = (settings as { [NUMBERS_AS_WRITTEN]?: ReadonlyMap<string, string> })[NUMBERS_AS_WRITTEN] ?? new Map<string, string>();
  for (const [path, text] of written) differences.push(`${prefix}${path} is written ${text}`);
  const names = new Set([...Object.keys(settings), ...Object.keys(wanted)].filter((n) => !secretSettings.has(n)));
  for (const name of names) {
    const has = Object.hasOwn(settings, name);
    const wants = Object.hasOwn(wanted, name);
    if (has && wants && isDeepStrictEqual(settings[name], wanted[name])) continue;
    const file = has ? `${shown(settings[name])} in the file` : "not in the file";
    const flags = wants ? `${shown(wanted[name])} from the flags` : "not from the flags";
    differences.push(`${prefix}${name} is ${file}, ${flags}`);
  }
  return differences;
}
