import { afterAll, beforeAll, expect, it } from "vitest";
import { adminClient } from "../../scripts/lib/admin-client.ts";
import { retireKeys } from "../../scripts/lib/retire-keys.ts";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

/**
 * nginx's per-address request limit (limits.requestsPerSecond 10, burst 20, the defaults) covers
 * /admin too: an operator's script that revokes a tenant's keys back to back, from an address
 * in adminCidrs, meets its 429s, and must wait them out rather than stop half-way (an export
 * that stops leaves an expired tenant's keys live). Debian's nginx with the rendered nginx.conf,
 * the real shim. Ports of their own, so this file runs beside the other nginx tests.
 */
/** Above Linux's ephemeral range (32768-60999), where no outgoing connection can hold them. */
const HTTP_PORT = 61900;
const HTTPS_PORT = 61901;
const LOCAL_PORT = 61902;

let edge: RenderedEdge | undefined;

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "adminrate",
    settings: { adminCidrs: ["127.0.0.1/32"] },
    ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT },
  });
});

afterAll(() => edge?.close());

it("revokes 40 keys through nginx's per-address limit, waiting out its 429s and saying so", async () => {
  const shim = edge!.shim;
  for (let i = 0; i < 40; i++) await shim.createKey({ name: `k${i}`, credits: 1 });
  const lines: string[] = [];
  const client = adminClient({ baseUrl: `https://localhost:${HTTPS_PORT}`, adminToken: shim.adminToken, source: "test" }, fetch, { progress: (line) => lines.push(line) });
  const retired = await retireKeys(client, { progress: () => {}, settleTimeoutMs: 1000 });
  expect(retired.keys).toHaveLength(41); // the edge's own key too
  expect(retired.keys.filter((k) => k.revoked_at === null)).toEqual([]);
  // The waits were nginx's (its message), and the operator saw them.
  expect(lines.length).toBeGreaterThan(0);
  expect(lines[0]).toMatch(/429.*Too many requests from your address.*Waiting 1 s/);
}, 60_000);
