import * as linode from "@pulumi/linode";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import * as tls from "@pulumi/tls";
import { costOf, type GpuPlan } from "../catalog.ts";
import { blockedDeployMessage, catalogDisagreements } from "../catalog-check.ts";
import { type ApiFirewall, firewallCovers, uncoveredMessage } from "../firewall-check.ts";
import { within } from "../../api-shim/src/promises.ts";
import { isIPv6Cidr } from "../config/addresses.ts";
import type { ModelConfig, StorageConfig, StorageEncryption, TlsMode } from "../config/types.ts";
import { vllmRevision } from "../config/vllm.ts";
import { askHub, type CheckedModel, hubDisagreements } from "../hub-check.ts";
import type { Secret } from "../secret.ts";
import { isoSeconds } from "../../api-shim/src/requests/period.ts";
import { CREATED_AT_SUFFIX, hostExpiry, kitTags, resourceNames, webPortSources } from "../host.ts";
import { encodeUserData, hostCloudInit } from "../render/cloud-init.ts";

/** The host's part of a validated tenant config (defaults applied by validateConfig). */
export interface GpuHostArgs {
  /** The tenant: names every resource (`gs-<tenant>…`) and tags it. */
  tenant: string;
  /** Linode region id, e.g. `us-ord`. */
  region: string;
  /** A GPU plan from the catalog. */
  plan: GpuPlan;
  /** Linode image (an Ubuntu LTS). */
  image: string;
  /** Sources allowed to reach the web ports (80 and 443; 80 alone without TLS) and the API. Not empty. */
  allowedCidrs: readonly string[];
  /** TLS: without it (`off`) only port 80 is opened. */
  tls: { readonly mode: TlsMode };
  /** Sources allowed to reach SSH (22) and /admin (so the API's port too); none means no rule for port 22 at all. */
  adminCidrs: readonly string[];
  /** Size of the Block Storage Volume for model weights and the ledger. */
  volumeSizeGb: number;
  /** Encryption at rest for the volume and the instance's disks; unset, Linode's defaults (neither property given). */
  storage?: StorageConfig;
  /** When set, `expiresAt` is this many hours after the host was first created. */
  ttlHours?: number;
  /** Extra Linode tags. The kit always adds `gpu-sandbox` and `tenant:<tenant>`. */
  tags: readonly string[];
  /**
   * The model vLLM will download on the host (the revision its extraArgs give): checked on Hugging
   * Face before the instance exists, and whether maxModelLen fits the KV cache the plan leaves.
   */
  model: Pick<ModelConfig, "id" | "maxModelLen" | "extraArgs" | "gpuMemoryUtilization" | "tensorParallelSize" | "pipelineParallelSize">;
  /** The stack's Hugging Face token, which vLLM downloads with. */
  hfToken?: Secret;
}

/**
 * A Linode GPU instance that is safe on the internet from its first boot: created already
 * attached to a Cloud Firewall that drops everything but the web ports (webPortSources) from `allowedCidrs`, the
 * API's port and 22 from `adminCidrs`, SSH by a generated key only, a random root password, and a Block Storage Volume
 * for the data that must outlive the instance. cloud-init (through the Metadata service)
 * installs the NVIDIA driver, Docker and the container toolkit and mounts the volume.
 */
/** How long the firewall check waits for Linode's answer: the deployment waits for the check. */
const FIREWALL_CHECK_MS = 60_000;

export class GpuHost extends pulumi.ComponentResource {
  /** Public IPv4 address. */
  readonly ip: pulumi.Output<string>;
  readonly ipv6: pulumi.Output<string>;
  /** The generated SSH private key (OpenSSH format). Secret. */
  readonly sshPrivateKey: pulumi.Output<string>;
  /** Root password for the Lish console. Secret. */
  readonly rootPassword: pulumi.Output<string>;
  readonly hourlyCostUsd: number;
  readonly monthlyCostUsd: number;
  /** When the host was first created (ISO 8601, UTC); unchanged by later updates. */
  readonly createdAt: pulumi.Output<string>;
  /** `createdAt + ttlHours`, or undefined without a TTL. */
  readonly expiresAt: pulumi.Output<string | undefined>;
  readonly instance: linode.Instance;
  readonly firewall: linode.Firewall;
  readonly volume: linode.Volume;

