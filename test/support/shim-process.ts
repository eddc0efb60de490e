import { type ChildProcess, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { afterAll, beforeAll, expect } from "vitest";
import { stringify } from "yaml";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { FakeVllm } from "./fake-vllm.ts";
import { assertNoSecrets } from "./shim-harness.ts";
import { tempDir } from "./tools.ts";
import { trackChild } from "./running-children.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * The shim as a real child process (`node api-shim/src/server.ts`), for what only a process can
 * show: SIGKILL, SIGTERM draining, start-up recovery. Its stdout (JSON logs) is kept line by line.
 */
export interface ShimProcess {
  child: ChildProcess;
  url: string;
  lines: string[];
  /** What the process wrote to stderr so far (start-up errors; scanned for secrets too). */
  stderr(): string;
  waitForLine(predicate: (entry: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once the process exited and its stdout and stderr are read to their end. */
  closed: Promise<void>;
}

/**
 * How many holds of a dead process the start released (its warning, logged before it listens, so
 * in `lines` once start() has returned); 0 when it said nothing, as a start that released none does.
 */
export function releasedAtStart(p: Pick<ShimProcess, "lines">): number {
  const line = p.lines.find((l) => l.includes('"msg":"released reservations left by a previous process'));
  return line === undefined ? 0 : (JSON.parse(line) as { released: number }).released;
}

/** The log line a stop's drain begins with ("draining: waiting up to …", its fields `reason` and `inflight`). */
export const isDraining = (entry: Record<string, unknown>): boolean => typeof entry.msg === "string" && /^draining\b/.test(entry.msg);

/** A shim process that never listened: what it said and how it ended, for tests of failed starts. */
export class ShimStartError extends Error {
  readonly lines: string[];
  readonly exit: { code: number | null; signal: NodeJS.Signals | null };
  private readonly stderrText: string;

  constructor(message: string, lines: string[], stderr: string, exit: ShimStartError["exit"]) {
    super(message);
    this.lines = lines;
    this.stderrText = stderr;
    this.exit = exit;
  }

  stderr(): string {
    return this.stderrText;
  }
}

/**
 * `prefix`: a command the shim runs under (strace, to make its disk fail); `child` is then that
 * command's process. `ready`: the log line it resolves at (by default the one saying it listens;
 * an earlier one, to signal it while it starts, leaves `url` empty). `appDir`: another copy of
 * api-shim/ to run `src/server.ts` from, in that directory (a bundle's, installed as its image is).
 */
export async function spawnShim(env: Record<string, string>, prefix: readonly string[] = [], ready: (entry: Record<string, unknown>) => boolean = (e) => e.msg === "api-shim listening", appDir?: string): Promise<ShimProcess> {
  const [cmd, ...args] = [...prefix, process.execPath, join(appDir ?? join(ROOT, "api-shim"), "src", "server.ts")];
  const child = spawn(cmd!, args, {
    cwd: appDir ?? ROOT,
    env: { PATH: process.env.PATH ?? "", SHIM_HOST: "127.0.0.1", SHIM_PORT: "0", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  trackChild(child); // killed after the test file if it is still running then (running-children.ts)
  const lines: string[] = [];
  const events = new EventEmitter();
  let partial = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf("\n")) !== -1) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      lines.push(line);
      events.emit("line", line);
    }
  });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));

  const waitForLine = (predicate: (entry: Record<string, unknown>) => boolean, timeoutMs = 15_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const parse = (line: string) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          return undefined;
        }
      };
      for (const l of lines) {
        const e = parse(l);
        if (e && predicate(e)) return resolve(e);
      }
      const timer = setTimeout(() => {
        events.off("line", onLine);
        reject(new Error(`shim process: no matching log line in ${timeoutMs} ms; stderr: ${stderr.slice(0, 2000)}`));
      }, timeoutMs);
      const onLine = (l: string) => {
        const e = parse(l);
        if (!e || !predicate(e)) return;
        clearTimeout(timer);
        events.off("line", onLine);
        resolve(e);
      };
      events.on("line", onLine);
      void exited.then(() => {
        clearTimeout(timer);
        events.off("line", onLine);
        reject(new Error(`shim process exited; stderr: ${stderr.slice(0, 2000)}`));
      });
    });

  const started = await waitForLine(ready).catch(async (e: unknown) => {
    child.kill("SIGKILL");
    throw new ShimStartError((e as Error).message, lines, stderr, await exited);
  });
  return { child, url: started.msg === "api-shim listening" ? String(started.address) : "", lines, stderr: () => stderr, waitForLine, exited, closed };
}

