// The steps of npm run rotate-admin-token: a planned rotation of a tenant's admin token, with an
// overlap during which the old token is still let in (docs/operations.md, "Rotate the admin token").
import { CONFIG_NAMESPACE } from "../../infra/config/types.ts";
import { UsageError, type Io } from "./cli.ts";
import { commandLine, type PulumiCli, type PulumiResult, setSecretArgs, stackOutputs, tail } from "./pulumi.ts";

const PREVIOUS = `${CONFIG_NAMESPACE}:previousAdminToken`;
const UNTIL = `${CONFIG_NAMESPACE}:previousAdminTokenUntil`;
/** The admin token's resource: ServingStack's `<name>-admin-token` RandomPassword. */
const TOKEN_TYPE = "random:index/randomPassword:RandomPassword";
const TOKEN_NAME_SUFFIX = "-admin-token";

export interface RotationDeps {
  readonly pulumi: PulumiCli;
  readonly io: Io;
  readonly now: () => Date;
}

/** `pulumi up` without prompts; `--replace` makes the resource of that URN again. */
export function upArgs(stack: string, replace?: string): string[] {
  return ["up", "--yes", "--non-interactive", "--skip-preview", "--stack", stack, ...(replace === undefined ? [] : ["--replace", replace])];
}

/**
 * The start: the current token (the stack's adminToken output) stored as previousAdminToken with
 * its end, the admin token replaced and deployed, so the host's shim takes the new token and
 * still lets the old one in. Run again after a failure, it goes on: a previousAdminToken that is
 * the current token is one a run stored before its deploy failed. One that is not is another
 * rotation under way, which must be finished first (its previous token would be lost).
 */
export async function startRotation(stack: string, overlapMs: number, deps: RotationDeps): Promise<number> {
  const { pulumi, io } = deps;
  const current = await currentToken(pulumi, stack);
  const stored = (await stackConfig(pulumi, stack))[PREVIOUS];
  if (stored !== undefined && stored !== current) {
    throw new UsageError(`a rotation of ${stack}'s admin token is under way (${PREVIOUS} is set, and is not the current token). If an earlier start's deploy failed after the token was replaced, \`pulumi up --stack ${stack}\` completes that rotation, its overlap kept. Otherwise finish it first with \`npm run rotate-admin-token -- --stack ${stack} --finish\` (the old token is refused from then on), then start this one`, { exit: "failed" });
  }
  if (stored !== undefined) io.err(`${PREVIOUS} is already the current token (an earlier run's deploy failed): going on from there`);
  const urn = await adminTokenUrn(pulumi, stack);
  const until = new Date(deps.now().getTime() + overlapMs).toISOString();
  io.err(`storing ${stack}'s current admin token as ${PREVIOUS} (secret), let in until ${until}…`);
  await mustSucceed(pulumi.run(setSecretArgs(stack, PREVIOUS), { input: current }), setSecretArgs(stack, PREVIOUS));
  await mustSucceed(pulumi.run(["config", "set", "--stack", stack, UNTIL, until]), ["config", "set", "--stack", stack, UNTIL, until]);
  io.err(`replacing the admin token and deploying (\`${commandLine(upArgs(stack, urn))}\`)…`);
  const up = await deploy(pulumi, io, upArgs(stack, urn));
  if (up.exitCode !== 0) {
    throw new UsageError(`\`pulumi up\` failed (exit ${up.exitCode}):\n${tail(up)}\n` +
      `Until a deploy succeeds, the host keeps the old admin token (the old admin token still works). Fix what it says, then run the same command again: it goes on from where this one stopped.`, { exit: "failed" });
  }
  if ((await currentToken(pulumi, stack)) === current) {
    throw new UsageError(`the deploy succeeded but ${stack}'s adminToken output is still the old token: the admin token was not replaced. Check \`${commandLine(["stack", "--stack", stack])}\` for the resource ${urn}`, { exit: "failed" });
  }
  io.out([
    `${stack}'s admin token is replaced; the old admin token is let in until ${until}.`,
    "Next:",
    `  1. Hand out the new token: pulumi stack output adminToken --show-secrets --stack ${stack}`,
    `  2. See who still sends the old one: shim_admin_previous_token_requests_total on the shim's /metrics, the answers' header`,
    `     x-admin-token-previous: true, and the shim's log lines with "adminToken":"previous" (their client address and path)`,
    `  3. Once none does (by ${until} at the latest, when the shim refuses it anyway):`,
    `     npm run rotate-admin-token -- --stack ${stack} --finish`,
  ].join("\n"));
  return 0;
}

