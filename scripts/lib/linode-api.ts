// Linode's own API, read-only, for `list-tenants --linode`: what Linode holds and bills for,
// whatever the stacks' state says. GET only, with LINODE_TOKEN from the environment (never a
// flag), at the address the Linode provider uses (LINODE_URL and LINODE_API_VERSION).
import { failedBeforeSending, networkReason, setVariables, startOf, UsageError } from "./cli.ts";

/** The Linode provider's default address (terraform-provider-linode's DefaultLinodeURL); the version is appended to it. */
const DEFAULT_URL = "https://api.linode.com";
const DEFAULT_VERSION = "v4";
/** Linode's largest page (it takes 25 to 500, 100 by default): one request for most accounts. */
const PAGE_SIZE = 500;
/** How long one page may take to arrive. */
const REQUEST_TIMEOUT_MS = 30_000;

export interface LinodeInstance {
  readonly id: number;
  readonly label: string;
  readonly region: string;
  /** The plan, e.g. g2-gpu-rtx4000a1-s. */
  readonly type: string;
  readonly status: string;
  readonly tags: readonly string[];
  readonly created: string;
}

export interface LinodeVolume {
  readonly id: number;
  readonly label: string;
  readonly region: string;
  /** GB. */
  readonly size: number;
  readonly status: string;
  readonly tags: readonly string[];
  /** The instance it is attached to, or null. */
  readonly linode_id: number | null;
  readonly created: string;
}

/** The collections read, with the token scope each needs, as Cloud Manager names it and as OAuth does. */
const COLLECTIONS = {
  "linode/instances": { scope: "Linodes", oauth: "linodes:read_only" },
  volumes: { scope: "Volumes", oauth: "volumes:read_only" },
} as const;
export type Collection = keyof typeof COLLECTIONS;

/** How to get a token that suffices for this listing, and no more. */
const MAKE_TOKEN = "make a read-only token in Cloud Manager (your profile → API Tokens → Create A Personal Access Token) with Linodes and Volumes set to Read Only and the rest to None, then `export LINODE_TOKEN=…`";
const capitalised = (text: string) => text.charAt(0).toUpperCase() + text.slice(1);

/** Why no script takes a Linode token as a flag. */
export const TOKEN_FLAG_REFUSAL = "a token on the command line lands in shell history; export LINODE_TOKEN";

/**
 * The API's base URL as the Linode provider builds it (linodego's SetBaseURL and SetAPIVersion):
 * LINODE_URL is the API's address (https://api.linode.com), and LINODE_API_VERSION (v4) is
 * appended to it, so the variables that point `pulumi up` elsewhere point this listing there too.
 */
export function linodeApiBase(env: NodeJS.ProcessEnv): string {
  const vars = setVariables(env);
  return `${(vars.LINODE_URL ?? DEFAULT_URL).replace(/\/+$/, "")}/${vars.LINODE_API_VERSION ?? DEFAULT_VERSION}`;
}

export interface LinodeApi {
  /** With the version, e.g. https://api.linode.com/v4. */
  readonly base: string;
  /** LINODE_URL as set (or the default), for messages about it. */
  readonly url: string;
  readonly token: string;
}

/** The API to ask, or a UsageError saying how to make a token when LINODE_TOKEN is not set. */
export function linodeApi(env: NodeJS.ProcessEnv): LinodeApi {
  const vars = setVariables(env);
  const token = vars.LINODE_TOKEN;
  if (token === undefined) throw new UsageError(`LINODE_TOKEN is not set: --linode asks Linode's API with it. ${capitalised(MAKE_TOKEN)}`);
  return { base: linodeApiBase(env), url: vars.LINODE_URL ?? DEFAULT_URL, token };
}

export async function listInstances(api: LinodeApi, progress: (line: string) => void): Promise<LinodeInstance[]> {
  return (await listAll(api, "linode/instances", progress)).map((item) => ({
    ...common(item),
    type: text(item.type),
  }));
}

export async function listVolumes(api: LinodeApi, progress: (line: string) => void): Promise<LinodeVolume[]> {
  return (await listAll(api, "volumes", progress)).map((item) => ({
    ...common(item),
    size: typeof item.size === "number" ? item.size : 0,
    linode_id: typeof item.linode_id === "number" ? item.linode_id : null,
  }));
}

type Item = Readonly<Record<string, unknown>>;

const text = (v: unknown) => (typeof v === "string" && v !== "" ? v : "?");
const common = (item: Item) => ({
  id: item.id as number, label: item.label as string, tags: item.tags as string[],
  region: text(item.region), status: text(item.status), created: text(item.created),
});

