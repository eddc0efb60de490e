import { readFile } from "node:fs/promises";
import type { Socket } from "node:net";

/**
 * Calls `progress` after each `everyMs` in which the client of `socket` took some of what was
 * written to it, until the returned function is called: for a bound on a client that takes
 * nothing (usage-body.ts), which must not cut one that reads slowly but steadily. With `stalled`,
 * calls its `then` once (and stops) when the client has taken nothing for its `afterMs`.
 *
 * What this process sees of a client's reading comes in steps: the kernel takes more from it only
 * once about a third of its send buffer has gone, and on loopback (MSS 64 K) that buffer grows to
 * 4 MB (tcp_wmem), so a client reading 12 KB/s showed no progress here for over 100 s. On Linux
 * the kernel's own count of the socket's bytes not yet acknowledged by the client (its send queue,
 * /proc/net/tcp's tx_queue) moves each time the client's window opens, every ~30 s at that pace on
 * loopback and far more often on a real link or a Unix socket; it is read only in a period in which
 * this process saw no progress of its own. Elsewhere (no /proc), or when the socket cannot be told
 * apart from another in that table, the process's steps alone count.
 */
export function watchWriteProgress(socket: Socket, everyMs: number, progress: () => void, stalled?: { afterMs: number; then: () => void }): () => void {
  let handed = handedToKernel(socket);
  let queued: number | undefined;
  let checking = false;
  let last = performance.now();
  const moved = () => {
    last = performance.now();
    progress();
  };
  const check = async () => {
    if (checking || socket.destroyed) return;
    checking = true;
    try {
      const now = handedToKernel(socket);
      if (now !== handed) {
        handed = now;
        queued = undefined; // changed with it: read afresh the next time nothing else moves
        return moved();
      }
      const inKernel = await kernelSendQueue(socket);
      const changed = queued !== undefined && inKernel !== undefined && inKernel !== queued;
      queued = inKernel;
      if (socket.destroyed) return;
      if (changed) moved();
      else if (stalled && performance.now() - last > stalled.afterMs) {
        clearInterval(timer);
        stalled.then();
      }
    } finally {
      checking = false;
    }
  };
  const timer = setInterval(() => void check(), everyMs).unref();
  return () => clearInterval(timer);
}

/** Bytes written to the socket whose write completed (given to the kernel): written, less what Node still holds or has under way. */
function handedToKernel(socket: Socket): number {
  return (socket.bytesWritten ?? 0) - socket.writableLength;
}

/** No /proc/net/tcp here (not Linux): not looked for again. */
let noProcTable = false;

/**
 * The bytes of `socket` in the kernel not yet acknowledged by its peer (written, unsent or in
 * flight), from /proc/net/tcp or tcp6 as its family says: undefined when not known (not TCP, not
 * Linux, or more than one established socket with its ports).
 */
async function kernelSendQueue(socket: Socket): Promise<number | undefined> {
  const file = socket.remoteFamily === "IPv4" ? "/proc/net/tcp" : socket.remoteFamily === "IPv6" ? "/proc/net/tcp6" : undefined;
  // Taken before the read: a socket closed while /proc is read has no ports after it (undefined),
  // and a throw here was an unhandled rejection, which ends the process.
  const { localPort, remotePort } = socket;
  if (noProcTable || file === undefined || localPort === undefined || remotePort === undefined) return undefined;
  let table: string;
  try {
    table = await readFile(file, "latin1");
  } catch (e) {
    // Only a table that is not there is never looked for again: a passing failure (EMFILE under
    // load, ENOMEM) turned this off for the process's life, and slow readers were cut again.
    if ((e as { code?: unknown }).code === "ENOENT") noProcTable = true;
    return undefined;
  }
  // A line: "sl local_address rem_address st tx_queue:rx_queue …", addresses as HEXIP:HEXPORT, st 01 established.
  const local = `:${hexPort(localPort)}`;
  const remote = `:${hexPort(remotePort)}`;
  let found: number | undefined;
  for (const line of table.split("\n")) {
    const f = line.trim().split(/\s+/, 5);
    if (f[3] !== "01" || !f[1]?.endsWith(local) || !f[2]?.endsWith(remote)) continue;
    if (found !== undefined) return undefined; // two clients with the same port on different hosts: whose is whose is not known
    found = Number.parseInt(f[4]!.split(":")[0]!, 16);
  }
  return found;
}

const hexPort = (port: number) => port.toString(16).toUpperCase().padStart(4, "0");
