import { readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { anchorsOf, sectionAt } from "../support/doc-anchors.ts";
import { alertRule, selectedSum } from "../support/alert-rules.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * GpuSandboxRequestsUnavailable (templates/operator/prometheus/alerts.yml) is the one alert on a
 * shim that stays up while it refuses every request: a ledger whose write lock another
 * connection holds (an operator's sqlite3 shell left in a transaction) answers 503 and keeps
 * /metrics answering, so neither GpuSandboxShimDown nor the upstream's alert sees it.
 * alerts.test.yml shows the rule firing on made-up series; this holds its selector to what the
 * shim exports when a client gets that 503.
 */
const ROOT = join(import.meta.dirname, "..", "..");
const rule = alertRule("GpuSandboxRequestsUnavailable");

describe("the 503 alert reads what the shim counts when its ledger is locked", () => {
  let h: Harness;
  beforeAll(async () => { h = await startShim({ busyTimeoutMs: 200 }); });
  afterAll(() => h.close());

  it("a chat refused 503 service_unavailable through the SDK while another connection holds the write lock is counted by the alert's series; served requests and /ready are not", async () => {
    const selector = /shim_requests_total\{[^}]*\}/.exec(rule.expr)![0];
    const scrape = async () => selectedSum(await (await fetch(`${h.url}/metrics`)).text(), selector);
    const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 3 };
    const { key } = await h.createKey({ name: "team", credits: 100 });
    await h.client(key).chat.completions.create(chat);
    expect((await fetch(`${h.url}/ready`)).status).toBe(200);
    expect(await scrape()).toBe(0);

    const shell = new Database(h.dbPath); // an operator's sqlite3, left inside a transaction
    shell.exec("BEGIN IMMEDIATE");
    try {
      const err = await h.client(key).chat.completions.create(chat).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).status).toBe(503);
      expect((err as APIError).code).toBe("service_unavailable");
      expect(await scrape()).toBeGreaterThanOrEqual(1);
    } finally {
      shell.exec("ROLLBACK");
      shell.close();
    }
    // The lock gone, the next request goes through (no restart), as the runbook says.
    await h.client(key).chat.completions.create(chat);
  }, 30_000);

  it("its runbook is a section of docs/troubleshooting.md that tells the locked ledger by its log line and finds the process holding it", () => {
    const [page, anchor] = rule.annotations.runbook.split("#");
    const doc = readFileSync(join(ROOT, page!), "utf8");
    expect(anchorsOf(doc)).toContain(anchor);
    const section = sectionAt(doc, anchor!);
    expect(section).toContain("SQLITE_BUSY");
    expect(section).toContain("the database is locked by another connection");
    expect(section).toContain("/proc/[0-9]*");
    expect(doc).toContain(`[More](#${anchor})`);
  });
});
