/**
 * A request URL's path: the part that decides which credential is asked (auth.ts,
 * isAdminRequest), and the paths nginx would send to another location than the router's route,
 * refused before any credential is looked at (app.ts's onRequest hook): here, as both guard
 * authentication.
 */

/** A request URL's path, without its query string. */
export function urlPath(url: string): string {
  const q = url.indexOf("?");
  return q === -1 ? url : url.slice(0, q);
}

/**
 * An encoded `/`, `.` or `\` (any case), a `.` or `..` segment, or a raw `#`, in a request URL's
 * path. nginx decodes the first, resolves the second and ends the path at the third before it
 * chooses a location, and forwards the path as sent, which the router reads otherwise:
 * `/admin/keys/x%2f..%2f..%2f..%2fv1` was `/v1` to nginx (open to allowedCidrs) and
 * `/admin/keys/:id` to the router; `/metrics/..#` was `/`. No route of the API has such a path,
 * and no client sends a `#` (a fragment stays in the client).
 */
const AMBIGUOUS_PATH = /%(?:2f|2e|5c)|#|\/\.\.?(?:\/|$)/i;

export function isAmbiguousPath(url: string): boolean {
  return AMBIGUOUS_PATH.test(urlPath(url));
}
