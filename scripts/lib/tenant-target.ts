// Which tenant endpoint a script talks to: from a stack's outputs (`--stack`), or from `--url`
// with the admin token in an environment variable. The admin token is never a flag value: it
// would land in shell history and in `ps` output.
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { isAbsolute } from "node:path";
import * as tls from "node:tls";
import type { AdminTarget } from "./admin-client.ts";
import { UsageError } from "./cli.ts";
import { endpointOf, type PulumiCli, type StackOutputs, stackOutputs } from "./pulumi.ts";

export const ADMIN_TOKEN_ENV = "GPU_SANDBOX_ADMIN_TOKEN";

/** Flags every admin script accepts (manage-keys, report-usage). */
export const TARGET_OPTIONS = {
  stack: { type: "string" },
  url: { type: "string" },
  "admin-token-env": { type: "string" },
  ca: { type: "string" },
} as const;

export const TARGET_USAGE = `Target (one of):
  --stack <name>             the tenant's stack: URL, admin token and CA from \`pulumi stack output --show-secrets\`
  --url <base URL>           the endpoint (https://host or https://host/v1, not a route under it; no
                             user:password@); the admin token is read from $${ADMIN_TOKEN_ENV}, or
                             from the variable named by --admin-token-env <VAR> (its name, not the token)
  --ca <pem file>            trust this CA (tls.mode self-signed) with --url; a relative path is
                             read from the repository's root, where npm runs the script`;

/** Flags that would put the admin token on the command line, refused with the reason. */
export const REJECTED_TOKEN_FLAGS: Record<string, string> = {
  "admin-token": `the admin token would be kept in shell history; export ${ADMIN_TOKEN_ENV}=… (or use --stack)`,
  token: `the admin token would be kept in shell history; export ${ADMIN_TOKEN_ENV}=… (or use --stack)`,
};

export interface TargetFlags {
  readonly stack?: string | undefined;
  readonly url?: string | undefined;
  readonly "admin-token-env"?: string | undefined;
  readonly ca?: string | undefined;
}

export interface TargetDeps {
  readonly pulumi: PulumiCli;
  readonly env: NodeJS.ProcessEnv;
}

/** Resolves the admin API's origin and token, and trusts the tenant's CA when it has one. */
export async function resolveAdminTarget(flags: TargetFlags, deps: TargetDeps): Promise<AdminTarget> {
  if (flags.stack !== undefined && flags.url !== undefined) throw new UsageError("use either --stack or --url, not both");
  if (flags.stack === undefined && flags.url === undefined) {
    throw new UsageError(`--stack <name> or --url <base URL> is required: which tenant's admin API to use`);
  }
  if (flags.stack !== undefined) {
    if (flags["admin-token-env"] !== undefined) throw new UsageError("--admin-token-env goes with --url; with --stack the token comes from the stack's outputs");
    return fromStack(flags.stack, deps.pulumi, flags.ca);
  }
  const baseUrl = originOf(flags.url!, "--url");
  const varName = adminTokenVariable(flags["admin-token-env"], deps.env);
  const token = deps.env[varName];
  if (!token) {
    // The default's name is ours to print; a name given may be the token itself (see adminTokenVariable).
    const [which, more] = flags["admin-token-env"] === undefined ? [varName, ""] : ["the variable --admin-token-env names", `, and --admin-token-env takes ${NAME_NOT_TOKEN}`];
    throw new UsageError(`${which} is not set: export the tenant's admin token in it (\`pulumi stack output adminToken --show-secrets\`; a local \`npm run shim\` prints its own at start); it is read from the environment only, never from a flag${more}`);
  }
  if (flags.ca !== undefined) trustCa(readCa(flags.ca));
  return {
    baseUrl, adminToken: token, source: `$${varName}`,
    ...(flags.ca !== undefined ? { untrustedAdvice: NOT_SIGNED_BY_CA_FLAG } : {}),
  };
}

const NAME_NOT_TOKEN = `the name of the environment variable that holds the token, e.g. --admin-token-env ACME_ADMIN_TOKEN after \`export ACME_ADMIN_TOKEN=…\`; the value given is not shown here, in case it is the token`;

