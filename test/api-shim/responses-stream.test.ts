import { describe, expect, it } from "vitest";
import { ResponsesMeter } from "../../api-shim/src/metering/responses-stream.ts";
import { ShimError } from "../../api-shim/src/errors.ts";

/** The Responses stream's meter on its own: what it makes of each dialect's events, and what it charges. */
describe("ResponsesMeter", () => {
  const usage = { input_tokens: 10, input_tokens_details: { cached_tokens: 4 }, output_tokens: 3, output_tokens_details: { reasoning_tokens: 1 }, total_tokens: 13 };
  const completed = (u: unknown = usage) => `event: response.completed\ndata: ${JSON.stringify({ response: { object: "response", status: "completed", usage: u }, sequence_number: 9, type: "response.completed" })}`;

  it("relays every event; the final one ends the stream with the upstream's usage (cached tokens read)", () => {
    const m = new ResponsesMeter(100);
    expect(m.process(`event: response.created\ndata: {"response":{},"sequence_number":0,"type":"response.created"}`)).toMatchObject({ kind: "chunk" });
    expect(m.answerBegan).toBe(false);
    expect(m.process(`event: response.output_text.delta\ndata: {"content_index":0,"delta":"hello","item_id":"m","output_index":0,"sequence_number":1,"type":"response.output_text.delta"}`)).toMatchObject({ kind: "chunk" });
    expect(m.answerBegan).toBe(true);
    expect(m.complete).toBe(false);
    expect(m.process(completed())).toMatchObject({ kind: "usage", last: true });
    expect(m.complete).toBe(true);
    expect(m.usage(false)).toEqual({ promptTokens: 10, completionTokens: 3, cachedTokens: 4 });
  });

  it("reads events without an `event:` line by their data's type (a proxy's), and takes a [DONE] as the end", () => {
    const m = new ResponsesMeter(100);
    m.process(`data: {"type":"response.output_text.delta","delta":"hi there","sequence_number":3}`);
    expect(m.contentSeen).toBe(true);
    expect(m.process(`data: {"type":"response.completed","response":{"usage":{"input_tokens":2,"output_tokens":1}}}`)).toMatchObject({ kind: "usage", last: true });
    expect(m.usage(true)).toEqual({ promptTokens: 2, completionTokens: 1 });
    expect(m.process("data: [DONE]")).toEqual({ kind: "done" });
  });

  it("cut short: each delta at least a token, or its text's estimate, within the bound; the prompt's estimate only when owed", () => {
    const m = new ResponsesMeter(5);
    for (const d of ["a", "b", "c"]) m.process(`event: response.output_text.delta\ndata: {"delta":"${d}","type":"response.output_text.delta"}`);
    expect(m.usage(false, () => 50)).toEqual({ promptTokens: 0, completionTokens: 3 });
    expect(m.usage(true, () => 50)).toEqual({ promptTokens: 50, completionTokens: 3 });
    m.process(`event: response.function_call_arguments.delta\ndata: {"delta":"${"1234567890".repeat(5)}","type":"response.function_call_arguments.delta"}`);
    expect(m.usage(false).completionTokens).toBe(5); // 50 digits estimated, the bound is 5
    // An empty delta carries nothing.
    const empty = new ResponsesMeter(5);
    empty.process(`event: response.output_text.delta\ndata: {"delta":"","type":"response.output_text.delta"}`);
    expect(empty.contentSeen).toBe(false);
  });

  it("an error event (OpenAI's, or an error body) is an error; the shim's own are OpenAI's error event with the next sequence number (one past the last numbered, counting unnumbered ones), then response.failed with the one after", () => {
    const m = new ResponsesMeter(5);
    m.process(`event: response.in_progress\ndata: {"response":{},"sequence_number":1,"type":"response.in_progress"}`);
    expect(m.process(`event: error\ndata: {"type":"error","code":"server_error","message":"boom","param":null,"sequence_number":2}`)).toMatchObject({ kind: "error" });
    expect(m.process(`data: {"error":{"message":"boom","type":"InternalServerError","param":null,"code":500}}`)).toMatchObject({ kind: "error" });
    const [event, failed] = m.errorEvent(new ShimError("upstream_error")).split("\n\n") as [string, string];
    expect(event.startsWith("event: error\ndata: ")).toBe(true);
    expect(JSON.parse(event.slice(event.indexOf("data: ") + 6))).toMatchObject({ type: "error", code: "upstream_error", param: null, sequence_number: 4, error: { code: "upstream_error", type: "api_error" } });
    expect(failed.startsWith("event: response.failed\ndata: ")).toBe(true);
    expect(JSON.parse(failed.slice(failed.indexOf("data: ") + 6))).toMatchObject({ type: "response.failed", sequence_number: 5, response: { status: "failed", error: { code: "server_error" } } });
  });

  it("a final event without usage is still the end, charged from what was delivered", () => {
    const m = new ResponsesMeter(5);
    m.process(`event: response.output_text.delta\ndata: {"delta":"a","type":"response.output_text.delta"}`);
    m.process(completed(null));
    expect(m.complete).toBe(true);
    expect(m.promptReported).toBe(false);
    expect(m.usage(true, () => 7)).toEqual({ promptTokens: 7, completionTokens: 1 });
  });
  it("cut short after some items came whole and others as deltas: each item's text counts once, the whole item's or its deltas', and they add up", () => {
    const words = (w: string) => Array.from({ length: 100 }, () => w).join(" "); // 100 words of 4 letters: 125 tokens estimated
    const deltaOf = (index: number, seq: number) => `event: response.output_text.delta\ndata: {"content_index":0,"delta":"${words("aaaa")} ","item_id":"msg_${index}","output_index":${index},"sequence_number":${seq},"type":"response.output_text.delta"}`;
    const done = (index: number, item: Record<string, unknown>) => `event: response.output_item.done\ndata: ${JSON.stringify({ item, output_index: index, sequence_number: 50 + index, type: "response.output_item.done" })}`;
    const m = new ResponsesMeter(10_000);
    // Item 0, a call, sent whole without deltas: its arguments are output the client received.
    m.process(done(0, { id: "fc_1", type: "function_call", name: "f", arguments: words("bbbb") }));
    const wholeItem = m.usage(false).completionTokens;
    expect(wholeItem).toBeGreaterThanOrEqual(100);
    // Item 1, a message, streamed as deltas, then cut before its end.
    for (let i = 0; i < 4; i++) m.process(deltaOf(1, i + 2));
    const both = m.usage(false).completionTokens;
    expect(both).toBeGreaterThanOrEqual(wholeItem + 400);
    // Its done, with the same text as its deltas, adds nothing: that text was counted.
    m.process(done(1, { id: "msg_1", type: "message", content: [{ type: "output_text", text: `${words("aaaa")} `.repeat(4) }] }));
    expect(m.usage(false).completionTokens).toBe(both);
  });
});

