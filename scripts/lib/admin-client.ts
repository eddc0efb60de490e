// A small client for the shim's admin API (docs: api-shim routes/admin.ts): keys, top-ups, usage
// reports, credits statements and backups. Every failure becomes an AdminApiError whose message has the HTTP status and
// the API's own message, plus a hint for the usual operator mistakes, and says whether the API
// may have acted on the request (what a write's caller must tell the operator). A 429, and a read's
// 502/503 while the shim restarts, are waited out and sent again (admin-retry.ts).
import { setTimeout as sleep } from "node:timers/promises";
import { failedBeforeSending, networkReason, notTheApi, refusedByFetch, UsageError } from "./cli.ts";
import { credentialStray, trimCredential } from "./credential.ts";
import { isRedirect, redirectAdvice } from "./redirect.ts";
import { gaveUp, type Refusal, refusedForNow, RETRIES, retryable, retryWait } from "./admin-retry.ts";
import { AdminApiError, runningOf, type RunningRequest } from "./admin-api-error.ts";
export { findKey, keyReference, keyStatus } from "./key-lookup.ts";
// The error type moved to a module of its own; importers of admin-client.ts keep finding it here.
export { AdminApiError, isMissingRoute, type RequestOutcome, type RunningRequest } from "./admin-api-error.ts";
import type { CreditsQuery, CreditsStatement } from "./credits-statement.ts";
import { REQUEST_LIST, type RequestList, type RequestsQuery } from "./request-shapes.ts";
import type { KeyHistory } from "./key-history.ts";
export type { CreditsLine, CreditsQuery, CreditsStatement } from "./credits-statement.ts";

/** Where a tenant's admin API is and how to authenticate. */
export interface AdminTarget {
  /** Origin without /v1, e.g. https://203-0-113-9.ip.linodeusercontent.com */
  readonly baseUrl: string;
  readonly adminToken: string;
  /** Where the URL and token came from, for messages ("stack acme", "--url and GPU_SANDBOX_ADMIN_TOKEN"). */
  readonly source: string;
  /** What to do when the endpoint's certificate is not trusted (default: pass --ca, for a --url). */
  readonly untrustedAdvice?: string;
  /** The stack's createdAt output, for a target read from a stack: where the tenant's ledger begins. */
  readonly createdAt?: unknown;
}

export interface ApiKey {
  readonly id: string;
  readonly name: string;
  readonly tier: string;
  readonly models: readonly string[] | null;
  readonly balance: number;
  readonly held: number;
  readonly credits_remaining: number;
  /** Requests of the key not settled yet, whose usage is not in the ledger; a shim older than it does not say. */
  readonly requests_in_flight?: number;
  /** A key from the configuration (the stack's gpu-sandbox:keys): changed there, not with update or rotate; a shim older than it does not say. */
  readonly from_configuration?: boolean;
  readonly created_at: string;
  readonly expires_at: string | null;
  readonly revoked_at: string | null;
}

export interface CreatedKey extends ApiKey {
  /** The plaintext key: in this response only. */
  readonly key: string;
}

/** A creation sent again with its Idempotency-Key: the key the first one made, as it is now, without its secret (kept hashed). */
export interface ReplayedCreation extends ApiKey {
  readonly key: null;
  readonly replayed: true;
}

export interface CreditGrant {
  readonly key_id: string;
  readonly amount: number;
  readonly note: string | null;
  readonly balance: number;
  readonly credits_remaining: number;
  /** The API answered from its idempotency record: this top-up (or write-off) had already been applied. */
  readonly replayed: boolean;
}

/** day,model: a row per key, day and model (a shim older than it refuses it: 400 naming `group`, usage-export.ts). */
/** model,price: a row per key, model and price, with the price's fields (an auditor's; a shim older than it refuses it as day,model's). */
export type UsageGroup = "model" | "day" | "day,model" | "model,price";

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
  /** group=model,price: the price charged (in credits; null: rows from before prices were recorded). */
  readonly price?: { readonly id: string; readonly request: number | null; readonly batch_request: number | null; readonly prompt_per_1k: number | null; readonly cached_prompt_per_1k: number | null; readonly completion_per_1k: number | null } | null;
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


