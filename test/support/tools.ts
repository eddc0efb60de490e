import { spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Debian package that provides each program the tests run for real (.ci/run installs them). */
const PACKAGES: Record<string, string> = {
  "cloud-init": "cloud-init",
  shellcheck: "shellcheck",
  "docker-compose": "docker-compose",
  nginx: "nginx",
  openssl: "openssl",
  strace: "strace",
  "mkfs.ext4": "e2fsprogs",
  gcc: "gcc",
  python3: "python3",
};

export interface RunResult {
  readonly status: number;
  readonly output: string;
}

/**
 * Runs a real program. A missing program fails the test with the install command instead of
 * skipping it: a validation that silently did not run would be worse than none.
 *
 * Output goes through a file, not a pipe: Node's child pipes are sockets, and programs that
 * open /dev/stderr by name (nginx's `error_log /dev/stderr`, as in its container) cannot open
 * a socket that way.
 */
export function runTool(program: string, args: readonly string[], options: { cwd?: string; input?: string } = {}): RunResult {
  const outFile = writeTemp("output.txt", "");
  const fd = openSync(outFile, "w");
  let result;
  try {
    result = spawnSync(program, args, { cwd: options.cwd, input: options.input ?? "", stdio: ["pipe", fd, fd], timeout: 120_000 });
  } finally {
    closeSync(fd);
  }
  const output = readFileSync(outFile, "utf8");
  rmSync(outFile, { force: true });
  if (result.error && (result.error as NodeJS.ErrnoException).code === "ENOENT") {
    throw new Error(`${program} is not installed: apt-get install ${PACKAGES[program] ?? program} (.ci/run installs it)`);
  }
  if (result.error) throw result.error;
  return { status: result.status ?? -1, output };
}

/** The directories tempDir made in this test file: removed after it (test/support/remove-temp-dirs.ts). */
export const madeTempDirs: string[] = [];

/** A fresh temporary directory for one test, removed once its file's tests have run. */
export function tempDir(prefix = "gpu-sandbox-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  madeTempDirs.push(dir);
  return dir;
}

export function writeTemp(name: string, content: string, dir = tempDir()): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

/** A TCP port free on 127.0.0.1 right now (the OS picks it): for a server a test starts, or one where nothing listens. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * Calls `check` every `intervalMs` until it returns true or `timeoutMs` has passed; returns its
 * last answer. It never throws on a timeout: the test's own assertion afterwards says what failed.
 */
export async function pollUntil(check: () => boolean | Promise<boolean>, timeoutMs = 5000, intervalMs = 20): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** POST `body` as JSON to `url` and read the answer's text (a test upstream's answer, raw). */
export async function postText(url: string, body: unknown): Promise<string> {
  return (await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })).text();
}

/** The JSON of each SSE event's `data:` line (with or without an `event:` line before it), `[DONE]` and comments left out. */
export function sseDataEvents<T = Record<string, any>>(text: string): T[] {
  return text.split("\n\n").flatMap((e) => e.split("\n").filter((l) => l.startsWith("data: {")).map((l) => JSON.parse(l.slice("data: ".length)) as T));
}
