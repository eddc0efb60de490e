import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ShimContext } from "../../api-shim/src/context.ts";
import { sendUsageBody } from "../../api-shim/src/routes/usage-body.ts";
import { StoreUnavailableError, type UsageGroup } from "../../api-shim/src/store/store.ts";
import { type UsageRows, usageBatches } from "../../api-shim/src/store/usage-batches.ts";

/**
 * Found by mutation review: a report whose store fails after the first batch was sent (its headers
 * are out, so no status can say so) must end as a cut connection, never as a complete answer. A
 * billing script reading CSV cannot tell a short file that ends cleanly from a whole one.
 */
const row = (i: number): UsageGroup => ({ keyId: "k00000000000", group: `model-${i}`, requests: 1, promptTokens: 1, completionTokens: 1, cost: 1_000_000 });

/** The first batch, then the store fails when asked for the next. */
function failingAfterFirst(): UsageRows {
  const rest = {
    idleMs: 60_000,
    touch() {},
    async *[Symbol.asyncIterator]() {
      throw new StoreUnavailableError(new Error("connection lost"));
    },
  };
  return Object.assign([row(1), row(2)], { rest });
}

/** The body as received and how it ended: "end" (a complete chunked answer) or "aborted". */
function get(url: string): Promise<{ status: number; body: string; ended: "end" | "aborted" }> {
  return new Promise((resolve, reject) => {
    httpRequest(url, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, body, ended: "end" }));
      res.on("aborted", () => resolve({ status: res.statusCode!, body, ended: "aborted" }));
      res.on("error", () => resolve({ status: res.statusCode!, body, ended: "aborted" }));
    }).on("error", reject).end();
  });
}

describe("an /admin/usage body whose store fails after the first batch", () => {
  let app: FastifyInstance;
  let url: string;
  beforeAll(async () => {
    app = Fastify();
    app.get("/report", async (request, reply) => {
      const format = (request.query as { format?: string }).format === "csv" ? "csv" : "json";
      return sendUsageBody({} as ShimContext, request, reply, usageBatches(failingAfterFirst()), format, "model", { object: "usage_report" });
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/report`;
  });
  afterAll(() => app.close());

  it.each(["csv", "json"])("%s: the rows sent are followed by a cut, not a clean end", async (format) => {
    const r = await get(`${url}?format=${format}`);
    expect(r.status).toBe(200);
    expect(r.body).toContain("model-2"); // the first batch was sent…
    expect(r.ended).toBe("aborted"); // …and the answer did not end as a whole one
    if (format === "json") expect(() => JSON.parse(r.body)).toThrow();
  });
});
