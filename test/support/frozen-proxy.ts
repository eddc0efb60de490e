import { type AddressInfo, connect, createServer, type Socket } from "node:net";

/**
 * A TCP proxy on 127.0.0.1 in front of `target` (a postgres:// URL) that can freeze: every
 * connection stays open and nothing more passes either way, as with a hung database server or a
 * network cut nobody reports (new connections are accepted and never answered). `url` is `target` through the proxy.
 */
export interface FrozenProxy {
  url: string;
  freeze(): void;
  /** Freezes the connections open now (a network cut of those flows); new ones pass, as after a failover. */
  cutOpen(): void;
  close(): Promise<void>;
}

export async function frozenProxy(target: string): Promise<FrozenProxy> {
  const to = new URL(target);
  const pairs: [Socket, Socket][] = [];
  let frozen = false;
  const server = createServer((client) => {
    client.on("error", () => {});
    if (frozen) {
      // Accepted, never answered: the server hangs for new connections too.
      client.pause();
      pairs.push([client, client]);
      return;
    }
    const upstream = connect(Number(to.port), to.hostname);
    pairs.push([client, upstream]);
    upstream.on("error", () => {});
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  const stall = () => {
    for (const [a, b] of pairs) {
      a.unpipe();
      b.unpipe();
      a.pause();
      b.pause();
    }
  };
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = new URL(target);
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    freeze() {
      frozen = true;
      stall();
    },
    cutOpen: stall,
    close() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
