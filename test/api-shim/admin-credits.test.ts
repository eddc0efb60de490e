import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateKey } from "../../api-shim/src/auth/keys.ts";
import { parseCredits } from "../../api-shim/src/money/money.ts";
import { ReportsBusyError } from "../../api-shim/src/store/store.ts";
import { jumpingClock, manualClock } from "../support/clocks.ts";
import { DEFAULT_FILE, overrideStore, startShim, type Harness } from "../support/shim-harness.ts";

/**
 * GET /admin/credits: each key's credits over a period (opening, granted, spent, closing), as an
 * operator reconciles a month's invoice: through HTTP, with requests the shim served and charged,
 * in a month before, the month asked about, and the month after.
 */

interface Entry { at: string; amount: number; note: string | null; idempotency_key: string | null }
interface Line { key_id: string; name: string; opening: number; granted: number; spent: number; adjusted: number; closing: number; grants: (Entry & { kind: string })[]; top_ups: Entry[] }
interface Statement { object: string; period: { start: string; end: string }; data: Line[] }

describe("GET /admin/credits", () => {
  const clock = jumpingClock(Date.UTC(2026, 9, 20, 12));
  let h: Harness;
  const chat = { model: "qwen2.5-7b", messages: [{ role: "user" as const, content: "hello there" }], max_tokens: 5 };
  const keys: Record<string, { id: string; key: string }> = {};
  let usage: { key_id: string; cost: number }[] = [];
  let novemberEnd: Record<string, number> = {};
  let octoberEnd = 0;
  const balance = async (id: string) => ((await (await h.admin("/admin/keys")).json()) as { data: { id: string; balance: number }[] }).data.find((k) => k.id === id)!.balance;

  beforeAll(async () => {
    h = await startShim({ clock, file: { pricing: { request: 1, models: { "qwen2.5-7b": { promptPer1k: 0.1, completionPer1k: 0.2 } } }, models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] } });
    keys.alice = await h.createKey({ name: "alice", credits: 100 }); // October: before the month
    await h.client(keys.alice.key).chat.completions.create(chat);
    octoberEnd = await balance(keys.alice.id);

    clock.jump(Date.UTC(2026, 10, 10, 12)); // November: the month asked about
    // The invoice number as its Idempotency-Key too, as operations.md's month's invoice has it.
    const topUp = await h.admin(`/admin/keys/${keys.alice.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 50, note: "invoice 1042" }), headers: { "idempotency-key": "INV-2026-1042" } });
    expect(topUp.status).toBe(200);
    await h.client(keys.alice.key).chat.completions.create(chat);
    await h.client(keys.alice.key).chat.completions.create({ ...chat, stream: true }).then(async (s) => { for await (const _ of s); });
    keys.bob = await h.createKey({ name: "=bob,\"the\" builder", credits: 30 }); // a name a spreadsheet would run
    await h.client(keys.bob.key).embeddings.create({ model: "qwen2.5-7b", input: "x" });
    expect((await h.admin(`/admin/keys/${keys.bob.id}`, { method: "DELETE" })).status).toBe(200); // revoked: still on the statement
    keys.idle = await h.createKey({ name: "idle", credits: 0 }); // no ledger row: no line
    novemberEnd = { alice: await balance(keys.alice.id), bob: await balance(keys.bob.id) };

    clock.jump(Date.UTC(2026, 11, 2, 12)); // December: after it
    await h.client(keys.alice.key).chat.completions.create(chat);
    keys.later = await h.createKey({ name: "later", credits: 5 });
    usage = ((await (await h.admin("/admin/usage?from=2026-11-01&to=2026-11-30")).json()) as { data: { key_id: string; cost: number }[] }).data;
  });
  afterAll(() => h.close());

  const spentIn = (id: string) => usage.filter((r) => r.key_id === id).reduce((s, r) => s + parseCredits(r.cost)!, 0);
  const micro = (l: Line) => ({ opening: parseCredits(l.opening)!, granted: parseCredits(l.granted)!, spent: parseCredits(l.spent)!, closing: parseCredits(l.closing)! });

  it("JSON: per key, its balance when the month began and ended, the credits granted (creation, top-ups) and spent (the usage report's cost) in it", async () => {
    const res = await h.admin("/admin/credits?from=2026-11-01&to=2026-11-30");
    expect(res.status).toBe(200);
    const body = (await res.json()) as Statement;
    expect(body.object).toBe("credits_statement");
    expect(body.period).toEqual({ start: "2026-11-01T00:00:00Z", end: "2026-11-30T23:59:59Z" });
    expect(body.data.map((l) => l.key_id)).toEqual([keys.alice!.id, keys.bob!.id].sort());
    const alice = body.data.find((l) => l.key_id === keys.alice!.id)!;
    const bob = body.data.find((l) => l.key_id === keys.bob!.id)!;
    expect(alice.name).toBe("alice");
    expect(micro(alice)).toEqual({ opening: parseCredits(octoberEnd), granted: 50_000_000, spent: spentIn(keys.alice!.id), closing: parseCredits(novemberEnd.alice) });
    expect(octoberEnd).toBeLessThan(99); // October's request was charged before the month
    // The top-ups of the month with their notes and Idempotency-Keys (as sent); a key's credits at
    // its creation are granted, listed in `grants`, not a top-up.
    expect(alice.top_ups).toEqual([{ at: expect.stringMatching(/^2026-11-10T12:00:\d\d\.\d{3}Z$/), amount: 50, note: "invoice 1042", idempotency_key: "INV-2026-1042" }]);
    expect(alice.grants).toEqual([]); // made in October
    expect(bob.top_ups).toEqual([]);
    expect(bob.grants).toEqual([{ kind: "creation", at: expect.stringMatching(/^2026-11-10T12:00:\d\d\.\d{3}Z$/), amount: 30, note: null, idempotency_key: null }]);
    // `granted` is the sum of what the line lists as granted: a reader summing them finds it.
    for (const l of body.data) expect([...l.grants, ...l.top_ups].reduce((s, e) => s + parseCredits(e.amount)!, 0)).toBe(micro(l).granted);
    expect(micro(bob)).toEqual({ opening: 0, granted: 30_000_000, spent: spentIn(bob.key_id), closing: parseCredits(novemberEnd.bob) });
    for (const l of [alice, bob]) expect(micro(l).opening + micro(l).granted - micro(l).spent).toBe(micro(l).closing);
    expect(micro(alice).spent).toBeGreaterThan(2_000_000); // two requests at 1 credit and their tokens

    // The month after: its opening is November's closing, and the request of December is spent.
    const december = ((await (await h.admin("/admin/credits?from=2026-12-01&to=2026-12-31")).json()) as Statement).data;
    expect(december.find((l) => l.key_id === keys.alice!.id)).toMatchObject({ opening: novemberEnd.alice, granted: 0 });
    expect(december.find((l) => l.key_id === keys.alice!.id)!.spent).toBeGreaterThan(1);
    expect(december.find((l) => l.key_id === keys.later!.id)).toEqual({
      key_id: keys.later!.id, name: "later", opening: 0, granted: 5, spent: 0, adjusted: 0, closing: 5, top_ups: [], write_offs: [],
      grants: [{ kind: "creation", at: expect.stringMatching(/^2026-12-02T12:00:\d\d\.\d{3}Z$/), amount: 5, note: null, idempotency_key: null }],
    });
    expect(december.find((l) => l.key_id === keys.bob!.id)).toMatchObject({ granted: 0, grants: [] }); // November's creation: not December's
    // alice's creation: October's.
    const october = ((await (await h.admin(`/admin/credits?key=${keys.alice!.id}&from=2026-10-01&to=2026-10-31`)).json()) as Statement).data;
    expect(october).toEqual([expect.objectContaining({ granted: 100, grants: [{ kind: "creation", at: expect.stringMatching(/^2026-10-20T12:00:\d\d\.\d{3}Z$/), amount: 100, note: null, idempotency_key: null }], top_ups: [] })]);
  });

  it("the default period is the current UTC month, as /admin/usage's; `key` gives that key's line alone", async () => {
    const month = (await (await h.admin("/admin/credits")).json()) as Statement;
    expect(month.period).toEqual({ start: "2026-12-01T00:00:00Z", end: "2026-12-31T23:59:59Z" });
    const one = (await (await h.admin(`/admin/credits?key=${keys.bob!.id}&from=2026-11-01&to=2026-11-30`)).json()) as Statement;
    expect(one.data).toEqual([expect.objectContaining({ key_id: keys.bob!.id, granted: 30 })]);
    // A key with no ledger row before the end: an empty statement, not a 404 (the key exists).
    expect(((await (await h.admin(`/admin/credits?key=${keys.idle!.id}&from=2026-11-01&to=2026-11-30`)).json()) as Statement).data).toEqual([]);
  });

  it("CSV: the same lines, credits as the usage CSV writes them, a name that would be a formula made text", async () => {
    const res = await h.admin("/admin/credits?from=2026-11-01&to=2026-11-30&format=csv");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    expect(res.headers.get("content-disposition")).toBe('attachment; filename="credits.csv"');
    const json = ((await (await h.admin("/admin/credits?from=2026-11-01&to=2026-11-30")).json()) as Statement).data;
    const lines = json.map((l) => `${l.key_id},${l.key_id === keys.bob!.id ? `"'=bob,""the"" builder"` : l.name},${l.opening},${l.granted},${l.spent},${l.closing},${l.adjusted}\r\n`);
    expect(await res.text()).toBe(`key_id,name,opening,granted,spent,closing,adjusted\r\n${lines.join("")}`);
  });

  it.each([
    ["key=nope", 400, "key"], ["key=abcdefghijkl", 404, "key"], ["format=xml", 400, "format"], ["group=day", 400, "group"],
    ["from=2026-11-31", 400, "from"], ["from=2026-12-01&to=2026-11-01", 400, "to"],
  ])("?%s → %i naming %s", async (query, status, param) => {
    const res = await h.admin(`/admin/credits?${query}`);
    expect(res.status).toBe(status);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe(param);
  });

  // The period's bounds to the millisecond, as the route turns `from` and `to` (days) into them: a
  // month's statement holds its first millisecond and stops before the next month's first.
  it("a month holds what its first millisecond has and nothing of the next month's first millisecond", async () => {
    const still = manualClock(Date.UTC(2026, 10, 1)); // 2026-11-01T00:00:00.000Z, not moving
    const edge = await startShim({ clock: still });
    try {
      const first = await edge.createKey({ name: "first", credits: 10 }); // granted in November's first millisecond
      still.advance(Date.UTC(2026, 11, 1) - Date.UTC(2026, 10, 1)); // 2026-12-01T00:00:00.000Z
      const next = await edge.createKey({ name: "next", credits: 5 });
      expect((await edge.admin(`/admin/keys/${first.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 7, note: "invoice 7" }) })).status).toBe(200);
      expect((await edge.admin(`/admin/keys/${first.id}/debits`, { method: "POST", body: JSON.stringify({ amount: 2, note: "refund 7" }) })).status).toBe(200);
      const statement = async (from: string, to: string) => ((await (await edge.admin(`/admin/credits?from=${from}&to=${to}`)).json()) as Statement).data;
      const created = (at: string, amount: number) => [{ kind: "creation", at, amount, note: null, idempotency_key: null }];
      expect(await statement("2026-11-01", "2026-11-30")).toEqual([
        { key_id: first.id, name: "first", opening: 0, granted: 10, spent: 0, adjusted: 0, closing: 10, grants: created("2026-11-01T00:00:00.000Z", 10), top_ups: [], write_offs: [] },
      ]);
      expect(await statement("2026-12-01", "2026-12-31")).toEqual([
        {
          key_id: first.id, name: "first", opening: 10, granted: 7, spent: 0, adjusted: 2, closing: 15, grants: [],
          top_ups: [{ at: "2026-12-01T00:00:00.000Z", amount: 7, note: "invoice 7", idempotency_key: null }],
          write_offs: [{ at: "2026-12-01T00:00:00.000Z", amount: 2, note: "refund 7", idempotency_key: null }],
        },
        { key_id: next.id, name: "next", opening: 0, granted: 5, spent: 0, adjusted: 0, closing: 5, grants: created("2026-12-01T00:00:00.000Z", 5), top_ups: [], write_offs: [] },
      ].sort((a, b) => (a.key_id < b.key_id ? -1 : 1)));
      // The CSV has a line per key and the columns it had before the JSON listed grants: byte for byte.
      const csv = await (await edge.admin("/admin/credits?from=2026-12-01&to=2026-12-31&format=csv")).text();
      expect(csv).toBe(["key_id,name,opening,granted,spent,closing,adjusted", ...[`${first.id},first,10,7,0,15,2`, `${next.id},next,0,5,0,5,0`].sort(), ""].join("\r\n"));
    } finally {
      await edge.close();
    }
  });

  // A stack key's credits come from the stack's configuration at start: its grant is listed so,
  // in the month the shim started in (the harness grants it at the real time, its clock here).
  it("a stack key's bootstrap grant is a grant of its own, with no note nor Idempotency-Key", async () => {
    const stack = generateKey();
    const started = Date.now();
    const booted = await startShim({ file: { ...DEFAULT_FILE, bootstrapKeys: [{ id: stack.id, name: "from-stack", hash: stack.hash, credits: 12, tier: "free" }] } });
    try {
      const { data } = (await (await booted.admin(`/admin/credits?key=${stack.id}`)).json()) as Statement;
      expect(data).toEqual([expect.objectContaining({ granted: 12, top_ups: [], grants: [{ kind: "bootstrap", at: expect.any(String), amount: 12, note: null, idempotency_key: null }] })]);
      expect(Date.parse(data[0]!.grants[0]!.at)).toBeGreaterThanOrEqual(started);
    } finally {
      await booted.close();
    }
  });

  it("needs the admin token: a key's own is refused", async () => {
    const res = await fetch(`${h.url}/admin/credits`, { headers: { authorization: `Bearer ${keys.alice!.key}` } });
    expect(res.status).toBe(401);
  });

  it("waits in the operator's line of reports: too many waiting is a 429 with Retry-After, as /admin/usage's", async () => {
    const busy = await startShim({ wrapStore: (s) => overrideStore(s, { credits: () => Promise.reject(new ReportsBusyError("line", 1, 8)) }) });
    try {
      const res = await busy.admin("/admin/credits");
      expect(res.status).toBe(429);
      expect(res.headers.get("retry-after")).toBe("1");
      expect(((await res.json()) as { error: { message: string } }).error.message).toBe("Too many usage reports at once from the admin API: wait for the earlier ones, then retry.");
    } finally {
      await busy.close();
    }
  });
});
