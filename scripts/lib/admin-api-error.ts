import { UsageError } from "./cli.ts";
import type { ExitClass } from "./exit-codes.ts";

/**
 * How an admin API call failed, as the scripts read it (admin-client.ts makes these): what became
 * of it, and what the shim's error object said, its structured members kept so that no script
 * reads them out of the message's words (which may be reworded).
 */

/**
 * What became of a request that failed: never sent (no connection, a certificate not trusted, a
 * header fetch would not put on the wire),
 * refused (the API or a proxy answered without acting: 3xx, 4xx), or unknown (sent, and the
 * answer was lost, cut off, or a 5xx: the API may have acted on it).
 */
export type RequestOutcome = "not-sent" | "refused" | "unknown";

/** The API said no, or could not be reached. A UsageError: the operator can act on it. */
export class AdminApiError extends UsageError {
  override name = "AdminApiError";
  readonly outcome: RequestOutcome;
  readonly status: number | undefined;
  /** The API's error code (idempotency_key_reused, …), when it answered with one. */
  readonly code: string | undefined;
  /** The API's own message, and the parameter it names (`param`), when it answered with them. */
  readonly apiMessage: string | undefined;
  readonly param: string | undefined;
  /** The answer's Retry-After header, when it had one. */
  readonly retryAfter: string | null;
  /** GET /admin/requests/{id}'s 404 request_running: the request's `running` member, when the answer had one. */
  readonly running: RunningRequest | undefined;

  /** `cause`: the network failure, when the API did not answer (hostUnreachable tells a host that is down). */
  constructor(message: string, details: { outcome: RequestOutcome; status?: number; code?: string; apiMessage?: string; param?: string; retryAfter?: string | null; running?: RunningRequest; cause?: unknown; exit?: ExitClass }) {
    // Its outcome is its exit code's class (exit-codes.ts): 3 not sent, 4 refused, 5 unknown;
    // `exit` when they differ (a refusal for now only, exit 3: apiError).
    super(message, { cause: details.cause, exit: details.exit ?? details.outcome });
    this.outcome = details.outcome;
    this.status = details.status;
    this.code = details.code;
    this.apiMessage = details.apiMessage;
    this.param = details.param;
    this.retryAfter = details.retryAfter ?? null;
    this.running = details.running;
  }
}

/** The shim's own 404 (its error object, code not_found) for a route: a shim older than that route. */
export const isMissingRoute = (err: unknown): err is AdminApiError => err instanceof AdminApiError && err.status === 404 && err.code === "not_found";

/**
 * A request the shim is still serving (api-shim routes/running-request.ts, the 404
 * request_running's `running`): which key's, since when, what it holds.
 */
export interface RunningRequest {
  readonly request_id: string;
  readonly key_id: string;
  readonly since?: string;
  readonly running_ms?: number;
  readonly route?: string;
  readonly model?: string | null;
  readonly held?: number | null;
  readonly joined_request_id?: string | null;
}

/** The error object's `running`, when it is one (a key id at least); anything else: undefined. */
export function runningOf(value: unknown): RunningRequest | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const r = value as Record<string, unknown>;
  return typeof r.key_id === "string" && r.key_id !== "" && typeof r.request_id === "string" ? (r as unknown as RunningRequest) : undefined;
}
