// new-tenant's Pulumi half: creating the stack and storing its secrets once the stack file is
// written, what is left to do by hand when a step fails, and how a second run (after a failure
// or a Ctrl-C) finds where the first one stopped. A stack that is already deployed under the
// name is never taken over: on a shared backend it may be another operator's live tenant.
import { CONFIG_NAMESPACE } from "../../infra/config/types.ts";
import { stackFileHoldsSecrets, storedSecretKeys } from "../../infra/stack-file.ts";
import type { Io } from "./cli.ts";
import { commandLine, type PulumiCli, type PulumiResult, setSecretArgs, stackOutputsAndState, tail } from "./pulumi.ts";

/** Secrets new-tenant stores in the stack: environment variable → config key. */
export const SECRETS_FROM_ENV = [
  { env: "LINODE_TOKEN", key: "linode:token", always: true },
  { env: "HF_TOKEN", key: `${CONFIG_NAMESPACE}:hfToken`, always: false },
] as const;

export type SecretFromEnv = (typeof SECRETS_FROM_ENV)[number];

/** The set-up steps already done, so the steps printed to finish by hand are only those left. */
export interface SetupProgress {
  /** Logged in to a backend (whoami, or a backend that answered about the stack). */
  loggedIn: boolean;
  stackCreated: boolean;
  /** Config keys of the secrets stored in the stack. */
  readonly stored: Set<string>;
}

const nothingDone = (): SetupProgress => ({ loggedIn: false, stackCreated: false, stored: new Set() });

/**
 * The commands that finish the set-up by hand, leaving out those done; secrets are piped from the
 * environment. A variable not set in `env` gets its pipe commented out, after a line saying to
 * export it first, as initStack says it is not set: `printenv X | pulumi config set --secret`
 * with X unset stores an empty secret and exits 0 (pulumi reads stdin without checking it), so
 * the step must not run as pasted.
 */
export function manualSteps(stack: string, secrets: readonly SecretFromEnv[], env: NodeJS.ProcessEnv, done: SetupProgress = nothingDone()): string {
  const setSecret = (s: SecretFromEnv): string[] => {
    const pipe = `printenv ${s.env} | ${commandLine(setSecretArgs(stack, s.key))}`;
    if (env[s.env]) return [`  ${pipe}`];
    return [`  # ${s.env} is not set: export it, then run the line below; or skip it, and \`pulumi up\` needs ${s.env} in its environment`, `  # ${pipe}`];
  };
  return [
    done.loggedIn ? "To finish:" : "To finish (the pulumi CLI is needed: https://www.pulumi.com/docs/iac/download-install/):",
    ...(done.loggedIn ? [] : ["  pulumi login --local        # only if you use no backend yet"]),
    ...(done.stackCreated ? [] : [`  ${commandLine(["stack", "init", stack])}`]),
    ...secrets.filter((s) => !done.stored.has(s.key)).flatMap(setSecret),
    `  pulumi up --stack ${stack}`,
  ].join("\n");
}

/** What the backend holds under a stack name. */
type BackendStack =
  | { readonly kind: "none" }
  /** In the backend with nothing deployed: never, or destroyed. */
  | { readonly kind: "empty" }
  /** `what`: "12 outputs", "3 resources" (a first deploy that failed leaves resources and no outputs). */
  | { readonly kind: "deployed"; readonly what: string }
  | { readonly kind: "unknown"; readonly message: string };

/** Reads the stack's outputs, and for a stack without any, its state's resources. */
async function backendStack(pulumi: PulumiCli, stack: string): Promise<BackendStack> {
  const { outputs: o, state } = await stackOutputsAndState(pulumi, stack);
  if (o.kind === "no-stack") return { kind: "none" };
  if (o.kind === "error") return { kind: "unknown", message: o.message };
  const outputs = Object.keys(o.outputs).length;
  if (outputs > 0 || state === undefined) return { kind: "deployed", what: `${outputs} output${outputs === 1 ? "" : "s"}` };
  if (state.kind === "error") return { kind: "unknown", message: state.message };
  // Removed between the two reads: none now.
  if (state.kind === "no-stack") return { kind: "none" };
  return state.resources > 0 ? { kind: "deployed", what: `${state.resources} resource${state.resources === 1 ? "" : "s"}` } : { kind: "empty" };
}

