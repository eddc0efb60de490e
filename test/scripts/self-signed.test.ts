import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { createServer, type Server } from "node:https";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { main as manageKeys } from "../../scripts/manage-keys.ts";
import { main as reapExpired } from "../../scripts/reap-expired.ts";
import { main as reportUsage } from "../../scripts/report-usage.ts";
import { main as smokeTest } from "../../scripts/smoke-test.ts";
import { startShim, type Harness } from "../support/shim-harness.ts";
import { runTool, tempDir } from "../support/tools.ts";
import { FakePulumi } from "./fake-pulumi.ts";

/**
 * tls.mode self-signed: the endpoint's certificate is signed by the tenant's own CA, which the
 * scripts must trust (smoke-test --ca, or the stack's caCertificate output) and nothing else does.
 * Each test starts with an HTTPS front whose certificate this process does not trust yet (trust
 * is added process-wide), so "fails without, passes with" is checked in one order per CA.
 */
let h: Harness;
beforeAll(async () => {
  h = await startShim();
});
afterAll(() => h.close());

function openssl(args: string[]): void {
  const made = runTool("openssl", args);
  if (made.status !== 0) throw new Error(`openssl: ${made.output}`);
}

/**
 * What the front presents: a self-signed certificate for 127.0.0.1 (the CA itself), or a
 * certificate for 127.0.0.1 signed by a fresh CA, alone or followed by the CA (as the stack's
 * nginx does with tls.mode self-signed). Node names each failure differently.
 */
type Presented = "self-signed" | "leaf" | "leaf and CA";

