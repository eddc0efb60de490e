import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

/**
 * Closed-loop load for the benchmarks: `connections` connections, each sending the next request
 * as soon as the last answer arrived, for `seconds`.
 *
 * wrk (C, Debian's `wrk`) when it is installed, autocannon (Node, a dev dependency) otherwise. The
 * generator shares the machine with what it measures, so its own CPU is taken from the shim's
 * and the upstream's: measured on the 2-vCPU dev VM, wrk costs ~32 µs of CPU per request and
 * autocannon ~60, and the shim's saturation figure moved up 5–20 % with wrk.
 */
export interface LoadResult {
  generator: "wrk" | "autocannon";
  /** Answered requests per second over the run. */
  rps: number;
  /** Answered requests. */
  total: number;
  /** Answers that were not 2xx/3xx, plus connection errors and timeouts. */
  errors: number;
}

export interface LoadOptions {
  url: string;
  method: "POST";
  headers: Record<string, string>;
  body: string;
  connections: number;
  seconds: number;
}

/** Which generator `closedLoop` uses on this machine. */
export const loadGenerator: LoadResult["generator"] = spawnSync("wrk", ["--version"]).error ? "autocannon" : "wrk";

/** One line for a benchmark's start: which generator, and how to get the lighter one. */
export function loadGeneratorLine(): string {
  return loadGenerator === "wrk"
    ? "closed-loop load: wrk"
    : "closed-loop load: autocannon (wrk is not installed; `apt-get install wrk` gives a generator that takes about half the CPU per request from the machine it measures)";
}

export function closedLoop(o: LoadOptions): Promise<LoadResult> {
  return loadGenerator === "wrk" ? wrk(o) : autocannon(o);
}

const run = promisify(execFile);

async function wrk(o: LoadOptions): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), "bench-wrk-"));
  try {
    // wrk takes a POST body only from a Lua script.
    const lua = [
      `wrk.method = ${luaString(o.method)}`,
      `wrk.body = ${luaString(o.body)}`,
      ...Object.entries(o.headers).map(([k, v]) => `wrk.headers[${luaString(k)}] = ${luaString(v)}`),
    ].join("\n");
    const script = join(dir, "request.lua");
    writeFileSync(script, `${lua}\n`);
    // One thread: 16 connections do not need more, and a second thread would take CPU from the servers.
    const { stdout } = await run("wrk", ["-t1", `-c${o.connections}`, `-d${o.seconds}s`, "--timeout", "10s", "-s", script, o.url]);
    return parseWrk(stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A Lua string literal of any text: every byte outside printable ASCII (and `"`, `\\`) as a decimal `\ddd` escape, which LuaJIT reads as that byte. */
export function luaString(text: string): string {
  let out = '"';
  for (const byte of Buffer.from(text, "utf8")) {
    out += byte >= 0x20 && byte < 0x7f && byte !== 0x22 && byte !== 0x5c ? String.fromCharCode(byte) : `\\${String(byte).padStart(3, "0")}`;
  }
  return `${out}"`;
}

/** wrk's summary: "N requests in 10.00s", "Requests/sec: R", and error lines only when there were any. */
export function parseWrk(out: string): LoadResult {
  const total = /(\d+) requests in ([\d.]+)(ms|s|m)\b/.exec(out);
  if (!total) throw new Error(`wrk printed no summary:\n${out}`);
  const seconds = Number(total[2]) * { ms: 0.001, s: 1, m: 60 }[total[3] as "ms" | "s" | "m"];
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = socket ? socket.slice(1).reduce((s, n) => s + Number(n), 0) : 0;
  return { generator: "wrk", rps: Math.round(Number(total[1]) / seconds), total: Number(total[1]), errors: non2xx + socketErrors };
}

interface AutocannonResult { requests: { average: number; total: number }; non2xx: number; errors: number }

async function autocannon(o: LoadOptions): Promise<LoadResult> {
  const run = createRequire(import.meta.url)("autocannon") as (o: Record<string, unknown>) => Promise<AutocannonResult>;
  const r = await run({ url: o.url, method: o.method, headers: o.headers, body: o.body, connections: o.connections, duration: o.seconds });
  return { generator: "autocannon", rps: Math.round(r.requests.average), total: r.requests.total, errors: r.non2xx + r.errors };
}
