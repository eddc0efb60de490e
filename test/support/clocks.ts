import type { Clock } from "../../api-shim/src/clock.ts";

// Clocks for tests, kept out of api-shim/src so the shim's image carries only the system clock.

/** A clock that only moves when told to; for tests of time-dependent behaviour. */
export function manualClock(startMs = Date.UTC(2026, 0, 15, 12, 0, 0)): Clock & { advance(ms: number): void } {
  let wall = startMs;
  let mono = 0;
  return {
    now: () => wall,
    monotonic: () => mono,
    advance(ms: number) {
      wall += ms;
      mono += ms;
    },
  };
}

/**
 * The system's clock, started at `startMs`: time passes as it does, so expiries and durations
 * behave, but a test that starts at a chosen midday cannot see the day or month turn mid-test
 * (as one started at 23:59:59.9 UTC would, comparing a report's day with its own `new Date()`).
 */
export function clockFrom(startMs: number): Clock {
  const started = performance.now();
  return {
    now: () => startMs + Math.floor(performance.now() - started),
    monotonic: () => performance.now(),
  };
}

/** The system's clock moved to a chosen instant on demand, time passing from there as it does. */
export function jumpingClock(startMs: number): Clock & { jump(toMs: number): void } {
  let base = startMs;
  let started = performance.now();
  return {
    now: () => base + Math.floor(performance.now() - started),
    monotonic: () => performance.now(),
    jump(toMs: number) { base = toMs; started = performance.now(); },
  };
}

/**
 * The system's wall clock with monotonic time standing still: token buckets (requests/min,
 * tokens/min) never refill, so a test can assert exactly what a key has left however slowly the
 * machine runs (a loaded run refilled a request of a 100/min bucket within the test).
 */
export function refillessClock(): Clock {
  return { now: () => Date.now(), monotonic: () => 0 };
}
