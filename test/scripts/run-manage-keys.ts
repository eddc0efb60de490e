// manage-keys run in-process against a test shim, for the manage-keys test files: one place for
// how a run is made (the admin token in the environment, a fake Pulumi, a fresh stack directory)
// and what a test reads of it.
import { execFileSync } from "node:child_process";
import { type Io, memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/manage-keys.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

export interface ManageKeysRun {
  readonly code: number;
  readonly io: Io & { stdout: string[]; stderr: string[] };
  readonly out: string;
  readonly err: string;
  /** What the operator reads last. */
  readonly lastLine: string | undefined;
  readonly root: string;
}

export interface ManageKeysOptions {
  /** The whole environment; default: the shim's admin token alone. */
  readonly env?: NodeJS.ProcessEnv;
  readonly pulumi?: FakePulumi;
  readonly root?: string;
  readonly io?: Io & { stdout: string[]; stderr: string[] };
  /** Default true: an operator at a terminal, whatever vitest's stdin is (a CI job's run: manage-keys-unattended.test.ts). */
  readonly stdinIsTTY?: boolean;
  /** The clock (top-up --up-to's default period is its UTC month). */
  readonly now?: () => Date;
}

export async function runManageKeys(shim: { adminToken: string }, argv: string[], options: ManageKeysOptions = {}): Promise<ManageKeysRun> {
  const io = options.io ?? memoryIo();
  const root = options.root ?? tempDir();
  const code = await main(argv, {
    io, env: options.env ?? { GPU_SANDBOX_ADMIN_TOKEN: shim.adminToken }, pulumi: options.pulumi ?? new FakePulumi(), root, stdinIsTTY: options.stdinIsTTY ?? true, ...(options.now ? { now: options.now } : {}),
  });
  const err = io.stderr.join("\n");
  return { code, io, out: io.stdout.join("\n"), err, lastLine: err.split("\n").at(-1), root };
}

/** The words bash makes of a printed manage-keys command (after "npm run manage-keys --"), as npm would pass them. */
export const shellWords = (command: string): string[] =>
  execFileSync("bash", ["-c", `set -- ${command.replace(/^npm run manage-keys -- /, "")}; printf '%s\\0' "$@"`], { encoding: "utf8" }).split("\0").slice(0, -1);
