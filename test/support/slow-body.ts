import { request } from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import type { Harness } from "./shim-harness.ts";

/**
 * A chat request to the shim whose headers go first (the auth hook reads the key row on them)
 * and whose body follows once `between` has run: what a key change does to a request that
 * authenticated before it and is not held yet. Straight to the shim (nginx would buffer the
 * body and send the headers with it). Its status.
 */
export async function slowBody(h: Harness, key: string, between: () => Promise<void>): Promise<number> {
  const body = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
  const u = new URL(`${h.url}/v1/chat/completions`);
  const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "content-length": Buffer.byteLength(body) } });
  const status = new Promise<number>((resolve, reject) => {
    req.on("response", (r) => { r.resume(); resolve(r.statusCode!); });
    req.on("error", reject);
  });
  req.flushHeaders();
  await sleep(300); // the auth hook has read the key row
  await between();
  req.end(body);
  return status;
}
