import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startShim, type Harness } from "../support/shim-harness.ts";

function raw(url: string, bytes: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect(Number(u.port), u.hostname, () => s.write(bytes));
    let out = "";
    s.on("data", (d) => (out += d.toString()));
    s.on("close", () => resolve(out));
    s.on("error", () => resolve(out));
    setTimeout(() => { s.destroy(); resolve(out); }, 1500);
  });
}

describe("no key reaches a log line, however a client sends it", () => {
  let h: Harness;
  let key: string;
  let secret: string;
  let bare: string;
  beforeAll(async () => {
    h = await startShim();
    ({ key } = await h.createKey({ credits: 100 }));
    secret = key.slice(key.lastIndexOf("_") + 1);
    bare = key.slice("sk-gs-".length);
  });
  afterAll(() => h.close());

  it("odd Authorization spellings, x-api-key, body and raw malformed requests", async () => {
    const before = h.logs.length;
    for (const auth of [`Bearer  ${key}`, `bearer ${key}`, `Bearer ${key} `, `Basic ${Buffer.from(`u:${key}`).toString("base64")}`, `Token ${key}`, key]) {
      await fetch(`${h.url}/v1/models`, { headers: { authorization: auth } });
    }
    await fetch(`${h.url}/v1/models`, { headers: { "x-api-key": key } });
    await fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: `{"model":"${key}", bad json ${key}` });
    await fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "text/plain" }, body: key });
    await raw(h.url, `GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${key}\n\r\n\r\n`);
    await raw(h.url, `GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${key}\x01\r\n\r\n`);
    await raw(h.url, `GET /v1/${key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization : Bearer ${key}\r\n\r\n`);
    await raw(h.url, `GET /v1/models?key=${key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n`);
    await raw(h.url, `GET ${key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    await raw(h.url, `GET //${key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    await raw(h.url, `GET http://${key}@x/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    await raw(h.url, `GET http://u:${bare}@x/v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    await raw(h.url, `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{"model":"${key}"}`);
    await new Promise((r) => setTimeout(r, 300));
    // Each request above was logged (so the scan below looks at real lines), none with the secret.
    expect(h.logs.length - before).toBeGreaterThanOrEqual(9);
    const hits = h.logs.filter((l) => l.includes(secret));
    expect(hits).toEqual([]);
  });

  it("a key's bare form glued to a letter or digit in a path or model name", async () => {
    const before = h.logs.length;
    await fetch(`${h.url}/v1/models/${bare}x`, { headers: { authorization: `Bearer ${key}` } });
    await fetch(`${h.url}/v1/models/x${secret}`, { headers: { authorization: `Bearer ${key}` } });
    await h.post(key, "/v1/chat/completions", { model: `${bare}0`, messages: [{ role: "user", content: "x" }] });
    await new Promise((r) => setTimeout(r, 300));
    expect(h.logs.length - before).toBeGreaterThanOrEqual(3);
    const hits = h.logs.filter((l) => l.includes(secret));
    expect(hits).toEqual([]);
  });
});
