import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A stand-in for the Linode API v4 on loopback (port 0), for what `list-tenants --linode` reads:
 * `GET /v4/linode/instances` and `GET /v4/volumes`, paged as Linode pages them (`page`,
 * `page_size` from 25 to 500, default 100; `{ data, page, pages, results }`), a bearer token
 * checked as Linode does (401 `Invalid Token`), and any answer a test scripts for a path (a 403
 * for a missing scope, a web page). It records every request.
 */
export interface FakeInstance {
  id: number;
  label: string;
  region: string;
  type: string;
  status: string;
  tags: string[];
  created: string;
}

export interface FakeVolume {
  id: number;
  label: string;
  region: string;
  size: number;
  status: string;
  tags: string[];
  linode_id: number | null;
  created: string;
}

export interface ScriptedAnswer {
  status: number;
  body: string;
  contentType?: string;
}

export interface FakeLinode {
  /** The address the Linode provider reads from LINODE_URL (no version: it appends `/v4`). */
  readonly url: string;
  readonly token: string;
  instances: FakeInstance[];
  volumes: FakeVolume[];
  /** The largest page served, whatever `page_size` asks (Linode's is 500; a test lowers it to page a few items). */
  maxPageSize: number;
  /** An answer for a path (`/v4/volumes`) instead of the collection. */
  answers: Map<string, ScriptedAnswer>;
  readonly requests: { path: string; query: URLSearchParams; authorization: string | undefined }[];
  close(): Promise<void>;
}

export async function startFakeLinode(token = "test-linode-token"): Promise<FakeLinode> {
  const fake: Omit<FakeLinode, "url" | "close"> = { token, instances: [], volumes: [], maxPageSize: 500, answers: new Map(), requests: [] };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://fake");
    fake.requests.push({ path: url.pathname, query: url.searchParams, authorization: req.headers.authorization });
    const send = (status: number, body: unknown, contentType = "application/json") => {
      res.writeHead(status, { "content-type": contentType });
      res.end(typeof body === "string" ? body : JSON.stringify(body));
    };
    const scripted = fake.answers.get(url.pathname);
    if (scripted) return send(scripted.status, scripted.body, scripted.contentType);
    if (req.headers.authorization !== `Bearer ${fake.token}`) return send(401, { errors: [{ reason: "Invalid Token" }] });
    const items = url.pathname === "/v4/linode/instances" ? fake.instances : url.pathname === "/v4/volumes" ? fake.volumes : undefined;
    if (req.method !== "GET" || items === undefined) return send(404, { errors: [{ reason: "Not found" }] });
    const size = Math.min(Number(url.searchParams.get("page_size") ?? 100), fake.maxPageSize);
    const pages = Math.max(1, Math.ceil(items.length / size));
    const page = Math.min(Number(url.searchParams.get("page") ?? 1), pages);
    send(200, { data: items.slice((page - 1) * size, page * size), page, pages, results: items.length });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(fake, {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

/** An instance as the kit makes it (infra/components/gpu-host.ts): label gs-<tenant>, tags gpu-sandbox and tenant:<tenant>. */
export function kitInstance(id: number, tenant: string, overrides: Partial<FakeInstance> = {}): FakeInstance {
  return { id, label: `gs-${tenant}`, region: "us-ord", type: "g2-gpu-rtx4000a1-s", status: "running", tags: ["gpu-sandbox", `tenant:${tenant}`], created: "2026-03-01T10:00:00", ...overrides };
}

/** The tenant's volume as the kit makes it: label gs-<tenant>-data, attached to its instance. */
export function kitVolume(id: number, tenant: string, linodeId: number | null, overrides: Partial<FakeVolume> = {}): FakeVolume {
  return { id, label: `gs-${tenant}-data`, region: "us-ord", size: 100, status: "active", tags: ["gpu-sandbox", `tenant:${tenant}`], linode_id: linodeId, created: "2026-03-01T10:01:00", ...overrides };
}
