// An upstream's 400 message relayed to a client shows nothing of the deployment's insides: found by
// review. LiteLLM passes its provider's (vLLM's) 400 text on as it is: httpx's and aiohttp's errors
// name the compose network's hosts, ports and addresses, a traceback the image's paths.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isInternalHost } from "../../api-shim/src/internal-hosts.ts";
import { hideInternalDetails } from "../../api-shim/src/upstream/internal-details.ts";
import { upstreamErrorBody, upstreamStatusError } from "../../api-shim/src/upstream/upstream-errors.ts";
import { secretRedactor } from "../../api-shim/src/observability/redaction.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";
import { answeringUpstream } from "../support/shim-process.ts";

const MODEL = "qwen2.5-7b";
const hide = secretRedactor(["lm-master-Q7mX2pL9vR4tY8wK3nB6"]);
/** LiteLLM's frame around its provider's message (its proxy's 400 body says `"code": "400"`). */
const litellm = (inner: string) => `litellm.BadRequestError: Hosted_vllmException - ${inner}. Received Model Group=${MODEL}\nAvailable Model Group Fallbacks=None`;
const body = (message: string) => JSON.stringify({ error: { message, type: "None", param: null, code: "400" } });

/** Each message as LiteLLM relays it, what the client must not see, and what it is shown. */
const CASES = {
  // httpx's HTTPStatusError (LiteLLM issues #6812, #15799, #24902), for LiteLLM's call to vLLM.
  "httpx's error naming vLLM's URL": {
    message: litellm("Client error '400 Bad Request' for url 'http://vllm:8000/v1/chat/completions'\nFor more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/400"),
    internal: ["vllm:8000", "/v1/chat/completions"],
    shown: "Client error '400 Bad Request' for url '[internal address]'\nFor more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/400",
  },
  // aiohttp's ClientConnectorError: "Cannot connect to host {host}:{port} ssl:{ssl} [{os_error}]".
  "aiohttp's connection error": {
    message: litellm("Cannot connect to host litellm:4000 ssl:default [Connect call failed ('10.89.0.3', 4000)]"),
    internal: ["litellm:4000", "10.89.0.3"],
    shown: "Cannot connect to host [internal address] ssl:default [Connect call failed ('[internal address]', 4000)]",
  },
  // A traceback in the message (LiteLLM #30948's shape): the client's part comes before it.
  "a Python traceback": {
    message: litellm('Invalid tool schema\nTraceback (most recent call last):\n  File "/usr/lib/python3.13/site-packages/litellm/main.py", line 620, in acompletion\n    response = await init_response'),
    internal: ["Traceback", "site-packages", "main.py"],
    shown: "Invalid tool schema",
  },
  // The local snapshot behind the model's alias.
  "the model's local path": {
    message: "Can't load tokenizer for '/root/.cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/a09a354/'.",
    internal: ["/root/", "Qwen2.5-7B-Instruct"],
    shown: "Can't load tokenizer for '[path]'.",
  },
};

