/**
 * What an upstream's message says about the deployment's insides, hidden before the message is
 * relayed to a client (upstream-errors.ts). LiteLLM passes its provider's 400 text on as it is, so
 * whatever vLLM, httpx or aiohttp put there reaches the client: the compose network's names and
 * ports (`http://vllm:8000/v1/chat/completions`, `Cannot connect to host litellm:4000`), its
 * addresses (`('10.89.0.3', 4000)`), a Python traceback with the image's file paths, the local
 * snapshot behind a model's alias. None of it helps a client fix its request; all of it maps the
 * host for an attacker. The operator finds it in LiteLLM's and vLLM's own logs.
 *
 * By shape, as the secrets are (redaction.ts): an address is internal when its host is one word
 * (a compose service, `localhost`), a loopback, private, link-local or unique-local IP, or a name
 * under a suffix only a private network resolves (`.internal`, `.local`, `.svc`, …). A public
 * host (a provider's API, a documentation link) stays, as does the rest of the message.
 */

/** Where Python starts a traceback: the message is cut there (the client's part comes before it). */
const TRACEBACK = "Traceback (most recent call last)";
export const INTERNAL_ADDRESS = "[internal address]";
const HIDDEN_PATH = "[path]";

const OCTET = String.raw`(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)`;
/** 10/8, 127/8, 172.16/12, 192.168/16, 169.254/16 (link-local: a cloud's metadata service). */
const PRIVATE_IPV4 = String.raw`(?:(?:10|127)(?:\.${OCTET}){3}|172\.(?:1[6-9]|2\d|3[01])(?:\.${OCTET}){2}|(?:192\.168|169\.254)(?:\.${OCTET}){2})`;
const PRIVATE_IPV4_ONLY = new RegExp(`^${PRIVATE_IPV4}$`);
/** ::1, fc00::/7 (unique local), fe80::/10 (link-local), and an IPv4-mapped private address. */
const PRIVATE_IPV6_ONLY = new RegExp(`^(?:::1|f[cd][0-9a-f]{0,2}:[0-9a-f:]*|fe[89ab][0-9a-f]?:[0-9a-f:]*|::ffff:${PRIVATE_IPV4})$`, "i");
/** Names that resolve only inside a private network (RFC 6762's .local, RFC 8375's home.arpa, Kubernetes' .svc). */
const PRIVATE_SUFFIX = /\.(?:internal|local|localdomain|lan|intranet|corp|home\.arpa|svc|cluster\.local)$/i;

/** A URL: scheme, credentials, host (a bracketed IPv6 or a name), port, and the rest up to a space or a quote. */
const URL = /[a-z][a-z0-9+.-]{0,15}:\/\/(?:[^\s/?#'"<>`@]*@)?(\[[0-9a-f:.]+\]|[^\s/?#'"<>`:[\]]+)[^\s'"<>`]*/gi;
/** A bare `host:port` (`litellm:4000`, `10.89.0.3:8000`): a one-word lowercase name (hosts have no `_`) or a private IPv4. */
const HOST_PORT = new RegExp(String.raw`(?<![\w.:/@-])([a-z][a-z0-9-]{0,62}|${PRIVATE_IPV4}):\d{2,5}(?![\w.:])`, "g");
/** A private IPv4 address on its own (`('10.89.0.3', 4000)`, aiohttp's connection errors). */
const BARE_PRIVATE_IPV4 = new RegExp(String.raw`(?<![\w.])${PRIVATE_IPV4}(?![\w.])`, "g");
/**
 * An absolute path under a directory a host or a container image keeps its files in (the image's
 * site-packages, the Hugging Face cache, a model directory): not an API route such as `/v1/…`.
 */
const FILE_PATH = /(?<![\w.~/:-])\/(?:root|home|usr|opt|app|tmp|var|srv|mnt|data|models|workspace|etc|proc|run|lib|lib64|snap|nix|private)\/[^\s'"<>`]*/g;

/** Whether a URL's or an address's host is one only the deployment's own network reaches. */
export function isInternalHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  if (!h.includes(".") && !h.includes(":")) return true;
  return PRIVATE_IPV4_ONLY.test(h) || PRIVATE_IPV6_ONLY.test(h) || PRIVATE_SUFFIX.test(h.replace(/\.$/, ""));
}

/** The punctuation ending a match, which is the sentence's (`…/completions'.`): kept outside what is hidden. */
function withSentenceEnd(match: string, replacement: string): string {
  let end = match.length;
  while (end > 0 && ".,;:!)]}".includes(match[end - 1]!)) end--;
  return replacement + match.slice(end);
}

/**
 * `message` without the deployment's internal addresses, file paths and any Python traceback;
 * an address that lies within the request's own `model` name (a model called `box:8000`) stays.
 * Returns "" when nothing is left (the message was a traceback).
 */
export function hideInternalDetails(message: string, model = ""): string {
  const traceback = message.indexOf(TRACEBACK);
  let text = traceback === -1 ? message : message.slice(0, traceback).trimEnd();
  const own = (s: string) => model !== "" && model.includes(s);
  if (text.includes("://")) text = text.replace(URL, (url: string, host: string) => (isInternalHost(host) && !own(url) ? withSentenceEnd(url, INTERNAL_ADDRESS) : url));
  text = text.replace(HOST_PORT, (address: string, host: string) => (isInternalHost(host) && !own(address) ? INTERNAL_ADDRESS : address));
  text = text.replace(BARE_PRIVATE_IPV4, (ip: string) => (own(ip) ? ip : INTERNAL_ADDRESS));
  return text.replace(FILE_PATH, (path: string) => (own(path) ? path : withSentenceEnd(path, HIDDEN_PATH)));
}
