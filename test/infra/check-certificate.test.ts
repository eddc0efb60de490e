import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readTemplate } from "../../infra/render/template.ts";
import { writeStubs } from "../support/host-scripts.ts";
import { pollUntil, runTool, tempDir } from "../support/tools.ts";

const DOMAIN = "llm.gpu-sandbox.dev";
const HOST_IP = "192.0.2.10";

/** A bundle directory with bin/check-certificate.sh and a .env naming `domain`. */
function bundleDir(domain: string): string {
  const dir = tempDir();
  mkdirSync(join(dir, "bin"));
  writeFileSync(join(dir, "bin", "check-certificate.sh"), readTemplate("bundle/bin/check-certificate.sh"));
  writeFileSync(join(dir, ".env"), `GS_DATA_DIR=/mnt/gpu-sandbox\nTLS_DOMAIN=${domain}\n`);
  return dir;
}

/** Stand-ins for programs the script runs (name → shell body), in a directory of their own. */
function fakes(programs: Record<string, string>): string {
  const root = tempDir();
  writeStubs(join(root, "bin"), join(root, "calls"), programs);
  return join(root, "bin");
}

function check(pathDirs: string[], env: Record<string, string> = {}, domain = DOMAIN) {
  const dir = bundleDir(domain);
  const full = { PATH: [...pathDirs, "/usr/bin", "/bin"].join(":"), ...env };
  const args = Object.entries(full).map(([k, v]) => `${k}=${v}`);
  return runTool("env", ["-i", ...args, "/bin/bash", join(dir, "bin", "check-certificate.sh"), HOST_IP, "0"]);
}

/** A free port in the range this repository's tests may use (50800-51499). */
async function portInRange(): Promise<number> {
  for (let port = 50_900; port < 51_000; port++) {
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer().once("error", () => resolve(false)).listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error("no free port in 50900-50999");
}

describe("checking the certificate clients get after a Let's Encrypt deploy", () => {
  it("is quiet when the certificate is trusted", () => {
    const r = check([fakes({ curl: "exit 0" })]);
    expect(r.status).toBe(0);
    expect(r.output).toContain(`certificate for ${DOMAIN}: issued by Let's Encrypt, trusted by clients`);
  });

  it("warns, without failing the deploy, when it is the placeholder and the domain's DNS points elsewhere, with the A record to create", () => {
    const r = check([fakes({ curl: "exit 60", getent: "echo '198.51.100.20   STREAM llm.gpu-sandbox.dev'" })]);
    expect(r.status).toBe(0);
    expect(r.output).toContain(`WARNING: clients get a certificate error: nginx still serves the placeholder certificate for ${DOMAIN}`);
    expect(r.output).toContain(`DNS for ${DOMAIN} points at 198.51.100.20, not at this host: create an A record`);
    expect(r.output).toContain(`"${DOMAIN}. A ${HOST_IP}"`);
    expect(r.output).toMatch(/cd \S+ && docker compose logs certbot/);
  });

  it("does not ask for an A record for the kit's own name under Linode's zone", () => {
    const own = `${HOST_IP.replaceAll(".", "-")}.ip.linodeusercontent.com`; // as serving-stack.ts names it
    const r = check([fakes({ curl: "exit 60", getent: "exit 2" })], {}, own);
    expect(r.status).toBe(0);
    expect(r.output).toContain(`DNS for ${own} (Linode's name for this host) does not resolve here yet`);
    expect(r.output).not.toContain("A record");
  });

  it("names rate limits and port 80 when DNS already points at the host", () => {
    const r = check([fakes({ curl: "exit 60", getent: `echo '${HOST_IP}   STREAM ${DOMAIN}'` })]);
    expect(r.status).toBe(0);
    expect(r.output).toContain(`DNS for ${DOMAIN} points here`);
    expect(r.output).toContain("rate limits");
    expect(r.output).toContain("docker compose logs certbot");
  });

  it("names a stray AAAA record, which Let's Encrypt validates over first, when the A record points here", () => {
    // Let's Encrypt prefers IPv6 and falls back to IPv4 only on a timeout: an AAAA record at a
    // parking page or an old server fails every validation, however right the A record is.
    const getent = `case "$1" in ahostsv4) echo '${HOST_IP}   STREAM ${DOMAIN}';; ahostsv6) echo '2001:db8::99   STREAM ${DOMAIN}'; echo '::ffff:${HOST_IP}   STREAM ${DOMAIN}';; *) exit 2;; esac`;
    const ip = `echo '2: eth0    inet6 2600:3c00::f03c:95ff:fe00:10/64 scope global dynamic mngtmpaddr'`;
    const r = check([fakes({ curl: "exit 60", getent, ip })]);
    expect(r.status).toBe(0);
    expect(r.output).toContain(`${DOMAIN} also has an AAAA record (2001:db8::99)`);
    expect(r.output).not.toContain("::ffff:");
    // The other causes stay listed: the AAAA record may not be the one at fault.
    expect(r.output).toContain("rate limits");
    // An AAAA record at the host's own IPv6 address is right: not named.
    const own = `case "$1" in ahostsv4) echo '${HOST_IP}   STREAM ${DOMAIN}';; ahostsv6) echo '2600:3c00::f03c:95ff:fe00:10   STREAM ${DOMAIN}';; *) exit 2;; esac`;
    const right = check([fakes({ curl: "exit 60", getent: own, ip })]);
    expect(right.output).not.toContain("AAAA");
    expect(right.output).toContain(`DNS for ${DOMAIN} points here`);
  });

  it("does not blame the certificate for other failures", () => {
    const r = check([fakes({ curl: "exit 28" })]);
    expect(r.status).toBe(0);
    expect(r.output).toContain("could not check the certificate");
    expect(r.output).not.toContain("WARNING");
  });

  it("tells a real self-signed placeholder from a trusted certificate, as curl sees it", async () => {
    const dir = tempDir();
    const made = runTool("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
      "-subj", `/CN=${DOMAIN}/O=gpu-sandbox`, "-addext", `subjectAltName=DNS:${DOMAIN}`, "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")]);
    expect(made.status, made.output).toBe(0);
    const port = await portInRange();
    const server = spawn("openssl", ["s_server", "-accept", `127.0.0.1:${port}`, "-cert", join(dir, "cert.pem"), "-key", join(dir, "key.pem"), "-www", "-quiet"], { stdio: "ignore" });
    try {
      const up = await pollUntil(() => new Promise<boolean>((resolve) => {
        const socket = createConnection(port, "127.0.0.1").once("connect", () => { socket.destroy(); resolve(true); }).once("error", () => resolve(false));
      }), 10_000, 100);
      expect(up).toBe(true);
      const r = check([fakes({ getent: "exit 2" })], { GS_TLS_CONNECT: `127.0.0.1:${port}` });
      expect(r.status).toBe(0);
      expect(r.output).toContain(`nginx still serves the placeholder certificate for ${DOMAIN}`);
      expect(r.output).toContain(`DNS for ${DOMAIN} points at nothing`);
    } finally {
      server.kill();
    }
  });
});
