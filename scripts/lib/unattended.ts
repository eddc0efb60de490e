// Whether a script runs with nobody at a terminal (a CI job, cron), for the warnings that only
// matter then: a job is re-run as a whole after a later step fails, repeating what already
// succeeded, where an operator at a terminal sees the result and does not type it again.
import type { ScriptDeps } from "./deps.ts";

/**
 * Why the run looks unattended, or undefined when someone is at a terminal: `CI` set (GitHub
 * Actions, GitLab CI, CircleCI, Travis, Buildkite, Woodpecker set it; "false" and "0" say not),
 * or stdin not a terminal (cron, systemd, Jenkins, a pipe), which catches a runner that sets no `CI`.
 */
export function unattended(deps: Pick<ScriptDeps, "env" | "stdinIsTTY">): string | undefined {
  const ci = deps.env.CI?.trim();
  if (ci && ci.toLowerCase() !== "false" && ci !== "0") return `CI=${ci}`;
  return deps.stdinIsTTY ? undefined : "stdin is not a terminal";
}

/**
 * The warning a top-up or write-off without --idempotency-key prints in an unattended run: the
 * Idempotency-Key it generates is new each run, so a job run again applies it again. Not refused:
 * jobs that run once (and those that check the balance first) keep working.
 */
export function noIdempotencyKeyWarning(command: "top-up" | "write-off", why: string): string {
  const verb = command === "top-up" ? "credits the key again" : "takes the credits off again";
  return `Warning: ${command} without --idempotency-key in an unattended run (${why}): the Idempotency-Key above is new each run, so running this job again ${verb}. Give --idempotency-key a name for what it is for (e.g. invoice-1042, or the day: nightly-$(date -u +%F)), so a re-run applies it once.`;
}
