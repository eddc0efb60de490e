import type { ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { cpus, totalmem, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify } from "yaml";
import { generateKey } from "../api-shim/src/auth/keys.ts";
import { freePort } from "../test/support/tools.ts";
import { benchMain } from "./lib/bench-main.ts";
import { exitOnFailure } from "./lib/cli.ts";
import { closedLoop, type LoadResult, loadGenerator } from "./lib/load-generator.ts";
import { spawnLogged, started, stopAll } from "./lib/processes.ts";
import { nginxBinary, startBareProxy, startNginxProxy } from "./lib/reference-proxies.ts";

/**
 * `npm run bench`: the shim against going straight to the same upstream (the fake vLLM, its own
 * process, on loopback). The shim runs as in production: auth, rate limit, credit hold and
 * settlement, a usage row and a JSON log line on every request.
 *
 *   saturation   requests/s at 16 connections (wrk, or autocannon without it; 10 s)
 *   latency      mean/p50/p99 at a fixed 300 requests/s (open loop, µs clock, 10 s)
 *   chunks       per-chunk delay with 200 concurrent streams (200 tokens at 50/s each, starts
 *                spread over 1 s, so all 200 are live for ~3 s): the fake stamps each token with
 *                the monotonic clock (shared by processes on one machine), the client subtracts
 *   memory       peak RSS of the shim process (VmHWM)
 *   CPU          each server's CPU time (user + system, /proc/<pid>/stat) per request at saturation,
 *                and the shim's per relayed event: steadier than requests/s on a shared VM, and
 *                what shows where the time goes
 *
 * Two reference columns pass requests (and stream chunks, as they arrive) through with nothing
 * else (scripts/lib/reference-proxies.ts): "bare proxy", Fastify + the same undici pool, what any
 * Node proxy of this design costs on the machine, so the shim's own share (auth, limits, credits,
 * usage rows, SSE parsing and metering, logs, metrics) can be read off; and "nginx proxy", a hop
 * in C, the floor for any proxy on the machine (left out when nginx is not installed).
 *
 * Prints a table and writes .bench/shim.json. BENCH_SECONDS (10) shortens or lengthens runs (see USAGE).
 */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const USAGE = `Usage: npm run bench

Benchmarks the api-shim on this machine, all on loopback: the fake vLLM answered directly, through
the shim (auth, rate limits, credit hold and settlement, a usage row and a log line on every
request) and through two reference proxies that do nothing else (nginx, and Fastify + undici):

  saturation   requests/s at 16 connections
  latency      mean, p50 and p99 at a fixed 300 requests/s
  chunks       per-chunk delay with 200 concurrent streams
  memory       the shim's peak RSS, and CPU time per request and per streamed chunk

Prints a table with the targets met or missed and writes .bench/shim.json. Run it on an
otherwise idle machine: every figure depends on the CPU left over.

  BENCH_SECONDS   length of each measured run (10; about 2½ minutes in all)

Optional: apt-get install wrk (a load generator in C, which takes half the CPU of the bundled
autocannon from the machine it measures) and nginx (the nginx column).
See docs/performance.md for the method and recorded figures.`;
const MODEL = "qwen2.5-7b";
const CHAT = JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "Say hello in a few words." }], max_tokens: 16 });


export interface LatencyStats { mean: number; p50: number; p99: number; n: number; errors: number }
export interface Side { saturationRps: number; saturationErrors: number; saturationCpuUsPerRequest: number; latencyMs: LatencyStats; chunkMs: LatencyStats; chunkCpuUsPerEvent: number }
export interface BenchResult {
  machine: { cpus: number; cpu: string; memoryGb: number; node: string; platform: string };
  seconds: number;
  /** The closed-loop load generator of the saturation runs. */
  loadGenerator: LoadResult["generator"];
  direct: Side;
  /** The nginx reference proxy, with what it adds over direct; null when nginx is not installed or did not start. */
  nginxProxy: (Side & { added: { meanLatencyMs: number; chunkP99Ms: number } }) | null;
  /** Why there is no nginx column, when there is none. */
  nginxProblem: string | null;
  bareProxy: Side;
  shim: Side;
  added: { meanLatencyMs: number; p50LatencyMs: number; p99LatencyMs: number; chunkP50Ms: number; chunkP99Ms: number };
  shimPeakRssMb: number;
  shimRssMb: { idle: number; afterSaturation: number; afterStreams: number };
  /** What the shim's memory is made of at each point (V8 heap, memory outside it, anonymous vs file-backed pages). */
  shimMemory: { idle: MemoryBreakdown; afterSaturation: MemoryBreakdown; afterStreams: MemoryBreakdown };
  targets: Record<string, { target: string; value: number; met: boolean }>;
}