export interface AdminClient {
  createKey(body: { name: string; credits?: string; tier?: string; models?: string[]; expiresAt?: string }): Promise<CreatedKey>;
  /** createKey with an Idempotency-Key: the same request again answers the key it made (`replayed`), never a second key. */
  createKeyOnce(body: { name: string; credits?: string; tier?: string; models?: string[]; expiresAt?: string }, idempotencyKey: string): Promise<CreatedKey | ReplayedCreation>;
  listKeys(): Promise<ApiKey[]>;
  revokeKey(id: string): Promise<ApiKey>;
  /** PATCH /admin/keys/{id}: a field left out is not changed; null: every model, or no expiry. */
  updateKey(id: string, body: { tier?: string; models?: string[] | null; expires_at?: string | null }): Promise<ApiKey>;
  /** POST /admin/keys/{id}/rotate: the same key with a new secret, in `key` (only in this answer). */
  rotateKey(id: string): Promise<CreatedKey>;
  /** GET /admin/keys/{id}/events: the key's history, oldest first (a shim older than it: 404 "Unknown route"). */
  keyEvents(id: string): Promise<KeyHistory>;
  topUp(id: string, body: { amount: string; note?: string }, idempotencyKey: string): Promise<CreditGrant>;
  /** POST /admin/keys/{id}/debits: credits written off (a shim older than it: 404 not_found without a param). */
  writeOff(id: string, body: { amount: string; note?: string }, idempotencyKey: string): Promise<CreditGrant>;
  usage(query: UsageQuery): Promise<UsageReport>;
  /** The API's own CSV (spreadsheet-safe quoting done by the shim). */
  usageCsv(query: UsageQuery): Promise<string>;
  /** GET /admin/credits of every key, or of `key` (a shim older than it answers 404 not_found: report-usage.ts). */
  credits(query: CreditsQuery): Promise<CreditsStatement>;
  /** GET /admin/requests/{id} (`key`: narrowed to that key's): the request's ledger rows; none, or a shim older than it: 404 not_found (param request_id: none). */
  request(requestId: string, key?: string): Promise<RequestList>;
  /** GET /admin/requests?key=: a key's requests one row each, the answer's body to read as it arrives (a busy key's month is millions of rows). */
  requests(query: RequestsQuery): Promise<Response>;
  /** GET /admin/backup: the ledger's SQLite file, its body to read (backup-ledger.ts); the call, body included, has an hour. */
  backup(): Promise<Response>;
}

export interface AdminClientOptions {
  /** Where to say that the client waits out a 429 (a wait of up to 30 s must not look like a hang). */
  readonly progress?: (line: string) => void;
  /** How to wait (tests). */
  readonly sleep?: (ms: number) => Promise<void>;
  /** How long a call may take, answer included (tests scale them down). */
  readonly timeouts?: { readonly requestMs: number; readonly reportMs: number; readonly backupMs?: number };
}

/**
 * How long a call may take, its whole answer included: 30 s, and for a usage report 180 s. The
 * shim gives a report 60 s (REPORT_TIMEOUT_MS), after a wait in the admin API's line of reports,
 * and a whole ledger's CSV (reap-expired's export) is tens of MB to send: cut at 30 s, a large
 * tenant's export failed at every run, and the tenant could only be destroyed without its usage.
 */
const TIMEOUTS = { requestMs: 30_000, reportMs: 180_000, backupMs: 3_600_000 };

/** AbortSignal.timeout's abort: the call's time ran out (not the network). */
const timedOut = (err: unknown) => err instanceof Error && err.name === "TimeoutError";

