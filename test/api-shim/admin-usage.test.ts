import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../../api-shim/src/auth/keys.ts";
import { clockFrom } from "../support/clocks.ts";
import { ClientLeftError } from "../../api-shim/src/store/store.ts";
import { DEFAULT_FAKE, overrideStore, startShim, type Harness } from "../support/shim-harness.ts";

describe("admin routes and usage reports", () => {
  let h: Harness;
  // Mid-month at midday: the reports' current month and day are the requests' own, whenever the suite runs.
  const clock = clockFrom(Date.UTC(2026, 2, 15, 12));
  beforeAll(async () => {
    h = await startShim({ clock, file: { pricing: { models: { "qwen2.5-7b": { promptPer1k: 0.5, completionPer1k: 1 } } }, models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] } });
  });
  afterAll(() => h.close());

  it("creates a key (plaintext once), lists keys without plaintext or hash, revokes", async () => {
    const res = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "team-a", credits: "12.5", tier: "pro", models: ["qwen2.5-7b"], expires_at: "2099-01-01T00:00:00Z" }) });
    expect(res.status).toBe(201);
    const created = (await res.json()) as Record<string, unknown>;
    h.secrets.add(created.key as string);
    expect(created).toMatchObject({ object: "api_key", name: "team-a", tier: "pro", models: ["qwen2.5-7b"], balance: 12.5, held: 0, credits_remaining: 12.5, requests_in_flight: 0, from_configuration: false, expires_at: "2099-01-01T00:00:00.000Z", revoked_at: null });
    expect(created.key).toMatch(new RegExp(`^sk-gs-${created.id}_[0-9A-Za-z]{32}$`));
    const stored = (await h.store.getKey(created.id as string))!;
    expect(stored.hash).toBe(hashKey(created.key as string));

    const list = await (await h.admin("/admin/keys")).text();
    expect(list).toContain(created.id as string);
    expect(list).not.toContain(created.key as string);
    expect(list).not.toContain("sha256:");
    expect(list).not.toMatch(/"key"|"hash"/);

    const del = await h.admin(`/admin/keys/${created.id}`, { method: "DELETE" });
    expect(await del.json()).toMatchObject({ id: created.id, deleted: true, requests_in_flight: 0, from_configuration: false, revoked_at: expect.any(String) });
  });

  // DESIGN.md: keys are stored only as hashes. Not the hash column alone: nothing the store writes
  // (keys, ledger, usage, a top-up's stored answer, the WAL) holds the key or its secret part.
  it("writes no key, nor its secret part, anywhere in the database's files", async () => {
    const { key, id } = await h.createKey({ credits: 10 });
    expect((await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2 })).status).toBe(200);
    expect((await h.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: { "idempotency-key": "hash-only" }, body: JSON.stringify({ amount: 1 }) })).status).toBe(200);
    await h.store.flush();
    const secret = key.split("_")[1]!;
    const files = readdirSync(dirname(h.dbPath)).filter((n) => n.startsWith("shim.db"));
    expect(files).toContain("shim.db");
    for (const f of files) expect(readFileSync(join(dirname(h.dbPath), f)).includes(secret), f).toBe(false);
  });

  it.each([
    [{}, "name"], [{ name: "" }, "name"], [{ name: "x", credits: -1 }, "credits"], [{ name: "x", credits: "1.0000001" }, "credits"],
    [{ name: "x", tier: "gold" }, "tier"], [{ name: "x", models: ["nope"] }, "models"], [{ name: "x", models: "qwen2.5-7b" }, "models"],
    // A key that may use no model (every request 403): leave `models` out for all of them.
    [{ name: "x", models: [] }, "models"],
    [{ name: "x", expires_at: "2000-01-01T00:00:00Z" }, "expires_at"], [{ name: "x", expiresAt: "soon" }, "expires_at"],
    [{ name: "x", expires_at: "2099-01-01T00:00:00Z", expiresAt: "2099-01-01T00:00:00Z" }, "expires_at"],
    // Not whatever Date.parse reads: without a zone it is the server's local time; not ISO at all.
    [{ name: "x", expires_at: "2099-01-15T10:00:00" }, "expires_at"], [{ name: "x", expires_at: "March 3, 2099" }, "expires_at"],
    [{ name: "x", expires_at: "2099-02-30T00:00:00Z" }, "expires_at"],
    // A misspelt field is refused, not ignored: this key would otherwise never expire.
    [{ name: "x", expires: "2099-01-01T00:00:00Z" }, "expires"], [{ name: "x", credit: 5 }, "credit"],
    // Control characters: a NUL would fail the Postgres store's write instead of being a 400.
    [{ name: "team\u0000a" }, "name"], [{ name: "team\na" }, "name"], [{ name: "x", models: ["qwen2.5-7b\u0000"] }, "models"],
    // A lone surrogate: stored as U+FFFD by one store and refused by the other's jsonb (a 503).
    [{ name: "team\ud800" }, "name"], [{ name: "x", models: ["qwen\udc00"] }, "models"],
  ])("POST /admin/keys %j → 400 naming %s", async (body, param) => {
    const res = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify(body) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { param: string } }).error.param).toBe(param);
  });

  it("a JSON object sent without Content-Type: application/json is told to send that header, as text/plain too (fetch's default for a string body)", async () => {
    const body = JSON.stringify({ name: "team-a" });
    for (const type of [undefined, "text/plain", "application/x-www-form-urlencoded"]) {
      const res = await fetch(`${h.url}/admin/keys`, { method: "POST", headers: { authorization: `Bearer ${h.adminToken}`, ...(type ? { "content-type": type } : {}) }, body });
      expect(res.status, type).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message, type).toBe("Request body must be JSON (Content-Type: application/json).");
    }
  });

  // Found by review: with no text/plain parser, fetch(url, { method: "DELETE", body: "" }) (sent as
  // text/plain;charset=UTF-8 with Content-Length: 0) was a 400 where it had revoked the key. An
  // empty body is no body, whatever type it names (curl -X DELETE -d '' names a form).
  it("an empty body is no body, whatever its Content-Type: DELETE /admin/keys/:id revokes", async () => {
    const types = [undefined, "text/plain;charset=UTF-8", "text/plain", "application/json", "application/x-www-form-urlencoded", "application/octet-stream", "multipart/form-data; boundary=x"];
    for (const type of types) {
      const { id } = await h.createKey({ credits: 1 });
      const res = await fetch(`${h.url}/admin/keys/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${h.adminToken}`, ...(type ? { "content-type": type } : {}) }, body: "" });
      expect(res.status, type).toBe(200);
      expect(await res.json(), type).toMatchObject({ id, deleted: true });
    }
    // fetch's own default for a string body, as the review found it.
    const { id } = await h.createKey({ credits: 1 });
    const res = await fetch(`${h.url}/admin/keys/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${h.adminToken}` }, body: "" });
    expect(res.status).toBe(200);
  });

  it("a body that is not JSON and not empty is refused naming Content-Type: application/json, on DELETE too", async () => {
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "application/octet-stream"]) {
      const { id } = await h.createKey({ credits: 1 });
      const res = await fetch(`${h.url}/admin/keys/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${h.adminToken}`, "content-type": type }, body: "x" });
      expect(res.status, type).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message, type).toBe("Request body must be JSON (Content-Type: application/json).");
      expect((await h.store.getKey(id))!.revokedAt, type).toBeNull();
    }
  });

  it("an unknown admin path is a 404 whatever body and type it carries", async () => {
    for (const type of ["text/plain", "application/x-www-form-urlencoded"]) {
      const res = await fetch(`${h.url}/admin/nothing`, { method: "POST", headers: { authorization: `Bearer ${h.adminToken}`, "content-type": type }, body: "x" });
      expect(res.status, type).toBe(404);
    }
  });

  it("a name's 200 characters and a note's 500 are characters (code points), not UTF-16 units: 200 emoji are a name", async () => {
    const create = (name: string) => h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name }) });
    const res = await create("🙂".repeat(200));
    expect(res.status).toBe(201);
    const created = (await res.json()) as { id: string; key: string; name: string };
    h.secrets.add(created.key);
    expect(created.name).toBe("🙂".repeat(200));
    const longer = await create("🙂".repeat(201));
    expect(longer.status).toBe(400);
    // Given, but too long: the limit, not "'name' is required", which a 300-character name got.
    // Counted up to the limit only (a body may be 8 MB): "more than", not the exact count.
    expect(((await longer.json()) as { error: { param: string; message: string } }).error).toMatchObject({ param: "name", message: "'name' has more than 200 characters: a key's name is 1 to 200 characters, without control characters." });
    // Given, but not plain text: what is wrong with it, not that it is required.
    const refusal = async (name: string) => ((await (await create(name)).json()) as { error: { param: string; message: string } }).error;
    expect(await refusal("team\u0007one")).toEqual(expect.objectContaining({ param: "name", message: "'name' has a control character (U+0007): a key's name is 1 to 200 characters, without control characters." }));
    expect(await refusal("team\none")).toEqual(expect.objectContaining({ param: "name", message: "'name' has a control character (U+000A): a key's name is 1 to 200 characters, without control characters." }));
    expect(await refusal("team \ud83d")).toEqual(expect.objectContaining({ param: "name", message: "'name' is not plain text: it has half of a UTF-16 surrogate pair (U+D83D) without the other." }));
    const missing = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ credits: 1 }) });
    expect(((await missing.json()) as { error: { message: string } }).error.message).toBe("'name' is required: a string of 1 to 200 characters, without control characters.");
    const topUp = (note: string) => h.admin(`/admin/keys/${created.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 1, note }) });
    expect((await topUp("🙂".repeat(500))).status).toBe(200);
    const long = await topUp("🙂".repeat(501));
    expect(long.status).toBe(400);
    expect(((await long.json()) as { error: { param: string } }).error.param).toBe("note");
  });

  it("key ids that cannot exist are not looked up; notes may have line breaks but no other control characters", async () => {
    for (const path of ["/admin/keys/abc%00def", "/admin/keys/short"]) {
      expect((await h.admin(path, { method: "DELETE" })).status, path).toBe(404);
      expect((await h.admin(`${path}/credits`, { method: "POST", body: JSON.stringify({ amount: 1 }) })).status, path).toBe(404);
    }
    const bad = await h.admin("/admin/usage?key=abc%00def");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe("key");
    const created = (await (await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "notes" }) })).json()) as { id: string; key: string };
    h.secrets.add(created.key);
    const topUp = (note: string) => h.admin(`/admin/keys/${created.id}/credits`, { method: "POST", body: JSON.stringify({ amount: 1, note }) });
    expect((await topUp("January\n\tinvoice 7")).status).toBe(200);
    const nul = await topUp("January\u0000");
    expect(nul.status).toBe(400);
    expect(((await nul.json()) as { error: { param: string } }).error.param).toBe("note");
  });

  it("top-ups: ledger rows, Idempotency-Key replays return the same body with Idempotent-Replayed", async () => {
    const { id } = await h.createKey({ credits: 1 });
    const post = (body: unknown, idem?: string) => h.admin(`/admin/keys/${id}/credits`, { method: "POST", body: JSON.stringify(body), headers: idem ? { "idempotency-key": idem } : {} });
    const first = await post({ amount: 2.5, note: "invoice 17" }, "inv-17");
    expect(first.status).toBe(200);
    const body = await first.text();
    expect(JSON.parse(body)).toMatchObject({ key_id: id, amount: 2.5, balance: 3.5, note: "invoice 17" });
    const replay = await post({ amount: "2.50", note: "invoice 17" }, "inv-17"); // same request, other spelling
    expect(replay.status).toBe(200);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.text()).toBe(body);
    expect((await h.store.getKey(id))!.balance).toBe(3_500_000);
    for (const bad of [{ amount: 0 }, { amount: -1 }, { amount: "x" }, {}]) expect((await post(bad)).status).toBe(400);
    expect((await h.admin("/admin/keys/NoSuchKey123/credits", { method: "POST", body: '{"amount":1}' })).status).toBe(404);
    const audit = (await h.store.audit()).find((r) => r.keyId === id)!;
    expect(audit.ledgerSum).toBe(audit.balance);
  });

  it("top-ups refuse a revoked or expired key (409) and a balance past a billion credits (400), granting nothing", async () => {
    const topUp = (keyId: string, amount: number) => h.admin(`/admin/keys/${keyId}/credits`, { method: "POST", body: JSON.stringify({ amount }) });
    const error = async (res: Response) => ((await res.json()) as { error: { code: string; param: string; message: string } }).error;
    const revoked = await h.createKey({ credits: 1 });
    // A top-up made before the revocation, retried after it: the retry still gets its answer.
    const granted = await h.admin(`/admin/keys/${revoked.id}/credits`, { method: "POST", body: '{"amount":1}', headers: { "idempotency-key": "before" } });
    expect(granted.status).toBe(200);
    expect((await h.admin(`/admin/keys/${revoked.id}`, { method: "DELETE" })).status).toBe(200);
    const retry = await h.admin(`/admin/keys/${revoked.id}/credits`, { method: "POST", body: '{"amount":1}', headers: { "idempotency-key": "before" } });
    expect(retry.status).toBe(200);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    const r = await topUp(revoked.id, 50);
    expect(r.status).toBe(409);
    expect(await error(r)).toMatchObject({ code: "key_inactive", param: "id", message: expect.stringMatching(/revoked: credits granted to it could never be spent/) });
    const expiresAt = clock.now() + 1000; // ahead enough to be in the future when the shim checks it, on a loaded machine too
    const expiring = await h.createKey({ credits: 1, expires_at: new Date(expiresAt).toISOString() });
    await new Promise((done) => setTimeout(done, Math.max(0, expiresAt - clock.now()) + 50));
    // An expired key's credits can be spent once its expiry is moved on: the refusal says so.
    const late = await topUp(expiring.id, 50);
    expect(late.status).toBe(409);
    const lateError = await error(late);
    expect(lateError).toMatchObject({ code: "key_inactive", param: "id" });
    expect(lateError.message).toMatch(/expired.*manage-keys update --expires-at/);
    expect(lateError.message).not.toMatch(/never/);
    // Past 10^15 µc a balance has more than 15 significant digits, which a JSON number (a double
    // once parsed) does not hold exactly: the answers would show it 1 µc off.
    const rich = await h.createKey({ credits: 999_000_000 });
    const big = await topUp(rich.id, 1_000_001);
    expect(big.status).toBe(400);
    expect(await error(big)).toMatchObject({ code: "invalid_request", param: "amount" });
    // An amount that is itself past what the ledger holds is told so, not told it has too many decimals.
    for (const [path, body] of [[`/admin/keys/${rich.id}/credits`, { amount: 1_000_000_001 }], ["/admin/keys", { name: "big", credits: "1000000000.000001" }]] as const) {
      const res = await h.admin(path, { method: "POST", body: JSON.stringify(body) });
      expect(res.status).toBe(400);
      expect((await res.json()) as { error: { message: string } }).toMatchObject({ error: { message: `'${"amount" in body ? "amount" : "credits"}' must be at most 1000000000 credits.` } });
    }
    // The largest balance is shown exactly, to the µc, where a client reads it.
    const largest = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "largest", credits: "999999999.999999" }) }); // 15 significant digits
    const text = await largest.text();
    h.secrets.add((JSON.parse(text) as { key: string }).key);
    expect(text).toContain('"balance":999999999.999999,');
    expect((JSON.parse(text) as { balance: number }).balance.toFixed(6)).toBe("999999999.999999");
    for (const k of [revoked, expiring, rich]) {
      const audit = (await h.store.audit()).find((a) => a.keyId === k.id)!;
      expect(audit.balance).toBe(audit.ledgerSum);
      expect(audit.balance).toBe(k === rich ? 999_000_000 * 1_000_000 : k === revoked ? 2_000_000 : 1_000_000);
    }
  });

  it("GET /v1/usage: seed 004's shape for the calling key, current UTC month by default", async () => {
    const { key } = await h.createKey({ credits: 100 });
    const c = h.client(key);
    await c.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "one two" }], max_tokens: 4 });
    await c.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "three" }], max_tokens: 2 });
    await c.embeddings.create({ model: "bge-m3", input: "a b c" });
    const [u1, u2, u3] = h.fake.usages.slice(-3);
    // A request the upstream failed is charged nothing, and is not one of the report's requests.
    h.fake.set({ failStatus: 500 });
    try {
      await expect(c.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "four" }], max_tokens: 2 }, { maxRetries: 0 })).rejects.toThrow();
    } finally {
      h.fake.set({ failStatus: null });
    }
    const res = await fetch(`${h.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } });
    const report = (await res.json()) as Record<string, any>;
    const now = new Date(clock.now());
    const month = `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
    expect(report.period.start).toBe(`${month}-01T00:00:00Z`);
    expect(report.period.end).toMatch(new RegExp(`^${month}-(28|29|30|31)T23:59:59Z$`));
    const chatTokens = u1!.total_tokens + u2!.total_tokens;
    const chatCost = (2_000_000 + 500 * (u1!.prompt_tokens + u2!.prompt_tokens) + 1000 * (u1!.completion_tokens + u2!.completion_tokens)) / 1e6;
    expect(report.usage).toEqual({
      total_requests: 3,
      total_tokens: chatTokens + u3!.total_tokens,
      total_cost: chatCost + 1,
      models: { "qwen2.5-7b": { requests: 2, tokens: chatTokens, cost: chatCost }, "bge-m3": { requests: 1, tokens: u3!.total_tokens, cost: 1 } },
    });
    expect(report).toMatchObject({ credits_charged: 0, credits_remaining: 100 - chatCost - 1 });
    const empty = (await (await fetch(`${h.url}/v1/usage?from=2020-01-01&to=2020-01-31`, { headers: { authorization: `Bearer ${key}` } })).json()) as Record<string, any>;
    expect(empty).toMatchObject({ period: { start: "2020-01-01T00:00:00Z", end: "2020-01-31T23:59:59Z" }, usage: { total_requests: 0, total_tokens: 0, total_cost: 0, models: {} } });
    expect((await fetch(`${h.url}/v1/usage?from=nonsense`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(400);
    const noDay = await fetch(`${h.url}/v1/usage?to=2026-11-31`, { headers: { authorization: `Bearer ${key}` } });
    expect(noDay.status).toBe(400);
    expect(((await noDay.json()) as { error: { message: string; param: string } }).error).toMatchObject({ param: "to", message: "'to': 2026-11-31 is not a day: November 2026 has 30 days." });
  });

  it("GET /admin/usage groups by model or day, as JSON or CSV, filtered by key", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    await h.client(key).embeddings.create({ model: "bge-m3", input: "x" });
    await h.client(key).embeddings.create({ model: "bge-m3", input: "y" });
    const json = (await (await h.admin(`/admin/usage?key=${id}`)).json()) as Record<string, any>;
    expect(json).toMatchObject({ object: "usage_report", group: "model", data: [{ key_id: id, model: "bge-m3", requests: 2, cost: 2 }] });
    const day = (await (await h.admin(`/admin/usage?key=${id}&group=day`)).json()) as Record<string, any>;
    expect(day.data).toEqual([expect.objectContaining({ key_id: id, day: new Date(clock.now()).toISOString().slice(0, 10), requests: 2 })]);
    const csv = await h.admin(`/admin/usage?key=${id}&format=csv`);
    expect(csv.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    expect((await csv.text()).split("\r\n")).toEqual(["key_id,model,requests,prompt_tokens,completion_tokens,total_tokens,cost", `${id},bge-m3,2,2,0,2,2`, ""]);
    // By day, the CSV's second column is the day, and its header says so (found by mutation review).
    const dayCsv = (await (await h.admin(`/admin/usage?key=${id}&format=csv&group=day`)).text()).split("\r\n");
    expect(dayCsv).toEqual(["key_id,day,requests,prompt_tokens,completion_tokens,total_tokens,cost", `${id},${new Date(clock.now()).toISOString().slice(0, 10)},2,2,0,2,2`, ""]);
    // By day and model: a row per key, day and model (an invoice's when prices differ per model), both columns named.
    const today = new Date(clock.now()).toISOString().slice(0, 10);
    await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
    const both = await h.admin(`/admin/usage?key=${id}&format=csv&group=day,model`);
    expect((await both.text()).split("\r\n").map((l) => l.split(",").slice(0, 4).join(","))).toEqual([
      "key_id,day,model,requests", `${id},${today},bge-m3,2`, `${id},${today},qwen2.5-7b,1`, "",
    ]);
    const bothJson = (await (await h.admin(`/admin/usage?key=${id}&group=day%2Cmodel`)).json()) as Record<string, any>;
    expect(bothJson).toMatchObject({ group: "day,model", data: [{ key_id: id, day: today, model: "bge-m3", requests: 2 }, { key_id: id, day: today, model: "qwen2.5-7b", requests: 1 }] });
    const all = (await (await h.admin("/admin/usage")).json()) as Record<string, any>;
    expect(all.data.length).toBeGreaterThan(1);
    for (const bad of ["group=week", "group=model,day", "format=xml", "from=x"]) expect((await h.admin(`/admin/usage?${bad}`)).status).toBe(400);
  });

  it("usage reports refuse a query parameter they do not know, naming it, instead of answering another report", async () => {
    const { key, id } = await h.createKey({ credits: 100 });
    const refused = async (res: Response, param: string) => {
      expect(res.status, param).toBe(400);
      expect(((await res.json()) as { error: unknown }).error).toEqual({ type: "invalid_request_error", code: "invalid_request", param, message: expect.stringContaining(`Unknown query parameter '${param}'; known: `) });
    };
    // The report's own column name: this used to answer every key's usage.
    await refused(await h.admin(`/admin/usage?key_id=${id}`), "key_id");
    await refused(await h.admin("/admin/usage?group=day&form=2020-01-01"), "form");
    // Seed 004's period names: this used to answer the current month.
    const v1 = (query: string) => fetch(`${h.url}/v1/usage?${query}`, { headers: { authorization: `Bearer ${key}` } });
    await refused(await v1("start=2020-01-01&end=2020-01-31"), "start");
    await refused(await v1("from=2020-01-01&group=day"), "group");
    expect((await v1("from=2020-01-01&to=2020-01-31")).status).toBe(200);
  });

  it("GET /admin/usage?key= a key the store does not have is a 404, as on the key routes; a revoked key's usage is reported", async () => {
    const missing = await h.admin("/admin/usage?key=NoSuchKey123");
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: unknown }).error).toMatchObject({ code: "not_found", param: "key" });
    const { key, id } = await h.createKey({ credits: 100 });
    await h.client(key).embeddings.create({ model: "bge-m3", input: "x" });
    expect((await h.admin(`/admin/keys/${id}`, { method: "DELETE" })).status).toBe(200);
    const revoked = await h.admin(`/admin/usage?key=${id}`);
    expect(revoked.status).toBe(200);
    expect(((await revoked.json()) as { data: unknown[] }).data).toEqual([expect.objectContaining({ key_id: id, requests: 1 })]);
  });

  it("a period bound's +hh:mm typed unencoded (arriving as a space) is read as the offset it was", async () => {
    const { key } = await h.createKey({ credits: 100 });
    // fetch leaves a literal + in the query, which the query parser decodes as a space.
    const range = "from=2026-03-01T00:00:00+01:00&to=2026-03-02T00:00:00+0100";
    const admin = await h.admin(`/admin/usage?${range}`);
    expect(admin.status).toBe(200);
    expect(((await admin.json()) as { period: unknown }).period).toEqual({ start: "2026-02-28T23:00:00Z", end: "2026-03-01T22:59:59Z" });
    const own = await fetch(`${h.url}/v1/usage?${range}`, { headers: { authorization: `Bearer ${key}` } });
    expect(own.status).toBe(200);
    expect(((await own.json()) as { period: unknown }).period).toEqual({ start: "2026-02-28T23:00:00Z", end: "2026-03-01T22:59:59Z" });
    // Encoded, as a client library sends it, it is the same period.
    expect(((await (await h.admin(`/admin/usage?from=2026-03-01T00:00:00%2B01:00&to=2026-03-02T00:00:00%2B0100`)).json()) as { period: unknown }).period).toEqual({ start: "2026-02-28T23:00:00Z", end: "2026-03-01T22:59:59Z" });
    // A space anywhere else is still not a timestamp.
    expect((await h.admin("/admin/usage?from=2026-03-01%2000:00:00Z")).status).toBe(400);
  });
});

describe("a usage report whose client leaves while it waits for its turn", () => {
  it.each(["/v1/usage", "/admin/usage"])("%s: the store is told (the report gives up its place), and the request is logged as 499, not as a failure", async (path) => {
    let seen: AbortSignal | undefined;
    const h = await startShim({
      // A store whose reports wait until their asker leaves, as queued reports on a busy Postgres do.
      wrapStore: (s) => overrideStore(s, {
        usage: (q) => new Promise((_, reject) => {
          seen = q.signal;
          q.signal?.addEventListener("abort", () => reject(q.signal!.reason));
        }),
      }),
    });
    try {
      const { key } = await h.createKey();
      const ac = new AbortController();
      const asked = fetch(`${h.url}${path}`, { signal: ac.signal, headers: { authorization: `Bearer ${path.startsWith("/admin") ? h.adminToken : key}` } });
      await expect.poll(() => seen).toBeDefined();
      ac.abort();
      await expect(asked).rejects.toThrow();
      await expect.poll(() => seen!.aborted).toBe(true);
      expect(seen!.reason).toBeInstanceOf(ClientLeftError);
      expect(await h.waitForRequestLog((l) => l.path.startsWith(path))).toMatchObject({ status: 499, error: "client_closed_request" });
      expect(h.logs.filter((l) => JSON.parse(l).level >= 50)).toEqual([]);
    } finally {
      await h.close();
    }
  });
});

describe("usage reports of a free model (no price: every request charged 0)", () => {
  it("count a request the upstream served though it failed after content (a stream cut: 502), with its tokens", async () => {
    // Its reports are of the current month: a clock from midday mid-month keeps the requests in it.
    const h = await startShim({ clock: clockFrom(Date.UTC(2026, 2, 15, 12)), file: { pricing: { request: 0, batchRequest: 0 }, models: [{ name: "qwen2.5-7b" }, { name: "bge-m3" }] } });
    try {
      const { key, id } = await h.createKey({ credits: 10 });
      h.fake.set({ stopAfterTokens: 3, stopMode: "cut" });
      const stream = await h.client(key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true });
      let text = "";
      await expect((async () => {
        for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
      })()).rejects.toThrow();
      expect(text).toBe("t1 t2 t3");
      await h.waitForRequestLog((l) => l.keyId === id);
      const report = (await (await h.admin(`/admin/usage?key=${id}`)).json()) as { data: unknown[] };
      // No usage came: the text delivered ("t1 t2 t3") is estimated, 3 digits and 5 other bytes = 5 tokens.
      expect(report.data).toEqual([expect.objectContaining({ key_id: id, model: "qwen2.5-7b", requests: 1, completion_tokens: 5, cost: 0 })]);
      const own = (await (await fetch(`${h.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })).json()) as { usage: { total_requests: number; total_cost: number } };
      expect(own.usage).toMatchObject({ total_requests: 1, total_cost: 0 });
      // One the upstream failed before any content is still not a request of the report.
      h.fake.set({ stopAfterTokens: 0, stopMode: "cut" });
      const failed = await (await h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 10, stream: true })).text();
      expect(failed).toContain('"code":"upstream_error"');
      expect(failed).not.toContain("t1");
      const chats = () => h.logs.map((l) => JSON.parse(l) as { msg: string; keyId?: string; path?: string }).filter((e) => e.msg === "request" && e.keyId === id && e.path === "/v1/chat/completions");
      await expect.poll(() => chats().length).toBe(2);
      expect(((await (await h.admin(`/admin/usage?key=${id}`)).json()) as { data: unknown[] }).data).toEqual(report.data);
    } finally {
      await h.close();
    }
  });
});

