import type { ChildProcess } from "node:child_process";

/**
 * Child processes a test started and has not seen exit (shims: shim-process.ts). The setup file
 * (remove-temp-dirs.ts) kills what is left after each test file's own hooks, so a failed test
 * leaks none: a `process.on("exit")` handler never runs in vitest's forked workers, and a shim
 * left running outlives the run with parent PID 1.
 */
export const runningChildren = new Set<ChildProcess>();

/** Registers `child` until it exits. */
export function trackChild(child: ChildProcess): void {
  runningChildren.add(child);
  child.once("exit", () => runningChildren.delete(child));
}

/** SIGKILL for every child still running. */
export function killRunningChildren(): void {
  for (const c of runningChildren) c.kill("SIGKILL");
  runningChildren.clear();
}
