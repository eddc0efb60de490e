import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main } from "../../scripts/report-usage.ts";
import { FakePulumi } from "./fake-pulumi.ts";
import { LISTED_KEY } from "../support/older-shim.ts";
import { tempDir } from "../support/tools.ts";

it("--group day,model against a shim older than it (its 400 naming group) says the shim is older and what works with it", async () => {
  // What a shim of 2026-12-02 answered (checked against fc0aba2): the key list, and a 400 for group=day,model.
  const server = createServer((req, res) => {
    req.resume();
    if (req.url!.startsWith("/admin/keys")) return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ object: "list", data: [LISTED_KEY] }));
    res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "'group' must be model or day.", type: "invalid_request_error", param: "group", code: "invalid_request" } }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    for (const format of ["table", "csv"]) {
      const io = memoryIo();
      const code = await main(["--url", url, "--group", "day,model", "--format", format], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: "t" }, pulumi: new FakePulumi(), root: tempDir() });
      expect(code).toBe(4);
      expect(io.stderr.join("\n")).toContain("'group' must be model or day.");
      expect(io.stderr.join("\n")).toContain("This tenant's shim is older than --group day,model (2026-12-07): use --group day or --group model with it");
    }
  } finally {
    server.close();
  }
});
