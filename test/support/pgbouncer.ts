import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { type RunningPostgres, runAsServer, serverDir, USER } from "./postgres.ts";
import { freePort, pollUntil } from "./tools.ts";

/**
 * PgBouncer (Debian's `pgbouncer`) in front of a throwaway PostgreSQL (postgres.ts), on loopback
 * at a free port (no Unix socket), for one test file: any database name passes through to the
 * server's of that name, logged in as its user. `settings`: more of pgbouncer.ini's [pgbouncer]
 * section (`pool_mode`, `ignore_startup_parameters`). A missing PgBouncer fails the test with the
 * install command (.ci/run installs it), as the other real programs do.
 */
export interface RunningPgbouncer {
  /** postgres://shim@127.0.0.1:<its port>/<database>. */
  url(database: string): string;
  stop(): Promise<void>;
}

const PROGRAM = "/usr/sbin/pgbouncer";

export async function startPgbouncer(server: RunningPostgres, settings: Record<string, string>): Promise<RunningPgbouncer> {
  if (!existsSync(PROGRAM)) throw new Error("PgBouncer is not installed: apt-get install pgbouncer (.ci/run installs it)");
  const dir = serverDir("shim-pgbouncer-");
  const port = await freePort();
  const [config, log, pidFile] = ["pgbouncer.ini", "pgbouncer.log", "pgbouncer.pid"].map((f) => join(dir, f)) as [string, string, string];
  const ini = {
    listen_addr: "127.0.0.1", listen_port: String(port), unix_socket_dir: "", auth_type: "any",
    logfile: log, pidfile: pidFile, max_client_conn: "1000", default_pool_size: "100", ...settings,
  };
  writeFileSync(config, [
    "[databases]", `* = host=127.0.0.1 port=${server.port} user=${USER}`,
    "[pgbouncer]", ...Object.entries(ini).map(([k, v]) => `${k} = ${v}`),
  ].join("\n") + "\n", { mode: 0o644 });
  runAsServer(PROGRAM, ["-d", config], log); // returns once it runs in the background, which then writes pidFile
  const listening = () => new Promise<boolean>((resolve) => {
    const s = connect(port, "127.0.0.1", () => {
      s.end();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
  // The pid once pgbouncer has written a whole one: the file exists a moment before, and an empty
  // one read as Number("") is 0, and process.kill(0) signals this whole process group (vitest and
  // npm: a loaded CI machine's run ended with SIGTERM that way).
  const writtenPid = (): number | undefined => {
    const text = existsSync(pidFile) ? readFileSync(pidFile, "utf8").trim() : "";
    return /^[1-9]\d*$/.test(text) ? Number(text) : undefined;
  };
  const up = await pollUntil(async () => writtenPid() !== undefined && (await listening()), 15_000);
  const pid = writtenPid();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (pid !== undefined && pid > 1) {
      process.kill(pid, "SIGTERM"); // its immediate shutdown
      await pollUntil(() => !running(pid), 5000);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  if (!up) {
    const why = `pgbouncer does not listen on ${port}: ${existsSync(log) ? readFileSync(log, "utf8").slice(-2000) : "no log"}`;
    await stop();
    throw new Error(why);
  }
  return { url: (database) => `postgres://${USER}@127.0.0.1:${port}/${database}`, stop };
}

/** Whether process `pid` still runs (an exited one the init process has not reaped counts as gone). */
function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, "utf8") : "";
  return !/^\d+ \(.*\) Z/.test(stat);
}
