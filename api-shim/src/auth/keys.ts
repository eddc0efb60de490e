import { hash, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * API keys: `sk-gs-` + 12-character base62 id + `_` + 32-character base62 secret. The id is
 * public (it names the key in admin listings and usage rows); the store keeps only
 * `sha256:<hex>` of the whole key. The plaintext exists only in the 201 response that creates it
 * (and in the 200 of a rotation, which gives the key a new secret and keeps its id).
 */
export const KEY_PREFIX = "sk-gs-";
/** Base62 characters of a key's public id and of its secret (the Pulumi program makes keys too). */
export const KEY_ID_LENGTH = 12;
export const KEY_SECRET_LENGTH = 32;
const KEY_LEN = KEY_PREFIX.length + KEY_ID_LENGTH + 1 + KEY_SECRET_LENGTH;
const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KEY_SHAPE = /^sk-gs-([0-9A-Za-z]{12})_[0-9A-Za-z]{32}$/;

/** Uniform base62 from crypto random bytes (rejection sampling: 248 = 4 × 62, no modulo bias). */
export function randomBase62(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248) out += ALPHABET[byte % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

/** A new key; with `id`, a new secret for that key (a rotation: POST /admin/keys/{id}/rotate). */
export function generateKey(id = randomBase62(KEY_ID_LENGTH)): { id: string; key: string; hash: string } {
  const key = `${KEY_PREFIX}${id}_${randomBase62(KEY_SECRET_LENGTH)}`;
  return { id, key, hash: hashKey(key) };
}

const KEY_ID_SHAPE = /^[0-9A-Za-z]{12}$/;

/** Whether a string has the shape of a key's public id (12 base62 characters). */
export function isKeyId(id: string): boolean {
  return KEY_ID_SHAPE.test(id);
}

/** The key's id, or undefined when the string does not have the shape of one of our keys. */
export function parseKeyId(key: string): string | undefined {
  if (key.length !== KEY_LEN) return undefined;
  return KEY_SHAPE.exec(key)?.[1];
}

export function hashKey(key: string): string {
  return `sha256:${hash("sha256", key, "hex")}`;
}

/** Constant-time comparison of the presented key's hash with the stored one. */
export function verifyKey(key: string, storedHash: string): boolean {
  const a = Buffer.from(hashKey(key), "latin1");
  const b = Buffer.from(storedHash, "latin1");
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Constant-time comparison of two secrets of any length: both are hashed first, so the time
 * taken says nothing about the length or a common prefix.
 */
export function secretsEqual(presented: string, expected: string): boolean {
  const a = hash("sha256", presented, "buffer");
  const b = hash("sha256", expected, "buffer");
  return timingSafeEqual(a, b);
}

/** The longest Authorization header read: a longer one is no key's nor the admin token's. */
export const MAX_AUTHORIZATION_LENGTH = 4096;

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header || header.length < 8 || header.length > MAX_AUTHORIZATION_LENGTH) return undefined;
  if (!/^bearer /i.test(header)) return undefined;
  const token = header.slice(7).trim();
  return token === "" ? undefined : token;
}
