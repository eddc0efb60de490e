// previousAdminToken and previousAdminTokenUntil: the admin token being rotated out, which the
// shim lets in beside the new one until the end (docs/operations.md, "Rotate the admin token").
import { MIN_ADMIN_TOKEN_LENGTH, PREVIOUS_UNTIL_SHAPE } from "../../api-shim/src/config.ts";
import { readInstant } from "../../api-shim/src/requests/period.ts";
import type { Secret } from "../secret.ts";
import type { Problems } from "./checks.ts";
import type { PreviousAdminToken } from "./types.ts";

/**
 * The previous admin token and its end, checked as the shim checks SHIM_ADMIN_TOKEN_PREVIOUS(_UNTIL)
 * at start, so a stack the shim would refuse to start with never reaches the host. Whether it
 * differs from the current token is for the render of `.env` (env-file.ts): that token is Pulumi's.
 */
export function checkPreviousAdminToken(p: Problems, token: Secret | undefined, untilValue: unknown): PreviousAdminToken | undefined {
  let until: string | undefined;
  if (untilValue !== undefined && untilValue !== null) {
    const read = readInstant(untilValue);
    if ("ms" in read) until = new Date(read.ms).toISOString();
    else p.add("previousAdminTokenUntil", untilValue, read.why ?? `must be ${PREVIOUS_UNTIL_SHAPE}`);
    if (token === undefined) p.add("previousAdminTokenUntil", untilValue, "is set without previousAdminToken; set both (npm run rotate-admin-token does) or neither");
  }
  if (token === undefined) return undefined;
  // Its characters are checkSecret's (what .env carries, fewer than the shim takes); its length the shim's.
  const length = token.readable ? token.reveal().length : MIN_ADMIN_TOKEN_LENGTH;
  if (length < MIN_ADMIN_TOKEN_LENGTH) p.add("previousAdminToken", token, `is ${length} characters long; the shim takes at least ${MIN_ADMIN_TOKEN_LENGTH} (the admin token Pulumi makes has 48): set the admin token being rotated out`);
  return until === undefined ? { token } : { token, until };
}
