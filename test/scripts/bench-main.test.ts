import { readFileSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { main as bench } from "../../scripts/bench-shim.ts";
import { main as benchReplicas } from "../../scripts/bench-replicas.ts";
import { benchSeconds } from "../../scripts/lib/bench-main.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";

const scripts = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { scripts: Record<string, string> }).scripts;

// The benchmarks run for minutes and take the whole machine: asking for help, or giving a bad
// run length, must say so at once and start nothing.
describe("npm run bench and npm run bench:replicas", () => {
  const saved = process.env.BENCH_SECONDS;
  afterEach(() => {
    if (saved === undefined) delete process.env.BENCH_SECONDS;
    else process.env.BENCH_SECONDS = saved;
  });

  it.each([["bench", bench, "bench-shim"], ["bench:replicas", benchReplicas, "bench-replicas"]] as const)("npm run %s --help prints its usage and starts nothing", async (name, main, file) => {
    expect(scripts[name]).toBe(`node scripts/${file}.ts`);
    const io = memoryIo();
    expect(await main(["--help"], io)).toBe(0);
    const text = io.text();
    expect(text).toMatch(new RegExp(`^Usage: npm run ${name}\\n`));
    expect(text).toContain("BENCH_SECONDS");
    expect(text).toContain("docs/performance.md");
    expect(text).not.toContain("running:");
    const bad = memoryIo();
    expect(await main(["--seconds", "3"], bad)).toBe(2);
    expect(bad.text()).toBe(`Unknown option '--seconds'. (npm run ${name} -- --help lists the options)`);
  });

  it.each([["bench", bench], ["bench:replicas", benchReplicas]] as const)("npm run %s with a bad BENCH_SECONDS says so and starts nothing", async (_name, main) => {
    process.env.BENCH_SECONDS = "ten";
    const io = memoryIo();
    expect(await main([], io)).toBe(2);
    expect(io.text()).toContain('BENCH_SECONDS: "ten" is not valid (a whole number of seconds, 1 to 600)');
    expect(io.text()).not.toContain("running:");
  });

  it("reads BENCH_SECONDS as whole seconds from 1 to 600, 10 when unset", () => {
    expect(benchSeconds({})).toBe(10);
    expect(benchSeconds({ BENCH_SECONDS: "3" })).toBe(3);
    expect(benchSeconds({ BENCH_SECONDS: "600" })).toBe(600);
    for (const bad of ["0", "601", "1.5", "", " ", "-2", "1e2", "0x10"]) {
      expect(() => benchSeconds({ BENCH_SECONDS: bad }), bad).toThrow(/BENCH_SECONDS: .* is not valid/);
    }
  });
});
