import { execFileSync } from "node:child_process";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { shimClient, shimProcessFixture, spawnShim, type ShimProcess } from "../support/shim-process.ts";

/**
 * A charge its client was told (x-credits-charged on a whole answer, a stream's last figures) is
 * in the ledger even if the process is SIGKILLed right after: the SQLite store answers a
 * settlement once the batch holding it has committed. strace delays each write of the WAL by
 * 1 s, which widens the sub-millisecond window between an answer and its batch's COMMIT (where a
 * kill lost the charge before: 1 kill in 5 under load, a chaos test found) so that the kill lands
 * in it every time if the answer comes first.
 */
describe("a SIGKILL right after an answer", () => {
  const f = shimProcessFixture("shim-answered-");

  /** The shim with every write of its WAL delayed 1 s, and the pid of its node process (killing strace would only detach it). */
  const slowWal = async (): Promise<{ traced: ShimProcess; node: number }> => {
    const traced = await spawnShim({ ...f.env }, ["strace", "-f", "-qq", "-o", "/dev/null", "-P", `${f.db()}-wal`, "-e", "trace=pwrite64", "-e", "inject=pwrite64:delay_enter=1000000"]);
    return { traced, node: Number(execFileSync("ps", ["-o", "pid=", "--ppid", String(traced.child.pid)], { encoding: "utf8" }).trim()) };
  };
  const killed = async ({ traced, node }: { traced: ShimProcess; node: number }) => {
    process.kill(node, "SIGKILL");
    await traced.exited;
    f.output.keep(traced);
  };
  /** The usage rows of `requestId` in the ledger, after a normal start on the file (it releases what the killed one held). */
  const ledgerRows = async (requestId: string) => {
    const after = await f.start();
    const db = new Database(f.db(), { readonly: true });
    const rows = db.prepare("SELECT amount FROM ledger WHERE kind = 'usage' AND ref = ?").all(requestId);
    db.close();
    await f.output.stopCleanly(after);
    return rows;
  };

  it("a non-streamed answer's charge (x-credits-charged) is in the ledger after the restart", async () => {
    await f.output.stopCleanly(await f.start()); // the file made (schema, the key) by a normal start: the traced one writes little
    const shim = await slowWal();
    const raw = await shimClient(shim.traced, f.key.key).chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 3 }).withResponse();
    expect(raw.response.headers.get("x-credits-charged")).toBe("4"); // 1 credit + 3 tokens at the fixture's prices: the client is told
    await killed(shim);
    expect(await ledgerRows(raw.response.headers.get("x-request-id")!)).toEqual([{ amount: -4_000_000 }]);
  }, 90_000);

  it("a stream's charge (its last figures, then [DONE]) is in the ledger after the restart", async () => {
    const shim = await slowWal();
    const res = await fetch(`${shim.traced.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${f.key.key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], max_tokens: 2, stream: true }),
    });
    const text = await res.text();
    expect(text).toMatch(/: credits_charged=3 /);
    expect(text).toContain("data: [DONE]");
    await killed(shim);
    expect(await ledgerRows(res.headers.get("x-request-id")!)).toEqual([{ amount: -3_000_000 }]);
  }, 90_000);
});
