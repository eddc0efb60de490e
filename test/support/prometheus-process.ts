import { spawn, spawnSync } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { trackChild } from "./running-children.ts";
import { pollUntil } from "./tools.ts";

/**
 * A real Prometheus (Debian's package) for the tests that run the kit's Prometheus files: started
 * on `dir`'s prometheus.yml, waited for until ready, stopped after. One place for it, so the
 * scrape test and the fleet (file_sd) test start and stop it alike.
 */
const PROMETHEUS = "/usr/bin/prometheus";
const version = spawnSync(PROMETHEUS, ["--version"], { encoding: "utf8" });

/** Why the Prometheus tests skip (undefined when it is installed): `ctx.skip(NO_PROMETHEUS)`. */
export const NO_PROMETHEUS = version.error === undefined && version.status === 0
  ? undefined : "prometheus is not installed (apt-get install prometheus; .ci/run installs it)";

export interface RunningPrometheus {
  /** Its output so far (stdout and stderr), for a failing test's message. */
  log(): string;
  /** SIGTERM, and waits for it to exit; nothing when it has already. */
  stop(): Promise<void>;
}

/**
 * Starts Prometheus in `dir` (its prometheus.yml, data under it, its log in prometheus.log) on
 * 127.0.0.1:`port`, and waits until it is ready. A Prometheus that exited (its port taken, a bad
 * config) is told at once with its log, not waited for while another on the port answers.
 */
export async function startPrometheus(dir: string, port: number, deadlineMs: number): Promise<RunningPrometheus> {
  const logFile = join(dir, "prometheus.log");
  const fd = openSync(logFile, "w");
  let child;
  try {
    child = spawn(PROMETHEUS, ["--config.file=prometheus.yml", `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`],
      { cwd: dir, stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
  trackChild(child);
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const running: RunningPrometheus = {
    log: () => readFileSync(logFile, "utf8"),
    async stop() {
      if (exited()) return;
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await gone;
    },
  };
  const ready = await pollUntil(async () => exited() || (await fetch(`http://127.0.0.1:${port}/-/ready`).catch(() => undefined))?.status === 200, deadlineMs, 100);
  if (!ready || exited()) {
    await running.stop();
    throw new Error(`Prometheus did not get ready${exited() ? " (it exited)" : ""}:\n${running.log()}`);
  }
  return running;
}

/** Polls `read` until `done` holds of its answer or `deadlineMs` passes; returns the last answer. */
export async function waitForAnswer<T>(read: () => Promise<T>, done: (value: T) => boolean, deadlineMs: number): Promise<T> {
  let last: T | undefined;
  await pollUntil(async () => done(last = await read()), deadlineMs, 250);
  return last as T;
}
