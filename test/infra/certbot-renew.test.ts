// The certbot container's loop (templates/bundle/certbot-renew.sh), run by sh with stubs for
// certbot, cp and sleep (test/support/host-scripts.ts), its absolute paths moved into a temp dir.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DNS_NAME_PLACEHOLDER } from "../../infra/render/env-file.ts";
import { readTemplate } from "../../infra/render/template.ts";
import { REPO_ROOT } from "../../infra/repo-root.ts";
import { writeStubs } from "../support/host-scripts.ts";
import { runTool, tempDir } from "../support/tools.ts";

interface Loop {
  /** certbot's stub body (it runs in the temp dir's root; `$live` is its live/ directory). */
  readonly certbot?: string;
  readonly cp?: string;
  /** The run ends (TERM to the script, which it exits 0 on) at this sleep. */
  readonly sleeps?: number;
  readonly env?: Record<string, string>;
  /** Makes <root>/live and <root>/out before the script runs. */
  readonly setup?: (live: string, out: string) => void;
}

/**
 * Runs the loop until its `sleeps`-th sleep, with certbot's live/ and the directory nginx reads
 * (out/) in a temp dir. By default certbot "obtains" a new pair in live/llm.example.com and out/
 * holds the previous one.
 */
function runLoop({ certbot = "", cp = `exec /bin/cp "$@"`, sleeps = 1, env = {}, setup }: Loop = {}) {
  const root = tempDir("certbot-renew-");
  const live = join(root, "live");
  const out = join(root, "out");
  mkdirSync(out);
  if (setup) setup(live, out);
  else {
    mkdirSync(join(live, "llm.example.com"), { recursive: true });
    writePair(join(live, "llm.example.com"), "new key\n", "new certificate\n");
    writePair(out, "old key\n", "old certificate\n");
  }
  const script = join(root, "certbot-renew.sh");
  writeFileSync(script, readTemplate("bundle/certbot-renew.sh")
    .replaceAll("/etc/letsencrypt/live/", `${live}/`).replaceAll("/gpu-sandbox-tls", out));
  const bin = join(root, "bin");
  const calls = join(root, "calls");
  writeStubs(bin, calls, {
    certbot: `cd "${root}"; live="${live}"\n${certbot}`,
    cp,
    // counted with builtins: the retry tests run a hundred rounds
    sleep: `n=0; [ ! -f "${root}/slept" ] || read -r n < "${root}/slept"; echo $((n + 1)) > "${root}/slept"
      [ $((n + 1)) -lt ${sleeps} ] || kill -TERM $PPID`,
  });
  const r = spawnSync("sh", [script], {
    encoding: "utf8", timeout: 25_000,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, TLS_DOMAIN: "llm.example.com", ...env },
  });
  const lines = existsSync(calls) ? readFileSync(calls, "utf8").split("\n") : [];
  return {
    ...r,
    root,
    installed: { key: readFileSync(join(out, "privkey.pem"), "utf8"), certificate: readFileSync(join(out, "fullchain.pem"), "utf8") },
    outFiles: readdirSync(out).sort(),
    sleeps: lines.filter((l) => l.startsWith("sleep ")),
  };
}

function writePair(dir: string, key: string, certificate: string) {
  writeFileSync(join(dir, "privkey.pem"), key);
  writeFileSync(join(dir, "fullchain.pem"), certificate);
}

/** One round: certbot succeeds, the script copies with `cp` as given, its first sleep ends the run. */
function renewOnce(cp: string, installedKey = "old key\n", installedCertificate = "old certificate\n") {
  return runLoop({
    cp,
    setup: (live, out) => {
      mkdirSync(join(live, "llm.example.com"), { recursive: true });
      writePair(join(live, "llm.example.com"), "new key\n", "new certificate\n");
      writePair(out, installedKey, installedCertificate);
    },
  });
}

