import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { buildApp, closeApp } from "./app.ts";
import { systemClock } from "./clock.ts";
import { ConfigError, parseShimConfig, type ShimConfig } from "./config.ts";
import { warnAboutKeysAtStart } from "./auth/keys-at-start.ts";
import { createLogger } from "./observability/logger.ts";
import { Metrics } from "./observability/metrics.ts";
import { formatCredits, MAX_BALANCE_MICRO } from "./money/money.ts";
import { parseDatabaseUrl, redactUrl } from "./store/database-url.ts";
import { migrationMessage, type SchemaMigration } from "./store/schema-migration.ts";
import { openStore } from "./store/open-store.ts";
import { distinctPrices } from "./money/price-record.ts";
import type { UsageIndexOutcome } from "./store/postgres-usage-index.ts";
import { type CheckpointFailure, checkpointFailureWarning } from "./store/sqlite-checkpointer.ts";
import { failureHint } from "./store/sqlite-failures.ts";
import { showMiB } from "./store/sqlite-backup.ts";
import { SqliteInUseError } from "./store/sqlite-owner.ts";
import { type LedgerRestored, RestoreInterruptedError, RestoreRefusedError, restoredMessage } from "./store/sqlite-restore.ts";
import { VolumeFullError } from "./store/sqlite-space.ts";
import { BootstrapIdTakenError, type GrantRefusal, NewerSchemaError, SchemaOwnerNeededError, SessionSettingsError, type Store } from "./store/store.ts";
import { createUpstream } from "./upstream/upstream.ts";
import type { Probe } from "./upstream/readiness.ts";

/**
 * The only file that listens. Start: config, store, release the reservations of a dead process,
 * bootstrap keys, listen. SIGTERM/SIGINT: stop accepting, let in-flight streams finish for up to
 * SHIM_DRAIN_TIMEOUT_MS, abort the rest (each settles for what it delivered), close the store,
 * exit 0. A store that fails closed (at start or while serving) stops the process with exit code
 * 1, cutting what is in flight at once.
 */
