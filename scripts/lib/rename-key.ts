// `manage-keys update --name`: a key's new name (a person's erased: docs/privacy.md), checked as
// create checks --name before anything is sent, and an older shim's refusal told as such.
import { AdminApiError, type ApiKey } from "./admin-client.ts";
import { UsageError } from "./cli.ts";
import { keyNameProblem } from "./create-key.ts";

/** The new name as the shim stores it (trimmed), or why not: empty, not plain text, another key's id (--key would always mean that key). */
export function newKeyName(value: string, keys: readonly ApiKey[], key: ApiKey): string {
  const name = value.trim();
  const problem = keyNameProblem(name);
  if (problem) throw new UsageError(`--name ${problem}`);
  const idHolder = keys.find((k) => k.id === name && k.id !== key.id);
  if (idHolder) throw new UsageError(`--name "${name}" is the id of another key (${idHolder.name}), and --key "${name}" would always mean that key: choose another --name`, { exit: "refused" });
  return name;
}

/** A shim of before renames answers a name with its 400 for an unknown field: nothing changed. */
export function renameUnsupported(err: unknown): UsageError | undefined {
  if (!(err instanceof AdminApiError) || err.status !== 400 || !err.apiMessage?.startsWith("Unknown field 'name'")) return undefined;
  return new UsageError("this shim predates `update --name` (a key's name in PATCH /admin/keys/{id}): upgrade it (pulumi up); nothing was changed", { cause: err });
}

/** What `update --name` prints: the rename, and what it does not reach. */
export function renamedLine(from: string, key: ApiKey): string {
  return `Renamed key ${key.id} from "${from}" to "${key.name}". Its secret, balance (${key.balance}) and usage are unchanged. Copies made before (backups, hand-out CSVs, usage exports) still have the old name: docs/privacy.md, "Erase a person's name".`;
}
