import { randomBytes } from "node:crypto";
import { shownUrl } from "../api-shim/src/config.ts";
import type { Probe } from "../api-shim/src/upstream/readiness.ts";
import { redactUrl } from "../api-shim/src/store/database-url.ts";
import { exitOnFailure, mainWithUsage, setVariables } from "./lib/cli.ts";
import { urlHost } from "./lib/url-host.ts";

const USAGE = `Usage: npm run shim

Starts the api-shim on this machine with readable logs, in front of any OpenAI-compatible
server. Every SHIM_* variable of docs/api-shim/environment.md applies; these have development defaults:

  SHIM_UPSTREAM_URL   http://127.0.0.1:8000/v1 (\`npm run fake-vllm\` serves one); the base URL
                      including /v1. SHIM_UPSTREAM_API_KEY if that server wants a key.
  SHIM_HOST, SHIM_PORT
                      127.0.0.1 and 8080
  SHIM_DATABASE_URL   sqlite:./data/shim.db: keys, credits and usage are kept between runs
                      (delete the file to start over; a backup copied to
                      ./data/shim.db.restore is restored at the next start)
  SHIM_ADMIN_TOKEN    when unset, a new one is generated and printed at each start (one
                      exported from an earlier run then gets 401): set it to keep one
  SHIM_CONFIG         a YAML file: prices, tiers, models, bootstrap keys (docs/api-shim/shim-config.md)

Prints where it listens, the upstream and database URLs (a password in them as ***), an admin
token and the curl that makes a key, then a warning if the upstream is not ready (not running,
or SHIM_UPSTREAM_URL without its /v1): the shim serves all the same. Ctrl-C drains and stops;
a second Ctrl-C cuts what is still in flight. Type it anywhere in the repository
outside api-shim/ (there npm finds the shim's own package.json, which has no "shim" script); npm
runs it in the repository's root: relative paths (the database, SHIM_CONFIG) start there.

Examples:
  npm run fake-vllm &
  npm run shim
  SHIM_PORT=9090 npm run shim
  SHIM_UPSTREAM_URL=http://gpu-box:8000/v1 SHIM_UPSTREAM_API_KEY=… npm run shim`;

/**
 * `npm run shim`: the shim on this machine with readable logs and dev defaults — upstream
 * http://127.0.0.1:8000/v1 (`npm run fake-vllm` serves one without a GPU), database
 * ./data/shim.db, 127.0.0.1:8080, and an admin token generated and printed once when
 * SHIM_ADMIN_TOKEN is not set. Every SHIM_* variable set in the environment wins; one set but
 * blank (an env file's `SHIM_HOST=`) keeps the dev default, as the shim reads a blank variable as
 * unset, and its own default host is every interface.
 */
export function devEnvironment(env: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; generatedToken: string | null } {
  const set = setVariables(env);
  const generatedToken = set.SHIM_ADMIN_TOKEN ? null : `dev-admin-${randomBytes(16).toString("hex")}`;
  return {
    env: {
      SHIM_UPSTREAM_URL: "http://127.0.0.1:8000/v1",
      SHIM_DATABASE_URL: "sqlite:./data/shim.db",
      SHIM_HOST: "127.0.0.1",
      SHIM_PORT: "8080",
      SHIM_LOG_PRETTY: "1",
      ...set,
      ...(generatedToken ? { SHIM_ADMIN_TOKEN: generatedToken } : {}),
    },
    generatedToken,
  };
}

/** The banner, with SHIM_HOST as a host curl can dial (urlHost). */
export function banner(env: NodeJS.ProcessEnv, generatedToken: string | null): string {
  const base = `http://${urlHost(env.SHIM_HOST ?? "")}:${env.SHIM_PORT}`;
  const token = generatedToken ?? "$SHIM_ADMIN_TOKEN";
  // Neither URL is shown with its credentials (a terminal's scrollback is no place for them).
  return [
    `api-shim (dev) on ${base}  upstream ${shownUrl(env.SHIM_UPSTREAM_URL ?? "")}  database ${redactUrl(env.SHIM_DATABASE_URL ?? "")}`,
    // A token exported from an earlier run gets 401 after a restart: say so where the token is.
    generatedToken ? `admin token (generated for this run, shown once; set SHIM_ADMIN_TOKEN to keep it across restarts): ${generatedToken}` : "admin token: from SHIM_ADMIN_TOKEN",
    "create a key:",
    `  curl -s -X POST ${base}/admin/keys -H "authorization: Bearer ${token}" -H 'content-type: application/json' -d '{"name":"me","credits":100,"tier":"developer"}'`,
    "then use it with any OpenAI SDK: base_url " + `${base}/v1`,
    "",
  ].join("\n");
}

/**
 * The line `npm run shim` prints when the upstream is not ready at start, with the probe's hint
 * (it otherwise reached the log only when something asked /ready), or null when it is.
 */
export function upstreamWarning(upstreamUrl: string, probe: Probe): string | null {
  if (probe.ok) return null;
  const url = shownUrl(upstreamUrl);
  if (probe.detail === "unreachable") {
    // A missing /v1 is a 404 (below), never this: the host or the port is wrong, or nothing runs there.
    const what = probe.cause === "ENOTFOUND" || probe.cause === "EAI_AGAIN" ? `no such host: check the host name in SHIM_UPSTREAM_URL` : "is `npm run fake-vllm` (or your server) running, on the port SHIM_UPSTREAM_URL names?";
    return `Warning: the upstream at ${url} is not answering (unreachable${probe.cause ? `: ${probe.cause}` : ""}): ${what}`;
  }
  const hint = probe.hint?.replace(/^readiness probe: /, "").replaceAll("<SHIM_UPSTREAM_URL>", url.replace(/\/$/, ""));
  return `Warning: the upstream at ${url} is not ready (${probe.detail})${hint ? `: ${hint}` : ""}`;
}

export const main = mainWithUsage(USAGE, async (io) => {
  const { env, generatedToken } = devEnvironment(process.env);
  Object.assign(process.env, env);
  // server.ts reads the environment, listens and handles SIGINT/SIGTERM itself; its import ends
  // once it listens, or failed to (a bad configuration, a port taken: it says why). The banner
  // only for a server that listens, not a token and a curl for one that never did.
  const server = await import("../api-shim/src/server.ts");
  // With the port it got (SHIM_PORT=0 asks for any free one).
  if (server.listeningAt === null) return;
  io.out(banner({ ...env, SHIM_PORT: new URL(server.listeningAt).port }, generatedToken).trimEnd());
  // Once, after the banner; the shim serves meanwhile and whatever it finds (it may come up later).
  const probe = await server.probeReadiness?.().catch(() => null);
  const warning = probe ? upstreamWarning(env.SHIM_UPSTREAM_URL ?? "", probe) : null;
  if (warning !== null) io.err(warning);
});

if (import.meta.main) exitOnFailure(await main(process.argv.slice(2)));
