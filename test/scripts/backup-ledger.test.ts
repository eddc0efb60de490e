import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../../scripts/backup-ledger.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import type { SignalHost } from "../../scripts/lib/interruption.ts";
import { loopbackServer } from "../support/shim-process.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

const TOKEN = "adm-backup-test-token";
const SQLITE_HEADER = Buffer.from("SQLite format 3\0");

/** A SQLite-looking body of `size` bytes. */
const ledgerBytes = (size: number) => Buffer.concat([SQLITE_HEADER, Buffer.alloc(size - SQLITE_HEADER.length, 7)]);

let servers: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const s of servers) await s.close();
  servers = [];
});

/** An admin API whose GET /admin/backup `answer` writes; counts the requests it got. */
async function fakeApi(answer: (res: ServerResponse) => void) {
  const seen = { requests: 0 };
  const server = await loopbackServer((req, res) => {
    seen.requests++;
    if (req.url !== "/admin/backup" || req.headers.authorization !== `Bearer ${TOKEN}`) return void res.writeHead(404).end();
    answer(res);
  });
  servers.push(server);
  return { url: server.url.replace(/\/v1$/, ""), seen };
}

async function run(url: string, argv: string[] = [], root = tempDir("backup-ledger-")) {
  const io = memoryIo();
  const code = await main(["--url", url, ...argv], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: TOKEN }, pulumi: new FakePulumi(), root, now: () => new Date(Date.UTC(2026, 2, 15, 12, 0, 0)) });
  return { code, io, root, out: io.stdout.join("\n"), err: io.stderr.join("\n") };
}