/** A TLS-terminating proxy in front of the shim with a fresh certificate for 127.0.0.1. */
async function httpsFront(presented: Presented = "self-signed"): Promise<{ url: string; caFile: string; ca: string; server: Server }> {
  const dir = tempDir();
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  if (presented === "self-signed") {
    openssl(["req", "-x509", ...ec, "-days", "1", "-subj", "/CN=gpu-sandbox test CA", "-addext", "subjectAltName=IP:127.0.0.1",
      "-keyout", join(dir, "key.pem"), "-out", join(dir, "ca.pem")]);
  } else {
    openssl(["req", "-x509", ...ec, "-days", "1", "-subj", "/CN=gpu-sandbox test CA", "-keyout", join(dir, "ca-key.pem"), "-out", join(dir, "ca.pem")]);
    openssl(["req", ...ec, "-subj", "/CN=127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "leaf.csr")]);
    writeFileSync(join(dir, "leaf.ext"), "subjectAltName=IP:127.0.0.1\n");
    openssl(["x509", "-req", "-in", join(dir, "leaf.csr"), "-CA", join(dir, "ca.pem"), "-CAkey", join(dir, "ca-key.pem"), "-set_serial", "1",
      "-days", "1", "-extfile", join(dir, "leaf.ext"), "-out", join(dir, "leaf.pem")]);
  }
  const ca = readFileSync(join(dir, "ca.pem"), "utf8");
  const cert = presented === "self-signed" ? ca : readFileSync(join(dir, "leaf.pem"), "utf8") + (presented === "leaf and CA" ? ca : "");
  const upstream = new URL(h.url);
  const server = createServer({ key: readFileSync(join(dir, "key.pem")), cert }, (req, res) => {
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return { url: `https://127.0.0.1:${port}`, caFile: join(dir, "ca.pem"), ca, server };
}

describe("self-signed endpoints", () => {
  it("smoke-test fails on the untrusted certificate (exit 3, not reached), and passes with --ca", async () => {
    const front = await httpsFront();
    try {
      const { key } = await h.createKey({ name: "tls", credits: 50 });
      const env = { GPU_SANDBOX_API_KEY: key };
      const without = memoryIo();
      expect(await smokeTest(["--url", `${front.url}/v1`], { io: without, env })).toBe(3); // not reached, as manage-keys says below
      expect(without.stdout.find((l) => l.startsWith("FAIL  models"))).toMatch(/cannot connect to https:\/\/127\.0\.0\.1:\d+\/v1: .*(self-signed certificate|unable to verify)/i);

      const withCa = memoryIo();
      expect(await smokeTest(["--url", `${front.url}/v1`, "--ca", front.caFile], { io: withCa, env })).toBe(0);
      expect(withCa.stdout.at(-1)).toBe("All 6 checks passed.");
    } finally {
      front.server.close();
    }
  });

  it.each<Presented>(["self-signed", "leaf", "leaf and CA"])(
    "a certificate not trusted (%s): smoke-test and manage-keys say to pass --ca with the stack's CA, not Node's --use-system-ca",
    async (presented) => {
      const front = await httpsFront(presented);
      const hint = "the endpoint's certificate is signed by a CA this machine does not trust: with tls.mode self-signed, pass --ca ca.pem (from `pulumi stack output caCertificate --stack <name> > ca.pem`)";
      try {
        const smoke = memoryIo();
        expect(await smokeTest(["--url", `${front.url}/v1`], { io: smoke, env: { GPU_SANDBOX_API_KEY: "sk-gs-AAAAAAAAAAAA_x" } })).toBe(3);
        const models = smoke.stdout.find((l) => l.startsWith("FAIL  models"))!;
        expect(models).toMatch(/cannot connect to https:\/\/127\.0\.0\.1:\d+\/v1: .*(self-signed certificate|unable to verify)/i);
        expect(models).toContain(hint);
        expect(models).not.toContain("--use-system-ca");

        const keys = memoryIo();
        expect(await manageKeys(["list", "--url", front.url], { io: keys, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken } })).toBe(3);
        const said = keys.stderr.join("\n");
        expect(said).toMatch(/cannot reach the admin API at https:\/\/127\.0\.0\.1:\d+\/admin\/keys: .*(self-signed certificate|unable to verify)/i);
        expect(said).toContain(hint);
        expect(said).not.toContain("--use-system-ca");
      } finally {
        front.server.close();
      }
    },
  );

  it("--stack with --ca trusts the CA given, even when the stack outputs another (stale) caCertificate", async () => {
    const stale = await httpsFront("leaf and CA");
    stale.server.close();
    const front = await httpsFront("leaf and CA");
    try {
      const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${front.url}/v1`, adminToken: h.adminToken, caCertificate: stale.ca } } });
      const io = memoryIo();
      expect(await reportUsage(["--stack", "acme", "--ca", front.caFile, "--format", "json"], { io, env: {}, pulumi, root: tempDir() }), io.text()).toBe(0);
    } finally {
      front.server.close();
    }
  });

  it("--url with a --ca that did not sign the endpoint's certificate: says the CA given is not the one, not to pass --ca", async () => {
    const other = await httpsFront("leaf and CA");
    other.server.close();
    const front = await httpsFront("leaf and CA");
    try {
      const io = memoryIo();
      expect(await manageKeys(["list", "--url", front.url, "--ca", other.caFile], { io, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken } })).toBe(3);
      const said = io.stderr.join("\n");
      expect(said).toMatch(/cannot reach the admin API at https:\/\/127\.0\.0\.1:\d+\/admin\/keys: /);
      expect(said).toContain("the endpoint serves a certificate this machine does not trust: it is not signed by the CA given with --ca");
      expect(said).not.toContain("pass --ca");
    } finally {
      front.server.close();
    }
  });

  it("manage-keys and report-usage --stack, for a letsencrypt stack still serving nginx's placeholder: say so, and point at no caCertificate output", async () => {
    const front = await httpsFront();
    try {
      // tls.mode letsencrypt: no caCertificate output.
      const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${front.url}/v1`, adminToken: h.adminToken } } });
      for (const [script, argv] of [[manageKeys, ["list", "--stack", "acme"]], [reportUsage, ["--stack", "acme"]]] as const) {
        const io = memoryIo();
        expect(await script([...argv], { io, env: {}, pulumi, root: tempDir() })).toBe(3);
        const said = io.stderr.join("\n");
        expect(said).toMatch(/cannot reach the admin API at https:\/\/127\.0\.0\.1:\d+\/admin\/\w+: .*self-signed certificate/i);
        expect(said).toContain("the endpoint serves a certificate this machine does not trust: stack acme has no caCertificate output (tls.mode letsencrypt), so Let's Encrypt has probably not issued its certificate yet");
        expect(said).not.toContain("caCertificate --stack");
        expect(said).not.toContain("--ca");
      }
    } finally {
      front.server.close();
    }
  });

  it("reap-expired keeps a letsencrypt tenant still serving the placeholder, and says why without advising flags it refuses or a host that is up", async () => {
    const front = await httpsFront();
    try {
      const root = tempDir();
      mkdirSync(join(root, "stacks"));
      writeFileSync(join(root, "stacks", "Pulumi.alpha.yaml"), "config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:ttlHours: 1\n");
      const pulumi = new FakePulumi({ alpha: { outputs: { endpoint: `${front.url}/v1`, adminToken: h.adminToken, createdAt: "2026-02-28T10:00:00Z", expiresAt: "2026-02-28T11:00:00Z" } } });
      const io = memoryIo();
      expect(await reapExpired(["--yes"], { root, pulumi, io, env: {}, now: () => new Date("2026-03-01T12:00:00Z") })).toBe(1);
      const kept = io.stderr.join("\n");
      expect(kept).toMatch(/\[alpha\] KEPT: could not save its usage before the destroy would delete it: cannot reach the admin API at \S+: .*self-signed certificate/i);
      expect(kept).toContain("the endpoint serves a certificate this machine does not trust: stack alpha has no caCertificate output (tls.mode letsencrypt)");
      expect(kept).toContain("[alpha] fix that and run again, or run with --force alpha to destroy it without its usage");
      expect(kept).not.toContain("--ca"); // reap-expired has no such flag
      expect(kept).not.toContain("is the tenant's host up"); // it answered: with a certificate
      expect(pulumi.callsOf("destroy")).toEqual([]);
    } finally {
      front.server.close();
    }
  });

  it.each([
    ["a corrupt certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", /^--ca \S+ca\.pem is not a valid PEM certificate \(certificate 1\): .+$/],
    ["a valid one followed by a truncated one", "", /^--ca \S+ca\.pem is not a valid PEM certificate \(certificate 2\): .+$/],
    ["no certificate at all (the CA's key given instead)", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", /^--ca \S+ca\.pem is not a PEM certificate$/],
  ])("--ca with %s: smoke-test, manage-keys and report-usage exit 2 with one line naming the file, not a stack trace", async (_, content, said) => {
    const front = await httpsFront();
    const file = join(tempDir(), "ca.pem");
    writeFileSync(file, content || `${front.ca}${front.ca.slice(0, front.ca.length >> 1)}\n-----END CERTIFICATE-----\n`);
    front.server.close();
    const runs = [
      [smokeTest, ["--url", "https://127.0.0.1:9/v1", "--ca", file], { GPU_SANDBOX_API_KEY: "sk-gs-AAAAAAAAAAAA_x" }],
      [manageKeys, ["list", "--url", "https://127.0.0.1:9", "--ca", file], { GPU_SANDBOX_ADMIN_TOKEN: "adm" }],
      [reportUsage, ["--url", "https://127.0.0.1:9", "--ca", file], { GPU_SANDBOX_ADMIN_TOKEN: "adm" }],
    ] as const;
    for (const [script, argv, env] of runs) {
      const io = memoryIo();
      let code: number | unknown;
      try {
        code = await script([...argv], { io, env });
      } catch (err) {
        code = err;
      }
      expect(code, argv.join(" ")).toBe(2);
      expect(io.stderr).toHaveLength(1);
      expect(io.stderr[0]).toMatch(said);
    }
  });

  it("manage-keys --stack trusts the stack's caCertificate output", async () => {
    const front = await httpsFront();
    try {
      const byUrl = memoryIo();
      expect(await manageKeys(["list", "--url", front.url], { io: byUrl, env: { GPU_SANDBOX_ADMIN_TOKEN: h.adminToken } })).toBe(3);
      expect(byUrl.stderr.join("\n")).toMatch(/cannot reach the admin API at https:\/\/127\.0\.0\.1:\d+\/admin\/keys: .*(self-signed certificate|unable to verify)/i);

      const pulumi = new FakePulumi({ acme: { outputs: { endpoint: `${front.url}/v1`, adminToken: h.adminToken, caCertificate: front.ca } } });
      const byStack = memoryIo();
      expect(await manageKeys(["list", "--stack", "acme"], { io: byStack, env: {}, pulumi, root: tempDir() })).toBe(0);
      expect(byStack.stdout[0]).toMatch(/^ID +NAME/);
    } finally {
      front.server.close();
    }
  });
});
