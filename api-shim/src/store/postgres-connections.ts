import type pg from "pg";

/**
 * The Postgres store's open connections (pooled, liveness, the index build's), so that a shutdown can cut them.
 * pg's `end()` says goodbye and waits for the server to close the socket, which a hung server or
 * a silently cut network never does. The shim's server exits after close()'s bound whatever is
 * left, but anything else holding the store (a script, a test) would stay alive on those sockets
 * until they are cut (test/support/closing-store-process.ts shows the store holds none after close()).
 */
export class OpenConnections {
  private readonly open = new Set<pg.Client>();

  add(client: pg.Client): void {
    this.open.add(client);
    client.once("end", () => this.open.delete(client));
  }

  /** Destroys the sockets of those still open (their queries fail at once); returns how many. */
  cut(): number {
    const n = this.open.size;
    for (const c of this.open) cutSocket(c);
    this.open.clear();
    return n;
  }
}

/** Destroys a client's socket: its end() no longer waits for a server that may never answer. */
export function cutSocket(client: pg.Client): void {
  client.connection.stream.destroy();
}
