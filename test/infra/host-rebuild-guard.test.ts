// Upgrading the kit must not quietly rebuild every tenant's GPU host. A replaced linode.Instance
// is deleted while it serves and comes back with a new IP (with the default tls.domain, a new
// endpoint name) and a first boot that takes 10–20 minutes. The instance is replaced when an
// input the provider marks as forcing a new instance changes, when a property listed in its
// replaceOnChanges changes, or when its URN changes without an alias. An input changes when a
// resource it comes from is replaced. The table below pins each of them as the program gives them,
// under Pulumi's mock runtime, for a stack that sets nothing the kit has a default for.
//
// Change a pinned value only on purpose, together with an entry at the top of docs/upgrading.md (under the day's dated
// heading) that says every host is rebuilt at its next `pulumi up` and why that is worth it.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { beforeAll, describe, expect, it } from "vitest";
import { validateConfig } from "../../infra/config.ts";
import { deployTenant } from "../../infra/tenant.ts";
import { installMocks, plain, settle, type RecordedResource } from "../support/pulumi-mocks.ts";
import { tempDir } from "../support/tools.ts";

const STACK = "acme";
/** The GpuHost component's URN, and a URN of one of its children: `<project>::<parent type>$<type>::<name>`. */
const HOST_URN = `urn:pulumi:${STACK}::gpu-sandbox::gpu-sandbox:infra:GpuHost::${STACK}`;
const child = (type: string, name: string) => `urn:pulumi:${STACK}::gpu-sandbox::gpu-sandbox:infra:GpuHost$${type}::${name}`;

/** Where an instance input comes from: a resource (its URN), which output of it, and its arguments. */
interface Source {
  readonly from: string;
  readonly output: string | undefined;
  readonly args?: Record<string, unknown>;
}

interface Pin {
  readonly value: unknown;
  /** Why a change to it replaces the instance, and what to look at. */
  readonly why: string;
}

const PINNED = {
  // The provider marks metadata.user_data ForceNew. It is rendered from templates/cloud-init.yaml,
  // templates/host/ and infra/render/cloud-init.ts. Pinned as a SHA-256 hash.
  metadatas: {
    value: [{ userData: "8201d9a7f91412f438483ea41abd5213d7bab836811d25f8f8bb62d90c9162b0" }],
    why: "the instance's user data (metadatas[].userData, pinned as SHA-256) changed, and user data forces a new instance",
  },
  // The provider marks image ForceNew. A stack without gpu-sandbox:image gets DEFAULT_IMAGE
  // (infra/config/defaults.ts).
  image: {
    value: "linode/ubuntu24.04",
    why: "the image a stack without gpu-sandbox:image gets (DEFAULT_IMAGE, infra/config/defaults.ts) changed, and image forces a new instance",
  },
  // Pulumi knows a resource by its URN: project, parent type, type and name. The parent is the
  // GpuHost component named after the tenant (infra/tenant.ts). With a new URN and no alias
  // (aliases: [{ name: <old name> }] and the like), Pulumi creates a new instance and deletes the old one.
  urnChain: {
    value: [child("linode:index/instance:Instance", `${STACK}-instance`), HOST_URN],
    why: "the instance's URN or its parent's (name, type or parent in infra/components/gpu-host.ts, infra/tenant.ts) changed; without an alias to the old URN Pulumi deletes the old instance and creates a new one",
  },
  // Any change to a RandomPassword's arguments, or its URN, replaces it, so the password is new.
  // A new root_pass is ForceNew in terraform-provider-linode before linode/terraform-provider-linode#2253.
  // After that change the provider resets the password with the host powered off.
  rootPass: {
    value: {
      from: child("random:index/randomPassword:RandomPassword", `${STACK}-root-password`), output: "result",
      args: { length: 32, special: true, overrideSpecial: "-_.+=" },
    } satisfies Source,
    why: "where rootPass comes from (the RandomPassword's URN or arguments) changed; a replaced RandomPassword is a new root password, which forces a new instance",
  },
  // Any change to a tls.PrivateKey's arguments, or its URN, makes a new key. authorized_keys is
  // ForceNew.
  authorizedKeys: {
    value: [{
      from: child("tls:index/privateKey:PrivateKey", `${STACK}-ssh-key`), output: "publicKeyOpenssh",
      args: { algorithm: "ED25519" },
    } satisfies Source],
    why: "where authorizedKeys comes from (the tls.PrivateKey's URN or arguments) changed; a replaced key is a new authorized key, which forces a new instance",
  },
  // firewall_id is ForceNew (node_modules/@pulumi/linode/instance.d.ts). It must be the id of the
  // firewall created before the instance. That id stays the same across updates, because the
  // firewall's rules and label change in place.
  firewallId: {
    value: { from: child("linode:index/firewall:Firewall", `${STACK}-firewall`), output: "id" } satisfies Source,
    why: "firewallId is no longer the id of the firewall the host is created with (or that firewall's URN changed, which replaces it); firewallId forces a new instance",
  },
  // A property listed in replaceOnChanges replaces the instance on any change. Only region is
  // listed, because a volume cannot move to another region.
  replaceOnChanges: {
    value: ["region"],
    why: "the instance's replaceOnChanges option changed; a listed property replaces the instance whenever it changes",
  },
  // The inputs the program sets at all. One added (authorizedUsers, diskEncryption, swapSize…) may
  // force a new instance too: the rows above pin only the inputs set today.
  inputNames: {
    value: ["authorizedKeys", "firewallId", "image", "label", "metadatas", "region", "rootPass", "tags", "type"],
    why: "the instance has an input it did not have (or lost one); read @pulumi/linode's instance.d.ts and terraform-provider-linode's schema for whether it forces a new instance, and pin it above if so",
  },
  // The provider decides which inputs force a new instance (root_pass was ForceNew, then was not).
  linodeProvider: {
    value: "5.1.1",
    why: "the @pulumi/linode version changed; before pinning the new one, read its and terraform-provider-linode's changelogs for inputs the kit sets (above) that now force a new instance",
  },
  // Every URN starts with the project name (Pulumi.yaml). After a rename, no resource in a stack
  // matches the program.
  project: {
    value: "gpu-sandbox",
    why: "the project name in Pulumi.yaml changed; it is part of every URN, so no deployed resource would match the program",
  },
} satisfies Record<string, Pin>;

