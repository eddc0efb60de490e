// Which failed admin requests the admin client (admin-client.ts) sends again, how often and after
// how long. Two refusals say to retry:
// - a 429 (nginx's per-address limit, which covers /admin, or the shim's): neither processed the
//   request, so any call is sent again (a top-up keeps its Idempotency-Key);
// - a 502 or 503 with a Retry-After: nginx's "The service is not reachable; retry shortly." while
//   the shim restarts (a deploy, a crash, Docker's restart; admin requests are served while it
//   drains, then refused until it listens again), or its 503 "The service is unavailable".
//   Only a read (GET) is sent again: a write may have been applied before the answer was lost,
//   and its error says what to run. Without this, a nightly report or backup that met a restart
//   failed the pipeline, though the shim was back seconds later.

export type Refusal = "rate-limited" | "restarting";

/**
 * How often a request is sent again: a 429 five times; a restart twelve, each after nginx's 5 s,
 * a minute in all, which covers a drain's end (SHIM_DRAIN_TIMEOUT_MS, 23 s deployed) and a start.
 */
export const RETRIES: Record<Refusal, number> = { "rate-limited": 5, restarting: 12 };

/** The longest wait before a retry, whatever the Retry-After. */
const LONGEST_WAIT_S = 30;

/** Why a failed request may be sent again, or undefined when it may not. */
export function retryable(method: string, status: number | undefined, retryAfter: string | null): Refusal | undefined {
  if (status === 429) return "rate-limited";
  if (method === "GET" && (status === 502 || status === 503) && retryAfter !== null) return "restarting";
  return undefined;
}

/**
 * How long a refusal asks to wait, in ms: its Retry-After (seconds, a fraction rounded up to the
 * ms, or an HTTP date) capped at LONGEST_WAIT_S; 1 s when it gives none that can be read.
 * Only a value with a letter is read as a date: Date.parse("1.5") is a date in 2001.
 */
export function retryWait(retryAfter: string | null, now = Date.now()): number {
  const value = retryAfter?.trim() ?? "";
  const date = /[a-z]/i.test(value) ? Date.parse(value) : NaN;
  const ms = /^\d+(\.\d+)?$/.test(value) ? Math.ceil(Number(value) * 1000)
    : Number.isNaN(date) ? 1000 : Math.max(0, Math.ceil((date - now) / 1000) * 1000);
  return Math.min(ms, LONGEST_WAIT_S * 1000);
}

/** What the error adds once the retries are spent: what to do next. */
export function gaveUp(why: Refusal): string {
  return why === "rate-limited"
    ? `\nIt was still refused after ${RETRIES[why]} retries, each after the wait it asked for: run the command again in a minute. nginx limits each address's requests, /admin included, to the stack's limits.requestsPerSecond and limits.burst; the shim, an address's failed admin tokens to unauthenticatedRpm a minute.`
    : `\nIt was still unavailable after ${RETRIES[why]} retries, each after the wait it asked for (about a minute): the shim is down or keeps restarting; see "The shim keeps restarting" in docs/troubleshooting.md, then run the command again.`;
}

/**
 * A refusal that says nothing of the command, only of the moment: nothing was done, and the same
 * command run again later goes through (exit 3, as an API not reached; exit 4 said a retry
 * unchanged fails again, while the error said to run it again). nginx's per-address limit
 * (limit_req, limit_conn), still there after the client's retries; another backup being made.
 * Not the shim's own 429 for /admin: it counts wrong admin tokens (the right one is let in), so
 * the token is wrong and a retry fails again.
 */
export function refusedForNow(status: number, code: string | undefined, apiMessage: string | undefined): boolean {
  if (status === 429) return !/wrong admin tokens/i.test(apiMessage ?? "");
  return status === 409 && code === "backup_in_progress";
}