describe("keys of a free tenant (pricing.request: 0: a request holds no credit)", () => {
  it("GET /admin/keys counts a key's requests in flight (requests_in_flight), though it holds nothing", async () => {
    const h = await startShim({ file: { pricing: { request: 0 }, models: [{ name: "qwen2.5-7b" }] } });
    try {
      const { key, id } = await h.createKey({ credits: 0 });
      h.fake.set({ headerDelayMs: 3500 }); // in flight while the test looks, however loaded the machine (the harness times the upstream out at 5 s)
      const running = h.post(key, "/v1/chat/completions", { model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 4 });
      const shown = async () => ((await (await h.admin("/admin/keys")).json()) as { data: { id: string; held: number; requests_in_flight: number }[] }).data.find((k) => k.id === id)!;
      await expect.poll(async () => (await shown()).requests_in_flight).toBe(1);
      expect((await shown()).held).toBe(0);
      const revoked = (await (await h.admin(`/admin/keys/${id}`, { method: "DELETE" })).json()) as { requests_in_flight: number };
      expect(revoked.requests_in_flight).toBe(1);
      expect((await running).status).toBe(200);
      await expect.poll(async () => (await shown()).requests_in_flight).toBe(0);
    } finally {
      await h.close();
    }
  });
});

describe("the line a usage report waits in", () => {
  it("is its asker's: the key's own on /v1/usage, the operator's on /admin/usage whichever key it reports on", async () => {
    const asked: { keyId: string | null; asker: string | null }[] = [];
    const h = await startShim({ wrapStore: (s) => overrideStore(s, { usage: (q) => (asked.push({ keyId: q.keyId, asker: q.asker }), Promise.resolve([])) }) });
    try {
      const { key, id } = await h.createKey();
      expect((await fetch(`${h.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
      expect((await h.admin(`/admin/usage?key=${id}`)).status).toBe(200);
      expect((await h.admin("/admin/usage")).status).toBe(200);
      expect(asked).toEqual([{ keyId: id, asker: id }, { keyId: id, asker: null }, { keyId: null, asker: null }]);
    } finally {
      await h.close();
    }
  });
});

describe("GET /v1/usage of a model named like an object's own member", () => {
  it("lists a model served as __proto__ under its name, and answers with the key's credit headers (charged 0, its credits left, as its body says)", async () => {
    const h = await startShim({
      file: { models: [{ name: "__proto__" }] },
      fake: { ...DEFAULT_FAKE, models: [{ name: "__proto__", root: "Qwen/Qwen2.5-7B-Instruct", maxModelLen: 8192 }] },
    });
    try {
      const { key } = await h.createKey({ credits: 100 });
      await h.client(key).chat.completions.create({ model: "__proto__", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
      const [u] = h.fake.usages.slice(-1);
      const res = await fetch(`${h.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } });
      const text = await res.text();
      // The model's line is in the report as the client named it, not swallowed as a prototype.
      expect(text).toContain(`"models":{"__proto__":{"requests":1,"tokens":${u!.total_tokens},`);
      expect((JSON.parse(text) as { usage: { total_requests: number } }).usage.total_requests).toBe(1);
      expect(res.headers.get("x-credits-remaining")).toBe(String((JSON.parse(text) as { credits_remaining: number }).credits_remaining));
      expect(res.headers.get("x-credits-charged")).toBe("0");
    } finally {
      await h.close();
    }
  });
});
