import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), "utf8");
const pkg = JSON.parse(read("package.json")) as { scripts: Record<string, string> };
const SCRIPTS = ["new-tenant", "list-tenants", "manage-keys", "report-usage", "smoke-test", "reap-expired"];

describe("operator scripts: npm scripts, --help and the docs agree", () => {
  it.each(SCRIPTS)("npm run %s: runs its script, whose --help starts with its usage", async (name) => {
    expect(pkg.scripts[name]).toBe(`node scripts/${name}.ts`);
    const { main } = (await import(`../../scripts/${name}.ts`)) as { main: (argv: string[], deps: object) => Promise<number> };
    const io = memoryIo();
    expect(await main(["--help"], { io, env: {} })).toBe(0);
    expect(io.stdout.join("\n")).toMatch(new RegExp(`^Usage: npm run ${name}\\b`));
    expect(io.stdout.join("\n")).toContain("Examples:");
  });

  it("every `npm run <script>` in the operations guide and the README exists", () => {
    const docs = read("docs/operations.md") + read("README.md");
    const used = new Set([...docs.matchAll(/npm run (?:--silent )?([a-z][\w-]*)/g)].map((m) => m[1]!));
    for (const name of SCRIPTS) expect(used).toContain(name);
    for (const name of used) expect(Object.keys(pkg.scripts), `npm run ${name}`).toContain(name);
  });

  it("wherever the docs offer SSL_CERT_FILE for a self-signed CA, they say it replaces the trust store and show the client-scoped way", () => {
    const docs = ["README.md", "docs/operations.md", "docs/serving.md", "docs/api-shim.md"].map((path) => [path, read(path)] as const);
    const offering = docs.filter(([, text]) => text.includes("SSL_CERT_FILE=ca.pem"));
    expect(offering.length).toBeGreaterThan(0);
    for (const [path, text] of offering) {
      expect(text, path).toMatch(/SSL_CERT_FILE=ca\.pem`,? (which|makes)[^.]*(trust store|alone)/);
      expect(text, path).toContain('http_client=DefaultHttpxClient(verify=ssl.create_default_context(cafile="ca.pem"))');
    }
  });

  it("the README shows the cron line for reap-expired, with the environment it needs", () => {
    const readme = read("README.md");
    const section = readme.slice(readme.indexOf("## Operate many tenants"), readme.indexOf("## Layout"));
    expect(section).toMatch(/^\*\/15 \* \* \* \* .*cd \S+ && .*npm run --silent reap-expired -- --yes/m);
    for (const v of ["PATH=", "PULUMI_CONFIG_PASSPHRASE=", "LINODE_TOKEN="]) expect(section).toContain(v);
    expect(section).toContain("docs/operations.md");
  });
});
