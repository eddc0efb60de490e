// Secrets of every shape the redaction knows stay out of logs, errors and config problems: every key in a text, a key without its prefix, a secret beside a served or requested model name, providers' keys at their real lengths.
import { describe, expect, it } from "vitest";
import { generateKey, KEY_PREFIX } from "../../api-shim/src/auth/keys.ts";
import { problem } from "../../api-shim/src/config-file.ts";
import { ShimError } from "../../api-shim/src/errors.ts";
import { holdsKey, loggedModel, redactKeys, redactKeysAsMade, redactUpstreamSecrets } from "../../api-shim/src/observability/redaction.ts";
import { upstreamStatusError } from "../../api-shim/src/upstream/upstream-errors.ts";

const same = (text: string) => text;
const bare = (key: string) => key.slice(KEY_PREFIX.length);
const secretOf = (key: string) => key.slice(-32);

describe("our keys", () => {
  it("every key in a text is redacted, not just the first (an error message quoting two)", () => {
    const a = generateKey().key;
    const b = generateKey().key;
    const text = `keys ${a} and ${b} were sent`;
    expect(redactKeys(text)).toBe("keys sk-gs-[redacted] and sk-gs-[redacted] were sent");
    const e = new ShimError("invalid_request", { message: text });
    expect(e.message).not.toContain(secretOf(b));
  });

  it("a key without its prefix and nothing else (a bootstrap key pasted into SHIM_CONFIG's id field) is a key", () => {
    const { key } = generateKey();
    expect(holdsKey(bare(key))).toBe(true);
    expect(redactKeysAsMade(bare(key))).toBe("[redacted]");
  });

  it("a key without its prefix in SHIM_CONFIG's path or in what is expected (a mapping key, a tier's name) is hidden in the problem", () => {
    const { key } = generateKey();
    const said = problem(`tiers.${bare(key)}.rpm`, -1, `a tier named ${bare(key)} or free`);
    expect(said).not.toContain(secretOf(key));
  });

  it("a name of 12 characters, `_` and a 32-hex-digit hash is no key (not called one in SHIM_CONFIG's problems)", () => {
    expect(holdsKey("qwen25coder7_0123456789abcdef0123456789abcdef")).toBe(false);
  });

  it("a secret beside a served name is not taken for part of it, whichever side the name is on", () => {
    const served = new Map([["meta-llama/Llama-3.1-8B-Instruct", {}]]);
    const secret = "Q7xk2LmP9vRt4WbZ8nYc3HdF6gJs1KaE";
    for (const model of [`${secret}:meta-llama/Llama-3.1-8B-Instruct`, `meta-llama/Llama-3.1-8B-Instruct:${secret}`])
      expect.soft(loggedModel(model, same, served), model).not.toContain(secret);
  });
});

describe("providers' secrets in an upstream's message", () => {
  it("hides a URL's fragment as its query (an OAuth callback's #access_token… or any token there)", () => {
    expect(redactUpstreamSecrets("callback failed: https://h.example/cb#Zq3kLm9pXw7Rt2Vb")).not.toContain("Zq3kLm9p");
  });

  it("hides a Basic credential of lowercase letters and digits (base64 may be)", () => {
    expect(redactUpstreamSecrets("upstream refused basic 3q2mzw9k1x7pa0b4 for this route")).not.toContain("3q2mzw9k");
  });

  it("hides a LiteLLM virtual key (`sk-` + token_urlsafe(16): 22 characters)", () => {
    const litellmKey = "sk-Ab3dEf6hIj9kLm2nOp5qRs";
    expect(litellmKey.length).toBe(25);
    expect(redactUpstreamSecrets(`Authentication Error, Invalid proxy server token passed. Received ${litellmKey}`)).not.toContain("Ab3dEf6h");
  });

  it("hides a Google API key at its real length (AIza + 35 = 39 characters)", () => {
    const googleKey = "AIzaSy" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8".slice(0, 33);
    expect(googleKey.length).toBe(39);
    expect(redactUpstreamSecrets(`API key ${googleKey} not valid. Please pass a valid API key.`)).not.toContain(googleKey.slice(4, 16));
  });

  it("a secret glued to the request's model name is still hidden: only what lies within the name is the client's", () => {
    const body = JSON.stringify({ error: { message: "azure_api_key=0123456789abcdef0123456789abcdef is invalid", code: 400 } });
    expect(upstreamStatusError(400, body, "azure", undefined, same).message).not.toContain("0123456789abcdef");
  });
});
