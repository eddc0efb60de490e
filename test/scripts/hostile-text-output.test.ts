// The operator scripts printing text that came from a customer through the admin API: a key's name
// stored by a shim from before names refused C1 controls and bidi overrides, or an answer from
// whatever stands at the URL. Run as the operator runs them (a child process writing to its stdout),
// against an admin API that answers such a name.
import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tempDir } from "../support/tools.ts";

/** What a terminal acts on: CSI as C1 and as ESC [, a lone CR (the line written over), and a right-to-left override. */
const HOSTILE = "evil\u009b2J\u001b]0;owned\u0007\r\u202eanalp";
const key = {
  id: "AAAAAAAAAAAA", object: "api_key", name: HOSTILE, tier: "free", models: null, balance: 10, held: 0, credits_remaining: 10, requests_in_flight: 0,
  from_configuration: false, created_at: "2026-01-01T00:00:00.000Z", expires_at: null, revoked_at: null,
};

let server: Server;
let url: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    if (req.method === "GET" && req.url === "/admin/keys") res.end(JSON.stringify({ object: "list", data: [key] }));
    else res.writeHead(404).end(JSON.stringify({ error: { message: `No key named ${HOSTILE}.`, type: "invalid_request_error", param: null, code: "not_found" } }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function manageKeys(argv: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  const file = fileURLToPath(new URL("../../scripts/manage-keys.ts", import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [file, ...argv, "--url", url], { cwd: tempDir(), env: { PATH: process.env.PATH, GPU_SANDBOX_ADMIN_TOKEN: "t".repeat(32) }, timeout: 60_000 },
      (_err, stdout, stderr) => resolve({ stdout, stderr }));
  });
}

/** Anything a terminal would act on, but the tab and line feed (and a CRLF line's end) of plain text. */
const ACTING = /(?!\t|\n|\r\n)[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe("a key's name holding terminal escapes and a bidi override", () => {
  it("manage-keys list prints it escaped, so it cannot rewrite the operator's terminal or reorder the row", async () => {
    const { stdout, stderr } = await manageKeys(["list"]);
    expect(stderr).toBe("");
    expect(stdout).not.toMatch(ACTING);
    expect(stdout).toContain("evil\\u009b2J\\u001b]0;owned\\u0007\\u000d\\u202eanalp");
    // The row keeps its columns after the name.
    expect(stdout.split("\n")[1]).toMatch(/^AAAAAAAAAAAA +evil\S+ +free +10 +0 +0 +10 +all /);
    // And its columns stay under their headers: the name is as wide as it is shown, escaped.
    const [header, row] = stdout.split("\n") as [string, string];
    expect(row.indexOf(" free ") + 1).toBe(header.indexOf("TIER"));
  });

  it("manage-keys list --json stays valid JSON that reads back as the name the API gave", async () => {
    const { stdout } = await manageKeys(["list", "--json"]);
    expect(stdout).not.toMatch(ACTING);
    expect((JSON.parse(stdout) as { name: string }[])[0]!.name).toBe(HOSTILE);
  });

  it("an error the API answers, quoting it, reaches the terminal escaped too", async () => {
    const { stderr } = await manageKeys(["revoke", "--key", "AAAAAAAAAAAB"]);
    expect(stderr).not.toBe("");
    expect(stderr).not.toMatch(ACTING);
  });
});
