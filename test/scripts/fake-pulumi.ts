import type { PulumiCli, PulumiResult, RunOptions } from "../../scripts/lib/pulumi.ts";

/**
 * A stand-in for the Pulumi CLI (scripts/lib/pulumi.ts's seam): it records every call with its
 * argv and stdin, answers `stack output` from a table of stacks, and lets a test script any
 * other command's result. Unscripted commands succeed with no output.
 */
export interface FakeStack {
  /** Stack outputs as `pulumi stack output --json --show-secrets` prints them; undefined: never deployed. */
  outputs?: Record<string, unknown>;
  /** `stack output` fails with this message (e.g. a backend that cannot be read). */
  outputError?: string;
  /** Resources for `stack export` (type, urn, the provider's id, outputs), as a state file holds them. */
  resources?: { type: string; urn: string; id?: string; outputs?: Record<string, unknown> }[];
  /** Operations an interrupted `pulumi up` left pending in the state (`pending_operations`). */
  pendingOperations?: { type: string; resource: { type: string; urn: string } }[];
}

export interface Call {
  args: string[];
  input: string | undefined;
}

export class FakePulumi implements PulumiCli {
  readonly calls: Call[] = [];
  installed = true;
  stacks = new Map<string, FakeStack>();
  /** Returns a result to override the default for a command, or undefined. */
  script: (args: string[]) => Partial<PulumiResult> | undefined = () => undefined;

  constructor(stacks: Record<string, FakeStack> = {}) {
    for (const [name, s] of Object.entries(stacks)) this.stacks.set(name, s);
  }

  async available(): Promise<boolean> {
    return this.installed;
  }

  async run(args: readonly string[], options: RunOptions = {}): Promise<PulumiResult> {
    const call = { args: [...args], input: options.input };
    this.calls.push(call);
    const scripted = this.script(call.args);
    if (scripted) {
      const r = { exitCode: 0, stdout: "", stderr: "", ...scripted };
      options.onOutput?.(r.stdout + r.stderr);
      return r;
    }
    if (args[0] === "stack" && args[1] === "output") return this.output(call.args);
    if (args[0] === "stack" && args[1] === "export") {
      const s = this.stacks.get(this.stackArg(call.args));
      if (!s) return { exitCode: 255, stdout: "", stderr: `error: no stack named '${this.stackArg(call.args)}' found\n` };
      const pending = s.pendingOperations ? { pending_operations: s.pendingOperations } : {};
      return { exitCode: 0, stdout: JSON.stringify({ version: 3, deployment: { resources: s.resources ?? [], ...pending } }), stderr: "" };
    }
    if (args[0] === "destroy") {
      const stack = this.stackArg(call.args);
      const s = this.stacks.get(stack);
      if (s) (s.outputs = {}), (s.resources = []); // a destroyed stack keeps its state, without outputs or resources
      options.onOutput?.(`Destroying (${stack})\nThe resources in the stack have been deleted\n`);
      return { exitCode: 0, stdout: "The resources in the stack have been deleted", stderr: "" };
    }
    return { exitCode: 0, stdout: "", stderr: "" };
  }

  /** The calls whose argv starts with `prefix`. */
  callsOf(...prefix: string[]): Call[] {
    return this.calls.filter((c) => prefix.every((p, i) => c.args[i] === p));
  }

  stackArg(args: readonly string[]): string {
    const i = args.indexOf("--stack");
    return i === -1 ? "" : args[i + 1] ?? "";
  }

  private output(args: string[]): PulumiResult {
    const stack = this.stackArg(args);
    const s = this.stacks.get(stack);
    if (!s) return { exitCode: 255, stdout: "", stderr: `error: no stack named '${stack}' found\n` };
    if (s.outputError) return { exitCode: 255, stdout: "", stderr: `error: ${s.outputError}\n` };
    const showSecrets = args.includes("--show-secrets");
    const secret = new Set(["sshPrivateKey", "rootPassword", "apiKeys", "adminToken"]);
    const shown = Object.fromEntries(Object.entries(s.outputs ?? {}).map(([k, v]) => [k, secret.has(k) && !showSecrets ? "[secret]" : v]));
    return { exitCode: 0, stdout: `${JSON.stringify(shown, null, 2)}\n`, stderr: "" };
  }
}
