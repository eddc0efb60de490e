import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { onBothStores } from "../support/both-stores.ts";
import { manualClock } from "../support/clocks.ts";
import { type Harness, moneyInvariants, startShim } from "../support/shim-harness.ts";

/**
 * `name` in PATCH /admin/keys/{id}: a person's name (key names are often people's: rosters,
 * workshop attendees) replaced by a pseudonym, the right to erasure without touching the ledger,
 * whose rows name the key by id. The same scenario on both stores, through HTTP; then the SQLite
 * files' raw bytes, where an overwritten row's old bytes stay unless the rename removes them.
 */
const configured = generateKey();
const FILE = {
  tiers: { big: { rpm: 100, tpm: 100000 }, small: { rpm: 50, tpm: 100000 } },
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }],
  bootstrapKeys: [{ id: configured.id, name: "from-stack", hash: configured.hash, credits: 5, tier: "small" }],
};

interface ShownKey { id: string; name: string; tier: string; balance: number; expires_at: string | null; revoked_at: string | null }
interface ApiError { error: { code: string; param: string | null; message: string } }

const patch = (h: Harness, id: string, body: unknown) => h.admin(`/admin/keys/${id}`, { method: "PATCH", body: JSON.stringify(body) });
const json = async <T>(res: Response | Promise<Response>): Promise<T> => (await (await res).json()) as T;
const listed = async (h: Harness, id: string) => (await json<{ data: ShownKey[] }>(h.admin("/admin/keys"))).data.find((k) => k.id === id)!;

async function refused(h: Harness, id: string, body: unknown, status: number, code: string, param: string | null): Promise<string> {
  const res = await patch(h, id, body);
  const { error } = await json<ApiError>(res);
  expect([res.status, error.code, error.param], JSON.stringify(body)).toEqual([status, code, param]);
  return error.message;
}