  constructor(name: string, args: GpuHostArgs, opts?: pulumi.ComponentResourceOptions) {
    super("gpu-sandbox:infra:GpuHost", name, {}, opts);
    const names = resourceNames(args.tenant);
    const tags = [...kitTags(args.tenant), ...args.tags];

    const sshKey = new tls.PrivateKey(`${name}-ssh-key`, { algorithm: "ED25519" }, { parent: this });
    const rootPassword = new random.RandomPassword(`${name}-root-password`, { length: 32, special: true, overrideSpecial: "-_.+=" }, { parent: this });

    this.firewall = new linode.Firewall(`${name}-firewall`, {
      label: names.firewall,
      inboundPolicy: "DROP",
      outboundPolicy: "ACCEPT",
      inbounds: firewallRules(args.allowedCidrs, args.adminCidrs, args.tls.mode),
      tags,
    }, { parent: this, deleteBeforeReplace: true });

    // A timestamp taken at the first `pulumi up` and kept in state: ignoreChanges keeps the
    // stored keeper, so later updates do not move the expiry. The instance depends on it (below),
    // so `pulumi destroy` deletes it only once the instance is gone: a destroy that fails on the
    // instance leaves the record that reap-expired judges a failed deploy's expiry by.
    const created = new random.RandomString(`${name}${CREATED_AT_SUFFIX}`, {
      length: 8, special: false, keepers: { createdAt: isoSeconds(Date.now()) },
    }, { parent: this, ignoreChanges: ["keepers"] });

    const userData = encodeUserData(hostCloudInit(args.tenant));
    const encryption = args.storage?.encryption;
    this.instance = new linode.Instance(`${name}-instance`, {
      label: names.instance,
      // The region once the catalog check passed: a region the host cannot run in fails here, unbilled.
      region: this.checkCatalog(args.plan, args.region, encryption),
      type: args.plan.id,
      image: args.image,
      rootPass: rootPassword.result,
      authorizedKeys: [sshKey.publicKeyOpenssh.apply((k) => k.trim())],
      // The user data once the model check passed: a model vLLM could not download fails here, unbilled.
      metadatas: [{ userData: this.checkModel(args.plan, args.model, args.hfToken).then(() => userData) }],
      // Attached at creation, so the instance is never reachable without its firewall.
      firewallId: this.firewall.id.apply(Number),
      ...(encryption ? { diskEncryption: encryption } : {}),
      tags,
      // Linode labels are unique, so a replacement must remove the old instance first. A new
      // region rebuilds the host rather than migrating it: the volume cannot move (a new region
      // replaces it), and only a first boot formats and mounts a new one.
      // dependsOn orders create and delete only; it is no input, so an existing instance is
      // neither updated nor replaced by it (the state just records the dependency).
      // ignoreChanges: storage.encryption applies to a new instance only. Linode changes a disk's
      // encryption only by a rebuild, which wipes the host: set on a running tenant, it must not
      // rebuild it (checkEncryption warns instead).
    }, { parent: this, deleteBeforeReplace: true, replaceOnChanges: ["region"], dependsOn: [created], ignoreChanges: ["diskEncryption"] });

    this.volume = new linode.Volume(`${name}-volume`, {
      label: names.volume,
      region: args.region,
      size: args.volumeSizeGb,
      linodeId: this.instance.id.apply(Number),
      ...(encryption ? { encryption } : {}),
      tags,
      // ignoreChanges: the volume holds the ledger, and Linode cannot change a volume's encryption
      // (the provider replaces the volume for it: linode/terraform-provider-linode#2124), so the
      // setting applies to a new volume only. docs/operations.md says how to move a ledger to one.
    }, { parent: this, deleteBeforeReplace: true, ignoreChanges: ["encryption"] });

    this.createdAt = created.keepers.apply((k) => String(k?.createdAt ?? ""));
    const ttl = args.ttlHours;
    this.expiresAt = this.createdAt.apply((c) =>
      ttl === undefined || !c ? undefined : hostExpiry(c, ttl));

    this.ip = this.instance.ipv4s.apply((ips) => ips[0] ?? "");
    this.ipv6 = this.instance.ipv6.apply((v) => v.split("/")[0] ?? v);
    this.sshPrivateKey = pulumi.secret(sshKey.privateKeyOpenssh);
    this.rootPassword = pulumi.secret(rootPassword.result);
    const cost = costOf(args.plan, args.volumeSizeGb);
    this.hourlyCostUsd = cost.hourlyUsd;
    this.monthlyCostUsd = cost.monthlyUsd;

    this.registerOutputs({
      ip: this.ip, ipv6: this.ipv6, sshPrivateKey: this.sshPrivateKey,
      rootPassword: this.rootPassword, hourlyCostUsd: this.hourlyCostUsd, monthlyCostUsd: this.monthlyCostUsd,
      createdAt: this.createdAt, expiresAt: this.expiresAt,
      // Registered so that the deployment waits for the check (its warning) before it ends.
      firewallChecked: this.checkFirewall(names.firewall),
      // Only when asked: a stack without storage.encryption keeps the outputs it had.
      ...(encryption ? { encryptionChecked: this.checkEncryption(names, encryption) } : {}),
    });
  }