export function stats(samples: number[], errors = 0): LatencyStats {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
  const mean = s.reduce((a, b) => a + b, 0) / (s.length || 1);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return { mean: r3(mean), p50: r3(at(0.5)), p99: r3(at(0.99)), n: s.length, errors };
}

export interface MemoryBreakdown { rssMb: number; anonymousMb: number; fileMb: number; heapTotalMb: number; heapUsedMb: number; externalMb: number }

/** RSS split into anonymous and file-backed pages (smaps_rollup), plus the V8 heap and external memory from /metrics. */
async function memoryBreakdown(pid: number, base: string): Promise<MemoryBreakdown> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const metric = (name: string) => Math.round(Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN) / 2 ** 20);
  const smaps = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(smaps)?.[1] ?? 0);
  const anonymousMb = Math.round(kb("Anonymous") / 1024);
  const rss = Math.round(kb("Rss") / 1024);
  return { rssMb: rss, anonymousMb, fileMb: rss - anonymousMb, heapTotalMb: metric("nodejs_heap_size_total_bytes"), heapUsedMb: metric("nodejs_heap_size_used_bytes"), externalMb: metric("nodejs_external_memory_bytes") };
}

/** A process's peak resident set (VmHWM), in MB. */
function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024);
}

/** A process's CPU time so far (user + system), in µs: /proc/<pid>/stat counts clock ticks (USER_HZ, 100 on Linux). */
function cpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Runs `work` and returns its result with the CPU time `pid` spent meanwhile, per item of `count(result)`. */
async function cpuPer<T>(pid: number, work: () => Promise<T>, count: (r: T) => number): Promise<[T, number]> {
  const before = cpuUs(pid);
  const r = await work();
  return [r, Math.round((cpuUs(pid) - before) / Math.max(1, count(r)))];
}

/** Open-loop load at a fixed rate; latency from send to the last byte, in ms with µs precision. */
async function fixedRate(url: string, headers: Record<string, string>, rps: number, seconds: number): Promise<LatencyStats> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const samples: number[] = [];
  let errors = 0;
  const total = rps * seconds;
  const t0 = performance.now() + 50;
  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rps;
    // No busy-waiting: the load generator shares the machine's two cores with what it measures.
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(new Promise<void>((resolve) => {
      const start = performance.now();
      const req = request(url, { method: "POST", agent, headers: { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(CHAT) } }, (res) => {
        res.resume();
        res.on("end", () => {
          if (res.statusCode === 200) samples.push(performance.now() - start);
          else errors++;
          resolve();
        });
      });
      req.on("error", () => (errors++, resolve()));
      req.end(CHAT);
    }));
  }
  await Promise.all(pending);
  agent.destroy();
  return stats(samples, errors);
}

/** `streams` concurrent streams; per chunk, receive time minus the fake's send stamp. */
async function chunkDelays(url: string, headers: Record<string, string>, streams: number, tokens: number, spreadMs: number): Promise<LatencyStats> {
  const agent = new Agent({ keepAlive: true, maxSockets: streams });
  const body = JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "stream" }], max_tokens: tokens, stream: true });
  const samples: number[] = [];
  let errors = 0;
  // Starts are spread evenly over `spreadMs` (clients do not all arrive in the same millisecond);
  // with streams longer than that, all of them are live together for most of the run.
  await Promise.all(Array.from({ length: streams }, (_, i) => new Promise<void>((resolve) => setTimeout(resolve, (i * spreadMs) / streams)).then(() => new Promise<void>((resolve) => {
    const req = request(url, { method: "POST", agent, headers: { ...headers, "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      let buf = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        const now = process.hrtime.bigint();
        buf += chunk;
        let end: number;
        while ((end = buf.indexOf("\n\n")) !== -1) {
          const event = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const m = /t\d+@(\d+)/.exec(event);
          if (m) samples.push(Number(now - BigInt(m[1]!)) / 1e6);
        }
      });
      res.on("end", () => {
        if (res.statusCode !== 200) errors++;
        resolve();
      });
    });
    req.on("error", () => (errors++, resolve()));
    req.end(body);
  }))));
  agent.destroy();
  return stats(samples, errors);
}

