// backup-ledger when this machine cannot write the download (a full disk, a quota): a local
// failure, exit 1, said as such; not "the download was cut off, run it again" (exit 5), which a
// pipeline retries into the same full disk. The file handle's writes fail as ENOSPC would.
import { readdirSync } from "node:fs";
import type * as FsPromises from "node:fs/promises";
import { afterEach, expect, it, vi } from "vitest";
import { main } from "../../scripts/backup-ledger.ts";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { loopbackServer } from "../support/shim-process.ts";
import { tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

const fullDisk = { on: false };
vi.mock("node:fs/promises", async (importOriginal) => {
  const real = await importOriginal<typeof FsPromises>();
  const open: typeof real.open = async (...args) => {
    const handle = await real.open(...args);
    if (!fullDisk.on) return handle;
    let written = 0;
    return new Proxy(handle, {
      get(target, prop, receiver) {
        if (prop !== "write") return Reflect.get(target, prop, receiver)?.bind?.(target) ?? Reflect.get(target, prop, receiver);
        return async (chunk: Uint8Array) => {
          written += chunk.length;
          if (written > 2 ** 20) throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC", syscall: "write" });
          return target.write(chunk);
        };
      },
    });
  };
  return { ...real, open };
});

const TOKEN = "adm-backup-disk-token";
let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  fullDisk.on = false;
  await close?.();
});

it("a disk that fills during the download: exit 1, said as this machine's failure, no file left", async () => {
  const body = Buffer.concat([Buffer.from("SQLite format 3\0"), Buffer.alloc(4 * 2 ** 20, 7)]);
  const server = await loopbackServer((req, res) => {
    req.resume();
    res.writeHead(200, { "content-type": "application/vnd.sqlite3", "content-length": String(body.length) }).end(body);
  });
  close = () => server.close();
  const root = tempDir("backup-ledger-disk-");
  const io = memoryIo();
  fullDisk.on = true;
  const code = await main(["--url", server.url.replace(/\/v1$/, ""), "--out", "full.db"], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: TOKEN }, pulumi: new FakePulumi(), root, now: () => new Date() });
  const err = io.stderr.join("\n");
  expect(code, err).toBe(1);
  expect(err).toMatch(/cannot write .*full\.db.*ENOSPC: no space left on device/);
  expect(err).not.toContain("cut off");
  expect(readdirSync(root)).toEqual([]);
});
