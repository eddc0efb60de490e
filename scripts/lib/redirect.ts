// The scripts never follow a redirect. fetch would send the request, Authorization header and
// all, to the URL given first, then drop that header on the hop to another origin: so `--url
// http://…` against a TLS endpoint (nginx answers 308 to https) put the credential on the wire in
// cleartext and then failed as if the credential were wrong. Answered instead: where the endpoint
// points, the --url to use, and whether the credential crossed plain http.

/** A 3xx answer: fetch with `redirect: "manual"` returns it instead of following it. */
export function isRedirect(status: number): boolean {
  return status >= 300 && status < 400;
}

/** A request a script made: `url` is `base` (the --url as the script uses it) with a path added. */
export interface RedirectedRequest {
  readonly base: string;
  readonly url: string;
}

/**
 * "redirects to https://host/api/v1/models: use --url https://host/api/v1. The API key was sent
 * over plain http with this request: consider rotating it." When the Location (resolved against
 * the request) ends with the path the script added (/models, /admin/keys), the endpoint has moved
 * there, base path and all: the new --url is the Location without that path. Any other redirect (a
 * slash added, a login page) has no --url to offer: the shim answers without redirecting, so the
 * given one may not be its endpoint. `credential`: what the request carried that the operator must
 * rotate; null for one that needs no rotating (the smoke test's made-up key).
 */
export function redirectAdvice(request: RedirectedRequest, location: string | null, credential: string | null): string {
  const from = new URL(request.url);
  let to: URL | undefined;
  try {
    to = location ? new URL(location, from) : undefined;
  } catch {
    to = undefined;
  }
  const cleartext = credential !== null && from.protocol === "http:" ? ` The ${credential} was sent over plain http with this request: consider rotating it.` : "";
  if (!to) return `answers with a redirect that names no Location.${cleartext}`;
  // The path the script added to --url; the query (the usage report's) must come along unchanged.
  const basePath = new URL(request.base).pathname.replace(/\/+$/, "");
  const added = from.pathname.startsWith(basePath) ? from.pathname.slice(basePath.length) : "";
  const moved = added !== "" && to.pathname.endsWith(added) && to.search === from.search
    ? `${to.origin}${to.pathname.slice(0, -added.length)}`
    : undefined;
  const where = moved !== undefined && moved !== request.base
    ? `redirects to ${to.href}: use --url ${moved}`
    : `redirects to ${to.href}: --url may not be the shim's endpoint (the shim answers without redirecting)`;
  return `${where}.${cleartext}`;
}