  /**
   * Compares the catalog with the Linode API, before the instance exists. Differences in the
   * plan's figures are warnings, on the component; a region where the host could not run (see
   * catalogDisagreements) is an error, and the instance's region input fails, so the instance is
   * never created. Returns the region for the instance, so the instance waits for the check.
   * When the API cannot be asked, it warns and does not hold the deployment up (creating the
   * instance then says what is wrong with access).
   */
  private checkCatalog(plan: GpuPlan, region: string, encryption: StorageEncryption | undefined): pulumi.Output<string> {
    const asked = Promise.all([linode.getInstanceType({ id: plan.id }, { parent: this }), linode.getRegions({}, { parent: this })]);
    return pulumi.output(asked.then(([type, r]) => {
      const regions = r.regions ?? [];
      const { warnings, blockers } = catalogDisagreements(plan, region, type, regions, encryption);
      for (const line of warnings) pulumi.log.warn(line, this);
      if (blockers.length > 0) {
        // Logged here in full: the error thrown for the instance reaches pulumi up prefixed with
        // every property it passed through ('error serializing property "region": …').
        pulumi.log.error(blockedDeployMessage(plan, region, blockers, regions, encryption), this);
        throw new pulumi.ResourceError(`not creating the GPU instance in region ${region} (the catalog check's error above says why)`, this, true);
      }
      return region;
    }, (err: unknown) => {
      const why = err instanceof Error && err.message ? ` (${err.message})` : "";
      pulumi.log.warn(`could not compare infra/catalog.ts with the Linode API${why}, so plan ${plan.id} and region ${region} were not checked before the instance`, this);
      return region;
    }));
  }

  /**
   * What Linode reports for the volume and the instance's disks, against storage.encryption: a
   * volume or instance created before the setting keeps what it had (ignoreChanges), which a
   * warning says, with where to read how to move the ledger to a new volume. Read from the state,
   * so known once they exist (a preview of a new host has nothing to compare yet).
   */
  private checkEncryption(names: { instance: string; volume: string }, asked: StorageEncryption): pulumi.Output<boolean> {
    return pulumi.all([this.volume.encryption, this.instance.diskEncryption]).apply(([volume, disk]) => {
      const off: string[] = [];
      if (volume && volume !== asked) off.push(`volume ${names.volume} is encryption "${volume}"`);
      if (disk && disk !== asked) off.push(`instance ${names.instance}'s disks are encryption "${disk}"`);
      if (off.length > 0) {
        pulumi.log.warn(`gpu-sandbox:storage.encryption is "${asked}", but ${off.join(" and ")}: they were created before the setting, ` +
          `and the kit never replaces the volume (it holds the ledger) or rebuilds the host for it. ` +
          `To move the ledger to a new volume, see "Encrypting an existing tenant's ledger" in docs/operations.md`, this);
      }
      return off.length === 0;
    });
  }

