// A chat that names media by a URL into the deployment's own network is refused before anything
// is held or forwarded: vLLM (a multimodal model) and LiteLLM (a provider taking media inline)
// fetch such URLs themselves, from inside the compose network (vLLM issue #57157, CVE-2025-6242).
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ShimError } from "../../api-shim/src/errors.ts";
import { parseInferenceRequest } from "../../api-shim/src/requests/inference-request.ts";
import { type Harness, startShim } from "../support/shim-harness.ts";

const chat = (part: unknown) => ({ model: "m", messages: [{ role: "system", content: "be brief" }, { role: "user", content: [{ type: "text", text: "what is this?" }, part] }] });
const refusal = (body: unknown, kind: "chat" | "embeddings" = "chat") => {
  try {
    parseInferenceRequest(kind, body);
    return undefined;
  } catch (e) {
    return e as ShimError;
  }
};

describe("media URLs in a chat", () => {
  it("are refused when they point inside the deployment: its services, private and link-local addresses, however written, and the server's files", () => {
    const inside = [
      { type: "image_url", image_url: { url: "http://vllm:8000/metrics" } },
      { type: "image_url", image_url: { url: "http://169.254.169.254/latest/meta-data/" } },
      { type: "image_url", image_url: { url: "http://0x7f.1:8081/ready" } }, // 127.0.0.1, as a URL parser reads it
      { type: "image_url", image_url: { url: "https://[::1]/x.png" } },
      { type: "image_url", image_url: { url: "http://2130706433/x.png" } },
      { type: "video_url", video_url: { url: "http://10.89.0.3:8080/admin/keys" } },
      { type: "audio_url", audio_url: { url: "http://litellm:4000/health" } },
      { image_url: "http://shim:8080/metrics" }, // vLLM's untyped part: the URL itself
      { type: "file", file: { file_id: "http://192.168.1.20/report.pdf" } },
      { type: "image_url", image_url: { url: "file:///etc/passwd" } },
      { type: "image_url", image_url: { url: "http://db.internal/x.png" } },
      // Found by review: what vLLM's urllib3 reads as its own network where a cut or a stricter parser saw none.
      { type: "image_url", image_url: { url: `http://${"x.".repeat(2100)}x@127.0.0.1:8000/metrics` } }, // the host after a long userinfo
      { type: "image_url", image_url: { url: "http://[::1%25lo]:8000/metrics" } }, // an IPv6 zone: unreadable here
      { type: "image_url", image_url: { url: "http://vllm.gpu-sandbox_backend:8000/metrics" } }, // Docker's DNS: <container>.<network>
      { type: "image_url", image_url: { url: "\u0001http://127.0.0.1/x.png" } }, // leading control characters are skipped by URL parsers
      { type: "input_image", image_url: "http://10.0.0.9/x.png" }, // the Responses API's part: the URL itself
      // Found by the hostile-tenant review: a backslash before the path ends the host for a URL
      // parser (example.com) and is userinfo for aiohttp's yarl, which vLLM fetches media with,
      // and for Python's urllib (127.0.0.1, vllm:8000, the metadata service).
      { type: "image_url", image_url: { url: "http://example.com\\@127.0.0.1:8000/metrics" } },
      { type: "image_url", image_url: { url: "http://example.com:80\\@169.254.169.254/latest/meta-data/" } },
      { type: "input_image", image_url: "https://example.com\\@vllm:8000/metrics" },
      { type: "image_url", image_url: { url: "\u0001http:/\t/example.com\\@10.0.0.1/x.png" } }, // a tab and leading control characters, dropped by both
      // Found by a review: a tab or line break inside the scheme, which a URL parser and Python's
      // urlsplit (vLLM's check of the scheme, then yarl) drop, so `ht<TAB>tp:` is http to them,
      // however many there are; it passed here as no URL at all.
      { type: "image_url", image_url: { url: "ht\ttp://127.0.0.1:8000/metrics" } },
      { type: "image_url", image_url: { url: "h\nt\rt\tp\t://169.254.169.254/latest/meta-data/" } },
      { type: "input_image", image_url: `\u0001h${"\t".repeat(100)}ttps://vllm:8000/metrics` },
      { type: "image_url", image_url: { url: "fi\tle:///etc/passwd" } },
    ];
    for (const part of inside) {
      const e = refusal(chat(part));
      expect.soft(e, JSON.stringify(part)).toBeInstanceOf(ShimError);
      expect.soft(e && [e.status, e.code, e.param], JSON.stringify(part)).toEqual([400, "invalid_request", "messages"]);
    }
    expect(refusal(chat(inside[0]))!.message).toBe("Media URLs must be public: the image_url in messages[1] names 'vllm', which is inside this deployment. Send the media from a public URL or inline (a data: URL).");
    expect(refusal(chat(inside[9]))!.message).toContain("names a file on the server");
    expect(refusal(chat(inside[12]))!.message).toContain("cannot be read as a URL");
    expect(refusal(chat(inside[16]))!.message).toBe("Media URLs must be public: the image_url in messages[1] has a backslash before its path, which the servers behind read as part of its host. Send the media from a public URL or inline (a data: URL).");
    // vLLM's chat-style embeddings render messages too, media included.
    expect(refusal({ model: "m", messages: chat(inside[1]).messages }, "embeddings")).toBeInstanceOf(ShimError);
  });

  it("pass when public or inline, and a URL in a message's text is no media", () => {
    const fine = [
      { type: "image_url", image_url: { url: "https://upload.wikimedia.org/wikipedia/commons/a/a9/Example.jpg" } },
      { type: "image_url", image_url: { url: "http://8.8.8.8/x.png" } },
      { type: "image_url", image_url: { url: `data:image/png;base64,${"A".repeat(10_000)}` } },
      { type: "input_audio", input_audio: { data: "UklGRg==", format: "wav" } },
      { type: "file", file: { file_id: "file-abc123" } },
      { type: "file", file: { file_id: "gs://my-bucket/report.pdf" } }, // a provider's storage, fetched by the provider
      { type: "image_url", image_url: { url: `https://cdn.example.com/x.png?sig=${"a".repeat(3000)}` } }, // a signed URL of a few KiB
      { type: "image_url", image_url: { url: "not a url" } }, // the server's to refuse
      { type: "image_url", image_url: { url: `data:image/png;base64,\n${"A".repeat(76)}\n${"A".repeat(76)}` } }, // base64 in lines: no scheme but data
      { type: "image_url", image_url: { url: "https://cdn.example.com/scans\\2024\\x.png" } }, // a backslash in the path is no host
      { type: "image_url", image_url: { url: "https://cdn.example.com?name=a\\b.png" } }, // nor one in a query right after the host
      { type: "image_url", image_url: { url: "https://cdn.example.com#page\\2" } }, // nor in a fragment
      { type: "text", text: "fetch http://vllm:8000/metrics for me" },
    ];
    for (const part of fine) expect.soft(refusal(chat(part)), JSON.stringify(part)).toBeUndefined();
  });
});

describe("through the shim, to the openai SDK", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startShim();
  });
  afterAll(async () => h.close());

  it("a chat naming an internal media URL is a BadRequestError, never forwarded, nothing charged", async () => {
    const { key } = await h.createKey({ credits: 10 });
    const before = h.fake.counters.received;
    const e = await h.client(key).chat.completions.create({
      model: "qwen2.5-7b",
      messages: [{ role: "user", content: [{ type: "text", text: "describe" }, { type: "image_url", image_url: { url: "http://169.254.169.254/latest/meta-data/" } }] }],
    }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(OpenAI.BadRequestError);
    expect((e as InstanceType<typeof OpenAI.BadRequestError>).message).toContain("names '169.254.169.254', which is inside this deployment");
    expect(h.fake.counters.received).toBe(before);
    const res = await fetch(`${h.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    expect(res.headers.get("x-credits-remaining")).toBe("10");
  });
});
