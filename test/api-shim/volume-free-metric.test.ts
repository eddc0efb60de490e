import { readFileSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MIN_FREE_BYTES } from "../../api-shim/src/store/sqlite-space.ts";
import { shimClient, shimProcessFixture, type ShimProcess } from "../support/shim-process.ts";
import { sectionAt } from "../support/doc-anchors.ts";
import { fillUp, smallVolume, unmountVolume } from "../support/small-volume.ts";

const f = shimProcessFixture("volume-free-metric-");
const MiB = 2 ** 20;
const ROOT = join(import.meta.dirname, "..", "..");

/** shim_sqlite_volume_free_bytes in a scrape of `p`, or null when it is not there (or the shim is gone). */
async function freeGauge(p: ShimProcess): Promise<number | null> {
  const text = await fetch(`${p.url}/metrics`).then((r) => r.text(), () => "");
  const m = /^shim_sqlite_volume_free_bytes (\d+)$/m.exec(text);
  return m ? Number(m[1]) : null;
}

/** The gauge once `ok` holds for it, polled for up to 5 s (the store checks its volume every second). */
async function gaugeUntil(p: ShimProcess, ok: (free: number) => boolean): Promise<number | null> {
  let free: number | null = null;
  for (const t0 = performance.now(); performance.now() - t0 < 5000; await new Promise((r) => setTimeout(r, 100))) {
    free = await freeGauge(p);
    if (free !== null && ok(free)) return free;
  }
  return free;
}

// A full volume fails the SQLite store closed and the process exits in the same tick as the statfs
// that finds it (a checkpoint's SQLITE_FULL too): no scrape ever sees a counter for it. The free
// space, scraped falling, is what an alert can fire on before the 16 MiB cut-off.
describe("shim_sqlite_volume_free_bytes, through the real shim", () => {
  it("shows the SQLite volume's free bytes, falls as the volume fills, and the shim still fails closed (exit 1) once the volume is full", async (ctx) => {
    const mnt = smallVolume(f.dir, "volume-", "40m");
    if (mnt === null) return ctx.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN)");
    let p: ShimProcess | undefined;
    try {
      p = await f.start({ SHIM_DATABASE_URL: `sqlite:${join(mnt, "shim.db")}` });
      await shimClient(p, f.key.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 });
      const df = () => { const s = statfsSync(mnt); return s.bavail * s.bsize; };
      // From the first scrape: the start's own check of the volume (a volume that fills in the
      // shim's first second is caught by its first check, with no later scrape to see it).
      const first = await freeGauge(p);
      expect(first).not.toBeNull();
      expect(first!).toBeGreaterThan(MIN_FREE_BYTES);
      expect(first!).toBeLessThanOrEqual(40 * MiB);
      expect(Math.abs(first! - df())).toBeLessThan(2 * MiB); // what df says (its WAL and checkpoints move it a little)

      // Model weights accumulate on the volume: the gauge follows, while the shim still serves.
      writeFileSync(join(mnt, "weights"), Buffer.alloc(10 * MiB, 1));
      const after = await gaugeUntil(p, (free) => free <= first! - 9 * MiB);
      expect(after).not.toBeNull();
      expect(after!).toBeLessThanOrEqual(first! - 9 * MiB);
      expect(after!).toBeGreaterThan(MIN_FREE_BYTES);
      expect(p.child.exitCode).toBeNull();

      // Full: the shim fails closed and exits 1, as before.
      fillUp(mnt);
      await expect(p.exited).resolves.toEqual({ code: 1, signal: null });
      f.output.keep(p);
    } finally {
      if (p && p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
      unmountVolume(mnt);
    }
  }, 30_000);

  it("a shim without a SQLite file has no such gauge (rather than a 0 an alert on low free space would fire on)", async () => {
    const p = await f.start({ SHIM_DATABASE_URL: "sqlite::memory:" });
    await new Promise((r) => setTimeout(r, 1500)); // past a second, when a file's store has checked its volume again
    const text = await (await fetch(`${p.url}/metrics`)).text();
    expect(text).toContain("shim_requests_total");
    expect(text).not.toContain("shim_sqlite_volume_free_bytes");
    await f.output.stopCleanly(p);
  });
});

describe("docs/troubleshooting.md: the runbook for a volume filling up", () => {
  const ops = readFileSync(join(ROOT, "docs", "troubleshooting.md"), "utf8");
  // The symptom table: the page up to its first "in detail" section.
  const rows = ops.slice(0, ops.indexOf("\n## ")).split("\n").filter((l) => l.startsWith("| "));
  const symptom = (row: string) => row.split(" | ")[0]!;
  /** The "in detail" section a row's [More](#…) link opens, where the row's particulars are. */
  const detail = (row: string) => sectionAt(ops, row.match(/\[More\]\(#([^)]+)\)/)![1]!);
  const flat = (text: string) => text.replace(/\s+/g, " ");

  it("the full-volume row is opened by an alert on the gauge, and does not say a counter rises (the shim is gone before a scrape)", () => {
    const row = rows.find((r) => symptom(r).includes("the volume is full; the store fails closed at once"))!;
    expect(symptom(row)).toContain("`GpuSandboxLedgerVolumeLow`");
    expect(symptom(row)).not.toContain("shim_sqlite_checkpoint_failures_total");
    const more = flat(detail(row));
    expect(more).toContain("`GpuSandboxLedgerVolumeLow`, `shim_sqlite_volume_free_bytes < 2e9`");
    expect(more).not.toMatch(/checkpoint_failures_total` rises/);
    expect(more).toContain('`up{job=~"gpu-sandbox.*"} == 0`');
  });

  it("the row for a shim that keeps restarting is opened by the liveness alerts, the only ones a store failing closed sets off", () => {
    const row = rows.find((r) => symptom(r).startsWith("| The shim keeps restarting"))!;
    expect(symptom(row)).toContain("`GpuSandboxShimDown`");
    expect(symptom(row)).toContain("`GpuSandboxShimRestarting`");
    const more = flat(detail(row));
    expect(more).toContain('`GpuSandboxShimDown`, `up{job=~"gpu-sandbox.*"} == 0`');
    expect(more).toContain('`GpuSandboxShimRestarting`, `changes(process_start_time_seconds{job=~"gpu-sandbox.*"}[15m]) > 2`');
  });

  it("the upgrade notes name the new metric", () => {
    expect(readFileSync(join(ROOT, "docs", "upgrading.md"), "utf8")).toContain("`shim_sqlite_volume_free_bytes`");
  });
});
