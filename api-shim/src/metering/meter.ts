import type { ShimError } from "../errors.ts";
import type { Usage } from "../money/pricing.ts";

/** What a meter makes of one event: relay it, hold it as the stream's usage, or end the stream. */
export type MeteredEvent =
  | { kind: "chunk"; forward: string } // forward = the event text to send
  | { kind: "comment"; forward: string } // an event without data (comments, retry: lines): relayed as it came
  | UsageEvent
  | { kind: "error"; data: string } // upstream error inside the stream (its JSON)
  | { kind: "done" };

/**
 * A usage chunk to hold until the next event (vLLM's usage-only chunk; LiteLLM's whole-request usage
 * on a chunk with nothing generated): the event to send (null = hide it) and its data, for splicing
 * the credits into; `last`: the stream's final event (responses-stream.ts).
 */
export type UsageEvent = { kind: "usage"; forward: string | null; data: string; last?: true };

/**
 * What relayStream (stream.ts) needs of a stream's meter: each event read as it passes, and at the
 * end what to charge. StreamMeter (metering.ts) reads chat and completions chunks; ResponsesMeter
 * (responses-stream.ts) the Responses API's events. Their getters are documented on StreamMeter.
 */
export interface Meter {
  process(event: string): MeteredEvent;
  readonly complete: boolean;
  readonly promptReported: boolean;
  readonly sawUsage: boolean;
  readonly contentSeen: boolean;
  readonly answerBegan: boolean;
  /** How many outputs (of prompts × `n`) sent their finish_reason; "all": only the usage may still come. */
  readonly outputsFinished: "none" | "some" | "all";
  /** The stream ended with the upstream's own report of its failure (a Responses `response.failed` without usage): settled as an upstream failure. */
  readonly upstreamFailed: boolean;
  usage(promptOwed: boolean, promptEstimate: () => number): Usage;
  /** A usage event the client asked for and did not get (chat's), for a stream that is whole without it. */
  missingUsageChunk(): UsageEvent | null;
  /** The stream's last line after a whole answer (chat's `data: [DONE]`; none for the Responses API). */
  readonly endLine: string;
  /** The event (the Responses API: events) telling the client of `failure` in the stream's dialect. */
  errorEvent(failure: ShimError): string;
}
