import { afterEach, describe, expect, it } from "vitest";
import { manualClock } from "../support/clocks.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";

/**
 * A planned rotation of the admin token (docs/operations.md, "Rotate the admin token"): the
 * token being rotated out, SHIM_ADMIN_TOKEN_PREVIOUS, still gets in until
 * SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL, and every request that used it says so (a header to the
 * caller, a field on its log line, a counter), so the operator can find who has yet to move.
 */
const PREVIOUS = "previous-admin-token-0123456789abcdef";
const START = Date.UTC(2026, 5, 1, 12, 0, 0);
const UNTIL = "2026-06-08T12:00:00Z";

describe("the previous admin token during a rotation's overlap", () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  const get = (token: string) => fetch(`${h!.url}/admin/keys`, { headers: { authorization: `Bearer ${token}` } });
  const previousCount = async () => {
    const scrape = await (await fetch(`${h!.url}/metrics`)).text();
    const line = scrape.split("\n").find((l) => l.startsWith("shim_admin_previous_token_requests_total "));
    return line === undefined ? undefined : Number(line.split(" ")[1]);
  };

  it("is served until UNTIL, marked on the answer, the log line and the counter; after UNTIL it is a wrong token", async () => {
    const clock = manualClock(START);
    h = await startShim({ clock, env: { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: UNTIL } });
    h.secrets.add(PREVIOUS); // the scan at close looks for it in every log line

    const current = await get(h.adminToken);
    expect(current.status).toBe(200);
    expect(current.headers.get("x-admin-token-previous")).toBeNull();
    expect(await previousCount()).toBe(0);

    const old = await get(PREVIOUS);
    expect(old.status).toBe(200);
    expect(old.headers.get("x-admin-token-previous")).toBe("true");
    expect(old.headers.get("x-admin-token-previous-until")).toBe("2026-06-08T12:00:00.000Z");
    const line = await h.waitForRequestLog((l) => l.reqId === old.headers.get("x-request-id"));
    expect(line).toMatchObject({ status: 200, adminToken: "previous" });
    const currentLine = await h.waitForRequestLog((l) => l.reqId === current.headers.get("x-request-id"));
    expect(currentLine).not.toHaveProperty("adminToken");
    expect(await previousCount()).toBe(1);

    // One millisecond before UNTIL it is still served; at UNTIL it is refused, without a restart.
    clock.advance(Date.parse(UNTIL) - START - 1);
    expect((await get(PREVIOUS)).status).toBe(200);
    clock.advance(1);
    const late = await get(PREVIOUS);
    expect(late.status).toBe(401);
    expect(((await late.json()) as { error: { code: string } }).error.code).toBe("invalid_admin_token");
    expect(late.headers.get("x-admin-token-previous")).toBeNull();
    expect(await previousCount()).toBe(2);
    expect((await get(h.adminToken)).status).toBe(200);
  });

  it("without UNTIL it is served with no expiry said; a request to an admin route that fails later still says which token it used", async () => {
    h = await startShim({ env: { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS } });
    h.secrets.add(PREVIOUS);
    const old = await get(PREVIOUS);
    expect(old.status).toBe(200);
    expect(old.headers.get("x-admin-token-previous")).toBe("true");
    expect(old.headers.has("x-admin-token-previous-until")).toBe(false);
    const missing = await fetch(`${h.url}/admin/keys/sk-gs-nope`, { method: "DELETE", headers: { authorization: `Bearer ${PREVIOUS}` } });
    expect(missing.status).toBe(404);
    expect(missing.headers.get("x-admin-token-previous")).toBe("true");
  });

  it("spends no wrong-token budget while valid, and is counted as a wrong token once expired", async () => {
    const clock = manualClock(START);
    h = await startShim({ clock, file: { unauthenticatedRpm: 2 }, env: { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS, SHIM_ADMIN_TOKEN_PREVIOUS_UNTIL: UNTIL } });
    h.secrets.add(PREVIOUS);
    for (let i = 0; i < 5; i++) expect((await get(PREVIOUS)).status).toBe(200);
    clock.advance(Date.parse(UNTIL) - START);
    expect((await get(PREVIOUS)).status).toBe(401);
    expect((await get(PREVIOUS)).status).toBe(401);
    const limited = await get(PREVIOUS);
    expect(limited.status).toBe(429);
    expect(((await limited.json()) as { error: { message: string } }).error.message).toContain("Too many wrong admin tokens");
    // The current token is still let in once that budget is spent.
    expect((await get(h.adminToken)).status).toBe(200);
  });

  it("is not an API key: the inference routes refuse it", async () => {
    h = await startShim({ env: { SHIM_ADMIN_TOKEN_PREVIOUS: PREVIOUS } });
    h.secrets.add(PREVIOUS);
    const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${PREVIOUS}` } });
    expect(res.status).toBe(401);
    expect(res.headers.get("x-admin-token-previous")).toBeNull();
  });
});
