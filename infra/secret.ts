import { inspect } from "node:util";

/**
 * A secret value from stack config (a Hugging Face token, a provider's API key).
 *
 * Validated config is an ordinary object that gets logged, printed by `render` and compared in
 * tests, so a secret must not turn into text by accident: printing, `JSON.stringify` and
 * `util.inspect` all give "[secret]". Code that needs the value calls `reveal()` and hands it
 * straight to `pulumi.secret(...)` or to the host's `.env`.
 *
 * A stack file read without Pulumi (`npm run render`) holds only ciphertext (`secure: v1:...`);
 * that becomes an *encrypted* secret: known to be set, but not readable here.
 */
export class Secret {
  readonly #value: string | undefined;

  private constructor(value: string | undefined) {
    this.#value = value;
  }

  static of(value: string): Secret {
    return new Secret(value);
  }

  /** A value that is set in the stack but encrypted, so this process cannot read it. */
  static encrypted(): Secret {
    return new Secret(undefined);
  }

  /** Whether the plaintext is available (false for ciphertext read from a stack file). */
  get readable(): boolean {
    return this.#value !== undefined;
  }

  reveal(): string {
    if (this.#value === undefined) {
      throw new Error("this secret is encrypted in the stack file; only `pulumi up` can decrypt it");
    }
    return this.#value;
  }

  toString(): string {
    return "[secret]";
  }

  toJSON(): string {
    return "[secret]";
  }

  [inspect.custom](): string {
    return "[secret]";
  }
}
