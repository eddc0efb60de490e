import Database from "better-sqlite3";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";
import { SqliteStore } from "../../api-shim/src/store/sqlite-store.ts";
import { SchemaOwnerNeededError } from "../../api-shim/src/store/store-errors.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { manualClock } from "../support/clocks.ts";
import { onBothStores } from "../support/both-stores.ts";
import { type RunningPostgres, sqlOn, startPostgres } from "../support/postgres.ts";
import { previousStores } from "../support/previous-version.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";
import { tempDir } from "../support/tools.ts";

/**
 * GET /admin/keys/{id}/events: a key's history kept in the ledger (created, rotated, updated with
 * what changed, revoked), each with its time and the admin request's id. Before, a change left
 * its time only in the shim's log line, which rotates away. Through the shim, on both stores.
 */
const configured = generateKey();
const FILE = {
  tiers: { big: { rpm: 100, tpm: 1000000 }, small: { rpm: 100, tpm: 1000000 } },
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }],
  bootstrapKeys: [{ id: configured.id, name: "from-stack", hash: configured.hash, credits: 5, tier: "small" }],
};
const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hi" }], max_tokens: 4 };

interface Change { field: string; from?: unknown; to?: unknown }
interface Event { object: string; event: string; at: string; request_id: string | null; changes: Change[] }
interface Events { object: string; key_id: string; complete: boolean; data: Event[] }

async function events(h: Harness, id: string): Promise<Events> {
  const res = await h.admin(`/admin/keys/${id}/events`);
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as Events;
}

/** An admin call expected to answer `status`: its x-request-id. */
async function called(h: Harness, path: string, init: RequestInit, status = 200): Promise<string> {
  const res = await h.admin(path, init);
  expect(res.status, await res.clone().text()).toBe(status);
  const body = (await res.json()) as { key?: string };
  if (body.key) h.secrets.add(body.key);
  return res.headers.get("x-request-id")!;
}

const patch = (h: Harness, id: string, body: object, status = 200) => called(h, `/admin/keys/${id}`, { method: "PATCH", body: JSON.stringify(body) }, status);

