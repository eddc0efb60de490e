// What `pulumi up` asks Hugging Face about model.id before the GPU instance exists (GpuHost's
// checkModel): a download vLLM could not make would otherwise be found on the host, after it
// bills for minutes (deploy.sh sees vLLM crash-loop, or waits readyTimeoutMinutes).
import { setSecretCommand } from "./config/settings.ts";
import type { ModelConfig } from "./config/types.ts";
import { kvFitFindings, type ServedModel } from "./kv-fit.ts";

const HUB = "https://huggingface.co";
/** How long each question may take: an unreachable Hub costs `pulumi up` this much, once. */
export const HUB_TIMEOUT_MS = 10_000;

/**
 * One answer of the Hub: its status, JSON body (undefined when not JSON) and the error it names in
 * X-Error-Code (`GatedRepo`, `RepoNotFound`…, as huggingface_hub reads it), or why there was none.
 */
export type HubAnswer = { readonly status: number; readonly body?: unknown; readonly errorCode?: string } | { readonly failed: string };

export interface HubAnswers {
  /**
   * `GET /api/models/<id>` (`/api/models/<id>/revision/<revision>` for a revision other than main):
   * whether the repository, and that revision of it, exist for this caller, and its `gated`.
   */
  readonly info: HubAnswer;
  /** `GET /<id>/resolve/<revision>/config.json`: what vLLM downloads first, and reads the context length from. */
  readonly config: HubAnswer;
}

/** As catalogDisagreements: what to warn about, and reasons not to create the instance at all. */
export interface HubFindings {
  readonly warnings: string[];
  readonly blockers: string[];
}

/**
 * The model as the check sees it. `revision`: the one vLLM downloads, from `--revision` in
 * model.extraArgs (vllmRevision); `main` when unset. `served`: the plan and vLLM settings, for
 * whether maxModelLen fits the KV cache (kv-fit.ts); without them that is not judged.
 */
export type CheckedModel = Pick<ModelConfig, "id" | "maxModelLen"> & {
  readonly revision?: string;
  readonly served?: Omit<ServedModel, "id" | "maxModelLen">;
};

/**
 * A revision in a URL path as huggingface_hub puts it there (`quote(revision, safe="")`): `/` too
 * is escaped (`refs/pr/1` is `refs%2Fpr%2F1`), and so are the `! ' ( ) *` that
 * encodeURIComponent leaves alone.
 */
function quoteRevision(revision: string): string {
  return encodeURIComponent(revision).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * Asks the Hub both questions at once, as vLLM will on the host: with the stack's hfToken as a
 * Bearer token when there is one. Never rejects: a network failure or timeout is an answer
 * (`failed`), which hubDisagreements turns into a warning. The token goes in the header only;
 * nothing here logs or returns it.
 */
export async function askHub(model: Pick<CheckedModel, "id" | "revision">, token: string | undefined, fetchImpl: typeof fetch = globalThis.fetch, timeoutMs = HUB_TIMEOUT_MS): Promise<HubAnswers> {
  const ask = async (url: string): Promise<HubAnswer> => {
    try {
      const res = await fetchImpl(url, { ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}), signal: AbortSignal.timeout(timeoutMs) });
      const body = parseJson(await res.text());
      // The Hub answers JSON, or names its error in X-Error-Code (a gated file's refusal is text).
      // Anything else is a page of something in between (a proxy's block or login page), which
      // says nothing about the model: judged as one, it stopped a deploy for a token that was fine.
      if (body === undefined && !res.headers.has("x-error-code")) return { failed: `HTTP ${res.status} with an answer that is not Hugging Face's (a proxy in between?)` };
      const errorCode = res.headers.get("x-error-code");
      return { status: res.status, body, ...(errorCode === null ? {} : { errorCode }) };
    } catch (err) {
      return { failed: failure(err, timeoutMs) };
    }
  };
  const { id, revision = "main" } = model;
  const rev = quoteRevision(revision);
  // main keeps the plain info URL the check has always asked (the same answer, for the default branch).
  const infoUrl = revision === "main" ? `${HUB}/api/models/${id}` : `${HUB}/api/models/${id}/revision/${rev}`;
  const [info, config] = await Promise.all([ask(infoUrl), ask(`${HUB}/${id}/resolve/${rev}/config.json`)]);
  return { info, config };
}

/**
 * Judges the Hub's answers. Blockers are what makes vLLM's download fail for certain: no such
 * repository (404; a private one answers an anonymous caller 401 or 404), no such revision of it
 * (404 naming RevisionNotFound), a gated model without a token, a token the Hub refuses; and,
 * from its config.json, a maxModelLen whose KV cache is clearly too large for the plan (kv-fit.ts,
 * which warns when it is only likely to be). Anything
 * else the Hub says (429, 5xx, no answer) leaves the model unchecked, with a warning: the deploy
 * goes on, as it did before the check.
 */
