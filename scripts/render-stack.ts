// npm run render -- --stack <name> [--out <dir>]
// Validates stacks/Pulumi.<name>.yaml with the same code as `pulumi up`, writes what would go
// to the host to out/<name>/, and prints the plan. Needs no cloud account and no Pulumi CLI.
import { join, relative } from "node:path";
import { describeProblems, validateConfig } from "../infra/config.ts";
import { formatProblem } from "../infra/config/checks.ts";
import { CONFIG_NAMESPACE } from "../infra/config/types.ts";
import { formatPlan, planFor } from "../infra/plan.ts";
import { BundleDirError, renderBundle, writeBundle } from "../infra/render/bundle.ts";
import { hostCloudInit } from "../infra/render/cloud-init.ts";
import { listStackNames, misplacedSetting, readStackConfig, StackFileError } from "../infra/stack-file.ts";
import { parseFlags, UsageError } from "./lib/cli.ts";
import { EXIT, EXIT_CODES_USAGE, exitCodeOf, writeFailureClass } from "./lib/exit-codes.ts";

const USAGE = `Usage: npm run render -- --stack <name> [--out <dir>]

Validates stacks/Pulumi.<name>.yaml, writes the host bundle to out/<name>/ (or --out) and prints
the plan: resources, open ports, GPU and cost. Exits 2 when the stack is missing or invalid.

A render replaces the files an earlier render wrote to the directory (those its MANIFEST.sha256
lists, and cloud-init.yaml) and touches nothing else there, such as a .env; it refuses, changing
nothing, a directory holding a file it would write over that no earlier render wrote. A relative
--out starts at the repository's root, where npm runs the script.

${EXIT_CODES_USAGE}`;

export interface RenderResult {
  readonly outDir: string;
  readonly files: readonly string[];
  readonly plan: string;
  /** What `pulumi up` refuses though the bundle renders (an adminCidrs nobody connects from). */
  readonly deployProblems: readonly string[];
}

/** Renders one stack; throws UsageError/StackFileError with a message meant for the user. */
export function renderStack(root: string, stack: string, out?: string): RenderResult {
  const outDir = out ?? join(root, "out", stack);
  const raw = readStackConfig(root, stack);
  const result = validateConfig(raw, { stack, fileConfig: raw });
  if (!result.ok) {
    const misplaced = misplacedSetting(root, stack);
    // The problems then follow from the slip (every setting reads as missing): say only the slip.
    throw new UsageError(misplaced ?? describeProblems(result.problems, stack));
  }
  const config = result.config;
  // Images as configured (`pulumi up` pins them by digest); no bootstrap keys (`pulumi up`
  // generates them; on another host, create keys with the admin API).
  const bundle = renderBundle(config, { images: config.images, bootstrapKeys: [] });
  // The instance's user data, for review; it is not part of what is copied to /opt/gpu-sandbox.
  const beside = new Map([["cloud-init.yaml", hostCloudInit(config.tenant)]]);
  try {
    writeBundle(outDir, bundle, beside);
  } catch (err) {
    if (err instanceof BundleDirError) throw new UsageError(err.message);
    // A file, a directory this user may not write (exit 2), a full disk (1): Node's message
    // names the error and the path.
    if (typeof (err as NodeJS.ErrnoException).code === "string") throw new UsageError(`cannot write to ${out === undefined ? outDir : `--out ${out}`}: ${(err as Error).message}`, { exit: writeFailureClass(err) });
    throw err;
  }
  return {
    outDir, files: [...bundle.keys(), "cloud-init.yaml"].sort(), plan: formatPlan(planFor(config)),
    deployProblems: result.deployProblems.map((problem) => formatProblem(problem, CONFIG_NAMESPACE)),
  };
}

export function main(argv: readonly string[], root = process.cwd()): number {
  let values;
  try {
    ({ values } = parseFlags(argv, { stack: { type: "string" }, out: { type: "string" } }, USAGE));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(err.message);
    return exitCodeOf(err);
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.stack) {
    const stacks = listStackNames(root);
    console.error(`--stack is required.${stacks.length ? ` Stacks: ${stacks.join(", ")}` : ""}\n\n${USAGE}`);
    return EXIT.usage;
  }
  try {
    const r = renderStack(root, values.stack, values.out);
    console.log(r.plan);
    const top = [...new Set(r.files.map((f) => f.split("/")[0]))];
    console.log(`\nWrote ${r.files.length} files to ${relative(root, r.outDir) || "."}/: ${top.join(", ")}`);
    console.log("To run it on any Docker + NVIDIA GPU host, see docs/serving.md, \"Run the bundle on your own GPU host\".");
    if (r.deployProblems.length > 0) {
      console.error(`\n\`pulumi up\` refuses this stack until you fix stacks/Pulumi.${values.stack}.yaml:\n${r.deployProblems.map((line) => `  - ${line}`).join("\n")}`);
    }
    return 0;
  } catch (err) {
    // A stack file to fix is the command's input, as a bad flag is: exit 2.
    if (err instanceof UsageError || err instanceof StackFileError) {
      console.error(err.message);
      return err instanceof UsageError ? exitCodeOf(err) : EXIT.usage;
    }
    throw err;
  }
}

if (import.meta.main) process.exitCode = main(process.argv.slice(2));
