// Found by review: a rotation script run again (revoke by a name an earlier rotation left revoked, --json alike either way), and the command word before flags given first.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { runManageKeys } from "./run-manage-keys.ts";

let h: Harness;
beforeAll(async () => { h = await startShim(); });
afterAll(() => h.close());

const keys = (argv: string[]) => runManageKeys(h, argv);
const NO_HINT = (f: string) => `Unknown option '${f}'. (npm run manage-keys -- --help lists the options)`;

describe("commandWord", () => {

  it("flags before the command, and the command after --", async () => {
    expect((await keys(["--url", "http://x", "list", "--credit", "5"])).err).toBe(NO_HINT("--credit"));
    expect((await keys(["--url", "http://x", "--credis", "--", "list"])).err).toBe(NO_HINT("--credis"));
  });

  it("an unknown flag with a separate value before the command", async () => {
    expect((await keys(["--url", "http://x", "--credit", "5", "list"])).err).toBe(NO_HINT("--credit"));
  });
});

describe("revoke, run again", () => {

  it("by name, when the name was used by an earlier, revoked key", async () => {
    const first = await h.createKey({ name: "team-07", credits: 1 });
    expect((await keys(["revoke", "--url", h.url, "--key", first.id])).code).toBe(0); // an earlier rotation
    await h.createKey({ name: "team-07", credits: 1 });                                   // its replacement
    const r1 = await keys(["revoke", "--url", h.url, "--key", "team-07"]);               // this rotation
    expect(r1.code, r1.err).toBe(0);
    const r2 = await keys(["revoke", "--url", h.url, "--key", "team-07"]);               // the script run again
    expect(r2.err).toBe("");
    expect(r2.code).toBe(0);
  });

  it("--json has the same shape either way", async () => {
    const k = await h.createKey({ name: "json-again", credits: 1 });
    const a = JSON.parse((await keys(["revoke", "--url", h.url, "--key", k.id, "--json"])).out) as ApiKey;
    const b = JSON.parse((await keys(["revoke", "--url", h.url, "--key", k.id, "--json"])).out) as ApiKey;
    expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
  });
});
