// A review's surviving mutants, now killed: usage-export.ts's `now: deps.now().getTime()` dropped, or the stack's expiry in its place, would judge keys by the wrong clock.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { clockFrom } from "../support/clocks.ts";
import type { ApiKey } from "../../scripts/lib/admin-client.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/reap-expired.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { fixtureTenants, NOW } from "./tenant-fixtures.ts";

let shim: Harness;
beforeAll(async () => {
  shim = await startShim({ clock: clockFrom(Date.parse("2026-03-01T09:00:00Z")) });
});
afterAll(async () => shim?.close());

it("a key is judged expired by the machine's clock (deps.now), not the stack's expiry nor Date.now()", async () => {
  const gone = await shim.createKey({ name: "gone", credits: 1, expires_at: new Date(NOW.getTime() - 3_600_000).toISOString() });
  const later = await shim.createKey({ name: "later", credits: 1, expires_at: new Date(NOW.getTime() + (Date.now() - NOW.getTime()) / 2).toISOString() });
  const t = fixtureTenants();
  const bravo = t.pulumi.stacks.get("bravo")!;
  bravo.outputs = { ...bravo.outputs, endpoint: `${shim.url}/v1`, adminToken: shim.adminToken, createdAt: "2026-01-01T00:00:00Z" };
  t.pulumi.stacks.set("golf", { outputs: {} });
  const io = memoryIo();
  await main(["--yes", "--usage-dir", "u"], { root: t.root, pulumi: t.pulumi, io, env: {}, now: () => NOW });
  expect(io.stdout).toContain("[bravo] revoking its 1 live key (1 expired, left as it is): the tenant is being destroyed, and its usage must be final before it is saved");
  const file = readdirSync(join(t.root, "u")).find((f) => f.startsWith("bravo-keys-"))!;
  const saved = JSON.parse(readFileSync(join(t.root, "u", file), "utf8")) as ApiKey[];
  expect(saved.find((k) => k.id === gone.id)!.revoked_at).toBeNull();
  expect(saved.find((k) => k.id === later.id)!.revoked_at).not.toBeNull();
});