describe("the deployment's internals in an upstream's 400", () => {
  it("are hidden from the message the client gets, answered or streamed, the rest of it kept", () => {
    for (const [name, c] of Object.entries(CASES)) {
      const answered = upstreamStatusError(400, body(c.message), MODEL, undefined, hide).message;
      const streamed = upstreamErrorBody(body(c.message), MODEL, hide).message;
      expect.soft([answered, streamed], name).toEqual([c.shown, c.shown]);
      for (const s of c.internal) expect.soft(answered, name).not.toContain(s);
    }
  });

  it("a message that was only a traceback is told as the shim's own invalid request", () => {
    const e = upstreamStatusError(400, body('Traceback (most recent call last):\n  File "/app/x.py", line 1'), MODEL, undefined, hide);
    expect([e.status, e.message]).toEqual([400, "Invalid request."]);
  });

  it("tells internal hosts from public ones by shape", () => {
    for (const host of ["vllm", "localhost", "127.0.0.1", "10.89.0.3", "172.20.1.1", "192.168.1.10", "169.254.169.254", "[::1]", "[fd00::5]", "[fe80::1]", "db.internal", "vllm.default.svc.cluster.local", "nas.local", "localhost.", "0.0.0.0", "[::]", "[::ffff:7f00:1]"])
      expect.soft(isInternalHost(host), host).toBe(true);
    for (const host of ["api.openai.com", "8.8.8.8", "172.32.0.1", "generativelanguage.googleapis.com", "[2001:db8::1]"])
      expect.soft(isInternalHost(host), host).toBe(false);
  });

  it("leaves public URLs, API routes, numbers, Ollama-style model tags and the request's own model as they were said", () => {
    const readable = [
      "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (1000 in the messages, 4000 in the completion).",
      "See https://docs.vllm.ai/en/latest/features/tool_calling.html for the supported parsers.",
      "Use /v1/completions for a prompt, not /v1/chat/completions.",
      "temperature must be between 0 and 2, got 3.5 at 10:30 UTC",
      "model 'llama3:70b' was not found, try pulling it first",
      "invalid value 'max_tokens': 4096",
    ];
    for (const text of readable) expect.soft(hideInternalDetails(text), text).toBe(text);
    expect(hideInternalDetails("model 'vllm:8000' is not a chat model", "vllm:8000")).toBe("model 'vllm:8000' is not a chat model");
    expect(hideInternalDetails("model 'vllm:8000' is not a chat model")).toBe("model '[internal address]' is not a chat model");
  });

  it("hides an address before a sentence's full stop, a file URL, and a service named with its Docker network, keeping the stop (found by review)", () => {
    expect(hideInternalDetails("Cannot connect to host litellm:4000. Connection refused by 10.89.0.3.")).toBe("Cannot connect to host [internal address]. Connection refused by [internal address].");
    expect(hideInternalDetails("Cannot load file:///root/.cache/huggingface/x.bin; try again.")).toBe("Cannot load [internal address]; try again.");
    expect(hideInternalDetails("no answer from vllm.gpu-sandbox_backend:8000 or http://vllm:8000/v1/models.")).toBe("no answer from [internal address] or [internal address].");
  });

  it("leaves a word and a number that are no host, JSON pointers and a public URL's path alone (found by review)", () => {
    const readable = [
      "Invalid stop 'user:1234'", "upstream said error:404", "context:4096 exceeded", "key:10 is not allowed",
      "/data/items/0 must be a number", "see https://example.com/data/models/x.png and https://example.com/models/y.",
    ];
    for (const text of readable) expect.soft(hideInternalDetails(text), text).toBe(text);
  });

  it("hides every internal form: IPv6, credentials before the host, a cloud's metadata address, a bare private address with its port", () => {
    expect(hideInternalDetails("fetch of http://[fd00::5]:8000/x failed; http://user@10.0.0.2/y too; http://169.254.169.254/latest/meta-data/ refused; 192.168.0.7:5432 closed."))
      .toBe("fetch of [internal address] failed; [internal address] too; [internal address] refused; [internal address] closed.");
  });
});

describe("the deployment's internals outside a traceback and on short ports (found by a mutation review)", () => {
  it("hides a path under /app (LiteLLM's and the shim's images keep their code there) and a service on a two- or three-digit port", () => {
    expect(hideInternalDetails('Bad schema in "/app/litellm/proxy/proxy_server.py", line 3: tools[0] is not an object'))
      .toBe('Bad schema in "[path]", line 3: tools[0] is not an object');
    expect(hideInternalDetails("Cannot connect to host nginx:80 ssl:default")).toBe("Cannot connect to host [internal address] ssl:default");
    expect(hideInternalDetails("Cannot connect to host certbot:443 ssl:default")).toBe("Cannot connect to host [internal address] ssl:default");
  });
});

describe("through the shim, to the openai SDK", () => {
  let upstream: Awaited<ReturnType<typeof answeringUpstream>>;
  let h: Harness;
  let client: OpenAI;
  beforeAll(async () => {
    upstream = await answeringUpstream();
    h = await startShim({ env: { SHIM_UPSTREAM_URL: upstream.url } });
    client = h.client((await h.createKey()).key);
  });
  afterAll(async () => {
    await h.close();
    await upstream.close();
  });

  it("a tenant's BadRequestError quotes the provider's reason without the deployment's addresses", async () => {
    upstream.answer = { status: 400, body: body(CASES["aiohttp's connection error"].message) };
    const e = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }] }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(OpenAI.BadRequestError);
    expect((e as InstanceType<typeof OpenAI.BadRequestError>).message).toBe(`400 ${CASES["aiohttp's connection error"].shown}`);
  });
});
