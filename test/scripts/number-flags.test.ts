// The scripts' number flags (reap-expired --concurrency, smoke-test --timeout-seconds) read decimal
// digits within a range whose ends are taken, as the stack config reads its numbers.
import { expect, it } from "vitest";
import { numberFlag } from "../../scripts/lib/cli.ts";

const CONCURRENCY = { min: 1, max: 16, integer: true };

it("takes both ends of the range and the default when the flag is absent", () => {
  expect(numberFlag("concurrency", "1", 2, CONCURRENCY, "a whole number")).toBe(1);
  expect(numberFlag("concurrency", "16", 2, CONCURRENCY, "a whole number")).toBe(16);
  expect(numberFlag("concurrency", undefined, 2, CONCURRENCY, "a whole number")).toBe(2);
});

it("refuses a fraction where a whole number is wanted, and anything but decimal digits", () => {
  expect(() => numberFlag("concurrency", "1.5", 2, CONCURRENCY, "a whole number")).toThrow('--concurrency "1.5" must be a whole number from 1 to 16');
  expect(() => numberFlag("timeout-seconds", "1e1", 60, { min: 1, max: 3600 }, "a number of seconds")).toThrow('--timeout-seconds "1e1" must be a number of seconds from 1 to 3600, in decimal digits');
  expect(numberFlag("timeout-seconds", "2.5", 60, { min: 1, max: 3600 }, "a number of seconds")).toBe(2.5);
});
