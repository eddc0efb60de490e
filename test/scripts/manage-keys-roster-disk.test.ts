// manage-keys create --from on a disk that fills up during the run: the key whose line the
// hand-out cannot take exists (billable), and its secret was only in the create's answer. It must
// reach the operator (stdout), never be lost; the file keeps whole lines only. A real full disk: a
// tmpfs with one page left for the hand-out (root, as the tests run; skipped otherwise).
import { closeSync, ftruncateSync, fstatSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { ApiKey, CreatedKey } from "../../scripts/lib/admin-client.ts";
import { readCsv } from "../../scripts/lib/csv-read.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { fillUp, smallVolume, unmountVolume } from "../support/small-volume.ts";
import { tempDir } from "../support/tools.ts";
import { runManageKeys } from "./run-manage-keys.ts";

let h: Harness;
beforeAll(async () => {
  h = await startShim();
});
afterAll(() => h.close());

/** A volume with one 4 KiB page free: the hand-out's header and a dozen long lines fit, the next does not. */
function nearlyFull(): string | null {
  const mnt = smallVolume(tempDir(), "handout-", "1m");
  if (mnt === null) return null;
  fillUp(mnt);
  const fd = openSync(join(mnt, "filler"), "r+");
  ftruncateSync(fd, fstatSync(fd).size - 4096);
  closeSync(fd);
  return mnt;
}

const rows = (text: string) => readCsv(text).records.map((r) => r.cells);
const chat = (apiKey: string) =>
  new OpenAI({ baseURL: `${h.url}/v1`, apiKey, maxRetries: 0 }).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "Hello" }], max_tokens: 4 });

it.for([false, true])("the hand-out's disk full after some keys (--json %s): the key made is printed, not lost; the file keeps whole lines; exit 1 saying what to do", async (json, ctx) => {
  const mnt = nearlyFull();
  if (mnt === null) return ctx.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN)");
  try {
    // Names of 180 characters: ~270 bytes a line, so the page takes about 14.
    const prefix = `disk-${json ? "j" : "t"}-`;
    const names = Array.from({ length: 30 }, (_, i) => `${prefix}${String(i + 1).padStart(2, "0")}-${"x".repeat(170)}`);
    const root = tempDir();
    writeFileSync(join(root, "roster.csv"), ["name", ...names].join("\r\n"));
    const path = join(mnt, "k.csv");
    const r = await runManageKeys(h, ["create", "--url", h.url, "--from", "roster.csv", "--credits", "1", "--handout", path, ...(json ? ["--json"] : [])], { root });
    expect(r.code, r.err).toBe(1);
    const made = (JSON.parse((await runManageKeys(h, ["list", "--url", h.url, "--json"])).out) as ApiKey[]).filter((k) => k.name.startsWith(prefix));
    expect(made.length).toBeGreaterThan(5);
    expect(made.length).toBeLessThan(30); // the run stopped: the next key would meet the same disk
    const inFile = rows(readFileSync(path, "utf8"));
    expect(inFile[0]).toEqual(["name", "base_url", "key_id", "key"]);
    // No half line: each is a whole key's, which a client can use.
    for (const [name, baseUrl, id, key] of inFile.slice(1)) {
      expect(names).toContain(name);
      expect(baseUrl).toBe(`${h.url}/v1`);
      expect(made.map((k) => k.id)).toContain(id);
      expect((await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status, `${id}'s key`).toBe(200);
    }
    expect(inFile.length - 1).toBe(made.length - 1);
    const last = made.find((k) => !inFile.some((cells) => cells[2] === k.id))!;
    // Its secret, on stdout: as a hand-out line (header first), or in the --json array.
    const secret = json
      ? (JSON.parse(r.out) as CreatedKey[]).find((k) => k.id === last.id)!.key
      : (() => {
        const printed = rows(r.out);
        expect(printed[0]).toEqual(["name", "base_url", "key_id", "key"]);
        expect(printed.slice(1).map((cells) => cells[2])).toEqual([last.id]);
        return printed[1]![3]!;
      })();
    if (json) expect((JSON.parse(r.out) as CreatedKey[]).map((k) => k.id).sort()).toEqual(made.map((k) => k.id).sort());
    expect((await chat(secret)).choices).toHaveLength(1);
    expect(r.err).toContain(`cannot write the hand-out ${path}: ENOSPC`);
    expect(r.err).toContain(`(${last.name}, id ${last.id}) was created, and its secret is ${json ? "in the JSON printed on stdout" : "printed on stdout above"}`);
    expect(r.err).toContain(`${made.length} of 30 keys made: the ${made.length - 1} keys made before it are in ${path}`);
    expect(r.err).toContain("run the same command again: it skips the names that have a key");
    expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
  } finally {
    unmountVolume(mnt);
  }
});