export interface SetupContext {
  readonly pulumi: PulumiCli;
  readonly io: Io;
  readonly env: NodeJS.ProcessEnv;
  /** The project root (where stacks/ is). */
  readonly root: string;
  readonly stack: string;
  readonly secrets: readonly SecretFromEnv[];
  /** The stack file as shown to the operator (stacks/Pulumi.acme.yaml). */
  readonly shownFile: string;
  /** Removes the stack file this run wrote; none on a re-run, which wrote none. */
  readonly discardFile?: () => void;
  /** What the smoke test after `pulumi up` needs: the CA of a self-signed endpoint, a key's name. */
  readonly smokeTest: { readonly selfSigned: boolean; readonly keyName: string | undefined };
}

/**
 * The smoke test to run after `pulumi up`, as lines to paste: the key exported (smoke-test reads
 * GPU_SANDBOX_API_KEY), and for a self-signed endpoint its CA, without which every check fails.
 */
function smokeTestSteps(stack: string, { selfSigned, keyName }: SetupContext["smokeTest"]): string[] {
  const key = keyName !== undefined
    // Quoted as a jq key: a name may hold `-` or start with a digit (`.team-07` is a subtraction).
    ? `  export GPU_SANDBOX_API_KEY="$(pulumi stack output apiKeys --show-secrets --stack ${stack} | jq -r '.["${keyName}"]')"`
    : `  # no --key: make one (npm run manage-keys -- create --stack ${stack} --name smoke --credits 10) and export it as GPU_SANDBOX_API_KEY`;
  return [
    key,
    ...(selfSigned ? [`  pulumi stack output caCertificate --stack ${stack} > ca.pem`] : []),
    `  npm run smoke-test -- --url "$(pulumi stack output endpoint --stack ${stack})"${selfSigned ? " --ca ca.pem" : ""}`,
  ];
}

/**
 * After the stack file is written: login if need be, `stack init`, secrets; from `done` on, for a
 * re-run finishing an earlier one. False when a step failed (said on stderr).
 */
export async function initStack(ctx: SetupContext, from: SetupProgress = nothingDone()): Promise<boolean> {
  const { pulumi, io, env, stack } = ctx;
  const done: SetupProgress = { ...from, stored: new Set(from.stored) };
  const fail = (args: readonly string[], r: PulumiResult): false => {
    io.err(`\`${commandLine(args)}\` failed (exit ${r.exitCode}):\n${tail(r)}\nThe stack file is written; fix the cause and finish by hand:\n${manualSteps(stack, ctx.secrets, ctx.env, done)}`);
    return false;
  };
  // Use whatever backend the operator is logged in to; with none, the local one (~/.pulumi).
  // Any other whoami failure (an expired cloud token, no network) stops here: switching such an
  // operator to another backend would put the stack where they will not look for it.
  if (!done.loggedIn) {
    const who = await pulumi.run(["whoami"]);
    if (who.exitCode !== 0) {
      if (!/PULUMI_ACCESS_TOKEN must be set|not logged in/i.test(who.stderr)) return fail(["whoami"], who);
      io.out("Not logged in to a Pulumi backend: using the local backend (pulumi login --local).");
      const login = await pulumi.run(["login", "--local"]);
      if (login.exitCode !== 0) return fail(["login", "--local"], login);
    }
    done.loggedIn = true;
  }
  if (!done.stackCreated) {
    io.out(`Creating stack ${stack}…`);
    const init = await pulumi.run(["stack", "init", stack]);
    if (init.exitCode !== 0) {
      if (!/already exists/i.test(init.stderr)) return fail(["stack", "init", stack], init);
      if (!(await adoptExisting(ctx))) return false;
    }
    done.stackCreated = true;
  }
  for (const s of ctx.secrets.filter((s) => !done.stored.has(s.key))) {
    const value = env[s.env];
    if (!value) {
      io.out(`${s.env} is not set: ${s.key} not stored (\`pulumi up\` then needs ${s.env} in its environment).`);
      continue;
    }
    const args = setSecretArgs(stack, s.key);
    // The value goes on stdin: never in argv, where `ps` and shell history would show it.
    const r = await pulumi.run(args, { input: value });
    if (r.exitCode !== 0) return fail(args, r);
    done.stored.add(s.key);
    io.out(`Stored ${s.key} from $${s.env} (encrypted in the stack).`);
  }
  io.out(`\nNext: pulumi up --stack ${stack}\nThen:\n${smokeTestSteps(stack, ctx.smokeTest).join("\n")}`);
  return true;
}

