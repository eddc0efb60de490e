import { request } from "node:http";
import type { Harness } from "./shim-harness.ts";
import { pollUntil } from "./tools.ts";

/**
 * A chat request to the shim whose headers go first (the auth hook reads the key row on them)
 * and whose body follows once `between` has run: what a key change does to a request that
 * authenticated before it and is not held yet. Straight to the shim (nginx would buffer the
 * body and send the headers with it). Its status.
 *
 * `between` runs once the auth hook has passed, seen by what the shim shows next: its body's
 * Content-Length taken from the body memory (shim_body_memory_bytes), which the preParsing hook
 * does after authentication, before any of the body is read. Not after a fixed 300 ms: on a
 * loaded machine the hook had not run yet, read the changed row itself and refused the request
 * with the same status, and the hold's own reading of the row went untested.
 */
export async function slowBody(h: Harness, key: string, between: () => Promise<void>): Promise<number> {
  const body = JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
  const u = new URL(`${h.url}/v1/chat/completions`);
  const before = h.app.shim.bodyMemory.inUse;
  const req = request({ host: u.hostname, port: u.port, path: u.pathname, method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "content-length": Buffer.byteLength(body) } });
  let answered: number | undefined;
  const status = new Promise<number>((resolve, reject) => {
    req.on("response", (r) => { r.resume(); resolve((answered = r.statusCode!)); });
    req.on("error", reject);
  });
  req.flushHeaders();
  if (!(await bodyHeld(h, before, Buffer.byteLength(body), () => answered !== undefined))) {
    status.catch(() => {}); // the destroyed request's error: what is thrown below says it
    req.destroy();
    throw new Error(`slowBody: ${answered === undefined ? "no body memory taken" : `answered ${answered} before its body was sent`}: the auth hook did not pass it, so \`between\` would come after what it is meant to precede`);
  }
  await between();
  req.end(body);
  return status;
}

/**
 * Whether a request with a Content-Length of `bytes` has passed the shim's auth hook: the body
 * memory (shim_body_memory_bytes) holds `bytes` more than `before`, taken by the preParsing hook
 * that runs next, before any of the body is read. False once `answered` (refused by the hook), or
 * after 20 s, a bound that only ends a wait that will never end.
 */
export async function bodyHeld(h: Harness, before: number, bytes: number, answered: () => boolean = () => false): Promise<boolean> {
  const held = () => h.app.shim.bodyMemory.inUse >= before + bytes;
  await pollUntil(() => held() || answered(), 20_000, 5);
  return held();
}
