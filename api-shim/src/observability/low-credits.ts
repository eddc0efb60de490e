import { Gauge, type Registry } from "prom-client";
import type { Clock } from "../clock.ts";
import type { Logger } from "pino";
import { isLow, type KeyCredits } from "../store/low-credits.ts";
import { monthStart } from "../requests/period.ts";
import type { Store } from "../store/store.ts";

/**
 * The most keys named in shim_key_low_credits_ratio, the lowest first: a label pair per low key
 * keeps Prometheus' series bounded on a shim of 10,000 keys (shim_keys_low_credits counts them all).
 */
export const LOW_CREDIT_SERIES = 100;

export interface LowCreditsOptions {
  store: Pick<Store, "lowCredits">;
  clock: Clock;
  logger: Logger;
  registry: Registry;
  /** config.lowCreditsShare: fleet-status.sh's FLEET_LOW_SHARE. */
  share: number;
  /** config.lowCreditsIntervalMs; 0: no gauges, no reads. */
  intervalMs: number;
}

interface Figures { at: number; active: number; low: { key: KeyCredits; ratio: number }[] }

/**
 * Gauges of the keys running low on credits (store/low-credits.ts says which), for an alert
 * before a customer's key runs out rather than at its 402s. Reading them takes a month of the
 * ledger (on the SQLite store's report worker, or as a Postgres report), so a scrape never
 * waits for it: it shows the last figures, and starts a read when they are older than
 * `intervalMs` and none is running. Scrapes (several Prometheus servers, a curl loop) start at
 * most one read per interval; nothing is read while nobody scrapes, and nothing on the request path.
 * Until the first read ends, the counts are 0 and shim_low_credits_checked_timestamp_seconds is 0.
 */
export class LowCreditGauges {
  private figures: Figures | undefined;
  private reading = false;
  private lastRead = Number.NEGATIVE_INFINITY;

  private readonly options: LowCreditsOptions;

  constructor(options: LowCreditsOptions) {
    this.options = options;
    if (options.intervalMs === 0) return;
    const registers = [options.registry];
    const self = this;
    const share = `${options.share} (SHIM_LOW_CREDITS_SHARE)`;
    const read = () => {
      self.due();
      return self.figures;
    };
    // The first gauge collected starts a due read; the others show the same figures.
    new Gauge({ name: "shim_low_credits_checked_timestamp_seconds", help: `When the low-credit gauges were last read from the ledger (at most every SHIM_LOW_CREDITS_INTERVAL_MS, on a scrape); 0: not yet.`, registers, collect() { this.set((read()?.at ?? 0) / 1000); } });
    new Gauge({ name: "shim_keys_active", help: "Keys neither revoked nor expired, at the last low-credit check.", registers, collect() { this.set(self.figures?.active ?? 0); } });
    new Gauge({ name: "shim_keys_low_credits", help: `Active keys whose balance is 0 or less, or under ${share} of the credits they had this UTC month (opening balance + granted), at the last check: fleet-status.sh's low keys.`, registers, collect() { this.set(self.figures?.low.length ?? 0); } });
    new Gauge({
      name: "shim_key_low_credits_ratio",
      help: `A low key's balance as a share of the credits it had this UTC month (0 when it had none), by key id and name: the ${LOW_CREDIT_SERIES} lowest low keys only.`,
      labelNames: ["key_id", "key_name"],
      registers,
      collect() {
        this.reset(); // a key topped up since leaves
        for (const { key, ratio } of (self.figures?.low ?? []).slice(0, LOW_CREDIT_SERIES)) this.set({ key_id: key.keyId, key_name: key.name }, ratio);
      },
    });
  }

  /** Starts a read when the figures are older than the interval and none runs; never waited for. */
  private due(): void {
    const { clock, intervalMs, store, share, logger } = this.options;
    const t = clock.monotonic();
    if (this.reading || t - this.lastRead < intervalMs) return;
    this.reading = true;
    this.lastRead = t;
    const now = clock.now();
    store.lowCredits({ from: monthStart(now, 0), now }).then((keys) => {
      const low = keys.filter((k) => isLow(k, share)).map((key) => ({ key, ratio: key.had > 0 ? Math.max(0, key.balance / key.had) : 0 }));
      low.sort((a, b) => a.ratio - b.ratio || a.key.keyId.localeCompare(b.key.keyId));
      this.figures = { at: now, active: keys.length, low };
    }, (e: unknown) => {
      // The last figures stay, and their timestamp says how old they are; the next scrape past the interval tries again.
      logger.warn({ err: e }, "low-credit gauges: the ledger could not be read");
    }).finally(() => {
      this.reading = false;
    });
  }
}
