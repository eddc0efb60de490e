import { join } from "node:path";
import * as command from "@pulumi/command";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { Images, TenantConfig } from "../config.ts";
import { HOST_PATHS } from "../host.ts";
import { REPO_ROOT } from "../repo-root.ts";
import { type Bundle, bundleHash, renderBundle, sha256, writeBundle } from "../render/bundle.ts";
import { NGINX_LOCAL_PORT } from "../render/compose.ts";
import { envEntries, renderEnvFile } from "../render/env-file.ts";
import { readTemplate } from "../render/template.ts";
import { bootstrapKey, generatedSecret, serverCertificate } from "./serving-secrets.ts";

/** Upper bound for the host's first boot (driver, Docker, maybe a reboot) before SSH opens. */
export const HOST_SETUP_TIMEOUT_MINUTES = 45;
/** Seconds per SSH dial attempt while waiting for the host. */
const DIAL_TIMEOUT_SECONDS = 15;

export interface ServingStackArgs {
  /** Validated tenant config: model, keys, prices, limits, TLS, images. */
  config: TenantConfig;
  /** The host's public IPv4 address. */
  ip: pulumi.Input<string>;
  /** The SSH private key that logs in as root on the host. */
  sshPrivateKey: pulumi.Input<string>;
  /**
   * The host's instance id: a new instance (a replacement) gets the bundle copied again even
   * when the bundle itself did not change.
   */
  instanceId: pulumi.Input<string>;
  /** The volume with the ledger: destroyed only after the stack on the host has been stopped. */
  volume: pulumi.Resource;
  /** Local directory where the bundle is staged for copying. Defaults to out/<tenant>/deploy. */
  stagingDir?: string;
}

/**
 * The tenant's endpoint on a GpuHost: copies the rendered bundle to /opt/gpu-sandbox, writes the
 * secrets to `.env` (0600) through stdin, installs the TLS certificate, and runs
 * `docker compose up -d --build --wait` whenever the bundle or the secrets change, then waits
 * until the endpoint answers with the model loaded. Changes of model, keys, prices or limits are
 * applied in place: none of them touches the instance. Destroying it stops the shim (it drains
 * while nginx relays), then runs `docker compose down` (templates/operator/stop-serving-stack.sh).
 */
export class ServingStack extends pulumi.ComponentResource {
  /** The OpenAI base URL clients use. */
  readonly endpoint: pulumi.Output<string>;
  /** The bootstrap keys' plaintext, by name. Secret. */
  readonly apiKeys: pulumi.Output<Record<string, string>>;
  /** Bearer token for /admin. Secret. */
  readonly adminToken: pulumi.Output<string>;
  /** The CA that signed the endpoint's certificate (tls.mode self-signed only). */
  readonly caCertificate: pulumi.Output<string | undefined>;
  /** The certificate's DNS name. */
  readonly tlsDomain: pulumi.Output<string>;
  /** SHA-256 of the bundle's manifest: changes exactly when something on the host changes. */
  readonly bundleHash: pulumi.Output<string>;
  /**
   * The host's SSH key ("<type> <base64>"), recorded at the first login to it (record-host-key.sh);
   * every later SSH connection checks the host against it. Undefined without adminCidrs.
   */
  readonly hostKey: pulumi.Output<string | undefined>;
  /**
   * Whether the stack was deployed on the host at least once (it stays true without adminCidrs).
   * Resolves only once this update's deploy succeeded, so a failed update writes no outputs.
   */
  readonly servingDeployed: pulumi.Output<boolean>;

