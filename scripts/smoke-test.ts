// npm run smoke-test -- --url <endpoint, with or without /v1> [--key <key>] [--model <name>] [--ca <pem>] [--json]
// Checks an endpoint the way a client sees it, with the official OpenAI SDK: models, a chat, the
// credit headers, a streamed chat (time to first token, tokens/s), a streamed Responses API
// answer, and that a made-up key gets 401. Prints one PASS/FAIL line per check with its timing;
// exit 0 only if every check passed.
import OpenAI from "openai";
import { EXIT_CODES_USAGE, failedBeforeSending, formatDuration, type Io, networkReason, notTheApi, numberFlag, parseFlags, runScript, UsageError } from "./lib/cli.ts";
import { credentialStray, trimCredential } from "./lib/credential.ts";
import { type ScriptDeps, withDefaults } from "./lib/deps.ts";
import { EXIT } from "./lib/exit-codes.ts";
import { isRedirect, redirectAdvice } from "./lib/redirect.ts";
import { originOf, readCa, trustCa } from "./lib/tenant-target.ts";

export const API_KEY_ENV = "GPU_SANDBOX_API_KEY";

const USAGE = `Usage: npm run smoke-test -- --url <endpoint> [--key <key>] [--model <name>] [--ca <pem file>] [--json]

Runs six checks against any OpenAI-compatible endpoint and key, with the official OpenAI SDK:
  models          GET /models lists the model (the first one unless --model)
  chat            a short chat completion answers
  credit-headers  the answer carries x-credits-charged and x-credits-remaining
  stream          a streamed chat: time to first token and tokens/s
  responses       a streamed answer from OpenAI's Responses API (POST /responses)
  bad-key         a made-up key gets 401
One PASS/FAIL line per check with its timing; exit code 0 only if all pass (for CI, and right
after \`pulumi up\`); 3 if the endpoint was not reached at all (connection refused, DNS, a
certificate not trusted: every check failed so); 1 if a check ran and failed. An http:// --url for an https endpoint fails with the endpoint's 400
https_required (the key went over plain http: have it replaced). A redirect (a proxy of your own)
is not followed: the check fails with where it points. An answer that is not the API's (a web
page at a wrong --url) fails its check with its first characters.

  --url <url>            the endpoint, https://host or https://host/v1 (its base URL; not a
                         route under it)
  --key <key>            the API key; better: export ${API_KEY_ENV} (npm prints the command line,
                         --key included, and shell history keeps it)
  --model <name>         the model to use (default: the first one /models lists)
  --ca <pem file>        trust this CA (tls.mode self-signed: \`pulumi stack output caCertificate\`);
                         a relative path starts at the repository's root, where npm runs the script
  --timeout-seconds <n>  per request, a streamed answer to its end (1 to 3600; default 60)
  --json                 once the checks have run, one JSON object on stdout: {url, ok, passed,
                         failed, checks: [{name, ok, ms, detail}]}; the lines above go to
                         stderr then. A bad flag or no key: no JSON, exit 2, why on stderr

Examples:
  export ${API_KEY_ENV}="$(pulumi stack output apiKeys --show-secrets --stack acme | jq -r .app)"
  npm run smoke-test -- --url "$(pulumi stack output endpoint --stack acme)"
  npm run smoke-test -- --url https://llm.example.com/v1 --model qwen2.5-7b --ca ca.pem
  npm run --silent smoke-test -- --url "$ACME_URL" --json > smoke.json   # in CI: jq '.checks[] | select(.ok | not)' smoke.json

${EXIT_CODES_USAGE}`;

const OPTIONS = {
  url: { type: "string" },
  key: { type: "string" },
  model: { type: "string" },
  ca: { type: "string" },
  "timeout-seconds": { type: "string" },
  json: { type: "boolean" },
} as const;

export interface SmokeOptions {
  readonly url: string;
  readonly key: string;
  readonly model?: string | undefined;
  readonly timeoutMs: number;
}

export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly ms: number;
  /** What was seen (on success) or what went wrong (on failure). */
  readonly detail: string;
  /**
   * A failure that says nothing of the endpoint: its request was not sent (connection refused,
   * DNS, TLS; admin-client's classifier, failedBeforeSending), or it was not run for want of an
   * earlier check's answer. All failed so: exit 3, not reached.
   */
  readonly unreached?: boolean;
}

