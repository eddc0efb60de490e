// The one place the scripts run the Pulumi CLI. Scripts take a `PulumiCli`; tests hand them a
// fake that records every call, so nothing here needs a cloud or a Pulumi install to be tested.
import { $, which } from "zx";
import { CREATED_AT_SUFFIX } from "../../infra/host.ts";
import { shellCommand } from "./cli.ts";

export interface PulumiResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Written to stdin. Secrets travel only this way, never in argv (visible in `ps`, logs). */
  readonly input?: string;
  /** Called with output as it arrives, for long commands (destroy). */
  readonly onOutput?: (chunk: string) => void;
  /**
   * Sends the command SIGINT when aborted: Pulumi's own ^C, a cancel that waits for the running
   * operation to reach a safe point (pulumi/pulumi#1231). Its output still goes to onOutput until
   * it exits: a Go program writing to a closed pipe dies of SIGPIPE, cancel or not.
   */
  readonly interrupt?: AbortSignal;
  /** Kills the command (SIGKILL) when aborted: Pulumi's second ^C, without waiting. */
  readonly kill?: AbortSignal;
}

export interface PulumiCli {
  /** Whether the `pulumi` program is on PATH. */
  available(): Promise<boolean>;
  /** Runs `pulumi <args>` in the project root. Never throws for a non-zero exit. */
  run(args: readonly string[], options?: RunOptions): Promise<PulumiResult>;
}

/** The real CLI through zx, in `root` (where Pulumi.yaml is). */
export function realPulumi(root: string, env: NodeJS.ProcessEnv = process.env): PulumiCli {
  return {
    async available() {
      return (await which("pulumi", { nothrow: true, path: env.PATH ?? "" })) !== null;
    },
    async run(args, options = {}) {
      // No update check or colours: the output is parsed or goes to cron mail. Without input,
      // stdin is /dev/null, so a prompt (e.g. for a missing passphrase) fails at once instead
      // of waiting forever in cron.
      const p = $({
        cwd: root, quiet: true, nothrow: true,
        env: { ...env, PULUMI_SKIP_UPDATE_CHECK: "true" },
        ...(options.input !== undefined ? { input: options.input } : { stdio: ["ignore", "pipe", "pipe"] }),
      })`exec pulumi ${args} --color never`;
      if (options.onOutput) {
        p.stdout.on("data", (d: Buffer) => options.onOutput!(d.toString()));
        p.stderr.on("data", (d: Buffer) => options.onOutput!(d.toString()));
      }
      // To pulumi itself, not its tree (zx's p.kill): its cancel tells its plugins, and a kill
      // must be sent before the script's own exit, which a tree walk (`ps`) would not wait for.
      // `exec` makes the shell zx starts pulumi itself, whichever bash (5.2 execs a last command
      // on its own, 3.2 does not), so the child signalled is pulumi.
      const relay = (signal: AbortSignal | undefined, name: NodeJS.Signals) => {
        const send = () => p.child?.kill(name);
        if (signal?.aborted) send();
        else signal?.addEventListener("abort", send, { once: true });
        return () => signal?.removeEventListener("abort", send);
      };
      const unrelay = [relay(options.interrupt, "SIGINT"), relay(options.kill, "SIGKILL")];
      try {
        const out = await p;
        return { exitCode: out.exitCode ?? 1, stdout: out.stdout, stderr: out.stderr };
      } finally {
        for (const off of unrelay) off();
      }
    },
  };
}

/** The command as a user would type it (for messages and "run this" hints). */
export function commandLine(args: readonly string[]): string {
  return shellCommand(["pulumi", ...args]);
}

/** The last lines of a failed command's output, for an error message. */
export function tail(result: PulumiResult, lines = 8): string {
  const text = `${result.stderr}\n${result.stdout}`.trim();
  return text.split("\n").slice(-lines).map((l) => `  ${l}`).join("\n");
}

export type StackOutputs = Readonly<Record<string, unknown>>;

/**
 * The stack's OpenAI base URL, when something was deployed behind it: a stack that never had
 * adminCidrs outputs the address it will have (servingDeployed false), and nothing answers there.
 */
export function endpointOf(outputs: StackOutputs): string | undefined {
  const e = outputs.endpoint;
  return outputs.servingDeployed !== false && typeof e === "string" && /^https?:\/\//.test(e) ? e : undefined;
}

export type OutputsResult =
  | { readonly kind: "outputs"; readonly outputs: StackOutputs }
  /** The backend has no such stack (never initialised, or removed). */
  | { readonly kind: "no-stack" }
  | { readonly kind: "error"; readonly message: string };

/**
 * `pulumi stack output --json --stack <stack>`. A stack that exists but was never deployed (or
 * was destroyed) has no outputs: `{}`. Without `showSecrets`, secrets read "[secret]".
 */
export async function stackOutputs(cli: PulumiCli, stack: string, options: { showSecrets?: boolean } = {}): Promise<OutputsResult> {
  const args = ["stack", "output", "--json", "--stack", stack, ...(options.showSecrets ? ["--show-secrets"] : [])];
  const r = await cli.run(args);
  if (r.exitCode !== 0) {
    if (noSuchStack(r)) return { kind: "no-stack" };
    return { kind: "error", message: firstLine(r) };
  }
  try {
    const parsed: unknown = JSON.parse(r.stdout || "{}");
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    return { kind: "outputs", outputs: parsed as StackOutputs };
  } catch {
    return { kind: "error", message: `\`${commandLine(args)}\` did not print a JSON object` };
  }
}