/** Starts the fake vLLM as its own process (16 tokens per chat answer, output in `<dir>/fake.log`) and waits until it answers. */
export function startBenchFake(dir: string, port: number): Promise<ChildProcess> {
  const logPath = join(dir, "fake.log");
  const child = spawnLogged(process.execPath, [join(ROOT, "scripts", "serve-fake-vllm.ts")], logPath, { env: { PATH: process.env.PATH, FAKE_VLLM_PORT: String(port), FAKE_VLLM_TOKENS: "16" } });
  return started(child, `http://127.0.0.1:${port}/health`, logPath);
}

/**
 * The shim's configuration for benchmarks: token prices (every request holds, settles and writes
 * its ledger row), a tier whose limits run on every request but never bind, one bootstrap key.
 * Returns that key's plaintext.
 */
export function writeBenchConfig(dir: string): string {
  const key = generateKey();
  writeFileSync(join(dir, "shim.yaml"), stringify({
    pricing: { models: { [MODEL]: { promptPer1k: 0.01, completionPer1k: 0.02 } } },
    tiers: { bench: { rpm: 100_000_000, tpm: 1_000_000_000_000 } },
    models: [{ name: MODEL, maxModelLen: 8192 }],
    bootstrapKeys: [{ id: key.id, name: "bench", hash: key.hash, credits: 1_000_000_000, tier: "bench" }],
  }));
  return key.key;
}

/** Starts the shim as in production (node flags and malloc arenas as the Dockerfile), JSON logs to `<dir>/<name>.log`, and waits until it answers. */
export function startBenchShim(dir: string, port: number, upstreamUrl: string, databaseUrl: string, name = "shim"): Promise<ChildProcess> {
  const logPath = join(dir, `${name}.log`);
  const child = spawnLogged(process.execPath, [join(ROOT, "api-shim", "src", "server.ts")], logPath, {
    env: { PATH: process.env.PATH, SHIM_PORT: String(port), SHIM_HOST: "127.0.0.1", SHIM_UPSTREAM_URL: upstreamUrl, SHIM_DATABASE_URL: databaseUrl, SHIM_CONFIG: join(dir, "shim.yaml"), SHIM_ADMIN_TOKEN: "bench-admin-token-not-secret", LOG_LEVEL: "info", MALLOC_ARENA_MAX: "1", NODE_OPTIONS: "--max-semi-space-size=8" },
  });
  return started(child, `http://127.0.0.1:${port}/health`, logPath);
}

/** Closed-loop load: the benchmark's chat request on `connections` connections for `seconds`. */
export function load(url: string, headers: Record<string, string>, connections: number, seconds: number): Promise<LoadResult> {
  return closedLoop({ url, method: "POST", headers: { ...headers, "content-type": "application/json" }, body: CHAT, connections, seconds });
}

/** Requests/s at 16 connections, and the CPU time the server process `pid` spent per request. */
interface Saturation { rps: number; errors: number; cpuUsPerRequest: number }

/** One of the servers the benchmark measures, and how to reach it. */
interface Target { name: "direct" | "nginx" | "bare" | "shim"; url: string; headers: Record<string, string>; pid: number }

async function saturation(url: string, headers: Record<string, string>, seconds: number, pid: number): Promise<Saturation> {
  const [r, cpuUsPerRequest] = await cpuPer(pid, () => load(url, headers, 16, seconds), (r) => r.total);
  return { rps: r.rps, errors: r.errors, cpuUsPerRequest };
}

/** One target's figures. For "direct", the CPU per event is the fake's own for generating it. */
function side(sat: Saturation, latencyMs: LatencyStats, [chunkMs, chunkCpuUsPerEvent]: [LatencyStats, number]): Side {
  return { saturationRps: sat.rps, saturationErrors: sat.errors, saturationCpuUsPerRequest: sat.cpuUsPerRequest, latencyMs, chunkMs, chunkCpuUsPerEvent };
}

const setFake = (base: string, behaviour: Record<string, unknown>) =>
  fetch(`${base}/_fake/behaviour`, { method: "POST", body: JSON.stringify(behaviour) }).then((r) => r.text());