/**
 * `stack init` found the name taken. A stack with nothing deployed (never, or destroyed) is
 * used; one with outputs or resources, or one that cannot be read, may be a live tenant (another
 * operator's on a shared backend, or one whose stack file was deleted): setting secrets on it and
 * `pulumi up` with this run's file would reconfigure it. Then nothing is set, and the file this
 * run wrote is removed, so the name is as it was.
 */
async function adoptExisting(ctx: SetupContext): Promise<boolean> {
  const { stack, io } = ctx;
  const found = await backendStack(ctx.pulumi, stack);
  if (found.kind === "empty") {
    io.out(`Stack ${stack} already exists in the backend with nothing deployed (never, or destroyed); using it.`);
    return true;
  }
  ctx.discardFile?.();
  const why = found.kind === "deployed" ? `is deployed (${found.what})` : `could not be read (${found.kind === "unknown" ? found.message : "not found after all"})`;
  io.err(`Stack ${stack} already exists in the backend and ${why}: new-tenant does not take over a stack that may be a live tenant (another operator's, or one whose stack file was lost). ` +
    `No secret was set, and ${ctx.shownFile}, ${ctx.discardFile ? "which this run wrote, is removed" : "which an earlier run wrote, is left as it is"}.\n` +
    `Pick another name. If the tenant is yours, restore its own stack file (e.g. from version control) rather than write a new one${found.kind === "unknown" ? "; or fix the cause and run again" : ""}.`);
  return false;
}

/**
 * The stack file is there already and differs from what this run would write (`differences`,
 * from stackFileDifferences): new-tenant never overwrites it. Says how it differs, what the
 * backend holds under the name and, if an earlier run stopped half way, the steps it did not get
 * to. Always 1: this run changed nothing.
 */
export async function reportExisting(ctx: SetupContext, differences: readonly string[]): Promise<number> {
  const { stack, io, shownFile } = ctx;
  const exists = `${shownFile} already exists; new-tenant never overwrites a stack file.${differences.length ? ` It differs from what this run would write: ${differences.join("; ")}.` : ""}`;
  if (!(await ctx.pulumi.available())) {
    io.err(`${exists} Edit it, or pick another name. If an earlier run stopped half way:\n${manualSteps(stack, ctx.secrets, ctx.env)}`);
    return 1;
  }
  const found = await backendStack(ctx.pulumi, stack);
  if (found.kind === "deployed") {
    io.err(`${exists} Stack ${stack} is deployed (${found.what}): edit the file and \`pulumi up --stack ${stack}\`, or pick another name.`);
    return 1;
  }
  if (found.kind === "unknown") {
    io.err(`${exists} Whether stack ${stack} is in the backend could not be read (${found.message}). Edit the file, or pick another name. If an earlier run stopped half way:\n${manualSteps(stack, ctx.secrets, ctx.env)}`);
    return 1;
  }
  if (found.kind === "none") {
    let createdElsewhere = false;
    try {
      createdElsewhere = stackFileHoldsSecrets(ctx.root, stack);
    } catch {
      // Not readable as YAML: nothing is known to be in it, so every step is listed.
    }
    // Pulumi writes encrypted values and the stack's encryption settings into the file only for
    // a stack it created: one not in this backend was created in another (another login, or
    // `pulumi stack rm --preserve-config`). A `stack init` here would make a second stack whose
    // key cannot decrypt them.
    if (createdElsewhere) {
      io.err(`${exists} Stack ${stack} is not in this backend, but the file holds encrypted values (\`secure:\`, \`encryptionsalt\` or \`secretsprovider\`), which Pulumi writes only for a stack it created: ` +
        `it was probably created in another backend (another login), or removed with \`pulumi stack rm --preserve-config\`. ` +
        `See which backend you are logged in to with \`pulumi whoami -v\` and its stacks with \`pulumi stack ls\`; log in to the one that holds ${stack}, or edit the file, or pick another name.`);
      return 1;
    }
    // Nothing stored in a stack that does not exist, whatever keys the file sets.
    io.err(`${exists} Stack ${stack} is not in the backend: an earlier run stopped before creating it. If the file is the tenant you want:\n${manualSteps(stack, ctx.secrets, ctx.env, { ...nothingDone(), loggedIn: true })}\nOtherwise edit it, or pick another name.`);
    return 1;
  }
  let stored: string[] = [];
  try {
    stored = storedSecretKeys(ctx.root, stack);
  } catch {
    // Not readable as YAML: no secret is known to be stored, so every step is listed.
  }
  const done: SetupProgress = { loggedIn: true, stackCreated: true, stored: new Set(stored) };
  io.err(`${exists} Stack ${stack} exists with nothing deployed. If the file is the tenant you want:\n${manualSteps(stack, ctx.secrets, ctx.env, done)}\nOtherwise edit it, or pick another name.`);
  return 1;
}

