// report-usage --request and --itemise: a request's ledger row by the id its client saw, and a
// key's requests one row each (the shim's GET /admin/requests, routes/requests.ts).
import { AdminApiError, isMissingRoute } from "./admin-client.ts";
import { UsageError } from "./cli.ts";
import type { RequestList, RequestRowJson, RequestsQuery } from "./request-shapes.ts";

/**
 * What a row means for the ticket "I was charged for request X that failed" (docs/troubleshooting.md,
 * "A tenant's ticket in detail", says the same): charged or not, and why.
 */
export function whatItMeans(r: RequestRowJson): string {
  const j = r.joined_request_id;
  if (j) return `Not charged: it was answered with request ${j}'s generation (a retry that joined it, or a re-send with its Idempotency-Key), whose row has the charge: report-usage --request ${j}; not counted in the usage reports (that request is).`;
  const charged = r.cost > 0 ? `Charged ${r.cost} credits` : "Not charged";
  const counted = r.reported ? "counted in the usage reports" : "not counted in the usage reports (nothing served, nothing charged)";
  let why: string;
  if (r.status === 499) {
    why = r.stream === false
      ? "the client (or a proxy between) closed the connection before the answer came; a request not streamed is generated to its end and charged whole, since the model did the work (a client timeout shorter than its generations, and its SDK's retries, pay several times)"
      : "the client (or a proxy between) closed the stream; it is charged what was generated before (its prompt estimated when the model's count never came)";
  } else if (r.status < 400) {
    why = r.cost > 0 ? "answered (a stream broken off after content by a failure also has status 200, and is charged what was delivered: the shim's log line has its error)" : "answered, at a price of 0";
  } else if (r.cost > 0) {
    why = `it failed (status ${r.status}) after the model had done work, which is charged`;
  } else {
    why = r.served === true ? `it failed (status ${r.status}); nothing was charged` : `the model served nothing (status ${r.status}: it refused or failed before any content, or the request never reached it), so nothing was charged`;
  }
  return `${charged}: ${why}; ${counted}.`;
}

/** A row as --request prints it: its fields, one a line, then what it means. */
export function formatRequestRow(r: RequestRowJson, keyName: string | undefined): string {
  const unknown = "unknown (not recorded before 2026-12-07)";
  // A joined request's row: the request it joined, and no price line (nothing was charged at one: not "unknown").
  const joined = r.joined_request_id ?? null;
  const fields = ([
    ["request id", r.request_id], ["joined", joined], ["key", `${r.key_id}${keyName === undefined ? "" : ` (${keyName})`}`], ["at", r.at], ["route", r.route], ["model", r.model],
    ["status", r.status], ["stream", r.stream === null ? "unknown" : String(r.stream)], ["batch", r.batch === null ? unknown : String(r.batch)],
    ["prompt tokens", r.prompt_tokens], ["cached tokens", r.cached_tokens ?? unknown], ["completion tokens", r.completion_tokens],
    ["cost", `${r.cost} credits`], ["price", joined === null ? r.price_id ?? unknown : null], ["took", r.ms === null ? "unknown" : `${r.ms} ms`],
  ] as [string, string | number | null][]).filter((f): f is [string, string | number] => f[1] !== null);
  const width = Math.max(...fields.map(([name]) => name.length));
  return `${fields.map(([name, value]) => `${`${name}:`.padEnd(width + 2)}${value}`).join("\n")}\n\n${whatItMeans(r)}`;
}

/** Where the script's output goes (its ScriptDeps' io). */
interface Out { out(line: string): void; err(line: string): void; write(text: string): void }

const OLDER = (what: string) => `This tenant's shim is older than ${what} (2026-12-07): upgrade it (pulumi up with this checkout), or look the request up in a copy of its ledger (backup-ledger and sqlite3: docs/troubleshooting.md, "A tenant's ticket in detail").`;

/**
 * --request: the request's rows (`keys`: only those of these keys, --key's), printed with what they
 * mean (table) or as the API's answer (json). None: an error naming the id, and why a request has
 * no row. Returns the exit code.
 */
