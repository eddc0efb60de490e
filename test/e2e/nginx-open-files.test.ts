import { get } from "node:http";
import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { renderBundle } from "../../infra/render/bundle.ts";
import { NGINX_HTTP_PORT, NGINX_HTTPS_PORT, NGINX_LOCAL_PORT } from "../../infra/render/compose.ts";
import { startNginx, type RunningNginx } from "../support/nginx.ts";

/**
 * The rendered nginx.conf under the open-file limit Docker Engine 29 starts containers with (soft
 * 1024): a worker still takes more connections than that. nginx alone: /healthz on port 80's
 * server answers without the shim. Ports of their own, so this file runs beside the other nginx
 * tests; above Linux's ephemeral range (32768-60999).
 */
const HTTP_PORT = 62400, HTTPS_PORT = 62401, LOCAL_PORT = 62402;
/** Idle client connections held open at once: past 1024, the soft limit a container gets. */
const HELD = 1500;

let nginx: RunningNginx;
const held: Socket[] = [];

beforeAll(async () => {
  const result = validateConfig({
    region: "us-ord", model: { id: "Qwen/Qwen2.5-7B-Instruct", servedName: "qwen2.5-7b" }, tls: { mode: "self-signed" },
  }, { stack: "open-files" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  const rendered = renderBundle(result.config, { images: result.config.images, bootstrapKeys: [] }).get("nginx/nginx.conf")!;
  // One worker: the limit is each worker's, and several would share the connections unevenly.
  expect(rendered).toContain("worker_processes auto;");
  nginx = await startNginx(rendered.replace("worker_processes auto;", "worker_processes 1;"), "127.0.0.1:9", [HTTP_PORT, HTTPS_PORT, LOCAL_PORT], {
    listen: new Map([[NGINX_HTTP_PORT, HTTP_PORT], [NGINX_HTTPS_PORT, HTTPS_PORT], [NGINX_LOCAL_PORT, LOCAL_PORT]]),
    // Soft 1024, the hard limit left as it is (Docker's is 524288; lowering it needs no privilege).
    launcher: ["prlimit", "--nofile=1024:"],
  });
});

afterAll(async () => {
  for (const socket of held) socket.destroy();
  await nginx?.stop();
});

function open(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(HTTP_PORT, "127.0.0.1");
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

function healthz(timeoutMs: number): Promise<string> {
  return new Promise((resolve) => {
    const req = get({ host: "127.0.0.1", port: HTTP_PORT, path: "/healthz", agent: false, timeout: timeoutMs }, (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => { body += chunk.toString(); });
      res.on("end", () => resolve(`${res.statusCode} ${body.trim()}`));
    });
    req.on("timeout", () => { req.destroy(); resolve("no answer"); });
    req.on("error", (err) => resolve(`error: ${err.message}`));
  });
}

it(`answers while one worker holds ${HELD} client connections under a soft open-file limit of 1024`, async () => {
  for (let i = 0; i < HELD; i += 100) {
    held.push(...await Promise.all(Array.from({ length: Math.min(100, HELD - i) }, open)));
  }
  // Accepted by now, or left in the listen queue by a worker out of files.
  await new Promise((r) => setTimeout(r, 500));
  expect(await healthz(3000)).toBe("200 ok");
  expect(nginx.output()).not.toMatch(/Too many open files|setrlimit/);
}, 30_000);
