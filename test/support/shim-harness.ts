import { expect } from "vitest";
import { EventEmitter } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import OpenAI from "openai";
import { stringify } from "yaml";
import { buildApp, closeApp } from "../../api-shim/src/app.ts";
import { type Clock, systemClock } from "../../api-shim/src/clock.ts";
import { parseShimConfig, type ShimConfig } from "../../api-shim/src/config.ts";
import { KEY_PREFIX, parseKeyId } from "../../api-shim/src/auth/keys.ts";
import { createLogger, type RequestLine } from "../../api-shim/src/observability/logger.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { distinctPrices } from "../../api-shim/src/money/price-record.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { createUpstream, type Upstream } from "../../api-shim/src/upstream/upstream.ts";
import { FakeVllm, type FakeVllmOptions } from "./fake-vllm.ts";

/**
 * Builds the shim the way server.ts does (real SQLite file, real undici upstream, the fake vLLM
 * on loopback), listening on 127.0.0.1 port 0. Every log line is kept; `close()` fails if any
 * line contains a plaintext key or the admin token the harness knows about.
 */
export interface HarnessOptions {
  /** The SHIM_CONFIG YAML document, as an object. */
  file?: Record<string, unknown>;
  env?: Record<string, string>;
  fake?: FakeVllmOptions;
  clock?: Clock;
  /** Wrap the store (e.g. to break it). */
  wrapStore?: (store: SqliteStore) => Store;
  busyTimeoutMs?: number;
}

export interface Harness {
  app: FastifyInstance;
  url: string;
  fake: FakeVllm;
  store: SqliteStore;
  dbPath: string;
  config: ShimConfig;
  adminToken: string;
  logs: string[];
  /** Every secret this harness has seen (admin token, plaintext keys): none may appear in logs. */
  secrets: Set<string>;
  createKey(body?: Record<string, unknown>): Promise<{ id: string; key: string }>;
  client(key: string, options?: { timeout?: number }): OpenAI;
  admin(path: string, init?: RequestInit): Promise<Response>;
  /** A raw JSON POST with an API key, for what the SDK would not send or hides (bytes, headers, raw SSE). */
  post(key: string, path: string, body: string | object, headers?: Record<string, string>): Promise<Response>;
  /** Resolves with the first request log line (parsed) matching `predicate`, past or future. */
  waitForRequestLog(predicate: (entry: RequestLog) => boolean, timeoutMs?: number): Promise<RequestLog>;
  close(): Promise<void>;
}

/** A line the shim logged for a request (its one line per request, as logged). */
export type RequestLog = RequestLine;

export const DEFAULT_FILE = {
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }],
};
export const DEFAULT_FAKE: FakeVllmOptions = {
  models: [{ name: "qwen2.5-7b", root: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 8192 }, { name: "bge-m3", root: "BAAI/bge-m3", maxModelLen: 8192 }],
  apiKey: "upstream-secret",
};

export async function startShim(options: HarnessOptions = {}): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), "shim-test-"));
  const fakeOptions = options.fake ?? DEFAULT_FAKE;
  const fake = await new FakeVllm(fakeOptions).start();
  const adminToken = `admin-${Math.random().toString(36).slice(2)}-${Date.now()}`;
  const configPath = join(dir, "shim.yaml");
  writeFileSync(configPath, stringify(options.file ?? DEFAULT_FILE));
  const config = parseShimConfig(
    {
      SHIM_UPSTREAM_URL: fake.url,
      SHIM_UPSTREAM_API_KEY: fakeOptions.apiKey ?? "",
      SHIM_ADMIN_TOKEN: adminToken,
      SHIM_CONFIG: configPath,
      SHIM_UPSTREAM_TIMEOUT_MS: "5000",
      SHIM_STREAM_IDLE_TIMEOUT_MS: "5000",
      ...options.env,
    },
    (p) => readFileSync(p, "utf8"),
  );
  const logs: string[] = [];
  const logEvents = new EventEmitter();
  const logger = createLogger({
    level: "info",
    pretty: false,
    destination: {
      write: (line: string) => {
        logs.push(line);
        logEvents.emit("line", line);
      },
    },
  });
  const dbPath = join(dir, "shim.db");
  // The configuration's prices recorded at the open, as server.ts does.
  const sqlite = new SqliteStore(dbPath, { busyTimeoutMs: options.busyTimeoutMs ?? 5000, prices: { records: distinctPrices(config.pricing), at: Date.now() } });
  const store = options.wrapStore ? options.wrapStore(sqlite) : sqlite;
  for (const k of config.bootstrapKeys) await store.ensureBootstrapKey({ ...k, models: k.models && [...k.models], expiresAt: null, at: Date.now() });
  const upstream: Upstream = createUpstream({ url: config.upstreamUrl, apiKey: config.upstreamApiKey, headersTimeoutMs: config.upstreamTimeoutMs, idleTimeoutMs: config.streamIdleTimeoutMs });
  const app = buildApp({ config, store, upstream, clock: options.clock ?? systemClock, logger });
  await app.listen({ port: 0, host: "127.0.0.1" });
  const address = app.server.address();
  const url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  // The upstream's key must stay out of the logs as much as the clients' keys.
  const secrets = new Set([adminToken, ...(fakeOptions.apiKey ? [fakeOptions.apiKey] : [])]);

  // Every key an admin answer shows (a creation's, a rotation's) joins the secrets, whichever
  // test asked for it: the scan at close then looks for it too.
  const admin = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(url + path, { ...init, headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json", ...(init.headers as Record<string, string>) } });
    if (/json/.test(res.headers.get("content-type") ?? "")) for (const key of keysIn(await res.clone().text())) secrets.add(key);
    return res;
  };

  const post = (key: string, path: string, body: string | object, headers: Record<string, string> = {}) =>
    fetch(url + path, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });

  const harness: Harness = {
    app, url, fake, store: sqlite, dbPath, config, adminToken, logs, secrets, admin, post,
    async createKey(body = {}) {
      const res = await admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "test", credits: 100, tier: "enterprise", ...body }) });
      if (res.status !== 201) throw new Error(`createKey: ${res.status} ${await res.text()}`);
      return (await res.json()) as { id: string; key: string };
    },
    waitForRequestLog(predicate, timeoutMs = 10_000) {
      const match = (line: string): RequestLog | undefined => {
        const entry = JSON.parse(line) as RequestLog & { msg: string };
        return entry.msg === "request" && predicate(entry) ? entry : undefined;
      };
      for (const line of logs) {
        const hit = match(line);
        if (hit) return Promise.resolve(hit);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          logEvents.off("line", onLine);
          reject(new Error(`no matching request log line within ${timeoutMs} ms`));
        }, timeoutMs);
        const onLine = (line: string) => {
          const hit = match(line);
          if (!hit) return;
          clearTimeout(timer);
          logEvents.off("line", onLine);
          resolve(hit);
        };
        logEvents.on("line", onLine);
      });
    },
    client(key, opts = {}) {
      return new OpenAI({ apiKey: key, baseURL: `${url}/v1`, maxRetries: 0, timeout: opts.timeout ?? 20_000 });
    },
    async close() {
      // As the shim's own SIGTERM does (what is still going after 10 s is aborted and settled):
      // with app.close() alone, a test failing with a stream open would time out instead of
      // showing its assertion.
      await closeApp(app, 10_000);
      await upstream.close();
      await fake.close();
      await sqlite.close();
      rmSync(dir, { recursive: true, force: true });
      assertNoSecrets(logs, secrets);
    },
  };
  return harness;
}

