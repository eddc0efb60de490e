// gpu-sandbox:storage.encryption: Linode's encryption at rest for the tenant's Block Storage
// Volume (the ledger: key names, usage; and the weights) and the instance's local disks. Unset, the
// program gives Linode neither property, so an existing stack sees no change at all. Set, both are
// given, for new resources only: ignoreChanges keeps an existing volume (which holds the ledger)
// from ever being replaced, and an existing instance from being rebuilt, by a change of it.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { findPlan } from "../../infra/catalog.ts";
import { catalogDisagreements, type ApiInstanceType } from "../../infra/catalog-check.ts";
import { validateConfig } from "../../infra/config.ts";
import { loggedDeploy } from "../support/logged-deploy.ts";
import { plain, type RecordedResource } from "../support/pulumi-mocks.ts";

const STACK = "acme";
const VOLUME = "linode:index/volume:Volume";
const INSTANCE = "linode:index/instance:Instance";
/** A region where the host can run, and both encryptions are offered (the capabilities' names as Linode's API lists them). */
const READY = ["Linodes", "GPU Linodes", "Metadata", "Block Storage", "Cloud Firewall"];
const ENCRYPTING = [...READY, "Block Storage Encryption", "Disk Encryption"];

function config(raw: Record<string, unknown>) {
  const result = validateConfig({ region: "us-ord", adminCidrs: ["81.2.69.7/32"], ...raw }, { stack: STACK });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result.config;
}

const regions = (us_ord: string[]) => () => ({
  id: "regions",
  // de-fra-2 offers the plan (infra/catalog.ts) but not encryption: never suggested when it is asked for.
  regions: [["us-ord", us_ord], ["us-sea", ENCRYPTING], ["de-fra-2", READY]].map(([id, capabilities]) =>
    ({ id, label: id, country: "us", status: "ok", siteType: "core", placementGroupLimits: [], capabilities })),
});

const one = (resources: readonly RecordedResource[], type: string) => {
  const found = resources.filter((r) => r.type === type);
  expect(found, `exactly one ${type}`).toHaveLength(1);
  return found[0]!;
};

describe("storage.encryption in the stack config", () => {
  it("is optional: unset, the config carries no storage setting", () => {
    expect(config({}).storage).toBeUndefined();
  });

  it.each(["enabled", "disabled"])("takes %s", (value) => {
    expect(config({ storage: { encryption: value } }).storage).toEqual({ encryption: value });
  });

  it.each([
    [{ encryption: "yes" }, "storage.encryption", /must be one of: enabled, disabled/],
    [{ encryption: true }, "storage.encryption", /must be one of: enabled, disabled/],
    [{ encrypt: "enabled" }, "storage.encrypt", /./],
    ["enabled", "storage", /pulumi config set --path 'gpu-sandbox:storage\.encryption' <value>/],
  ])("refuses %j, naming the key", (value, key, message) => {
    const result = validateConfig({ region: "us-ord", storage: value }, { stack: STACK });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.problems).toEqual([expect.objectContaining({ key, message: expect.stringMatching(message) })]);
  });
});

