/**
 * What an upstream's message says about the deployment's insides, hidden before the message is
 * relayed to a client (upstream-errors.ts). LiteLLM passes its provider's 400 text on as it is, so
 * whatever vLLM, httpx or aiohttp put there reaches the client: the compose network's names and
 * ports (`http://vllm:8000/v1/chat/completions`, `Cannot connect to host litellm:4000`), its
 * addresses (`('10.89.0.3', 4000)`), a Python traceback with the image's file paths, the local
 * snapshot behind a model's alias. None of it helps a client fix its request; all of it maps the
 * host for an attacker. The operator finds it in LiteLLM's and vLLM's own logs.
 *
 * By shape, as the secrets are (redaction.ts): an address is hidden when its host is one only
 * the deployment's network reaches (internal-hosts.ts). A public host (a provider's API, a
 * documentation link) stays, as does the rest of the message.
 */
import { isInternalHost, PRIVATE_IPV4 } from "../internal-hosts.ts";
import { sentenceEnd } from "../observability/redaction.ts";

/** Where Python starts a traceback: the message is cut there (the client's part comes before it). */
const TRACEBACK = "Traceback (most recent call last)";
const INTERNAL_ADDRESS = "[internal address]";
const HIDDEN_PATH = "[path]";

/**
 * A URL: scheme, credentials, host (a bracketed IPv6 or a name; none in `file:///…`, a file on the
 * server), port, and the rest up to a space or a quote.
 */
const URL = /[a-z][a-z0-9+.-]{0,15}:\/\/(?:[^\s/?#'"<>`@]*@)?(\[[0-9a-f:.]+\]|[^\s/?#'"<>`:[\]]*)[^\s'"<>`]*/gi;
/** Not followed by more of a name or a number: a sentence's full stop after it is no part of it. */
const END = String.raw`(?![\w:]|\.\w)`;
/**
 * A bare `host:port` (`litellm:4000`, `10.89.0.3:8000`, `vllm.gpu-sandbox_backend:8000`): a name,
 * hidden when it is the kit's service or one with a dot or `_` that only the network reaches
 * (BARE_SERVICES: a word alone is often no host, `stop:10`, `context:4096`), or a private IPv4.
 */
const HOST_PORT = new RegExp(String.raw`(?<![\w.:/@-])([a-z][a-z0-9_-]{0,62}(?:\.[a-z0-9_-]{1,63})*|${PRIVATE_IPV4}):\d{2,5}${END}`, "gi");
/** The kit's compose services, and `localhost`: a bare `name:port` of one of them is the deployment's. */
const BARE_SERVICES = new Set(["vllm", "litellm", "shim", "nginx", "certbot", "localhost"]);
/** A private IPv4 address on its own (`('10.89.0.3', 4000)`, aiohttp's connection errors). */
const BARE_PRIVATE_IPV4 = new RegExp(String.raw`(?<![\w.])${PRIVATE_IPV4}(?!\w|\.\w)`, "g");
/**
 * An absolute path under a directory a host or a container image keeps its files in (the image's
 * site-packages, the Hugging Face cache, a model directory): not an API route such as `/v1/…`.
 */
const FILE_PATH = /(?<![\w.~/:-])\/(?:root|home|usr|opt|app|tmp|var|srv|mnt|models|workspace|etc|proc|run|lib|lib64|snap|nix|private)\/[^\s'"<>`]*/g;

/** Whether a bare `host:port`'s host is the deployment's (HOST_PORT). */
const hiddenBare = (host: string): boolean => {
  const h = host.toLowerCase();
  return BARE_SERVICES.has(h) || ((h.includes(".") || h.includes("_")) && isInternalHost(h));
};

/**
 * `message` without the deployment's internal addresses, file paths and any Python traceback (the
 * punctuation ending a URL or a path is the sentence's, and stays: sentenceEnd);
 * an address that lies within the request's own `model` name (a model called `box:8000`) stays.
 * Returns "" when nothing is left (the message was a traceback).
 */
export function hideInternalDetails(message: string, model = ""): string {
  const traceback = message.indexOf(TRACEBACK);
  let text = traceback === -1 ? message : message.slice(0, traceback).trimEnd();
  const own = (s: string) => model !== "" && model.includes(s);
  if (text.includes("://")) text = text.replace(URL, (url: string, host: string) => (isInternalHost(host) && !own(url) ? INTERNAL_ADDRESS + sentenceEnd(url) : url));
  text = text.replace(HOST_PORT, (address: string, host: string) => (hiddenBare(host) && !own(address) ? INTERNAL_ADDRESS : address));
  text = text.replace(BARE_PRIVATE_IPV4, (ip: string) => (own(ip) ? ip : INTERNAL_ADDRESS));
  return text.replace(FILE_PATH, (path: string) => (own(path) ? path : HIDDEN_PATH + sentenceEnd(path)));
}
