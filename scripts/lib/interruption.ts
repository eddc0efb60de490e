// Ctrl-C and SIGTERM while a script runs commands that must not be cut short (reap-expired's
// `pulumi destroy`). Node's default is to exit at once, closing the pipes the command writes its
// output to: Pulumi's safe cancel (a first ^C waits for the running operation to reach a safe
// point, pulumi/pulumi#1231) then dies of SIGPIPE half way, which can leave the stack locked with
// pending operations (pulumi/pulumi#1077). Instead a first signal lets the commands finish their
// cancel (the script starts nothing new), and a second one kills them and exits.
import { EXIT } from "./exit-codes.ts";

/** Where the signals come from and how the script exits on a second one: the process, or a test's stand-in. */
export interface SignalHost {
  on(event: "SIGINT" | "SIGTERM", listener: (signal: NodeJS.Signals) => void): unknown;
  off(event: "SIGINT" | "SIGTERM", listener: (signal: NodeJS.Signals) => void): unknown;
  exit(code: number): void;
}

/** The exit code of a script stopped by a signal (128 + SIGINT's 2), as a shell reports ^C: one of exit-codes.ts's. */
export const INTERRUPTED_EXIT_CODE = EXIT.interrupted;

export interface Interruption {
  /** Whether a first signal came: the script starts nothing new. */
  readonly requested: boolean;
  /**
   * Aborted on a first SIGTERM, for RunOptions.interrupt: the commands get the ^C it stands for.
   * Not on a SIGINT: a terminal's ^C reaches the whole foreground process group, the commands
   * included, and a second ^C would make Pulumi stop at once. A SIGTERM (cron's `timeout`, a CI
   * job cancelled, `kill`) reaches this process alone.
   */
  readonly interrupt: AbortSignal;
  /** Aborted on a second signal, for RunOptions.kill, just before the script exits. */
  readonly kill: AbortSignal;
  /** Stops listening: node's own handling again. */
  dispose(): void;
}

/**
 * Listens for SIGINT and SIGTERM until disposed. `first` runs on the first signal (to say what
 * the script waits for), `second` on the next one, after which the commands are killed and the
 * script exits with INTERRUPTED_EXIT_CODE.
 */
export function watchInterruption(host: SignalHost, say: { first(): void; second(): void }): Interruption {
  const interrupt = new AbortController();
  const kill = new AbortController();
  let requested = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (!requested) {
      requested = true;
      say.first();
      if (signal === "SIGTERM") interrupt.abort();
      return;
    }
    say.second();
    kill.abort();
    host.exit(INTERRUPTED_EXIT_CODE);
  };
  host.on("SIGINT", onSignal);
  host.on("SIGTERM", onSignal);
  return {
    get requested() {
      return requested;
    },
    interrupt: interrupt.signal,
    kill: kill.signal,
    dispose() {
      host.off("SIGINT", onSignal);
      host.off("SIGTERM", onSignal);
    },
  };
}