async function main(): Promise<void> {
  // The signal handlers come first: the kernel drops a signal to a PID 1 that has no handler for
  // it, so with node as PID 1 a `docker stop` during start-up was lost (the shim went on to serve
  // and was killed 30 s later). The Compose file runs Docker's init as PID 1, which covers the
  // module loading before this too (~0.4 s). A stop asked for while starting is acted on once the
  // start is over: before listening, the store is closed and the process exits 0 without
  // listening; while `app.listen` is pending, once it listens, with the drain of a stop while serving.
  let stopAsked: string | null = null;
  let onSignal = (signal: string) => {
    if (stopAsked === null) return void (stopAsked = signal);
    exitOnRepeatedSignal(signal, 1, "while starting: nothing was in flight");
  };
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  process.on("SIGINT", () => onSignal("SIGINT"));
  let config: ShimConfig;
  try {
    config = parseShimConfig(process.env, (p) => readFileSync(p, "utf8"));
  } catch (e) {
    process.stderr.write(`${e instanceof ConfigError ? e.message : String(e)}\n`);
    process.exitCode = 1;
    return;
  }
  const logger = createLogger({ level: config.logLevel, pretty: config.logPretty });
  const cause = (e: unknown) => (e instanceof Error ? e.cause ?? e : e);
  // The last lines are written before the exit, but not waited for past EXIT_LOG_WAIT_MS: a log
  // reader that went away (`npm run shim | tee`, then Ctrl-C, which kills tee too) never lets
  // pino-pretty's worker finish, and its flush would never call back.
  let exiting = false;
  const exitNow = (code: number) => {
    exiting = true;
    process.exitCode = code;
    setTimeout(() => process.exit(code), EXIT_LOG_WAIT_MS).unref();
    logger.flush(() => process.exit(code));
  };
  // The log line of a store that failed closed says what to check (file modes, a full volume, a
  // corrupt file), at start and while serving alike: the restart alone does not fix those.
  const target = parseDatabaseUrl(config.databaseUrl);
  const sqliteFile = target.kind === "sqlite" && target.path !== ":memory:" ? resolve(target.path) : null;
  const failedClosed = (e: unknown) =>
    logger.error({ err: cause(e), hint: sqliteFile === null ? undefined : failureHint(cause(e), sqliteFile) }, "the store failed closed; exiting so the shim is restarted");
  // A store that failed closed answers 503 until the process restarts (its open batch was rolled
  // back; a restart releases the holds and reopens the file). Exiting non-zero is that restart:
  // Docker's restart policy brings the shim back instead of a 503 that lasts until someone logs in.
  // Nothing in flight can be settled any more, so it is cut at once rather than drained.
  let stop: ((reason: string, exitCode: number, drainMs: number) => Promise<void>) | undefined;
  // While starting, a failure is only noted: the start's own step then fails with it and says
  // so (one line, not two); one that reaches no step is said once the start is over.
  let starting = true;
  let failedWhileStarting: unknown = null;
  const onFailure = (e: unknown) => {
    if (starting) return void (failedWhileStarting ??= e);
    failedClosed(e);
    if (stop) void stop("store failure", 1, 0);
    else exitNow(1);
  };
  const metrics = new Metrics({ defaultMetrics: true });
  // The Postgres store's sweeps while serving (a replica without its liveness lock for the grace,
  // 30 s: one that died, or one cut off that long): credits a dead replica held come back to the keys.
  const onReleased = (released: number) => {
    metrics.releasedReservations.inc(released);
    if (released > 0) logger.warn({ released }, "released credit holds whose replica lost its liveness lock (a replica gone, or one cut off from the database for longer than the grace: its requests still in flight settle without a hold)");
  };
  // A Postgres database that takes no writes (a standby, a full disk's read-only default) fails
  // every request with a 503 and /ready says the store is unavailable: the log says why.
  const onReadOnly = (readOnly: boolean) => {
    if (readOnly) logger.error("the database is read-only (a hot standby, or default_transaction_read_only is on): every request gets 503 and /ready says the store is unavailable until it takes writes again; point SHIM_DATABASE_URL at the primary");
    else logger.info("the database takes writes again");
  };
  const onConnectionsCut = (connections: number) =>
    logger.warn({ connections }, "the database did not answer the store's goodbye in time: its connections were cut");
  const onUsageIndex = (o: UsageIndexOutcome) => {
    if (o.kind === "built") logger.info({ ms: o.ms }, "built the usage rows' time and request id indexes: reports over all keys now read their period, a request's lookup its rows");
    if (o.kind === "not-permitted") logger.warn({ reason: o.reason }, "could not build the usage rows' time and request id indexes: it needs the role that owns the tables; reports over all keys and request lookups scan the ledger until a replica running as that role builds them");
    if (o.kind === "retrying") logger.warn({ reason: o.reason, code: o.code, retryMs: o.retryMs }, "building the usage rows' time and request id indexes failed; it is tried again (reports over all keys and request lookups scan the ledger meanwhile)");
  };
  // Each failed WAL checkpoint is counted; the warning comes at most once a minute (one a second
  // fails while the disk does).
  let checkpointWarnedAt = -Infinity;
  const onCheckpointFailure = (f: CheckpointFailure) => {
    metrics.checkpointFailures.inc();
    if (performance.now() - checkpointWarnedAt < 60_000) return;
    checkpointWarnedAt = performance.now();
    logger.warn({ err: f.error, failures: f.failures, failingMs: Math.round(f.failingMs) }, checkpointFailureWarning(f.error));
  };
  // A backup staged beside the SQLite ledger (sqlite-restore.ts): its check reads all of it, then
  // one line says what the restored ledger holds, for the operator to see it is the backup meant.
  const onRestoreCheck = (file: string, bytes: number) => logger.info({ file, bytes }, `checking ${file} (${bytes} bytes, ${showMiB(bytes)}: PRAGMA integrity_check reads all of it) before restoring the ledger from it`);
  const onRestored = (r: LedgerRestored) =>
    logger.info({ restoredFrom: r.from, previous: r.previous, earlier: r.earlier ?? undefined, keys: r.keys, credits: r.credits }, restoredMessage(r));
  // An existing ledger migrated (a new one, or one up to date, says nothing): whether going back needs the backup.
  const onMigrated = (m: SchemaMigration) => {
    const message = migrationMessage(m);
    if (message !== null) logger.info({ schemaFrom: m.from, schemaTo: m.to, ms: Math.round(m.ms) }, message);
  };
  let store: Store;
  try {
    const onVolumeFree = (bytes: number) => metrics.sqliteVolumeFree(bytes);
    // The configuration's prices, recorded once at the start: what a report per price shows of each.
    const prices = { records: distinctPrices(config.pricing), at: Date.now() };
    store = await openStore(config.databaseUrl, { onFailure, onReleased, onReadOnly, onConnectionsCut, onUsageIndex, onCheckpointFailure, onVolumeFree, onRestoreCheck, onRestored, onMigrated, prices });
    // Said only when there were some: the previous process died holding its clients' credits (a
    // first start, or one after a clean stop, has nothing to say).
    const released = await store.releaseStaleReservations();
    metrics.releasedReservations.inc(released);
    if (released > 0) logger.warn({ released }, "released reservations left by a previous process (not charged): it stopped without settling its requests in flight");
    for (const k of config.bootstrapKeys) {
      const r = await store.ensureBootstrapKey({ ...k, models: k.models && [...k.models], expiresAt: null, at: Date.now() });
      if (r.adminKey) throw new BootstrapIdTakenError(k.id);
      logger.info({ keyId: k.id, created: r.created, granted: r.granted }, "bootstrap key");
      if (r.refused) logger.warn({ keyId: k.id, credits: formatCredits(k.credits) }, NOT_GRANTED[r.refused]);
    }
    // A key deleted from the stack's config must stop working, not live on in the database.
    if (config.configFile !== null) {
      for (const keyId of await store.revokeRemovedBootstrapKeys(config.bootstrapKeys.map((k) => k.id), Date.now())) {
        logger.warn({ keyId }, "bootstrap key no longer in the configuration: revoked");
      }
    }
    warnAboutKeysAtStart(await store.listKeys(), config, logger, Date.now());
  } catch (e) {
    // Not failures a restart fixes (a full volume: until space is freed): said as they are, once per start.
    // A full volume's line has err.code and hint as a store that failed closed has (its alert's description says so).
    if (e instanceof VolumeFullError) {
      logger.error({ err: e, hint: sqliteFile === null ? undefined : failureHint(e, sqliteFile) }, e.message);
      exitNow(1);
      return;
    }
    if (e instanceof SqliteInUseError || e instanceof NewerSchemaError || e instanceof SchemaOwnerNeededError || e instanceof SessionSettingsError || e instanceof BootstrapIdTakenError || e instanceof RestoreRefusedError || e instanceof RestoreInterruptedError) {
      logger.error(e.message);
      exitNow(1);
      return;
    }
    // E.g. a full volume: the same message as a failure while serving, so one log search finds both.
    failedClosed(e);
    exitNow(1);
    return;
  }
  // `starting` stays true until the shim listens (below): a failure or a stop that comes meanwhile
  // is still only noted.
  if (failedWhileStarting !== null) {
    failedClosed(failedWhileStarting);
    exitNow(1);
    return;
  }
  if (stopAsked !== null) {
    logger.info({ signal: stopAsked }, "asked to stop while starting: stopping before listening");
    let code = 0;
    await store.close().catch((e: unknown) => {
      logger.error({ err: cause(e) }, "closing the store failed; the last batch may not be committed");
      code = 1;
    });
    logger.info({ aborted: 0, exitCode: code }, "stopped");
    exitNow(code);
    return;
  }
  if (config.adminToken === null) logger.warn("SHIM_ADMIN_TOKEN is not set: every /admin request will get 401");
  const upstream = createUpstream({ url: config.upstreamUrl, apiKey: config.upstreamApiKey, headersTimeoutMs: config.upstreamTimeoutMs, idleTimeoutMs: config.streamIdleTimeoutMs });
  const app = buildApp({ config, store, upstream, clock: systemClock, logger, metrics });

  let stopping = false;
  let cutting = false;
  let exitCode = 0;
  // drainMs 0 cuts what is in flight at once (each settles for what it delivered, if the store
  // still can), whether or not a drain is already running: a second signal during a drain, or a
  // store failure during one (nothing can be settled any more, so the drain is not waited out).
  stop = async (reason: string, code: number, drainMs: number) => {
    exitCode = Math.max(exitCode, code); // a store failure during a SIGTERM drain still exits 1
    if (stopping) {
      if (drainMs > 0 || cutting) return;
      cutting = true;
      logger.info({ reason, inflight: app.shim.inflight.size }, "cutting what is in flight");
      return app.shim.inflight.abortAll("drain");
    }
    stopping = true;
    logger.info({ reason, inflight: app.shim.inflight.size }, drainingMessage(app.shim.inflight.size, drainMs));
    let aborted = 0;
    try {
      ({ aborted } = await closeApp(app, drainMs));
      await upstream.close();
      await store.close();
    } catch (e) {
      logger.error({ err: cause(e) }, "stopping failed; the last batch may not be committed");
      exitCode = Math.max(exitCode, 1);
    } finally {
      logger.info({ aborted, exitCode }, "stopped");
      exitNow(exitCode);
    }
  };
  // A second signal (Ctrl-C twice) does not wait for the drain: what is in flight is cut now and
  // settled for what it delivered. One that comes once the shim stopped (it only writes its last
  // log lines), or once what was in flight was cut, exits at once.
  const onSignalWhileServing = (signal: string) => {
    if (!stopping) return void stop?.(signal, 0, config.drainTimeoutMs);
    if (exiting) return exitOnRepeatedSignal(signal, exitCode, "without waiting for the last log lines");
    if (cutting) return exitOnRepeatedSignal(signal, Math.max(exitCode, 1), "before the stop finished: what was still in flight is released unsettled (not charged) at the next start");
    void stop?.(signal, 0, 0);
  };

  let address: string;
  try {
    address = await app.listen({ port: config.port, host: config.host });
  } catch (e) {
    // Usually another process on the port: say which setting moves it, not a stack trace.
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "EADDRINUSE" ? "the address is in use by another process" : code === "EADDRNOTAVAIL" ? "no interface has that address" : (e as Error).message;
    logger.error(`cannot listen on ${config.host}:${config.port}: ${why}; set SHIM_PORT (and SHIM_HOST) to a free address`);
    await store.close().catch(() => {});
    exitNow(1);
    return;
  }
  logger.info({ address, upstream: config.upstreamUrl, database: redactUrl(config.databaseUrl) }, "api-shim listening");
  logger.flush();
  listeningAt = address;
  probeReadiness = async () => {
    const probe = await app.shim.readiness.probe();
    return stopping ? null : probe; // a stop meanwhile cut the probe: no warning for that
  };
  // A stop or a store failure that came while `app.listen` was pending is acted on only now. A
  // drain started then found no server to close (closeApp did nothing) and node listened after
  // it began: "api-shim listening" came between "draining" and "stopped", and requests were
  // accepted by a shim that was stopping. Now it is listening -> draining -> stopped (or, with a
  // stop asked before listen, never listening: above).
  starting = false;
  onSignal = onSignalWhileServing;
  if (failedWhileStarting !== null) {
    failedClosed(failedWhileStarting);
    void stop("store failure", 1, 0);
  } else if (stopAsked !== null) void stop(stopAsked, 0, config.drainTimeoutMs);
}

