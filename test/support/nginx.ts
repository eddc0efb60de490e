import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { trackChild } from "./running-children.ts";
import { runTool, tempDir, type RunResult } from "./tools.ts";

/**
 * A rendered nginx.conf as this machine's nginx reads it. The config is written for the image's
 * nginx (1.30): `http2 on;` came in 1.25.1, so for an older one (Debian 12's 1.22) HTTP/2 moves
 * back to the `listen` line, the one difference between the two versions' reading.
 */
export function forLocalNginx(conf: string): string {
  localNginxVersion ??= /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(runTool("nginx", ["-v"]).output)?.slice(1).map(Number) ?? [0, 0, 0];
  const [major, minor, patch] = localNginxVersion as [number, number, number];
  if (major > 1 || minor > 25 || (minor === 25 && patch >= 1)) return conf;
  return conf.replace(/listen (\S+) ssl;\n(\s*#[^\n]*\n)*\s*http2 on;/g, "listen $1 ssl http2;");
}
let localNginxVersion: number[] | undefined;

/**
 * `nginx -t` on a rendered nginx.conf as this machine's nginx reads it, with the shim's address
 * one nginx can resolve and a certificate made for it: the tool's output and exit status.
 */
export function testNginxConf(renderedConf: string): RunResult {
  const dir = tempDir("gpu-sandbox-nginx-t-");
  writeFileSync(join(dir, "nginx.conf"), forLocalNginx(renderedConf).replace(RENDERED_UPSTREAM, "server 127.0.0.1:9;"));
  mkdirSync(join(dir, "tls"));
  const cert = runTool("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
    "-subj", "/CN=localhost", "-keyout", join(dir, "tls/privkey.pem"), "-out", join(dir, "tls/fullchain.pem")]);
  if (cert.status !== 0) throw new Error(`openssl: ${cert.output}`);
  return runTool("nginx", ["-t", "-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log"), "-g", `pid ${dir}/nginx.pid;`]);
}

/** The rendered nginx.conf's only upstream address (templates/nginx/nginx.conf). */
export const RENDERED_UPSTREAM = "server shim:8080;";
/** Where the rendered /metrics/vllm finds vLLM (api-locations.conf), resolved by Docker's DNS at each request. */
export const RENDERED_VLLM_METRICS = "set $vllm_metrics vllm:8000;";

export interface RunningNginx {
  readonly dir: string;
  /** PEM of the certificate nginx serves (for the client to trust). */
  readonly certificate: string;
  /** What nginx wrote to stdout (access log) and stderr (error log). */
  output(): string;
  stop(): Promise<void>;
}

/**
 * Debian's nginx with a rendered nginx.conf, changed in one place only: the shim's address (and,
 * with `options.listen`, its ports).
 * The certificate is made here with openssl for `localhost` and 127.0.0.1, in the tls/ directory
 * next to the config, where the rendered config expects it; it expires in `options.certificateDays`
 * (1 unless given; a negative number: it expired that many days ago).
 */
export async function startNginx(renderedConf: string, shimAddress: string, ports: readonly number[],
  options: { listen?: ReadonlyMap<number, number>; certificateDays?: number; launcher?: readonly string[]; vllmAddress?: string } = {}): Promise<RunningNginx> {
  if (!renderedConf.includes(RENDERED_UPSTREAM)) throw new Error(`the rendered nginx.conf has no "${RENDERED_UPSTREAM}"`);
  const dir = tempDir("gpu-sandbox-nginx-");
  // vLLM's metrics: at `options.vllmAddress`, else a closed port (502), never Docker's resolver.
  let conf = forLocalNginx(renderedConf).replace(RENDERED_UPSTREAM, `server ${shimAddress};`)
    .replaceAll(RENDERED_VLLM_METRICS, `set $vllm_metrics ${options.vllmAddress ?? "127.0.0.1:9"};`);
  // `listen`: the rendered ports (8080, 8443) moved to other loopback ports, for a test file that
  // runs beside another nginx test.
  for (const [rendered, port] of options.listen ?? []) {
    if (!conf.includes(`listen ${rendered} `)) throw new Error(`the rendered nginx.conf does not listen on ${rendered}`);
    conf = conf.replaceAll(`listen ${rendered} `, `listen 127.0.0.1:${port} `);
  }
  writeFileSync(join(dir, "nginx.conf"), conf);
  mkdirSync(join(dir, "tls"));
  const days = options.certificateDays ?? 1;
  const subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", join(dir, "tls/privkey.pem")];
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  // `req -x509` takes a positive -days only; `x509 -req` signs the request with a negative one.
  const steps = days > 0
    ? [["req", "-x509", ...ec, "-days", String(days), ...subject, "-out", join(dir, "tls/fullchain.pem")]]
    : [["req", "-new", ...ec, ...subject, "-out", join(dir, "tls/request.pem")],
      ["x509", "-req", "-in", join(dir, "tls/request.pem"), "-key", join(dir, "tls/privkey.pem"), "-days", String(days),
        "-copy_extensions", "copy", "-out", join(dir, "tls/fullchain.pem")]];
  for (const args of steps) {
    const cert = runTool("openssl", args);
    if (cert.status !== 0) throw new Error(`openssl: ${cert.output}`);
  }

  const logPath = join(dir, "nginx.out");
  const fd = openSync(logPath, "w");
  let child: ChildProcess;
  try {
    // `launcher`: a command nginx runs under (e.g. prlimit, for the limits a container starts with).
    const [file, ...args] = [...options.launcher ?? [], "nginx",
      "-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log"), "-g", `daemon off; pid ${dir}/nginx.pid;`];
    child = spawn(file!, args, { stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
  trackChild(child); // a test file whose hooks fail to stop it leaves no nginx holding its ports
  const output = () => readFileSync(logPath, "utf8");
  let exited = false;
  child.once("exit", () => { exited = true; });
  for (const port of ports) {
    await waitForPort(port, () => (exited ? `nginx exited:\n${output()}` : undefined));
  }
  return {
    dir,
    certificate: readFileSync(join(dir, "tls/fullchain.pem"), "utf8"),
    output,
    async stop() {
      if (exited) return;
      const done = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGQUIT");
      await done;
    },
  };
}

async function waitForPort(port: number, failure: () => string | undefined, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const problem = failure();
    if (problem) throw new Error(problem);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => { socket.destroy(); resolve(true); });
      socket.once("error", () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
