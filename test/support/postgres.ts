import { spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { freePort } from "./tools.ts";

/**
 * A throwaway PostgreSQL cluster for one test file: initdb in a temporary directory, listening
 * on 127.0.0.1 at a free port (and a socket in that directory, never the system's), trust
 * authentication, stopped and deleted by `stop()`. Durability is off (fsync, full pages): the
 * tests are about correctness, and a test database need not survive a power cut.
 *
 * PostgreSQL refuses to run as root, so as root it runs as the `postgres` user the Debian
 * package creates. A missing server fails the test with the install command (.ci/run installs
 * it), as the other real programs do.
 */
/** Runs `text` (with `values`) on a connection of its own to `url`, and closes it: the rows. */
export async function sqlOn<T extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

export interface RunningPostgres {
  /** Its TCP port on 127.0.0.1, and the directory of its Unix socket. */
  port: number;
  socketDir: string;
  /** postgres://shim@127.0.0.1:<port>/<database> of a new, empty database. */
  newDatabase(): Promise<string>;
  /** Stops the server, as a crash would (`immediate`), keeping its data: `start()` brings it back. */
  kill(): void;
  start(): void;
  stop(): Promise<void>;
  /** A hot standby of this server (streaming replication: it answers reads, takes no writes) on a port of its own. */
  startStandby(): Promise<Standby>;
}

export interface Standby {
  /** postgres://shim@127.0.0.1:<its port>/<database>: `database` (made on the primary) as the standby has it. */
  url(database: string): string;
  stop(): void;
}

/** The server's user and database owner (trust authentication). */
export const USER = "shim";

function binDir(): string {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root) ? readdirSync(root).filter((v) => existsSync(join(root, v, "bin", "initdb"))) : [];
  if (versions.length === 0) throw new Error("PostgreSQL is not installed: apt-get install postgresql (.ci/run installs it)");
  return join(root, versions.sort((a, b) => Number(b) - Number(a))[0]!, "bin");
}

/** A temporary directory the server's user owns (`postgres` when running as root). */
export function serverDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (process.getuid?.() === 0) {
    const id = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
    const gid = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
    chownSync(dir, Number(id.stdout.trim()), Number(gid.stdout.trim()));
  }
  return dir;
}

/**
 * Runs a server program to its end, as the `postgres` user when running as root (PostgreSQL and
 * PgBouncer refuse root); throws with its output and the end of `log` when it fails.
 */
export function runAsServer(program: string, args: string[], log: string): void {
  const [cmd, argv] = process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", program, ...args]] : [program, args];
  const r = spawnSync(cmd, argv, { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) {
    const tail = existsSync(log) ? readFileSync(log, "utf8").slice(-2000) : "";
    throw new Error(`${program} failed (${r.status}): ${r.stderr || r.stdout}${tail ? `\nlog:\n${tail}` : ""}`);
  }
}

export async function startPostgres(): Promise<RunningPostgres> {
  const bin = binDir();
  const dir = serverDir("shim-pg-");
  const data = join(dir, "data");
  const run = (program: string, args: string[]) => runAsServer(join(bin, program), args, join(dir, "server.log"));
  // A collation like an operator's database (en_US.UTF-8's, through ICU: this machine has no such
  // libc locale), not C: the store must sort names and ids in byte order, as SQLite does, with
  // COLLATE "C" wherever it orders, and a C cluster would hide one left out.
  run("initdb", ["-D", data, "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--locale-provider=icu", "--icu-locale=en-US", "--no-sync"]);
  const port = await freePort();
  const settingsAt = (p: number, socketDir: string) => [
    `-c listen_addresses=127.0.0.1`, `-c port=${p}`, `-c unix_socket_directories=${socketDir}`,
    `-c fsync=off`, `-c full_page_writes=off`, `-c max_connections=300`,
  ].join(" ");
  const settings = settingsAt(port, dir);
  const start = () => run("pg_ctl", ["-D", data, "-o", settings, "-l", join(dir, "server.log"), "-w", "-t", "60", "start"]);
  start();
  const kill = () => run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
  let stopped = false;
  let n = 0;
  const base = `postgres://${USER}@127.0.0.1:${port}`;
  return {
    port,
    socketDir: dir,
    async newDatabase() {
      const name = `t${process.pid}_${++n}`;
      const admin = new pg.Client({ connectionString: `${base}/postgres` });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      return `${base}/${name}`;
    },
    kill,
    start,
    async startStandby() {
      const standbyDir = serverDir("shim-pg-standby-");
      const standbyData = join(standbyDir, "data");
      // A copy of the primary that follows it (-R: its replication settings, standby.signal).
      run("pg_basebackup", ["-h", "127.0.0.1", "-p", String(port), "-U", USER, "-D", standbyData, "-R", "-X", "stream", "--no-sync", "-c", "fast"]);
      const standbyPort = await freePort();
      run("pg_ctl", ["-D", standbyData, "-o", settingsAt(standbyPort, standbyDir), "-l", join(standbyDir, "server.log"), "-w", "-t", "60", "start"]);
      return {
        url: (database) => `postgres://${USER}@127.0.0.1:${standbyPort}/${database}`,
        stop() {
          try {
            run("pg_ctl", ["-D", standbyData, "-m", "immediate", "-w", "stop"]);
          } finally {
            rmSync(standbyDir, { recursive: true, force: true });
          }
        },
      };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        kill();
      } catch {} // already down (a test killed it)
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
