import type { APIError } from "openai";

/** Calls `fn` (an SDK call), expects it to throw, and returns the error. */
export async function failure(fn: () => Promise<unknown>): Promise<APIError> {
  try {
    await fn();
  } catch (e) {
    return e as APIError;
  }
  throw new Error("expected the call to fail");
}
