import { createHash } from "node:crypto";
import type { ModelConfig } from "../config.ts";
import { invalidParam } from "../errors.ts";
import { spliceEveryMemberValue, withFirstMembers } from "./json-splice.ts";

/**
 * SHIM_CONFIG `cacheIsolation`: whose prompts share vLLM's prefix cache. vLLM caches a prompt's
 * KV blocks by their tokens, so a later request with the same prefix skips computing it, and
 * shows it in `cached_tokens` and a shorter time to the first token: any key can tell whether
 * another key's prompt prefix is cached. vLLM's `cache_salt` member goes into the hash of a
 * prompt's first block, so only requests with the same salt share blocks.
 * - `shared` (the default): no salt added; a system prompt the keys share is computed once. The
 *   body is forwarded exactly as without the setting.
 * - `key`: every request to a model vLLM serves carries a salt of its key's own (keySalt), so two
 *   keys never share a block. A provider's model (`provider: true`) gets none: its cache is the
 *   provider's, and the allow-list refuses the member there anyway (provider-params.ts).
 * vLLM takes `cache_salt` on chat, completions, Responses and its pooling routes (embeddings),
 * each checked by validate_cache_salt (docs/api-shim/request-bodies.md, which cites the source).
 */
export const CACHE_ISOLATIONS = ["shared", "key"] as const;
export type CacheIsolation = (typeof CACHE_ISOLATIONS)[number];
export const isCacheIsolation = (v: unknown): v is CacheIsolation => CACHE_ISOLATIONS.includes(v as CacheIsolation);

/** Whether requests for `model` carry their key's salt: `key` isolation, and a model that is not a provider's. */
export const saltsRequests = (isolation: CacheIsolation, model: ModelConfig | undefined): boolean => isolation === "key" && model?.provider !== true;

/** Separates this salt's hashes from any other use of SHA-256 over the same ids. */
const DOMAIN = "gpu-sandbox api-shim cache_salt v1";

/**
 * The salt vLLM gets for a request of key `keyId` that sent `clientSalt` (undefined or null:
 * none): SHA-256 of the key's id and the client's own salt, as base64url (43 characters, within
 * vLLM's 128 and without its forbidden `@ / \`). The client's salt is combined, not dropped, so a
 * key can still split its own cache (one salt per end user); it can never choose another key's, as
 * the key's id is always in the hash, encoded as a JSON list so no two (id, salt) pairs meet. The
 * id is no secret (logs, usage reports name it), and nothing of the key's secret or its hash goes
 * in: vLLM's request log shows a value that tells nothing about either. No server secret either:
 * a client never sets the salt vLLM sees, so it need not be unguessable, and every replica (and a
 * restarted shim) gives a key the same salt, keeping its cache.
 */
export function keySalt(keyId: string, clientSalt: string | null | undefined): string {
  return createHash("sha256").update(JSON.stringify([DOMAIN, keyId, clientSalt ?? null])).digest("base64url");
}

/** vLLM's longest salt (generate/base/protocol.py, _MAX_CACHE_SALT_LENGTH) and the characters it refuses in one. */
const MAX_CLIENT_SALT_CHARACTERS = 128;
const REFUSED_IN_SALT = /[@/\\\x00]/;

/**
 * Refuses a client's `cache_salt` that vLLM would refuse (validate_cache_salt, a 400 with param
 * `cache_salt`), with vLLM's message: under `key` isolation vLLM sees only the shim's salt, and a
 * request vLLM refuses behind `shared` must not pass behind `key`. null is none, as in vLLM.
 */
export function refuseBadCacheSalt(body: Record<string, unknown>): void {
  const salt = body.cache_salt;
  if (salt === undefined || salt === null) return;
  if (typeof salt !== "string" || salt === "") throw invalidParam("Parameter 'cache_salt' must be a non-empty string if provided.", "cache_salt");
  // Python's len: code points, not UTF-16 units.
  if ([...salt].length > MAX_CLIENT_SALT_CHARACTERS || REFUSED_IN_SALT.test(salt)) {
    throw invalidParam("Parameter 'cache_salt' must be at most 128 characters and must not contain '@', '/', '\\\\', or NUL.", "cache_salt");
  }
}

/**
 * The body to forward with `"cache_salt":<salt>`: the client's own member's value replaced where
 * it has one (every one of duplicates, each as json-splice.ts finds it: JSON.parse and Python's
 * json read the last, and no reader that takes the first gets a salt the client chose), else the
 * member spliced in first. The rest stays the client's bytes, as
 * upstreamBody keeps them. `forwarded` is what upstreamBody made of the request; `body` its
 * parsed form (whether it has the member).
 *
 * `inExtraBody` (the Responses route): the salt also goes first as `"extra_body":{"cache_salt":…}`.
 * LiteLLM's native Responses path for a `hosted_vllm/` model keeps only the Responses members it
 * declares, so a top-level `cache_salt` never reached vLLM there, and merges a request's
 * `extra_body` over what it sends vLLM (docs/api-shim/request-bodies.md cites the source). Both
 * places, as vLLM behind no LiteLLM (or LiteLLM's older chat bridge) reads the top-level one and
 * ignores `extra_body`. A client's own `extra_body` is refused before this (providers/upstream-controls.ts, SDK_OPTIONS), so it is
 * the only one.
 */
export function saltedBody(forwarded: Buffer | string, body: Record<string, unknown>, salt: string, inExtraBody = false): Buffer | string {
  const raw = typeof forwarded === "string" ? Buffer.from(forwarded, "utf8") : forwarded;
  const value = JSON.stringify(salt);
  const first = inExtraBody ? `"extra_body":{"cache_salt":${value}},` : "";
  if (Object.hasOwn(body, "cache_salt")) {
    const pieces = spliceEveryMemberValue(raw, "cache_salt", value);
    // Null only were the walk to miss a member JSON.parse read: then re-serialized, as upstreamBody does.
    if (!pieces) return JSON.stringify({ ...(JSON.parse(raw.toString("utf8")) as Record<string, unknown>), cache_salt: salt, ...(inExtraBody ? { extra_body: { cache_salt: salt } } : {}) });
    return first ? withFirstMembers(Buffer.concat(pieces), [Buffer.from(first)]) : Buffer.concat(pieces);
  }
  // The body parsed as an object with a `model`: a member follows its `{`.
  return withFirstMembers(raw, [Buffer.from(`"cache_salt":${value},${first}`)]);
}
