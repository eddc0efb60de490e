import { describe, expect, it } from "vitest";
import { AdminApiError, adminClient, type AdminClient, type ApiKey, type CreditGrant } from "../../scripts/lib/admin-client.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { runCommand } from "../../scripts/manage-keys.ts";

describe("manage-keys: a key with credits held (a request in flight) and spent since a top-up", () => {
  // As the shim shows a key with one request in flight holding 4 of its 10 credits.
  const key: ApiKey = { id: "AAAAAAAAAAAA", name: "busy", tier: "free", models: null, balance: 10, held: 4, credits_remaining: 6, requests_in_flight: 1, from_configuration: false, created_at: "2026-01-01T00:00:00.000Z", expires_at: null, revoked_at: null };
  const clientAnswering = (grant: CreditGrant) => ({ listKeys: async () => [key], topUp: async () => grant }) as unknown as AdminClient;

  it("list: REMAINING is balance less held, not the balance", async () => {
    const io = memoryIo();
    expect(await runCommand("list", {}, clientAnswering({} as CreditGrant), io)).toBe(0);
    expect(io.stdout.join("\n")).toMatch(/^AAAAAAAAAAAA +busy +free +10 +4 +1 +6 +all +\S+ +- +- +active +api$/m);
  });

  it("list: SOURCE says which keys come from the stack's configuration (changed there, not with update or rotate); '-' where the shim does not say", async () => {
    const io = memoryIo();
    const { from_configuration: _, ...older } = { ...key, id: "CCCCCCCCCCCC", name: "older" }; // a shim older than the flag
    const keys = [{ ...key, from_configuration: false }, { ...key, id: "BBBBBBBBBBBB", name: "app", from_configuration: true }, older];
    expect(await runCommand("list", {}, { listKeys: async () => keys } as unknown as AdminClient, io)).toBe(0);
    const lines = io.stdout.join("\n").split("\n");
    expect(lines[0]).toMatch(/ +STATUS +SOURCE$/);
    expect(lines.slice(1).map((l) => l.split(/ +/).at(-1))).toEqual(["api", "config", "-"]);
  });

  it("top-up: prints the remaining credits the API gave, not the balance", async () => {
    const io = memoryIo();
    const grant: CreditGrant = { key_id: key.id, amount: 5, note: null, balance: 15, credits_remaining: 11, replayed: false };
    expect(await runCommand("top-up", { key: "busy", amount: "5" }, clientAnswering(grant), io)).toBe(0);
    expect(io.stdout.join("\n")).toBe("Added 5 credits to busy (AAAAAAAAAAAA): balance 15, remaining 11.");
  });

  it("a replayed top-up prints the balance right after it and the balance now, which spending since made differ", async () => {
    const io = memoryIo();
    const grant: CreditGrant = { key_id: key.id, amount: 5, note: null, balance: 25, credits_remaining: 25, replayed: true };
    expect(await runCommand("top-up", { key: "busy", amount: "5", "idempotency-key": "inv-1" }, clientAnswering(grant), io)).toBe(0);
    expect(io.stdout.join("\n")).toBe("Already applied with this Idempotency-Key; nothing added. Key busy (AAAAAAAAAAAA) had a balance of 25 right after it; now 10.");
  });
});

describe("manage-keys: refusals before or after the request", () => {
  const key: ApiKey = { id: "AAAAAAAAAAAA", name: "team-07", tier: "free", models: null, balance: 1, held: 0, credits_remaining: 1, requests_in_flight: 0, created_at: "2026-01-01T00:00:00.000Z", expires_at: null, revoked_at: null };

  it("an --idempotency-key with a DEL (0x7f) is refused up front: nothing listed or sent", async () => {
    const calls: string[] = [];
    const client = { listKeys: async () => (calls.push("list"), [key]), topUp: async () => { calls.push("topUp"); throw new Error("sent"); } } as unknown as AdminClient;
    const run = runCommand("top-up", { key: "team-07", amount: "1", "idempotency-key": "inv\x7f1" }, client, memoryIo());
    await expect(run).rejects.toThrow(/--idempotency-key has .*use printable ASCII/);
    expect(calls).toEqual([]);
  });

  it("update whose answer was lost says the change may have been made and that running it again is safe", async () => {
    const client = {
      listKeys: async () => [key],
      updateKey: async () => { throw new AdminApiError("no answer from the admin API to PATCH …", { outcome: "unknown" }); },
    } as unknown as AdminClient;
    const run = runCommand("update", { url: "https://example.test", key: "team-07", tier: "pro" }, client, memoryIo());
    await expect(run).rejects.toThrow("The change may have been made. Running this update again is safe: it sets the same values (npm run manage-keys -- list --url=https://example.test shows them).");
  });
});