/**
 * A test file's shim processes: each started with `start` (and any other `keep` is given), what
 * they wrote (log lines and stderr) kept for the scan for secrets, and any still running killed
 * by `killAll`. With `secrets`, each stop (`killAll`, `stopCleanly`) scans all of it, whether or
 * not a test kept a process: a key logged by a process no test looked at fails the file too.
 * A scan runs once the processes it stops are gone, and reports each leaking process once (it is
 * no longer kept): a later test's stop is not failed for it. Callers put their other cleanup in a
 * `finally` after `killAll`, which throws when it finds a secret.
 */
export class ShimProcesses {
  private readonly kept = new Set<Pick<ShimProcess, "lines" | "stderr">>();
  private spawned: ShimProcess[] = [];
  private readonly secrets: () => Iterable<string>;

  constructor(secrets: () => Iterable<string> = () => []) {
    this.secrets = secrets;
  }

  /** Every line each kept process wrote so far, and its stderr. */
  get lines(): string[] {
    return [...this.kept].flatMap(output);
  }

  async start(env: Record<string, string>, ready?: (entry: Record<string, unknown>) => boolean): Promise<ShimProcess> {
    const p = await spawnShim(env, [], ready);
    this.spawned.push(p);
    this.keep(p);
    return p;
  }

  /**
   * SIGKILL to each still running; once what they wrote is read to its end, all of it is scanned.
   * Every process is killed and forgotten first, whatever the scan finds: it throws last.
   */
  async killAll(): Promise<void> {
    const spawned = this.spawned;
    this.spawned = [];
    for (const p of spawned) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
    // Bounded: a grandchild holding a pipe open must not hang the file's afterAll.
    await Promise.race([Promise.all(spawned.map((p) => p.closed)), new Promise((r) => setTimeout(r, 2000))]);
    const stopped = [...this.kept];
    this.kept.clear();
    this.scanEach(stopped);
  }

  keep(p: Pick<ShimProcess, "lines" | "stderr">): void {
    this.kept.add(p);
  }

  /** Fails if anything kept holds one of the secrets (assertNoSecrets); a process that does is no longer kept. */
  scan(): void {
    this.scanEach([...this.kept]);
  }

  /** SIGTERM: the process exits 0, and what it wrote is kept (whether or not it did) and scanned. */
  async stopCleanly(p: ShimProcess): Promise<void> {
    this.keep(p);
    p.child.kill("SIGTERM");
    expect(await p.exited).toEqual({ code: 0, signal: null });
    await p.closed;
    this.scan();
  }

  /** Each process's output scanned on its own, so that each leak is named and reported once. */
  private scanEach(processes: readonly Pick<ShimProcess, "lines" | "stderr">[]): void {
    const leaks: string[] = [];
    for (const p of processes) {
      try {
        assertNoSecrets(output(p), this.secrets());
      } catch (err) {
        this.kept.delete(p);
        leaks.push((err as Error).message);
      }
    }
    if (leaks.length > 0) throw new Error(leaks.join("\n"));
  }
}

/** What a process wrote: its log lines, then its stderr. */
const output = (p: Pick<ShimProcess, "lines" | "stderr">): string[] => [...p.lines, p.stderr()];

/**
 * The shim config of the process tests, written to `<dir>/shim.yaml` (its path is returned): 1
 * credit per completion token, the given models, and `key` as an enterprise bootstrap key with
 * 1,000,000 credits.
 */
