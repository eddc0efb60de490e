import { request } from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";

/**
 * logs.clientAddress on Debian's nginx with the rendered nginx.conf in front of the real shim:
 * what the access log writes for IPv4 and IPv6 clients, and that the per-address limit still
 * counts each whole address. Two loopback addresses of one /24 (127.0.0.5 and .6) log the same
 * network but are limited apart. IPv6: a real client on ::1 (an extra listen line, as the rendered
 * server listens on IPv4: on a host, Docker's proxy hands nginx IPv6 clients as its gateway), and
 * addresses of every shape given to nginx's realip module, which sets $remote_addr from a header
 * exactly as a peer's address, so the rendered map reads them as it would a client's.
 * Ports of their own (above Linux's ephemeral range), so this file runs beside the other nginx tests.
 */
const PORTS = { http: 62500, https: 62501, local: 62502 };
const IPV6_PORT = 62503;

let edge: RenderedEdge | undefined;

/** The rendered nginx.conf, also listening on [::1], and taking $remote_addr from X-Real-IP when a loopback peer sends one. */
function withIpv6AndRealIp(conf: string): string {
  if (!conf.includes("        http2 on;\n")) throw new Error("the rendered HTTPS server has no `http2 on;` line");
  return conf
    .replace("        http2 on;\n", `        http2 on;\n        listen [::1]:${IPV6_PORT} ssl;\n`)
    .replace("    server_tokens off;\n", "    server_tokens off;\n    set_real_ip_from 127.0.0.0/8;\n    real_ip_header X-Real-IP;\n");
}

async function start(clientAddress: string | undefined): Promise<void> {
  edge = await startRenderedEdge({
    stack: "clientaddr",
    settings: { limits: { requestsPerSecond: 1, burst: 0, maxBodyMb: 1 }, ...(clientAddress ? { logs: { clientAddress } } : {}) },
    ports: PORTS, nginxConf: withIpv6AndRealIp,
  });
}

/** GET /v1/models (or POST `body` to /v1/chat/completions) over HTTPS with the edge's key: the status and nginx's request id. */
function get(options: { from?: string; realIp?: string; ipv6?: boolean; body?: string } = {}): Promise<{ status: number; requestId: string }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: options.ipv6 ? "::1" : "127.0.0.1", port: options.ipv6 ? IPV6_PORT : PORTS.https,
      ...(options.body === undefined ? { path: "/v1/models" } : { path: "/v1/chat/completions", method: "POST" }),
      ...(options.from ? { localAddress: options.from } : {}), servername: "localhost", ca: edge!.nginx.certificate,
      headers: { authorization: `Bearer ${edge!.key}`, ...(options.realIp ? { "x-real-ip": options.realIp } : {}) },
    }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode!, requestId: String(res.headers["x-request-id"]) }));
    });
    req.on("error", reject);
    req.end(options.body);
  });
}

/** The access log's remote_addr for `requestId`, once its line is written. */
async function loggedAddress(requestId: string): Promise<unknown> {
  const find = () => edge!.nginx.output().split("\n").find((l) => l.includes(`"request_id":"${requestId}"`));
  await expect.poll(find).toBeDefined();
  return (JSON.parse(find()!) as { remote_addr: unknown }).remote_addr;
}

/** Sends `from` over its rate (1 r/s, no burst) and then one request from `other`: the statuses, and what each logged. */
async function overTheRateThenAnother(from: string, other: string) {
  const first = await Promise.all([get({ from }), get({ from }), get({ from })]);
  const second = await get({ from: other });
  return {
    statuses: { first: first.map((r) => r.status), second: second.status },
    logged: { first: await Promise.all(first.map((r) => loggedAddress(r.requestId))), second: await loggedAddress(second.requestId) },
  };
}

