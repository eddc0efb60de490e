// How an upstream's status and message become the client's error: LiteLLM's repeated frame dropped, a redirect is the upstream's failure.
import { describe, expect, it } from "vitest";
import { upstreamStatusError } from "../../api-shim/src/upstream/upstream-errors.ts";

const same = (text: string) => text;
const body = (message: string) => JSON.stringify({ error: { message, type: "BadRequestError", param: null, code: "400" } });

describe("LiteLLM's frame around an upstream's 400", () => {
  it("is dropped when its exception class comes twice (`litellm.BadRequestError: litellm.BadRequestError: …`)", () => {
    const e = upstreamStatusError(400, body("litellm.BadRequestError: litellm.BadRequestError: Hosted_vllmException - max_tokens must be at least 1, got 0."), "m", undefined, same);
    expect(e.status).toBe(400);
    expect(e.message).toBe("max_tokens must be at least 1, got 0.");
  });
});

describe("an upstream status that is no refusal of the request", () => {
  it("a redirect (undici follows none: SHIM_UPSTREAM_URL pointing at a moved route, http to https) is the upstream's failure, 502, not the client's 400", () => {
    for (const status of [301, 302, 307, 308]) expect.soft(upstreamStatusError(status, "", "m", undefined, same).status, String(status)).toBe(502);
  });
});