describe("npm run backup-ledger", () => {
  it("saves the answer whole, mode 0600, under the default name; says its path and size, and how far it is for a large file", async () => {
    const body = ledgerBytes(40 * 2 ** 20);
    const api = await fakeApi((res) => res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) }).end(body));
    const r = await run(api.url);
    expect(r.code, r.io.text()).toBe(0);
    const saved = join(r.root, "127.0.0.1-ledger-20260315T120000Z.db");
    expect(readdirSync(r.root)).toEqual(["127.0.0.1-ledger-20260315T120000Z.db"]);
    expect(readFileSync(saved).equals(body)).toBe(true);
    expect(statSync(saved).mode & 0o777).toBe(0o600);
    expect(r.out).toBe(`saved the ledger to ${saved} (${body.length} bytes, 40.0 MiB; mode 0600: it holds the keys' hashes)`);
    expect(r.err).toMatch(/downloading the ledger: \d+% \(\d+\.\d MiB of 40\.0 MiB\)/);
  });

  it("refuses to overwrite a file, before asking the shim for anything", async () => {
    const api = await fakeApi((res) => res.writeHead(500).end());
    const root = tempDir("backup-ledger-");
    writeFileSync(join(root, "old.db"), "yesterday's backup");
    const r = await run(api.url, ["--out", "old.db"], root);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(root, "old.db")} exists already: not overwritten; give another --out`);
    expect(readFileSync(join(root, "old.db"), "utf8")).toBe("yesterday's backup");
    expect(api.seen.requests).toBe(0);
  });

  it("a download cut off half way leaves no file, and says so", async () => {
    const body = ledgerBytes(4 * 2 ** 20);
    const api = await fakeApi((res) => {
      res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) });
      res.write(body.subarray(0, 2 ** 20), () => res.destroy());
    });
    const r = await run(api.url, ["--out", "cut.db"]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/the ledger's download from .* was cut off after \d+ of 4194304 bytes: .*nothing was saved, run it again/);
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("an answer that is not the ledger (another service's page) leaves no file", async () => {
    const api = await fakeApi((res) => res.writeHead(200, { "content-type": "text/html" }).end("<html>hello</html>"));
    const r = await run(api.url);
    expect(r.code).toBe(1);
    expect(r.err).toContain("GET /admin/backup");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("the shim's refusal (a Postgres ledger) is shown as it says it, and leaves no file", async () => {
    const api = await fakeApi((res) => res.writeHead(501, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "This shim's ledger is in Postgres: back it up with pg_dump or your provider's backups.", type: "invalid_request_error", param: null, code: "backup_not_supported" } })));
    const r = await run(api.url);
    expect(r.code).toBe(1);
    expect(r.err).toContain("admin API GET /admin/backup failed: 501 backup_not_supported: This shim's ledger is in Postgres: back it up with pg_dump");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("a shim older than the route (its own 404, Unknown route) is named as such, with the way to back up without it", async () => {
    const api = await fakeApi((res) => res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "Unknown route: GET /admin/backup", type: "invalid_request_error", param: null, code: "not_found" } })));
    const r = await run(api.url);
    expect(r.code).toBe(1);
    expect(r.err).toContain("admin API GET /admin/backup failed: 404 not_found: Unknown route: GET /admin/backup");
    expect(r.err).toContain("This tenant's shim is older than GET /admin/backup (2026-12-07): upgrade it (pulumi up with this checkout), or take this backup on the host");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("an answer that says it is the ledger, with its length, but is not a SQLite file, is not saved", async () => {
    const body = Buffer.alloc(64 * 1024, 7);
    const api = await fakeApi((res) => res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) }).end(body));
    const r = await run(api.url, ["--out", "not-sqlite.db"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("is not a SQLite file; nothing was saved");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("a file made at --out while the ledger downloads is not overwritten", async () => {
    const root = tempDir("backup-ledger-");
    const body = ledgerBytes(64 * 1024);
    // Made once the request arrives: after the script checked --out, before it links the download there.
    const api = await fakeApi((res) => {
      writeFileSync(join(root, "race.db"), "made meanwhile");
      res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) }).end(body);
    });
    const r = await run(api.url, ["--out", "race.db"], root);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(root, "race.db")} was made while the ledger downloaded; not overwritten: give another --out`);
    expect(readFileSync(join(root, "race.db"), "utf8")).toBe("made meanwhile");
    expect(readdirSync(root)).toEqual(["race.db"]);
  });

  it("Ctrl-C mid-download removes the partial file before the script exits 130", async () => {
    const body = ledgerBytes(4 * 2 ** 20);
    let answer: ServerResponse | undefined;
    const api = await fakeApi((res) => {
      answer = res;
      res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) });
      res.write(body.subarray(0, 2 ** 20));
    });
    const root = tempDir("backup-ledger-");
    const handlers = new Map<string, (signal: NodeJS.Signals) => void>();
    const exits: number[] = [];
    const signals: SignalHost = { on: (e, l) => void handlers.set(e, l), off: (e) => void handlers.delete(e), exit: (code) => void exits.push(code) };
    const io = memoryIo();
    const done = main(["--url", api.url, "--out", "cut.db"], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: TOKEN }, pulumi: new FakePulumi(), root, signals });
    await vi.waitFor(() => expect(readdirSync(root).some((n) => n.endsWith(".partial"))).toBe(true), { timeout: 10_000, interval: 20 });
    handlers.get("SIGINT")!("SIGINT");
    expect(exits).toEqual([130]);
    expect(readdirSync(root)).toEqual([]);
    answer!.destroy(); // the exit above is the test's: let the download end
    expect(await done).toBe(1);
    expect(readdirSync(root)).toEqual([]);
  });

  it("--help says what it does and where it writes", async () => {
    const io = memoryIo();
    expect(await main(["--help"], { io, env: {}, pulumi: new FakePulumi(), root: tempDir("backup-ledger-") })).toBe(0);
    expect(io.stdout.join("\n")).toMatch(/^Usage: npm run backup-ledger -- \(--stack <name> \| --url <base URL>\) \[--out <file>\]/);
    expect(io.stdout.join("\n")).toContain("never overwritten");
  });
});
