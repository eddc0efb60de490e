import { readFileSync } from "node:fs";
import { join } from "node:path";
import { APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { anchorsOf, sectionAt } from "../support/doc-anchors.ts";
import { alertRule, selectedSum } from "../support/alert-rules.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * GpuSandboxKeysOutOfCredit (templates/operator/prometheus/alerts.yml) tells an operator that a
 * tenant's keys are refused for lack of credits. alerts.test.yml shows it firing on made-up
 * series; this holds its selector to what the shim exports when the SDK gets that 402, so a
 * rename of the counter or its labels cannot leave the alert silent.
 */
const ROOT = join(import.meta.dirname, "..", "..");
const rule = alertRule("GpuSandboxKeysOutOfCredit");

describe("the out-of-credit alert reads what the shim counts for a 402", () => {
  let h: Harness;
  beforeAll(async () => { h = await startShim(); });
  afterAll(() => h.close());

  it("a key without credits gets 402 insufficient_credits through the SDK, and the alert's series counts it; a served key's requests do not", async () => {
    const selector = /shim_requests_total\{[^}]*\}/.exec(rule.expr)![0];
    const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 3 };
    const served = await h.createKey({ name: "paying", credits: 100 });
    await h.client(served.key).chat.completions.create(chat);
    expect(selectedSum(await (await fetch(`${h.url}/metrics`)).text(), selector)).toBe(0);

    const broke = await h.createKey({ name: "broke", credits: 0 });
    for (let i = 0; i < 2; i++) {
      const err = await h.client(broke.key).chat.completions.create(chat).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).status).toBe(402);
      expect((err as APIError).code).toBe("insufficient_credits");
    }
    expect(selectedSum(await (await fetch(`${h.url}/metrics`)).text(), selector)).toBe(2);
  });

  it("its runbook is a section of docs/troubleshooting.md that gives the commands to find the key and top it up", () => {
    const [page, anchor] = rule.annotations.runbook.split("#");
    const doc = readFileSync(join(ROOT, page!), "utf8");
    expect(anchorsOf(doc)).toContain(anchor);
    const section = sectionAt(doc, anchor!);
    expect(section).toContain("manage-keys -- list --stack");
    expect(section).toContain("manage-keys -- top-up --stack");
    expect(doc).toContain(`[More](#${anchor})`);
  });
});
