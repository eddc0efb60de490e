import type { ShimError } from "../errors.ts";
import type { Usage } from "../money/pricing.ts";
import type { MeteredEvent, UsageEvent } from "./metering.ts";

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
  /** The stream ended with the upstream's own report of its failure (a Responses `response.failed` without usage): settled as an upstream failure. */
  readonly upstreamFailed?: boolean;
  usage(promptOwed: boolean, promptEstimate: () => number): Usage;
  /** A usage event the client asked for and did not get (chat's), for a stream that is whole without it. */
  missingUsageChunk(): UsageEvent | null;
  /** The stream's last line after a whole answer; chat's `data: [DONE]` when absent. */
  readonly endLine?: string;
  /** The event telling the client of `failure` in the stream's dialect; chat's `data: {"error":…}` when absent. */
  errorEvent?(failure: ShimError): string;
}
