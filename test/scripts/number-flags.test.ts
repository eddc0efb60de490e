// The scripts' number flags (reap-expired --concurrency, smoke-test --timeout-seconds) read decimal
// digits within a range whose ends are taken, as the stack config reads its numbers.
import { expect, it } from "vitest";
import { numberFlag } from "../../scripts/lib/cli.ts";

const CONCURRENCY = { min: 1, max: 16, integer: true, what: "a whole number", fallback: 2 };
const SECONDS = { min: 1, max: 3600, what: "a number of seconds", fallback: 60 };

it("takes both ends of the range and the default when the flag is absent", () => {
  expect(numberFlag("concurrency", "1", CONCURRENCY)).toBe(1);
  expect(numberFlag("concurrency", "16", CONCURRENCY)).toBe(16);
  expect(numberFlag("concurrency", undefined, CONCURRENCY)).toBe(2);
});

it("refuses a fraction where a whole number is wanted, and anything but decimal digits", () => {
  expect(() => numberFlag("concurrency", "1.5", CONCURRENCY)).toThrow('--concurrency "1.5" must be a whole number from 1 to 16');
  expect(() => numberFlag("timeout-seconds", "1e1", SECONDS)).toThrow('--timeout-seconds "1e1" must be a number of seconds from 1 to 3600, in decimal digits');
  expect(numberFlag("timeout-seconds", "2.5", SECONDS)).toBe(2.5);
});
