import { defineConfig } from "vitest/config";
import base from "./vitest.config.ts";

// `npm run test:chaos`: randomized crash-consistency rounds (SIGKILL at random moments under
// random traffic), 1–3 minutes per store, outside `npm test` because a run's timing is its own.
// A failure prints its seed; CHAOS_SEED=<n> replays its choices (not its timing). The include is
// replaced, not merged (vitest's mergeConfig would add `npm test`'s files to it).
export default defineConfig({ test: { ...base.test, include: ["test/chaos/**/*.chaos.ts"], testTimeout: 300_000 } });
