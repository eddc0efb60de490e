import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

/**
 * Found by mutation review: a key in the URL with every character percent-encoded, as a client that
 * encodes a whole query value does (`%73%6B%2D%67%73%2D%4B…`): only the `sk-gs-` half of
 * $key_in_url sees it (its id and secret are encoded, which the `<id>_<secret>` half does not
 * read). Every spelling the other tests send keeps the id and secret as they are, so deleting the
 * prefix's pattern, or any alternative of it, passed them all.
 */
const HTTP_PORT = 62100, HTTPS_PORT = 62101, LOCAL_PORT = 62102;
let edge: RenderedEdge;
let key: string;

beforeAll(async () => {
  edge = await startRenderedEdge({ stack: "keyurlenc", settings: {}, ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT } });
  key = edge.key;
});
afterAll(() => edge?.close());

/** Every character of `s` as %XX, the hex digits upper or lower case. */
const encodeAll = (s: string, lower = false) => [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, "0")[lower ? "toLowerCase" : "toUpperCase"]()}`).join("");

describe("a key in the URL with its characters percent-encoded, its prefix left out or not", () => {
  it("is refused before the shim on https (api_key_in_url) and on port 80 (https_required), and its path is not logged", async () => {
    const received = edge.shim.fake.counters.received;
    const bare = key.slice("sk-gs-".length); // the prefix is public: a client may leave it out
    const someEncoded = [...bare].map((c, i) => (i % 3 === 0 ? encodeAll(c) : c)).join("");
    for (const path of [`/v1/models?api-key=${encodeAll(key)}`, `/v1/models?key=${encodeAll(key, true)}`, `/${encodeAll(key)}/v1/models`,
      `/v1/models?key=${encodeAll(bare)}`, `/v1/models?key=${someEncoded}`, `/v1/models?key=${encodeAll(bare).replaceAll("%", "%25")}`]) {
      const res = await fetch(`https://localhost:${HTTPS_PORT}${path}`);
      expect([res.status, ((await res.json()) as { error: { code: string } }).error.code], path).toEqual([400, "api_key_in_url"]);
      const plain = await fetch(`http://localhost:${HTTP_PORT}${path}`, { redirect: "manual" });
      expect([plain.status, plain.headers.get("location")], path).toEqual([400, null]);
      await plain.body?.cancel();
    }
    expect(edge.shim.fake.counters.received).toBe(received);
    expect(edge.shim.logs.some((l) => l.includes("%4B") || l.includes("%4b") || l.includes("/v1/models"))).toBe(false);
  });

  it("leaves out of the access log a path holding a key's secret alone, or a key without its prefix encoded twice (once decoded, `%` remains)", async () => {
    const secret = key.slice(key.lastIndexOf("_") + 1);
    const twice = [...key.slice(6)].map((c) => `%25${c.charCodeAt(0).toString(16).toUpperCase()}`).join("");
    for (const path of [`/${secret}/v1/models`, `/${twice}/v1/models`]) {
      const res = await fetch(`https://localhost:${HTTPS_PORT}${path}`);
      const id = res.headers.get("x-request-id")!;
      await res.body?.cancel();
      await expect.poll(() => edge.nginx.output().includes(`"request_id":"${id}"`)).toBe(true);
      expect(JSON.parse(edge.nginx.output().split("\n").find((l) => l.includes(`"request_id":"${id}"`))!).uri, path).toBe("/[path redacted: it may hold a key]");
    }
    expect(edge.nginx.output()).not.toContain(secret);
  });
});
