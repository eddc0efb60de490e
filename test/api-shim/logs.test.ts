import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { assertNoSecrets, DEFAULT_FAKE, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * Keys never reach the logs or metrics. Every harness also checks its own log lines when it
 * closes (so every suite's lines are scanned); this suite drives the paths most likely to leak.
 */
describe("no key or admin token in logs or metrics", () => {
  let h: Harness;
  let key: string;
  let keyId: string;
  beforeAll(async () => {
    h = await startShim({ file: { tiers: { tiny: { rpm: 1, tpm: 1000 } }, models: [{ name: "qwen2.5-7b" }] } });
    ({ key, id: keyId } = await h.createKey({ credits: 2 }));
  });
  afterAll(() => h.close());

  it("drives leaky paths, then finds neither keys nor tokens in any line", async () => {
    const nearMiss = `${key.slice(0, -1)}${key.endsWith("Z") ? "Y" : "Z"}`;
    h.secrets.add(nearMiss);
    const send = (path: string, init: RequestInit & { auth?: string } = {}) =>
      fetch(h.url + path, { ...init, headers: { authorization: `Bearer ${init.auth ?? key}`, "content-type": "application/json", ...(init.headers as Record<string, string>) } }).then((r) => r.text());
    await send(`/v1/models?api_key=${key}`);
    await send(`/v1/${key}/models`);
    // Percent-encoded spellings: the secret part must not be left beside a redacted prefix.
    h.secrets.add(key.slice(key.lastIndexOf("_") + 1));
    await send(`/v1/models/%73k-gs-${key.slice("sk-gs-".length)}`);
    await send(`/v1/${key.replace("_", "%5F")}`);
    await send(`/v1/${key.replace("_", "%255F")}`);
    // Without its prefix, which is public: the rest is the whole key.
    await send(`/${key.slice("sk-gs-".length)}/v1/models`);
    await send("/v1/chat/completions", { method: "POST", body: JSON.stringify({ model: key.slice("sk-gs-".length), messages: [{ role: "user", content: "x" }] }) });
    await send("/v1/chat/completions", { method: "POST", body: JSON.stringify({ model: key, messages: [{ role: "user", content: key }] }) });
    await send("/v1/chat/completions", { method: "POST", body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: key }], max_tokens: 1 }) });
    await send("/v1/models", { auth: nearMiss });
    await send("/admin/keys", { auth: nearMiss });
    await send(`/admin/keys/${keyId}/credits`, { auth: h.adminToken, method: "POST", body: JSON.stringify({ amount: 1, note: key }), headers: { "idempotency-key": key } });
    await send(`/admin/keys?token=${h.adminToken}`, { auth: `${h.adminToken}x` });
    // The deployment's own secrets have no prefix to find: a client that pastes one into a path
    // or a model name must not get it written to the log.
    h.secrets.add("upstream-secret");
    await send(`/admin/${h.adminToken}/keys`);
    await send(`/v1/models/${h.adminToken}`);
    await send("/v1/chat/completions", { method: "POST", body: JSON.stringify({ model: h.adminToken, messages: [{ role: "user", content: "x" }] }) });
    await send("/v1/chat/completions", { method: "POST", body: JSON.stringify({ model: `x${"y".repeat(190)}upstream-secret`, messages: [{ role: "user", content: "x" }] }) });
    h.fake.set({ failStatus: 500 });
    await send("/v1/completions", { method: "POST", body: JSON.stringify({ model: "qwen2.5-7b", prompt: key }) });
    h.fake.reset();
    const poor = await h.createKey({ credits: 0, tier: "tiny" });
    await send("/v1/completions", { auth: poor.key, method: "POST", body: JSON.stringify({ model: "qwen2.5-7b", prompt: "x" }) }); // 402
    await send("/v1/completions", { auth: poor.key, method: "POST", body: JSON.stringify({ model: "qwen2.5-7b", prompt: "x" }) }); // 429

    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    for (const secret of [key, poor.key, keyId, poor.id, h.adminToken]) expect(metrics).not.toContain(secret);

    expect(h.logs.length).toBeGreaterThan(10);
    assertNoSecrets(h.logs, h.secrets);
    for (const line of h.logs) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      expect(entry).not.toHaveProperty("req");
      expect(entry).not.toHaveProperty("headers");
      expect(line.toLowerCase()).not.toContain("bearer");
    }
    const requests = h.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.msg === "request");
    expect(requests.some((e) => e.status === 402 && e.keyId === poor.id)).toBe(true);
    expect(requests.some((e) => e.status === 429)).toBe(true);
    for (const e of requests) expect(Object.keys(e)).toEqual(expect.arrayContaining(["reqId", "method", "path", "status", "ms", "keyId", "model", "tokens", "cost"]));
  });

  it("a model name the upstream accepted is redacted on the warning lines as on the request line (no model list configured)", async () => {
    // The upstream serves a model whose name holds the upstream's key (as a client that pasted
    // it could name one behind a permissive LiteLLM); the shim, with no model list, forwards it.
    const model = "tenant-upstream-secret";
    const w = await startShim({ file: {}, fake: { models: [{ name: model }], apiKey: "upstream-secret" } });
    try {
      const { key: k } = await w.createKey({ credits: 10 });
      w.fake.set({ ignoreIncludeUsage: true });
      for await (const _ of await w.client(k).chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true }));
      await w.waitForRequestLog((l) => l.model === "tenant-[redacted]");
      const warning = w.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e.msg === "stream ended without usage: prompt estimated, completion counted in chunks");
      expect(warning).toMatchObject({ model: "tenant-[redacted]" });
      assertNoSecrets(w.logs, ["upstream-secret"]);
    } finally {
      await w.close();
    }
  });

  // Found by review: a served name of 33 or more letters and digits in both cases (a LoRA's,
  // model.servedName) looked like a key's secret glued to letters, and every line hid it.
  it("a model the configuration serves is shown by its name on the request line and the warnings, however it looks", async () => {
    const model = "AcmeCustomerSupportAdapterV2Final";
    const w = await startShim({ file: { models: [{ name: model }] }, fake: { models: [{ name: model }] } });
    try {
      const { key: k } = await w.createKey({ credits: 10 });
      w.fake.set({ ignoreIncludeUsage: true });
      for await (const _ of await w.client(k).chat.completions.create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true }));
      await fetch(`${w.url}/v1/models/${model}`, { headers: { authorization: `Bearer ${k}` } });
      const line = await w.waitForRequestLog((l) => l.model === model);
      expect(line.status).toBe(200);
      await w.waitForRequestLog((l) => l.path === `/v1/models/${model}`);
      const warning = w.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e.msg === "stream ended without usage: prompt estimated, completion counted in chunks");
      expect(warning).toMatchObject({ model });
      // A name that is not served is still looked at: a client's key sent as one never shows.
      const secret = k.slice(k.lastIndexOf("_") + 1);
      await w.post(k, "/v1/chat/completions", { model: `${model}${secret}`, messages: [{ role: "user", content: "x" }] });
      await w.waitForRequestLog((l) => l.model === "[redacted]");
      assertNoSecrets(w.logs, [secret]);
    } finally {
      await w.close();
    }
  });

  it("an admin token or upstream key with '%' or '?' (any printable ASCII is allowed) reaches no line, however a client spelt it in a path; nor a 404's message", async () => {
    for (const [token, upstreamKey] of [["s3cret%41passphrase-2024", "upstr3am%41key-x"], ["s3cretpassphrase?2024xyz", "upstr3am?key-xyz"]] as const) {
      const w = await startShim({ env: { SHIM_ADMIN_TOKEN: token }, fake: { ...DEFAULT_FAKE, apiKey: upstreamKey } });
      try {
        const bodies: string[] = [];
        for (const secret of [token, upstreamKey]) {
          for (const p of [secret, encodeURIComponent(secret), encodeURIComponent(encodeURIComponent(secret)), secret.replace("s", "%73")]) {
            for (const path of [`/admin/keys/${p}`, `/v1/models/${p}`, `/admin/nothing/${p}`, `/nothing/${p}`]) {
              bodies.push(await (await fetch(w.url + path, { headers: { authorization: `Bearer ${token}` } })).text());
            }
          }
        }
        await w.waitForRequestLog((l) => l.path.startsWith("/nothing/") && l.status === 401);
        const leaks = w.logs.filter((l) => l.includes("passphrase") || l.includes("upstr3am"));
        expect(leaks.map((l) => JSON.parse(l).path ?? l), token).toEqual([]);
        expect(w.logs.filter((l) => l.includes('"path":"/admin/keys/[redacted]"')).length, token).toBeGreaterThanOrEqual(8);
        // The 404's message names the path the client sent, with the deployment's secrets hidden too.
        expect(bodies.filter((b) => b.includes("Unknown route")).length, token).toBeGreaterThan(0);
        expect(bodies.filter((b) => b.includes("passphrase") || b.includes("upstr3am")), token).toEqual([]);
      } finally {
        await w.close();
      }
    }
  });

  it("a model name that is a key's secret alone (32 characters, the shortest a scan looks at) is redacted", async () => {
    const secret = key.slice(key.lastIndexOf("_") + 1);
    await h.post(key, "/v1/chat/completions", { model: secret, messages: [{ role: "user", content: "x" }] });
    const line = await h.waitForRequestLog((l) => l.model === "[redacted]");
    expect(line.status).toBe(404);
    assertNoSecrets(h.logs, [secret]);
  });

  it("a long path is logged cut to 200 characters", async () => {
    await fetch(`${h.url}/v1/${"p".repeat(300)}`, { headers: { authorization: `Bearer ${key}` } });
    const line = await h.waitForRequestLog((l) => l.path.startsWith("/v1/ppp"));
    expect(line.path).toBe(`/v1/${"p".repeat(196)}`);
  });

  it("the duration histogram is in seconds, as its name says: one request's sum is its line's ms / 1000", async () => {
    await fetch(`${h.url}/health`);
    const line = await h.waitForRequestLog((l) => l.path === "/health");
    const metrics = await (await fetch(`${h.url}/metrics`)).text();
    const sum = Number(/^shim_request_duration_seconds_sum\{route="\/health"\} (\S+)$/m.exec(metrics)?.[1]);
    expect(Math.abs(sum * 1000 - line.ms!)).toBeLessThan(0.01);
  });

  it("/metrics answers in Prometheus' text format, with its content type", async () => {
    const res = await fetch(`${h.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  });

  it("the check itself fails when a secret is present", () => {
    expect(() => assertNoSecrets([`{"msg":"oops ${key}"}`], [key])).toThrow(/a secret appeared/);
  });

  it("the check finds a key without its prefix or its secret alone, and every key an admin answer showed", async () => {
    const secret = key.slice(key.lastIndexOf("_") + 1);
    expect(() => assertNoSecrets([`{"msg":"oops ${key.slice("sk-gs-".length)}"}`], [key])).toThrow(/a secret appeared/);
    expect(() => assertNoSecrets([`{"msg":"oops ${secret}"}`], [key])).toThrow(/a secret appeared/);
    expect(() => assertNoSecrets([`{"msg":"oops ${keyId}"}`], [key])).not.toThrow(); // the id alone is public
    // Made by admin calls of the test's own, not createKey: they join the scanned secrets too.
    const made = (await (await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "direct", credits: 1, tier: "free" }) })).json()) as { id: string; key: string };
    expect(h.secrets).toContain(made.key);
    const rotated = (await (await h.admin(`/admin/keys/${made.id}/rotate`, { method: "POST" })).json()) as { key: string };
    expect(rotated.key).not.toBe(made.key);
    expect(h.secrets).toContain(rotated.key);
  });
});
