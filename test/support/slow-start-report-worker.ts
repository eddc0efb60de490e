/**
 * A stand-in for a SQLite report worker that is slow to start (its modules loading on a loaded
 * host): it waits `?ms=` (its URL's query, 1500 by default) before loading the real worker, which
 * then opens the database and answers as usual. A long wait is a worker that never gets ready.
 */
import { setTimeout as sleep } from "node:timers/promises";

await sleep(Number(new URL(import.meta.url).searchParams.get("ms") ?? 1500));
await import("../../api-shim/src/store/sqlite-report-worker.ts");