export function writeProcessConfig(dir: string, key: { id: string; hash: string }, models: { name: string; maxModelLen: number }[]): string {
  const path = join(dir, "shim.yaml");
  writeFileSync(path, stringify({
    pricing: { models: { "qwen2.5-7b": { promptPer1k: 0, completionPer1k: 1000 } } },
    models,
    bootstrapKeys: [{ id: key.id, name: "app", hash: key.hash, credits: 1_000_000, tier: "enterprise" }],
  }));
  return path;
}

/** The official SDK pointed at a shim process, without retries (a test sees every answer). */
export function shimClient(p: ShimProcess, apiKey: string): OpenAI {
  return new OpenAI({ apiKey, baseURL: `${p.url}/v1`, maxRetries: 0 });
}

/** Opens a chat stream through `p` and resolves once its first content chunk arrived, with the rest of it to read. */
export async function openStream(p: ShimProcess, apiKey: string, maxTokens: number) {
  const stream = await shimClient(p, apiKey).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "go" }], max_tokens: maxTokens, stream: true });
  const it = stream[Symbol.asyncIterator]();
  for (let r = await it.next(); !r.done && !r.value.choices[0]?.delta.content; r = await it.next());
  return it;
}

/**
 * The setup the process tests share (call it inside a describe): a fake vLLM, a temporary
 * directory with the SQLite file and the config of `writeProcessConfig`, one bootstrap key and an
 * admin token; `start` runs a shim on them, and at the end every process is killed, the directory
 * removed and what they wrote scanned for the key and the tokens (previousAdminToken's too). `dir`, `fake` and `env` are set
 * once the describe's tests run.
 */
export function shimProcessFixture(prefix: string) {
  const key = generateKey();
  const adminToken = `adm-${generateKey().key}`;
  // Not in `env`: a test that starts a shim with it as SHIM_ADMIN_TOKEN_PREVIOUS has it scanned for too.
  const previousAdminToken = `adm-prev-${generateKey().key}`;
  const output = new ShimProcesses(() => [key.key, adminToken, previousAdminToken]);
  const f = {
    key,
    adminToken,
    previousAdminToken,
    output,
    dir: "",
    fake: undefined as unknown as FakeVllm,
    env: {} as Record<string, string>,
    db: () => join(f.dir, "data", "shim.db"),
    start: (extra: Record<string, string> = {}, ready?: (entry: Record<string, unknown>) => boolean) => output.start({ ...f.env, ...extra }, ready),
    /** The key's row of the ledger audit, read by a store opened on the file for it. */
    audit: async () => {
      const store = new SqliteStore(f.db());
      const rows = await store.audit().finally(() => store.close());
      return rows.find((r) => r.keyId === key.id)!;
    },
  };
  beforeAll(async () => {
    f.dir = tempDir(prefix); // removed after the file's own afterAll (remove-temp-dirs.ts)
    f.fake = await new FakeVllm({ models: [{ name: "qwen2.5-7b" }] }).start();
    f.env = {
      SHIM_UPSTREAM_URL: f.fake.url,
      SHIM_DATABASE_URL: `sqlite:${f.db()}`,
      SHIM_CONFIG: writeProcessConfig(f.dir, key, [{ name: "qwen2.5-7b", maxModelLen: 4096 }]),
      SHIM_ADMIN_TOKEN: adminToken,
    };
  });
  afterAll(async () => {
    try {
      await output.killAll();
    } finally {
      await f.fake.close();
    }
  });
  return f;
}

/** An HTTP server on loopback whose requests `handle` answers (or not); `close` drops its connections too. */
export async function loopbackServer(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer(handle);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** An upstream that answers every request with `answer` as it stands (JSON), for a test to change between calls. */
export async function answeringUpstream(): Promise<{ url: string; answer: { status: number; body: string }; close(): Promise<void> }> {
  const scripted = { answer: { status: 200, body: "" } };
  const server = await loopbackServer((_req, res) => res.writeHead(scripted.answer.status, { "content-type": "application/json" }).end(scripted.answer.body));
  return Object.assign(scripted, server);
}
