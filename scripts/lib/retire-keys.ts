// Before a tenant's usage is saved for good, nothing may add to it: every key still live is
// revoked (new requests get 401), and the export waits for the requests already in flight to
// settle (their usage is written when they settle).
// Otherwise what was served between the export and the destroy's stop step would be on the
// volume the destroy deletes, and in no saved file.
// A key that has expired already gets 401 as it is, and is left so: revoked is final, while an
// operator who keeps the tenant after all can still move an expiry (`manage-keys update
// --expires-at`) and give the key its credits back.
import { setTimeout as sleep } from "node:timers/promises";
import { type AdminClient, type ApiKey, keyStatus } from "./admin-client.ts";

export interface RetiredKeys {
  /** Every key after the wait: balances as they will stay. */
  readonly keys: readonly ApiKey[];
  /** Keys that still had requests in flight when the wait gave up: requests whose usage the export may miss. */
  readonly stillHolding: readonly ApiKey[];
}

export interface RetireOptions {
  /** How long to wait for the requests in flight; a stream may run for minutes, the reaper cannot. */
  readonly settleTimeoutMs?: number;
  readonly pollMs?: number;
  readonly progress: (line: string) => void;
  /** Called before each key is revoked, so the caller can record it first (a write-ahead record). */
  readonly revoking?: (key: ApiKey) => void;
  /** Called for each key the shim shows revoked: already in its first listing, or once its revoke answered. */
  readonly revoked?: (key: ApiKey) => void;
  /** This machine's time (ms), by which a key has expired; defaults to the clock. */
  readonly now?: number;
}

/**
 * How long a key must have been expired, by this machine's clock, to be left unrevoked: the host
 * serves it until its own clock passes the expiry, and a host a little behind would serve it
 * while the usage is saved. Revoking a key that expired a moment ago costs nothing that matters.
 */
const CLOCK_MARGIN_MS = 60_000;

export async function retireKeys(client: AdminClient, options: RetireOptions): Promise<RetiredKeys> {
  const { settleTimeoutMs = 60_000, pollMs = 500, progress, revoking = () => {}, revoked = () => {}, now = Date.now() } = options;
  const listed = await client.listKeys();
  for (const k of listed) if (k.revoked_at !== null) revoked(k);
  const unrevoked = listed.filter((k) => k.revoked_at === null);
  const live = unrevoked.filter((k) => keyStatus(k, now - CLOCK_MARGIN_MS) === "active");
  const expired = unrevoked.length - live.length;
  const left = expired > 0 ? ` (${expired} expired, left as ${expired === 1 ? "it is" : "they are"})` : "";
  if (live.length > 0) progress(`revoking its ${live.length} live key${live.length === 1 ? "" : "s"}${left}: the tenant is being destroyed, and its usage must be final before it is saved`);
  else if (expired > 0) progress(`no live key to revoke${left}`);
  for (const k of live) {
    revoking(k);
    revoked(await client.revokeKey(k.id));
  }
  const deadline = performance.now() + settleTimeoutMs; // monotonic: an NTP step must not end the wait (or stretch it)
  let keys = await client.listKeys();
  let announced = false;
  while (holding(keys).length > 0 && performance.now() < deadline) {
    if (!announced) progress(`waiting up to ${Math.round(settleTimeoutMs / 1000)} s for the requests in flight of ${holding(keys).length} key(s) to settle…`);
    announced = true;
    await sleep(pollMs);
    keys = await client.listKeys();
  }
  return { keys, stillHolding: holding(keys) };
}

/**
 * Keys with requests in flight, counted by the shim (`requests_in_flight`): credits held do not
 * tell them all, since a request priced 0 (a free tenant's) holds 0. `held > 0` still counts, for
 * a shim older than the count.
 */
const holding = (keys: readonly ApiKey[]) => keys.filter((k) => (k.requests_in_flight ?? 0) > 0 || k.held > 0);
