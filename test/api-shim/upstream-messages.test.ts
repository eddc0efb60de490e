import { describe, expect, it } from "vitest";
import { upstreamErrorBody, upstreamStatusError } from "../../api-shim/src/upstream/upstream-errors.ts";
import { redactUpstreamSecrets, secretRedactor, type SecretHider } from "../../api-shim/src/observability/redaction.ts";

// An upstream's 400/422 message reaches the client (at most 500 characters) without secrets in it:
// the reviewer's cases of shapes that got through, of legitimate text that did not, and of
// messages that blocked the event loop for seconds.
const body = (message: string) => JSON.stringify({ error: { message, type: "BadRequestError", code: 400 } });
const noSecrets: SecretHider = (text) => text;
const shown = (message: string, model = "m", hideSecrets = noSecrets) => upstreamStatusError(400, body(message), model, undefined, hideSecrets).message;

describe("secrets in an upstream's message", () => {
  it("hides a URL-encoded URL's query and a key after an encoded `=` or space", () => {
    expect(redactUpstreamSecrets("redirect=https%3A%2F%2Fx%2Fv1%3Fkey%3DAIzaSyA1234567890abcdefghijklmnopqrstu")).not.toContain("AIzaSyA123");
    for (const s of ["Bearer%20sk-proj-Abc123def456GHI789jkl012", "key%3Dsk-proj-Abc123def456GHI789jkl012", "x%253Dsk-proj-Abc123def456GHI789jkl012"])
      expect(shown(`bad value ${s}, retry`), s).not.toContain("Abc123");
  });

  it("hides an Azure key, an AWS access key, a name=value secret, a lowercase bearer, a Basic credential and a Hugging Face token", () => {
    for (const s of ["api-key: 0123456789abcdef0123456789abcdef", "AKIAIOSFODNN7EXAMPLE", "api_key=supersecretvalue123456",
      "authorization: bearer abcdefghijklmnop", "Authorization: Basic dXNlcjpzdXBlcnNlY3JldA==", "Authorization: Bearer\tabcdefghijklmnop",
      "token=abcdef123456", "secret: hunter2hunter2", "password=correct-horse", `{"api_key":"supersecretvalue123456"}`, `{'api_key': 'supersecretvalue'}`,
      "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567"])
      expect.soft(redactUpstreamSecrets(s), s).not.toBe(s);
    expect(shown("Invalid header api-key: 0123456789abcdef0123456789abcdef.")).toBe("Invalid header api-key: [redacted].");
    expect(shown("credentials AKIAIOSFODNN7EXAMPLE rejected")).toBe("credentials AKIA[redacted] rejected");
    expect(shown(`bad config {"api_key": "supersecretvalue123456", "n": 1}`)).toBe(`bad config {"api_key": "[redacted]", "n": 1}`);
    // Redacting twice changes nothing.
    const once = redactUpstreamSecrets("key sk-proj-Abc123def456GHI789jkl012 at https://user:pw@h/x?key=1, token=abcdefgh12.");
    expect(once).toBe("key sk-[redacted] at https://h/x?…, token=[redacted].");
    expect(redactUpstreamSecrets(once)).toBe(once);
  });

  it("hides a credential after a lone scheme and a tab, one of 8 characters, a Hugging Face token of 30 and a passwd", () => {
    expect(redactUpstreamSecrets("upstream got Bearer\tabcdefghijklmnop")).toBe("upstream got Bearer\t[redacted]");
    expect(redactUpstreamSecrets("upstream got Bearer abcd1234")).toBe("upstream got Bearer [redacted]");
    expect(redactUpstreamSecrets(`token hf_${"a1".repeat(15)} refused`)).toBe("token hf_[redacted] refused");
    expect(redactUpstreamSecrets("connect failed: passwd=hunter2hunter2")).toBe("connect failed: passwd=[redacted]");
    // A named value of 8 characters is the shortest hidden, quoted or not, with the sentence's punctuation after it or not.
    expect(redactUpstreamSecrets("token=abcd1234 refused")).toBe("token=[redacted] refused");
    expect(redactUpstreamSecrets("token=abcd1234, refused")).toBe("token=[redacted], refused");
    expect(redactUpstreamSecrets(`{"password": "abcd 123"}`)).toBe(`{"password": "[redacted]"}`);
    expect(redactUpstreamSecrets("token=abcd123 is short")).toBe("token=abcd123 is short");
  });

  it("hides a URL's credentials up to the last `@` before the host, and the query of a URL glued to a word", () => {
    expect(redactUpstreamSecrets("https://user:p@ss-w0rd@host/v1")).not.toContain("ss-w0rd");
    expect(redactUpstreamSecrets("https://user:p@ss-w0rd@host/v1")).toBe("https://host/v1");
    expect(redactUpstreamSecrets("token_https://h/v1?access_token=abcdefgh12345678")).toBe("token_https://h/v1?…");
  });

  it("leaves model names, paths and vLLM's messages as they were said", () => {
    expect(redactUpstreamSecrets("model 'xai-grok-3-mini-fast' does not support tools")).toContain("xai-grok-3-mini-fast");
    // A file path is no key (the client is not shown it at all: internal-details.ts).
    expect(redactUpstreamSecrets("/models/sk-learn-classifier-weights/config.json not found")).toBe("/models/sk-learn-classifier-weights/config.json not found");
    const readable = [
      "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (1000 in the messages, 4000 in the completion).",
      "max_tokens must be at least 1, got -1.",
      "see task-abcdefghijklmnopqrstuvwxyz, desk-ABCDEFGHIJ0123456789xyz and risk-free-ABCDEFGHIJ0123456789xyz",
      "a basic configuration works; the bearer of bad news",
    ];
    for (const text of readable) expect(shown(text), text).toBe(text);
  });

  it("never hides the model the request named", () => {
    const model = "sk-ft-MyTeam2024-classifier-v2";
    expect(redactUpstreamSecrets(`model '${model}' is not a chat model`)).toContain("sk-[redacted]");
    expect(shown(`model '${model}' is not a chat model`, model)).toBe(`model '${model}' is not a chat model`);
    // Only where it is the model: a key elsewhere in the same message is still hidden.
    expect(shown(`model '${model}' with key sk-proj-Abc123def456GHI789jkl012`, model)).toBe(`model '${model}' with key sk-[redacted]`);
  });
});

