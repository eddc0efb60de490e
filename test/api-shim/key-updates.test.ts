import { describe, expect } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { manualClock } from "../support/clocks.ts";
import type { Store } from "../../api-shim/src/store/store.ts";
import { onBothStores } from "../support/both-stores.ts";
import { slowBody } from "../support/slow-body.ts";
import { type Harness, moneyInvariants, startShim } from "../support/shim-harness.ts";

/**
 * PATCH /admin/keys/{id}: a key made with the admin API moves to another tier, gets another model
 * allow-list or expiry, effective for its next request, its balance and usage untouched; before,
 * the only way was revoke + create (the client down, the old key's balance stranded). The same
 * scenario on both stores, through HTTP.
 */
const configured = generateKey();
const FILE = {
  tiers: { big: { rpm: 3, tpm: 100000 }, small: { rpm: 2, tpm: 100000 } },
  models: [{ name: "qwen2.5-7b", maxModelLen: 8192 }, { name: "bge-m3", maxModelLen: 8192 }],
  bootstrapKeys: [{ id: configured.id, name: "from-stack", hash: configured.hash, credits: 5, tier: "small" }],
};

interface ShownKey { id: string; object: string; from_configuration: boolean; tier: string; models: string[] | null; balance: number; held: number; expires_at: string | null; revoked_at: string | null }

async function scenario(wrapStore?: () => Store): Promise<void> {
  const clock = manualClock(Date.now());
  const h = await startShim({ clock, file: FILE, ...(wrapStore ? { wrapStore } : {}) });
  try {
    await changesApplyToTheNextRequest(h);
    await changesReachRequestsInFlight(h);
    await expiryChanges(h, clock);
    await revivalOfANameInUse(h, clock);
    await refusals(h);
    // Nothing of the money moved: every balance is still its ledger's sum, nothing held.
    for (const r of await moneyInvariants(wrapStore ? wrapStore() : h.store)) expect(r).toMatchObject({ balance: r.ledgerSum, held: 0, reservations: 0 });
  } finally {
    await h.close();
  }
}

const patch = (h: Harness, id: string, body: unknown, headers: Record<string, string> = {}) =>
  h.admin(`/admin/keys/${id}`, { method: "PATCH", body: JSON.stringify(body), headers });

async function listedKey(h: Harness, id: string): Promise<ShownKey> {
  const list = (await (await h.admin("/admin/keys")).json()) as { data: ShownKey[] };
  return list.data.find((k) => k.id === id)!;
}

async function changesApplyToTheNextRequest(h: Harness): Promise<void> {
  const { id, key } = await h.createKey({ tier: "big", credits: 10, models: ["bge-m3"] });
  const chat = () => h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
  expect((await chat()).status).toBe(403); // request 1 of big's 3 a minute

  const before = await listedKey(h, id);
  const res = await patch(h, id, { models: ["qwen2.5-7b"] });
  expect(res.status).toBe(200);
  expect(res.headers.get("x-request-id")).toBeTruthy();
  const shown = (await res.json()) as ShownKey & Record<string, unknown>;
  // The key as GET /admin/keys lists it: never its secret or hash.
  expect(shown).toEqual({ ...before, models: ["qwen2.5-7b"] });
  expect(shown.from_configuration).toBe(false);
  expect(JSON.stringify(shown)).not.toContain(key.split("_")[1]!);
  expect(shown).not.toHaveProperty("key");
  expect(shown).not.toHaveProperty("hash");
  expect(await listedKey(h, id)).toEqual(shown);

  const served = await chat(); // request 2: the new allow-list, at once
  expect(served.status).toBe(200);
  const balance = Number(served.headers.get("x-credits-remaining"));
  expect(balance).toBeLessThan(10);
  expect((await h.admin(`/admin/usage?key=${id}`).then((r) => r.json()) as { data: unknown[] }).data).toHaveLength(1);

  expect((await h.post(key, "/v1/embeddings", { model: "bge-m3", input: "x" })).status).toBe(403); // request 3: bge-m3 no longer allowed
  expect((await chat()).status).toBe(429);
  // A downgrade keeps what the key spent this minute (as a stack key's tier change does): no fresh minute.
  const down = (await (await patch(h, id, { tier: "small" })).json()) as ShownKey;
  expect(down).toMatchObject({ tier: "small", models: ["qwen2.5-7b"], balance, held: 0 });
  const limited = await chat();
  expect(limited.status).toBe(429);
  expect(limited.headers.get("x-ratelimit-limit-requests")).toBe("2");

  // `null`: every model again; the usage stays the key's.
  expect(((await (await patch(h, id, { models: null })).json()) as ShownKey).models).toBeNull();
  expect((await h.admin(`/admin/usage?key=${id}`).then((r) => r.json()) as { data: unknown[] }).data).toHaveLength(1);
  expect((await listedKey(h, id)).balance).toBe(balance);
}