export async function runBench(seconds = 10): Promise<BenchResult> {
  const dir = mkdtempSync(join(tmpdir(), "shim-bench-"));
  const children: ChildProcess[] = [];
  try {
    const fakePort = await freePort();
    const shimPort = await freePort();
    const fakeBase = `http://127.0.0.1:${fakePort}`;
    const shimBase = `http://127.0.0.1:${shimPort}`;
    const fake = await startBenchFake(dir, fakePort);
    children.push(fake);

    const barePort = await freePort();
    const bareProxy = await startBareProxy(join(dir, "bare-proxy.log"), barePort, `${fakeBase}/v1`);
    children.push(bareProxy);
    const bare = `http://127.0.0.1:${barePort}/v1/chat/completions`;
    // The nginx column is optional: without nginx, or when it does not start, the rest still runs.
    const nginxPort = await freePort();
    const binary = nginxBinary();
    let nginx: ChildProcess | null = null;
    let nginxProblem = binary ? null : "nginx is not installed: apt-get install nginx for the nginx proxy column (a hop in C, the floor for any proxy here)";
    if (binary) {
      try {
        nginx = await startNginxProxy(binary, join(dir, "nginx"), nginxPort, `127.0.0.1:${fakePort}`);
        children.push(nginx);
      } catch (e) {
        nginxProblem = `the nginx proxy column is left out: ${(e as Error).message}`;
      }
    }

    const key = writeBenchConfig(dir);
    const shim = await startBenchShim(dir, shimPort, `${fakeBase}/v1`, `sqlite:${join(dir, "shim.db")}`);
    children.push(shim);
    const memIdle = await memoryBreakdown(shim.pid!, shimBase);
    // The targets, in the order each phase measures them; nginx only when it started. "direct"
    // CPU is the fake upstream's own: what plain Node HTTP costs per request here.
    const targets: Target[] = [
      { name: "direct", url: `${fakeBase}/v1/chat/completions`, headers: {}, pid: fake.pid! },
      ...(nginx ? [{ name: "nginx" as const, url: `http://127.0.0.1:${nginxPort}/v1/chat/completions`, headers: {}, pid: nginx.pid! }] : []),
      { name: "bare", url: bare, headers: {}, pid: bareProxy.pid! },
      { name: "shim", url: `${shimBase}/v1/chat/completions`, headers: { authorization: `Bearer ${key}` }, pid: shim.pid! },
    ];
    const each = async <T>(measure: (t: Target) => Promise<T>): Promise<Map<Target["name"], T>> => {
      const results = new Map<Target["name"], T>();
      for (const t of targets) results.set(t.name, await measure(t));
      return results;
    };

    await each((t) => saturation(t.url, t.headers, 2, t.pid)); // warm-up: JIT, connection pools, SQLite pages
    const sat = await each((t) => saturation(t.url, t.headers, seconds, t.pid));
    const memAfterSaturation = await memoryBreakdown(shim.pid!, shimBase);
    const lat = await each((t) => fixedRate(t.url, t.headers, 300, seconds));
    await setFake(fakeBase, { tokenDelayMs: 20, defaultTokens: 200, stampTokens: true });
    const chunk = await each((t) => cpuPer(t.pid, () => chunkDelays(t.url, t.headers, 200, 200, 1000), (s) => s.n));
    const memAfterStreams = await memoryBreakdown(shim.pid!, shimBase);
    const result = (name: Target["name"]) => side(sat.get(name)!, lat.get(name)!, chunk.get(name)!);
    const [latDirect, latShim, chunkDirect, chunkShim] = [lat.get("direct")!, lat.get("shim")!, chunk.get("direct")!, chunk.get("shim")!];

    const peakRss = peakRssMb(shim.pid!);
    const r3 = (x: number) => Math.round(x * 1000) / 1000;
    const added = {
      meanLatencyMs: r3(latShim.mean - latDirect.mean),
      p50LatencyMs: r3(latShim.p50 - latDirect.p50),
      p99LatencyMs: r3(latShim.p99 - latDirect.p99),
      chunkP50Ms: r3(chunkShim[0].p50 - chunkDirect[0].p50),
      chunkP99Ms: r3(chunkShim[0].p99 - chunkDirect[0].p99),
    };
    return {
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? "unknown", memoryGb: Math.round(totalmem() / 2 ** 30), node: process.version, platform: `${process.platform}-${process.arch}` },
      seconds,
      loadGenerator,
      direct: result("direct"),
      nginxProxy: nginx && {
        ...result("nginx"),
        added: { meanLatencyMs: r3(lat.get("nginx")!.mean - latDirect.mean), chunkP99Ms: r3(chunk.get("nginx")![0].p99 - chunkDirect[0].p99) },
      },
      nginxProblem,
      bareProxy: result("bare"),
      shim: result("shim"),
      added,
      shimPeakRssMb: peakRss,
      shimRssMb: { idle: memIdle.rssMb, afterSaturation: memAfterSaturation.rssMb, afterStreams: memAfterStreams.rssMb },
      shimMemory: { idle: memIdle, afterSaturation: memAfterSaturation, afterStreams: memAfterStreams },
      targets: {
        addedMeanLatency: { target: "≤ 0.3 ms at 300 rps", value: added.meanLatencyMs, met: added.meanLatencyMs <= 0.3 },
        saturation: { target: "≥ 4000 rps at 16 connections", value: sat.get("shim")!.rps, met: sat.get("shim")!.rps >= 4000 },
        chunkOverheadP99: { target: "≤ 1 ms p99 with 200 streams", value: added.chunkP99Ms, met: added.chunkP99Ms <= 1 },
        peakRss: { target: "≤ 200 MB", value: peakRss, met: peakRss <= 200 },
      },
    };
  } finally {
    await stopAll(children);
    rmSync(dir, { recursive: true, force: true });
  }
}