/** Thrown inside a check to fail it with a sentence rather than an exception's text. */
class CheckFailed extends Error {}

/** A check not run, for want of an earlier one's answer: it tells nothing of the endpoint. */
class NotRun extends CheckFailed {
  constructor(why: string) {
    super(`not run: ${why}`);
  }
}

/** Whether a check's error is a request that never reached the endpoint, or a check not run. */
const unreachedBy = (err: unknown): boolean =>
  err instanceof NotRun || (err instanceof OpenAI.APIConnectionError && !(err instanceof OpenAI.APIConnectionTimeoutError) && !(err.cause instanceof NotTheApi) && failedBeforeSending(err.cause ?? err));

/** A 2xx answer that is not the API's, refused by `apiAnswersOnly`; `detail` says what came instead. */
class NotTheApi extends Error {
  readonly detail: string;
  constructor(detail: string) {
    // A plain message: the SDK takes a failed fetch whose text says "timed out" for a timeout,
    // and a web page may well say so.
    super("the answer is not the API's");
    this.detail = detail;
  }
}

/**
 * fetch for the SDK, refusing a 2xx answer that is neither JSON nor an event stream (a web page at
 * a wrong --url): the SDK would take it as text, that is as an empty model list, and as a made-up
 * key accepted. The SDK reports the refusal as an APIConnectionError caused by NotTheApi.
 */
const apiAnswersOnly = (opts: SmokeOptions): typeof fetch => async (input, init) => {
  const res = await fetch(input, init);
  if (res.ok && !/^\s*(application\/([\w.-]+\+)?json|text\/event-stream)\s*(;|$)/i.test(res.headers.get("content-type") ?? "")) {
    const url = String(input).split("?")[0]!;
    const request = `${init?.method ?? "GET"} ${url.startsWith(opts.url) ? url.slice(opts.url.length) : url}`;
    throw new NotTheApi(notTheApi(request, res.status, "JSON", await res.text()));
  }
  return res;
};

/** An SDK client that never follows a redirect (scripts/lib/redirect.ts): a 3xx fails its check, saying where it points. */
const sdkClient = (opts: SmokeOptions, apiKey: string) =>
  new OpenAI({ baseURL: opts.url, apiKey, maxRetries: 0, timeout: opts.timeoutMs, fetch: apiAnswersOnly(opts), fetchOptions: { redirect: "manual" } });

