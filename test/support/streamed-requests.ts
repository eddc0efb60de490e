import type OpenAI from "openai";

/** The routes a stream refusal applies to (stream-silences tests). */
export type StreamRoute = "chat" | "completions" | "responses";

/**
 * A streamed request to `route` through the SDK, with `extra` members beside the route's own
 * (the model vLLM serves in the test harness, a one-word prompt): settles to the error it threw, or null.
 */
export function streamedRequestError(client: OpenAI, route: StreamRoute, extra: Record<string, unknown>): Promise<unknown> {
  const request = route === "chat"
    ? client.chat.completions.create({ model: "qwen2.5-7b", messages: [{ role: "user", content: "hi" }], stream: true, ...extra } as never)
    : route === "completions"
      ? client.completions.create({ model: "qwen2.5-7b", prompt: "hi", stream: true, ...extra } as never)
      : client.responses.create({ model: "qwen2.5-7b", input: "hi", stream: true, ...extra } as never);
  return request.then(() => null, (e: unknown) => e);
}
