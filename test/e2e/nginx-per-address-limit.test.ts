import { request } from "node:https";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

// nginx's requests/s limit is per client address (found unpinned by a mutation review: keyed on
// anything else, one busy client got every other one 429s).
const HTTP_PORT = 61710, HTTPS_PORT = 61711, LOCAL_PORT = 61712;
let edge: RenderedEdge | undefined;

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "perip", settings: { limits: { requestsPerSecond: 1, burst: 0 } },
    ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT },
  });
});
afterAll(() => edge?.close());

const status = (from: string): Promise<number> => new Promise((resolve, reject) => {
  const req = request({ host: "127.0.0.1", port: HTTPS_PORT, path: "/v1/models", localAddress: from, servername: "localhost",
    ca: edge!.nginx.certificate, headers: { authorization: `Bearer ${edge!.key}` } }, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode!)); });
  req.on("error", reject);
  req.end();
});

it("limits.requestsPerSecond is per client address: one address over its rate does not get another one refused", async () => {
  const first = await Promise.all([status("127.0.0.5"), status("127.0.0.5"), status("127.0.0.5")]);
  expect(first).toContain(429);
  expect(await status("127.0.0.6")).toBe(200);
});