/** The end: previousAdminToken and its end removed from the stack's config, and deployed. */
export async function finishRotation(stack: string, deps: RotationDeps): Promise<number> {
  const { pulumi, io } = deps;
  // Removing a key the config does not have succeeds: a run after a failed deploy does it again.
  for (const key of [PREVIOUS, UNTIL]) await mustSucceed(pulumi.run(["config", "rm", "--stack", stack, key]), ["config", "rm", "--stack", stack, key]);
  io.err(`deploying ${stack} without the previous admin token (\`${commandLine(upArgs(stack))}\`)…`);
  const up = await deploy(pulumi, io, upArgs(stack));
  if (up.exitCode !== 0) {
    throw new UsageError(`\`pulumi up\` failed (exit ${up.exitCode}):\n${tail(up)}\n` +
      `The host still lets the old admin token in until its end: fix what it says, then run the same command again.`, { exit: "failed" });
  }
  io.out(`the old admin token of ${stack} is refused from now on (401, as any wrong token).`);
  return 0;
}

/** The stack's adminToken output: the token the host's shim has as SHIM_ADMIN_TOKEN. */
async function currentToken(pulumi: PulumiCli, stack: string): Promise<string> {
  const r = await stackOutputs(pulumi, stack, { showSecrets: true });
  if (r.kind === "no-stack") throw new UsageError(`no stack named ${stack} (\`pulumi stack ls\` lists them)`);
  if (r.kind === "error") throw new UsageError(`could not read stack ${stack}'s outputs: ${r.message}`, { exit: "failed" });
  const token = r.outputs.adminToken;
  if (typeof token !== "string" || token === "") throw new UsageError(`stack ${stack} has no adminToken output: it was never deployed, so there is no token to rotate`, { exit: "failed" });
  return token;
}

/** The stack's config values by full key (`gpu-sandbox:…`), secrets shown: `pulumi config --json --show-secrets`. */
async function stackConfig(pulumi: PulumiCli, stack: string): Promise<Record<string, string>> {
  const args = ["config", "--json", "--show-secrets", "--stack", stack];
  const r = await mustSucceed(pulumi.run(args), args);
  try {
    const parsed = JSON.parse(r.stdout) as Record<string, { value?: unknown }>;
    return Object.fromEntries(Object.entries(parsed).flatMap(([k, v]) => (typeof v?.value === "string" ? [[k, v.value]] : [])));
  } catch {
    throw new UsageError(`\`${commandLine(args)}\` did not print a JSON object`, { exit: "failed" });
  }
}

/** The URN of the stack's admin token resource, from its state (`pulumi stack export`). */
async function adminTokenUrn(pulumi: PulumiCli, stack: string): Promise<string> {
  const args = ["stack", "export", "--stack", stack];
  const r = await mustSucceed(pulumi.run(args), args);
  let urns: string[];
  try {
    const doc = JSON.parse(r.stdout) as { deployment?: { resources?: { type?: string; urn?: string }[] } };
    urns = (doc.deployment?.resources ?? []).filter((x) => x.type === TOKEN_TYPE && x.urn?.endsWith(TOKEN_NAME_SUFFIX)).map((x) => x.urn!);
  } catch {
    throw new UsageError(`\`${commandLine(args)}\` did not print a JSON document`, { exit: "failed" });
  }
  if (urns.length !== 1) throw new UsageError(`stack ${stack}'s state has ${urns.length} admin token resources (a RandomPassword named …${TOKEN_NAME_SUFFIX}), not one: replace it by hand (docs/operations.md, "Rotate the admin token")`, { exit: "failed" });
  return urns[0]!;
}

async function mustSucceed(run: Promise<PulumiResult>, args: readonly string[]): Promise<PulumiResult> {
  const r = await run;
  if (r.exitCode !== 0) throw new UsageError(`\`${commandLine(args)}\` failed (exit ${r.exitCode}):\n${tail(r)}`, { exit: "failed" });
  return r;
}

/** `pulumi up` with its output as it comes, each line indented, on stderr: a deploy takes minutes. */
async function deploy(pulumi: PulumiCli, io: Io, args: readonly string[]): Promise<PulumiResult> {
  let partial = "";
  const show = (text: string) => { for (const line of text.split("\n")) if (line.trim() !== "") io.err(`  ${line}`); };
  const r = await pulumi.run(args, {
    onOutput: (chunk) => {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop()!;
      show(lines.join("\n"));
    },
  });
  show(partial); // a last line without its newline
  return r;
}
