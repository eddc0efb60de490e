import { request } from "node:https";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

/**
 * nginx's per-address request limit (limits.requestsPerSecond 10, burst 20, the defaults) covers
 * /metrics and /metrics/vllm as it covers /admin: vLLM's /metrics is served by the process that
 * serves inference, and an address in adminCidrs (a venue's NAT included) polled both without any
 * bound (found by the security re-audit, F8). A Prometheus scrape, one request to each per
 * interval, never meets it. Debian's nginx with the rendered nginx.conf, the real shim and the fake
 * vLLM; ports of their own, so this file runs beside the other nginx tests.
 */
const HTTP_PORT = 62610, HTTPS_PORT = 62611, LOCAL_PORT = 62612;
const SCRAPER = "127.0.0.7", POLLER = "127.0.0.8", OTHER_POLLER = "127.0.0.9";
let edge: RenderedEdge | undefined;

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "metricsrate",
    settings: { adminCidrs: [`${SCRAPER}/32`, `${POLLER}/32`, `${OTHER_POLLER}/32`] },
    ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT },
  });
});
afterAll(() => edge?.close());

const get = (from: string, path: string): Promise<{ status: number; body: string }> => new Promise((resolve, reject) => {
  const req = request({ host: "127.0.0.1", port: HTTPS_PORT, path, localAddress: from, servername: "localhost", ca: edge!.nginx.certificate,
    headers: { authorization: `Bearer ${edge!.shim.adminToken}` } }, (res) => {
    let body = "";
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => (body += chunk));
    res.on("end", () => resolve({ status: res.statusCode!, body }));
  });
  req.on("error", reject);
  req.end();
});

it("a scrape of /metrics and /metrics/vllm is served, scrape after scrape", async () => {
  for (let i = 0; i < 3; i++) {
    expect((await get(SCRAPER, "/metrics")).status).toBe(200);
    expect((await get(SCRAPER, "/metrics/vllm")).status).toBe(200);
  }
});

it.each([["/metrics", POLLER], ["/metrics/vllm", OTHER_POLLER]])("%s polled from one address past its rate and burst is refused 429 by nginx, in the API's JSON", async (path, from) => {
  const answers = await Promise.all(Array.from({ length: 40 }, () => get(from, path)));
  const refused = answers.filter((a) => a.status === 429);
  expect(refused.length).toBeGreaterThan(0);
  expect(answers.filter((a) => a.status === 200).length).toBeGreaterThan(0);
  expect(JSON.parse(refused[0]!.body)).toMatchObject({ error: { code: "rate_limit_exceeded", message: "Too many requests from your address; retry after 1 second." } });
  // The scraper's own address is not held up by another's polling.
  expect((await get(SCRAPER, path)).status).toBe(200);
});