  constructor(name: string, args: ServingStackArgs, opts?: pulumi.ComponentResourceOptions) {
    super("gpu-sandbox:infra:ServingStack", name, {}, opts);
    const { config } = args;
    const ip = pulumi.output(args.ip);
    this.tlsDomain = config.tls.domain ? pulumi.output(config.tls.domain) : ip.apply((a) => `${a.replaceAll(".", "-")}.ip.linodeusercontent.com`);
    this.endpoint = config.tls.mode === "off" ? pulumi.interpolate`http://${ip}/v1` : pulumi.interpolate`https://${this.tlsDomain}/v1`;

    // Secrets Pulumi generates and keeps in state.
    const vllmApiKey = generatedSecret(`${name}-vllm-api-key`, 48, this);
    const litellmMasterKey = pulumi.secret(pulumi.interpolate`sk-${generatedSecret(`${name}-litellm-master-key`, 48, this)}`);
    this.adminToken = generatedSecret(`${name}-admin-token`, 48, this);
    const keys = config.keys.map((spec) => ({ name: spec.name, ...bootstrapKey(name, spec, this) }));
    this.apiKeys = pulumi.secret(pulumi.all(keys.map((k) => k.key)).apply((values) =>
      Object.fromEntries(values.map((v, i) => [keys[i]!.name, v]))));

    // The bundle: pure render functions over config, pinned images and key hashes.
    const images = pinImages(name, config.images, this);
    const bundle = pulumi.all([images, pulumi.all(keys.map((k) => k.record)), this.tlsDomain]).apply(([resolved, records, tlsDomain]) =>
      renderBundle(config, { images: resolved, bootstrapKeys: records, tlsDomain }));
    this.bundleHash = bundle.apply(bundleHash);

    const certificate = serverCertificate(name, config.tls.mode, { domain: this.tlsDomain, ip }, this);
    this.caCertificate = pulumi.output(certificate?.caCertificate);

    const envFile = pulumi.secret(pulumi.all([vllmApiKey, litellmMasterKey, this.adminToken, this.tlsDomain,
      ...config.providers.map((p) => p.apiKey.reveal())]).apply(([vllm, litellm, admin, domain, ...providerKeys]) =>
      renderEnvFile(envEntries(config, {
        vllmApiKey: vllm!, litellmMasterKey: litellm!, shimAdminToken: admin!, providerKeys: providerKeys as string[],
        ...(config.hfToken ? { hfToken: config.hfToken.reveal() } : {}),
        ...(config.previousAdminToken ? { shimAdminTokenPrevious: config.previousAdminToken.token.reveal() } : {}),
      }, domain!))));

    // Without adminCidrs the firewall keeps SSH shut, so nothing can be copied or run on the
    // host. The secrets, keys and certificate above stay all the same: emptying adminCidrs after a
    // deploy must not regenerate them (new key ids would revoke every client's key at the next
    // deploy) while the host keeps serving with the old ones.
    const { deploy, hostKey } = config.adminCidrs.length === 0 ? {} : this.deploy(name, args, envFile, certificate, bundle);
    this.hostKey = pulumi.output(hostKey);
    // Whether this stack was ever deployed, which no single run can tell once adminCidrs are
    // empty: a host deployed before serves (and holds a ledger reap-expired must save), one that
    // never was has nothing behind its endpoint. The keeper follows adminCidrs while they let
    // SSH through and is left as it was (ignoreChanges) while they do not.
    // Written only after the deploy succeeded (dependsOn): an update whose deploy fails never
    // registers it, so Pulumi keeps it as it was, and servingDeployed, that the stack outputs
    // wait for, never resolves. A failed update keeps the stack outputs it had (Pulumi >= 3.112
    // writes those a failed update registered, pulumi/pulumi#15754): none after a failed first
    // deploy (the scripts' "failed deploy"), the last successful update's after a later one.
    const marker = new random.RandomString(`${name}-deployed`, {
      length: 8, special: false, keepers: { deployed: deploy ? "yes" : "no" },
    }, { parent: this, ignoreChanges: deploy ? [] : ["keepers"], dependsOn: deploy ? [deploy] : [] });
    this.servingDeployed = marker.keepers.apply((k) => k?.deployed === "yes");

    // On destroy: the shim stopped first on the host (it drains and settles its streams while
    // nginx still relays them), then `docker compose down`, before the volume with the ledger
    // goes, since this depends on the volume. Local, with a best-effort SSH, so an unreachable
    // host never makes a destroy fail and leave the GPU billing.
    // Kept without adminCidrs too: a host deployed before they were emptied is still stopped
    // when it can be reached, and dropping this resource would run its delete at once.
    new command.local.Command(`${name}-stop-on-destroy`, {
      interpreter: ["/bin/bash", "-c"],
      delete: readTemplate("operator/stop-serving-stack.sh"),
      // Without a recorded key (never deployed over SSH), it does not connect.
      environment: { GS_SSH_KEY: pulumi.secret(args.sshPrivateKey), GS_HOST: ip, GS_HOST_KEY: this.hostKey.apply((k) => k ?? ""), GS_DIR: HOST_PATHS.bundleDir },
    }, { parent: this, dependsOn: [...(deploy ? [deploy] : []), args.volume] });

    this.registerOutputs({
      endpoint: this.endpoint, apiKeys: this.apiKeys, adminToken: this.adminToken,
      caCertificate: this.caCertificate, tlsDomain: this.tlsDomain, bundleHash: this.bundleHash, servingDeployed: this.servingDeployed, hostKey: this.hostKey,
    });
  }