async function scenario(wrapStore?: () => Store): Promise<void> {
  const clock = manualClock(Date.UTC(2026, 11, 7, 14, 0, 0));
  const h = await startShim({ clock, file: FILE, ...(wrapStore ? { wrapStore } : {}) });
  try {
    const expires = "2027-01-31T00:00:00.000Z";
    const createRes = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "Jane Doe", tier: "big", credits: 10, models: ["qwen2.5-7b"], expires_at: expires }) });
    const made = (await createRes.json()) as { id: string; key: string };
    h.secrets.add(made.key);
    const id = made.id;
    expect((await events(h, id))).toEqual({
      object: "list", key_id: id, complete: true,
      data: [{ object: "key_event", event: "created", at: "2026-12-07T14:00:00.000Z", request_id: createRes.headers.get("x-request-id"), changes: [
        { field: "tier", to: "big" }, { field: "models", to: ["qwen2.5-7b"] }, { field: "expires_at", to: expires }] }],
    });

    // A colleague narrows its models and moves its tier at 14:02: the key's next request is refused.
    clock.advance(120_000);
    const narrowed = await patch(h, id, { models: ["bge-m3"], tier: "small" });
    await expect(h.client(made.key).chat.completions.create(chat)).rejects.toBeInstanceOf(OpenAI.APIError);
    // Set to what it is already: nothing changed, nothing recorded.
    clock.advance(1000);
    await patch(h, id, { tier: "small" });
    // Its models and expiry given as they are (a tool that sends the whole key back): nothing either.
    await patch(h, id, { models: ["bge-m3"], expires_at: expires });
    // Renamed (a person's name erased): that it changed, never from what to what.
    clock.advance(1000);
    const renamed = await patch(h, id, { name: "team-07" });
    await patch(h, id, { name: "team-07" }); // the name it has: nothing recorded
    clock.advance(1000);
    const moved = await patch(h, id, { expires_at: null });
    clock.advance(1000);
    const rotation = await called(h, `/admin/keys/${id}/rotate`, { method: "POST" });
    clock.advance(1000);
    const revocation = await called(h, `/admin/keys/${id}`, { method: "DELETE" });
    clock.advance(1000);
    await called(h, `/admin/keys/${id}`, { method: "DELETE" }); // again: the first revocation's time stands
    await patch(h, id, { tier: "big" }, 409); // refused: rolled back, no event
    const history = await events(h, id);
    expect(history.data.slice(1)).toEqual([
      { object: "key_event", event: "updated", at: "2026-12-07T14:02:00.000Z", request_id: narrowed, changes: [
        { field: "tier", from: "big", to: "small" }, { field: "models", from: ["qwen2.5-7b"], to: ["bge-m3"] }] },
      { object: "key_event", event: "updated", at: "2026-12-07T14:02:02.000Z", request_id: renamed, changes: [{ field: "name" }] },
      { object: "key_event", event: "updated", at: "2026-12-07T14:02:03.000Z", request_id: moved, changes: [{ field: "expires_at", from: expires, to: null }] },
      { object: "key_event", event: "rotated", at: "2026-12-07T14:02:04.000Z", request_id: rotation, changes: [] },
      { object: "key_event", event: "revoked", at: "2026-12-07T14:02:05.000Z", request_id: revocation, changes: [] },
    ]);
    // Every request id is its own, and the listing's revoked_at is the event's time.
    expect(new Set(history.data.map((e) => e.request_id)).size).toBe(6);
    const listed = ((await (await h.admin("/admin/keys")).json()) as { data: { id: string; revoked_at: string }[] }).data.find((k) => k.id === id)!;
    expect(listed.revoked_at).toBe("2026-12-07T14:02:05.000Z");
    // Never a name, a secret or a hash.
    const text = JSON.stringify(history);
    for (const never of ["Jane Doe", "team-07", made.key.split("_")[1]!, "sk-gs-"]) expect(text).not.toContain(never);

    // A stack key: made by the shim's start, no request.
    const stack = await events(h, configured.id);
    expect(stack.data).toMatchObject([{ event: "created", request_id: null, changes: [{ field: "tier", to: "small" }, { field: "models", to: null }, { field: "expires_at", to: null }] }]);

    // Its secret replaced in the stack (operations.md, "Rotate a stack key"): the next start puts
    // the new hash on it and the old secret gets 401 from then on, a `rotated` event without a
    // request; a start with the same secret records nothing.
    const store = wrapStore ? wrapStore() : h.store;
    const replaced = generateKey(configured.id);
    const entry = { id: configured.id, name: "from-stack", tier: "small", models: null, expiresAt: null, credits: 5 };
    clock.advance(1000);
    await store.ensureBootstrapKey({ ...entry, hash: replaced.hash, at: clock.now() });
    clock.advance(1000);
    await store.ensureBootstrapKey({ ...entry, hash: replaced.hash, at: clock.now() });
    expect((await events(h, configured.id)).data.slice(1)).toEqual([{ object: "key_event", event: "rotated", at: "2026-12-07T14:02:07.000Z", request_id: null, changes: [] }]);

    // Its tier and models changed in the stack: the next start sets them, an `updated` event by the
    // start saying from what to what ("when did my key lose model X"); a start that changes nothing
    // records nothing.
    clock.advance(1000);
    await store.ensureBootstrapKey({ ...entry, hash: replaced.hash, tier: "big", models: ["qwen2.5-7b"], at: clock.now() });
    clock.advance(1000);
    await store.ensureBootstrapKey({ ...entry, hash: replaced.hash, tier: "big", models: ["qwen2.5-7b"], at: clock.now() });
    clock.advance(1000);
    await store.ensureBootstrapKey({ ...entry, hash: replaced.hash, tier: "big", models: ["bge-m3"], at: clock.now() });
    expect((await events(h, configured.id)).data.slice(2)).toEqual([
      { object: "key_event", event: "updated", at: "2026-12-07T14:02:09.000Z", request_id: null, changes: [{ field: "tier", from: "small", to: "big" }, { field: "models", from: null, to: ["qwen2.5-7b"] }] },
      { object: "key_event", event: "updated", at: "2026-12-07T14:02:11.000Z", request_id: null, changes: [{ field: "models", from: ["qwen2.5-7b"], to: ["bge-m3"] }] },
    ]);

    // Taken out of the stack: the next start revokes it, no request either.
    clock.advance(1000);
    expect(await store.revokeRemovedBootstrapKeys([], clock.now())).toEqual([configured.id]);
    expect((await events(h, configured.id)).data.slice(4)).toEqual([{ object: "key_event", event: "revoked", at: "2026-12-07T14:02:12.000Z", request_id: null, changes: [] }]);

    // An unknown key, a malformed id: 404 in the shim's error shape; without the admin token: 401.
    for (const bad of ["abcdefghijkl", "not-a-key"]) {
      const res = await h.admin(`/admin/keys/${bad}/events`);
      expect([res.status, await res.json()]).toEqual([404, { error: expect.objectContaining({ code: "not_found", param: "id", message: "No such key.", type: "invalid_request_error" }) }]);
    }
    expect((await fetch(`${h.url}/admin/keys/${id}/events`)).status).toBe(401);
    const query = await h.admin(`/admin/keys/${id}/events?limit=5`);
    expect([query.status, ((await query.json()) as { error: { param: string } }).error.param]).toEqual([400, "limit"]);
  } finally {
    await h.close();
  }
}

