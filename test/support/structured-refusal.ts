// For the structured-output tests: what refuseOversizedStructures throws for a body (undefined
// when it passes), an object schema of n properties, and the shim-and-SDK setup and refusal check
// their "through the shim" blocks share.
import OpenAI from "openai";
import { afterAll, beforeAll, expect } from "vitest";
import type { ShimError } from "../../api-shim/src/errors.ts";
import { DEFAULT_STRUCTURED_LIMITS, refuseOversizedStructures, type StructuredLimits } from "../../api-shim/src/requests/structured-limits.ts";
import { type Harness, startShim } from "./shim-harness.ts";

export function structuredRefusal(body: Record<string, unknown>, limits: StructuredLimits = DEFAULT_STRUCTURED_LIMITS): ShimError | undefined {
  try {
    refuseOversizedStructures(body, limits);
    return undefined;
  } catch (e) {
    return e as ShimError;
  }
}

/** An object of `n` properties (names p0, p1…), each `value`. */
export const wideSchema = (n: number, value: unknown = { type: "string" }) =>
  ({ type: "object", properties: Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, value])) });

/**
 * For a "through the shim" block: starts a shim before its tests, with a key of 10 credits, and
 * closes it after. Read `h` and `key` inside the tests (they are set by the time these run).
 */
export function shimWithKey(): { readonly h: Harness; readonly key: string } {
  const state = {} as { h: Harness; key: string };
  beforeAll(async () => {
    state.h = await startShim();
    ({ key: state.key } = await state.h.createKey({ credits: 10 }));
  });
  afterAll(async () => state.h?.close());
  return state;
}

/**
 * Awaits a call the shim must refuse before forwarding: a BadRequestError (invalid_request_error)
 * naming `param`, and the fake vLLM received nothing. Returns the error for the message's checks.
 */
export async function refusedUnsent(h: Harness, call: Promise<unknown>, param: string): Promise<InstanceType<typeof OpenAI.BadRequestError>> {
  const before = h.fake.counters.received;
  const e = await call.catch((err: unknown) => err);
  expect(e).toBeInstanceOf(OpenAI.BadRequestError);
  const bad = e as InstanceType<typeof OpenAI.BadRequestError>;
  expect([bad.param, bad.type]).toEqual([param, "invalid_request_error"]);
  expect(h.fake.counters.received).toBe(before);
  return bad;
}

/** The message of a refusal's error body. */
export const refusalMessage = (bad: InstanceType<typeof OpenAI.BadRequestError>) => (bad.error as { message: string }).message;