describe("certbot-renew.sh installing a renewed certificate", () => {
  it("repairs a pair whose certificate is current and whose key is not (an older script's key copy failed)", () => {
    const r = renewOnce(`exec /bin/cp "$@"`, "old key\n", "new certificate\n");
    expect(r.installed).toEqual({ key: "new key\n", certificate: "new certificate\n" });
    expect(r.sleeps).toEqual(["sleep 12h"]);
  });

  it("installs the key and the certificate together, then sleeps 12 h", () => {
    const r = renewOnce(`exec /bin/cp "$@"`);
    expect(r.stdout).toContain("certbot: installed the certificate for llm.example.com");
    expect(r.installed).toEqual({ key: "new key\n", certificate: "new certificate\n" });
    expect(r.outFiles).toEqual(["fullchain.pem", "privkey.pem"]);
    expect(r.sleeps).toEqual(["sleep 12h"]);
  });

  it("keeps the old pair, removes what it staged, says so and retries in 15 minutes when the certificate's copy fails (a full volume)", () => {
    // The key's copy succeeds; the certificate's writes part of the file, then ENOSPC.
    const r = renewOnce(`case "$2" in
      *fullchain*) printf 'new cer' > "$2"; echo "cp: error writing '$2': No space left on device" >&2; exit 1;;
    esac
    exec /bin/cp "$@"`);
    expect(r.stdout).not.toContain("installed the certificate");
    expect(r.stderr).toContain("No space left on device");
    expect(r.stderr).toContain("certbot: could not copy the certificate for llm.example.com");
    // a new key beside the old certificate: nginx's next start fails (key values mismatch)
    expect(r.installed).toEqual({ key: "old key\n", certificate: "old certificate\n" });
    expect(r.outFiles).toEqual(["fullchain.pem", "privkey.pem"]);
    expect(r.sleeps).toEqual(["sleep 900"]);
  });
});

describe("certbot-renew.sh with .env.example's TLS_DOMAIN placeholder left in place", () => {
  it("never asks Let's Encrypt for it, and says hourly which line of .env to change", () => {
    const r = runLoop({ certbot: "touch asked", sleeps: 2, env: { TLS_DOMAIN: DNS_NAME_PLACEHOLDER } });
    expect(existsSync(join(r.root, "asked"))).toBe(false);
    expect(r.status).toBe(0); // ended by TERM, as `docker compose stop` does
    expect(r.sleeps).toEqual(["sleep 3600", "sleep 3600"]);
    expect(r.stderr).toContain(`certbot: TLS_DOMAIN in .env is still the placeholder ${DNS_NAME_PLACEHOLDER}: set it to this host's DNS name`);
  });
});

describe("certbot-renew.sh asking certbot", () => {
  // Pinned so that an image update cannot silently drop one: each is a behaviour the kit relies on.
  const certbotArgs = (env: Record<string, string>) => {
    const r = runLoop({ certbot: `printf '%s\\n' "$@" > args`, env });
    return readFileSync(join(r.root, "args"), "utf8").trimEnd().split("\n");
  };
  const common = [
    "certonly", "--webroot", "-w", "/var/www/certbot", "-d", "llm.example.com",
    // the lineage the script copies from, whatever lineages earlier runs left for the name
    "--cert-name", "llm.example.com",
    "--non-interactive", "--agree-tos",
    // every 12 h: asks Let's Encrypt only when the certificate is due
    "--keep-until-expiring",
  ];

  it("passes the webroot, the domain as the certificate's name, and no prompt", () => {
    expect(certbotArgs({ TLS_EMAIL: "" })).toEqual([...common, "--register-unsafely-without-email"]);
  });

  it("registers tls.email as one argument, without the EFF's mailing list", () => {
    expect(certbotArgs({ TLS_EMAIL: "ops@acme.io" })).toEqual([...common, "--email", "ops@acme.io", "--no-eff-email"]);
  });
});