/** A signal that comes when the shim is already stopping as fast as it can: exit now, saying so on stderr. */
function exitOnRepeatedSignal(signal: string, code: number, why: string): never {
  try {
    process.stderr.write(`api-shim: ${signal} again: exiting now (exit code ${code}), ${why}\n`);
  } catch {
    // stderr gone too: nobody to tell.
  }
  process.exit(code);
}

/**
 * The drain's first line: how long the stop may wait, and how not to (a second signal, which was
 * said only in a comment: Ctrl-C during a stream was followed by up to SHIM_DRAIN_TIMEOUT_MS of
 * silence). It starts with "draining", as it always was, for whoever searches the logs for it.
 */
function drainingMessage(inflight: number, drainMs: number): string {
  if (inflight === 0) return "draining: nothing in flight";
  const requests = inflight === 1 ? "1 request" : `${inflight} requests`;
  if (drainMs === 0) return `draining: cutting ${requests} in flight now`;
  const wait = drainMs < 1000 ? `${drainMs} ms` : `${Math.round(drainMs / 100) / 10} s`;
  return `draining: waiting up to ${wait} for ${requests} in flight; send the signal again (Ctrl-C) to cut ${inflight === 1 ? "it" : "them"} now`;
}

/** How long an exit waits for its last log lines to be written. */
const EXIT_LOG_WAIT_MS = 2000;

/** Why a bootstrap key's one-time grant was not made (asked again at every start until it is). */
const NOT_GRANTED: Record<GrantRefusal, string> = {
  balance_too_large: `bootstrap key's credits not granted: they would take its balance past ${formatCredits(MAX_BALANCE_MICRO)} credits, as a top-up would; a later start grants them once they fit`,
  key_inactive: "bootstrap key's credits not granted: the key is revoked (its credits could not be spent)",
};

/** Where the shim listens once it does (null if it never did: a bad configuration, a port taken); for `npm run shim`'s banner. */
export let listeningAt: string | null = null;

/** Once listening: the upstream probed as /ready probes it (null if a stop began meanwhile); for `npm run shim`'s warning at start. */
export let probeReadiness: (() => Promise<Probe | null>) | null = null;

await main();
