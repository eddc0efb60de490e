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
 * into the network, is not seen here (docs/api-shim.md says what else to set for a multimodal model).
 */
import { invalidParam } from "../errors.ts";
import { isInternalHost } from "../internal-hosts.ts";
import { eachMessagePart } from "./content-parts.ts";

/** The members of a content part that carry a URL, and in them, the members holding it. */
const MEDIA_MEMBERS = ["image_url", "audio_url", "video_url", "input_image", "file"] as const;
const URL_MEMBERS = ["url", "image_url", "file_url", "file_id"] as const;

/** Refuses (400, `messages`) a chat whose content names media by a URL into the deployment's network. */
export function refuseInternalMediaUrls(messages: unknown): void {
  let index = -1;
  eachMessagePart(messages, (item, from) => {
    if (from === null) index++;
    if (from !== "content" || item === null || typeof item !== "object") return;
    for (const member of MEDIA_MEMBERS) {
      const value = (item as Record<string, unknown>)[member];
      if (value === undefined) continue;
      for (const url of urlsIn(value)) {
        const host = internalTarget(url);
        if (host !== null) {
          throw invalidParam(`Media URLs must be public: the ${member} in messages[${index}] names ${host}, which is inside this deployment. Send the media from a public URL or inline (a data: URL).`, "messages");
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

/** How the refusal names a URL's target when it is inside the deployment (a host, or a file), else null. */
function internalTarget(text: string): string | null {
  // Only what could be a URL is parsed: data: URLs (megabytes of base64) and ids are not.
  const scheme = /^\s*([a-z][a-z0-9+.-]{0,15}):/i.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined || scheme === "data") return null;
  let url: URL;
  try {
    url = new URL(text.slice(0, 4096).trim());
  } catch {
    return null; // the server refuses what it cannot parse
  }
  if (url.protocol === "file:") return "a file on the server";
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  return isInternalHost(url.hostname) ? `'${url.hostname}'` : null;
}