/** Runs every check in order, reporting each as it finishes. */
export async function smokeTest(opts: SmokeOptions, onResult: (r: CheckResult) => void = () => {}): Promise<CheckResult[]> {
  const client = sdkClient(opts, opts.key);
  const results: CheckResult[] = [];
  /** `path`: what the check asks for under --url, so a redirect's Location tells where the endpoint moved. */
  const check = async (name: string, path: string, fn: () => Promise<string>) => {
    const started = performance.now();
    let r: CheckResult;
    try {
      const detail = await fn();
      r = { name, ok: true, ms: performance.now() - started, detail };
    } catch (err) {
      r = { name, ok: false, ms: performance.now() - started, detail: describeError(err, opts, path), ...(unreachedBy(err) ? { unreached: true } : {}) };
    }
    results.push(r);
    onResult(r);
  };

  let model = opts.model;
  await check("models", "/models", async () => {
    const ids = (await client.models.list()).data.map((m) => m.id);
    // The shim's /models lists what this key may use, not all that is served: a model missing
    // from it may be served and left out by the key's allow-list, which is what to check first.
    const onlyThisKey = "it lists only the models this key may use";
    const allowList = "`npm run manage-keys -- list`, MODELS column";
    if (ids.length === 0) throw new CheckFailed(`/models lists no model for this key: ${onlyThisKey}; is any served? If so, the key's allow-list names none of them (e.g. after a model.servedName rename; ${allowList})`);
    if (model !== undefined && !ids.includes(model)) {
      throw new CheckFailed(`model "${model}" is not among those /models lists for this key (${ids.join(", ")}): ${onlyThisKey}; either no model of that name is served, or the key's allow-list leaves it out (${allowList})`);
    }
    model ??= ids[0];
    return `${ids.length} model${ids.length === 1 ? "" : "s"}: ${ids.join(", ")}; using ${model}`;
  });
  const needModel = () => {
    if (model === undefined) throw new NotRun("no model to use (models failed; pass --model)");
    return model;
  };

  let headers: Headers | undefined;
  await check("chat", "/chat/completions", async () => {
    const { data, response } = await client.chat.completions
      .create({ model: needModel(), messages: [{ role: "user", content: "Say hello in five words." }], max_tokens: 32 })
      .withResponse();
    headers = response.headers;
    const text = data.choices[0]?.message.content ?? "";
    if (text.trim() === "") throw new CheckFailed(`the answer has no content (finish_reason ${data.choices[0]?.finish_reason ?? "none"})`);
    return `"${oneLine(text, 60)}" (${data.usage?.completion_tokens ?? "?"} tokens)`;
  });

  await check("credit-headers", "/chat/completions", async () => {
    if (!headers) throw new NotRun("no chat answer to look at (chat failed)");
    const missing = ["x-credits-charged", "x-credits-remaining"].filter((h) => !/^\d+(\.\d+)?$/.test(headers!.get(h) ?? ""));
    if (missing.length) {
      throw new CheckFailed(`missing or not a number: ${missing.join(", ")} (is this the gpu-sandbox shim, or a proxy that drops headers?)`);
    }
    return `charged ${headers.get("x-credits-charged")}, remaining ${headers.get("x-credits-remaining")}`;
  });

  // --timeout-seconds bounds a whole streamed answer: the SDK's own timeout ends with the
  // headers. An aborted stream just ends the SDK's iteration, hence a check after it too.
  const timedOut = () => new CheckFailed(`no answer from ${opts.url} within ${formatDuration(opts.timeoutMs)} (the stream had not ended)`);

  await check("stream", "/chat/completions", async () => {
    const started = performance.now();
    const deadline = AbortSignal.timeout(opts.timeoutMs);
    let first: number | undefined;
    let tokens: number | undefined;
    try {
      const stream = await client.chat.completions.create({
        model: needModel(), messages: [{ role: "user", content: "Count from one to ten in words." }], max_tokens: 64,
        stream: true, stream_options: { include_usage: true },
      }, { signal: deadline });
      for await (const chunk of stream) {
        if (chunk.choices[0]?.delta?.content) first ??= performance.now();
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
      }
    } catch (err) {
      throw deadline.aborted ? timedOut() : err;
    }
    if (deadline.aborted) throw timedOut();
    const end = performance.now();
    if (first === undefined) throw new CheckFailed("the stream ended without any content");
    // A stream is charged from this chunk; without it the shim charges an estimate and logs
    // "stream ended without usage" (an upstream that ignores include_usage).
    if (tokens === undefined) throw new CheckFailed("the stream had no usage chunk, though it asked for one (stream_options.include_usage): the shim charged it from an estimate (its log says \"stream ended without usage\"); the upstream must send usage");
    // Generation speed after the first token: the tokens - 1 that came in that interval (all of
    // them over it overstated the rate by n / (n - 1)); a one-token answer has no such interval.
    const rate = tokens > 1 ? (tokens - 1) / Math.max((end - first) / 1000, 1e-3) : 1 / Math.max((end - started) / 1000, 1e-3);
    return `first token after ${formatDuration(first - started)}, ${tokens} tokens in ${formatDuration(end - started)}, ${rate.toFixed(1)} tokens/s`;
  });

  // OpenAI's Responses API (the AI SDK's and the Agents SDK's default), streamed: through the
  // deployment's LiteLLM to vLLM's own /v1/responses, the path a chat does not try.
  await check("responses", "/responses", async () => {
    const deadline = AbortSignal.timeout(opts.timeoutMs);
    let text = "";
    let final: OpenAI.Responses.Response | undefined;
    let replayed = false;
    try {
      const stream = await client.responses.create({ model: needModel(), input: "Say hello in five words.", max_output_tokens: 64, stream: true }, { signal: deadline });
      for await (const event of stream) {
        // A stream whose first event already has the answer's usage was replayed from a whole
        // answer (LiteLLM's fake stream, BerriAI/litellm responses/streaming_iterator.py): vLLM's
        // own has none until its last.
        if (event.type === "response.created" && event.response.usage) replayed = true;
        if (event.type === "response.output_text.delta") text += event.delta;
        if (event.type === "response.completed" || event.type === "response.incomplete" || event.type === "response.failed") final = event.response;
      }
    } catch (err) {
      if (deadline.aborted) throw timedOut();
      // The connection broke mid-answer (undici says only "terminated"): no answer of the API's to describe.
      if (!(err instanceof OpenAI.APIError) && text !== "") throw new CheckFailed(`the stream broke off before its final event, after ${text.length} characters of text (${err instanceof Error ? err.message : String(err)})`);
      throw err;
    }
    if (deadline.aborted) throw timedOut();
    if (final === undefined) throw new CheckFailed("the stream ended without its final event (response.completed): the upstream cut it, or does not serve the Responses API");
    if (text.trim() === "") throw new CheckFailed(`the answer has no text (status ${final.status}${final.incomplete_details?.reason ? `: ${final.incomplete_details.reason}` : ""})`);
    // The charge comes from this usage; without it the shim charged an estimate.
    if (!final.usage) throw new CheckFailed("the final event has no usage: the shim charged an estimate; the upstream must send usage");
    if (replayed) throw new CheckFailed("the stream was replayed after the whole answer was generated (its first event already had the usage): LiteLLM fakes a Responses stream for a model it does not know, so a long answer sends nothing before the shim's upstream timeout; its config needs the model's model_info.supports_native_streaming: true (docs/api-shim/responses-api.md)");
    return `"${oneLine(text, 60)}" (${final.usage.output_tokens} tokens, streamed)`;
  });

  await check("bad-key", "/models", async () => {
    const bad = sdkClient(opts, "sk-gs-smoketest0000_notarealkeynotarealkeynotareal");
    try {
      await bad.models.list();
    } catch (err) {
      if (err instanceof OpenAI.APIError && err.status === 401) return `401 ${err.code ?? ""}`.trim();
      throw err instanceof OpenAI.APIError && err.status !== undefined ? new CheckFailed(`expected 401, got ${describeError(err, opts, "/models", null)}`) : err;
    }
    throw new CheckFailed("a made-up key was accepted: the endpoint does not check keys");
  });
  return results;
}

