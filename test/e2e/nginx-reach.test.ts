import { randomInt } from "node:crypto";
import { type IncomingHttpHeaders, request as httpRequest } from "node:http";
import { request } from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";
import type { RunningNginx } from "../support/nginx.ts";
import type { Harness } from "../support/shim-harness.ts";

/**
 * Who reaches what through the rendered nginx.conf (Debian's nginx, the real shim), told apart
 * by the loopback address each request comes from: 127.0.0.2 is the tenant's client
 * (allowedCidrs), 127.0.0.3 the operator's machine (adminCidrs only, which the firewall lets
 * through to 443 for /admin), 127.0.0.4 stands for Docker's gateway (the host's own requests),
 * 127.0.0.5 is in neither list. Ports of their own, so this file runs beside nginx-shim.test.ts.
 */
/** Above Linux's ephemeral range (32768-60999), where no outgoing connection can hold them. */
const HTTP_PORT = 61510;
const HTTPS_PORT = 61511;
const LOCAL_PORT = 61512;
const DOCKER_GATEWAY = "10.89.0.1";
const GATEWAY_STAND_IN = "127.0.0.4";

let shim: Harness;
let nginx: RunningNginx;
let key: string;
let edge: RenderedEdge | undefined;

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "reach",
    settings: { allowedCidrs: ["127.0.0.2/32"], adminCidrs: ["127.0.0.3/32"] },
    ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT },
    nginxConf: (rendered) => {
      expect(rendered).toContain(` ${DOCKER_GATEWAY}/32 1;`);
      return rendered.replaceAll(` ${DOCKER_GATEWAY}/32 1;`, ` ${GATEWAY_STAND_IN}/32 1;`);
    },
  });
  ({ shim, nginx, key } = edge);
});

afterAll(() => edge?.close());

interface Answer { status: number; body: string; requestId: string; headers: IncomingHttpHeaders }

/** GET `path` over HTTPS from the loopback address `from`. */
const get = (from: string, path: string, token?: string): Promise<Answer> => send(from, "GET", path, token);

/** `method` `path` (sent as written) over HTTPS from the loopback address `from`, with `headers` besides the token. */
function send(from: string, method: string, path: string, token?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: "127.0.0.1", port: HTTPS_PORT, method, path, localAddress: from, servername: "localhost", ca: nginx.certificate,
      headers: token ? { ...headers, authorization: `Bearer ${token}` } : headers,
    }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, body, requestId: String(res.headers["x-request-id"]), headers: res.headers }));
    });
    req.on("error", reject);
    req.end();
  });
}

const forbidden = (a: Answer) => a.status === 403 && JSON.parse(a.body).error.code === "forbidden";

