import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { openHandout } from "../../scripts/lib/handout.ts";
import { repoFile, runNodeScript, tracingFsyncs } from "../support/fsync-trace.ts";
import { tempDir } from "../support/tools.ts";

/**
 * The hand-out of `manage-keys create --from` (handout.ts) holds keys shown nowhere else: a power
 * cut after a key is made must not lose the file. Its lines are flushed (fsync of the file), and
 * the new file's name must be on disk too (fsync of its directory), or the file can be gone after
 * the cut while the keys exist on the shim, and a run again skips their names.
 */
describe("the hand-out on disk", () => {
  it("syncs the directory the new hand-out is in before the first key is written to it", () => {
    const dir = tempDir();
    const path = join(dir, "keys.csv");
    const out = join(tempDir(), "trace");
    runNodeScript(tracingFsyncs(out, [dir, path]), `import { openHandout } from ${JSON.stringify(repoFile("scripts/lib/handout.ts"))};
      const h = openHandout(${JSON.stringify(path)}, "http://127.0.0.1:1/v1");
      h.add({ id: "abcdefghijkl", name: "Ann Lee", key: "sk-gs-abcdefghijkl_secret" });
      h.close();
      console.log(JSON.stringify({ keys: h.keys }));`);
    const synced = readFileSync(out, "utf8").split("\n").map((l) => /f(?:data)?sync\(\d+<([^>]+)>/.exec(l)?.[1]).filter((f) => f !== undefined);
    // The header's flush, the directory's, then the key's line.
    expect(synced).toEqual([path, dir, path]);
  });
});

describe("the hand-out is never overwritten", () => {
  it("a file made at its path after the check (another run, a second later) is refused, and left as it was", () => {
    const path = join(tempDir(), "keys.csv");
    writeFileSync(path, "name,base_url,key_id,key\r\nann,http://h/v1,abcdefghijkl,sk-gs-earlier\r\n");
    expect(() => openHandout(path, "http://127.0.0.1:1/v1")).toThrow(`${path} exists already: a hand-out is never overwritten`);
    expect(readFileSync(path, "utf8")).toBe("name,base_url,key_id,key\r\nann,http://h/v1,abcdefghijkl,sk-gs-earlier\r\n");
  });
});