describe("admin client: a 500 may come after the API acted", () => {
  it("a top-up answered 500 may have been applied: the error says so, with the retry", async () => {
    const key = { id: "AAAAAAAAAAAA", object: "api_key", name: "team-07", tier: "free", models: null, balance: 1, held: 0, credits_remaining: 1, requests_in_flight: 0, created_at: "2026-01-01T00:00:00.000Z", expires_at: null, revoked_at: null };
    const fake: typeof fetch = async (_url, init) => init?.method === "GET"
      ? new Response(JSON.stringify({ object: "list", data: [key] }), { status: 200, headers: { "content-type": "application/json" } })
      : new Response(JSON.stringify({ error: { message: "Internal error.", type: "server_error", param: null, code: "internal_error" } }), { status: 500, headers: { "content-type": "application/json" } });
    const client = adminClient({ baseUrl: "https://example.test", adminToken: "t".repeat(48), source: "test" }, fake);
    const run = runCommand("top-up", { url: "https://example.test", key: "team-07", amount: "5", "idempotency-key": "inv-500" }, client, memoryIo());
    await expect(run).rejects.toThrow(/failed: 500 [\s\S]*The top-up may have been applied\. Retry it with the same Idempotency-Key/);
  });
});

// Found by an operator review: a top-up to a key that is not active printed "to retry safely: …"
// before a request that cannot succeed; a create with `--models ,` sent `models: []`.
describe("manage-keys: a request that cannot succeed is refused before it is sent", () => {
  const active: ApiKey = { id: "AAAAAAAAAAAA", name: "team-07", tier: "free", models: null, balance: 1, held: 0, credits_remaining: 1, requests_in_flight: 0, created_at: "2026-01-01T00:00:00.000Z", expires_at: null, revoked_at: null };
  const recording = (key: ApiKey, grant?: CreditGrant) => {
    const sent: string[] = [];
    const client = {
      listKeys: async () => [key],
      topUp: async () => { sent.push("topUp"); return grant; },
      createKey: async () => { sent.push("createKey"); throw new Error("sent"); },
    } as unknown as AdminClient;
    return { client, sent };
  };

  it.each([
    ["revoked", { ...active, revoked_at: "2026-02-01T10:00:00.000Z" }, "top-up refused: key team-07 (AAAAAAAAAAAA) is revoked (since 2026-02-01T10:00:00Z), and a revoked key cannot be credited: create a new key instead"],
    ["expired", { ...active, expires_at: "2026-02-01T00:00:00.000Z" }, "top-up refused: key team-07 (AAAAAAAAAAAA) is expired (since 2026-02-01T00:00:00Z): move its expiry on first (npm run manage-keys -- update --url=https://example.test --key=AAAAAAAAAAAA --expires-at <time>), then top it up"],
  ] as const)("top-up to a key that is %s: one line naming its state, no retry line, nothing sent", async (_state, key, message) => {
    const { client, sent } = recording(key);
    const io = memoryIo();
    await expect(runCommand("top-up", { url: "https://example.test", key: "team-07", amount: "5" }, client, io)).rejects.toThrow(message);
    expect(io.stderr).toEqual([]);
    expect(sent).toEqual([]);
  });

  it("a retry (--idempotency-key given) to a key revoked since still goes through: the API answers it with the first top-up", async () => {
    const grant: CreditGrant = { key_id: active.id, amount: 5, note: null, balance: 6, credits_remaining: 6, replayed: true };
    const { client, sent } = recording({ ...active, revoked_at: "2026-02-01T10:00:00.000Z" }, grant);
    const io = memoryIo();
    expect(await runCommand("top-up", { key: "AAAAAAAAAAAA", amount: "5", "idempotency-key": "inv-1" }, client, io)).toBe(0);
    expect(sent).toEqual(["topUp"]);
    expect(io.stdout.join("\n")).toMatch(/^Already applied with this Idempotency-Key/);
  });

  it.each([[","], [" , "]])("create --models %j: refused as update refuses it, nothing sent", async (models) => {
    const { client, sent } = recording(active);
    await expect(runCommand("create", { name: "team-08", models }, client, memoryIo())).rejects.toThrow("--models has no model names: give them comma-separated (e.g. qwen2.5-7b,bge-m3), or leave --models out for every model");
    expect(sent).toEqual([]);
  });
});
