import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import type { KeyHistory } from "../../scripts/lib/key-history.ts";
import { manualClock } from "../support/clocks.ts";
import { LISTED_KEY } from "../support/older-shim.ts";
import { DEFAULT_FILE, startShim, type Harness } from "../support/shim-harness.ts";
import { runManageKeys } from "./run-manage-keys.ts";

/**
 * `manage-keys history --key`: when a key was created, changed (what, from what to what), rotated
 * and revoked, and by which admin request; `list` says when a revoked key was revoked.
 */
const stackKey = generateKey();
const clock = manualClock(Date.UTC(2026, 11, 7, 14, 0, 0));
let h: Harness;
beforeAll(async () => {
  h = await startShim({ clock, file: { ...DEFAULT_FILE, tiers: { developer: { rpm: 100, tpm: 100000 }, pro: { rpm: 100, tpm: 100000 } }, bootstrapKeys: [{ id: stackKey.id, name: "from-stack", hash: stackKey.hash, credits: 5, tier: "developer" }] } });
});
afterAll(() => h.close());

const keys = async (argv: string[]) => {
  const r = await runManageKeys(h, [...argv, "--url", h.url]);
  for (const key of r.out.match(/sk-gs-\S+/g) ?? []) h.secrets.add(key);
  return r;
};

