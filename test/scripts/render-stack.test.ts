import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../../scripts/render-stack.ts";
import { runTool, tempDir } from "../support/tools.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, "log").mockImplementation((...a) => { out.push(a.join(" ")); });
  vi.spyOn(console, "error").mockImplementation((...a) => { err.push(a.join(" ")); });
  return { out: () => out.join("\n"), err: () => err.join("\n") };
}

/** A throwaway project root with one stack file. */
function rootWithStack(stack: string, yaml: string): string {
  const root = tempDir();
  mkdirSync(join(root, "stacks"));
  writeFileSync(join(root, "stacks", `Pulumi.${stack}.yaml`), yaml);
  return root;
}

afterEach(() => vi.restoreAllMocks());

describe("npm run render", () => {
  it("writes the example's host files and prints the plan", () => {
    const io = capture();
    const out = tempDir();
    expect(main(["--stack", "example", "--out", out], ROOT)).toBe(0);
    expect(io.out()).toContain("Plan for tenant example");
    expect(io.out()).toMatch(/443\/tcp {2}from 0\.0\.0\.0\/0, ::\/0 +HTTPS/);
    expect(io.out()).toMatch(/22\/tcp {2}from 203\.0\.113\.7\/32/);
    expect(io.out()).toContain("$0.53/hour, $360.00/month");
    // What the tenant costs until reap-expired destroys it: the example's ttlHours is 24.
    expect(io.out()).toMatch(/Expires +24 hours after the first `pulumi up` \(`npm run reap-expired` destroys it\), about \$12\.81 until then\n/);
    // The example's adminCidrs is a documentation address: the bundle is written (it serves on
    // any host), and the plan and stderr say that `pulumi up` refuses it, and what to put instead.
    expect(io.out()).toMatch(/Problem +adminCidrs 203\.0\.113\.7\/32 is a documentation address .*`pulumi up` refuses it; put your own public IPv4 address/);
    expect(io.err()).toContain("`pulumi up` refuses this stack until you fix stacks/Pulumi.example.yaml:\n  - gpu-sandbox:adminCidrs[0] = \"203.0.113.7/32\"");
    expect(io.err()).toContain("curl -4s https://ifconfig.me");
    const cloudInit = join(out, "cloud-init.yaml");
    expect(existsSync(cloudInit)).toBe(true);
    const schema = runTool("cloud-init", ["schema", "-c", cloudInit]);
    expect(schema.status, schema.output).toBe(0);
  });

  it("keeps an operator's files in --out, replaces its own earlier render, and refuses to write over a file it did not write", () => {
    const io = capture();
    const out = tempDir();
    writeFileSync(join(out, ".env"), "SHIM_ADMIN_TOKEN=secret\n");
    writeFileSync(join(out, "notes.txt"), "mine\n");
    expect(main(["--stack", "example", "--out", out], ROOT)).toBe(0);
    expect(main(["--stack", "example", "--out", out], ROOT)).toBe(0);
    expect(readFileSync(join(out, ".env"), "utf8")).toBe("SHIM_ADMIN_TOKEN=secret\n");
    expect(readFileSync(join(out, "notes.txt"), "utf8")).toBe("mine\n");
    expect(existsSync(join(out, "compose.yaml"))).toBe(true);

    const foreign = tempDir();
    writeFileSync(join(foreign, "compose.yaml"), "services: {}\n");
    expect(main(["--stack", "example", "--out", foreign], ROOT)).toBe(2);
    expect(io.err()).toMatch(/holds files no earlier render wrote that this one would replace \(compose\.yaml\): render into a new or empty directory/);
    expect(readdirSync(foreign)).toEqual(["compose.yaml"]);
    expect(main(["--help"], ROOT)).toBe(0);
    expect(io.out()).toContain("touches nothing else there, such as a .env");
  });

  it("--out naming a file, or a directory under one: exit 2 with one line naming --out, not a stack trace", () => {
    const file = join(tempDir(), "notes.txt");
    writeFileSync(file, "mine\n");
    for (const out of [file, join(file, "bundle")]) {
      const io = capture();
      expect(main(["--stack", "example", "--out", out], ROOT)).toBe(2);
      expect(io.err()).toMatch(new RegExp(`^cannot write to --out ${out}: ENOTDIR: not a directory, \\w+ '${file}[^']*'$`));
      vi.restoreAllMocks();
    }
    expect(readFileSync(file, "utf8")).toBe("mine\n");
  });

  // docs/serving.md's own-host route: rsync -a and Dockerfile COPY keep the modes, and the shim
  // (uid 1000), reading its source and bind-mounted shim/config.yaml, and LiteLLM's non-root user
  // are "other" to those root-owned files.
  it("writes a bundle the containers' non-root users can read whatever the operator's umask", () => {
    capture();
    const out = tempDir();
    const old = process.umask(0o027); // a common hardened default (CIS)
    try {
      expect(main(["--stack", "example", "--out", out], ROOT)).toBe(0);
    } finally {
      process.umask(old);
    }
    const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => e.isDirectory() ? [join(dir, e.name), ...walk(join(dir, e.name))] : [join(dir, e.name)]);
    const unreadable = walk(out)
      .filter((p) => /^(api-shim|shim|litellm)(\/|$)/.test(relative(out, p)))
      .filter((p) => { const s = statSync(p); return s.isDirectory() ? (s.mode & 0o005) !== 0o005 : (s.mode & 0o004) === 0; })
      .map((p) => `${relative(out, p)} ${(statSync(p).mode & 0o777).toString(8)}`);
    expect(unreadable).toEqual([]);
  });

  // root may write anywhere.
  it.skipIf(process.getuid?.() === 0)("--out a directory it may not write to: exit 2 saying so", () => {
    const io = capture();
    const out = tempDir();
    chmodSync(out, 0o555);
    try {
      expect(main(["--stack", "example", "--out", out], ROOT)).toBe(2);
      expect(io.err()).toMatch(new RegExp(`^cannot write to --out ${out}: EACCES: permission denied, `));
    } finally {
      chmodSync(out, 0o755);
    }
  });

  it("`npm run render --stack example` (no `--`: npm keeps --stack, passes its value) says to put flags after `--`", () => {
    const io = capture();
    expect(main(["example"], ROOT)).toBe(2);
    expect(io.err()).toContain("Unexpected argument 'example'");
    expect(io.err()).toContain("flags typed before `--` are kept by npm, not passed on: npm run render -- --stack <name> [--out <dir>]");
  });

  it("exits 2 with the problem, and no stack trace, for a missing stack", () => {
    const io = capture();
    expect(main(["--stack", "nope"], ROOT)).toBe(2);
    expect(io.err()).toContain("no stack file");
    expect(io.err()).toContain("stacks: example");
    expect(io.err()).not.toMatch(/\n\s+at /);
  });

  it("exits 2 listing every problem for a bad config", () => {
    const root = rootWithStack("acme", "config:\n  gpu-sandbox:region: mars-1\n  gpu-sandbox:ttlHours: -3\n  gpu-sandbox:keys:\n    - {name: app, credits: -1}\n");
    const io = capture();
    expect(main(["--stack", "acme"], root)).toBe(2);
    expect(io.err()).toContain('gpu-sandbox:region = "mars-1": is not a Linode region');
    expect(io.err()).toContain("gpu-sandbox:ttlHours = -3: must be between 1 and 2160");
    expect(io.err()).toContain("gpu-sandbox:keys[0].credits = -1: must not be negative");
    expect(existsSync(join(root, "out"))).toBe(false);
  });

  it("exits 2 for a stack file that is not YAML", () => {
    const root = rootWithStack("acme", "config: [unclosed\n");
    const io = capture();
    expect(main(["--stack", "acme"], root)).toBe(2);
    expect(io.err()).toContain("is not valid YAML");
  });

  it("says so when the settings are not under config: (not that region is missing)", () => {
    const io = capture();
    expect(main(["--stack", "acme"], rootWithStack("acme", "gpu-sandbox:region: us-ord\ngpu-sandbox:adminCidrs: [81.2.69.160/32]\n"))).toBe(2);
    expect(io.err()).toContain('settings must be under "config:" (found gpu-sandbox:region at the top level)');
    expect(io.err()).not.toContain("is required");
    expect(main(["--stack", "acme"], rootWithStack("acme", "- a\n- b\n"))).toBe(2);
    expect(io.err()).toContain("must be a map with a config: key");
  });

  it("accepts encrypted secrets without being able to read them", () => {
    const root = rootWithStack("acme", "config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:hfToken:\n    secure: v1:abc\n");
    capture();
    expect(main(["--stack", "acme"], root)).toBe(0);
    expect(readFileSync(join(root, "out", "acme", "cloud-init.yaml"), "utf8")).not.toContain("v1:abc");
  });

  it("exits 2 for a non-secret setting stored encrypted, saying it cannot decrypt it (not that it is of the wrong kind)", () => {
    const root = rootWithStack("acme", "config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs:\n    - secure: v1:AAAAbase64ciphertext\n");
    const io = capture();
    expect(main(["--stack", "acme"], root)).toBe(2);
    expect(io.err()).toContain("gpu-sandbox:adminCidrs[0] = \"[encrypted]\": is encrypted in the stack file (`secure:`)");
    expect(io.err()).toContain("`pulumi up` decrypts and checks it. To render the stack, store it in clear: `pulumi config set --path 'gpu-sandbox:adminCidrs[0]' <value>`");
    expect(io.err()).not.toMatch(/is not a CIDR|must be a string/);
  });

  it("refuses secrets written in plaintext in the (committed) stack file, without printing them", () => {
    const root = rootWithStack("acme", [
      "config:", "  gpu-sandbox:region: us-ord", "  gpu-sandbox:adminCidrs: [203.0.113.7/32]", "  gpu-sandbox:hfToken: hf_plaintextsecret",
      "  gpu-sandbox:providers:", "    - {name: groq, model: groq/llama-3.1-8b-instant, apiKey: gsk_plaintextsecret}", "",
    ].join("\n"));
    const io = capture();
    expect(main(["--stack", "acme"], root)).toBe(2);
    expect(io.err()).toContain("gpu-sandbox:hfToken = \"[plaintext]\": is in plaintext in stacks/Pulumi.acme.yaml, which is committed; store it encrypted: printenv HF_TOKEN | pulumi config set --secret --path 'gpu-sandbox:hfToken' --stack acme");
    expect(io.err()).toContain("gpu-sandbox:providers[0].apiKey = \"[plaintext]\": is in plaintext");
    expect(io.err()).not.toContain("plaintextsecret");
    expect(existsSync(join(root, "out"))).toBe(false);
  });

  it("asks for --stack and lists the stacks", () => {
    const io = capture();
    expect(main([], ROOT)).toBe(2);
    expect(io.err()).toContain("--stack is required. Stacks: example");
    expect(main(["--bogus"], ROOT)).toBe(2);
  });
});