/**
 * The variable --admin-token-env names (by default ADMIN_TOKEN_ENV). Its value is never put in a
 * message: `--admin-token-env "$(pulumi stack output adminToken --show-secrets)"` gives the token
 * itself, whose 48 letters and digits also make a valid variable name, and stderr ends up in cron
 * and CI logs. A value of letters and digits alone (a Pulumi-made token; a long name has a _)
 * longer than any name one types, and not a variable that is set, or equal to the token in
 * ADMIN_TOKEN_ENV, is called a token.
 */
function adminTokenVariable(given: string | undefined, env: NodeJS.ProcessEnv): string {
  if (given === undefined) return ADMIN_TOKEN_ENV;
  const token = (given.length > 32 && /^[A-Za-z0-9]+$/.test(given) && env[given] === undefined) || (env[ADMIN_TOKEN_ENV] !== undefined && given === env[ADMIN_TOKEN_ENV]);
  if (token) throw new UsageError(`--admin-token-env was given something that looks like a token, not a variable name: it takes ${NAME_NOT_TOKEN}`);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(given)) throw new UsageError(`--admin-token-env must be a variable name (letters, digits and _, not starting with a digit): it takes ${NAME_NOT_TOKEN}`);
  return given;
}

async function fromStack(stack: string, pulumi: PulumiCli, caFile: string | undefined): Promise<AdminTarget> {
  if (!(await pulumi.available())) {
    throw new UsageError(`--stack needs the pulumi CLI, which is not on PATH; use --url <endpoint> with ${ADMIN_TOKEN_ENV} instead`);
  }
  const r = await stackOutputs(pulumi, stack, { showSecrets: true });
  if (r.kind === "no-stack") throw new UsageError(`stack ${stack} is not in the Pulumi backend (see \`pulumi stack ls\`); create it with \`npm run new-tenant\``);
  // Pulumi's own failure (a backend out of reach, a wrong passphrase, a lock): not the command line's.
  if (r.kind === "error") throw new UsageError(`cannot read stack ${stack}'s outputs: ${r.message}`, { exit: "failed" });
  return targetFromOutputs(stack, r.outputs, caFile);
}

/**
 * The admin API of a stack from its outputs (read with --show-secrets): the endpoint's origin,
 * the admin token, and trust in its CA when it is self-signed.
 */
export function targetFromOutputs(stack: string, outputs: StackOutputs, caFile?: string): AdminTarget {
  const { endpoint, adminToken, caCertificate } = outputs;
  if (endpoint === undefined) throw new UsageError(`stack ${stack} is not deployed (no outputs); run \`pulumi up --stack ${stack}\``);
  const url = endpointOf(outputs);
  if (outputs.servingDeployed === false) throw new UsageError(`stack ${stack} was never deployed: gpu-sandbox:adminCidrs is empty, so SSH is closed`);
  if (url === undefined) throw new UsageError(`stack ${stack} has no endpoint: ${String(endpoint)}`);
  if (typeof adminToken !== "string" || adminToken === "") throw new UsageError(`stack ${stack} has no adminToken output`);
  const hasCa = typeof caCertificate === "string" && caCertificate.includes("BEGIN CERTIFICATE");
  if (caFile !== undefined) trustCa(readCa(caFile));
  else if (hasCa) trustCa(caCertificate);
  return {
    baseUrl: originOf(url, `stack ${stack}'s endpoint`), adminToken, source: `stack ${stack}'s adminToken output`,
    untrustedAdvice: untrustedAdviceFor(stack, caFile !== undefined ? "--ca" : hasCa ? "output" : "none"),
    createdAt: outputs.createdAt,
  };
}

const UNTRUSTED = "the endpoint serves a certificate this machine does not trust";
const NOT_SIGNED_BY_CA_FLAG = `${UNTRUSTED}: it is not signed by the CA given with --ca`;

/**
 * What an untrusted certificate means for a stack, from what was trusted for it. A stack deployed
 * with tls.mode self-signed outputs its CA (trusted above); one with letsencrypt has none, and
 * until Let's Encrypt issues its certificate nginx serves a self-signed placeholder. The outputs
 * say what is deployed, where the stack file may hold a tls.mode not applied yet.
 */
