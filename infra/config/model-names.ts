import type { Problems } from "./checks.ts";

/**
 * The names clients send as `model`: the served model's (model.servedName) and each provider's,
 * and their aliases (model.aliases, providers[].aliases), which the shim resolves to their model
 * (api-shim/src/requests/model-aliases.ts). Every name names one model: a name given twice would
 * send a request to one model while the other's key, price or report expected it.
 */

/** model.servedName's rule, which every alias follows too: vLLM reads a served name starting with "-" as a flag. */
export const SERVED_NAME = /^\w[\w./:-]{0,127}$/;
export const SERVED_NAME_RULE = "must be 1-128 characters of letters, digits and . _ - / :, starting with a letter, digit or _";

export class ModelNames {
  /** Each name given so far, and the setting that gave it (for the problem of a name given again). */
  private readonly owners = new Map<string, string>();
  /** Each alias and the model it names. */
  readonly aliasOf = new Map<string, string>();
  /** The models' own names, in the order given. */
  readonly models: string[] = [];

  private readonly p: Problems;

  constructor(p: Problems) {
    this.p = p;
  }

  /**
   * `name` given at `key` for a model (`alias`: as an alias of that model); false, after a
   * problem, when another setting gave it already.
   */
  claim(key: string, name: string, alias?: string): boolean {
    const owner = this.owners.get(name);
    if (owner !== undefined) {
      this.p.add(key, name, `is already the name of another model or alias (${owner}); names must be unique`);
      return false;
    }
    this.owners.set(name, key);
    if (alias === undefined) this.models.push(name);
    else this.aliasOf.set(name, alias);
    return true;
  }

  /** `value` at `key` (model.aliases, providers[i].aliases): the aliases of `model`, each a name no model or alias has. */
  aliases(key: string, value: unknown, model: string | undefined): string[] {
    const out: string[] = [];
    (this.p.array(key, value) ?? []).forEach((item, i) => {
      const at = `${key}[${i}]`;
      const alias = this.p.string(at, item);
      if (alias === undefined) return;
      if (!SERVED_NAME.test(alias)) this.p.add(at, alias, SERVED_NAME_RULE);
      else if (model !== undefined && this.claim(at, alias, model)) out.push(alias);
    });
    return out;
  }

  /** An allow-list's entry as the model's name: an alias is allowed with its model. */
  modelNamed(name: string): string {
    return this.aliasOf.get(name) ?? name;
  }
}