export function adminClient(given: AdminTarget, fetchImpl: typeof fetch = fetch, options: AdminClientOptions = {}): AdminClient {
  const { progress = () => {}, sleep: wait = sleep, timeouts = TIMEOUTS } = options;
  // Checked before any request (scripts/lib/credential.ts): fetch's refusal would repeat the token.
  const target = { ...given, adminToken: trimCredential(given.adminToken) };
  const stray = credentialStray(target.adminToken);
  if (stray) {
    throw new UsageError(`the admin token (${target.source}) has ${stray}, which no admin token has (printable ASCII only): was it pasted with a typographic dash or quote? Copy it again, e.g. from \`pulumi stack output adminToken --show-secrets\``);
  }
  /** One admin request, sent again after a refusal that says to retry (admin-retry.ts). */
  async function call(method: string, path: string, init: { body?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
    const timeoutMs = path.startsWith("/admin/usage") || path.startsWith("/admin/credits") || path.startsWith("/admin/requests") ? timeouts.reportMs : path === "/admin/backup" ? (timeouts.backupMs ?? TIMEOUTS.backupMs) : timeouts.requestMs;
    const tries: Record<Refusal, number> = { "rate-limited": 0, restarting: 0 };
    for (;;) {
      try {
        return await callOnce(method, path, init, timeoutMs);
      } catch (err) {
        if (!(err instanceof AdminApiError)) throw err;
        const why = retryable(method, err.status, err.retryAfter);
        if (why === undefined) throw err;
        const retry = ++tries[why];
        const ms = retryWait(err.retryAfter);
        const refusal = `${method} ${path.split("?")[0]}: ${err.status} ${err.code ? `${err.code}: ` : ""}${(err.apiMessage ?? (why === "rate-limited" ? "rate limited" : "unavailable")).replace(/\.$/, "")}`;
        if (retry > RETRIES[why]) {
          err.message += gaveUp(why);
          throw err;
        }
        progress(`admin API ${refusal}. Waiting ${ms / 1000} s, then sending it again (retry ${retry} of ${RETRIES[why]})…`);
        await wait(ms);
      }
    }
  }
  // A tenant with tls.mode off is reached over plain http: said once, as the token then crosses
  // the network in the clear (and a created key comes back so).
  let cleartextSaid = !sentInCleartext(target.baseUrl);
  async function callOnce(method: string, path: string, init: { body?: unknown; headers?: Record<string, string> }, timeoutMs: number): Promise<Response> {
    const url = `${target.baseUrl}${path}`;
    if (!cleartextSaid) {
      cleartextSaid = true;
      progress(`warning: ${new URL(target.baseUrl).origin} is plain http: the admin token (and any key created) crosses the network unencrypted; use the tenant's https endpoint (tls.mode letsencrypt or self-signed) unless this network is yours`);
    }
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
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      if (refusedByFetch(err)) throw new AdminApiError(`${method} ${url} was not sent: fetch refused it: ${err.message}`, { outcome: "not-sent" });
      const reason = networkReason(err, target.untrustedAdvice);
      if (failedBeforeSending(err)) throw new AdminApiError(`cannot reach the admin API at ${url}: ${reason}`, { outcome: "not-sent", cause: err });
      if (timedOut(err)) throw new AdminApiError(`no answer from the admin API to ${method} ${url} within ${timeoutMs / 1000} s, after the request was sent`, { outcome: "unknown", cause: err });
      throw new AdminApiError(`no answer from the admin API to ${method} ${url}, after the request was sent: ${reason}`, { outcome: "unknown", cause: err });
    }
    if (isRedirect(res.status)) {
      await res.body?.cancel();
      const advice = redirectAdvice({ base: target.baseUrl, url }, res.headers.get("location"), "admin token");
      throw new AdminApiError(`the admin API at ${url} ${advice}`, { outcome: "refused", status: res.status });
    }
    if (!res.ok) throw await apiError(res, method, path, target);
    return res;
  }
  /** The answer's body; a connection lost while it arrives leaves the outcome unknown. */
  const text = async (res: Response, method: string, path: string): Promise<string> => {
    try {
      return await res.text();
    } catch (err) {
      const why = timedOut(err) ? "it had not all arrived when the call's time ran out" : networkReason(err, target.untrustedAdvice);
      throw new AdminApiError(`the admin API's answer to ${method} ${path} was cut off: ${why}`, { outcome: "unknown", status: res.status, cause: err });
    }
  };
  /**
   * The API's JSON answer, of the shape it gives that request. Anything else (a web page, or
   * another service's JSON, at a wrong --url) is a sentence, not a SyntaxError or a TypeError.
   */
  const json = async <T>(method: string, path: string, shape: Shape<T>, init: Parameters<typeof call>[2] = {}): Promise<{ body: T; res: Response }> => {
    const res = await call(method, path, init);
    const body = await text(res, method, path);
    let parsed: { value: unknown } | undefined;
    try {
      parsed = { value: JSON.parse(body) };
    } catch {
      parsed = undefined;
    }
    if (parsed !== undefined && shape.is(parsed.value)) return { body: parsed.value, res };
    // A write answered by something that is not the shim most likely did nothing, but a caller
    // that says "nothing happened" when it did loses money: unknown.
    throw new AdminApiError(notTheApi(`admin API ${method} ${path.split("?")[0]}`, res.status, parsed === undefined ? "JSON" : shape.what, body), { outcome: method === "GET" ? "refused" : "unknown", status: res.status });
  };
  const query = (q: UsageQuery, format: "json" | "csv") => {
    const p = new URLSearchParams({ format, group: q.group ?? "model" });
    if (q.key) p.set("key", q.key);
    if (q.from) p.set("from", q.from);
    if (q.to) p.set("to", q.to);
    return `/admin/usage?${p}`;
  };
  // A top-up (credits) or a write-off (debits): one answer's shape, replayed or not.
  const creditsChange = async (id: string, route: "credits" | "debits", body: object, idempotencyKey: string): Promise<CreditGrant> => {
    const { body: grant, res } = await json("POST", `/admin/keys/${encodeURIComponent(id)}/${route}`, creditChange(route === "credits" ? "credit_grant" : "credit_write_off"), { body, headers: { "idempotency-key": idempotencyKey } });
    return { ...grant, replayed: res.headers.get("idempotent-replayed") === "true" };
  };
  return {
    createKey: async (body) => (await json("POST", "/admin/keys", CREATED_KEY, { body })).body,
    createKeyOnce: async (body, idempotencyKey) => {
      const { body: key, res } = await json("POST", "/admin/keys", CREATED_OR_REPLAYED, { body, headers: { "idempotency-key": idempotencyKey } });
      return res.headers.get("idempotent-replayed") === "true" && key.key === null ? { ...key, key: null, replayed: true } : (key as CreatedKey);
    },
    listKeys: async () => (await json("GET", "/admin/keys", KEY_LIST)).body.data,
    revokeKey: async (id) => (await json("DELETE", `/admin/keys/${encodeURIComponent(id)}`, KEY)).body,
    updateKey: async (id, body) => (await json("PATCH", `/admin/keys/${encodeURIComponent(id)}`, KEY, { body })).body,
    rotateKey: async (id) => (await json("POST", `/admin/keys/${encodeURIComponent(id)}/rotate`, CREATED_KEY)).body,
    keyEvents: async (id) => (await json("GET", `/admin/keys/${encodeURIComponent(id)}/events`, KEY_HISTORY)).body,
    topUp: (id, body, idempotencyKey) => creditsChange(id, "credits", body, idempotencyKey),
    writeOff: (id, body, idempotencyKey) => creditsChange(id, "debits", body, idempotencyKey),
    usage: async (q) => (await json("GET", query(q, "json"), USAGE_REPORT)).body,
    usageCsv: async (q) => {
      const path = query(q, "csv");
      const res = await call("GET", path);
      const csv = await text(res, "GET", path);
      if (!csv.startsWith("key_id,")) {
        throw new AdminApiError(notTheApi("admin API GET /admin/usage", res.status, "the usage CSV", csv), { outcome: "refused", status: res.status });
      }
      return csv;
    },
    credits: async (q) => (await json("GET", `/admin/credits?${new URLSearchParams({ from: q.from, to: q.to, ...(q.key ? { key: q.key } : {}) })}`, CREDITS_STATEMENT)).body,
    request: async (id, key) => (await json("GET", `/admin/requests/${encodeURIComponent(id)}${key ? `?key=${encodeURIComponent(key)}` : ""}`, REQUEST_LIST)).body,
    requests: (q) => call("GET", `/admin/requests?${new URLSearchParams(Object.entries(q).filter((e): e is [string, string] => e[1] !== undefined))}`),
    backup: () => call("GET", "/admin/backup"),
  };
}