/** Our keys (`sk-gs-<id>_<secret>`) in a text: an admin answer's. */
export function keysIn(text: string): string[] {
  return text.match(/sk-gs-[0-9A-Za-z]{12}_[0-9A-Za-z]{32}(?![0-9A-Za-z])/g) ?? [];
}

/**
 * What of a secret must not appear: all of it, and for one of our keys also `<id>_<secret>` and
 * the secret alone, each as good as the key (the prefix is public and the id is listed:
 * api-shim/src/observability/redaction.ts).
 */
export function secretForms(secret: string): string[] {
  if (parseKeyId(secret) === undefined) return [secret];
  return [secret, secret.slice(KEY_PREFIX.length), secret.slice(secret.lastIndexOf("_") + 1)];
}

/** Fails when any line contains any of the secrets, whole or in a form as good (secretForms). */
export function assertNoSecrets(lines: readonly string[], secrets: Iterable<string>): void {
  for (const secret of secrets) {
    for (const form of secretForms(secret)) {
      const hit = lines.find((l) => l.includes(form));
      if (hit) throw new Error(`a secret appeared in the shim's logs${form === secret ? "" : " (a key's secret part)"}: ${hit.replaceAll(form, "<SECRET>").slice(0, 200)}`);
    }
  }
}

/** The store with some methods replaced (a failure, a gate); every other member is the store's own. */
export function overrideStore<S extends object>(store: S, overrides: { [K in keyof S]?: S[K] }): S {
  return new Proxy(store, {
    get: (target, prop) => {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof S];
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** Balance = sum(ledger), nothing held, no reservations, for every key. */
export async function moneyInvariants(store: Store): Promise<{ keyId: string; balance: number; ledgerSum: number; held: number; reservations: number }[]> {
  return (await store.audit()).map((r) => ({ keyId: r.keyId, balance: r.balance, ledgerSum: r.ledgerSum, held: r.held, reservations: r.reservations }));
}

/** A key's balance now (micro-credits). */
export async function balanceOf(store: Store, keyId: string): Promise<number> {
  return (await store.getKey(keyId))!.balance;
}

/** Fails unless the key's balance equals its ledger with nothing held and no reservation left. */
export async function expectLedgerMatches(store: Store, keyId: string): Promise<void> {
  const row = (await moneyInvariants(store)).find((r) => r.keyId === keyId)!;
  expect(row).toMatchObject({ ledgerSum: row.balance, held: 0, reservations: 0 });
}

/**
 * Fills the shim's upstream pool (256 connections) with generations the fake holds open (a
 * non-streamed answer's headers come at its end), for a test of what must not queue behind them.
 * Returns how to let them go.
 */
export async function fillUpstreamPool(h: Harness, key: string): Promise<() => Promise<void>> {
  h.fake.set({ hang: true });
  const ac = new AbortController();
  const pending = Array.from({ length: 260 }, () =>
    fetch(`${h.url}/v1/chat/completions`, { method: "POST", signal: ac.signal, headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "x" }], max_tokens: 4 }) }).catch(() => undefined));
  await h.fake.until((c) => c.received >= 256, 20_000);
  return async () => {
    ac.abort();
    await Promise.all(pending);
    h.fake.reset();
  };
}
