import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startPostgres } from "../test/support/postgres.ts";
import { freePort } from "../test/support/tools.ts";
import { type LoadResult, loadGenerator, loadGeneratorLine } from "./lib/load-generator.ts";
import { load, spawnBenchFake, spawnBenchShim, waitHttp, writeBenchConfig } from "./bench-shim.ts";

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
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);

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

export async function runReplicasBench(seconds = SECONDS): Promise<{ machine: { cpus: number; node: string }; seconds: number; loadGenerator: LoadResult["generator"]; rows: ReplicasRow[] }> {
  const dir = mkdtempSync(join(tmpdir(), "shim-bench-replicas-"));
  const children: ChildProcess[] = [];
  const pg = await startPostgres();
  try {
    const fakePort = await freePort();
    const fakeBase = `http://127.0.0.1:${fakePort}`;
    children.push(spawnBenchFake(fakePort));
    await waitHttp(`${fakeBase}/health`);
    const key = writeBenchConfig(dir);
    const start = async (databaseUrl: string, name: string) => {
      const port = await freePort();
      const shim = spawnBenchShim(dir, port, `${fakeBase}/v1`, databaseUrl, name);
      children.push(shim);
      await waitHttp(`http://127.0.0.1:${port}/health`);
      return { url: `http://127.0.0.1:${port}/v1/chat/completions`, stop: () => shim.kill("SIGTERM") };
    };
    const rows: ReplicasRow[] = [];
    const sqlite = await start(`sqlite:${join(dir, "shim.db")}`, "sqlite");
    rows.push(await drive("1 process, SQLite", [sqlite.url], key, seconds));
    sqlite.stop();
    const databaseUrl = await pg.newDatabase();
    const one = await start(databaseUrl, "pg-1");
    rows.push(await drive("1 process, Postgres", [one.url], key, seconds));
    const two = await start(databaseUrl, "pg-2");
    rows.push(await drive("2 processes, Postgres", [one.url, two.url], key, seconds));
    return { machine: { cpus: cpus().length, node: process.version }, seconds, loadGenerator, rows };
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await pg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function replicasTable(r: { rows: ReplicasRow[] }): string {
  const lines = ["| shim setup (16 connections) | req/s | errors | machine busy | steal | machine CPU per request |", "| --- | --- | --- | --- | --- | --- |"];
  for (const row of r.rows) lines.push(`| ${row.setup} | ${row.rps} | ${row.errors} | ${row.machineBusyPct} % | ${row.stealPct} % | ${row.machineCpuUsPerRequest} µs |`);
  return lines.join("\n");
}

async function main(): Promise<void> {
  try {
    console.log(`running: SQLite, then Postgres with one and two shim processes, ${SECONDS} s each…`);
    console.log(loadGeneratorLine());
    const result = await runReplicasBench();
    console.log(replicasTable(result));
    mkdirSync(join(ROOT, ".bench"), { recursive: true });
    writeFileSync(join(ROOT, ".bench", "replicas.json"), `${JSON.stringify(result, null, 2)}\n`);
    console.log("\nwritten to .bench/replicas.json");
    if (result.rows.some((r) => r.errors > 0)) {
      console.error("some requests failed during the benchmark");
      process.exitCode = 1;
    }
  } catch (e) {
    console.error(`bench:replicas: ${(e as Error).stack ?? e}`);
    process.exitCode = 1;
  }
}

if (import.meta.main) await main();