/** The cut-stream estimate's items sent whole, each once (cases a mutation review found no test reached). */
describe("ResponsesMeter: items sent whole, each counted once", () => {
  const words = (w: string, n = 100) => Array.from({ length: n }, () => w).join(" "); // 100 words of 4 letters: ~125 tokens
  const done = (index: number | undefined, item: Record<string, unknown>) =>
    `event: response.output_item.done\ndata: ${JSON.stringify({ item, ...(index === undefined ? {} : { output_index: index }), sequence_number: 50, type: "response.output_item.done" })}`;
  const message = (text: string) => ({ id: "msg_1", type: "message", content: [{ type: "output_text", text }] });

  it("an item sent whole is counted once, not twice", () => {
    const m = new ResponsesMeter(100_000);
    m.process(done(0, message(words("bbbb"))));
    const one = m.usage(false).completionTokens;
    expect(one).toBeGreaterThanOrEqual(100);
    expect(one).toBeLessThanOrEqual(160);
    const solo = new ResponsesMeter(100_000);
    solo.process(done(0, message(`${words("bbbb")} ${words("bbbb")}`)));
    expect(solo.usage(false).completionTokens).toBeGreaterThan(one * 1.8); // and twice the text is about twice
  });

  it("deltas and items without output_index: the same text is not counted twice", () => {
    const m = new ResponsesMeter(100_000);
    for (let i = 0; i < 4; i++) m.process(`event: response.output_text.delta\ndata: {"delta":"${words("aaaa")} ","type":"response.output_text.delta"}`);
    const deltas = m.usage(false).completionTokens;
    m.process(done(undefined, message(`${words("aaaa")} `.repeat(4))));
    expect(m.usage(false).completionTokens).toBe(deltas);
  });

  it("reads output_index as JSON with spaces too (json.dumps' default separators)", () => {
    const m = new ResponsesMeter(100_000);
    m.process(done(0, message(words("bbbb"))));
    const whole = m.usage(false).completionTokens;
    for (let i = 0; i < 4; i++) m.process(`event: response.output_text.delta\ndata: {"content_index": 0, "delta": "${words("aaaa")} ", "output_index": 1, "type": "response.output_text.delta"}`);
    expect(m.usage(false).completionTokens).toBeGreaterThanOrEqual(whole + 400);
  });

  it("a call counts its name once, as chat's meter does, whether it came whole or its arguments were streamed (found by a review)", () => {
    const call = { id: "fc_1", type: "function_call", call_id: "c", name: words("eeee").replaceAll(" ", "_"), arguments: "{}", status: "completed" };
    const added = `event: response.output_item.added\ndata: ${JSON.stringify({ item: { ...call, arguments: "", status: "in_progress" }, output_index: 0, sequence_number: 1, type: "response.output_item.added" })}`;
    const argumentsDelta = `event: response.function_call_arguments.delta\ndata: {"delta":"{}","item_id":"fc_1","output_index":0,"sequence_number":2,"type":"response.function_call_arguments.delta"}`;
    const whole = new ResponsesMeter(100_000);
    whole.process(done(0, call));
    expect(whole.usage(false).completionTokens).toBeGreaterThanOrEqual(100);
    const addedThenDone = new ResponsesMeter(100_000);
    for (const e of [added, done(0, call)]) addedThenDone.process(e);
    const streamed = new ResponsesMeter(100_000);
    for (const e of [added, argumentsDelta, done(0, call)]) streamed.process(e);
    // Cut before its done event: the name came with the item's first event.
    const cut = new ResponsesMeter(100_000);
    for (const e of [added, argumentsDelta]) cut.process(e);
    const counts = [whole, addedThenDone, streamed, cut].map((m) => m.usage(false).completionTokens);
    expect(new Set(counts).size, JSON.stringify(counts)).toBe(1);
  });

  it("a reasoning item's summary and a refusal sent whole count", () => {
    const r = new ResponsesMeter(100_000);
    r.process(done(0, { id: "rs_1", type: "reasoning", summary: [{ type: "summary_text", text: words("cccc") }] }));
    expect(r.usage(false).completionTokens).toBeGreaterThanOrEqual(100);
    const f = new ResponsesMeter(100_000);
    f.process(done(0, { id: "msg_1", type: "message", content: [{ type: "refusal", refusal: words("dddd") }] }));
    expect(f.usage(false).completionTokens).toBeGreaterThanOrEqual(100);
  });
});