/**
 * The stack file is there already, as this run would write it: an earlier run's, re-run (a
 * pipeline retrying). Finishes what that run left undone (`stack init`, secrets not stored), or
 * says on stderr that there is nothing to do: 0 either way. A deployed stack is never changed: a
 * secret it lacks is refused (1), with the command that stores it. 1 too when the backend cannot
 * be read, or the file was made by a stack in another backend.
 */
export async function finishExisting(ctx: SetupContext): Promise<number> {
  const { stack, io, shownFile, env } = ctx;
  const same = `${shownFile} is already as this run would write it`;
  let stored: Set<string>;
  let createdElsewhere: boolean;
  try {
    stored = new Set(storedSecretKeys(ctx.root, stack));
    createdElsewhere = stackFileHoldsSecrets(ctx.root, stack);
  } catch {
    stored = new Set(); // read and compared a moment ago: gone since, nothing known stored
    createdElsewhere = false;
  }
  if (!(await ctx.pulumi.available())) {
    io.err(`${same}: nothing to do without the pulumi CLI. If the stack is not set up yet:\n${manualSteps(stack, ctx.secrets, env, { loggedIn: false, stackCreated: createdElsewhere, stored })}`);
    return 0;
  }
  // A secret this run would store and has the value of, not in the stack yet.
  const missing = ctx.secrets.filter((s) => !stored.has(s.key) && env[s.env]);
  const unset = ctx.secrets.filter((s) => !stored.has(s.key) && !env[s.env]).map((s) => `; ${s.env} is not set: ${s.key} not stored (\`pulumi up\` then needs ${s.env} in its environment)`).join("");
  const found = await backendStack(ctx.pulumi, stack);
  switch (found.kind) {
    case "unknown":
      io.err(`${same}, but whether stack ${stack} is in the backend could not be read (${found.message}); nothing was changed. Fix the cause and run again.`);
      return 1;
    case "none":
      if (createdElsewhere) return reportExisting(ctx, []); // says where the stack may be
      io.err(`${same}; stack ${stack} is not in the backend (an earlier run stopped before creating it): finishing the set-up.`);
      return (await initStack(ctx)) ? 0 : 1;
    case "empty":
      if (missing.length === 0) {
        io.err(`${same}, and stack ${stack} exists with nothing deployed${stored.size ? ` and ${[...stored].join(", ")} stored` : ""}${unset}: nothing to do. Next: pulumi up --stack ${stack}`);
        return 0;
      }
      io.err(`${same}; stack ${stack} exists with nothing deployed, without ${missing.map((s) => s.key).join(", ")}: finishing the set-up.`);
      return (await initStack(ctx, { loggedIn: true, stackCreated: true, stored })) ? 0 : 1;
    case "deployed":
      if (missing.length === 0) {
        io.err(`${same}, and stack ${stack} is deployed (${found.what})${unset}: nothing to do.`);
        return 0;
      }
      io.err(`${same}, but stack ${stack} is deployed (${found.what}) without ${missing.map((s) => s.key).join(", ")}, and new-tenant changes nothing in a deployed stack. ` +
        `To store ${missing.length === 1 ? "it" : "them"} (the next \`pulumi up\` uses ${missing.length === 1 ? "it" : "them"}):\n${missing.map((s) => `  printenv ${s.env} | ${commandLine(setSecretArgs(stack, s.key))}`).join("\n")}`);
      return 1;
  }
}