describe("certbot-renew.sh finding the certificate certbot wrote", () => {
  const oldInstalled = (live: string, out: string) => {
    mkdirSync(join(live, "llm.example.com"), { recursive: true });
    writePair(join(live, "llm.example.com"), "old key\n", "old certificate\n");
    writePair(out, "old key\n", "old certificate\n");
    // written before this round
    const past = new Date(Date.now() - 86_400_000);
    for (const f of ["privkey.pem", "fullchain.pem"]) utimesSync(join(live, "llm.example.com", f), past, past);
  };

  it("installs the renewed certificate when another lineage holds the name (certbot picks a lineage itself unless told)", () => {
    // Without --cert-name certbot renews the other lineage, live/llm.example.com-0001.
    const r = runLoop({
      setup: oldInstalled,
      certbot: `case "$*" in *"--cert-name llm.example.com "*) d="$live/llm.example.com";; *) d="$live/llm.example.com-0001";; esac
        mkdir -p "$d"; echo "new key" > "$d/privkey.pem"; echo "new certificate" > "$d/fullchain.pem"`,
    });
    expect(r.installed).toEqual({ key: "new key\n", certificate: "new certificate\n" });
    expect(r.sleeps).toEqual(["sleep 12h"]);
  });

  it("says so, and what to do, when certbot wrote a new lineage anyway (it could not read renewal/<domain>.conf)", () => {
    // certbot then makes <domain>-0001 even with --cert-name, and exits 0.
    const r = runLoop({
      setup: oldInstalled,
      certbot: `d="$live/llm.example.com-0001"; mkdir -p "$d"; echo "new key" > "$d/privkey.pem"; echo "new certificate" > "$d/fullchain.pem"`,
    });
    expect(r.stdout).not.toContain("installed the certificate");
    expect(r.stderr).toContain("certbot: certbot wrote the certificate for llm.example.com to");
    expect(r.stderr).toContain("llm.example.com-0001");
    expect(r.stderr).toContain("renewal/llm.example.com.conf");
    expect(r.installed).toEqual({ key: "old key\n", certificate: "old certificate\n" });
  });

  it("renews as usual beside an older lineage left for the name", () => {
    const r = runLoop({
      setup: (live, out) => {
        oldInstalled(live, out);
        mkdirSync(join(live, "llm.example.com-0001"));
        writePair(join(live, "llm.example.com-0001"), "older key\n", "older certificate\n");
        const past = new Date(Date.now() - 2 * 86_400_000);
        for (const f of ["privkey.pem", "fullchain.pem"]) utimesSync(join(live, "llm.example.com-0001", f), past, past);
      },
      certbot: `d="$live/llm.example.com"; echo "new key" > "$d/privkey.pem"; echo "new certificate" > "$d/fullchain.pem"`,
    });
    expect(r.stderr).toBe("");
    expect(r.installed).toEqual({ key: "new key\n", certificate: "new certificate\n" });
    expect(r.sleeps).toEqual(["sleep 12h"]);
  });
});

describe("certbot-renew.sh retrying a failed issuance", () => {
  // Let's Encrypt pauses a name for an account after 3,600 consecutive failed authorizations
  // (refilled one a day): 15-minute retries reach it in about 38 days.
  it("retries every 15 minutes for a day (96 tries), then hourly, and says so", () => {
    const r = runLoop({ certbot: "exit 1", sleeps: 99 });
    expect(r.sleeps).toEqual([...Array(96).fill("sleep 900"), ...Array(3).fill("sleep 3600")]);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines[95]).toBe("certbot: could not obtain a certificate for llm.example.com; retrying in 15 minutes");
    expect(lines[96]).toMatch(/^certbot: could not obtain a certificate for llm\.example\.com \(97 tries in a row, over a day\); retrying hourly from now on/);
    expect(lines[96]).toContain("Let's Encrypt");
  });

  it("goes back to 15 minutes after a success", () => {
    // certbot fails 97 times, succeeds once (a new certificate, installed), then fails again.
    const r = runLoop({
      certbot: `[ "$(grep -c '^certbot ' calls)" -eq 98 ] || exit 1`,
      sleeps: 99,
    });
    expect(r.sleeps.slice(95)).toEqual(["sleep 900", "sleep 3600", "sleep 12h", "sleep 900"]);
  });

  it("retries a failed copy in 15 minutes, whatever certbot's failures before", () => {
    const r = runLoop({
      certbot: `[ "$(grep -c '^certbot ' calls)" -gt 100 ] || exit 1`,
      cp: "exit 1",
      sleeps: 101,
    });
    expect(r.sleeps.slice(99)).toEqual(["sleep 3600", "sleep 900"]);
    expect(r.stderr.trimEnd().split("\n").at(-1)).toContain("could not copy the certificate for llm.example.com");
  });
});

it("certbot-renew.sh passes shellcheck", () => {
  const result = runTool("shellcheck", [join(REPO_ROOT, "templates/bundle/certbot-renew.sh")]);
  expect(result.output).toBe("");
  expect(result.status).toBe(0);
});
