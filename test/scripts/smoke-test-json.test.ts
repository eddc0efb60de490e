// smoke-test --json, for a CI job that gates a deploy on it (found by a CI/CD pipeline author):
// one JSON object on stdout, each check's name, ok, ms and detail; the prose on stderr.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/smoke-test.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { freePort } from "../support/tools.ts";

let h: Harness;
let key: string;
beforeAll(async () => {
  h = await startShim();
  ({ key } = await h.createKey({ name: "smoke-json", credits: 100, tier: "enterprise" }));
});
afterAll(() => h.close());
afterEach(() => {
  h.fake.behaviour.failStatus = null;
});

interface Report { url: string; ok: boolean; passed: number; failed: number; checks: { name: string; ok: boolean; ms: number; detail: string }[] }

async function smoke(argv: string[], env: NodeJS.ProcessEnv = { GPU_SANDBOX_API_KEY: key }) {
  const io = memoryIo();
  const code = await main(argv, { io, env });
  return { code, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}

const NAMES = ["models", "chat", "credit-headers", "stream", "responses", "bad-key"];

describe("smoke-test --json", () => {
  it("passing: exit 0, stdout one JSON object with every check, the PASS lines on stderr with the same details", async () => {
    const r = await smoke(["--url", h.url, "--json"]);
    expect(r.code, r.err).toBe(0);
    const json = JSON.parse(r.out) as Report;
    expect(json).toMatchObject({ url: `${h.url}/v1`, ok: true, passed: 6, failed: 0 });
    expect(json.checks.map((c) => c.name)).toEqual(NAMES);
    for (const c of json.checks) {
      expect(c).toEqual({ name: c.name, ok: true, ms: expect.any(Number), detail: expect.any(String) });
      expect(Number.isInteger(c.ms)).toBe(true);
      expect(r.err).toContain(`  ${c.detail}`); // the prose line says the same
    }
    expect(json.checks[0]!.detail).toBe("2 models: qwen2.5-7b, bge-m3; using qwen2.5-7b");
    expect(r.err.split("\n")[0]).toBe(`Smoke test of ${h.url}/v1`);
    expect(r.err).toMatch(/^PASS {2}chat /m);
    expect(r.err.split("\n").at(-1)).toBe("All 6 checks passed.");
  });

  it("failing checks: exit 1, ok false, each failed check with why", async () => {
    h.fake.behaviour.failStatus = 503;
    const r = await smoke(["--url", `${h.url}/v1`, "--json"]);
    expect(r.code).toBe(1);
    const json = JSON.parse(r.out) as Report;
    expect(json).toMatchObject({ ok: false, passed: 2, failed: 4 });
    expect(json.checks.filter((c) => !c.ok).map((c) => c.name)).toEqual(["chat", "credit-headers", "stream", "responses"]);
    expect(json.checks.find((c) => c.name === "chat")!.detail).toMatch(/^HTTP 503 \w+: /);
    expect(r.err.split("\n").at(-1)).toBe("4 of 6 checks failed: chat, credit-headers, stream, responses.");
  });

  it("nothing listening: still one JSON object, every check failed with the connection's error, exit 3 (not reached)", async () => {
    const port = await freePort();
    const r = await smoke(["--url", `http://127.0.0.1:${port}`, "--json"]);
    expect(r.code).toBe(3);
    const json = JSON.parse(r.out) as Report;
    expect(json).toMatchObject({ url: `http://127.0.0.1:${port}/v1`, ok: false, passed: 0, failed: 6 });
    expect(json.checks[0]!.detail).toMatch(/^cannot connect to .*ECONNREFUSED/);
  });

  it("a bad invocation (no key) runs no check: exit 2, nothing on stdout, the reason on stderr", async () => {
    const r = await smoke(["--url", h.url, "--json"], {});
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toContain("no API key");
  });

  it("--help names --json", async () => {
    const r = await smoke(["--help"]);
    expect(r.out).toMatch(/^ {2}--json +/m);
  });
});
