import { type ChildProcess, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createUpstream } from "../../api-shim/src/upstream/upstream.ts";
import { spawnLogged, started } from "./processes.ts";

/**
 * The benchmark's two reference proxies: passing requests through and doing nothing else, they
 * show what one proxy hop costs on the machine, so the shim's own share can be read off.
 *
 *   bare proxy    Fastify + the shim's undici pool: any Node proxy of the shim's design
 *   nginx proxy   Debian's nginx, one process, keep-alive upstream, no buffering: a hop in C,
 *                 the floor for any proxy on this machine
 */

/** The bare Fastify + undici pass-through, serving until the process ends. */
export async function serveBareProxy(port: number, upstreamUrl: string): Promise<void> {
  const { default: Fastify } = await import("fastify");
  const upstream = createUpstream({ url: upstreamUrl, apiKey: null, headersTimeoutMs: 120_000, idleTimeoutMs: 60_000 });
  const app = Fastify({ logger: false });
  app.post("/v1/chat/completions", async (request, reply) => {
    const res = await upstream.request({ method: "POST", path: "/chat/completions", body: JSON.stringify(request.body) });
    if (!(request.body as { stream?: boolean }).stream) return reply.code(res.status).type("application/json").send(await res.body.text());
    // Streams: each chunk written on as it arrives, as the shim does, with no SSE parsing or
    // metering. A bench's relay: no backpressure, abort or error handling (the bench's clients
    // read as fast as they can and the fake does not fail).
    reply.hijack();
    reply.raw.writeHead(res.status, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    for await (const chunk of res.body) reply.raw.write(chunk);
    reply.raw.end();
    return reply;
  });
  await app.listen({ port, host: "127.0.0.1" });
}

/** Starts the bare proxy in its own process (this file run with BENCH_BARE_PROXY="<port> <upstream url>") and waits until it answers. */
export function startBareProxy(logPath: string, port: number, upstreamUrl: string): Promise<ChildProcess> {
  const child = spawnLogged(process.execPath, [fileURLToPath(import.meta.url)], logPath, { env: { PATH: process.env.PATH, BENCH_BARE_PROXY: `${port} ${upstreamUrl}` } });
  return started(child, `http://127.0.0.1:${port}/`, logPath);
}

let nginxFound: string | null | undefined;

/**
 * Debian's nginx: on PATH, or in /usr/sbin, where Debian puts it and which a non-root user's PATH
 * lacks. Null when neither runs (the bench leaves the nginx column out and says why).
 */
export function nginxBinary(): string | null {
  nginxFound ??= ["nginx", "/usr/sbin/nginx"].find((candidate) => !spawnSync(candidate, ["-v"]).error) ?? null;
  return nginxFound;
}

/**
 * nginx as a plain reverse proxy from 127.0.0.1:`port` to `upstream` (host:port), its files under
 * `dir`. One process (`master_process off`), so the process the bench spawns is the one that does
 * the work and its CPU time can be read; keep-alive to the upstream and no response buffering,
 * as the tenant's rendered nginx.conf relays to the shim; no TLS and no access log, so the hop
 * is all it measures. Errors go to stderr, which startNginxProxy keeps in `<dir>/nginx.out`.
 */
export function nginxProxyConf(dir: string, port: number, upstream: string): string {
  const temp = (name: string) => `${name}_temp_path ${join(dir, name)};`;
  return `daemon off;
master_process off;
worker_processes 1;
pid ${join(dir, "nginx.pid")};
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  ${["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map(temp).join("\n  ")}
  client_max_body_size 8m;
  upstream target { server ${upstream}; keepalive 256; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://target;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
`;
}

/**
 * Starts the nginx reference proxy (see nginxProxyConf) and waits until it answers. If nginx
 * exits first (a busy port, a config it refuses), rejects with what it said.
 */
export function startNginxProxy(binary: string, dir: string, port: number, upstream: string): Promise<ChildProcess> {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "nginx.conf"), nginxProxyConf(dir, port, upstream));
  const logPath = join(dir, "nginx.out");
  const child = spawnLogged(binary, ["-p", dir, "-c", join(dir, "nginx.conf"), "-e", "stderr"], logPath);
  return started(child, `http://127.0.0.1:${port}/health`, logPath, 10_000);
}

if (import.meta.main) {
  const [port, upstreamUrl] = (process.env.BENCH_BARE_PROXY ?? "").split(" ");
  if (!port || !upstreamUrl) {
    console.error('usage: BENCH_BARE_PROXY="<port> <upstream url>" node scripts/lib/reference-proxies.ts');
    process.exit(2);
  }
  await serveBareProxy(Number(port), upstreamUrl);
}
