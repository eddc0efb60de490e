import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** What the front does with the shim's answer to one request. */
export type FrontAnswer =
  /** Pass it on. */
  | "forward"
  /** The shim acted; its answer never arrives (the connection drops, as on a network cut). */
  | "drop"
  /** The shim acted; the client gets a 504, as from nginx whose read timed out. */
  | "gateway-timeout"
  /** The shim never sees the request; the client gets a 502, as from nginx that cannot reach it. */
  | "bad-gateway"
  /** The shim never sees the request; the client gets nginx's per-address limit's 429 (error-pages.conf). */
  | "rate-limited"
  /** The shim never sees the request; the client gets this JSON answer (e.g. an older shim's refusal). */
  | { readonly status: number; readonly json: string };

export interface FrontProxy {
  /** http://127.0.0.1:<port>, standing in for the tenant's endpoint. */
  readonly url: string;
  readonly server: Server;
  /** Stops answering at once, as a host whose serving stack was stopped. */
  close(): void;
}

const RATE_LIMITED = '{"error":{"message":"Too many requests from your address; retry after 1 second.","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded","retry_after":1}}';

/**
 * An HTTP front to an upstream (the shim), like the tenant's nginx: it forwards every request,
 * and `answer(method, url)` decides what becomes of the upstream's answer.
 */
export async function frontProxy(upstream: string, answer: (method: string, url: string) => FrontAnswer = () => "forward"): Promise<FrontProxy> {
  const up = new URL(upstream);
  const server = createServer((req, res) => {
    const what = answer(req.method ?? "", req.url ?? "");
    if (what === "bad-gateway") {
      req.resume();
      res.writeHead(502, { "content-type": "text/html" }).end("<html>502 Bad Gateway</html>");
      return;
    }
    if (typeof what === "object") {
      req.resume();
      res.writeHead(what.status, { "content-type": "application/json" }).end(what.json);
      return;
    }
    if (what === "rate-limited") {
      req.resume();
      res.writeHead(429, { "content-type": "application/json", "retry-after": "1" }).end(RATE_LIMITED);
      return;
    }
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      if (what === "forward") {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
        return;
      }
      r.resume();
      r.on("end", () => (what === "drop" ? res.destroy() : res.writeHead(504, { "content-type": "text/html" }).end("<html>504 Gateway Time-out</html>")));
    });
    fwd.on("error", () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    server,
    close() {
      server.close();
      server.closeAllConnections();
    },
  };
}
