import { describe, expect, it } from "vitest";
import { hashKey } from "../../api-shim/src/auth/keys.ts";
import { ConfigError, parseShimConfig } from "../../api-shim/src/config.ts";
import { manualClock } from "../support/clocks.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";

/**
 * What a mutation review of keys, authentication and the admin API found no test would notice
 * (each test fails with its mutant, named in the comment above it, and passes without).
 */
describe("authentication and the admin API, at the edges", () => {
  // keys.ts bearerToken: `header.length > 4096` -> `> 400`
  it("a long SHIM_ADMIN_TOKEN, up to what an Authorization header carries, works: 4089 characters", async () => {
    const token = "t".repeat(89) + "0123456789".repeat(400);
    const h = await startShim({ env: { SHIM_ADMIN_TOKEN: token } });
    h.secrets.add(token);
    try {
      const res = await fetch(`${h.url}/admin/keys`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
    } finally {
      await h.close();
    }
  });

  // Found by the same review: one longer started, and every admin request with it got 401.
  it("a SHIM_ADMIN_TOKEN longer than an Authorization header carries is refused at start, saying the most", () => {
    let problems: readonly string[] = [];
    try {
      parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_ADMIN_TOKEN: "0123456789".repeat(500) }, () => "");
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      problems = e.problems;
    }
    expect(problems).toEqual(["SHIM_ADMIN_TOKEN: is 5000 characters long; expected at most 4089 (with `Bearer `, the 4096 of the Authorization header the shim reads)"]);
  });
});

describe("the admin API's fields, at the edges", () => {
  let h: Harness;
  const clock = manualClock(Date.now());
  const patch = (id: string, body: unknown) => h.admin(`/admin/keys/${id}`, { method: "PATCH", body: JSON.stringify(body) });
  const topUp = (id: string, body: unknown, idem?: string) =>
    h.admin(`/admin/keys/${id}/credits`, { method: "POST", headers: idem === undefined ? {} : { "idempotency-key": idem }, body: JSON.stringify(body) });
  const shown = async (id: string) => ((await (await h.admin("/admin/keys")).json()) as { data: { id: string; expires_at: string | null; tier: string }[] }).data.find((k) => k.id === id)!;

  it("an Idempotency-Key of exactly 200 characters is taken; 201 is refused", async () => {
    h = await startShim({ clock });
    try {
      const { id } = await h.createKey({ credits: 0 });
      expect((await topUp(id, { amount: 1 }, "k".repeat(200))).status).toBe(200);
      expect((await topUp(id, { amount: 1 }, "k".repeat(201))).status).toBe(400);
      // An empty one is refused too: taken, two top-ups sending it would be one (the second replayed).
      expect((await topUp(id, { amount: 1 }, "")).status).toBe(400);
    } finally { await h.close(); }
  });

  it("a top-up's note with a control character, and an amount of 0, are refused 400", async () => {
    h = await startShim({ clock });
    try {
      const { id } = await h.createKey({ credits: 0 });
      expect((await topUp(id, { amount: 1, note: "bad\u0007bell" })).status).toBe(400);
      expect((await topUp(id, { amount: 0 })).status).toBe(400);
    } finally { await h.close(); }
  });

  it("expiresAt (the name first documented) sets the expiry; expires_at: null takes it off", async () => {
    h = await startShim({ clock });
    try {
      const at = new Date(clock.now() + 86_400_000).toISOString();
      const res = await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "alias", expiresAt: at }) });
      const created = (await res.json()) as { id: string; expires_at: string | null };
      expect([res.status, created.expires_at]).toEqual([201, at]);
      expect((await patch(created.id, { expires_at: null })).status).toBe(200);
      expect((await shown(created.id)).expires_at).toBeNull();
    } finally { await h.close(); }
  });

  it("an unknown tier is refused 400, on create and on update; an update naming nothing is refused 400", async () => {
    h = await startShim({ clock });
    try {
      expect((await h.admin("/admin/keys", { method: "POST", body: JSON.stringify({ name: "t", tier: "platinum" }) })).status).toBe(400);
      const { id } = await h.createKey();
      expect((await patch(id, { tier: "platinum" })).status).toBe(400);
      expect((await patch(id, {})).status).toBe(400);
      expect((await shown(id)).tier).toBe("enterprise");
    } finally { await h.close(); }
  });

  it("a usage report for a key id that is not one is refused 400, not 404", async () => {
    h = await startShim({ clock });
    try {
      const res = await h.admin("/admin/usage?key=short");
      expect(res.status).toBe(400);
    } finally { await h.close(); }
  });
});

describe("a bootstrap key's hash in SHIM_CONFIG, at the edges", () => {
  const problems = (yaml: string): string[] => {
    try {
      parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/cfg.yaml" }, () => yaml);
    } catch (e) {
      if (e instanceof ConfigError) return [...e.problems];
      throw e;
    }
    return [];
  };
  const key = "sk-gs-AbC123xyz789_" + "Q".repeat(32);
  const hex = hashKey(key).slice("sha256:".length);

  // config-file.ts KEY_HASH: `[0-9a-f]{64}$` -> `[0-9a-fA-F]{64}$`, and -> `[0-9a-f]{64}` (no `$`)
  it("a hash in upper case (PowerShell's Get-FileHash), or with more after its 64 digits, is refused at start: the key would never authenticate", () => {
    expect(problems(`bootstrapKeys: [{ id: AbC123xyz789, hash: "sha256:${hex}" }]`)).toEqual([]);
    expect(problems(`bootstrapKeys: [{ id: AbC123xyz789, hash: "sha256:${hex.toUpperCase()}" }]`)).toEqual([expect.stringMatching(/^SHIM_CONFIG bootstrapKeys\[0\]\.hash: is not valid/)]);
    expect(problems(`bootstrapKeys: [{ id: AbC123xyz789, hash: "sha256:${hex}0" }]`)).toEqual([expect.stringMatching(/^SHIM_CONFIG bootstrapKeys\[0\]\.hash: is not valid/)]);
  });
});