async function scenario(wrapStore?: () => Store): Promise<void> {
  const clock = manualClock(Date.now());
  const h = await startShim({ clock, file: FILE, ...(wrapStore ? { wrapStore } : {}) });
  try {
    // A key in use, with usage and a top-up: what the rename must leave as it was.
    const jane = await h.createKey({ name: "Jane Doe", credits: 10, tier: "big" });
    const chat = () => h.client(jane.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    await chat();
    expect((await h.admin(`/admin/keys/${jane.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 5 }) })).status).toBe(200);
    const before = await listed(h, jane.id);
    const usage = await json<{ data: unknown[] }>(h.admin(`/admin/usage?key=${jane.id}`));
    expect(usage.data).toHaveLength(1);

    const renamed = await json<ShownKey>(patch(h, jane.id, { name: "  attendee-0417 " }));
    expect(renamed).toEqual({ ...before, name: "attendee-0417" }); // trimmed, as create stores a name
    expect(await listed(h, jane.id)).toEqual(renamed);
    // The ledger is the key's, by id: its usage as before; the per-key statement under the new name.
    expect(await json(h.admin(`/admin/usage?key=${jane.id}`))).toEqual(usage);
    const credits = await json<{ data: { key_id: string; name: string; granted: number; spent: number }[] }>(h.admin(`/admin/credits?key=${jane.id}`));
    expect(credits.data).toEqual([expect.objectContaining({ key_id: jane.id, name: "attendee-0417", granted: 15 })]);
    expect(JSON.stringify(await json(h.admin("/admin/keys")))).not.toContain("Jane Doe");
    await chat(); // the same secret works on

    // Names checked as create checks them; one in use by another key refused as reviving one is.
    const bob = await h.createKey({ name: "Bob", tier: "big" });
    const taken = await refused(h, jane.id, { name: " Bob" }, 409, "key_name_in_use", "name");
    expect(taken).toContain(bob.id);
    expect(await refused(h, jane.id, { name: "" }, 400, "invalid_request", "name")).toMatch(/'name' is required/);
    expect(await refused(h, jane.id, { name: null }, 400, "invalid_request", "name")).toMatch(/'name' is required/);
    await refused(h, jane.id, { name: "a\u0007b" }, 400, "invalid_request", "name");
    await refused(h, jane.id, { name: "x".repeat(201) }, 400, "invalid_request", "name");
    expect((await json<ShownKey>(patch(h, jane.id, { name: "attendee-0417" }))).name).toBe("attendee-0417"); // its own name: no conflict
    expect(await refused(h, jane.id, {}, 400, "invalid_request", null)).toMatch(/name, tier, models or expires_at/);

    // A revoked key (a departed person's, the usual erasure) may be renamed, and only renamed.
    expect((await h.admin(`/admin/keys/${jane.id}`, { method: "DELETE" })).status).toBe(200);
    const gone = await listed(h, jane.id);
    expect(await json<ShownKey>(patch(h, jane.id, { name: "erased-1" }))).toEqual({ ...gone, name: "erased-1" });
    expect(await refused(h, jane.id, { name: "erased-2", tier: "small" }, 409, "key_inactive", "id")).toMatch(/only its name/);
    await refused(h, jane.id, { tier: "small" }, 409, "key_inactive", "id");
    await refused(h, jane.id, { name: "Bob" }, 409, "key_name_in_use", "name");
    expect(await listed(h, jane.id)).toEqual({ ...gone, name: "erased-1" });

    // An expired key, renamed and brought back at once: the name checked is its new one.
    const old = await h.createKey({ name: "team-07", expires_at: new Date(clock.now() + 1000).toISOString() });
    clock.advance(1000);
    expect((await json<ShownKey>(patch(h, old.id, { name: "team-07 (2026)" }))).name).toBe("team-07 (2026)"); // expired: allowed alone
    await h.createKey({ name: "team-08" });
    const later = new Date(clock.now() + 86_400_000).toISOString();
    await refused(h, old.id, { expires_at: later, name: "team-08" }, 409, "key_name_in_use", "name");
    expect(await json<ShownKey>(patch(h, old.id, { expires_at: later, name: "team-07" }))).toMatchObject({ name: "team-07", expires_at: later });

    // A stack key's name is the stack's configuration: refused, saying so.
    expect(await refused(h, configured.id, { name: "someone" }, 409, "key_from_configuration", "id")).toMatch(/gpu-sandbox:keys.*its name is the stack.s configuration.*rename the revoked key/);
    expect((await listed(h, configured.id)).name).toBe("from-stack");

    for (const r of await moneyInvariants(wrapStore ? wrapStore() : h.store)) expect(r).toMatchObject({ balance: r.ledgerSum, held: 0, reservations: 0 });
  } finally {
    await h.close();
  }
}

/** How many times `marker` is in the SQLite database file and its WAL, as bytes. */
function occurrences(dbPath: string, marker: string): { db: number; wal: number } {
  const count = (file: string) => (existsSync(file) ? readFileSync(file).toString("latin1").split(marker).length - 1 : 0);
  return { db: count(dbPath), wal: count(`${dbPath}-wal`) };
}

describe("PATCH /admin/keys/{id} with a name", () => {
  onBothStores("SQLite store: renames a key, revoked or not, keeping its balance, ledger and usage; conflicts, other changes of a revoked key and stack keys refused", scenario);

  it("SQLite: the old name is gone from the database file and the WAL once the rename is answered", async () => {
    const h = await startShim({ file: FILE });
    try {
      const marker = "Jane MARKERDOE";
      const { id, key } = await h.createKey({ name: marker, credits: 10, tier: "big" });
      // Keys made after it, and its row grown and shrunk: SQLite moves rows between pages, and a
      // page's unused space keeps copies of the old bytes (found: secure_delete on the rename
      // alone left one there). One more, made last: its row on the table's last page.
      for (let i = 0; i < 300; i++) await h.createKey({ name: `person ${i} ${"x".repeat(i % 40)}` });
      const last = await h.createKey({ name: "Max MARKERLAST" });
      for (const models of [Array(40).fill("qwen2.5-7b"), null]) expect((await patch(h, id, { models })).status).toBe(200);
      await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
      await h.store.flush();
      const seen = occurrences(h.dbPath, marker);
      expect(seen.db + seen.wal).toBeGreaterThan(0); // the test can see it

      expect((await patch(h, id, { name: "erased-1" })).status).toBe(200);
      expect(occurrences(h.dbPath, marker)).toEqual({ db: 0, wal: 0 });
      expect((await patch(h, last.id, { name: "erased-2" })).status).toBe(200);
      expect(occurrences(h.dbPath, "MARKERLAST")).toEqual({ db: 0, wal: 0 });
      expect((await listed(h, id)).name).toBe("erased-1");
      expect((await json<{ data: unknown[] }>(h.admin(`/admin/usage?key=${id}`))).data).toHaveLength(1);
    } finally {
      await h.close();
    }
  }, 60_000);
});