describe("manage-keys history", () => {
  it("a table of the key's events, oldest first, with what changed and each admin request's id; --json is the API's; list shows when it was revoked", async () => {
    expect((await keys(["create", "--name", "team-07", "--credits", "5", "--tier", "developer", "--models", "qwen2.5-7b"])).code).toBe(0);
    clock.advance(120_000);
    expect((await keys(["update", "--key", "team-07", "--tier", "pro", "--all-models", "--expires-at", "2027-01-31"])).code).toBe(0);
    clock.advance(60_000);
    expect((await keys(["update", "--key", "team-07", "--name", "team-7"])).code).toBe(0);
    clock.advance(60_000);
    expect((await keys(["rotate", "--key", "team-7"])).code).toBe(0);
    clock.advance(60_000);
    expect((await keys(["revoke", "--key", "team-7"])).code).toBe(0);

    const json = await keys(["history", "--key", "team-7", "--json"]);
    expect(json.code, json.err).toBe(0);
    const history = JSON.parse(json.out) as KeyHistory;
    const ids = history.data.map((e) => e.request_id!);
    expect(ids.every((id) => /^[0-9a-f-]{36}$/.test(id))).toBe(true);

    const r = await keys(["history", "--key", "team-7"]);
    expect(r.code, r.err).toBe(0);
    const lines = r.out.split("\n");
    expect(lines[0]).toBe(`History of key team-7 (${history.key_id}), oldest first; times UTC.`);
    expect(lines[1]).toBe("");
    expect(lines[2]).toMatch(/^TIME +EVENT +CHANGES +REQUEST$/);
    expect(lines.slice(3).map((l) => l.split(/ {2,}/))).toEqual([
      ["2026-12-07T14:00:00Z", "created", "tier developer; models qwen2.5-7b; expires never", ids[0]],
      ["2026-12-07T14:02:00Z", "updated", "tier developer → pro; models qwen2.5-7b → all; expires never → 2027-01-31T00:00:00Z", ids[1]],
      ["2026-12-07T14:03:00Z", "updated", "name changed", ids[2]],
      ["2026-12-07T14:04:00Z", "rotated", "new secret (the old one gets 401)", ids[3]],
      ["2026-12-07T14:05:00Z", "revoked", "stopped working (401)", ids[4]],
    ]);
    expect(r.out).not.toContain("team-07"); // the old name is not kept

    const list = await keys(["list"]);
    const header = list.out.split("\n")[0]!;
    expect(header).toMatch(/ +CREATED +EXPIRES +REVOKED +STATUS +SOURCE$/);
    const row = list.out.split("\n").find((l) => l.startsWith(history.key_id))!;
    expect(row.slice(header.indexOf("REVOKED")).split(/ +/).slice(0, 2)).toEqual(["2026-12-07T14:05:00Z", "revoked"]);
    const stackRow = list.out.split("\n").find((l) => l.startsWith(stackKey.id))!;
    expect(stackRow.slice(header.indexOf("REVOKED")).split(/ +/).slice(0, 2)).toEqual(["-", "active"]);
  });

  it("a name a new key took after the ticket's key was revoked: the key in use's history, and the revoked one's id to ask for", async () => {
    const revoked = JSON.parse((await keys(["list", "--json"])).out).find((k: { name: string }) => k.name === "team-7") as { id: string };
    clock.advance(60_000);
    expect((await keys(["create", "--name", "team-7", "--credits", "5", "--tier", "developer"])).code).toBe(0);
    const r = await keys(["history", "--key", "team-7"]);
    expect(r.code, r.err).toBe(0);
    const current = /^History of key team-7 \((\w{12})\)/.exec(r.out)![1]!;
    expect(current).not.toBe(revoked.id);
    expect(r.err).toContain(`This is the history of ${current}, the key in use named team-7; other keys have that name: ${revoked.id} (revoked 2026-12-07T14:05:00Z). Give an id (history --key <id>) for that key's history.`);
    // By id: that key's alone, nothing said of the others; --json's stdout stays the API's answer.
    const byId = await keys(["history", "--key", revoked.id, "--json"]);
    expect([byId.code, (JSON.parse(byId.out) as KeyHistory).key_id, byId.err]).toEqual([0, revoked.id, ""]);
  });

  it("a stack key's creation came from the shim's start, not a request", async () => {
    const r = await keys(["history", "--key", "from-stack"]);
    expect(r.code, r.err).toBe(0);
    expect(r.out.split("\n").at(-1)).toMatch(/^\S+ +created +tier developer; models all; expires never +\(shim start\)$/);
  });

  it("a key made before the shim kept histories: said, no made-up creation", async () => {
    const history: KeyHistory = { object: "list", key_id: LISTED_KEY.id, complete: false, data: [] };
    const old = await fakeShim(200, history);
    try {
      const r = await runManageKeys(h, ["history", "--url", old.url, "--key", "team-07"]);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toBe(`History of key team-07 (AAAAAAAAAAAA), oldest first; times UTC.\n` +
        "Kept since the shim's upgrade that added key histories: the key was created 2026-01-01T00:00:00Z, before it, and changes before the upgrade are not recorded.\nNo changes recorded since.");
    } finally {
      old.close();
    }
  });

  it("a history from the creation that is not complete (a change made by the previous version): said, the events shown", async () => {
    const created = { object: "key_event", event: "created", at: "2026-12-07T10:00:00.000Z", request_id: "r1", changes: [{ field: "tier", to: "developer" }, { field: "models", to: null }, { field: "expires_at", to: null }] };
    const old = await fakeShim(200, { object: "list", key_id: LISTED_KEY.id, complete: false, data: [created] });
    try {
      const r = await runManageKeys(h, ["history", "--url", old.url, "--key", "team-07"]);
      expect(r.code, r.err).toBe(0);
      expect(r.out.split("\n").slice(0, 2)).toEqual(["History of key team-07 (AAAAAAAAAAAA), oldest first; times UTC.",
        "Not complete: the key was changed by a shim without key histories (the previous version, run again for a while), and that change is not recorded; `manage-keys list` shows the key as it is now."]);
      expect(r.out).toMatch(/created +tier developer; models all; expires never +r1$/m);
    } finally {
      old.close();
    }
  });

  it("a shim older than the route: says to upgrade it (exit 4); usage mistakes are refused before anything is sent", async () => {
    const old = await fakeShim(404, { error: { message: "Unknown route: GET /admin/keys/AAAAAAAAAAAA/events", type: "invalid_request_error", param: null, code: "not_found" } });
    try {
      const r = await runManageKeys(h, ["history", "--url", old.url, "--key", "team-07"]);
      expect(r.code).toBe(4);
      expect(r.lastLine).toMatch(/^this shim predates `history` \(GET \/admin\/keys\/\{id\}\/events\): upgrade it \(pulumi up\)/);
    } finally {
      old.close();
    }
    expect((await keys(["history"])).err).toMatch(/--key is required/);
    expect((await keys(["history", "--key", "x", "--tier", "pro"])).err).toMatch(/^--tier does not go with history; history takes: --key$/m);
    expect((await keys(["histroy", "--key", "x"])).err).toMatch(/"histroy" is not a command\. Did you mean history\?/);
    const none = await keys(["history", "--key", "no-such-key"]);
    expect([none.code, none.lastLine]).toEqual([4, expect.stringMatching(/^--key "no-such-key": no key with that id or name/)]);
    const help = await runManageKeys(h, ["--help"]);
    expect(help.out).toMatch(/^ {2}history +--key <id\|name> /m);
  });
});

/** A shim that lists LISTED_KEY and answers its history request with `status` and `body`. */
async function fakeShim(status: number, body: unknown): Promise<{ url: string; close(): void }> {
  const server = createServer((req, res) => {
    req.resume();
    const answer = req.url === "/admin/keys" ? { object: "list", data: [LISTED_KEY] } : body;
    res.writeHead(req.url === "/admin/keys" ? 200 : status, { "content-type": "application/json" }).end(JSON.stringify(answer));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() };
}