export function table(r: BenchResult): string {
  const row = (cells: (string | number)[]) => cells.map((c, i) => String(c).padEnd(i === 0 ? 34 : 13)).join("");
  const n = r.nginxProxy;
  // One row: direct, the nginx proxy (– without nginx), the bare proxy, the shim, what the shim adds.
  const line = (label: string, value: (side: Side) => string | number, added: string | number = "", withDirect = true) =>
    row([label, withDirect ? value(r.direct) : "", n ? value(n) : "–", value(r.bareProxy), value(r.shim), added]);
  return [
    `machine: ${r.machine.cpus} × ${r.machine.cpu}, ${r.machine.memoryGb} GB, node ${r.machine.node} (${r.seconds} s runs, saturation load from ${r.loadGenerator})`,
    row(["", "direct", "nginx proxy", "bare proxy", "via shim", "shim added"]),
    line("saturation rps (16 conns)", (s) => s.saturationRps),
    line("server CPU µs per request (sat.)", (s) => s.saturationCpuUsPerRequest),
    line("latency mean ms @300 rps", (s) => s.latencyMs.mean, r.added.meanLatencyMs),
    line("latency p50 ms @300 rps", (s) => s.latencyMs.p50, r.added.p50LatencyMs),
    line("latency p99 ms @300 rps", (s) => s.latencyMs.p99, r.added.p99LatencyMs),
    line("chunk delay p50 ms (200 streams)", (s) => s.chunkMs.p50, r.added.chunkP50Ms),
    line("chunk delay p99 ms (200 streams)", (s) => s.chunkMs.p99, r.added.chunkP99Ms),
    line("server CPU µs per relayed event", (s) => s.chunkCpuUsPerEvent, "", false),
    row(["shim peak RSS MB", "", "", "", r.shimPeakRssMb, ""]),
    row(["shim RSS MB idle / sat. / streams", "", "", "", `${r.shimRssMb.idle} / ${r.shimRssMb.afterSaturation} / ${r.shimRssMb.afterStreams}`, ""]),
    ...(["idle", "afterSaturation", "afterStreams"] as const).map((k) => {
      const m = r.shimMemory[k];
      return `  ${k}: rss ${m.rssMb} MB = anonymous ${m.anonymousMb} + file-backed ${m.fileMb}; V8 heap ${m.heapTotalMb} (used ${m.heapUsedMb}), external ${m.externalMb}`;
    }),
    "",
    ...Object.entries(r.targets).map(([k, t]) => `${t.met ? "MET " : "MISS"} ${k}: ${t.value} (target ${t.target})`),
    n ? `nginx alone, a proxy hop in C doing nothing else, adds ${n.added.meanLatencyMs} ms mean at 300 rps and ${n.added.chunkP99Ms} ms chunk p99 on this machine`
      : r.nginxProblem ?? "",
  ].join("\n");
}

export const main = benchMain({
  command: "bench",
  usage: USAGE,
  intro: (seconds) => {
    const nginx = nginxBinary() !== null;
    return `running: ${nginx ? "direct, nginx proxy, bare proxy and shim" : "direct, bare proxy and shim"}; saturation, fixed rate, then 200 streams (${seconds} s each, ~${(nginx ? 4 : 3) * (2 * seconds + 10) + 15} s in all)…`;
  },
  run: runBench,
  table,
  file: "shim",
  failed: (r) => [r.direct, r.bareProxy, r.shim, ...(r.nginxProxy ? [r.nginxProxy] : [])].some((side) => side.saturationErrors + side.latencyMs.errors + side.chunkMs.errors > 0),
});

if (import.meta.main) exitOnFailure(await main(process.argv.slice(2)));