/** IPv6 addresses as a client may send them, and the network truncated keeps (the first 48 bits, as nginx spells it). */
const IPV6_NETWORKS: readonly [string, string][] = [
  ["2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"],
  ["2001:DB8:85A3:0:0:0:0:1", "2001:db8:85a3::"],
  ["2001:db8::1", "2001:db8::"],
  ["2001:db8:0:1::5", "2001:db8::"], // a single zero group is not compressed by nginx: still one spelling
  ["2001:0:0:1:0:0:0:1", "2001::"], // the longest zero run is compressed, the first two zeros stay
  ["2001:0:5::1", "2001:0:5::"],
  ["2001::1", "2001::"],
  ["fe80::1", "fe80::"],
  ["::ffff:203.0.113.7", "::ffff:203.0.113.0"],
];

describe("logs.clientAddress truncated", () => {
  beforeAll(() => start("truncated"));
  afterAll(() => edge?.close());

  it("an IPv4 client's address is logged with its last octet zeroed, and the limit still counts each whole address", async () => {
    const { statuses, logged } = await overTheRateThenAnother("127.0.0.5", "127.0.0.6");
    expect(statuses.first).toContain(429);
    expect(statuses.second).toBe(200);
    expect(logged).toEqual({ first: ["127.0.0.0", "127.0.0.0", "127.0.0.0"], second: "127.0.0.0" });
    expect(edge!.nginx.output()).not.toMatch(/"remote_addr":"127\.0\.0\.[56]"/);
  });

  it("an IPv6 client on ::1 is logged as its first 48 bits, ::", async () => {
    const r = await get({ ipv6: true });
    expect(r.status).toBe(200);
    expect(await loggedAddress(r.requestId)).toBe("::");
  });

  it("an IPv6 address of any shape is logged as its first 48 bits, one spelling per network", async () => {
    for (const [address, network] of IPV6_NETWORKS) {
      // A realip address each: its own limit (1 r/s), so every one is answered by the shim.
      const r = await get({ realIp: address });
      expect(r.status, address).toBe(200);
      expect(await loggedAddress(r.requestId), address).toBe(network);
    }
    expect(await loggedAddress((await get({ realIp: "198.51.100.23" })).requestId)).toBe("198.51.100.0");
  });

  // The documented limit (docs/privacy.md): nginx's error log has no format, and its lines name the
  // client's whole address. A body over limits.maxBodyMb is one any client can cause.
  it("leaves nginx's error log as it is: its line for a body over limits.maxBodyMb names the whole address", async () => {
    const r = await get({ from: "127.0.0.7", body: "x".repeat(1024 * 1024 + 1) });
    expect(r.status).toBe(413);
    expect(await loggedAddress(r.requestId)).toBe("127.0.0.0");
    expect(edge!.nginx.output()).toMatch(/\[error\].*client intended to send too large body.*client: 127\.0\.0\.7,/);
  });
});

describe("logs.clientAddress none", () => {
  beforeAll(() => start("none"));
  afterAll(() => edge?.close());

  it("no client address is logged, IPv4 or IPv6, and the limit still counts each whole address", async () => {
    const { statuses, logged } = await overTheRateThenAnother("127.0.0.5", "127.0.0.6");
    expect(statuses.first).toContain(429);
    expect(statuses.second).toBe(200);
    expect(logged).toEqual({ first: ["", "", ""], second: "" });
    expect(await loggedAddress((await get({ ipv6: true })).requestId)).toBe("");
    expect(await loggedAddress((await get({ realIp: "2001:db8:85a3::7348" })).requestId)).toBe("");
  });
});

describe("logs.clientAddress unset (full)", () => {
  beforeAll(() => start(undefined));
  afterAll(() => edge?.close());

  it("logs each client's whole address, as before the setting existed", async () => {
    const { logged } = await overTheRateThenAnother("127.0.0.5", "127.0.0.6");
    expect(logged).toEqual({ first: ["127.0.0.5", "127.0.0.5", "127.0.0.5"], second: "127.0.0.6" });
    expect(await loggedAddress((await get({ ipv6: true })).requestId)).toBe("::1");
  });
});
