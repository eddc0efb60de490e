// The certbot container's loop (templates/bundle/certbot-renew.sh), run by sh with stubs for
// certbot, cp and sleep (test/support/host-scripts.ts), its absolute paths moved into a temp dir.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { readTemplate } from "../../infra/render/template.ts";
import { REPO_ROOT } from "../../infra/repo-root.ts";
import { writeStubs } from "../support/host-scripts.ts";
import { runTool, tempDir } from "../support/tools.ts";

/**
 * One round of the loop: certbot "obtains" a new certificate and key (in live/), the script
 * copies them to out/ (which holds the previous pair) with `cp` as given, then its first sleep
 * ends the run (TERM to the script, which it exits 0 on).
 */
function renewOnce(cp: string, installedKey = "old key\n", installedCertificate = "old certificate\n") {
  const root = tempDir("certbot-renew-");
  const live = join(root, "live", "llm.example.com");
  const out = join(root, "out");
  mkdirSync(live, { recursive: true });
  mkdirSync(out);
  writeFileSync(join(live, "privkey.pem"), "new key\n");
  writeFileSync(join(live, "fullchain.pem"), "new certificate\n");
  writeFileSync(join(out, "privkey.pem"), installedKey);
  writeFileSync(join(out, "fullchain.pem"), installedCertificate);
  const script = join(root, "certbot-renew.sh");
  writeFileSync(script, readTemplate("bundle/certbot-renew.sh")
    .replaceAll("/etc/letsencrypt/live/", `${root}/live/`).replaceAll("/gpu-sandbox-tls", out));
  const bin = join(root, "bin");
  writeStubs(bin, join(root, "calls"), { certbot: "", cp, sleep: "kill -TERM $PPID" });
  const r = spawnSync("sh", [script], {
    encoding: "utf8", timeout: 10_000, env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, TLS_DOMAIN: "llm.example.com" },
  });
  const calls = existsSync(join(root, "calls")) ? readFileSync(join(root, "calls"), "utf8") : "";
  return {
    ...r,
    installed: { key: readFileSync(join(out, "privkey.pem"), "utf8"), certificate: readFileSync(join(out, "fullchain.pem"), "utf8") },
    outFiles: readdirSync(out).sort(),
    sleeps: calls.split("\n").filter((l) => l.startsWith("sleep ")),
  };
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

it("certbot-renew.sh passes shellcheck", () => {
  const result = runTool("shellcheck", [join(REPO_ROOT, "templates/bundle/certbot-renew.sh")]);
  expect(result.output).toBe("");
  expect(result.status).toBe(0);
});