/**
 * A request that authenticated before a PATCH took its model out of the key's allow-list (its
 * body still arriving) is refused 403 as admission refuses it, as one before a revocation is
 * refused 401: the hold reads the key's row again.
 */
async function changesReachRequestsInFlight(h: Harness): Promise<void> {
  const { id, key } = await h.createKey({ tier: "big", credits: 10, models: ["qwen2.5-7b", "bge-m3"] });
  const narrowed = await slowBody(h, key, async () => expect((await patch(h, id, { models: ["bge-m3"] })).status).toBe(200));
  expect(narrowed).toBe(403);
  const other = await h.createKey({ tier: "big", credits: 10, models: ["qwen2.5-7b"] });
  const revoked = await slowBody(h, other.key, async () => expect((await h.admin(`/admin/keys/${other.id}`, { method: "DELETE" })).status).toBe(200));
  expect(revoked).toBe(401);
  expect((await listedKey(h, id)).balance).toBe(10); // nothing charged
}

async function expiryChanges(h: Harness, clock: ReturnType<typeof manualClock>): Promise<void> {
  clock.advance(60_000); // the buckets above refilled
  const { id, key } = await h.createKey({ name: "expiring", tier: "big", credits: 10 }); // no other key in use has its name
  const models = () => fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  const soon = new Date(clock.now() + 10_000).toISOString();
  expect(((await (await patch(h, id, { expires_at: soon })).json()) as ShownKey).expires_at).toBe(soon);
  expect((await models()).status).toBe(200);
  clock.advance(10_000);
  expect((await models()).status).toBe(401); // expired, as set
  // An expired key's expiry can be moved on (`expiresAt` as create takes it too): it works again.
  const later = new Date(clock.now() + 86_400_000).toISOString();
  expect(((await (await patch(h, id, { expiresAt: later })).json()) as ShownKey).expires_at).toBe(later);
  expect((await models()).status).toBe(200);
  expect(((await (await patch(h, id, { expires_at: null })).json()) as ShownKey).expires_at).toBeNull();
  clock.advance(2 * 86_400_000);
  expect((await models()).status).toBe(200);
}

/**
 * An expired key's name may be given to a new key (manage-keys create refuses only a name in use);
 * bringing the old one back then would leave two keys in use under one name, which `--key <name>`
 * can no longer tell apart: refused, 409, naming the other key. Once that one is revoked, it may.
 */
async function revivalOfANameInUse(h: Harness, clock: ReturnType<typeof manualClock>): Promise<void> {
  const old = await h.createKey({ name: "team-07", tier: "big", credits: 1 });
  expect((await patch(h, old.id, { expires_at: new Date(clock.now() + 1000).toISOString() })).status).toBe(200);
  clock.advance(1000);
  const fresh = await h.createKey({ name: "team-07", tier: "big", credits: 1 });
  const later = new Date(clock.now() + 86_400_000).toISOString();
  const res = await patch(h, old.id, { expires_at: later });
  const error = ((await res.json()) as { error: { code: string; param: string; message: string } }).error;
  expect([res.status, error.code, error.param]).toEqual([409, "key_name_in_use", "expires_at"]);
  expect(error.message).toContain(fresh.id);
  expect((await patch(h, old.id, { expires_at: null })).status).toBe(409); // no expiry at all: the same
  expect((await listedKey(h, old.id)).expires_at).not.toBe(later);
  // Other changes of the expired key leave it expired: allowed.
  expect((await patch(h, old.id, { tier: "small" })).status).toBe(200);
  expect((await h.admin(`/admin/keys/${fresh.id}`, { method: "DELETE" })).status).toBe(200);
  expect(((await (await patch(h, old.id, { expires_at: later })).json()) as ShownKey).expires_at).toBe(later);
  // Namesakes that are all expired leave the name free: the later one's expiry moves on (a store
  // that looked for a namesake in use at the epoch, not now, refused it 409).
  const first = await h.createKey({ name: "team-08", expires_at: new Date(clock.now() + 1000).toISOString() });
  clock.advance(1000);
  const second = await h.createKey({ name: "team-08", expires_at: new Date(clock.now() + 1000).toISOString() });
  clock.advance(1000);
  expect(first.id).not.toBe(second.id);
  const moved = await patch(h, second.id, { expires_at: new Date(clock.now() + 86_400_000).toISOString() });
  expect(moved.status, await moved.clone().text()).toBe(200);
}

