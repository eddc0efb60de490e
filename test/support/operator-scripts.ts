import { expect } from "vitest";
import { runTool } from "./tools.ts";

/** Fails unless shellcheck finds nothing in the operator script `templates/operator/<name>`. */
export function expectOperatorScriptClean(name: string): void {
  const r = runTool("shellcheck", [new URL(`../../templates/operator/${name}`, import.meta.url).pathname]);
  expect(r.output).toBe("");
  expect(r.status).toBe(0);
}
