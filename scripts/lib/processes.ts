import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process";
import { once } from "node:events";
import { closeSync, openSync, readFileSync } from "node:fs";
import { pollUntil } from "../../test/support/tools.ts";

/**
 * The benchmarks' server processes: each writes its output to a log file, and a server that
 * dies while starting is reported with the end of that log at once, not after a timeout that
 * only says "did not come up" (the bench's temporary directory, log included, is gone by then).
 */

/** A server process whose stdout and stderr go to `logPath`. */
export function spawnLogged(command: string, args: readonly string[], logPath: string, options: Omit<SpawnOptions, "stdio"> = {}): ChildProcess {
  const log = openSync(logPath, "w");
  try {
    return spawn(command, args, { ...options, stdio: ["ignore", log, log] });
  } finally {
    closeSync(log); // the child has its own copy
  }
}

/**
 * Waits until the freshly spawned `child` answers at `url` with any status below 500. If it
 * exits first (rejected at once, with the end of its log) or does not answer in `timeoutMs`, it
 * is stopped and waited for, and the promise rejects.
 */
export async function started(child: ChildProcess, url: string, logPath: string, timeoutMs = 20_000): Promise<ChildProcess> {
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const answers = async () => {
    try {
      // Bounded: something else on the port may accept and never answer.
      return (await fetch(url, { signal: AbortSignal.timeout(1_000) })).status < 500;
    } catch {
      return false;
    }
  };
  try {
    if (!(await pollUntil(async () => exited() || (await answers()), timeoutMs, 100))) throw new Error(`${url} did not come up in ${timeoutMs / 1000} s`);
    if (!exited()) return child;
    const how = child.exitCode !== null ? `exit code ${child.exitCode}` : `signal ${child.signalCode}`;
    throw new Error(`the server for ${url} stopped (${how}) before it answered; the end of its log:\n${logTail(logPath)}`);
  } catch (e) {
    await stopAll([child]);
    throw e;
  }
}

/**
 * Stops the servers and waits until they have exited (SIGKILL after `graceMs`): a server still
 * shutting down would write into the directory the caller removes next (the shim its SQLite
 * files, nginx its temp paths) and leave it behind.
 */
export async function stopAll(children: readonly ChildProcess[], graceMs = 5_000): Promise<void> {
  await Promise.all(children.map(async (child) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }));
}

function logTail(path: string, lines = 10): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}
