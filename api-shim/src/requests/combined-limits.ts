import type { StructuredLimits } from "./structured-limits.ts";

/**
 * What the schemas vLLM compiles as one are held to together: tools' parameters under
 * tool_choice "required" or "auto" with a strict tool (one structural tag of them all), a
 * structural tag's schemas (one grammar). OpenAI's limits are per schema, so one schema's limits
 * for the union refused what OpenAI takes in ordinary use: three calendar tools, one strict, each
 * with the 418 IANA time zones as an enum (1,254 values; the structured-output review, finding 4).
 * No bound at all let fifty tools of 4,900 properties (245,000 in one compile) through. So the
 * union is held to a fixed multiple of one schema's counts: a request's combined compile costs at
 * most about COMBINED_FACTOR of the largest schemas OpenAI allows, whatever the tools' number.
 */
export const COMBINED_FACTOR = 4;

/**
 * `limits` for a union: properties, enum values and characters (what grows with the union's size)
 * times COMBINED_FACTOR, null staying null. Depth is unchanged (a union adds no level), and so are
 * the regex, repetition and grammar bounds, which bound one pattern or keyword, not a sum.
 */
export function combinedLimits(limits: StructuredLimits): StructuredLimits {
  const times = (v: number | null) => (v === null ? null : v * COMBINED_FACTOR);
  return { ...limits, maxProperties: times(limits.maxProperties), maxEnumValues: times(limits.maxEnumValues), maxSchemaChars: times(limits.maxSchemaChars) };
}

/** The words a combined refusal's message adds, so the client sees why the number is not one schema's. */
export const COMBINED_WHY = `held to ${COMBINED_FACTOR} times one schema's limits`;
