import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Suites start real servers (nginx, the shim, the test upstream) on loopback; give them
    // room on a 2-core machine, and keep one worker per core.
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // expect.poll's own default (1 s) is a wall-clock bound a loaded 2-core machine exceeds:
    // a poll only takes longer when its condition is late, so a failure still fails (later).
    expect: { poll: { timeout: 10_000 } },
    // Removes the directories tempDir() made, once each file's tests have run.
    setupFiles: ["test/support/remove-temp-dirs.ts"],
    pool: "forks",
    maxWorkers: 2,
  },
});
