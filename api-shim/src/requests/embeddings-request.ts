import { invalidParam } from "../errors.ts";

/**
 * The checks an embeddings request gets beside the ones every inference request gets
 * (inference-request.ts): what its prompt is, and the answer formats the shim can meter.
 */

/**
 * The `encoding_format` values whose answer the shim can meter and relay: OpenAI's two, the ones
 * its SDKs send. vLLM from 0.11.1 (its PR #30249; 0.31.0 included; the refusal holds whatever the
 * version) takes "bytes" and "bytes_only" too and answers them with raw vectors (application/octet-stream)
 * and the usage only in a `metadata` header, or nowhere: the shim found no usage in such a body,
 * charged the request price alone for any number of tokens, and relayed the binary labelled as
 * JSON without the header a client decodes it with. Refused before anything is held or forwarded
 * rather than followed there, whatever the value's type: a value vLLM refuses costs the client a
 * round trip, and one a later vLLM gains could answer in another format the shim cannot meter.
 */
const ENCODING_FORMATS: readonly unknown[] = ["float", "base64"];

/**
 * A 400 for an embeddings body the shim cannot take: neither `input` nor `messages` (vLLM's chat
 * embeddings, rendered by the chat template), both, `messages` that is not a non-empty list
 * (`chatEmbeddings`: the prompt is the messages), or an `encoding_format` it cannot meter.
 */
export function checkEmbeddingsRequest(b: Record<string, unknown>, chatEmbeddings: boolean): void {
  if (b.input === undefined && b.messages === undefined) throw invalidParam("'input' (or 'messages') is required.", "input");
  if (b.input !== undefined && b.messages !== undefined) throw invalidParam("Send either 'input' or 'messages', not both.", "messages");
  if (chatEmbeddings && (!Array.isArray(b.messages) || b.messages.length === 0)) throw invalidParam("'messages' must be a non-empty array.", "messages");
  // null is how some clients send a parameter they leave unset: the upstream decides (LiteLLM
  // drops it; vLLM refuses it, which costs nothing).
  if (b.encoding_format !== undefined && b.encoding_format !== null && !ENCODING_FORMATS.includes(b.encoding_format)) {
    throw invalidParam("'encoding_format' must be 'float' or 'base64' (or left out, for 'float').", "encoding_format");
  }
}
