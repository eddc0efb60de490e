import { type ChildProcess, spawn, type SpawnOptions } from "node:child_process";
import { once } from "node:events";
import { closeSync, openSync, readFileSync } from "node:fs";

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
 * Resolves once `url` answers with any status below 500. Rejects after `timeoutMs`, or as soon
 * as `server` (the process that should answer) exits, with the end of its log.
 */
export async function waitHttp(url: string, server?: { child: ChildProcess; logPath?: string }, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  const exited = () => server !== undefined && (server.child.exitCode !== null || server.child.signalCode !== null);
  while (Date.now() < end && !exited()) {
    try {
      // Bounded: something else on the port may accept and never answer.
      if ((await fetch(url, { signal: AbortSignal.timeout(1_000) })).status < 500) return;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!exited()) throw new Error(`${url} did not come up in ${timeoutMs / 1000} s`);
  const { child, logPath } = server!;
  const how = child.exitCode !== null ? `exit code ${child.exitCode}` : `signal ${child.signalCode}`;
  throw new Error(`the server for ${url} stopped (${how}) before it answered${logPath ? `; the end of its log:\n${logTail(logPath)}` : ""}`);
}

/** Waits until the freshly spawned `child` answers at `url` (see waitHttp); if it does not, stops it and rejects. */
export async function started(child: ChildProcess, url: string, logPath: string, timeoutMs = 20_000): Promise<ChildProcess> {
  try {
    await waitHttp(url, { child, logPath }, timeoutMs);
    return child;
  } catch (e) {
    child.kill("SIGTERM");
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