async function refusals(h: Harness): Promise<void> {
  const { id } = await h.createKey({ tier: "big", credits: 10 });
  const before = await listedKey(h, id);
  const refused = async (body: unknown, status: number, param: string | null, message?: RegExp) => {
    const res = await patch(h, id, body);
    const error = ((await res.json()) as { error: { param: string | null; message: string; code: string } }).error;
    expect([res.status, error.param], JSON.stringify(body)).toEqual([status, param]);
    if (message) expect(error.message).toMatch(message);
    return error;
  };
  await refused({}, 400, null, /tier, models or expires_at/);
  await refused({ tier: "gold" }, 400, "tier", /big, small/);
  await refused({ tier: null }, 400, "tier");
  await refused({ models: ["nope"] }, 400, "models", /unknown models: nope/);
  await refused({ models: [] }, 400, "models");
  await refused({ name: " " }, 400, "name", /'name' is required/); // a name is checked as create checks it (key-rename.test.ts)
  await refused({ credits: 5 }, 400, "credits");
  await refused({ expires_at: "2020-01-01T00:00:00Z" }, 400, "expires_at");
  await refused({ expires_at: "tomorrow" }, 400, "expires_at", /must be a future ISO timestamp/);
  // A day that does not exist is refused saying so, as /admin/usage's from and to are (and create's expiry too).
  await refused({ expires_at: "2030-02-30" }, 400, "expires_at", /'expires_at': 2030-02-30 is not a day: February 2030 has 28 days/);
  await refused({ expiresAt: "2030-04-31T12:00:00Z" }, 400, "expires_at", /2030-04-31 is not a day: April 2030 has 30 days/);
  const create = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "x", expires_at: "2030-13-01" }) });
  expect([create.status, ((await create.json()) as { error: { message: string } }).error.message]).toEqual([400, "'expires_at': 2030-13-01 is not a day: the month is 01 to 12."]);
  await refused({ expires_at: "2030-01-01T00:00:00Z", expiresAt: "2030-01-01T00:00:00Z" }, 400, "expires_at");
  expect((await h.admin(`/admin/keys/${id}`, { method: "PATCH", body: "[1]" })).status).toBe(400);
  expect(await listedKey(h, id)).toEqual(before); // nothing of a refused change was made

  // An unknown id, or one that is no id at all: 404, as the other key routes.
  expect((await patch(h, "AAAAAAAAAAAA", { tier: "small" })).status).toBe(404);
  expect((await patch(h, "not-an-id", { tier: "small" })).status).toBe(404);
  // Without the admin token: 401 (an API key is no admin token).
  expect((await fetch(`${h.url}/admin/keys/${id}`, { method: "PATCH", headers: { "content-type": "application/json" }, body: '{"tier":"small"}' })).status).toBe(401);

  // A stack-defined key: the next start would put its tier and models back, so it is refused, saying so.
  // The listing says which keys those are, before anyone tries (what the 409's code is named for).
  expect([(await listedKey(h, configured.id)).from_configuration, before.from_configuration]).toEqual([true, false]);
  const stack = await patch(h, configured.id, { tier: "big" });
  expect(stack.status).toBe(409);
  // Named both ways: a shim run by hand takes its keys from SHIM_CONFIG, where `pulumi up` changes nothing.
  expect(((await stack.json()) as { error: { message: string } }).error.message).toMatch(/the stack's gpu-sandbox:keys, or SHIM_CONFIG's bootstrapKeys for a shim you run yourself.*pulumi up/);
  expect((await listedKey(h, configured.id)).tier).toBe("small");

  // A revoked key: 409, as a top-up of it is.
  expect((await h.admin(`/admin/keys/${id}`, { method: "DELETE" })).status).toBe(200);
  const revoked = await refused({ tier: "small" }, 409, "id", /revoked/);
  expect(revoked.code).toBe("key_inactive");
  expect((await listedKey(h, id)).tier).toBe("big");
}

describe("PATCH /admin/keys/{id}", () => {
  onBothStores("SQLite store: tier, models and expiry change for the key's next request; balance and usage stay; refusals", scenario);
});
