// The operator scripts' exit codes, and the one place that maps an error to its code, so that a
// CI job can tell "run it again" from "fix the command" from "check before running it again"
// without reading stderr (docs/operations.md, "From a CI pipeline"; docs/decisions.md).
import type { RequestOutcome } from "./admin-client.ts";

export const EXIT = {
  ok: 0,
  /** Failed, not classified: a pulumi command, a check, a bug. stderr says what. */
  failed: 1,
  /** The command cannot run as given: a flag, a file or variable it names, a missing CLI. Nothing was sent. */
  usage: 2,
  /**
   * The API could not be reached, or refused only for now (a rate limit past the retries, another
   * backup under way): nothing was done, so the same command may simply run again.
   */
  notSent: 3,
  /** The API (or what it answered: no such key, a name in use) refused the command: running it unchanged fails again. */
  refused: 4,
  /** Sent, and its answer lost, cut off or a 5xx: a write may have been applied (its error says what to run). */
  unknown: 5,
  /** Stopped by Ctrl-C, or by SIGTERM in a script that stops cleanly (128 + SIGINT's 2), as a shell reports ^C. */
  interrupted: 130,
} as const;

/** What an error is, for its exit code: a bad command line, a request's outcome, or a failure of another kind. */
export type ExitClass = "usage" | "failed" | RequestOutcome;

const CODES: Record<ExitClass, number> = {
  usage: EXIT.usage,
  failed: EXIT.failed,
  "not-sent": EXIT.notSent,
  refused: EXIT.refused,
  unknown: EXIT.unknown,
};

/**
 * A failure the user can act on (a bad flag, a missing variable, an API refusal): shown without a
 * stack trace. `exit` says what it is; left out, a bad command line (exit 2), unless it has a
 * `cause` that says otherwise: a message that rewords an API error (what to run next) keeps that
 * error's code by passing it as its cause.
 */
export class UsageError extends Error {
  override name = "UsageError";
  readonly exit: ExitClass | undefined;

  constructor(message: string, options: { cause?: unknown; exit?: ExitClass | undefined } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.exit = options.exit;
  }
}

/** Errors of a disk that cannot take a write (full, a quota, failing): not the command's to fix. */
const DISK_FAILURES = new Set(["ENOSPC", "EDQUOT", "EIO"]);

/**
 * The class of a file this machine could not write: 1 for a disk that cannot take it (as
 * new-tenant's stack file and backup-ledger's download), else 2, a path to fix (a file where a
 * directory goes, a directory this user may not write).
 */
export const writeFailureClass = (err: unknown): ExitClass => (DISK_FAILURES.has((err as NodeJS.ErrnoException).code ?? "") ? "failed" : "usage");

/**
 * The exit code of a script that failed with `err`: the first error down its chain of causes
 * that says what it is; a UsageError that none does is a bad command line (2); anything else, 1.
 */
export function exitCodeOf(err: unknown): number {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e instanceof UsageError && e.exit !== undefined) return CODES[e.exit];
  }
  return err instanceof UsageError ? EXIT.usage : EXIT.failed;
}

/** What every script's --help ends with (one text, so they cannot disagree). */
export const EXIT_CODES_USAGE = `Exit codes (every script; docs/operations.md, "From a CI pipeline"):
  0    done
  1    failed (a pulumi command, a check that ran, a stack that could not be read, a full disk); stderr says what
  2    bad usage: a flag, a file or a variable to fix; nothing was sent
  3    the API could not be reached (connection refused, DNS, TLS trust; smoke-test: no check
       reached the endpoint), or refused only for now
       (still rate limited after the retries, another backup under way); nothing was done: run it again
  4    refused by the API (an unknown key, a name in use, a wrong token): do not retry it unchanged
  5    sent, but its answer was lost (no answer, cut off, a 5xx): a read may be run again; a write
       only as its error says (the command with its Idempotency-Key), as it may have been applied
  130  interrupted (Ctrl-C; SIGTERM too for reap-expired --yes, create --from, backup-ledger);
       143: killed by SIGTERM elsewhere
A run that stops on a failure part way (create --from) exits with that failure's code; one that
goes on past failures (reap-expired, list-tenants) exits 1 when any failed.`;
