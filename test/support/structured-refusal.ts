// For the structured-output tests: what refuseOversizedStructures throws for a body (undefined
// when it passes), and an object schema of n properties.
import type { ShimError } from "../../api-shim/src/errors.ts";
import { DEFAULT_STRUCTURED_LIMITS, refuseOversizedStructures, type StructuredLimits } from "../../api-shim/src/requests/structured-limits.ts";

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
