import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { shimProcessFixture } from "../support/shim-process.ts";

/** server.ts's SHIM_CONFIG warning: only without SHIM_CONFIG, counting only configuration's live keys. */
describe("the start's SHIM_CONFIG warning", () => {
  const f = shimProcessFixture("shim-warn-");
  const { adminToken, output, start } = f;
  const warning = (lines: readonly string[]) => lines.filter((l) => l.includes('"msg":"SHIM_CONFIG is not set'));

  it("a start with SHIM_CONFIG never says it is not set; without it, keys made with the admin API are not counted as configuration's", async () => {
    const url = `sqlite:${join(f.dir, "warn", "shim.db")}`;
    const configured = await start({ SHIM_DATABASE_URL: url }); // the configuration's one bootstrap key
    for (const name of ["api-1", "api-2"]) {
      const made = await fetch(`${configured.url}/admin/keys`, { method: "POST", headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ name, tier: "free", credits: 1 }) });
      expect(made.status).toBe(201);
    }
    await output.stopCleanly(configured);
    const again = await start({ SHIM_DATABASE_URL: url });
    await output.stopCleanly(again);
    expect(warning([...configured.lines, ...again.lines])).toEqual([]);

    const bare = await start({ SHIM_CONFIG: "", SHIM_DATABASE_URL: url });
    await output.stopCleanly(bare);
    const lines = warning(bare.lines);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, keys: 1 });
  });
});
