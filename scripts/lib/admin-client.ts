// A small client for the shim's admin API (docs: api-shim routes/admin.ts): keys, top-ups and
// usage reports. Every failure becomes an AdminApiError whose message has the HTTP status and
// the API's own message, plus a hint for the usual operator mistakes.
import { networkReason, UsageError } from "./cli.ts";
import { isRedirect, redirectAdvice } from "./redirect.ts";

/** Where a tenant's admin API is and how to authenticate. */
export interface AdminTarget {
  /** Origin without /v1, e.g. https://203-0-113-9.ip.linodeusercontent.com */
  readonly baseUrl: string;
  readonly adminToken: string;
  /** Where the URL and token came from, for messages ("stack acme", "--url and GPU_SANDBOX_ADMIN_TOKEN"). */
  readonly source: string;
}

export interface ApiKey {
  readonly id: string;
  readonly name: string;
  readonly tier: string;
  readonly models: readonly string[] | null;
  readonly balance: number;
  readonly held: number;
  readonly credits_remaining: number;
  readonly created_at: string;
  readonly expires_at: string | null;
  readonly revoked_at: string | null;
}

export interface CreatedKey extends ApiKey {
  /** The plaintext key: in this response only. */
  readonly key: string;
}

export interface CreditGrant {
  readonly key_id: string;
  readonly amount: number;
  readonly note: string | null;
  readonly balance: number;
  readonly credits_remaining: number;
  /** The API answered from its idempotency record: this top-up had already been applied. */
  readonly replayed: boolean;
}

export type UsageGroup = "model" | "day";

export interface UsageQuery {
  readonly key?: string;
  readonly from?: string;
  readonly to?: string;
  readonly group?: UsageGroup;
}

export interface UsageRow {
  readonly key_id: string;
  readonly model?: string;
  readonly day?: string;
  readonly requests: number;
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  readonly cost: number;
}

export interface UsageReport {
  readonly object: "usage_report";
  readonly period: { readonly start: string; readonly end: string };
  readonly group: UsageGroup;
  readonly data: readonly UsageRow[];
}

/** The API said no, or could not be reached. A UsageError: the operator can act on it. */
export class AdminApiError extends UsageError {
  override name = "AdminApiError";
}

export interface AdminClient {
  createKey(body: { name: string; credits?: string; tier?: string; models?: string[]; expiresAt?: string }): Promise<CreatedKey>;
  listKeys(): Promise<ApiKey[]>;
  revokeKey(id: string): Promise<ApiKey>;
  topUp(id: string, body: { amount: string; note?: string }, idempotencyKey: string): Promise<CreditGrant>;
  usage(query: UsageQuery): Promise<UsageReport>;
  /** The API's own CSV (spreadsheet-safe quoting done by the shim). */
  usageCsv(query: UsageQuery): Promise<string>;
}

export function adminClient(target: AdminTarget, fetchImpl: typeof fetch = fetch): AdminClient {
  async function call(method: string, path: string, init: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
    const url = `${target.baseUrl}${path}`;
    let res: Response;
    try {
      res = await fetchImpl(url, {
        method,
        headers: {
          authorization: `Bearer ${target.adminToken}`,
          ...(init.body !== undefined ? { "content-type": "application/json" } : {}),
          ...init.headers,
        },
        ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {}),
        redirect: "manual",
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      throw new AdminApiError(`cannot reach the admin API at ${url}: ${networkReason(err)}`);
    }
    if (isRedirect(res.status)) {
      await res.body?.cancel();
      throw new AdminApiError(`the admin API at ${url} ${redirectAdvice(url, res.headers.get("location"), "admin token", (origin) => origin)}`);
    }
    if (!res.ok) throw await apiError(res, method, path, target);
    return res;
  }
  const json = async <T>(res: Response): Promise<T> => (await res.json()) as T;
  const query = (q: UsageQuery, format: "json" | "csv") => {
    const p = new URLSearchParams({ format, group: q.group ?? "model" });
    if (q.key) p.set("key", q.key);
    if (q.from) p.set("from", q.from);
    if (q.to) p.set("to", q.to);
    return `/admin/usage?${p}`;
  };
  return {
    createKey: async (body) => json<CreatedKey>(await call("POST", "/admin/keys", { body })),
    listKeys: async () => (await json<{ data: ApiKey[] }>(await call("GET", "/admin/keys"))).data,
    revokeKey: async (id) => json<ApiKey>(await call("DELETE", `/admin/keys/${encodeURIComponent(id)}`)),
    topUp: async (id, body, idempotencyKey) => {
      const res = await call("POST", `/admin/keys/${encodeURIComponent(id)}/credits`, { body, headers: { "idempotency-key": idempotencyKey } });
      return { ...(await json<Omit<CreditGrant, "replayed">>(res)), replayed: res.headers.get("idempotent-replayed") === "true" };
    },
    usage: async (q) => json<UsageReport>(await call("GET", query(q, "json"))),
    usageCsv: async (q) => (await call("GET", query(q, "csv"))).text(),
  };
}

/** "401 invalid_admin_token: Invalid admin token. …" plus what to check. */
async function apiError(res: Response, method: string, path: string, target: AdminTarget): Promise<AdminApiError> {
  const text = await res.text();
  let message = text.trim().slice(0, 300) || res.statusText;
  let code = "";
  try {
    const body = JSON.parse(text) as { error?: { message?: string; code?: string | null } };
    if (body.error?.message) {
      message = body.error.message;
      code = body.error.code ? `${body.error.code}: ` : "";
    }
  } catch {
    // Not JSON (a proxy's HTML page): the start of the text is still the best clue.
  }
  const hint =
    res.status === 401 ? `\nCheck the admin token (${target.source}).` :
    res.status === 403 && path.startsWith("/admin") ? "\nIs this machine's address in the stack's gpu-sandbox:adminCidrs? nginx serves /admin only to those." :
    "";
  return new AdminApiError(`admin API ${method} ${path.split("?")[0]} failed: ${res.status} ${code}${message}${hint}`);
}

/** How many keys a "no such key" message lists: a tenant can have thousands. */
const LISTED_IN_ERRORS = 10;

/**
 * A key by id, or by name (names are what operators remember, but the shim does not make them
 * unique, so an ambiguous name asks for the id). A name means the key in use that has it; only
 * when none does, the one revoked key that had it: a revoked key is still billed, reported and
 * the target of a top-up retry (which the shim answers from its first reply).
 */
export function findKey(keys: readonly ApiKey[], ref: string): ApiKey {
  const byId = keys.find((k) => k.id === ref);
  if (byId) return byId;
  const named = keys.filter((k) => k.name === ref);
  const active = named.filter((k) => k.revoked_at === null);
  const byName = active.length > 0 ? active : named;
  if (byName.length === 1) return byName[0]!;
  if (byName.length > 1) {
    throw new UsageError(`--key "${ref}" names ${byName.length} ${active.length > 0 ? "" : "revoked "}keys (${byName.map((k) => k.id).join(", ")}); give the id`);
  }
  const known = keys.filter((k) => k.revoked_at === null);
  if (known.length === 0) throw new UsageError(`--key "${ref}": no key with that id or name; the tenant has no keys in use`);
  const shown = known.slice(0, LISTED_IN_ERRORS).map((k) => `${k.name} (${k.id})`).join(", ");
  const more = known.length > LISTED_IN_ERRORS ? `, and ${known.length - LISTED_IN_ERRORS} more (npm run manage-keys -- list)` : "";
  throw new UsageError(`--key "${ref}": no key with that id or name; keys in use: ${shown}${more}`);
}
