// A stack file with a stray top-level "ns:key" and secure: values from another backend (Pulumi
// Cloud writes no encryptionsalt): new-tenant still sees the secrets and points to the other
// backend, rather than saying `pulumi stack init` (a second stack whose key cannot decrypt them).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/new-tenant.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

it("still says 'created in another backend' when the file also has a stray top-level key", async () => {
  const root = tempDir();
  mkdirSync(join(root, "stacks"));
  writeFileSync(join(root, "stacks", "Pulumi.acme.yaml"),
    "gpu-sandbox:ttlHours: 24\nconfig:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs:\n    - 81.2.69.160/32\n  linode:token:\n    secure: AAABAJx1c2VydmljZS1lbmNyeXB0ZWQ=\n");
  const io = memoryIo();
  const code = await main(["acme", "--region", "us-ord", "--admin-cidrs", "81.2.69.160/32"],
    { root, io, pulumi: new FakePulumi(), env: { LINODE_TOKEN: "x" }, now: () => new Date("2026-03-01T12:00:00Z") });
  expect(code).toBe(1);
  const err = io.stderr.join("\n");
  expect(err).not.toContain("stack init");
  expect(err).toContain("probably created in another backend");
});
