// reap-expired's pieces that are not the reap: its --force flag, read before parseArgs, and the
// lines of a destroy's output, prefixed with the stack as they arrive.
import { UsageError } from "./cli.ts";

/** Turns output chunks into whole lines (chunks split lines anywhere), skipping blank ones. */
export function lineSplitter(emit: (line: string) => void): { push: (chunk: string) => void; flush: () => void } {
  let rest = "";
  return {
    push(chunk) {
      const parts = (rest + chunk).split(/\r?\n/);
      rest = parts.pop() ?? "";
      for (const p of parts) if (p.trim() !== "") emit(p.trimEnd());
    },
    flush() {
      if (rest.trim() !== "") emit(rest.trimEnd());
      rest = "";
    },
  };
}

/**
 * `--force [<stack>]`, taken out of argv before parseArgs, which has no optional values: a name
 * after it (anything not a flag: the script takes no other words) forces that stack only.
 */
export function takeForce(argv: readonly string[]): { rest: string[]; force: "all" | Set<string> } {
  const rest: string[] = [];
  const stacks = new Set<string>();
  let all = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg.startsWith("--force=")) {
      const name = arg.slice("--force=".length);
      if (name === "") throw new UsageError("--force= needs a stack name; --force alone forces every expired stack");
      stacks.add(name);
    } else if (arg === "--force") {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith("-")) {
        stacks.add(next);
        i++;
      } else all = true;
    } else rest.push(arg);
  }
  return { rest, force: all ? "all" : stacks };
}
