import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { startPostgres } from "../test/support/postgres.ts";
import { freePort } from "../test/support/tools.ts";
import { benchMain } from "./lib/bench-main.ts";
import { stopAll } from "./lib/processes.ts";
import { exitOnFailure } from "./lib/cli.ts";
import { type LoadResult, loadGenerator } from "./lib/load-generator.ts";
import { load, startBenchFake, startBenchShim, writeBenchConfig } from "./bench-shim.ts";

/**
 * `npm run bench:replicas`: saturation of one shim process on SQLite against one and two shim
 * processes on one PostgreSQL database (a throwaway server, as in the tests), all in front of the
 * same fake vLLM, 16 connections in total (two replicas: 8 each, run together, requests/s summed).
 * Besides requests/s it prints the whole machine's busy CPU time per request (/proc/stat: every
 * process, load generator and database included), which says whether a second process can help
 * on this machine at all: if the machine is already busy, it cannot.
 *
 * Prints a table and writes .bench/replicas.json. BENCH_SECONDS (10) shortens or lengthens runs.
 */

export interface ReplicasRow { setup: string; rps: number; errors: number; machineBusyPct: number; stealPct: number; machineCpuUsPerRequest: number }

/**
 * CPU time of the whole machine so far, in µs (jiffies of 10 ms): busy (user, nice, system, irq,
 * softirq), steal (taken by the hypervisor: on a shared VM it is why runs differ), and total.
 */
function machineCpu(): { busy: number; steal: number; total: number } {
  const [, ...fields] = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.map(Number) as [number, number, number, number, number, number, number, number];
  const busy = user + nice + system + irq + softirq;
  return { busy: busy * 10_000, steal: steal * 10_000, total: (busy + idle + iowait + steal) * 10_000 };
}

/** Drives `urls` together, 16 connections split between them, for `seconds`. */
async function drive(setup: string, urls: string[], auth: string, seconds: number): Promise<ReplicasRow> {
  const run = (url: string, duration: number) => load(url, { authorization: `Bearer ${auth}` }, 16 / urls.length, duration);
  await Promise.all(urls.map((u) => run(u, 2))); // warm-up: JIT, pools, prepared statements
  const before = machineCpu();
  const results = await Promise.all(urls.map((u) => run(u, seconds)));
  const after = machineCpu();
  const total = results.reduce((s, r) => s + r.total, 0);
  return {
    setup,
    rps: results.reduce((s, r) => s + r.rps, 0),
    errors: results.reduce((s, r) => s + r.errors, 0),
    machineBusyPct: Math.round((100 * (after.busy - before.busy)) / Math.max(1, after.total - before.total)),
    stealPct: Math.round((100 * (after.steal - before.steal)) / Math.max(1, after.total - before.total)),
    machineCpuUsPerRequest: Math.round((after.busy - before.busy) / Math.max(1, total)),
  };
}

export async function runReplicasBench(seconds = 10): Promise<{ machine: { cpus: number; node: string }; seconds: number; loadGenerator: LoadResult["generator"]; rows: ReplicasRow[] }> {
  const dir = mkdtempSync(join(tmpdir(), "shim-bench-replicas-"));
  const children: ChildProcess[] = [];
  const pg = await startPostgres();
  try {
    const fakePort = await freePort();
    const fakeBase = `http://127.0.0.1:${fakePort}`;
    children.push(await startBenchFake(dir, fakePort));
    const key = writeBenchConfig(dir);
    const start = async (databaseUrl: string, name: string) => {
      const port = await freePort();
      const shim = await startBenchShim(dir, port, `${fakeBase}/v1`, databaseUrl, name);
      children.push(shim);
      return { url: `http://127.0.0.1:${port}/v1/chat/completions`, stop: () => stopAll([shim]) };
    };
    const rows: ReplicasRow[] = [];
    const sqlite = await start(`sqlite:${join(dir, "shim.db")}`, "sqlite");
    rows.push(await drive("1 process, SQLite", [sqlite.url], key, seconds));
    await sqlite.stop(); // exited before the Postgres runs, so its shutdown is not in their CPU figures
    const databaseUrl = await pg.newDatabase();
    const one = await start(databaseUrl, "pg-1");
    rows.push(await drive("1 process, Postgres", [one.url], key, seconds));
    const two = await start(databaseUrl, "pg-2");
    rows.push(await drive("2 processes, Postgres", [one.url, two.url], key, seconds));
    return { machine: { cpus: cpus().length, node: process.version }, seconds, loadGenerator, rows };
  } finally {
    await stopAll(children);
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function replicasTable(r: { rows: ReplicasRow[] }): string {
  const lines = ["| shim setup (16 connections) | req/s | errors | machine busy | steal | machine CPU per request |", "| --- | --- | --- | --- | --- | --- |"];
  for (const row of r.rows) lines.push(`| ${row.setup} | ${row.rps} | ${row.errors} | ${row.machineBusyPct} % | ${row.stealPct} % | ${row.machineCpuUsPerRequest} µs |`);
  return lines.join("\n");
}

const USAGE = `Usage: npm run bench:replicas

Saturation (16 connections) of one api-shim process on SQLite against one and two processes on
one PostgreSQL database, all in front of the same fake vLLM on loopback, with the whole
machine's CPU time per request: whether a second shim process can help on this machine.

Needs PostgreSQL's server programs (apt-get install postgresql); the database is a throwaway
one the script starts and removes. Prints a table and writes .bench/replicas.json.

  BENCH_SECONDS   length of each measured run (10; about a minute in all)

See docs/performance.md for the method and recorded figures.`;

export const main = benchMain({
  command: "bench:replicas",
  usage: USAGE,
  intro: (seconds) => `running: SQLite, then Postgres with one and two shim processes, ${seconds} s each…`,
  run: runReplicasBench,
  table: replicasTable,
  file: "replicas",
  failed: (r) => r.rows.some((row) => row.errors > 0),
});

if (import.meta.main) exitOnFailure(await main(process.argv.slice(2)));
