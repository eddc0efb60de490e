import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { watchWriteProgress } from "../../api-shim/src/client/write-progress.ts";

/** A client of a loopback server that writes to it as fast as the connection takes, whose progress (write-progress.ts) the server watches every 100 ms. */
export interface WatchedClient {
  /** The client's socket, paused: it takes nothing until read. */
  client: Socket;
  /** Progress seen so far. */
  progress(): number;
  /** Stops watching, closes both ends and the server. */
  close(): void;
}

/** `host`: the loopback address both ends use ("::1": an IPv6 socket, in /proc/net/tcp6). */
export async function watchedClient(host = "127.0.0.1"): Promise<WatchedClient> {
  let seen = 0;
  let unwatch = () => {};
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    const piece = Buffer.alloc(256 * 1024, 97);
    const fill = () => {
      while (s.write(piece));
    };
    s.on("drain", fill);
    fill();
    unwatch = watchWriteProgress(s, 100, () => seen++);
  });
  server.listen(0, host);
  await once(server, "listening");
  const client = connect((server.address() as AddressInfo).port, host);
  sockets.push(client);
  client.pause();
  return {
    client,
    progress: () => seen,
    close: () => {
      unwatch();
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