describe("a key's history (GET /admin/keys/{id}/events)", () => {
  onBothStores("records created, updated (what changed), rotated and revoked with their times and request ids, in order; not a name or a secret; 404 for an unknown key", scenario);

  it("an older ledger takes the history at the shim's start: its keys keep working, have no made-up `created` event, and record what changes from then on", async () => {
    const file = `${tempDir("shim-keyhist-")}/old.db`;
    const previous = await previousStores();
    const old = new previous.SqliteStore(file);
    const before = generateKey();
    await old.createKey({ id: before.id, name: "old", hash: before.hash, tier: "big", models: null, expiresAt: null, credits: 5_000_000, at: 1 });
    await old.close();
    expect(new Database(file, { readonly: true }).prepare("SELECT name FROM sqlite_master WHERE name = 'key_events'").all()).toEqual([]);

    let upgraded: SqliteStore | undefined;
    const h = await startShim({ file: FILE, wrapStore: () => (upgraded = new SqliteStore(file)) });
    try {
      expect(await events(h, before.id)).toEqual({ object: "list", key_id: before.id, complete: false, data: [] });
      expect((await h.client(before.key).chat.completions.create(chat)).choices.length).toBe(1);
      const rid = await patch(h, before.id, { tier: "small" });
      expect(await events(h, before.id)).toMatchObject({ complete: false, data: [{ event: "updated", request_id: rid, changes: [{ field: "tier", from: "big", to: "small" }] }] });
    } finally {
      await h.close();
      await upgraded?.close();
    }
    // Append-only, as the ledger.
    const db = new Database(file);
    expect(() => db.prepare("DELETE FROM key_events").run()).toThrow(/append-only/);
    expect(() => db.prepare("UPDATE key_events SET request_id = 'x'").run()).toThrow(/append-only/);
    db.close();
    // The previous version still opens the upgraded ledger (no schema version: going back needs no backup).
    const back = new previous.SqliteStore(file);
    expect((await back.getKey(before.id))!.tier).toBe("small");
    await back.close();
  });

  it("a key the previous version revoked (going back to it, as upgrading.md allows) has a history that says it is not complete; one it left alone is complete", async () => {
    // Found by the review of the key history: the revocation had no event, and `complete: true`
    // showed ["created"] as the whole story of a key `manage-keys list` shows REVOKED.
    const file = `${tempDir("shim-keyhist-")}/gap.db`;
    const [revoked, untouched] = [generateKey(), generateKey()];
    const made = new SqliteStore(file);
    for (const k of [revoked, untouched]) await made.createKey({ id: k.id, name: "n", hash: k.hash, tier: "big", models: null, expiresAt: null, credits: 5, at: 1, requestId: "r1" });
    await made.close();
    const previous = await previousStores();
    const old = new previous.SqliteStore(file);
    await old.revokeKey(revoked.id, 3);
    await old.close();
    let upgraded: SqliteStore | undefined;
    const h = await startShim({ file: FILE, wrapStore: () => (upgraded = new SqliteStore(file)) });
    try {
      expect(await events(h, revoked.id)).toMatchObject({ complete: false, data: [{ event: "created" }] });
      expect(await events(h, untouched.id)).toMatchObject({ complete: true, data: [{ event: "created" }] });
    } finally {
      await h.close();
      await upgraded?.close();
    }
  });

  describe("Postgres store", () => {
    let server: RunningPostgres;
    beforeAll(async () => { server = await startPostgres(); }, 60_000);
    afterAll(async () => { await server?.stop(); });

    it("an older database takes the table at the owner's start; a replica role granted table by table before it is told the GRANT to run, then records", async () => {
      const url = await server.newDatabase();
      const sql = (text: string) => sqlOn(url, text);
      const previous = await previousStores();
      const made = await previous.PostgresStore.open(url);
      const before = generateKey();
      await made.createKey({ id: before.id, name: "old", hash: before.hash, tier: "big", models: null, expiresAt: null, credits: 5, at: 1 });
      await made.close();
      // The grants a replica role had before the upgrade: every table then.
      await sql("DROP ROLE IF EXISTS app_hist");
      await sql("CREATE ROLE app_hist LOGIN");
      await sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC");
      await sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_hist");
      await sql("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_hist");
      const asReplica = url.replace("://shim@", "://app_hist@");
      // Its start cannot upgrade the database (PREVIOUS_VERSION predates `served` too, which it names first): the owner's start does.
      const first = await PostgresStore.open(asReplica).then(async (s) => { await s.close(); return undefined; }, (e: unknown) => e);
      expect(first).toBeInstanceOf(SchemaOwnerNeededError);
      const owner = await PostgresStore.open(url);
      try {
        expect(await owner.keyEvents(before.id)).toEqual([]); // no made-up `created`
        // Made by the owner's start: the replica role has no right on it, and its start says which GRANT to run.
        const refused = await PostgresStore.open(asReplica).then(async (s) => { await s.close(); return undefined; }, (e: unknown) => e);
        expect(refused).toBeInstanceOf(SchemaOwnerNeededError);
        expect(String(refused)).toContain("GRANT SELECT, INSERT ON key_events TO <this role>; GRANT USAGE ON SEQUENCE key_events_id_seq TO <this role>");
        await sql("GRANT SELECT, INSERT ON key_events TO app_hist");
        await sql("GRANT USAGE ON SEQUENCE key_events_id_seq TO app_hist");
        const replica = await PostgresStore.open(asReplica);
        try {
          expect((await replica.updateKey(before.id, { tier: "small" }, 2, "req-1")).kind).toBe("done");
          expect(await owner.keyEvents(before.id)).toEqual([{ keyId: before.id, at: 2, event: "updated", requestId: "req-1", changes: [{ field: "tier", from: "big", to: "small" }] }]);
          // Append-only, for the table's owner too.
          await expect(sql("DELETE FROM key_events")).rejects.toThrow(/append-only/);
        } finally {
          await replica.close();
        }
      } finally {
        await owner.close();
      }
      // The previous version still opens it (no schema version: going back needs no backup).
      const back = await previous.PostgresStore.open(url);
      expect((await back.getKey(before.id))!.tier).toBe("small");
      await back.close();
    }, 60_000);
  });
});