describe("who reaches what through nginx", () => {
  it("keeps an adminCidrs address outside allowedCidrs to /admin and /metrics: the API answers it 403", async () => {
    expect((await get("127.0.0.3", "/admin/keys", shim.adminToken)).status).toBe(200);
    expect((await get("127.0.0.3", "/metrics")).status).toBe(200);
    expect(forbidden(await get("127.0.0.3", "/v1/models", key))).toBe(true);
    expect(forbidden(await get("127.0.0.3", "/v1/models/qwen2.5-7b", key))).toBe(true);
    expect(forbidden(await get("127.0.0.3", "/v1/usage", key))).toBe(true);
  });

  it("serves the API to allowedCidrs, and keeps /admin from it", async () => {
    expect((await get("127.0.0.2", "/v1/models", key)).status).toBe(200);
    expect((await get("127.0.0.2", "/v1/models/qwen2.5-7b", key)).status).toBe(200);
    expect(forbidden(await get("127.0.0.2", "/admin/keys", shim.adminToken))).toBe(true);
  });

  it("passes a model id holding a raw `/` (OpenAI's Python SDK, curl) to the shim's GET /v1/models/{id}, and refuses its %2F (the Node SDK's) itself", async () => {
    // Served as qwen2.5-7b here: the Hugging Face id reaches the route and is not in the key's list.
    const raw = await get("127.0.0.2", "/v1/models/Qwen/Qwen2.5-7B-Instruct", key);
    expect([raw.status, JSON.parse(raw.body).error.message]).toEqual([404, "The model 'Qwen/Qwen2.5-7B-Instruct' does not exist or you do not have access to it."]);
    expect(JSON.parse((await get("127.0.0.2", "/v1/models/qwen2.5-7b/", key)).body).id).toBe("qwen2.5-7b");
    const encoded = await get("127.0.0.2", "/v1/models/Qwen%2FQwen2.5-7B-Instruct", key);
    expect([encoded.status, JSON.parse(encoded.body).error.code]).toEqual([400, "invalid_request"]);
    expect(shim.logs.filter((l) => l.includes(encoded.requestId))).toEqual([]); // nginx's answer
  });

  it("answers the host's own requests (from Docker's gateway) on their own port, as the deploy's readiness wait makes them, and IPv6 clients (from the gateway too) on the API's", async () => {
    const local = await new Promise<number>((resolve, reject) => {
      httpRequest({ host: "127.0.0.1", port: LOCAL_PORT, path: "/ready", localAddress: GATEWAY_STAND_IN }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      }).on("error", reject).end();
    });
    expect(local).toBe(200);
    expect((await get(GATEWAY_STAND_IN, "/ready")).status).toBe(200);
    expect((await get(GATEWAY_STAND_IN, "/health")).status).toBe(200);
  });

  it("serves vLLM's own metrics at /metrics/vllm to adminCidrs alone, from the vLLM container (not the shim), with the operator's token kept from it", async () => {
    const vllm = await get("127.0.0.3", "/metrics/vllm", shim.adminToken);
    expect(vllm.status).toBe(200);
    expect(vllm.body).toMatch(/^vllm:num_requests_waiting\{engine="0",model_name="qwen2\.5-7b"\} 0\.0$/m);
    expect(vllm.body).not.toContain("shim_"); // not the shim's /metrics
    expect(shim.fake.metricsHeaders).not.toHaveProperty("authorization");
    expect((await get("127.0.0.3", "/metrics")).body).not.toContain("vllm:");
    // Not from allowedCidrs, nor from an address in neither list, nor from Docker's gateway on the API's port.
    for (const from of ["127.0.0.2", "127.0.0.5", GATEWAY_STAND_IN]) expect(forbidden(await get(from, "/metrics/vllm")), from).toBe(true);
    // The same guard for the path spelt otherwise: percent-encoded letters reach it only from adminCidrs.
    expect((await get("127.0.0.3", "/metrics/%76llm")).status).toBe(200);
    expect(forbidden(await get("127.0.0.2", "/metrics/%76llm"))).toBe(true);
    expect(forbidden(await get("127.0.0.2", "/%6detrics/vllm"))).toBe(true);
  });

  it("answers /metrics/vllm 502 in the API's JSON shape when vLLM is not there, the API still served", async () => {
    await shim.fake.close();
    try {
      const res = await get("127.0.0.3", "/metrics/vllm");
      expect([res.status, JSON.parse(res.body).error.code]).toEqual([502, "upstream_error"]);
      expect((await get("127.0.0.3", "/metrics")).status).toBe(200);
    } finally {
      await shim.fake.start(Number(new URL(shim.fake.url).port));
    }
  });

  it("refuses the API to an address in neither list", async () => {
    expect(forbidden(await get("127.0.0.5", "/v1/models", key))).toBe(true);
    expect(forbidden(await get("127.0.0.5", "/v1/models/qwen2.5-7b", key))).toBe(true);
  });
});

