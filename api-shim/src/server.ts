import { readFileSync } from "node:fs";
import { buildApp } from "./app.ts";
import { systemClock } from "./clock.ts";
import { ConfigError, parseShimConfig, type ShimConfig } from "./config.ts";
import { createLogger } from "./logger.ts";
import { Metrics } from "./metrics.ts";
import { openStore } from "./store/open-store.ts";
import { createUpstream } from "./upstream.ts";

/**
 * The only file that listens. Start: config, store, release the reservations of a dead process,
 * bootstrap keys, listen. SIGTERM/SIGINT: stop accepting, let in-flight streams finish for up to
 * SHIM_DRAIN_TIMEOUT_MS, abort the rest (each settles for what it delivered), close the store,
 * exit 0. A store that fails closed stops the process the same way, with exit code 1.
 */
async function main(): Promise<void> {
  let config: ShimConfig;
  try {
    config = parseShimConfig(process.env, (p) => readFileSync(p, "utf8"));
  } catch (e) {
    process.stderr.write(`${e instanceof ConfigError ? e.message : String(e)}\n`);
    process.exitCode = 1;
    return;
  }
  const logger = createLogger({ level: config.logLevel, pretty: config.logPretty });
  // A store that failed closed answers 503 until the process restarts (its open batch was rolled
  // back; a restart releases the holds and reopens the file). Exiting non-zero is that restart:
  // Docker's restart policy brings the shim back instead of a 503 that lasts until someone logs in.
  let stop: (reason: string, exitCode: number) => Promise<void> = async () => {};
  const onFailure = (e: unknown) => {
    logger.error({ err: e instanceof Error ? e : String(e) }, "the store failed closed; exiting so the shim is restarted");
    void stop("store failure", 1);
  };
  const store = openStore(config.databaseUrl, { onFailure });
  const released = await store.releaseStaleReservations();
  logger.info({ released }, "released reservations left by a previous process (not charged)");
  for (const k of config.bootstrapKeys) {
    const r = await store.ensureBootstrapKey({ ...k, models: k.models && [...k.models], expiresAt: null, at: Date.now() });
    logger.info({ keyId: k.id, created: r.created, granted: r.granted }, "bootstrap key");
  }
  // A key deleted from the stack's config must stop working, not live on in the database.
  for (const keyId of await store.revokeRemovedBootstrapKeys(config.bootstrapKeys.map((k) => k.id), Date.now())) {
    logger.warn({ keyId }, "bootstrap key no longer in the configuration: revoked");
  }
  if (config.adminToken === null) logger.warn("SHIM_ADMIN_TOKEN is not set: every /admin request will get 401");
  const upstream = createUpstream({ url: config.upstreamUrl, apiKey: config.upstreamApiKey, headersTimeoutMs: config.upstreamTimeoutMs, idleTimeoutMs: config.streamIdleTimeoutMs });
  const metrics = new Metrics({ defaultMetrics: true });
  metrics.releasedReservations.inc(released);
  const app = buildApp({ config, store, upstream, clock: systemClock, logger, metrics });

  // Above nginx's upstream keepalive (60 s) so nginx, not the shim, closes idle connections.
  app.server.keepAliveTimeout = 65_000;
  app.server.headersTimeout = 66_000;
  app.server.requestTimeout = 120_000; // receiving a request body; streamed responses are not bounded by it

  let stopping = false;
  stop = async (reason: string, exitCode: number) => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason, inflight: app.shim.inflight.size }, "draining");
    const closed = app.close(); // stops accepting; resolves when in-flight requests are answered
    const { aborted } = await app.shim.inflight.drain(config.drainTimeoutMs);
    app.server.closeAllConnections();
    await closed;
    await upstream.close();
    try {
      await store.close();
    } catch (e) {
      logger.error({ err: e instanceof Error ? e.cause ?? e : e }, "the last batch could not be committed");
    }
    logger.info({ aborted, exitCode }, "stopped");
    logger.flush(() => process.exit(exitCode));
  };
  process.on("SIGTERM", () => void stop("SIGTERM", 0));
  process.on("SIGINT", () => void stop("SIGINT", 0));

  const address = await app.listen({ port: config.port, host: config.host });
  logger.info({ address, upstream: config.upstreamUrl, database: config.databaseUrl.replace(/\/\/[^@]*@/, "//***@") }, "api-shim listening");
  logger.flush();
}

await main();
