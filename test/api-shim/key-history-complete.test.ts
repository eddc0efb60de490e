// When a key's history says it is complete (GET /admin/keys/{id}/events `complete`): it starts
// with the creation and leaves the key as its row is now. A change an older shim made (going back
// to the previous version, as upgrading.md allows) has no event, and the history must not be
// shown as the whole story (the review of the key history, finding 3).
import { describe, expect, it } from "vitest";
import { type KeyEvent, historyIsComplete } from "../../api-shim/src/store/key-events.ts";

const created: KeyEvent = { keyId: "k", at: 1, event: "created", requestId: "r1", changes: [{ field: "tier", to: "big" }, { field: "models", to: null }, { field: "expires_at", to: null }] };
const row = { name: "n", tier: "big", models: null, expiresAt: null, revokedAt: null, fromConfiguration: false };
const updated = (changes: KeyEvent["changes"]): KeyEvent => ({ keyId: "k", at: 2, event: "updated", requestId: "r2", changes });

describe("historyIsComplete", () => {
  it("a history from the creation that leaves the key as it is: complete; one without its creation: not", () => {
    expect(historyIsComplete([created], row)).toBe(true);
    expect(historyIsComplete([updated([{ field: "name" }])], row)).toBe(false);
    expect(historyIsComplete([created, updated([{ field: "tier", from: "big", to: "small" }, { field: "name" }])], { ...row, tier: "small" })).toBe(true);
  });

  it("a revocation, expiry, tier or models the events do not explain: not complete", () => {
    expect(historyIsComplete([created], { ...row, revokedAt: 3 })).toBe(false);
    expect(historyIsComplete([created, { keyId: "k", at: 3, event: "revoked", requestId: "r3", changes: [] }], { ...row, revokedAt: 3 })).toBe(true);
    expect(historyIsComplete([created], { ...row, expiresAt: 5_000 })).toBe(false);
    expect(historyIsComplete([created, updated([{ field: "expires_at", from: null, to: 5_000 }])], { ...row, expiresAt: 5_000 })).toBe(true);
    expect(historyIsComplete([created], { ...row, tier: "small" })).toBe(false);
    expect(historyIsComplete([created], { ...row, models: ["m"] })).toBe(false);
  });

  it("a stack key's tier and models, set from the stack at each start without events, are not held against it; its expiry is", () => {
    const stackKey = { ...row, fromConfiguration: true };
    expect(historyIsComplete([created], { ...stackKey, tier: "small", models: ["m"] })).toBe(true);
    expect(historyIsComplete([created], { ...stackKey, expiresAt: 5_000 })).toBe(false);
  });
});
