import { once } from "node:events";
import net from "node:net";

/** A raw connection to `url`'s server and what it has answered so far: for keep-alive and pipelining tests. */
export async function keptConnection(url: string): Promise<{ s: net.Socket; got: () => string; statuses: () => string[] }> {
  const u = new URL(url);
  const s = net.connect(Number(u.port), u.hostname);
  await once(s, "connect");
  let got = "";
  s.on("data", (d) => (got += String(d)));
  s.on("error", () => {});
  return { s, got: () => got, statuses: () => got.match(/HTTP\/1\.1 \d{3}/g) ?? [] };
}
