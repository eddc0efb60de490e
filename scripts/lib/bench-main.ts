import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { mainWithUsage, UsageError } from "./cli.ts";
import { loadGeneratorLine } from "./load-generator.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** The length of each measured benchmark run, from BENCH_SECONDS (default 10): a whole number of seconds, 1 to 600. */
export function benchSeconds(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.BENCH_SECONDS ?? "10";
  const seconds = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || seconds < 1 || seconds > 600) throw new UsageError(`BENCH_SECONDS: "${raw}" is not valid (a whole number of seconds, 1 to 600)`);
  return seconds;
}

export interface Benchmark<R> {
  /** The npm script, for messages: "bench". */
  command: string;
  usage: string;
  /** What runs and for how long, printed first (the runs take minutes). */
  intro(seconds: number): string;
  run(seconds: number): Promise<R>;
  table(result: R): string;
  /** The result's JSON goes to .bench/<file>.json. */
  file: string;
  /** Whether any request failed: the figures of a failing run are not to be trusted, so it exits 1. */
  failed(result: R): boolean;
}

/**
 * The `main` of a benchmark script: --help, BENCH_SECONDS checked before anything starts, the
 * generator in use, the table, the JSON written under .bench/, exit 1 if anything failed.
 */
export function benchMain<R>(b: Benchmark<R>) {
  return mainWithUsage(b.usage, async (io) => {
    const seconds = benchSeconds();
    io.out(b.intro(seconds));
    io.out(loadGeneratorLine());
    try {
      const result = await b.run(seconds);
      io.out(b.table(result));
      const file = join(".bench", `${b.file}.json`);
      mkdirSync(join(ROOT, ".bench"), { recursive: true });
      writeFileSync(join(ROOT, file), `${JSON.stringify(result, null, 2)}\n`);
      io.out(`\nwritten to ${file}`);
      if (b.failed(result)) {
        io.err("some requests failed during the benchmark");
        return 1;
      }
      return 0;
    } catch (e) {
      io.err(`${b.command}: ${(e as Error).stack ?? e}`);
      return 1;
    }
  });
}
