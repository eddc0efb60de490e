// manage-keys write-off: credits taken off a key (a refund, expired credits, a revoked key's
// leftover) through POST /admin/keys/{id}/debits, against a real shim; shaped as top-up.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";
import { frontProxy } from "../support/front-proxy.ts";
import { LISTED_KEY, olderShim } from "../support/older-shim.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { runManageKeys } from "./run-manage-keys.ts";

let h: Harness;
beforeAll(async () => {
  h = await startShim();
});
afterAll(() => h.close());

const keys = (argv: string[], url = h.url) => runManageKeys(h, [argv[0]!, "--url", url, ...argv.slice(1)]);
const listed = async (id: string) => (JSON.parse((await keys(["list", "--json"])).out) as ApiKey[]).find((k) => k.id === id)!;

describe("manage-keys write-off", () => {
  it("takes the credits off once: the retry command first, a retry with its Idempotency-Key taking nothing more", async () => {
    const { id } = await h.createKey({ name: "refunded", credits: 10 });
    const first = await keys(["write-off", "--key", "refunded", "--amount", "2.5", "--note", "refund, credit note CN-7", "--idempotency-key", "cn-7"]);
    expect(first.code, first.err).toBe(0);
    expect(first.err).toBe(`Idempotency-Key: cn-7; to retry safely: npm run manage-keys -- write-off --url=${h.url} --key=${id} --amount=2.5 --note='refund, credit note CN-7' --idempotency-key=cn-7`);
    expect(first.out).toBe(`Wrote off 2.5 credits from refunded (${id}): balance 7.5, remaining 7.5.`);
    const retry = await keys(["write-off", "--key", id, "--amount", "2.5", "--note", "refund, credit note CN-7", "--idempotency-key", "cn-7"]);
    expect(retry.code, retry.err).toBe(0);
    expect(retry.out).toBe(`Already applied with this Idempotency-Key; nothing taken off now. Key refunded (${id}) had a balance of 7.5 right after it; now 7.5.`);
    expect((await listed(id)).balance).toBe(7.5);
    // A generated Idempotency-Key when none is given.
    const fresh = await keys(["write-off", "--key", id, "--amount", "0.5", "--note", "expired", "--json"]);
    expect(fresh.code, fresh.err).toBe(0);
    expect(fresh.err).toMatch(/^Idempotency-Key: writeoff-[0-9a-f-]{36}; to retry safely: /);
    expect(JSON.parse(fresh.out)).toMatchObject({ key_id: id, amount: 0.5, note: "expired", balance: 7, replayed: false });

    const conflict = await keys(["write-off", "--key", id, "--amount", "3", "--note", "refund, credit note CN-7", "--idempotency-key", "cn-7"]);
    expect(conflict.code).toBe(4);
    expect(conflict.lastLine).toBe(`The first write-off with Idempotency-Key cn-7 was applied to refunded (${id}); this one (--amount 3, --note 'refund, credit note CN-7') is a different request, so nothing was taken off now. ` +
      `Compare the key's balance (npm run manage-keys -- list --url=${h.url}); to write off these credits too, run it without --idempotency-key.`);
    expect((await listed(id)).balance).toBe(7);
  });

  it("a revoked key's leftover can be written off; never more than it has remaining", async () => {
    const { id } = await h.createKey({ name: "left-behind", credits: 4 });
    expect((await keys(["revoke", "--key", id])).code).toBe(0);
    const tooMuch = await keys(["write-off", "--key", id, "--amount", "4.5", "--note", "revoked"]);
    expect(tooMuch.code).toBe(4);
    expect(tooMuch.err).toContain("'amount' is more than the key's 4 credits available");
    expect(tooMuch.lastLine).toBe(`Nothing was written off; the key's remaining credits: npm run manage-keys -- list --url=${h.url}`);
    const all = await keys(["write-off", "--key", id, "--amount", "4", "--note", "revoked: leftover written off"]);
    expect(all.code, all.err).toBe(0);
    expect(all.out).toBe(`Wrote off 4 credits from left-behind (${id}): balance 0, remaining 0.`);
    expect((await listed(id)).balance).toBe(0);
  });

  it("a retry by name after a rotation to a namesake is refused, nothing taken off the new key; by id it replays", async () => {
    const old = await h.createKey({ name: "rotated-off", credits: 10 });
    const argv = ["--amount", "2", "--note", "refund, credit note CN-9", "--idempotency-key", "cn-9"];
    expect((await keys(["write-off", "--key", "rotated-off", ...argv])).code).toBe(0);
    expect((await keys(["revoke", "--key", old.id])).code).toBe(0);
    const fresh = await h.createKey({ name: "rotated-off", credits: 10 });
    // The same retry by name would reach the new key, a different key: a second write-off.
    const byName = await keys(["write-off", "--key", "rotated-off", ...argv]);
    expect(byName.code).toBe(4);
    expect(byName.err).toContain(`--key "rotated-off" names other keys too (${old.id}), revoked or not; with --idempotency-key give the id`);
    expect(byName.err).not.toContain("Idempotency-Key:");
    const byId = await keys(["write-off", "--key", old.id, ...argv]);
    expect(byId.code, byId.err).toBe(0);
    expect(byId.out).toContain("Already applied with this Idempotency-Key; nothing taken off now.");
    expect([(await listed(old.id)).balance, (await listed(fresh.id)).balance]).toEqual([8, 10]);
  });

  it("an answer lost after the shim acted: the last line says it may have been applied, with the one safe retry, which takes nothing twice", async () => {
    const { id } = await h.createKey({ name: "lost-write-off", credits: 10 });
    const front = await frontProxy(h.url, (method, url) => (method === "POST" && url.endsWith("/debits") ? "drop" : "forward"));
    try {
      const r = await keys(["write-off", "--key", id, "--amount", "3", "--note", "expired", "--idempotency-key", "lost-1"], front.url);
      expect(r.code).toBe(5);
      expect((await listed(id)).balance).toBe(7); // applied, though the operator never heard so
      const retry = `npm run manage-keys -- write-off --url=${front.url} --key=${id} --amount=3 --note=expired --idempotency-key=lost-1`;
      expect(r.lastLine).toBe(`The write-off may have been applied. Retry it with the same Idempotency-Key, which takes the credits off at most once: ${retry}`);
    } finally {
      front.close();
    }
    expect((await keys(["write-off", "--key", id, "--amount", "3", "--note", "expired", "--idempotency-key", "lost-1"])).out).toContain("Already applied");
    expect((await listed(id)).balance).toBe(7);
  });

  it.each([
    [["--key", "x", "--amount", "5"], "--note is required"],
    [["--key", "x", "--note", "why"], "--amount is required"],
    [["--key", "x", "--amount", "0", "--note", "why"], '--amount "0" must be a positive number of credits'],
    [["--amount", "1", "--note", "why"], "--key is required"],
    [["--key", "x", "--amount", "1", "--note", "why", "--idempotency-key="], "--idempotency-key is empty"],
    [["--key", "x", "--amount", "1", "--note", "a\u0007b"], "--note has"],
    [["--key", "x", "--amount", "1", "--note", "why", "--tier", "pro"], "--tier"],
  ])("refused before anything is sent: %j", async (argv, message) => {
    const r = await keys(["write-off", ...argv], "http://127.0.0.1:9"); // nothing listens: a request sent would fail otherwise
    expect(r.code).toBe(2);
    expect(r.err).toContain(message);
    expect(r.err).not.toContain("Idempotency-Key:");
  });

  it("a shim older than write-offs: one line saying so and what to do, nothing written off", async () => {
    const old = await olderShim((req) => ({ status: 404, message: `Unknown route: ${req.method} ${req.url}`, code: "not_found" }));
    try {
      const r = await keys(["write-off", "--key", LISTED_KEY.name, "--amount", "1", "--note", "refund"], old.url);
      expect(r.code).toBe(4);
      expect(r.lastLine).toBe("write-off refused: this tenant's shim is older than write-offs (POST /admin/keys/{id}/debits, 2026-12-07); nothing was written off. Upgrade it (pulumi up with this checkout), then run this again");
    } finally {
      old.close();
    }
  });

  it("--help lists it", async () => {
    const r = await keys(["--help"]);
    expect(r.out).toMatch(/^ {2}write-off --key <id\|name> --amount <n> --note <text> \[--idempotency-key <k>\]$/m);
  });
});