  /**
   * Once the instance exists, asks Linode whether its firewall covers it (firewallCovers). One
   * that does not is a warning, never an error: the kit could not try an account whose new
   * Linodes use Linode Interfaces, and a wrong refusal would stop every deployment. A firewall
   * that cannot be read, or not within FIREWALL_CHECK_MS, is a warning too. Asked once the
   * instance exists: in a preview too when it existed before, as the catalog check is.
   */
  private checkFirewall(label: string): pulumi.Output<boolean | undefined> {
    return pulumi.all([this.instance.id, this.firewall.id]).apply(async ([instanceId, firewallId]) => {
      try {
        const firewall = await within<ApiFirewall | null>(linode.getFirewall({ id: Number(firewallId) }, { parent: this }), FIREWALL_CHECK_MS, null);
        if (firewall === null) throw new Error(`no answer within ${FIREWALL_CHECK_MS / 1000} s`);
        const covered = firewallCovers(firewall, Number(instanceId));
        if (!covered) pulumi.log.warn(uncoveredMessage(label, Number(instanceId)), this);
        return covered;
      } catch (err) {
        const why = err instanceof Error && err.message ? ` (${err.message})` : "";
        pulumi.log.warn(`could not ask Linode whether firewall ${label} covers the instance${why}: check the instance's Firewall tab in Cloud Manager`, this);
        return undefined;
      }
    });
  }

  /**
   * Asks Hugging Face about the model as vLLM will on the host (askHub, with the stack's token, about
   * the revision model.extraArgs give vLLM), before the instance exists, as checkCatalog asks
   * Linode: a download that would fail for certain, or a maxModelLen whose KV cache clearly cannot
   * fit beside the weights (hubDisagreements' blockers) is an error, and the instance's user data fails, so it is never
   * created; the rest are warnings. A Hub that cannot be asked is a warning, and holds nothing up.
   */
  private async checkModel(plan: GpuPlan, { id, maxModelLen, extraArgs, gpuMemoryUtilization, tensorParallelSize, pipelineParallelSize }: GpuHostArgs["model"], hfToken: Secret | undefined): Promise<void> {
    const token = hfToken?.readable ? hfToken.reveal() : undefined;
    const served = { plan, gpuMemoryUtilization, extraArgs, tensorParallelSize, pipelineParallelSize };
    const model: CheckedModel = { id, maxModelLen, revision: vllmRevision(extraArgs), served };
    const { warnings, blockers } = hubDisagreements(model, token !== undefined, await askHub(model, token));
    for (const line of warnings) pulumi.log.warn(line, this);
    if (blockers.length > 0) {
      // Logged in full, as the catalog check's: the thrown error reaches pulumi up behind the property names it passed through.
      pulumi.log.error(`not creating the GPU instance: ${blockers.join("; ")}.`, this);
      throw new pulumi.ResourceError(`not creating the GPU instance for model ${model.id} (the Hugging Face check's error above says why)`, this, true);
    }
  }
}

/**
 * Inbound rules (the policy drops everything else): HTTP and HTTPS (HTTP alone without TLS) from
 * `allowedCidrs`, the API's port also from `adminCidrs` (for /admin: webPortSources), SSH from
 * `adminCidrs` only, and no SSH rule at all when there are no admin sources.
 */
export function firewallRules(allowedCidrs: readonly string[], adminCidrs: readonly string[], tlsMode: TlsMode): linode.types.input.FirewallInbound[] {
  const rule = (label: string, ports: string, cidrs: readonly string[]): linode.types.input.FirewallInbound => {
    const ipv4s = cidrs.filter((c) => !isIPv6Cidr(c));
    const ipv6s = cidrs.filter(isIPv6Cidr);
    return {
      label, action: "ACCEPT", protocol: "TCP", ports,
      ...(ipv4s.length ? { ipv4s } : {}),
      ...(ipv6s.length ? { ipv6s } : {}),
    };
  };
  const rules = webPortSources(tlsMode, allowedCidrs, adminCidrs).map(({ port, sources }) => rule(port === 80 ? "allow-http" : "allow-https", String(port), sources));
  if (adminCidrs.length > 0) rules.push(rule("allow-ssh-admin", "22", adminCidrs));
  return rules;
}
