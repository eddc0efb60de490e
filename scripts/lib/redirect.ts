// The scripts never follow a redirect. fetch would send the request, Authorization header and
// all, to the URL given first, then drop that header on the hop to another origin: so `--url
// http://…` against a TLS endpoint (nginx answers 308 to https) put the credential on the wire in
// cleartext and then failed as if the credential were wrong. Answered instead: where the endpoint
// points, the --url to use, and whether the credential crossed plain http.

/** A 3xx answer: fetch with `redirect: "manual"` returns it instead of following it. */
export function isRedirect(status: number): boolean {
  return status >= 300 && status < 400;
}

/**
 * "redirects to https://host/admin/keys: use --url https://host. The admin token was sent over
 * plain http with this request: consider rotating it." `urlFor` turns the new origin into the
 * --url the script takes (the admin scripts take the origin, smoke-test the origin with /v1).
 */
export function redirectAdvice(requestUrl: string, location: string | null, credential: string, urlFor: (origin: string) => string): string {
  const from = new URL(requestUrl);
  let to: URL | undefined;
  try {
    to = location ? new URL(location, from) : undefined;
  } catch {
    to = undefined;
  }
  const where = to ? `redirects to ${to.href}: use --url ${urlFor(to.origin)}` : `answers with a redirect that names no Location`;
  const cleartext = from.protocol === "http:" ? ` The ${credential} was sent over plain http with this request: consider rotating it.` : "";
  return `${where}.${cleartext}`;
}
