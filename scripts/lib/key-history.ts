// manage-keys history: a key's changes as the ledger keeps them (GET /admin/keys/{id}/events):
// when it was created, rotated, updated (what changed) and revoked, and by which admin request.
// "My key stopped working at 14:02" is checked here, long after the shim's log has rotated away.
import { type AdminClient, type ApiKey, isMissingRoute, keyReference, keyStatus } from "./admin-client.ts";
import { type Io, UsageError } from "./cli.ts";
import { shownTime } from "./key-list.ts";
import { formatTable } from "./table.ts";

type Value = string | number | readonly string[] | null | undefined;

export interface KeyEventChange { readonly field: string; readonly from?: Value; readonly to?: Value }

export interface KeyEvent {
  readonly object: "key_event";
  readonly event: "created" | "rotated" | "updated" | "revoked";
  readonly at: string;
  /** The admin request's id (x-request-id, as the shim's log line has it); null: a start of the shim (a stack key). */
  readonly request_id: string | null;
  readonly changes: readonly KeyEventChange[];
}

export interface KeyHistory {
  readonly object: "list";
  readonly key_id: string;
  /** False: the key was made before the shim kept histories, so what came before the upgrade is unknown. */
  readonly complete: boolean;
  readonly data: readonly KeyEvent[];
}

/**
 * The other keys that have the name `--key` gave, when it named `key` by that name: findKey takes
 * the one in use, but "my key stopped working" is often about a revoked one whose name a new key
 * took (create --from, a rotation by hand), whose history the table would not show.
 */
export function otherNamesakes(keys: readonly ApiKey[], key: ApiKey, given: string): ApiKey[] {
  return keyReference(keys, given) === key.id ? [] : keys.filter((k) => k.id !== key.id && k.name === key.name);
}

/**
 * Prints `key`'s history: a table (oldest first), or with `json` the API's answer; on stderr, the
 * other keys its name covers (`namesakes`), each with its status, to ask for by id.
 */
export async function keyHistory(client: AdminClient, key: ApiKey, json: boolean, io: Io, namesakes: readonly ApiKey[] = []): Promise<number> {
  let history: KeyHistory;
  try {
    history = await client.keyEvents(key.id);
  } catch (err) {
    // A shim from before the route: its router's 404, no `param` (a key it does not know names `id`), as write-off.ts reads it.
    if (isMissingRoute(err) && err.param !== "id") {
      throw new UsageError("this shim predates `history` (GET /admin/keys/{id}/events): upgrade it (pulumi up); until then `list` shows when a key was created, expires and was revoked", { cause: err });
    }
    throw err;
  }
  io.out(json ? JSON.stringify(history, null, 2) : formatHistory(key, history));
  if (namesakes.length > 0) {
    const shown = namesakes.map((k) => `${k.id} (${keyStatus(k)}${k.revoked_at === null ? "" : ` ${shownTime(k.revoked_at)}`})`).join(", ");
    io.err(`This is the history of ${key.id}, the key in use named ${key.name}; other keys have that name: ${shown}. Give an id (history --key <id>) for that key's history.`);
  }
  return 0;
}

export function formatHistory(key: ApiKey, history: KeyHistory): string {
  const head = `History of key ${key.name} (${key.id}), oldest first; times UTC.`;
  // Said, not made up: a key older than the history has no `created` line, and its changes before
  // the upgrade are not known (its creation time is the key's own created_at); a history that
  // starts with the creation yet is not complete missed a change an older shim made.
  const gap = history.data[0]?.event === "created"
    ? "Not complete: the key was changed by a shim without key histories (the previous version, run again for a while), and that change is not recorded; `manage-keys list` shows the key as it is now."
    : `Kept since the shim's upgrade that added key histories: the key was created ${shownTime(key.created_at)}, before it, and changes before the upgrade are not recorded.`;
  const before = history.complete ? [] : [gap];
  if (history.data.length === 0) return [head, ...before, "No changes recorded since."].join("\n");
  const table = formatTable<KeyEvent>([
    { header: "TIME", value: (e) => shownTime(e.at) },
    { header: "EVENT", value: (e) => e.event },
    { header: "CHANGES", value: describe },
    // A stack key's creation and its revocation once removed from the stack come from the shim's start, not a request.
    { header: "REQUEST", value: (e) => e.request_id ?? "(shim start)" },
  ], history.data);
  return [head, ...before, "", table].join("\n");
}

/** An event's changes in a few words: `tier big → small; models all → bge-m3`. */
function describe(e: KeyEvent): string {
  if (e.event === "rotated") return "new secret (the old one gets 401)";
  if (e.event === "revoked") return "stopped working (401)";
  return e.changes.map((c) => {
    // The name's values are not kept: a rename is how a person's name is erased (docs/privacy.md).
    if (c.field === "name") return "name changed";
    const label = c.field === "expires_at" ? "expires" : c.field;
    return "from" in c ? `${label} ${shown(c.field, c.from)} → ${shown(c.field, c.to)}` : `${label} ${shown(c.field, c.to)}`;
  }).join("; ") || "-";
}

function shown(field: string, v: Value): string {
  if (field === "models") return v === null ? "all" : (v as readonly string[]).join(",");
  if (field === "expires_at") return v === null ? "never" : shownTime(String(v));
  return String(v);
}
