/** The one source of time for the shim, injected so tests can control it. */
export interface Clock {
  /** Milliseconds since the Unix epoch (wall clock: timestamps, periods, expiry). */
  now(): number;
  /** Monotonic milliseconds (durations and token-bucket refill; never jumps backwards). */
  monotonic(): number;
}

export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  monotonic: () => performance.now(),
});