describe("the volume and the instance pulumi up creates", () => {
  it("are given neither encryption property when storage.encryption is unset (existing stacks unchanged)", async () => {
    const { resources, failures } = await loggedDeploy(config({}), { calls: { "linode:index/getRegions:getRegions": regions(READY) } });
    expect(failures).toEqual([]);
    expect(Object.keys(plain(one(resources, VOLUME).inputs))).not.toContain("encryption");
    expect(Object.keys(plain(one(resources, INSTANCE).inputs))).not.toContain("diskEncryption");
  });

  it.each(["enabled", "disabled"])("are both given %s when storage.encryption says so", async (value) => {
    const { resources, failures } = await loggedDeploy(config({ storage: { encryption: value } }), { calls: { "linode:index/getRegions:getRegions": regions(ENCRYPTING) } });
    expect(failures).toEqual([]);
    expect(plain(one(resources, VOLUME).inputs).encryption).toBe(value);
    expect(plain(one(resources, INSTANCE).inputs).diskEncryption).toBe(value);
  });

  it.each([{}, { storage: { encryption: "enabled" } }])("ignore later changes of it (%j): a running tenant's volume is never replaced, nor its host rebuilt", async (raw) => {
    const { resources } = await loggedDeploy(config(raw), { calls: { "linode:index/getRegions:getRegions": regions(ENCRYPTING) } });
    expect(one(resources, VOLUME).ignoreChanges).toContain("encryption");
    expect(one(resources, INSTANCE).ignoreChanges).toContain("diskEncryption");
  });

  it("warns when the existing volume or disk is not what storage.encryption asks (set after they were created), pointing to the way to encrypt them", async () => {
    const { warnings, failures } = await loggedDeploy(config({ storage: { encryption: "enabled" } }), {
      calls: { "linode:index/getRegions:getRegions": regions(ENCRYPTING) },
      // What the state of a tenant created before the setting holds.
      resource: (args) => args.type === VOLUME ? { id: "vol-1", state: { ...args.inputs, encryption: "disabled" } }
        : args.type === INSTANCE ? { id: "12345", state: { ...args.inputs, ipv4s: ["192.0.2.10"], ipv6: "2600:3c00::1/128", diskEncryption: "disabled" } }
        : undefined,
    });
    expect(failures).toEqual([]);
    const said = warnings.filter((w) => /storage\.encryption/.test(w));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/volume gs-acme-data is encryption "disabled"/);
    expect(said[0]).toMatch(/instance gs-acme's disks are encryption "disabled"/);
    expect(said[0]).toMatch(/docs\/operations\.md/);
  });

  it("warns about the volume alone when only the volume predates the setting (the host was rebuilt since; the ledger is still unencrypted)", async () => {
    const { warnings, failures } = await loggedDeploy(config({ storage: { encryption: "enabled" } }), {
      calls: { "linode:index/getRegions:getRegions": regions(ENCRYPTING) },
      resource: (args) => args.type === VOLUME ? { id: "vol-1", state: { ...args.inputs, encryption: "disabled" } } : undefined,
    });
    expect(failures).toEqual([]);
    const said = warnings.filter((w) => /storage\.encryption/.test(w));
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/but volume gs-acme-data is encryption "disabled": they were created/);
    expect(said[0]).not.toMatch(/disks/);
  });

  it("says nothing when the volume and disk are as asked", async () => {
    const { warnings } = await loggedDeploy(config({ storage: { encryption: "enabled" } }), { calls: { "linode:index/getRegions:getRegions": regions(ENCRYPTING) } });
    expect(warnings.filter((w) => /storage\.encryption/.test(w))).toEqual([]);
  });
});

describe("the catalog check with storage.encryption: enabled", () => {
  const plan = findPlan("g2-gpu-rtx4000a1-s")!;
  const apiType: ApiInstanceType = { class: "gpu", vcpus: 4, memory: 16384, prices: [{ hourly: 0.52, monthly: 350 }] };
  const region = (capabilities: string[]) => [{ id: "us-ord", status: "ok", capabilities }];

  it("blocks a region without Block Storage Encryption or Disk Encryption, one sentence each", () => {
    expect(catalogDisagreements(plan, "us-ord", apiType, region(READY), "enabled").blockers).toEqual([
      "storage.encryption is enabled, but Linode does not list Block Storage Encryption in region us-ord",
      "storage.encryption is enabled, but Linode does not list Disk Encryption in region us-ord",
    ]);
    expect(catalogDisagreements(plan, "us-ord", apiType, region([...READY, "Disk Encryption"]), "enabled").blockers).toEqual([
      "storage.encryption is enabled, but Linode does not list Block Storage Encryption in region us-ord",
    ]);
  });

  it.each([["enabled", ENCRYPTING], ["disabled", READY], [undefined, READY]] as const)("passes %s in a region with capabilities %j", (encryption, capabilities) => {
    expect(catalogDisagreements(plan, "us-ord", apiType, region([...capabilities]), encryption).blockers).toEqual([]);
  });

  it("stops pulumi up before the instance or the volume bills, and says what to do", async () => {
    const { resources, errors, failures } = await loggedDeploy(config({ storage: { encryption: "enabled" } }), { calls: { "linode:index/getRegions:getRegions": regions(READY) } });
    expect(resources.filter((r) => r.type === INSTANCE || r.type === VOLUME)).toEqual([]);
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.every((e) => e instanceof pulumi.ResourceError)).toBe(true);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/Linode does not list Block Storage Encryption in region us-ord/);
    // Only the region that offers both is suggested, and the setting can be dropped instead.
    expect(errors[0]).toMatch(/regions Linode reports ready: us-sea\)/);
    expect(errors[0]).toMatch(/pulumi config rm gpu-sandbox:storage\.encryption/);
  });

  it("does not suggest dropping the setting when the region offers encryption but lacks something else", async () => {
    const { errors } = await loggedDeploy(config({ storage: { encryption: "enabled" } }), {
      calls: { "linode:index/getRegions:getRegions": regions(ENCRYPTING.filter((c) => c !== "GPU Linodes")) },
    });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/Linode does not list GPU Linodes in region us-ord/);
    expect(errors[0]).not.toMatch(/storage\.encryption/);
  });
});
