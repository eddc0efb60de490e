import { invalidParam } from "../errors.ts";
import { isObject } from "../metering/generated-content.ts";

/**
 * The members of LiteLLM's answer message beyond OpenAI's, which a client hands back when it
 * pushes the answer's message into the next request (`messages.push(completion.choices[0].message)`,
 * the tool-calling loop of OpenAI's docs). LiteLLM's Message (litellm/types/utils.py) keeps
 * `annotations` when not None (OpenAI's models answer `[]`), `images`, `reasoning_items`, and
 * `provider_specific_fields` when not empty: every member of the provider's message that is not
 * one of Message's lands there (convert_dict_to_response.py), so OpenAI's `refusal: null` does, and
 * Anthropic's answer carries `{citations, thinking_blocks}` (llms/anthropic/chat/transformation.py).
 * Found by review: the allow-list refused all four, so that loop's second turn got a 400. Each is
 * taken in the values LiteLLM answers with that give the provider nothing to fetch, run or bill
 * beyond what the hold covers, and refused otherwise, saying to drop it.
 */
export const ANSWER_MEMBERS = ["annotations", "images", "reasoning_items", "provider_specific_fields"];

/** A thinking block as Anthropic signs it and a client hands it back: nothing to fetch, run or cache. */
const THINKING_TYPES: readonly unknown[] = ["thinking", "redacted_thinking"];
export const THINKING_MEMBERS = ["type", "thinking", "signature", "data"];

/** Whether `blocks` is a list of thinking blocks as the model answered them (LiteLLM puts them into Anthropic's content as they come). */
export function isModelThinking(blocks: unknown): boolean {
  const thinking = (b: unknown) => isObject(b) && THINKING_TYPES.includes(b.type) && Object.keys(b).every((k) => THINKING_MEMBERS.includes(k));
  return listOf(thinking)(blocks);
}

/** A rule that also takes null (a member LiteLLM left unset), and one for a list whose items all pass `item`. */
const nullOr = (test: (v: unknown) => boolean) => (v: unknown) => v === null || test(v);
const listOf = (item: (v: unknown) => boolean) => (v: unknown) => Array.isArray(v) && v.every(item);
const isText = (v: unknown): v is string => typeof v === "string";
/** The members of OpenRouter's reasoning_details items (nothing else is vetted: a newer converter might read it). */
const REASONING_DETAIL_MEMBERS = ["type", "text", "summary", "data", "signature", "format", "id", "index"];

/**
 * `provider_specific_fields`' members LiteLLM's answers carry and no request converter of its reads
 * back as content (factory.py anthropic_messages_pt reads only compaction_blocks, web_search_results
 * and tool_results from it; Gemini's converter reads thought_signatures as a signature), with the
 * values they are taken in.
 */
const INERT_FIELDS: Record<string, (v: unknown) => boolean> = {
  // OpenAI's refusal text, moved there by LiteLLM: text.
  refusal: nullOr(isText),
  // Anthropic's citations of the answer: read by no converter.
  citations: nullOr(Array.isArray),
  // Anthropic's copy of the message's thinking_blocks: held to the member's own check, in case a converter reads it.
  thinking_blocks: nullOr(isModelThinking),
  // Gemini's thought signatures (opaque strings Gemini signed and checks): LiteLLM's Gemini converter
  // (vertex_ai/gemini/transformation.py) sets the first as the text part's thoughtSignature, which
  // Gemini 3 wants back with a tool call's turn; nothing to fetch, run or bill.
  thought_signatures: nullOr(listOf(isText)),
  // OpenRouter's reasoning (an OpenAI-compatible provider's message members LiteLLM moves here):
  // text, and reasoning_details of OpenRouter's reasoning.text/.summary/.encrypted types, text or
  // opaque, which an OpenAI-compatible provider is sent as they came and counts as prompt (bounded
  // by the body, as the hold is); nothing to fetch or run.
  reasoning: nullOr(isText),
  reasoning_details: nullOr(listOf((d) => isObject(d) && isText(d.type) && d.type.startsWith("reasoning.") && Object.keys(d).every((k) => REASONING_DETAIL_MEMBERS.includes(k)))),
};

/** A 400 for a member of ANSWER_MEMBERS in `m` (a message for `name`, a provider's model) in a value other than those above. */
export function refuseUnsafeAnswerMembers(m: Record<string, unknown>, name: string): void {
  const drop = (member: string, why: string) => invalidParam(`A message's '${member}' for model '${name}', a provider's model, ${why}. Drop it before sending the message back.`, "messages");
  // Read by none of LiteLLM's converters; url_citation is the one type LiteLLM's answers carry
  // (ChatCompletionAnnotation), so an OpenAI-compatible provider, sent the message as it came, gets nothing else.
  const annotations = m.annotations;
  if (annotations !== undefined && !nullOr(listOf((a) => isObject(a) && a.type === "url_citation"))(annotations)) {
    throw drop("annotations", "may only be the url_citation annotations an answer carried");
  }
  // Images the model generated and reasoning items (encrypted reasoning LiteLLM's Responses bridge
  // sends back as input) would reach the provider as input the hold does not count; this endpoint
  // serves text output only (`modalities`), so an answer it served carries none: empty, they add nothing.
  for (const member of ["images", "reasoning_items"]) {
    if (!isEmpty(m[member])) throw drop(member, "may only be empty: the provider would be sent it as input this endpoint does not hold credits for");
  }
  const fields = m.provider_specific_fields;
  if (fields === undefined || fields === null) return;
  if (!isObject(fields) || Array.isArray(fields)) throw drop("provider_specific_fields", "must be an object");
  for (const k in fields) {
    // Own members only: a member named as Object.prototype's (`constructor`, `valueOf`) is unknown too.
    const inert = Object.hasOwn(INERT_FIELDS, k) ? INERT_FIELDS[k] : undefined;
    // What LiteLLM makes content (compaction blocks, server tool results) or does not answer with:
    // only empty, which LiteLLM adds nothing for (it tests them for truth).
    if (inert ? inert(fields[k]) : isEmpty(fields[k])) continue;
    const member = `provider_specific_fields.${k.slice(0, 64)}`;
    throw invalidParam(
      `A message's '${member}' is not accepted for model '${name}', a provider's model: LiteLLM may put it into the provider's request as content that is not checked here. ${Object.keys(INERT_FIELDS).join(", ")} (as answered) and empty members pass. Drop ${member} (or provider_specific_fields) before sending the message back.`,
      "messages",
    );
  }
}

const isEmpty = (v: unknown) => v === undefined || v === null || (Array.isArray(v) ? v.length === 0 : isObject(v) && Object.keys(v).length === 0);
