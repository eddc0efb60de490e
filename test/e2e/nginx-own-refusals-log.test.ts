import { readFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

/**
 * A request nginx refuses itself (400 https_required or api_key_in_url, 403 forbidden, its own
 * 429 or 413) never reaches the shim: neither the shim's log nor /metrics has it, only nginx's
 * access log. The runbook sends the operator there, by the request id, and says that an empty
 * `upstream_time` is nginx answering itself: checked here on Debian's nginx with the rendered
 * nginx.conf and the real shim. Ports of their own, so this file runs beside the other nginx tests.
 */
/** Above Linux's ephemeral range (32768-60999), where no outgoing connection can hold them. */
const HTTP_PORT = 61800;
const HTTPS_PORT = 61801;
const LOCAL_PORT = 61802;
const ROOT = join(import.meta.dirname, "..", "..");

let edge: RenderedEdge | undefined;

beforeAll(async () => {
  edge = await startRenderedEdge({ stack: "ownrefusals", settings: { adminCidrs: ["127.0.0.1/32"] }, ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT } });
});

afterAll(() => edge?.close());

/** GET `path` over HTTPS with the edge's key in the Authorization header: the status and the request id. */
function get(path: string): Promise<{ status: number; requestId: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: HTTPS_PORT, path, servername: "localhost", ca: edge!.nginx.certificate, headers: { authorization: `Bearer ${edge!.key}` } }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode!, requestId: String(res.headers["x-request-id"]) }));
    });
    req.on("error", reject);
    req.end();
  });
}

/** nginx's access-log line for `requestId`, once written. */
async function nginxLine(requestId: string): Promise<Record<string, unknown>> {
  const find = () => edge!.nginx.output().split("\n").find((l) => l.includes(`"request_id":"${requestId}"`));
  await expect.poll(find).toBeDefined();
  return JSON.parse(find()!) as Record<string, unknown>;
}

describe("a request nginx refuses itself is in nginx's log alone, its upstream_time empty", () => {
  it("api_key_in_url: no shim line, nginx's with an empty upstream_time; a request passed on has both, under one id", async () => {
    const passed = await get("/v1/models");
    expect(passed.status).toBe(200);
    const refused = await get(`/v1/models?api-key=${edge!.key}`);
    expect(refused.status).toBe(400);
    expect(refused.requestId).toMatch(/^[0-9a-f]{32}$/);

    expect((await nginxLine(passed.requestId)).upstream_time).toMatch(/^\d+\.\d{3}$/);
    await edge!.shim.waitForRequestLog((l) => l.reqId === passed.requestId);
    expect((await nginxLine(refused.requestId))).toMatchObject({ status: 400, upstream_time: "" });
    expect(edge!.shim.logs.join("\n")).not.toContain(refused.requestId);
  });
});

describe("docs/troubleshooting.md: the rows for nginx's own refusals say which log has them", () => {
  const ops = readFileSync(join(ROOT, "docs", "troubleshooting.md"), "utf8");
  // The symptom table: the page up to its first "in detail" section.
  const rows = ops.slice(0, ops.indexOf("\n## ")).split("\n").filter((l) => l.startsWith("| "));

  for (const symptom of ["400 `https_required`", "400 `api_key_in_url`", "403 `forbidden`", "answers 429"]) {
    it(symptom, () => {
      const row = rows.find((r) => r.split(" | ")[0]!.includes(symptom));
      expect(row, symptom).toBeDefined();
      expect(row).toMatch(/docker compose logs nginx/);
    });
  }

  it("one row says it for all of them (413 included): the request id, and an empty upstream_time", () => {
    const row = rows.find((r) => r.split(" | ")[0]!.includes("answered by nginx itself"));
    expect(row).toBeDefined();
    for (const s of ["https_required", "api_key_in_url", "forbidden", "429", "413", "docker compose logs nginx", "request_id", "`upstream_time`"]) expect(row).toContain(s);
  });
});