function untrustedAdviceFor(stack: string, trusted: "--ca" | "output" | "none"): string {
  if (trusted === "--ca") return NOT_SIGNED_BY_CA_FLAG;
  if (trusted === "output") return `${UNTRUSTED}: it is not signed by stack ${stack}'s caCertificate output (tls.mode self-signed), which was trusted for it; is the endpoint serving this stack's deploy?`;
  return `${UNTRUSTED}: stack ${stack} has no caCertificate output (tls.mode letsencrypt), so Let's Encrypt has probably not issued its certificate yet, and nginx serves a self-signed placeholder until it does (docs/troubleshooting.md, "Certificate errors in detail": DNS, port 80, \`docker compose logs certbot\`)`;
}

/**
 * `https://host/v1/` → `https://host`: the admin API is at the endpoint's /admin (a base path of
 * a proxy of one's own, `https://host/api/v1`, kept: `https://host/api`), the API at its /v1. The
 * one reading of every script's --url, so each takes the endpoint with or without /v1 alike. A
 * route under the endpoint (`…/v1/models`, pasted from a client's request) or the admin API's own
 * path is refused: every request would be a 404, or a 401 blamed on the credential. So is a query
 * or #fragment, which no request would carry. `credential`: what the script sends (endpointUrl).
 */
export function originOf(url: string, what: string, credential = "the admin token"): string {
  const u = endpointUrl(url, what, credential);
  const path = u.pathname.replace(/\/+$/, "");
  if (/\/v1\/|\/admin(\/|$)/.test(path)) {
    throw new UsageError(`${what} "${url}" must be the tenant's endpoint, https://<host> or https://<host>/v1, not a route under it`);
  }
  if (/[?#]/.test(url)) { // also a bare `?` or `#`, which URL reads as no query or fragment at all
    throw new UsageError(`${what} "${url}" must be the tenant's endpoint, https://<host> or https://<host>/v1, without a query or #fragment`);
  }
  return `${u.origin}${path.replace(/\/v1$/, "")}`;
}

/**
 * A URL an operator gave for an endpoint (a --url, a stack's endpoint output), checked alike by
 * every script: a URL, http(s), and without a user name or password. fetch refuses those (the SDK
 * reported a "connection" failure) or drops them, and an echo of the URL would put the password
 * in the terminal and logs, so it is refused without showing it. `credential`: what the scripts
 * send instead.
 */
export function endpointUrl(url: string, what: string, credential: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    // A password with a "/" (base64) or an "@" in it is what made it no URL.
    throw new UsageError(`${what} "${withoutUserInfo(url)}" is not a URL; expected e.g. https://203-0-113-9.ip.linodeusercontent.com/v1`);
  }
  // An "@" anywhere, which any user info has: a password starting with "/" or with digits and
  // "/" parses as a host, an empty port and a path holding the rest (https://admin:/s3cret@host/v1),
  // with no user info; a base URL never needs one.
  if (url.includes("@")) {
    throw new UsageError(`${what} has a user name or password in it (user:password@host), which the scripts do not send (${credential} is the credential): give the URL without it`);
  }
  // Quoted whole: it has no "@", so no user info (user:password@host without its scheme parses
  // with "user:" as the scheme and no password).
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new UsageError(`${what} "${url}" must start with https:// or http://`);
  return u;
}

/** `url` as it may be shown: everything after its scheme's "//" (or from its start, without one) to its last "@" left out. */
function withoutUserInfo(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)?.*@/is, (_, scheme: string | undefined) => `${scheme ?? ""}…@`);
}

/** Reads a PEM CA file given to a --ca flag. */
export function readCa(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (err) {
    // npm runs the script in the repository's root, not where the command was typed.
    const where = isAbsolute(file) ? "" : ` (a relative path starts at ${process.cwd()}, where npm runs the script)`;
    throw new UsageError(`--ca ${file}: ${(err as Error).message}${where}`);
  }
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?(-----END CERTIFICATE-----|$)/g) ?? [];
  if (blocks.length === 0) throw new UsageError(`--ca ${file} is not a PEM certificate`);
  // Each one parsed here: Node's TLS would refuse a corrupt one with an OpenSSL stack trace.
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block);
    } catch (err) {
      throw new UsageError(`--ca ${file} is not a valid PEM certificate (certificate ${i + 1}): ${(err as Error).message}`);
    }
  });
  return pem;
}

/**
 * Adds a CA to what this process's fetch trusts (Node 24), on top of the system's: for
 * `tls.mode: self-signed`, whose CA is the stack output `caCertificate`.
 */
export function trustCa(pem: string): void {
  tls.setDefaultCACertificates([...tls.getCACertificates("default"), pem]);
}
