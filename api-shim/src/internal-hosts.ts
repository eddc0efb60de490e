/**
 * Which hosts only the deployment's own network reaches, by their shape: a one-word name (a
 * compose service such as `vllm` or `litellm`, `localhost`), a loopback, private, link-local
 * (a cloud's metadata service) or unique-local address, or a name under a suffix only a private
 * network resolves. For what an upstream's message may not show a client (internal-details.ts)
 * and the media URLs a request may not make the servers behind fetch (media-urls.ts).
 */

const OCTET = String.raw`(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)`;
/** 0/8 (0.0.0.0 reaches the host itself), 10/8, 127/8, 172.16/12, 192.168/16, 169.254/16 (link-local: a cloud's metadata service). */
export const PRIVATE_IPV4 = String.raw`(?:(?:0|10|127)(?:\.${OCTET}){3}|172\.(?:1[6-9]|2\d|3[01])(?:\.${OCTET}){2}|(?:192\.168|169\.254)(?:\.${OCTET}){2})`;
const PRIVATE_IPV4_ONLY = new RegExp(`^${PRIVATE_IPV4}$`);
/**
 * ::, ::1, fc00::/7 (unique local), fe80::/10 (link-local), and any IPv4-mapped address (a URL
 * parser writes ::ffff:127.0.0.1 as ::ffff:7f00:1; no public service is reached by one).
 */
const PRIVATE_IPV6_ONLY = /^(?:::1?|f[cd][0-9a-f]{0,2}:[0-9a-f:.]*|fe[89ab][0-9a-f]?:[0-9a-f:.]*|::ffff:[0-9a-f:.]+)$/i;
/** Names that resolve only inside a private network (RFC 6762's .local, RFC 8375's home.arpa, Kubernetes' .svc). */
const PRIVATE_SUFFIX = /\.(?:internal|local|localdomain|lan|intranet|corp|home\.arpa|svc|cluster\.local)$/i;

/**
 * Whether `host` (a name, an IPv4 address, an IPv6 one with or without brackets) is one only the
 * deployment's own network reaches. A name with a `_` is one too: no public host name has one, and
 * Docker's DNS answers a container by its network's name (`vllm.gpu-sandbox_backend`).
 */
export function isInternalHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").replace(/\.$/, "");
  if (!h.includes(".") && !h.includes(":")) return true;
  return h.includes("_") || PRIVATE_IPV4_ONLY.test(h) || PRIVATE_IPV6_ONLY.test(h) || PRIVATE_SUFFIX.test(h);
}