/** Whether a failed command said the backend has no such stack (never initialised, or removed). */
function noSuchStack(r: PulumiResult): boolean {
  return /no stack named|stack .* not found/i.test(r.stderr);
}

/** What a stack's state holds, for a stack without outputs (and for `list-tenants --linode`, any stack). */
export type StackState =
  /** `resources`: how many the state holds (none: never deployed, or destroyed). */
  /**
   * `pendingCreates`: the billable resources ("the instance gs-acme", by their URNs) whose create a
   * `pulumi up` was interrupted in: Linode may have finished them, but the state does not hold
   * them, so no destroy deletes them (pulumi/pulumi#4265).
   */
  /** `linodeIds`: Linode's ids of the instances and volumes the state holds, which its destroy deletes. */
  | {
    readonly kind: "state"; readonly hasInstance: boolean; readonly createdAt: string | undefined; readonly resources: number;
    readonly pendingCreates: readonly string[]; readonly linodeIds: { readonly instances: readonly string[]; readonly volumes: readonly string[] };
  }
  /** The backend has no such stack (never initialised, or removed): it holds nothing. */
  | { readonly kind: "no-stack" }
  | { readonly kind: "error"; readonly message: string };

/**
 * A stack's outputs and, when it has none, its state: the program's outputs wait for the deploy
 * to succeed (servingDeployed), so an update that fails writes none and the stack keeps those
 * of its last successful one. A stack without any is either never deployed, destroyed, or a
 * first deploy that failed half way with resources left (stackState tells which).
 */
export async function stackOutputsAndState(cli: PulumiCli, stack: string): Promise<{ outputs: OutputsResult; state?: StackState }> {
  const outputs = await stackOutputs(cli, stack);
  if (outputs.kind !== "outputs" || Object.keys(outputs.outputs).length > 0) return { outputs };
  return { outputs, state: await stackState(cli, stack) };
}

/**
 * `pulumi stack export --stack <stack>`: whether a Linode instance is in the state (and Linode's
 * ids of the instances and volumes it holds) and when the host was first created (the
 * `created-at` RandomString's keeper). Pulumi >= 3.112 writes the
 * outputs a failed update registered (pulumi/pulumi#15754), but the program registers its outputs
 * only once the deploy succeeded (ServingStack's servingDeployed), so a first `pulumi up` that
 * failed half way leaves a billing instance behind a stack with no outputs; only the state tells.
 */
export async function stackState(cli: PulumiCli, stack: string): Promise<StackState> {
  const args = ["stack", "export", "--stack", stack];
  const r = await cli.run(args);
  if (r.exitCode !== 0) return noSuchStack(r) ? { kind: "no-stack" } : { kind: "error", message: firstLine(r) };
  try {
    const doc = JSON.parse(r.stdout) as { deployment?: { resources?: { type?: string; urn?: string; id?: unknown; outputs?: { keepers?: { createdAt?: unknown } } }[]; pending_operations?: { type?: string; resource?: { type?: string; urn?: string } }[] } };
    const resources = doc.deployment?.resources ?? [];
    const pendingCreates = (doc.deployment?.pending_operations ?? [])
      .filter((op) => op.type === "creating" && BILLABLE_TYPES.has(op.resource?.type ?? ""))
      .map((op) => `${BILLABLE_TYPES.get(op.resource!.type!)} ${op.resource?.urn?.split("::").at(-1) ?? "?"}`);
    const created = resources.find((res) => res.type === "random:index/randomString:RandomString" && res.urn?.endsWith(CREATED_AT_SUFFIX));
    const createdAt = created?.outputs?.keepers?.createdAt;
    const idsOf = (type: string) => resources.flatMap((res) => (res.type === type && typeof res.id === "string" && res.id !== "" ? [res.id] : []));
    return {
      kind: "state", hasInstance: resources.some((res) => res.type === INSTANCE_TYPE),
      createdAt: typeof createdAt === "string" ? createdAt : undefined, resources: resources.length, pendingCreates,
      linodeIds: { instances: idsOf(INSTANCE_TYPE), volumes: idsOf(VOLUME_TYPE) },
    };
  } catch {
    return { kind: "error", message: `\`${commandLine(args)}\` did not print a JSON document` };
  }
}

const INSTANCE_TYPE = "linode:index/instance:Instance";
const VOLUME_TYPE = "linode:index/volume:Volume";
/** What Linode bills for among the program's resources: the GPU instance and its volume. */
const BILLABLE_TYPES = new Map([[INSTANCE_TYPE, "the instance"], [VOLUME_TYPE, "the volume"]]);

/** Stores a secret in the stack's config; the value goes through stdin, never argv. */
export function setSecretArgs(stack: string, key: string): string[] {
  return ["config", "set", "--secret", "--stack", stack, key];
}

/**
 * `--refresh` reads what is left before deleting: a destroy that stopped after Linode deleted a
 * resource (its answer lost, a timeout) leaves it in the state, and without a refresh every retry
 * fails on Linode's 404 with the GPU billing on; the Linode provider's read drops a resource Linode
 * no longer has. Pending creates are kept by a refresh (Pulumi's engine keeps them), so they are as
 * before: reported by list-tenants and reap-expired, deleted by no destroy.
 */
export function destroyArgs(stack: string): string[] {
  return ["destroy", "--yes", "--non-interactive", "--refresh", "--stack", stack];
}

/** What a failed command said first: Pulumi's first line names the problem. */
function firstLine(r: PulumiResult): string {
  return (r.stderr || r.stdout).trim().split("\n")[0]!;
}
