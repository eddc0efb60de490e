// reap-expired revokes a tenant's live keys before it saves its usage; a key that had already
// expired is left as it is: revoked is final, and an operator who keeps the tenant after all can
// still move its expiry (`manage-keys update --expires-at`) and so give its credits back.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { adminClient } from "../../scripts/lib/admin-client.ts";
import { retireKeys } from "../../scripts/lib/retire-keys.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

let shim: Harness;
let offset = 0;
const shimNow = () => Date.now() + offset;
beforeAll(async () => { shim = await startShim({ clock: { now: shimNow, monotonic: () => performance.now() } }); });
afterAll(async () => shim?.close());

const client = () => adminClient({ baseUrl: shim.url, adminToken: shim.adminToken, source: "test" });

describe("retireKeys", () => {
  it("revokes the live keys only: an expired key keeps revoked_at null, and the line counts it apart", async () => {
    const expired = await shim.createKey({ name: "old", credits: 1, expires_at: new Date(shimNow() + 1_500).toISOString() });
    const current = await shim.createKey({ name: "current", credits: 1 });
    const later = await shim.createKey({ name: "later", credits: 1, expires_at: new Date(shimNow() + 3_600_000).toISOString() });
    offset += 300_000; // five minutes on: "old" expired, "later" not yet
    const lines: string[] = [];
    const revoking: string[] = [];
    const { keys } = await retireKeys(client(), { progress: (l) => lines.push(l), revoking: (k) => revoking.push(k.id), settleTimeoutMs: 0, now: shimNow() });
    expect(lines[0]).toMatch(/^revoking its 2 live keys \(1 expired, left as it is\): the tenant is being destroyed/);
    expect(revoking.sort()).toEqual([current.id, later.id].sort());
    expect(keys.find((k) => k.id === expired.id)!.revoked_at).toBeNull();
    expect(keys.find((k) => k.id === current.id)!.revoked_at).not.toBeNull();
    expect(keys.find((k) => k.id === later.id)!.revoked_at).not.toBeNull();
  });

  it("with only expired keys left, revokes nothing and says so", async () => {
    const lines: string[] = [];
    const revoking: string[] = [];
    await retireKeys(client(), { progress: (l) => lines.push(l), revoking: (k) => revoking.push(k.id), settleTimeoutMs: 0, now: shimNow() });
    expect(revoking).toEqual([]);
    expect(lines).toEqual(["no live key to revoke (1 expired, left as it is)"]);
  });

  it("a key that expired less than a minute ago is revoked as live: the host's clock may be behind this machine's", async () => {
    const justNow = await shim.createKey({ name: "just-now", credits: 1, expires_at: new Date(shimNow() + 1_000).toISOString() });
    const revoking: string[] = [];
    await retireKeys(client(), { progress: () => {}, revoking: (k) => revoking.push(k.id), settleTimeoutMs: 0, now: shimNow() + 30_000 });
    expect(revoking).toEqual([justNow.id]);
  });
});

// The wait for requests in flight is on the monotonic clock: a wall-clock step forward (NTP) does not end it.
describe("retireKeys' wait for requests in flight", () => {
  afterEach(() => vi.restoreAllMocks());
  it("is not ended by the wall clock stepping an hour forward", async () => {
    let lists = 0;
    const key = (inFlight: number) => ({ id: "k", name: "t", revoked_at: "2026-01-01T00:00:00Z", held: 0, requests_in_flight: inFlight });
    const client = {
      listKeys: async () => {
        lists++;
        if (lists === 2) { const real = Date.now(); vi.spyOn(Date, "now").mockReturnValue(real + 3_600_000); }
        return [key(lists < 5 ? 1 : 0)];
      },
      revokeKey: async () => { throw new Error("not called"); },
    };
    const { stillHolding } = await retireKeys(client as never, { progress: () => {}, settleTimeoutMs: 10_000, pollMs: 10, now: Date.now() });
    expect(stillHolding).toEqual([]);
  });
});
