import { describe, expect, it } from "vitest";
import { ask, chunk, delta, DONE, finish, scriptedLitellm, USAGE_FAILED } from "../support/litellm-script.ts";

/**
 * LiteLLM's usage chunk that fails to be built, scripted as its proxy sends it (found by review of
 * its recent releases). BerriAI/litellm#41187 (open; a regression in v1.94.0 from #32255, fix PR
 * #41195 not merged): on `hosted_vllm/` streams with `stream_options.include_usage`, which the shim
 * always asks for, serializing the usage chunk raises (`'MockValSer' object cannot be converted
 * to 'SchemaSerializer'`) and the proxy's async_data_generator writes its mid-stream error frame,
 * `data: {"error": ProxyException.to_dict()}` (code a string), where the usage chunk would have
 * been: after every content chunk and the finish_reason, with or without a `data: [DONE]` after it.
 */
describe("LiteLLM's error event in place of the usage chunk, after the whole answer", () => {
  const s = scriptedLitellm();
  const { streamed } = s;
  const usageFailed = USAGE_FAILED;
  const done = DONE;
  const answer = delta(0, "Hello") + delta(0, " there") + finish(0);
  const failures = async (reason: string) => Number(new RegExp(`^shim_upstream_failures_total\\{reason="${reason}"\\} (\\d+)$`, "m").exec(await (await fetch(`${s.h.url}/metrics`)).text())?.[1] ?? 0);


  for (const [name, tail] of [["no [DONE] after it (today's proxy)", ""], ["[DONE] after it", done]] as const) {
    it(`the client that has every finish_reason gets a whole stream, not an error it would retry, and pays as for an answer that came without usage: ${name}`, async () => {
      const withoutUsage = await streamed(answer + done);
      const noUsage = await failures("no_usage");
      const { text, line, charged } = await streamed(answer + usageFailed + tail);
      expect(text).toContain("Hello");
      // Before: `data: {"error":{"code":"upstream_error",…}}` after the finish, so an SDK raised
      // APIError on an answer it already had, and its retry had vLLM generate it again.
      expect(text).not.toContain('"error"');
      expect(text).toMatch(/\n: credits_charged=\S+ credits_remaining=\S+\n\ndata: \[DONE\]\n\n$/);
      // The prompt vLLM processed is charged (estimated), not only the two content chunks: the same
      // answer ended by [DONE] without usage costs exactly this.
      expect(charged).toBeGreaterThan(3); // credits: the request and the two chunks, and more
      expect(charged).toBe(withoutUsage.charged);
      expect(line).toMatchObject({ status: 200, tokens: withoutUsage.line.tokens, cause: "no_usage" });
      expect(line.error).toBeUndefined();
      // Counted as a stream without usage is, for the operator to find (the upstream is the one to fix).
      expect(await failures("no_usage")).toBe(noUsage + 1);
      expect(s.h.logs.some((l) => l.includes("stream usage failed upstream"))).toBe(true);
    });
  }

  it("a client that asked for usage reads the same whole stream, charged the same", async () => {
    const request = ask({ stream_options: { include_usage: true } });
    const withoutUsage = await streamed(answer + done, request);
    const { text, charged } = await streamed(answer + usageFailed + done, request);
    expect(text).not.toContain('"error"');
    expect(text).toMatch(/data: \[DONE\]\n\n$/);
    expect(charged).toBe(withoutUsage.charged);
  });

  it("every output of n: 2 finished, then the error: a whole stream too", async () => {
    const request = ask({ n: 2 });
    const both = delta(0, "Hello") + delta(1, "Hi") + finish(0) + finish(1);
    const withoutUsage = await streamed(both + done, request);
    const { text, charged } = await streamed(both + usageFailed + done, request);
    expect(text).not.toContain('"error"');
    expect(charged).toBe(withoutUsage.charged);
  });

  it("with running usage on every chunk (continuous usage asked), the error after every finish ends a whole stream too, charged that usage", async () => {
    const request = ask({ stream_options: { include_usage: true, continuous_usage_stats: true } });
    const running = (completion: number) => ({ usage: { prompt_tokens: 12, completion_tokens: completion, total_tokens: 12 + completion } });
    const body = chunk({ choices: [{ index: 0, delta: { content: "Hello" }, finish_reason: null }], ...running(1) }) + chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }], ...running(2) });
    const whole = await streamed(body + done, request);
    const noUsage = await failures("no_usage");
    const { text, charged, line } = await streamed(body + usageFailed + done, request);
    expect(text).not.toContain('"error"');
    expect(text).toMatch(/data: \[DONE\]\n\n$/);
    expect(charged).toBe(whole.charged);
    // The charge is right, but LiteLLM's failure is still the operator's to see (its final usage
    // chunk failed): counted and logged as without usage, saying what it was charged from.
    expect(line).toMatchObject({ status: 200, cause: "no_usage" });
    expect(await failures("no_usage")).toBe(noUsage + 1);
    expect(s.h.logs.some((l) => l.includes("stream usage failed upstream (an error event in its place, after every finish): charged from the usage that came"))).toBe(true);
  });

  it("an error before any output finished is still the upstream's failure: told, and charged the content only", async () => {
    const streamError = await failures("stream_error");
    const body = delta(0, "Hello") + delta(0, " there") + usageFailed;
    const { text, line, charged } = await streamed(body);
    expect(text).toContain('"code":"upstream_error"');
    expect(text).not.toContain("[DONE]");
    expect(line).toMatchObject({ status: 200, error: "upstream_error" });
    // The request and the content chunks, no prompt: less than the same content ended by [DONE].
    const whole = await streamed(body.replace(usageFailed, "") + done);
    expect(charged).toBeLessThan(whole.charged);
    expect(await failures("stream_error")).toBe(streamError + 1);
  });

  it("an error after one output of n: 2 finished is told, and charged its prompt with the content: LiteLLM sends one finish for all of n, so behind it the whole answer came", async () => {
    // LiteLLM: both outputs' content, one finish_reason for all of n, then its error in the usage's place.
    const body = delta(0, "Hello") + delta(1, "Hi") + finish(0) + usageFailed + done;
    const { text, line, charged } = await streamed(body, ask({ n: 2 }));
    expect(text).toContain('"code":"upstream_error"');
    expect(line).toMatchObject({ status: 200, error: "upstream_error" });
    // Before: the request and the two chunks, never the prompt, however long (a client adding n: 2
    // to every stream had its prompts free whenever LiteLLM hit its bug).
    const withoutUsage = await streamed(body.replace(usageFailed, ""), ask({ n: 2 }));
    expect(charged).toBe(withoutUsage.charged);
  });
});
