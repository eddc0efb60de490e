import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";

/**
 * The admin API's edges a mutation review found no test would notice: a top-up's idempotency
 * fingerprint reads the amount as a number, its credits_remaining leaves out what is held, an
 * expired key's refusal says what to do, an expiry of now is not in the future, and names and
 * allow-lists are stored as manage-keys looks them up.
 */
describe("admin API edges", () => {
  let h: Harness;
  const clock = manualClock(Date.now());
  beforeEach(async () => { h = await startShim({ clock }); });
  afterEach(() => h.close());

  const topUp = (id: string, amount: unknown, idem: string) =>
    h.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: { "idempotency-key": idem }, body: JSON.stringify({ amount }) });
  const patch = (id: string, body: unknown) => h.admin(`/admin/keys/${id}`, { method: "PATCH", body: JSON.stringify(body) });
  const balance = async (id: string) => ((await (await h.admin("/admin/keys")).json()) as { data: { id: string; balance: number }[] }).data.find((k) => k.id === id)!.balance;

  it("a top-up retried with the amount written another way (1, then \"1.0\") is the same request: replayed, credited once", async () => {
    const { id } = await h.createKey({ credits: 0 });
    expect((await topUp(id, 1, "inv-9")).status).toBe(200);
    const again = await topUp(id, "1.0", "inv-9");
    expect([again.status, again.headers.get("idempotent-replayed")]).toEqual([200, "true"]);
    expect(await balance(id)).toBe(1);
  });

  it("a top-up of an expired key says to move its expiry on; of a revoked key, not", async () => {
    const { id } = await h.createKey({ expires_at: new Date(clock.now() + 1000).toISOString() });
    clock.advance(1000);
    const expired = await topUp(id, 1, "a");
    const error = ((await expired.json()) as { error: { code: string; message: string } }).error;
    expect([expired.status, error.code]).toEqual([409, "key_inactive"]);
    expect(error.message).toMatch(/expired: move its expiry on first/);
    const other = await h.createKey();
    await h.admin(`/admin/keys/${other.id}`, { method: "DELETE" });
    const revoked = ((await (await topUp(other.id, 1, "b")).json()) as { error: { message: string } }).error;
    expect(revoked.message).not.toMatch(/expired/);
  });

  it("an expiry of exactly now is refused: it is not in the future", async () => {
    const { id } = await h.createKey();
    const now = new Date(clock.now()).toISOString();
    expect((await patch(id, { expires_at: now })).status).toBe(400);
    const created = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "x", expires_at: now }) });
    expect(created.status).toBe(400);
  });

  it("a model named twice is allowed once", async () => {
    const created = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "dup", models: ["bge-m3", "bge-m3"] }) });
    expect(((await created.json()) as { models: string[] }).models).toEqual(["bge-m3"]);
  });

  it("a top-up's credits_remaining is the new balance less what requests in flight hold", async () => {
    const { id, key } = await h.createKey({ credits: 10 });
    h.fake.set({ hang: true }); // in flight until the harness closes (a timer could run out under load)
    void h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 }).catch(() => {});
    const held = async () => ((await (await h.admin("/admin/keys")).json()) as { data: { id: string; held: number }[] }).data.find((k) => k.id === id)!.held;
    await expect.poll(held).toBeGreaterThan(0);
    const hold = await held();
    const grant = (await (await topUp(id, 5, "inv-held")).json()) as { balance: number; credits_remaining: number };
    expect(grant.balance).toBe(15);
    expect(grant.credits_remaining).toBe(15 - hold);
  });

  it("a key's name is stored trimmed, as manage-keys looks it up", async () => {
    const res = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "  team-09 " }) });
    expect(((await res.json()) as { name: string }).name).toBe("team-09");
  });

  it("refuses a name or note holding what a terminal or a line's display acts on: a C1 control (U+009B starts an escape sequence) or a bidi override", async () => {
    // Found by the penetration test of the operator's side: both were stored, and manage-keys list
    // printed them as they were, U+009B to the operator's terminal, U+202E reversing the rest of the row.
    const create = (name: string) => h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name }) });
    for (const [name, code] of [["red \u009b31m", "U+009B"], ["next\u0085line", "U+0085"], ["bidi \u202egnp.exe", "U+202E"], ["iso \u2067x", "U+2067"]]) {
      const res = await create(name!);
      expect(res.status, code).toBe(400);
      expect(((await res.json()) as { error: { param: string; message: string } }).error, code).toEqual(expect.objectContaining({
        param: "name", message: `'name' has a control character (${code}): a key's name is 1 to 200 characters, without control characters.`,
      }));
    }
    const { id } = await h.createKey({ credits: 0 });
    for (const note of ["paid \u009b2J", "paid \u202e001"]) {
      const res = await h.admin(`/admin/keys/${id}/credits`, { method: "POST", body: JSON.stringify({ amount: 1, note }) });
      expect(res.status, note).toBe(400);
      expect(((await res.json()) as { error: { param: string } }).error.param, note).toBe("note");
    }
    // Right-to-left text itself stays a name, as do its marks (U+200F): only what reorders or controls what follows is refused.
    expect((await create("فريق \u200fالبحث")).status).toBe(201);
    expect(await balance(id)).toBe(0);
  });
});