/**
 * The shape of one of the API's answers (api-shim routes/admin.ts), as an error names it: enough
 * to tell it from another service's JSON, which the scripts would print as "undefined" or crash on.
 */
interface Shape<T> {
  readonly what: string;
  readonly is: (body: unknown) => body is T;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isKey = (v: unknown): v is ApiKey => isObject(v) && v.object === "api_key" && typeof v.id === "string";

const KEY: Shape<ApiKey> = { what: 'an "api_key" object', is: isKey };
const CREATED_KEY: Shape<CreatedKey> = { what: 'an "api_key" object', is: (v): v is CreatedKey => isKey(v) && typeof (v as { key?: unknown }).key === "string" };
const CREATED_OR_REPLAYED: Shape<ApiKey & { key: string | null }> = {
  what: 'an "api_key" object',
  is: (v): v is ApiKey & { key: string | null } => isKey(v) && (typeof (v as { key?: unknown }).key === "string" || (v as { key?: unknown }).key === null),
};
const KEY_LIST: Shape<{ data: ApiKey[] }> = { what: 'a "list" of keys', is: (v): v is { data: ApiKey[] } => isObject(v) && v.object === "list" && Array.isArray(v.data) && v.data.every(isKey) };
const KEY_HISTORY: Shape<KeyHistory> = { what: 'a "list" of key events', is: (v): v is KeyHistory => isObject(v) && v.object === "list" && typeof v.key_id === "string" && Array.isArray(v.data) };
/** A top-up's answer (`credit_grant`) or a write-off's (`credit_write_off`): the same members. */
const creditChange = (object: string): Shape<Omit<CreditGrant, "replayed">> => ({
  what: `a "${object}" object`,
  is: (v): v is Omit<CreditGrant, "replayed"> => isObject(v) && v.object === object && typeof v.key_id === "string" && typeof v.balance === "number",
});
const USAGE_REPORT: Shape<UsageReport> = {
  what: 'a "usage_report" object',
  is: (v): v is UsageReport => isObject(v) && v.object === "usage_report" && Array.isArray(v.data) && isObject(v.period) && typeof v.period.start === "string" && typeof v.period.end === "string",
};

const CREDITS_STATEMENT: Shape<CreditsStatement> = {
  what: 'a "credits_statement" object',
  is: (v): v is CreditsStatement => isObject(v) && v.object === "credits_statement" && Array.isArray(v.data) && isObject(v.period),
};

/** "401 invalid_admin_token: Invalid admin token. …" plus what to check. */
async function apiError(res: Response, method: string, path: string, target: AdminTarget): Promise<AdminApiError> {
  const text = await res.text().catch(() => "");
  let message = text.trim().slice(0, 300) || res.statusText;
  let code: string | undefined;
  let apiMessage: string | undefined;
  let param: string | undefined;
  let running: RunningRequest | undefined;
  try {
    const body = JSON.parse(text) as { error?: { message?: string; code?: string | null; param?: string | null; running?: unknown } };
    if (body.error?.message) {
      message = apiMessage = body.error.message;
      code = body.error.code ?? undefined;
      param = body.error.param ?? undefined;
      running = runningOf(body.error.running);
    }
  } catch {} // not JSON (a proxy's HTML page): the start of the text is still the best clue
  const hint =
    res.status === 401 ? `\nCheck the admin token (${target.source}).${isLoopback(target.baseUrl) ? DEV_TOKEN_HINT : ""}` :
    res.status === 403 && path.startsWith("/admin") ? "\nIs this machine's address in the stack's gpu-sandbox:adminCidrs? nginx serves /admin only to those." :
    // The shim answers every 404 with its error object; another service (vLLM, a web server) does not.
    res.status === 404 && apiMessage === undefined ? `\n${target.baseUrl} is not the shim's admin API (its 404 is not the shim's error): is --url the tenant's endpoint (https://<host>, or https://<host>/v1)?` :
    "";
  // A 5xx may come after the API acted (a proxy's 502/504 while the shim answered late); not a 501
  // or 507 (the shim's backup on Postgres, or without room: nothing done, and again fails again).
  return new AdminApiError(`admin API ${method} ${path.split("?")[0]} failed: ${res.status} ${code ? `${code}: ` : ""}${message}${hint}`, {
    outcome: res.status >= 500 && res.status !== 501 && res.status !== 507 ? "unknown" : "refused", status: res.status, retryAfter: res.headers.get("retry-after"),
    ...(refusedForNow(res.status, code, apiMessage) ? { exit: "not-sent" as const } : {}),
    ...(code !== undefined ? { code } : {}), ...(apiMessage !== undefined ? { apiMessage } : {}), ...(param !== undefined ? { param } : {}),
    ...(running !== undefined ? { running } : {}),
  });
}

/** Whether `baseUrl` is this machine (loopback): a shim of `npm run shim`, most likely. */
function isLoopback(baseUrl: string): boolean {
  return /^(127\.\d+\.\d+\.\d+|0\.0\.0\.0|\[::1\]|(.+\.)?localhost\.?)$/i.test(new URL(baseUrl).hostname);
}

/** Whether requests to `baseUrl` leave this machine unencrypted: http:// to anything but loopback. */
function sentInCleartext(baseUrl: string): boolean {
  return new URL(baseUrl).protocol === "http:" && !isLoopback(baseUrl);
}

/** For a 401 from a shim on this machine: the token the banner of `npm run shim` printed is new at each start. */
const DEV_TOKEN_HINT = " A local `npm run shim` makes a new admin token at each start (its banner prints it) unless SHIM_ADMIN_TOKEN is set.";
