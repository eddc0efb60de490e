import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, expect, it } from "vitest";
import { main } from "../../scripts/backup-ledger.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { FakePulumi } from "../scripts/fake-pulumi.ts";
import { type RenderedEdge, startRenderedEdge } from "../support/rendered-edge.ts";
import { tempDir } from "../support/tools.ts";

/**
 * `npm run backup-ledger` through the rendered nginx.conf (Debian's nginx, the real shim): the
 * admin location lets GET /admin/backup through from adminCidrs, streams it (no buffering to a
 * file of nginx's; its Content-Length kept, which the script checks), and the file saved is the
 * ledger. Ports of their own (62200-62202), so this file runs beside the other nginx tests.
 */
const HTTP_PORT = 62200;
const HTTPS_PORT = 62201;
const LOCAL_PORT = 62202;

let edge: RenderedEdge | undefined;

beforeAll(async () => {
  edge = await startRenderedEdge({
    stack: "backup",
    settings: { adminCidrs: ["127.0.0.1/32"] },
    ports: { http: HTTP_PORT, https: HTTPS_PORT, local: LOCAL_PORT },
  });
});

afterAll(() => edge?.close());

it("downloads the ledger through nginx from an adminCidrs address, whole and the same as the shim's", async () => {
  const shim = edge!.shim;
  await shim.createKey({ name: "team-b", credits: 3 });
  const root = tempDir("nginx-backup-");
  const io = memoryIo();
  const code = await main(["--url", `https://localhost:${HTTPS_PORT}`, "--out", "edge.db"], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: shim.adminToken }, pulumi: new FakePulumi(), root });
  expect(code, io.text()).toBe(0);
  expect(readdirSync(root)).toEqual(["edge.db"]);
  const db = new Database(join(root, "edge.db"), { readonly: true });
  try {
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    const names = (db.prepare("SELECT name FROM keys ORDER BY name").all() as { name: string }[]).map((k) => k.name);
    expect(names).toEqual(["backup", "team-b"]);
  } finally {
    db.close();
  }
  expect(io.stdout.join("\n")).toContain(`(${statSync(join(root, "edge.db")).size} bytes`);
}, 60_000);
