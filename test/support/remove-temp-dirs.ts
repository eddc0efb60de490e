import { rmSync } from "node:fs";
import { afterAll } from "vitest";
import { killRunningChildren } from "./running-children.ts";
import { madeTempDirs } from "./tools.ts";

// A setup file (vitest.config.ts): registered first, so it runs after each test file's own
// afterAll hooks, which may still use their directories (a server stopping, a store closing).
afterAll(() => {
  killRunningChildren(); // a shim a failed test left running, before its directory goes
  for (const dir of madeTempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