/**
 * What went wrong, in one line: HTTP status and the API's message, or the network cause. `path`:
 * the request's, under --url. `credential`: what the request carried, for a redirect's "sent over
 * plain http" warning; null for the made-up key, which needs no rotating.
 */
export function describeError(err: unknown, opts: SmokeOptions, path: string, credential: string | null = "API key"): string {
  if (err instanceof CheckFailed) return err.message;
  if (err instanceof OpenAI.APIError && err.cause instanceof NotTheApi) return err.cause.detail;
  if (err instanceof OpenAI.APIConnectionTimeoutError) return `no answer from ${opts.url} within ${formatDuration(opts.timeoutMs)}`;
  if (err instanceof OpenAI.APIConnectionError) return `cannot connect to ${opts.url}: ${networkReason(err.cause ?? err)}`;
  if (err instanceof OpenAI.APIError && err.status !== undefined && isRedirect(err.status)) {
    return `HTTP ${err.status}: ${opts.url} ${redirectAdvice({ base: opts.url, url: `${opts.url}${path}` }, err.headers?.get("location") ?? null, credential)}`;
  }
  if (err instanceof OpenAI.APIError && err.status !== undefined) {
    const body = err.error as { message?: unknown } | undefined;
    const message = typeof body?.message === "string" ? body.message : err.message.replace(/^\d{3}\s*/, "");
    return `HTTP ${err.status}${err.code ? ` ${err.code}` : ""}: ${oneLine(message, 200)}`;
  }
  return oneLine(err instanceof Error ? err.message : String(err), 200);
}

const oneLine = (s: string, max: number) => {
  const t = s.replace(/\s+/g, " ").trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
};

export function formatResult(r: CheckResult): string {
  return `${r.ok ? "PASS" : "FAIL"}  ${r.name.padEnd(14)}  ${formatDuration(r.ms).padStart(8)}  ${r.detail}`;
}