describe("secrets in an upstream's message, review round 3", () => {
  const K = "sk-proj-Abcdefghij1234567890XYZabc";
  it("a named value holding a provider key is redacted once, without a doubled bracket", () => {
    expect(shown(`Invalid api_key=${K}.`)).toBe("Invalid api_key=[redacted].");
    expect(shown(`Invalid api_key=${K} given`)).toBe("Invalid api_key=[redacted] given");
    expect(shown(`"api_key": "${K}"`)).toBe(`"api_key": "[redacted]"`);
  });

  it("hides secrets named in the usual environment/config spellings, and any Authorization scheme's credential", () => {
    for (const [name, value] of [
      ["aws_secret_access_key=", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
      ["AWS_SECRET_ACCESS_KEY: ", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
      ["secret_key=", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
      ["aws_session_token=", "FwoGZXIvYXdzEJrEXAMPLETOKENvalue0123456789"],
      ["AZURE_API_KEY=", "0123456789abcdef0123456789abcdef"],
      ["OPENAI_API_KEY=", "0123456789abcdef0123456789abcdef"],
      ["MY_APP_CLIENT_SECRET=", "0123456789abcdef"],
    ]) expect(shown(`bad credentials: ${name}${value}, check`), name).toBe(`bad credentials: ${name}[redacted], check`);
    for (const scheme of ["Token", "Negotiate", "Bearer"]) {
      const once = shown(`Invalid header Authorization: ${scheme} 0123456789abcdef0123456789abcdef`);
      expect(once).toBe(`Invalid header Authorization: ${scheme} [redacted]`);
      expect(redactUpstreamSecrets(once), scheme).toBe(once);
    }
  });

  it("an AWS key id is not shown because the message also held an encoded URL", () => {
    expect(shown("AKIAIOSFODNN7EXAMPLE%41 from https%3A%2F%2Fapi.example.com%2Fp%3Fkey%3Dzz")).toBe("AKIA[redacted]A from https://api.example.com/p?…");
  });

  it("an encoded space or a quoted space does not end a named value and leave the rest of it shown", () => {
    expect(shown("bad: password=correct%20horse%20battery%20staple end")).toBe("bad: password=[redacted] end");
    expect(shown("bad: 'password': 'correct horse battery staple'")).toBe("bad: 'password': '[redacted]'");
    expect(shown(`bad: {"api_key": "abcd efgh ijkl", "n": 1}`)).toBe(`bad: {"api_key": "[redacted]", "n": 1}`);
  });

  it("leaves ordinary validation prose and a quoted JSON schema readable", () => {
    for (const text of [
      "password: must be at least 8 characters.",
      "Invalid JSON schema: {'type': 'object', 'properties': {'password': {'type': 'string', 'minLength': 8}, 'token': {'type': 'integer'}}}",
      `{"secret": "uuid"} is not valid`,
      "pad_token: '<|endoftext|>' is not in the vocabulary",
    ]) expect(shown(text), text).toBe(text);
  });
});

// Found by review: an upstream's refusal may quote the credential the shim sent it
// (SHIM_UPSTREAM_API_KEY), which no shape gives away: a bare 48-character key, or a LiteLLM master
// key with punctuation that ends a `Bearer` credential's shape early.
describe("the deployment's own secrets in an upstream's message", () => {
  const keys = ["Q7mX2pL9vR4tY8wK3nB6cF1hJ5dS0aZeUoIiPqWx4Rt9Yu3Io7", "lm-master-2024!Winter!Prod!Key"];
  const token = "admin-T0ken!with:punctuation";

  it("are hidden wherever they are quoted, answered or streamed, as sent or percent-encoded", () => {
    for (const key of keys) {
      const hide = secretRedactor([token, key]);
      for (const message of [`Invalid API key: ${key}`, `Authorization header 'Bearer ${key}' rejected`, `litellm.AuthenticationError: OpenAIException - bad key %${key.charCodeAt(0).toString(16)}${key.slice(1)}%20given`, `token ${token} is not ours`]) {
        const streamed = upstreamErrorBody(body(message), "m", hide).message;
        for (const said of [shown(message, "m", hide), streamed]) {
          expect(said, message).toContain("[redacted]");
          for (const secret of [key, token]) expect(said, message).not.toContain(secret.slice(-8));
        }
      }
    }
    expect(shown(`Invalid API key: ${keys[0]}.`, "m", secretRedactor([null, keys[0]!]))).toBe("Invalid API key: [redacted].");
  });

  it("are hidden before the message is cut, so none is left half shown", () => {
    // An admin token may be a passphrase: the part of the message looked at may end within it, after a space.
    const passphrase = "correct horse battery staple 42";
    const hide = secretRedactor([passphrase, keys[1]!]);
    // Redacting the query before them shrinks the message: they come within the 500 characters shown.
    for (let pad = 4020; pad < 4100; pad += 3) {
      const said = shown(`${"https://h/?" + "q".repeat(pad)} ${keys[1]} ${passphrase} rejected`, "m", hide);
      expect(said.length).toBeLessThanOrEqual(500);
      expect(said, String(pad)).not.toMatch(/lm-master|Winter|correct|horse/);
    }
  });

  it("are hidden even when the request's model names them", () => {
    const key = keys[0]!;
    expect(shown(`model '${key}' does not exist`, key, secretRedactor([null, key]))).toBe("model '[redacted]' does not exist");
  });
});

// Found by hand mutation: each of these could be undone with every test still passing.
describe("secrets in an upstream's message: the edges", () => {
  it("a configured secret quoted twice is hidden both times, and one of exactly 8 characters too", () => {
    const hide = secretRedactor(["upstream-master-key-123"]);
    expect(redactUpstreamSecrets("key upstream-master-key-123 rejected (upstream-master-key-123)", "", hide)).not.toContain("upstream-master-key-123");
    expect(secretRedactor(["Zq8#pL2!"])("token was Zq8#pL2! here")).not.toContain("Zq8#pL2!");
  });

  it("HTTP Basic credentials without an Authorization label, and an AWS temporary key id (ASIA…), are hidden", () => {
    expect(redactUpstreamSecrets("proxy said: Basic dXNlcjpwYXNzd29yZDEyMw== was refused")).not.toContain("dXNlcjpwYXNzd29yZDEyMw");
    expect(redactUpstreamSecrets("bedrock: invalid ASIAQWERTYUIOPASDFGH for role")).not.toContain("ASIAQWERTYUIOPASDFGH");
  });
});

describe("cost of an upstream's message", () => {
  // This thread's CPU time, not the wall clock: on a loaded machine the thread is descheduled for
  // tens of milliseconds at a time, which is no cost of the code (a super-linear regex costs seconds of CPU).
  const took = (message: string) => {
    const start = process.threadCpuUsage();
    const answered = upstreamStatusError(400, body(message), "m", undefined, noSecrets).message;
    upstreamErrorBody(body(message), "m", noSecrets);
    const used = process.threadCpuUsage(start);
    return { ms: (used.user + used.system) / 1000, answered };
  };

  it("a message of 64 KiB that quotes a client's text takes milliseconds, not seconds", () => {
    const shapes = [
      "Invalid value: 'https://a/?" + ".".repeat(60_000) + "x'.",
      "a://".repeat(16_000),
      "a://x" + "@".repeat(60_000),
      "sk-a ".repeat(13_000),
      "%3F".repeat(21_000),
      "%253F".repeat(13_000),
      "Bearer ".repeat(9_000),
      "api_key=".repeat(8_000),
      "api_key='" + "a".repeat(60_000),
      "AWS_".repeat(16_000),
      "a_".repeat(32_000) + "key=",
      "AIza".repeat(16_000),
      "a".repeat(60_000) + "://",
      "https://a/?" + ")".repeat(60_000),
    ];
    took(shapes[0]!); // warm up
    for (const shape of shapes) expect(took(shape).ms, shape.slice(0, 20)).toBeLessThan(100);
  });

  it("a secret past the part of the message looked at is not shown half", () => {
    // Redactions may shorten what comes first, so a secret far into the message could come within the 500 characters shown.
    const key = "sk-proj-Abc123def456GHI789jkl012mno345PQR678";
    for (let pad = 3900; pad < 4200; pad += 7) {
      const message = `${"https://h/?" + "q".repeat(pad)} ${key}`;
      const answered = shown(message);
      expect(answered.length).toBeLessThanOrEqual(500);
      expect(answered, String(pad)).not.toMatch(/sk-proj|Abc1/);
    }
  });
});

describe("a dead engine's 400", () => {
  const engineDead = "EngineCore encountered an issue. See stack trace (above) for the root cause.";
  it("is the upstream's failure (502 upstream_error, its message not shown), from vLLM or framed by LiteLLM, with or without vLLM's body quoted: a client told 400 would not retry", () => {
    for (const message of [engineDead, `litellm.BadRequestError: Hosted_vllmException - ${engineDead}`, `litellm.BadRequestError: Hosted_vllmException - ${body(engineDead)}. Received Model Group=qwen\nAvailable Model Group Fallbacks=None`]) {
      const e = upstreamStatusError(400, body(message), "m", undefined, noSecrets);
      expect(e.code, message).toBe("upstream_error");
      expect(e.message, message).not.toMatch(/EngineCore/);
    }
    expect(upstreamErrorBody(`{"error": {"message": "${engineDead}", "type": "BadRequestError", "param": null, "code": 400}}`, "m", noSecrets).code).toBe("upstream_error");
  });

  it("only when vLLM's message starts so: a request's own 400 that quotes those words is still the client's", () => {
    const quoting = `1 validation error: max_tokens Input should be a valid integer [input_value='${engineDead}']`;
    expect(upstreamStatusError(400, body(quoting), "m", undefined, noSecrets)).toMatchObject({ code: "invalid_request", message: quoting });
  });
});

describe("LiteLLM's SSE error body (a stream refused at its first chunk)", () => {
  it("keeps the provider's message whether or not the body ends its event with a blank line", () => {
    const event = `data: ${JSON.stringify({ error: { message: "litellm.BadRequestError: AnthropicException - prompt is too long", type: "None", param: "None", code: "400" } })}`;
    for (const text of [`${event}\n\n`, event]) expect(upstreamStatusError(400, text, "m", undefined, noSecrets).message, JSON.stringify(text.slice(-3))).toBe("prompt is too long");
  });
});
