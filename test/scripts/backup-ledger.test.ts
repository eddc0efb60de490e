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
    // One line a tenth at most, in order, none once it is all there (the saved line says that).
    const tenths = r.io.stderr.flatMap((l) => /^downloading the ledger: (\d+)%/.exec(l)?.[1] ?? []).map(Number);
    expect(tenths.length).toBeGreaterThan(0);
    expect(tenths.length).toBeLessThanOrEqual(9);
    expect(tenths).toEqual([...new Set(tenths)].sort((a, b) => a - b));
    expect(tenths.every((t) => t % 10 === 0 && t > 0 && t < 100)).toBe(true);
  });

  it("with --stack, the default name is the stack's, and the URL and token come from its outputs", async () => {
    const body = ledgerBytes(64 * 1024);
    const api = await fakeApi((res) => res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) }).end(body));
    const root = tempDir("backup-ledger-");
    const io = memoryIo();
    const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${api.url}/v1`, adminToken: TOKEN } } });
    const code = await main(["--stack", "acme"], { io, env: {}, pulumi, root, now: () => new Date(Date.UTC(2026, 2, 15, 12, 0, 0)) });
    expect(code, io.text()).toBe(0);
    expect(readdirSync(root)).toEqual(["acme-ledger-20260315T120000Z.db"]);
    expect(readFileSync(join(root, "acme-ledger-20260315T120000Z.db")).equals(body)).toBe(true);
  });

  it("--json prints only the file's absolute path and size on stdout, for a pipeline's next step; progress stays on stderr", async () => {
    const body = ledgerBytes(64 * 1024);
    const api = await fakeApi((res) => res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) }).end(body));
    const r = await run(api.url, ["--json"]);
    expect(r.code, r.io.text()).toBe(0);
    const saved = JSON.parse(r.out) as { path: string; bytes: number };
    expect(saved).toEqual({ path: join(r.root, "127.0.0.1-ledger-20260315T120000Z.db"), bytes: body.length });
    expect(readFileSync(saved.path).equals(body)).toBe(true);
    expect(r.err).toContain("asking http://127.0.0.1:");
  });

  it("a body that arrives in pieces smaller than SQLite's 16-byte header is saved whole", async () => {
    const body = ledgerBytes(64 * 1024);
    const api = await fakeApi(async (res) => {
      res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) });
      for (let at = 0; at < 16; at += 4) {
        res.write(body.subarray(at, at + 4));
        await new Promise((r) => setTimeout(r, 30)); // each piece its own read
      }
      res.end(body.subarray(16));
    });
    const r = await run(api.url, ["--out", "pieces.db"]);
    expect(r.code, r.io.text()).toBe(0);
    expect(readFileSync(join(r.root, "pieces.db")).equals(body)).toBe(true);
  });

  it("refuses to overwrite a file, before asking the shim for anything", async () => {
    const api = await fakeApi((res) => res.writeHead(500).end());
    const root = tempDir("backup-ledger-");
    writeFileSync(join(root, "old.db"), "yesterday's backup");
    const r = await run(api.url, ["--out", "old.db"], root);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`${join(root, "old.db")} exists already: not overwritten; give another --out`);
    expect(readFileSync(join(root, "old.db"), "utf8")).toBe("yesterday's backup");
    expect(api.seen.requests).toBe(0);
  });

  it("refuses an --out it cannot write, before asking the shim for anything: an empty one, one in a directory that does not exist", async () => {
    const api = await fakeApi((res) => res.writeHead(500).end());
    const root = tempDir("backup-ledger-");
    const missing = await run(api.url, ["--out", "no-such-dir/acme.db"], root);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain(`${join(root, "no-such-dir")} does not exist: make it first, or give another --out`);
    const empty = await run(api.url, ["--out", ""], root);
    expect(empty.code).toBe(2);
    expect(empty.err).toContain("--out needs a file name");
    expect(readdirSync(root)).toEqual([]);
    expect(api.seen.requests).toBe(0);
  });

  it("a download cut off half way leaves no file, and says so", async () => {
    const body = ledgerBytes(4 * 2 ** 20);
    const api = await fakeApi((res) => {
      res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) });
      res.write(body.subarray(0, 2 ** 20), () => res.destroy());
    });
    const r = await run(api.url, ["--out", "cut.db"]);
    expect(r.code).toBe(5);
    expect(r.err).toMatch(/the ledger's download from .* was cut off after \d+ of 4194304 bytes: .*nothing was saved, run it again/);
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("an answer that is not the ledger (another service's page) leaves no file, and says what came instead", async () => {
    const page = "<html>hello</html>";
    const api = await fakeApi((res) => res.writeHead(200, { "content-type": "text/html", "content-length": String(page.length) }).end(page));
    const r = await run(api.url);
    expect(r.code).toBe(4);
    expect(r.err).toContain("admin API GET /admin/backup answered 200 but not with the ledger as a SQLite file with its Content-Length (<html>hello</html>); is --url the tenant's endpoint?");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("the ledger without its Content-Length (a proxy that re-chunks it) is refused, saying so: its arrival whole could not be checked", async () => {
    const body = ledgerBytes(64 * 1024);
    const api = await fakeApi((res) => {
      res.writeHead(200, { "content-type": "application/vnd.sqlite3", "transfer-encoding": "chunked" });
      res.end(body);
    });
    const r = await run(api.url);
    expect(r.code).toBe(4);
    expect(r.err).toContain("admin API GET /admin/backup answered 200 but not with the ledger as a SQLite file with its Content-Length");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("the shim's refusal (a Postgres ledger) is shown as it says it, and leaves no file", async () => {
    const api = await fakeApi((res) => res.writeHead(501, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "This shim's ledger is in Postgres: back it up with pg_dump or your provider's backups.", type: "invalid_request_error", param: null, code: "backup_not_supported" } })));
    const r = await run(api.url);
    expect(r.code).toBe(4);
    expect(r.err).toContain("admin API GET /admin/backup failed: 501 backup_not_supported: This shim's ledger is in Postgres: back it up with pg_dump");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("the shim's 507 (no room on its volume for the backup) is refused, exit 4, not an unknown outcome: nothing was made, and the same command fails again until there is room", async () => {
    const api = await fakeApi((res) => res.writeHead(507, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "Not enough free space on the ledger's volume for a backup.", type: "api_error", param: null, code: "backup_no_room" } })));
    const r = await run(api.url);
    expect(r.code, r.err).toBe(4);
    expect(r.err).toContain("admin API GET /admin/backup failed: 507 backup_no_room: Not enough free space on the ledger's volume for a backup.");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("a shim older than the route (its own 404, Unknown route) is named as such, with the way to back up without it", async () => {
    const api = await fakeApi((res) => res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "Unknown route: GET /admin/backup", type: "invalid_request_error", param: null, code: "not_found" } })));
    const r = await run(api.url);
    expect(r.code).toBe(4);
    expect(r.err).toContain("admin API GET /admin/backup failed: 404 not_found: Unknown route: GET /admin/backup");
    expect(r.err).toContain("This tenant's shim is older than GET /admin/backup (2026-12-07): take this backup on the host as docs/operations.md");
    // The backup before an upgrade is the one a rollback needs: the script must not send the operator to upgrade first.
    expect(r.err).toContain("Before upgrading it, back up that way first");
    expect(r.err).not.toContain("pulumi up");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("a 404 that is not the shim's own (another server's page at that URL) is not blamed on an older shim", async () => {
    const api = await fakeApi((res) => res.writeHead(404, { "content-type": "text/html" }).end("<html><center>404 Not Found</center><hr><center>nginx</center></html>"));
    const r = await run(api.url);
    expect(r.code).toBe(4);
    expect(r.err).toContain("GET /admin/backup");
    expect(r.err).not.toContain("older than GET /admin/backup");
    expect(readdirSync(r.root)).toEqual([]);
  });

  it("an answer that says it is the ledger, with its length, but is not a SQLite file, is not saved", async () => {
    const body = Buffer.alloc(64 * 1024, 7);
    const api = await fakeApi((res) => res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) }).end(body));
    const r = await run(api.url, ["--out", "not-sqlite.db"]);
    expect(r.code).toBe(4);
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
    expect(r.code).toBe(2);
    expect(r.err).toContain(`${join(root, "race.db")} was made while the ledger downloaded; not overwritten: give another --out`);
    expect(readFileSync(join(root, "race.db"), "utf8")).toBe("made meanwhile");
    expect(readdirSync(root)).toEqual(["race.db"]);
  });

  it.each(["SIGINT", "SIGTERM"] as const)("%s mid-download (Ctrl-C, a scheduler's stop) removes the partial file before the script exits 130", async (signal) => {
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
    // Bytes in the partial file: the script has it (and its removal) by then, not only the file system.
    await vi.waitFor(() => expect(readdirSync(root).some((n) => n.endsWith(".partial") && statSync(join(root, n)).size > 0)).toBe(true), { timeout: 10_000, interval: 20 });
    handlers.get(signal)!(signal);
    expect(exits).toEqual([130]);
    expect(readdirSync(root)).toEqual([]);
    answer!.destroy(); // the exit above is the test's: let the download end
    expect(await done).toBe(5);
    expect(readdirSync(root)).toEqual([]);
  });

  it("--help says what it does and where it writes", async () => {
    const io = memoryIo();
    expect(await main(["--help"], { io, env: {}, pulumi: new FakePulumi(), root: tempDir("backup-ledger-") })).toBe(0);
    expect(io.stdout.join("\n")).toMatch(/^Usage: npm run backup-ledger -- \(--stack <name> \| --url <base URL>\) \[--out <file>\]/);
    expect(io.stdout.join("\n")).toContain("never overwritten");
  });
});
