// The operator scripts' exit codes, as a CI job sees them: each script run as a child process
// (npm runs it so), its code read from the exit. A pipeline branches on them: 3 run it again,
// 4 fix the command, 5 retry only as the error says (docs/operations.md, "From a CI pipeline").
import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXIT_CODES_USAGE } from "../../scripts/lib/exit-codes.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";

let h: Harness;
beforeAll(async () => {
  h = await startShim();
});
afterAll(() => h.close());

interface Exit {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** `npm run <script> -- argv`, as node runs it, in `cwd`, with only `env` of ours (and PATH, for node). */
function run(script: string, argv: readonly string[], env: NodeJS.ProcessEnv = {}, cwd = tempDir()): Promise<Exit> {
  const file = fileURLToPath(new URL(`../../scripts/${script}.ts`, import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...argv], { cwd, env: { PATH: process.env.PATH, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

const admin = () => ({ GPU_SANDBOX_ADMIN_TOKEN: h.adminToken });

/** A port with nothing listening on it: a server's, closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * The shim behind a front that reads the POSTs after the first `passed` and closes their
 * connection without an answer: a create sent, its answer lost (the API may have acted).
 */
async function losingFront(passed: number): Promise<{ url: string; close(): void }> {
  const up = new URL(h.url);
  let posts = 0;
  const server: Server = createServer((req, res) => {
    if (req.method === "POST" && ++posts > passed) {
      req.resume();
      req.on("end", () => req.socket.destroy());
      return;
    }
    const fwd = httpRequest({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, { ...r.headers, connection: "close" });
      r.pipe(res);
    });
    fwd.on("error", () => res.destroy());
    req.pipe(fwd);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => { server.close(); server.closeAllConnections(); } };
}

describe("exit codes", () => {
  it("0: done", async () => {
    const r = await run("manage-keys", ["create", "--url", h.url, "--name", "exit-ok", "--credits", "5"], admin());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("Created key exit-ok");
    expect((await run("manage-keys", ["list", "--url", h.url], admin())).code).toBe(0);
  });

  it.each([
    ["manage-keys", ["list", "--url", "http://127.0.0.1:1", "--bogus"]],
    ["manage-keys", ["top-up", "--url", "http://127.0.0.1:1", "--key", "a"]], // --amount missing
    ["manage-keys", ["list"]], // no target
    ["report-usage", ["--url", "http://127.0.0.1:1", "--group", "week"]],
    ["backup-ledger", ["--stak", "acme"]],
    ["list-tenants", ["--jsn"]],
    ["reap-expired", ["--concurrency", "0"]],
    ["rotate-admin-token", ["--stack", "acme", "--overlap", "1w"]],
    ["smoke-test", ["--url", "http://127.0.0.1:1"]], // no API key
    ["new-tenant", ["acme", "--region"]],
    ["render-stack", ["--bogus"]],
    ["render-stack", ["--stack", "no-such-stack"]],
  ])("2: bad usage, nothing sent: %s %j", async (script, argv) => {
    const r = await run(script, argv, admin());
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).not.toMatch(/\n\s+at /); // one message, no stack trace
  });

  it.each([
    ["manage-keys", ["list"]],
    ["manage-keys", ["top-up", "--key", "k", "--amount", "5", "--idempotency-key", "invoice-1"]],
    ["report-usage", ["--all"]],
    ["backup-ledger", ["--out", "ledger.db"]],
  ])("3: the admin API cannot be reached (a closed port), nothing sent: %s %j", async (script, argv) => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const r = await run(script, [...argv, "--url", url], admin());
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain("cannot reach the admin API");
  });

  it("3: refused only for now (nginx's 429 past the retries, another backup under way): its error says to run it again; the shim's 429 for wrong admin tokens is 4", async () => {
    const refusal = (message: string, code: string) => JSON.stringify({ error: { message, type: "rate_limit_exceeded", param: null, code } });
    const cases: [number, string, string, readonly string[], number][] = [
      [429, refusal("Too many requests from your address; retry after 1 second.", "rate_limit_exceeded"), "manage-keys", ["list"], 3],
      [409, refusal("A backup of the ledger is being made or sent already: one at a time. Try again once it is done.", "backup_in_progress"), "backup-ledger", ["--out", "ledger.db"], 3],
      [429, refusal("Rate limit exceeded. Try again in 1 second. Too many wrong admin tokens from this address (3 a minute): check the admin token you send.", "rate_limit_exceeded"), "manage-keys", ["list"], 4],
    ];
    for (const [status, body, script, argv, code] of cases) {
      // Retry-After 0: the admin client's retries of a 429 come at once.
      const server = createServer((req, res) => req.resume().on("end", () => res.writeHead(status, { "content-type": "application/json", "retry-after": "0" }).end(body)));
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      try {
        const r = await run(script, [...argv, "--url", `http://127.0.0.1:${(server.address() as AddressInfo).port}`], admin());
        expect(r.code, `${status} ${body}\n${r.stderr}`).toBe(code);
      } finally {
        server.close();
        server.closeAllConnections();
      }
    }
  });

  it("4: refused: a wrong admin token, a key that does not exist, a name in use", async () => {
    const token = await run("manage-keys", ["list", "--url", h.url], { GPU_SANDBOX_ADMIN_TOKEN: "not-the-token" });
    expect(token.code, token.stderr).toBe(4);
    expect(token.stderr).toContain("401");
    const unknown = await run("manage-keys", ["top-up", "--url", h.url, "--key", "no-such-key", "--amount", "5"], admin());
    expect(unknown.code, unknown.stderr).toBe(4);
    expect(unknown.stderr).toContain('--key "no-such-key": no key with that id or name');
    expect((await run("manage-keys", ["create", "--url", h.url, "--name", "exit-taken"], admin())).code).toBe(0);
    const taken = await run("manage-keys", ["create", "--url", h.url, "--name", "exit-taken"], admin());
    expect(taken.code, taken.stderr).toBe(4);
    expect(taken.stderr).toContain('a key named "exit-taken" is in use');
    const report = await run("report-usage", ["--url", h.url, "--all", "--key", "no-such-key"], admin());
    expect(report.code, report.stderr).toBe(4);
  });

  it("5: a write sent whose answer is lost (the connection closed on the POST): the error says it may have been applied", async () => {
    const front = await losingFront(0);
    try {
      const create = await run("manage-keys", ["create", "--url", front.url, "--name", "exit-lost", "--credits", "5"], admin());
      expect(create.code, create.stderr).toBe(5);
      expect(create.stderr).toContain('A key named "exit-lost" may have been created');
      const key = (await run("manage-keys", ["create", "--url", h.url, "--name", "exit-topped", "--credits", "5"], admin()));
      expect(key.code).toBe(0);
      const topUp = await run("manage-keys", ["top-up", "--url", front.url, "--key", "exit-topped", "--amount", "5"], admin());
      expect(topUp.code, topUp.stderr).toBe(5);
      expect(topUp.stderr).toContain("The top-up may have been applied. Retry it with the same Idempotency-Key");
    } finally {
      front.close();
    }
  });

  it("create --from stopped part way takes the code of the failure that stopped it: 5 for a lost answer, its keys made in the hand-out", async () => {
    const front = await losingFront(1);
    const root = tempDir();
    writeFileSync(join(root, "roster.csv"), "name\nexit-r1\nexit-r2\nexit-r3\n");
    try {
      const r = await run("manage-keys", ["create", "--url", front.url, "--from", "roster.csv", "--credits", "1", "--handout", "k.csv"], admin(), root);
      expect(r.code, r.stderr).toBe(5);
      expect(r.stderr).toContain("created 1/3: exit-r1");
      expect(r.stderr).toContain("Stopped at line 3 (exit-r2), 1 of 3 keys made");
    } finally {
      front.close();
    }
    // Unreachable part way is 3 (run it again: it makes the names without a key), a refusal 4.
    const closed = await run("manage-keys", ["create", "--url", `http://127.0.0.1:${await closedPort()}`, "--from", "roster.csv", "--handout", "k2.csv"], admin(), root);
    expect(closed.code, closed.stderr).toBe(3);
  });

  it.each(["backup-ledger", "list-tenants", "manage-keys", "new-tenant", "reap-expired", "render-stack", "report-usage", "rotate-admin-token", "smoke-test"])("%s --help lists the exit codes, exit 0", async (script) => {
    const r = await run(script, ["--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(EXIT_CODES_USAGE);
  });
});