/**
 * Every item of a collection: page after page, as many as the first page says there are.
 * An item seen twice (one created between two pages moves the others along) is kept once.
 */
async function listAll(api: LinodeApi, collection: Collection, progress: (line: string) => void): Promise<Item[]> {
  const items = new Map<number, Item>();
  let pages = 1;
  for (let page = 1; page <= pages; page++) {
    if (page > 1) progress(`Asking Linode for ${collection}: page ${page} of ${pages}…`);
    const body = await getPage(api, collection, page);
    for (const item of body.data) items.set(item.id as number, item);
    if (page === 1) pages = Math.max(body.pages, 1);
  }
  return [...items.values()];
}

async function getPage(api: LinodeApi, collection: Collection, page: number): Promise<{ data: Item[]; pages: number }> {
  const request = `GET ${api.base}/${collection}`;
  let status: number;
  let body: string;
  try {
    const res = await fetch(`${api.base}/${collection}?page=${page}&page_size=${PAGE_SIZE}`, {
      headers: { authorization: `Bearer ${api.token}`, accept: "application/json" },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    status = res.status;
    body = await res.text();
  } catch (err) {
    const why = err instanceof DOMException && err.name === "TimeoutError"
      ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`
      : networkReason(err, "its certificate is not trusted by this machine (behind a proxy that inspects TLS, give Node its CA: NODE_EXTRA_CA_CERTS=<file>)");
    // Exit 3 or 5 as the admin API's failures (exit-codes.ts): a read, so either may simply run again.
    throw new UsageError(`could not reach Linode's API at ${api.base} (${request}): ${why}`, { exit: failedBeforeSending(err) ? "not-sent" : "unknown" });
  }
  const json = parsed(body);
  const reasons = errorReasons(json);
  const answer = `${status}${reasons === "" ? "" : ` ${reasons}`}`;
  const answered = `${status}${reasons === "" ? "" : ` (${reasons})`}`;
  if (status === 401) throw new UsageError(`Linode refused LINODE_TOKEN (${answer}, ${request}): it is wrong, expired or revoked. ${capitalised(MAKE_TOKEN)}`, { exit: "refused" });
  if (status === 403) {
    const { scope, oauth } = COLLECTIONS[collection];
    throw new UsageError(`LINODE_TOKEN may not read ${scope} (${answer}, ${request}): give it the ${scope} scope, Read Only is enough (${oauth}), or ${MAKE_TOKEN}`, { exit: "refused" });
  }
  if (status === 404) {
    throw new UsageError(`${request} answered ${answered}: is LINODE_URL (${api.url}) Linode's API? It is the address without the version (${DEFAULT_URL}): ` +
      `LINODE_API_VERSION (${DEFAULT_VERSION}) is appended to it, as the Linode provider does`, { exit: "refused" });
  }
  // A 429 (Linode's rate limit) refuses for now only, as its message says: exit 3, run it again.
  if (status < 200 || status > 299) throw new UsageError(`Linode's API answered ${answered} to ${request}: nothing was listed; try again later`, { exit: status >= 500 ? "unknown" : status === 429 ? "not-sent" : "refused" });
  if (!isPage(json)) throw new UsageError(`${request} answered ${status} but not with Linode's JSON (${startOf(body)}); is LINODE_URL (${api.url}) Linode's API?`, { exit: "refused" });
  return json;
}

function parsed(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

/** Linode's error body, `{"errors": [{"reason": "Invalid Token"}]}`, as one text ("" when it is not one). */
function errorReasons(json: unknown): string {
  const errors = (json as { errors?: unknown } | undefined)?.errors;
  if (!Array.isArray(errors)) return "";
  return errors.map((e) => (e as { reason?: unknown } | null)?.reason).filter((r): r is string => typeof r === "string").join("; ");
}

/** A page as Linode answers one (`data`, `page`, `pages`, `results`), each item with what the listing reads of it. */
function isPage(json: unknown): json is { data: Item[]; pages: number } {
  const page = json as { data?: unknown; pages?: unknown } | null | undefined;
  if (page === null || typeof page !== "object" || !Array.isArray(page.data) || !Number.isInteger(page.pages) || (page.pages as number) < 0) return false;
  return page.data.every((item: Item | null) =>
    item !== null && typeof item === "object" && Number.isInteger(item.id) && typeof item.label === "string" &&
    Array.isArray(item.tags) && item.tags.every((t) => typeof t === "string"));
}
