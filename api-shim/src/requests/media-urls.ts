/**
 * Media a chat names by URL, which a server behind the shim fetches itself: vLLM for a multimodal
 * model (`image_url`, `audio_url`, `video_url` parts, their `url` or, untyped, the string itself:
 * vllm/entrypoints/chat_utils.py), LiteLLM for a provider that takes media inline (it downloads
 * the URL and sends its bytes). A URL into the deployment's own network has them fetch from inside
 * it (server-side request forgery: vLLM fetches any URL by default, vLLM issue #57157,
 * CVE-2025-6242): vLLM's unauthenticated /metrics, LiteLLM, the shim, the cloud's metadata
 * service; what they fetch goes into the model's context, and their errors tell which ports are
 * open. Refused here, before anything is held, by the host as a URL parser reads it (WHATWG:
 * `0x7f.1` and `2130706433` are 127.0.0.1), and `file:` URLs, which name the server's own files.
 *
 * By shape: a public name that resolves to a private address, or a public URL that redirects
 * into the network, is not seen here (docs/api-shim/request-bodies.md, Media URLs, says what else to set for a multimodal model).
 */
import { invalidParam } from "../errors.ts";
import { isInternalHost } from "../internal-hosts.ts";
import { eachMessagePart } from "./content-parts.ts";

/**
 * The members of a content part that carry a URL (OpenAI's and vLLM's parts, and the Responses
 * API's `input_image`, whose `image_url` is the URL itself, and `input_file`'s `file_url` and
 * `file_id`: LiteLLM's Responses-to-chat bridge makes either the chat `file` part's `file_id`,
 * transformation.py _resolve_file_id), and in them, the members holding it: `url`, or a `file`
 * part's `file_id`, which LiteLLM fetches when it is a URL.
 */
const MEDIA_MEMBERS = ["image_url", "audio_url", "video_url", "file", "file_url", "file_id"] as const;
const URL_MEMBERS = ["url", "file_id"] as const;

/**
 * Refuses (400, `param`) a chat's messages (a Responses request's `input` items) whose content
 * names media by a URL into the deployment's network, or by a `uuid`: vLLM takes a part's uuid as
 * the media's key in its multimodal cache in place of the content's hash, and takes the media from
 * that cache when the part carries none. The cache is the server's, for every key: a part with
 * another key's uuid and no media had the model see that key's image, and a key that sent a uuid
 * first had its own image answer every later request naming it. OpenAI's clients send none.
 */
export function refuseUnsafeMedia(messages: unknown, param: "messages" | "input" = "messages"): void {
  let index = -1;
  eachMessagePart(messages, (item, from) => {
    if (from === null) index++;
    if (from !== "content" || item === null || typeof item !== "object") return;
    if (((item as { uuid?: unknown }).uuid ?? null) !== null) {
      throw invalidParam(`A content part's 'uuid' (in ${param}[${index}]) is not accepted: the model server would take it as the key of media it has cached for anyone. Send the media itself.`, param);
    }
    for (const member of MEDIA_MEMBERS) {
      const value = (item as Record<string, unknown>)[member];
      if (value === undefined) continue;
      for (const url of urlsIn(value)) {
        const reason = refusalOf(url);
        if (reason !== null) {
          throw invalidParam(`Media URLs must be public: the ${member} in ${param}[${index}] ${reason}. Send the media from a public URL or inline (a data: URL).`, param);
        }
      }
    }
  });
}

function urlsIn(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (value === null || typeof value !== "object") return [];
  return URL_MEMBERS.map((m) => (value as Record<string, unknown>)[m]).filter((v): v is string => typeof v === "string");
}

/** The longest media URL taken (a signed URL is a few KiB): all of one is read, as the server behind reads it. */
const MAX_MEDIA_URL = 65_536;

/**
 * A URL's authority as Python's parsers read it: after `//`, up to the first `/`, `?` or `#` (tab
 * and line breaks removed, leading spaces and control characters skipped, as they do).
 */
const PYTHON_AUTHORITY = /^[\x00-\x20]*[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i;

/**
 * A URL's scheme as URL parsers and Python's urlsplit (vLLM's check that a media URL is http,
 * then yarl's) read it: tabs and line breaks anywhere in it are dropped, so `ht<TAB>tp:` is
 * http to them (it passed here as no URL at all, however internal its host).
 */
const SCHEME = /^[\x00-\x20]*([a-z](?:[\t\n\r]*[a-z0-9+.-]){0,15})[\t\n\r]*:/i;

/**
 * Why a media URL is refused: its target is inside the deployment (a host, or a file), or the
 * check cannot read it as the servers behind would; null when it passes. A URL parser skips
 * leading spaces and control characters, and so do Python's.
 */
function refusalOf(text: string): string | null {
  // Only what could be a URL is parsed: data: URLs (megabytes of base64) and ids are not.
  const scheme = SCHEME.exec(text)?.[1]?.replace(/[\t\n\r]/g, "").toLowerCase();
  if (scheme === undefined || scheme === "data") return null;
  if (scheme === "file") return "names a file on the server";
  if (scheme !== "http" && scheme !== "https") return null; // gs://, s3://: a provider's storage, not fetched from here
  if (text.length > MAX_MEDIA_URL) return `is longer than ${MAX_MEDIA_URL} characters`;
  // A backslash before the path ends the host for a URL parser (below) but not for aiohttp's yarl,
  // which vLLM fetches media with, nor Python's urllib: they read it as userinfo and take the host
  // after the `@`, so `http://example.com\@127.0.0.1/` was example.com here and 127.0.0.1 to vLLM
  // (yarl 1.8; newer releases refuse it). No real URL has one there.
  if (PYTHON_AUTHORITY.exec(text.replace(/[\t\n\r]/g, ""))?.[1]?.includes("\\")) return "has a backslash before its path, which the servers behind read as part of its host";
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    // urllib3 (vLLM) reads what WHATWG refuses, such as an IPv6 zone: `http://[::1%25lo]/`.
    return "cannot be read as a URL";
  }
  return isInternalHost(url.hostname) ? `names '${url.hostname}', which is inside this deployment` : null;
}