type Observed = Record<keyof typeof PINNED, unknown>;

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * Which resource, and which of its outputs, an instance input's value came from. The value must
 * be one of those outputs, not something derived from it (a value changed per run would replace
 * the instance at every `pulumi up`). Only surrounding whitespace may differ, because the program
 * trims the public key.
 */
function sourceOf(resources: readonly RecordedResource[], dependsOn: readonly string[], value: unknown, withArgs: boolean): Source[] {
  return dependsOn.map((urn) => {
    const resource = resources.find((r) => r.urn === urn);
    const output = Object.entries(resource?.outputs ?? {}).find(([, o]) => String(plain(o)).trim() === String(value))?.[0];
    return { from: urn, output, ...(withArgs ? { args: plain(resource?.inputs) } : {}) };
  });
}

async function observe(): Promise<Observed> {
  const result = validateConfig({ region: "us-ord" }, { stack: STACK });
  if (!result.ok) throw new Error(`the guard's config does not validate: ${JSON.stringify(result.problems)}`);
  const { resources } = installMocks(STACK);
  deployTenant(result.config, { stagingDir: tempDir() });
  await settle();
  const instances = resources.filter((r) => r.type === "linode:index/instance:Instance");
  expect(instances, "exactly one linode.Instance").toHaveLength(1);
  const instance = instances[0]!;
  const inputs = plain(instance.inputs);
  const deps = instance.propertyDependencies;
  const urnChain: string[] = [];
  for (let r: RecordedResource | undefined = instance; r; r = resources.find((p) => p.urn === r!.parent)) urnChain.push(r.urn);
  return {
    metadatas: (inputs.metadatas as { userData: string }[]).map((m) => ({ ...m, userData: sha256(m.userData) })),
    image: inputs.image,
    inputNames: Object.keys(inputs).sort(),
    urnChain,
    rootPass: sourceOf(resources, deps.rootPass ?? [], inputs.rootPass, true)[0],
    authorizedKeys: (inputs.authorizedKeys as string[]).flatMap((key) => sourceOf(resources, deps.authorizedKeys ?? [], key, true)),
    firewallId: sourceOf(resources, deps.firewallId ?? [], inputs.firewallId, false)[0],
    replaceOnChanges: instance.replaceOnChanges,
    linodeProvider: instance.providerVersion,
    project: parse(readFileSync(new URL("../../Pulumi.yaml", import.meta.url), "utf8")).name,
  };
}

describe("what the GPU host's instance is built from (a change rebuilds every deployed host)", () => {
  let observed: Observed;
  beforeAll(async () => { observed = await observe(); });

  it.each(Object.keys(PINNED) as (keyof typeof PINNED)[])("%s is unchanged", (name) => {
    expect(observed[name], `${PINNED[name].why}. At its next \`pulumi up\`, every deployed tenant's GPU host can be ` +
      "deleted while serving and created again: a new IP, with the default tls.domain a new endpoint name, and a first boot of 10–20 minutes. " +
      `If that is meant, update PINNED.${name} in this test AND add an entry at the top of docs/upgrading.md (under the day's dated heading) ` +
      "that says every host is rebuilt and why; otherwise undo the change").toEqual(PINNED[name].value);
  });
});
