// A script whose file the disk cannot take (full, a quota): exit 1, a failure of this machine, as
// new-tenant's stack file and backup-ledger's download; not 2, "a flag or a file to fix; nothing
// was sent", which sends a pipeline's owner to their command line. Writes fail as ENOSPC would.
import type * as Fs from "node:fs";
import { join } from "node:path";
import { afterEach, expect, it, vi } from "vitest";
import { exitCodeOf } from "../../scripts/lib/exit-codes.ts";
import { openHandout } from "../../scripts/lib/handout.ts";
import { main } from "../../scripts/render-stack.ts";
import { tempDir } from "../support/tools.ts";

const fullDisk = { on: false, code: "ENOSPC", message: "no space left on device" };
vi.mock("node:fs", async (importOriginal) => {
  const real = await importOriginal<typeof Fs>();
  const writeFileSync: typeof real.writeFileSync = (...args) => {
    if (fullDisk.on) throw Object.assign(new Error(`${fullDisk.code}: ${fullDisk.message}, open '${String(args[0])}'`), { code: fullDisk.code });
    return real.writeFileSync(...args);
  };
  const openSync: typeof real.openSync = (...args) => {
    if (fullDisk.on) throw Object.assign(new Error(`${fullDisk.code}: ${fullDisk.message}, open '${String(args[0])}'`), { code: fullDisk.code });
    return real.openSync(...args);
  };
  return { ...real, writeFileSync, openSync, default: { ...real, writeFileSync, openSync } };
});

const ROOT = new URL("../../", import.meta.url).pathname;
afterEach(() => {
  Object.assign(fullDisk, { on: false, code: "ENOSPC", message: "no space left on device" });
  vi.restoreAllMocks();
});

it("a full disk under --out: exit 1, saying it cannot write there", () => {
  const err: string[] = [];
  vi.spyOn(console, "log").mockImplementation(() => {});
  vi.spyOn(console, "error").mockImplementation((...a) => void err.push(a.join(" ")));
  const out = tempDir();
  fullDisk.on = true;
  expect(main(["--stack", "example", "--out", out], ROOT)).toBe(1);
  expect(err.join("\n")).toMatch(new RegExp(`^cannot write to --out ${out}: ENOSPC: no space left on device`));
});

it("create --from's hand-out on a full disk: exit 1 (nothing was sent: it is made before the first key)", () => {
  fullDisk.on = true;
  const path = join(tempDir(), "keys.csv");
  const err = (() => {
    try {
      openHandout(path, "https://example.test/v1");
    } catch (e) {
      return e;
    }
  })();
  expect(String(err)).toContain(`cannot write the hand-out ${path}: ENOSPC`);
  expect(exitCodeOf(err)).toBe(1);
});

// A quota reached, or a disk failing, is as little the command's to fix as a full disk (exit-codes.ts's DISK_FAILURES).
it.each([["EDQUOT", "disk quota exceeded"], ["EIO", "i/o error"]])("%s (%s) is this machine's failure too: exit 1 for --out and for the hand-out", (code, message) => {
  vi.spyOn(console, "log").mockImplementation(() => {});
  const err: string[] = [];
  vi.spyOn(console, "error").mockImplementation((...a) => void err.push(a.join(" ")));
  const out = tempDir();
  Object.assign(fullDisk, { on: true, code, message });
  expect(main(["--stack", "example", "--out", out], ROOT)).toBe(1);
  expect(err.join("\n")).toMatch(new RegExp(`^cannot write to --out ${out}: ${code}: ${message}`));
  const path = join(tempDir(), "keys.csv");
  const handout = (() => {
    try {
      openHandout(path, "https://example.test/v1");
    } catch (e) {
      return e;
    }
  })();
  expect(String(handout)).toContain(`cannot write the hand-out ${path}: ${code}`);
  expect(exitCodeOf(handout)).toBe(1);
});
