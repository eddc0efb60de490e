import { existsSync } from "node:fs";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { watchWriteProgress } from "../../api-shim/src/write-progress.ts";

/**
 * On loopback TCP the kernel holds megabytes of a response for a slow client (a 4 MB send
 * buffer), and takes more from the process only once about a third of it has gone: a client
 * reading 12 KB/s showed the process no progress for over 100 s, longer than /admin/usage's 60 s
 * bound on a client that takes nothing. The socket's send queue in /proc/net/tcp moves as the
 * client reads.
 */
describe.skipIf(!existsSync("/proc/net/tcp"))("a socket's write progress (Linux)", () => {
  let server: Server | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy();
    server?.close();
  });

  it("shows a client taking bytes while the kernel still holds megabytes for it, and none while it takes nothing", { timeout: 30_000 }, async () => {
    let progress = 0;
    let unwatch = () => {};
    server = createServer((s) => {
      sockets.push(s);
      const piece = Buffer.alloc(256 * 1024, 97);
      const fill = () => {
        while (s.write(piece));
      };
      s.on("drain", fill);
      fill();
      unwatch = watchWriteProgress(s, 100, () => progress++);
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const client = connect((server.address() as AddressInfo).port, "127.0.0.1");
    sockets.push(client);
    client.pause(); // takes nothing: the kernel's buffers fill
    await sleep(1500);
    const filled = progress;
    await sleep(1500);
    expect(progress).toBe(filled); // nothing taken, nothing seen
    // ~200 KB/s for 3 s: far less than the kernel holds for it, so the process itself sees no step.
    const reading = setInterval(() => client.read(20 * 1024), 100);
    await sleep(3000);
    clearInterval(reading);
    unwatch();
    expect(progress - filled).toBeGreaterThanOrEqual(2);
  });
});
