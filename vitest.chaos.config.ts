import { defineConfig } from "vitest/config";
import base from "./vitest.config.ts";

// `npm run test:chaos`: randomized crash-consistency rounds (SIGKILL at random moments under
// random traffic), 1–3 minutes per store, outside `npm test` because a run's timing is its own.
// A failure prints its seed; CHAOS_SEED=<n> replays each round's settings (timing decides the
// rest). The include is replaced, not merged (vitest's mergeConfig would add `npm test`'s files to
// it); the test sets its own timeout from the number of rounds.
export default defineConfig({ test: { ...base.test, include: ["test/chaos/**/*.chaos.ts"] } });