/** Validates flags into options; the key from --key or the environment. */
export function smokeOptions(values: { url?: string | undefined; key?: string | undefined; model?: string | undefined; "timeout-seconds"?: string | undefined }, env: NodeJS.ProcessEnv): SmokeOptions {
  if (values.url === undefined) throw new UsageError(`--url is required: the endpoint, with or without /v1, e.g. "$(pulumi stack output endpoint)"\n\n${USAGE}`);
  // The endpoint with or without /v1, read as manage-keys and report-usage read it; the API's routes start at its /v1.
  const url = `${originOf(values.url, "--url", "the API key")}/v1`;
  const key = trimCredential(values.key ?? env[API_KEY_ENV] ?? "");
  if (!key) throw new UsageError(`no API key: export ${API_KEY_ENV}=sk-gs-… (or pass --key)`);
  keyCharacters(key, values.key !== undefined ? "--key" : API_KEY_ENV);
  const seconds = numberFlag("timeout-seconds", values["timeout-seconds"], { min: 1, max: 3600, what: "a number of seconds", fallback: 60 });
  return { url, key, model: values.model, timeoutMs: seconds * 1000 };
}

/**
 * Refuses a key holding a character no key has, before any request: fetch's refusal of the header
 * repeats it ("Bearer sk-gs-…" is an invalid header value), and a check would print that. The
 * message names where the key came from and the character, never the key.
 */
function keyCharacters(key: string, source: string): void {
  const stray = credentialStray(key);
  if (!stray) return;
  // A line break inside: two keys, e.g. `jq -r '.[]'` on apiKeys, which prints one a line.
  const why = /^"\\[nr]"/.test(stray)
    ? `two keys, one a line (\`jq -r\` on more than one)? Give one, e.g. \`pulumi stack output apiKeys --show-secrets | jq -r .<name>\``
    : "pasted with a typographic dash or quote, or with a stray control character? Copy it again, e.g. from `pulumi stack output apiKeys --show-secrets`";
  throw new UsageError(`${source} holds ${stray}, which no API key has (printable ASCII only): ${why}`);
}

/**
 * `json`: the results as one object on stdout once every check has run, for a CI job that gates
 * on it; the lines, as they come, go to stderr then, so a job's log still shows progress.
 */
export async function runSmokeTest(opts: SmokeOptions, io: Io, json = false): Promise<number> {
  const say = json ? io.err : io.out;
  say(`Smoke test of ${opts.url}${opts.model ? ` (model ${opts.model})` : ""}`);
  const results = await smokeTest(opts, (r) => say(formatResult(r)));
  const failed = results.filter((r) => !r.ok);
  const code = exitCode(results);
  const notReached = code === EXIT.notSent ? "; the endpoint was not reached (exit 3)" : "";
  say(failed.length === 0 ? `All ${results.length} checks passed.` : `${failed.length} of ${results.length} checks failed: ${failed.map((r) => r.name).join(", ")}${notReached}.`);
  if (json) {
    const checks = results.map(({ name, ok, ms, detail }) => ({ name, ok, ms: Math.round(ms), detail })); // whole ms, as the lines show them
    io.out(JSON.stringify({ url: opts.url, ok: failed.length === 0, passed: results.length - failed.length, failed: failed.length, checks }, null, 2));
  }
  return code;
}

/**
 * 0 when every check passed; 3 (not reached, as every operator script) when none reached the
 * endpoint, so a fleet job tells a host down from one broken; else 1: a check ran and failed. An
 * endpoint that answered any check was reached, even if a later one could not connect.
 */
export function exitCode(results: readonly CheckResult[]): number {
  if (results.every((r) => r.ok)) return EXIT.ok;
  return results.every((r) => !r.ok && r.unreached === true) ? EXIT.notSent : EXIT.failed;
}

export async function main(argv: readonly string[], partial: Partial<ScriptDeps> = {}): Promise<number> {
  const deps = withDefaults(partial);
  return runScript(deps.io, async () => {
    const { values } = parseFlags(argv, OPTIONS, USAGE);
    if (values.help) {
      deps.io.out(USAGE);
      return 0;
    }
    const opts = smokeOptions(values, deps.env);
    if (values.ca !== undefined) trustCa(readCa(values.ca));
    return runSmokeTest(opts, deps.io, values.json === true);
  });
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
