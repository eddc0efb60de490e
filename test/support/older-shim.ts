import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";

/** A key as GET /admin/keys lists it, for a fake admin API. */
export const LISTED_KEY = { id: "AAAAAAAAAAAA", object: "api_key", name: "team-07", tier: "free", models: null, balance: 1, held: 0, credits_remaining: 1, requests_in_flight: 0, created_at: "2026-01-01T00:00:00.000Z", expires_at: null, revoked_at: null };

/**
 * A shim of before a route that manage-keys uses: GET /admin/keys lists LISTED_KEY, and every other
 * request gets what `refuse` says that shim answered (its status, headers and error object).
 */
export async function olderShim(refuse: (req: IncomingMessage) => { status: number; headers?: Record<string, string>; message: string; code: string }): Promise<{ url: string; close(): void }> {
  const server = createServer((req, res) => {
    req.resume();
    if (req.method === "GET") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [LISTED_KEY] }));
    const { status, headers = {}, message, code } = refuse(req);
    res.writeHead(status, { "content-type": "application/json", ...headers }).end(JSON.stringify({ error: { message, type: "invalid_request_error", param: null, code } }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}