  /**
   * The steps over SSH: wait for the host, record its SSH key, write `.env`, install the
   * certificate, copy the bundle, deploy. Returns the deploy and the key.
   */
  private deploy(name: string, args: ServingStackArgs, envFile: pulumi.Output<string>,
    certificate: ReturnType<typeof serverCertificate>, bundle: pulumi.Output<Bundle>): { deploy: command.remote.Command; hostKey: pulumi.Output<string> } {
    const { config } = args;
    // Staged on disk for the copy, only when there is one to make.
    const stagingDir = args.stagingDir ?? join(REPO_ROOT, "out", config.tenant, "deploy");
    const staged = bundle.apply((b) => {
      const dir = join(stagingDir, "bundle");
      writeBundle(dir, b);
      return new pulumi.asset.FileArchive(dir);
    });
    const ip = pulumi.output(args.ip);
    const dir = HOST_PATHS.bundleDir;
    const waitSeconds = HOST_SETUP_TIMEOUT_MINUTES * 60;

    // From this machine, a host still booting and a firewall that does not let this address in
    // look the same (SSH times out), so a new host is waited for here first: when SSH never
    // answers, this says to check adminCidrs rather than ending with the SSH library's dial error.
    const sshWait = new command.local.Command(`${name}-ssh-wait`, {
      interpreter: ["/bin/bash", "-c"],
      create: readTemplate("operator/wait-for-ssh.sh"),
      environment: {
        GS_SSH_KEY: pulumi.secret(args.sshPrivateKey), GS_HOST: ip, GS_WAIT_SECONDS: String(waitSeconds),
        GS_ADMIN_CIDRS: config.adminCidrs.join(", "),
      },
      // Once per host: a change of adminCidrs (in its environment) must not wait 45 minutes
      // again on a host that booted long ago (without `update`, `create` would run again).
      update: "true",
      triggers: [args.instanceId],
      logging: "stdoutAndStderr",
    }, { parent: this });

    // The host's SSH key, as it presents it at this first login (trust on first use: see
    // docs/decisions.md), before any step sends it a secret. Once per host, as the wait: a new
    // instance has a new key. Run again on the same host (a new script, say), the script prints
    // the key it recorded (its last output, PULUMI_COMMAND_STDOUT) without connecting.
    const recordHostKey = readTemplate("operator/record-host-key.sh");
    const hostKeyStep = new command.local.Command(`${name}-host-key`, {
      interpreter: ["/bin/bash", "-c"],
      create: recordHostKey,
      update: recordHostKey,
      environment: { GS_SSH_KEY: pulumi.secret(args.sshPrivateKey), GS_HOST: ip },
      triggers: [args.instanceId],
      logging: "stderr",
    }, { parent: this, dependsOn: [sshWait] });
    // A public key: unsecret, though @pulumi/command marks the stdout of a command with a secret
    // input (the private key) secret, so that sshCommand shows without --show-secrets.
    const hostKey = pulumi.unsecret(hostKeyStep.stdout.apply((out) => out.trim()));
    // Every step checks the host's key against it (@pulumi/command's hostKey).
    const connection = (dialErrorLimit: number) => ({
      host: ip, user: "root", privateKey: args.sshPrivateKey, hostKey, dialErrorLimit, perDialTimeout: DIAL_TIMEOUT_SECONDS,
    });

    // The host keeps SSH closed until its setup is done, so this waits by retrying the dial.
    const hostReady = new command.remote.Command(`${name}-host-ready`, {
      connection: connection(Math.ceil(waitSeconds / DIAL_TIMEOUT_SECONDS)),
      create: `bash ${HOST_PATHS.libDir}/wait-host-ready.sh ${waitSeconds} && mkdir -p ${dir}/.incoming`,
    }, { parent: this, dependsOn: [hostKeyStep] });

    // New secrets replace this step (their hash, never the secrets, in the triggers) rather than
    // update it, so each write of .env gets a new id, that the deploy's triggers hold (below).
    const env = new command.remote.Command(`${name}-env`, {
      connection: connection(4),
      create: `umask 077 && cat > ${dir}/.env.new && mv -f ${dir}/.env.new ${dir}/.env && echo "wrote ${dir}/.env"`,
      stdin: envFile,
      triggers: [pulumi.secret(envFile.apply(sha256))],
      logging: "stdoutAndStderr",
    }, { parent: this, dependsOn: [hostReady] });

    // Pulumi's own certificate (self-signed mode) is replaced as the secrets are. Let's Encrypt's
    // placeholder is updated in place (install-certificate.sh never writes it over an issued
    // certificate): the tls provider renews it every 30 days, which must not deploy again.
    const replacesCertificate = certificate?.mode === "replace";
    const certificateInstall = certificate && new command.remote.Command(`${name}-certificate`, {
      connection: connection(4),
      create: `bash ${HOST_PATHS.libDir}/install-certificate.sh ${certificate.mode}`,
      update: `bash ${HOST_PATHS.libDir}/install-certificate.sh ${certificate.mode}`,
      addPreviousOutputInEnv: false, // see the deploy's
      stdin: certificate.pem,
      ...(replacesCertificate ? { triggers: [pulumi.secret(certificate.pem.apply(sha256))] } : {}),
    }, { parent: this, dependsOn: [hostReady] });

    // CopyToRemote copies again only when its source or path changes, not when the host does;
    // the instance id in the triggers makes a replacement host get the bundle too. The bundle's
    // hash there makes every new bundle a replacement, with a new id, rather than an update in
    // place, which would keep the id the deploy's triggers hold.
    const copy = new command.remote.CopyToRemote(`${name}-bundle`, {
      connection: connection(4),
      source: staged,
      remotePath: `${dir}/.incoming`,
      triggers: [this.bundleHash, args.instanceId],
    }, { parent: this, dependsOn: [hostReady] });

    // Through nginx's port for the host's own requests, which no client's limits can refuse.
    const readyUrl = `http://127.0.0.1:${NGINX_LOCAL_PORT}/ready`;
    // With Let's Encrypt, deploy.sh then checks the certificate clients get, and names the
    // address a custom tls.domain's A record must point at when it is still the placeholder.
    // The first deploy.sh that exists, in this order (a loop, not `ls | head`: ls sorts by the
    // locale's collation, and en_US.UTF-8 puts bin/ before .incoming/, which ran the installed
    // script, that restarted the old bundle). A new bundle first: CopyToRemote copies into
    // .incoming/bundle when .incoming exists (host-ready makes it), but makes .incoming the bundle
    // itself when it does not (a host where host-ready's mkdir did not run, or .incoming was
    // removed by hand); then the installed one, when a change of secrets alone copied nothing.
    const deployScript = ip.apply((address) => [
      `d=${dir}`,
      `s=""`,
      `for c in "$d/.incoming/bundle/bin/deploy.sh" "$d/.incoming/bin/deploy.sh" "$d/bin/deploy.sh"; do if [ -f "$c" ]; then s=$c; break; fi; done`,
      `[ -n "$s" ] || { echo "gpu-sandbox: no bundle in $d (the copy did not happen); run pulumi up again" >&2; exit 1; }`,
      `exec bash "$s" "$d" ${config.readyTimeoutMinutes * 60} ${readyUrl}${config.tls.mode === "letsencrypt" ? ` ${address}` : ""}`,
    ].join("; "));
    const deploy = new command.remote.Command(`${name}-deploy`, {
      connection: connection(4),
      create: deployScript,
      update: deployScript,
      // An update would pass the last run's output as PULUMI_COMMAND_STDOUT/STDERR, which the
      // host's sshd refuses (no AcceptEnv): a warning at every update, for variables no script reads.
      addPreviousOutputInEnv: false,
      // The ids of the copy, of .env's write and of the certificate's install: each is new
      // whenever that step ran (a create), so the deploy runs after any step before it that ran
      // since its last success. Inputs alone would not do: a failed deploy is not recorded, and
      // a setting reverted after it would give the inputs of the last success again, so
      // `pulumi up` would run nothing and leave the host on the failed bundle or secrets.
      // A changed secret thus recreates the containers that use it; the volume's size makes a
      // larger volume get its filesystem grown (deploy.sh), after the resize (dependsOn).
      // Let's Encrypt's placeholder is left out: it never replaces an issued certificate.
      triggers: [this.bundleHash, args.instanceId, copy.id, env.id,
        replacesCertificate && certificateInstall ? certificateInstall.id : "no-pulumi-certificate", `volume ${config.volumeSizeGb} GB`],
    }, { parent: this, dependsOn: [copy, env, args.volume, ...(certificateInstall ? [certificateInstall] : [])] });
    return { deploy, hostKey };
  }
}

/**
 * Image tags resolved to digests through the registry, so that an image update is an explicit
 * diff in `pulumi up` rather than whatever the tag points to on the day the host pulls.
 */
function pinImages(name: string, images: Images, parent: pulumi.Resource): pulumi.Output<Images> {
  // Only the registry is asked: no Docker daemon is needed on the operator's machine.
  const provider = new docker.Provider(`${name}-registry`, { disableDockerDaemonCheck: true }, { parent });
  const pin = (ref: string): pulumi.Output<string> => ref.includes("@sha256:")
    ? pulumi.output(ref)
    : docker.getRegistryImageOutput({ name: ref }, { parent, provider }).apply((r) => `${ref}@${r.sha256Digest}`);
  return pulumi.all([pin(images.vllm), pin(images.litellm), pin(images.nginx), pin(images.certbot), pin(images.node)])
    .apply(([vllm, litellm, nginx, certbot, node]) => ({ vllm, litellm, nginx, certbot, node }));
}