export function hubDisagreements(model: CheckedModel, hasToken: boolean, answers: HubAnswers): HubFindings {
  const { info, config } = answers;
  const page = `${HUB}/${model.id}`;
  const none: HubFindings = { warnings: [], blockers: [] };
  // 403 without a token is not one of the Hub's answers for a missing or gated repository.
  const judged = "status" in info && [200, 401, 404, ...(hasToken ? [403] : [])].includes(info.status);
  if (!judged) {
    const why = "failed" in info ? info.failed : `HTTP ${info.status}`;
    return { ...none, warnings: [`could not check model.id ${model.id} on Hugging Face (${why}), so it was not checked before the instance`] };
  }
  const gatedMessage = `model.id ${model.id} is gated: accept its terms at ${page} while logged in to Hugging Face, ` +
    `then give the stack a token of that account: \`${setSecretCommand("hfToken")}\``;
  // The Hub may refuse a gated model's info to an anonymous caller, saying why.
  if (info.errorCode === "GatedRepo" && !hasToken) return { ...none, blockers: [gatedMessage] };
  // The Hub names a missing revision (X-Error-Code RevisionNotFound, which huggingface_hub raises
  // RevisionNotFoundError on; main is asked without one, so it is a --revision's). Any other 404
  // is the repository missing, as it is for main: RepoNotFound says so, and a 404 naming neither
  // is still a download vLLM cannot make (huggingface_hub raises on every 404), so it blocks as it
  // always has, rather than warn and let the host bill to find out.
  const revision = model.revision ?? "main";
  if (info.status === 404 && info.errorCode === "RevisionNotFound" && revision !== "main") {
    return { ...none, blockers: [`model.extraArgs --revision ${revision}: no such revision of model.id ${model.id} on Hugging Face (a branch, tag or commit of ${page})`] };
  }
  if (info.status === 404 || (info.status === 401 && !hasToken)) {
    return { ...none, blockers: [`model.id ${model.id}: no such repository on Hugging Face (check the spelling; a private one needs hfToken)`] };
  }
  const refused = (status: number) => `hfToken was refused for model.id ${model.id} (HTTP ${status}): the token is invalid or expired, ` +
    `or its account has not accepted the model's terms at ${page}; fix that, then set the token again: \`${setSecretCommand("hfToken")}\``;
  if (info.status !== 200) return { ...none, blockers: [refused(info.status)] };
  const gated = (info.body as { gated?: unknown } | undefined)?.gated;
  if (gated !== undefined && gated !== null && gated !== false) {
    if (!hasToken) {
      return { ...none, blockers: [gatedMessage] };
    }
    // Its files answer a token whose account has not accepted the terms with 403 (the info does not tell).
    if ("status" in config && (config.status === 401 || config.status === 403)) return { ...none, blockers: [refused(config.status)] };
  }
  const fit = model.served && "status" in config && config.status === 200
    ? kvFitFindings({ ...model.served, id: model.id, maxModelLen: model.maxModelLen }, config.body)
    : none;
  return { warnings: [...contextWarnings(model, config), ...fit.warnings], blockers: fit.blockers };
}

/**
 * A maxModelLen above what the model's config.json allows, as a warning only: vLLM derives its
 * limit from several keys, rope_scaling types and environment overrides, so the bound here is the
 * generous one (max_position_embeddings times any rope_scaling factor). No config.json (a GGUF
 * repository), or one without the key, is no finding.
 */
function contextWarnings(model: CheckedModel, config: HubAnswer): string[] {
  if (!("status" in config) || config.status !== 200) return [];
  const root = record(config.body);
  // Multimodal models (LLaVA, Gemma 3, Mistral 3…) keep the language model's settings under text_config.
  for (const c of [root, record(root?.text_config)]) {
    const positions = c?.max_position_embeddings;
    if (typeof positions !== "number" || !(positions > 0)) continue;
    const factor = record(c!.rope_scaling)?.factor;
    const scaled = typeof factor === "number" && factor > 1;
    const limit = Math.floor(scaled ? positions * factor : positions);
    if (model.maxModelLen <= limit) return [];
    const how = scaled ? `max_position_embeddings ${positions} × rope_scaling.factor ${factor} = ${limit}` : `max_position_embeddings ${positions}`;
    return [`model.maxModelLen ${model.maxModelLen} is more than model ${model.id}'s config.json allows (${how}): ` +
      `vLLM will likely refuse to start; lower model.maxModelLen to ${limit} or less`];
  }
  return [];
}

function record(value: unknown): Record<string, unknown> | undefined {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? value as Record<string, unknown> : undefined;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Why a request got no answer, for the warning: a timeout, or the network's reason (DNS, refused…). */
function failure(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && err.name === "TimeoutError") return `no answer within ${timeoutMs / 1000} s`;
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error && err.cause.message ? `: ${err.cause.message}` : "";
  return `${err.message}${cause}`;
}