describe("a browser app (CORS, docs/decisions.md)", () => {
  const origin = { origin: "https://chat.example.com" };
  const preflight = { ...origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" };

  it("gets no CORS from /admin or /metrics, even from the operator's address: a page the operator opens cannot use the admin token", async () => {
    for (const path of ["/admin/keys", "/metrics", "/metrics/vllm"]) {
      const asked = await send("127.0.0.3", "OPTIONS", path, undefined, preflight);
      expect(asked.status, path).not.toBe(204);
      expect(asked.headers["access-control-allow-origin"], path).toBeUndefined();
      const answered = await send("127.0.0.3", "GET", path, shim.adminToken, origin);
      expect([answered.status, answered.headers["access-control-allow-origin"], answered.headers["access-control-expose-headers"]], path).toEqual([200, undefined, undefined]);
    }
    // The API does answer the tenant's client.
    const api = await send("127.0.0.2", "OPTIONS", "/v1/chat/completions", undefined, preflight);
    expect([api.status, api.headers["access-control-allow-origin"]]).toEqual([204, "*"]);
    // An address outside allowedCidrs is refused first, as for any other request.
    expect(forbidden(await send("127.0.0.5", "OPTIONS", "/v1/chat/completions", undefined, preflight))).toBe(true);
  });
});

describe("a key in the URL", () => {
  it("is refused 400 by nginx in /admin and /metrics too, from adminCidrs, before it reaches the shim", async () => {
    for (const path of [`/admin/keys?token=${key}`, `/admin/${key}`, `/metrics?key=${key}`, `/metrics/vllm?key=${key}`, `/admin/keys?token=%25%37%33${key.slice(1)}`,
      `/admin/keys?token=${key.slice(6)}`, `/admin/keys?token=${key.slice(6, 18)}%5f${key.slice(19)}`]) {
      const res = await get("127.0.0.3", path, shim.adminToken);
      expect([res.status, JSON.parse(res.body).error.code], path).toEqual([400, "api_key_in_url"]);
      expect(shim.logs.filter((l) => l.includes(res.requestId)), path).toEqual([]);
    }
    // The admin API's own paths and queries still reach the shim from there.
    expect((await get("127.0.0.3", "/admin/usage?from=2025-01-01", shim.adminToken)).status).toBe(200);
    // A key's id, and timestamps with an encoded offset; a key's name (which the shim refuses there, itself).
    const period = "from=2025-01-01T00%3A00%3A00%2B02%3A00&to=2025-02-01T00%3A00%3A00%2B02%3A00";
    expect((await get("127.0.0.3", `/admin/usage?key=${key.slice(6, 18)}&${period}`, shim.adminToken)).status).toBe(200);
    for (const path of [`/admin/usage?key=reach&${period}`, `/admin/usage?key=team_ml-research_2025&${period}`]) {
      const res = await get("127.0.0.3", path, shim.adminToken);
      expect(shim.logs.some((l) => l.includes(res.requestId)), path).toBe(true);
    }
  });
});

describe("a path nginx and the shim would read as different routes (an encoded /, . or \\, or a . or .. segment)", () => {
  it("is refused 400 by nginx in the API's JSON shape, in every location, before it reaches the shim", async () => {
    const victim = await shim.createKey({ name: "victim", credits: 1 });
    for (const [from, method, path] of [
      // From the tenant's client (allowedCidrs, not adminCidrs): nginx decoded %2f and resolved the
      // `..`, so saw `/v1` (location /) while the shim's router matched `/admin/keys/:id`.
      ["127.0.0.2", "DELETE", `/admin/keys/${victim.id}%2f..%2f..%2f..%2fv1`],
      ["127.0.0.2", "DELETE", "/admin/keys/x%2F..%2F..%2F..%2Fv1"],
      ["127.0.0.2", "GET", "/v1/models/%2e%2e/%2E%2E/v1/models"],
      ["127.0.0.2", "GET", "/v1/./models"],
      ["127.0.0.2", "GET", "/v1%5cmodels"],
      // nginx ends the path at a raw `#`, the `..` before it resolved: `/` to nginx (location /).
      ["127.0.0.2", "GET", "/metrics/..#"],
      ["127.0.0.2", "GET", "/admin/..#x"],
      // The admin locations, from the operator's machine.
      ["127.0.0.3", "GET", "/admin/keys/x%2f..%2fy"],
      ["127.0.0.3", "GET", "/metrics/%2e"],
      ["127.0.0.3", "GET", "/metrics/vllm/.."],
      ["127.0.0.3", "GET", "/metrics/vllm%2f"],
    ] as const) {
      const res = await send(from, method, path, shim.adminToken);
      expect(res.status, path).toBe(400);
      expect(res.headers["content-type"], path).toBe("application/json");
      expect(res.headers["strict-transport-security"], path).toBe("max-age=63072000");
      expect(JSON.parse(res.body).error, path).toMatchObject({ type: "invalid_request_error", param: null, code: "invalid_request" });
      expect(res.requestId, path).toMatch(/^[0-9a-f]{32}$/);
      expect(shim.logs.filter((l) => l.includes(res.requestId)), path).toEqual([]);
    }
    // An address outside allowedCidrs is still told that first.
    expect(forbidden(await send("127.0.0.5", "DELETE", "/admin/keys/x%2f..%2f..%2f..%2fv1", shim.adminToken))).toBe(true);
    const list = (await (await shim.admin("/admin/keys")).json()) as { data: { id: string; revoked_at: unknown }[] };
    expect(list.data.find((k) => k.id === victim.id)?.revoked_at).toBeNull();
  });
});

describe("nginx's access log", () => {
  /** A token of the form `pulumi up` makes for the admin API (48 letters and digits, serving-secrets.ts). */
  const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  const token = Array.from({ length: 48 }, () => ALNUM[randomInt(ALNUM.length)]).join("");

  const logged = async (from: string, path: string): Promise<string> => {
    const { requestId } = await get(from, path, token);
    await expect.poll(() => nginx.output().includes(`"request_id":"${requestId}"`)).toBe(true);
    return nginx.output().split("\n").find((l) => l.includes(`"request_id":"${requestId}"`))!;
  };

  it("keeps an admin token pasted into a URL path out of the log, on /admin and elsewhere, as the shim keeps it out of its own", async () => {
    for (const [from, path] of [["127.0.0.3", `/admin/keys/${token}`], ["127.0.0.2", `/admin/keys/${token}`], ["127.0.0.2", `/v1/models/${token}`],
      ["127.0.0.3", `/admin/${token.slice(0, 24)}/${token.slice(24)}`]] as const) {
      expect(JSON.parse(await logged(from, path)).uri, path).toBe("/[path redacted: it may hold a key]");
    }
    expect(nginx.output()).not.toContain(token.slice(0, 24));
    expect(nginx.output()).not.toContain(token.slice(24));
  });

  it("still logs the API's and the admin API's own paths, a key id and an ACME token included", async () => {
    for (const path of ["/v1/chat/completions", "/admin/keys/AbCdEf123456/credits", "/admin/usage", "/.well-known/acme-challenge/Zk3x9Q0t-m_RbVv7yJ2uWcLqH8sNdPoA1eGiTfKlB4c"]) {
      expect(JSON.parse(await logged("127.0.0.3", path)).uri, path).toBe(path);
    }
  });
});
