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
  /**
   * The next packet a client sends that `match`es passes to the server (`delivered`: true; false,
   * it is dropped), but nothing the server sends on that connection reaches the client any more,
   * and the connection is cut 300 ms later: a statement that committed with its answer lost, or
   * one that never arrived. Other connections, and new ones, pass as before.
   */
  loseAnswer(match: (packet: Buffer) => boolean, delivered?: boolean): void;
  /** New connections go to `target` (a postgres:// URL) from now on, as a DNS name a failover moves; open ones stay where they are. */
  redirect(target: string): void;
  /** How many connections it accepted so far (frozen or not). */
  accepted(): number;
  close(): Promise<void>;
}

export async function frozenProxy(target: string): Promise<FrozenProxy> {
  let to = new URL(target);
  const pairs: [Socket, Socket][] = [];
  let frozen = false;
  let losing: { match: (packet: Buffer) => boolean; delivered: boolean } | null = null;
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
    let lost = false;
    client.on("data", (packet: Buffer) => {
      if (!lost && losing?.match(packet)) {
        lost = true;
        if (losing.delivered) upstream.write(packet);
        losing = null;
        setTimeout(() => (client.destroy(), upstream.destroy()), 300);
      }
      if (!lost) upstream.write(packet);
    });
    upstream.on("data", (packet: Buffer) => void (lost || client.write(packet)));
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  const stall = () => {
    for (const [a, b] of pairs) {
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
    loseAnswer(match, delivered = true) {
      losing = { match, delivered };
    },
    redirect(target) {
      to = new URL(target);
    },
    accepted: () => pairs.length,
    close() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
