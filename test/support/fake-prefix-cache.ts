/**
 * vLLM's prefix cache and its `cache_salt`, for the fake vLLM (fake-vllm.ts), as exactly as the
 * shim's cache isolation needs: a prompt is cut into blocks of BLOCK_TOKENS tokens, each block's
 * hash chains the previous one's, and the first block's takes the request's `cache_salt`
 * (vllm/v1/core/kv_cache_utils.py, hash_block_tokens with the salt in the first block's extra
 * keys). So a prompt's cached tokens are its leading full blocks that an earlier request with the
 * same salt (or, both unsalted, none) computed, never the last token (the scheduler recomputes
 * it: max_cache_hit_length = num_tokens - 1).
 */

/** vLLM's default --block-size. */
export const BLOCK_TOKENS = 16;

/** The longest salt vLLM takes (generate/base/protocol.py, validate_cache_salt). */
const MAX_SALT_CHARACTERS = 128;
const FORBIDDEN = /[@/\\\x00]/;

/**
 * vLLM's refusal of a `cache_salt` (VLLMValidationError, 400, param "cache_salt"), or undefined
 * when it takes it: null or absent is no salt; anything else must be a non-empty string of at most
 * 128 characters without `@`, `/`, `\` or NUL. Every route that takes it (chat, completions,
 * Responses, the pooling routes: embeddings) runs the same check.
 */
export function cacheSaltRefusal(salt: unknown): string | undefined {
  if (salt === undefined || salt === null) return undefined;
  if (typeof salt !== "string" || salt === "") return "Parameter 'cache_salt' must be a non-empty string if provided.";
  if ([...salt].length > MAX_SALT_CHARACTERS || FORBIDDEN.test(salt)) {
    return "Parameter 'cache_salt' must be at most 128 characters and must not contain '@', '/', '\\\\', or NUL.";
  }
  return undefined;
}

/** The prompt's tokens in order, by the fake's rule (a word of every string, a number one token). */
export function promptWords(v: unknown, out: string[] = []): string[] {
  if (typeof v === "string") out.push(...v.split(/\s+/).filter(Boolean));
  else if (typeof v === "number") out.push(String(v));
  else if (Array.isArray(v)) for (const x of v) promptWords(x, out);
  else if (v !== null && typeof v === "object") for (const [k, x] of Object.entries(v)) out.push(`<${k}>`), promptWords(x, out);
  return out;
}

export class PrefixCache {
  private readonly blocks = new Set<string>();

  /**
   * The tokens of `words` read from the cache under `salt`, after which every full block of it is
   * cached (as the request computed them).
   */
  lookup(salt: string | null, words: readonly string[]): number {
    let hit = 0;
    let chain = JSON.stringify(salt);
    let missed = false;
    for (let end = BLOCK_TOKENS; end <= words.length; end += BLOCK_TOKENS) {
      chain = `${chain}|${words.slice(end - BLOCK_TOKENS, end).join(" ")}`;
      if (!missed && this.blocks.has(chain)) hit = end;
      else missed = true;
      this.blocks.add(chain);
    }
    return Math.max(0, Math.min(hit, words.length - 1));
  }

  clear(): void {
    this.blocks.clear();
  }
}