export async function lookUpRequest(client: { request(id: string): Promise<RequestList> }, id: string, keys: ReadonlyMap<string, string>, only: readonly string[] | undefined, json: boolean, io: Out): Promise<number> {
  let list: RequestList;
  try {
    list = await client.request(id);
  } catch (err) {
    if (err instanceof AdminApiError && err.status === 404 && err.code === "request_running") throw stillRunning(id, err.apiMessage ?? "", err.running?.key_id, keys, only, err);
    if (!isMissingRoute(err)) throw err;
    // The route's own 404 names the id; a shim without the route names nothing.
    if (err.param !== "request_id") throw new NotFound(OLDER("GET /admin/requests"));
    throw new NotFound(`No request ${id} in the ledger. ${err.apiMessage ?? ""}`.trim());
  }
  const rows = only === undefined ? list.data : list.data.filter((r) => only.includes(r.key_id));
  if (rows.length === 0) throw new NotFound(`Request ${id} is in the ledger, but not as a request of --key ${only!.join(", ")}: its key is ${list.data.map((r) => r.key_id).join(", ")}.`);
  if (json) io.out(JSON.stringify({ ...list, data: rows.map((r) => ({ ...r, key_name: keys.get(r.key_id) ?? "" })) }, null, 2));
  else io.out(rows.map((r) => formatRequestRow(r, keys.get(r.key_id))).join("\n\n"));
  return 0;
}

/**
 * A request the shim is still serving (404 request_running): no row yet. Its message says since
 * when, which key and what it holds; the key's name is added, the key being its answer's
 * `running.key_id` (`keyId`), not a word read out of the message. Exit 3, as a refusal for now: the
 * same command, run once the request has ended, shows its row. Another key's than --key's: not found.
 */
function stillRunning(id: string, apiMessage: string, keyId: string | undefined, keys: ReadonlyMap<string, string>, only: readonly string[] | undefined, cause: unknown): UsageError {
  if (only !== undefined && keyId !== undefined && !only.includes(keyId)) return new NotFound(`Request ${id} is running, but not as a request of --key ${only.join(", ")}: its key is ${keyId}.`);
  const name = keyId === undefined ? undefined : keys.get(keyId);
  return new UsageError(`${apiMessage}${name === undefined ? "" : ` (Key ${keyId} is ${name}.)`}`, { cause, exit: "not-sent" });
}

/** A request not found, or a shim without the route: said as a key not found is (exit code 4, refused: the message alone). */
export class NotFound extends UsageError {
  constructor(message: string) {
    super(message, { exit: "refused" });
  }
}

/**
 * --itemise: each key's requests in the period, one row each, oldest first, written as the shim
 * sends them (never held whole: a busy key's month is millions of rows). CSV: the first key's
 * header, then every key's rows; JSON: an array of each key's answer.
 */
export async function itemise(client: { requests(q: RequestsQuery): Promise<Response> }, keyIds: readonly string[], period: { from?: string; to?: string }, format: "json" | "csv", io: Out): Promise<number> {
  if (format === "json") io.write("[");
  for (const [i, key] of keyIds.entries()) {
    let res: Response;
    try {
      res = await client.requests({ key, ...period, format });
    } catch (err) {
      if (isMissingRoute(err) && err.param !== "key") throw new NotFound(OLDER("GET /admin/requests (--itemise)"));
      throw err;
    }
    if (format === "json" && i > 0) io.write(",");
    // After the first key's CSV, the others' header lines are left out.
    let header = format === "csv" && i > 0;
    // The header's text so far: its line end may come in pieces too (CR in one chunk, LF in the
    // next), and a row then taken for the header's end would be lost.
    let skipped = "";
    const decoder = new TextDecoder();
    for await (const chunk of res.body ?? []) {
      let text = decoder.decode(chunk as Uint8Array, { stream: true });
      if (header) {
        skipped += text;
        const end = skipped.indexOf("\r\n");
        if (end < 0) continue; // the header goes on in the next chunk
        text = skipped.slice(end + 2);
        header = false;
      }
      if (text !== "") io.write(text);
    }
    const rest = decoder.decode();
    if (rest !== "") io.write(rest);
  }
  if (format === "json") io.write("]\n");
  return 0;
}
