/**
 * A process with a Postgres store and nothing else (no server, no process.exit): it exits once
 * the store's close() has left nothing open, so whether it exits shows that close() let go of
 * every socket, as a test in-process cannot (its own sockets, the proxy's, count as well).
 * argv[2]: the database URL. Stdin, one command a line: "settle" starts a settlement of the hold
 * made at start, "close" closes the store. Stdout: "ready", "closed <connections cut>".
 */
import { createInterface } from "node:readline";
import { PostgresStore } from "../../api-shim/src/store/postgres-store.ts";

let cut = 0;
let indexChecked!: () => void;
const checked = new Promise<void>((r) => (indexChecked = r));
const store = await PostgresStore.open(process.argv[2]!, { onConnectionsCut: (n) => (cut = n), onUsageIndex: () => indexChecked() });
await store.createKey({ id: "k", name: "k", hash: `sha256:${"0".repeat(64)}`, tier: "free", models: null, expiresAt: null, credits: 10, at: 1000 });
await store.reserve({ reservationId: "r1", keyId: "k", amount: 4, at: 1 });
await checked; // the index check's own connection is closed again
const lines = createInterface({ input: process.stdin });
lines.on("line", (command) => {
  if (command === "settle") void store.settle({ reservationId: "r1", keyId: "k", hold: 4, cost: 3, usage: { requestId: "LOST", keyId: "k", at: 2000, route: "chat", model: "m", status: 200, promptTokens: 3, completionTokens: 4, cost: 3, stream: false, ms: 1, served: true, priceId: "p", batch: false, cachedTokens: 0 } }).catch(() => {});
  if (command === "close") void store.close().then(() => (lines.close(), process.stdin.destroy(), console.log(`closed ${cut}`)));
});
console.log("ready");
