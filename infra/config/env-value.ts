/**
 * What a value written unquoted to the host's `.env` may hold: Docker Compose would interpret
 * anything else (spaces, quotes, `$`, `#`, newlines), and mangle the value. One rule for the
 * validator, which refuses a secret setting that breaks it before any resource is made, and for
 * renderEnvFile, which refuses every other value at the last moment.
 */
const ENV_VALUE = /^[\w.:/@+=,~-]*$/;

/** The characters ENV_VALUE allows, for messages. */
export const ENV_VALUE_CHARACTERS = "letters, digits and _ . : / @ + = , ~ -";

export function fitsEnvFile(value: string): boolean {
  return ENV_VALUE.test(value);
}
