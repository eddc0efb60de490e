import type { IncomingMessage, ServerResponse } from "node:http";
import { afterEach } from "vitest";
import { startShim, type Harness, type HarnessOptions } from "./shim-harness.ts";
import { loopbackServer } from "./shim-process.ts";
import { pollUntil } from "./tools.ts";

/**
 * A shim per test in front of a scripted upstream, and a client that leaves once its request got
 * somewhere: what the tests of a request cut short (by its client, a drain, a failure) set up.
 */

export interface CountingUpstream {
  url: string;
  /** How many requests have reached it. */
  received(): number;
  close(): Promise<void>;
}

/** A loopback upstream that runs `handle` on each request and counts them. */
export async function countingUpstream(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<CountingUpstream> {
  let received = 0;
  const server = await loopbackServer((req, res) => {
    received++;
    handle(req, res);
  });
  return { ...server, received: () => received };
}

/**
 * For a describe block: the function it returns starts a shim (in front of `upstream` when one is
 * given, through SHIM_UPSTREAM_URL); that shim and upstream are closed after each test.
 */
export function shimPerTest(): (options: HarnessOptions, upstream?: CountingUpstream) => Promise<Harness> {
  let h: Harness | undefined;
  let u: CountingUpstream | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
    await u?.close();
    u = undefined;
  });
  return async (options, upstream) => {
    u = upstream;
    h = await startShim(upstream ? { ...options, env: { ...options.env, SHIM_UPSTREAM_URL: upstream.url } } : options);
    return h;
  };
}

/** For postAndLeave: true once `count` (an upstream's requests) has risen past what it is now. */
export function oneMore(count: () => number): () => boolean {
  const before = count();
  return () => count() > before;
}

/**
 * POSTs `body` to the chat route with `key` and hangs up `afterMs` after `reached` holds (polled):
 * a fixed delay from the POST instead was sometimes shorter than the admission on a loaded machine,
 * and the request was then dropped before it was sent (another path). Resolves once the client's
 * side is over.
 */
export async function postAndLeave(h: Harness, key: string, body: object, reached: () => boolean | Promise<boolean>, afterMs = 50): Promise<void> {
  const ac = new AbortController();
  const answer = fetch(`${h.url}/v1/chat/completions`, { method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" }, body: JSON.stringify(body), signal: ac.signal })
    .then((r) => r.text())
    .catch(() => undefined);
  await pollUntil(reached, 10_000, 5);
  setTimeout(() => ac.abort(), afterMs);
  await answer;
}
