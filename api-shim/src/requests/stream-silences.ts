import { invalidParam } from "../errors.ts";
import { pydanticBool } from "./common-params.ts";

/**
 * Parameters with which a client has vLLM generate without writing chunks, refused on streams.
 * A client that leaves a stream is charged what it was sent (with its prompt): the upstream is
 * aborted and tells nothing of what it generated since its last chunk. Silences of the model's own
 * (a tool parser holding tokens back) are the price of aborting; one the client chose would be
 * generation it can walk away from unpaid, just before the end (hundreds of tokens for one). On a
 * non-streamed request they are harmless, charged from vLLM's usage, and pass on untouched.
 */
export function refuseChosenSilences(b: Record<string, unknown>): void {
  // vLLM's extra parameter: "Number of tokens to batch into each streamed chunk … The first and
  // last chunks are always sent immediately." 1 is every token, as without it.
  const interval = b.stream_interval;
  if (interval !== undefined && interval !== null && interval !== 1) {
    throw invalidParam("'stream_interval' other than 1 is not accepted on a stream: tokens generated between chunks cannot be metered if the client leaves. Leave it out, or send the request without 'stream'.", "stream_interval");
  }
  // vLLM's chat beam search yields its answer once, whole, at the end (completions refuse it on streams).
  if (pydanticBool(b.use_beam_search) === true) {
    throw invalidParam("'use_beam_search' is not accepted on a stream: the answer is written only when it is whole, so its generation cannot be metered if the client leaves. Send the request without 'stream'.", "use_beam_search");
  }
  // The reasoning is generated and its deltas dropped.
  if (pydanticBool(b.include_reasoning) === false) {
    throw invalidParam("'include_reasoning: false' is not accepted on a stream: the hidden reasoning is generated without chunks and cannot be metered if the client leaves. Leave it out and skip the reasoning deltas, or send the request without 'stream'.", "include_reasoning");
  }
}
