// What a script needs from the outside world, in one object: tests replace any part of it
// (a fake Pulumi CLI, a temp project root, a fixed clock, captured output).
import { consoleIo, type Io } from "./cli.ts";
import type { SignalHost } from "./interruption.ts";
import { type PulumiCli, realPulumi } from "./pulumi.ts";

export interface ScriptDeps {
  /** The project root: Pulumi.yaml and stacks/. */
  readonly root: string;
  readonly env: NodeJS.ProcessEnv;
  readonly io: Io;
  readonly pulumi: PulumiCli;
  readonly now: () => Date;
  /** Ctrl-C and SIGTERM, for a script that must not stop mid-command (reap-expired). */
  readonly signals: SignalHost;
  /** Whether stdin is a terminal (someone may be watching), for unattended.ts. */
  readonly stdinIsTTY: boolean;
}

export function withDefaults(partial: Partial<ScriptDeps> = {}): ScriptDeps {
  const root = partial.root ?? process.cwd();
  const env = partial.env ?? process.env;
  return {
    root,
    env,
    io: partial.io ?? consoleIo,
    pulumi: partial.pulumi ?? realPulumi(root, env),
    now: partial.now ?? (() => new Date()),
    signals: partial.signals ?? process,
    stdinIsTTY: partial.stdinIsTTY ?? process.stdin.isTTY === true,
  };
}
