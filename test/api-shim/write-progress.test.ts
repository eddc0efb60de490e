import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { type WatchedClient, watchedClient } from "../support/watched-client.ts";
/**
 * On loopback TCP the kernel holds megabytes of a response for a slow client (a 4 MB send
 * buffer), and takes more from the process only once about a third of it has gone: a client
 * reading 12 KB/s showed the process no progress for over 100 s, longer than /admin/usage's 60 s
 * bound on a client that takes nothing. The socket's send queue in /proc/net/tcp moves as the
 * client reads.
 */
describe.skipIf(!existsSync("/proc/net/tcp"))("a socket's write progress (Linux)", () => {
  let watched: WatchedClient | undefined;
  afterEach(() => watched?.close());

  // IPv6 too: a client over IPv6 (or any client of a shim with SHIM_HOST=::, IPv4 ones as ::ffff:…) is in /proc/net/tcp6.
  it.each(["127.0.0.1", "::1"])("shows a client taking bytes while the kernel still holds megabytes for it, and none while it takes nothing (%s)", { timeout: 30_000 }, async (host) => {
    watched = await watchedClient(host);
    const { client, progress } = watched;
    await sleep(1500); // takes nothing: the kernel's buffers fill
    const filled = progress();
    await sleep(1500);
    expect(progress()).toBe(filled); // nothing taken, nothing seen
    // ~200 KB/s for 3 s: far less than the kernel holds for it, so the process itself sees no step.
    const reading = setInterval(() => client.read(20 * 1024), 100);
    await sleep(3000);
    clearInterval(reading);
    expect(progress() - filled).toBeGreaterThanOrEqual(2);
  });
});

describe.skipIf(!existsSync("/proc/net/tcp"))("a socket closed while its send queue is read", () => {
  it("is no unhandled rejection (which ends the shim's process): its ports are taken before /proc is read", async () => {
    // A socket's ports are undefined once it is closed; this one closes during the await of the
    // /proc read, as a client that leaves at that moment does (seen under load in the full suite).
    let reads = 0;
    const socket = {
      remoteFamily: "IPv4", remotePort: 40_000, destroyed: false, bytesWritten: 10, writableLength: 0,
      get localPort() { return reads++ === 0 ? 50_000 : undefined; },
    };
    const rejections: unknown[] = [];
    const record = (e: unknown) => rejections.push(e);
    process.on("unhandledRejection", record);
    try {
      const { watchWriteProgress } = await import("../../api-shim/src/client/write-progress.ts");
      const stop = watchWriteProgress(socket as unknown as import("node:net").Socket, 10, () => {});
      await sleep(200);
      stop();
    } finally {
      process.off("unhandledRejection", record);
    }
    expect(reads).toBeGreaterThan(0);
    expect(rejections).toEqual([]);
  });
});
