import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { memoryIo } from "../../scripts/lib/cli.ts";
import { parseShimConfig } from "../../api-shim/src/config.ts";
import { anchorsOf, slug } from "../support/doc-anchors.ts";

const read = (path: string) => readFileSync(new URL(`../../${path}`, import.meta.url), "utf8");
/** The Markdown files of a folder of the repository, as paths from its root. */
const markdownIn = (dir: string) => readdirSync(new URL(`../../${dir}/`, import.meta.url)).filter((f) => f.endsWith(".md")).map((f) => `${dir}/${f}`);
/** Every page the docs checks read: the README, docs/*.md and the shim's reference pages (docs/api-shim/). */
const docPages = () => ["README.md", ...markdownIn("docs"), ...markdownIn("docs/api-shim")];
const pkg = JSON.parse(read("package.json")) as { scripts: Record<string, string> };
const SCRIPTS = ["new-tenant", "list-tenants", "manage-keys", "report-usage", "backup-ledger", "smoke-test", "reap-expired", "rotate-admin-token"];

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
    const docs = read("docs/operations.md") + read("docs/troubleshooting.md") + read("README.md");
    const used = new Set([...docs.matchAll(/npm run (?:--silent )?([a-z][\w-]*)/g)].map((m) => m[1]!));
    for (const name of SCRIPTS) expect(used).toContain(name);
    for (const name of used) expect(Object.keys(pkg.scripts), `npm run ${name}`).toContain(name);
  });

  it("wherever the docs offer SSL_CERT_FILE for a self-signed CA, they say it replaces the trust store and show the client-scoped way", () => {
    const docs = ["README.md", "docs/operations.md", "docs/serving.md", "docs/api-shim.md", ...markdownIn("docs/api-shim")].map((path) => [path, read(path)] as const);
    const offering = docs.filter(([, text]) => text.includes("SSL_CERT_FILE=ca.pem"));
    expect(offering.length).toBeGreaterThan(0);
    for (const [path, text] of offering) {
      expect(text, path).toMatch(/SSL_CERT_FILE=ca\.pem`,? (which|makes)[^.]*(trust store|alone)/);
      expect(text, path).toContain('http_client=DefaultHttpxClient(verify=ssl.create_default_context(cafile="ca.pem"))');
    }
  });

  it("recommends trusting a self-signed CA per client, in Python and Node, and offers process-wide trust only as a fallback with its risk", () => {
    const docs = ["README.md", "docs/operations.md", "docs/serving.md"].map((path) => [path, read(path)] as const);
    for (const [path, text] of docs) {
      expect(text, path).toContain("caCertificate");
      // The CA has no name constraints: trusted process-wide, it vouches for any site.
      expect(text, path).toMatch(/(intercept|impersonate)[^.]*any (site|HTTPS)/);
    }
    // Every paragraph that offers process-wide trust calls it a fallback.
    for (const [path, text] of docs) {
      for (const paragraph of text.split(/\n\s*\n/).filter((p) => /SSL_CERT_FILE|NODE_EXTRA_CA_CERTS/.test(p))) {
        expect(paragraph, path).toContain("fallback");
      }
    }
    // The snippets, in the two places a client's developer reads.
    for (const path of ["docs/operations.md", "docs/serving.md"]) {
      const text = read(path);
      expect(text, path).toContain('http_client=DefaultHttpxClient(verify=ssl.create_default_context(cafile="ca.pem"))');
      expect(text, path).toContain('fetch, fetchOptions: { dispatcher: new Agent({ connect: { ca: readFileSync("ca.pem") } }) }');
    }
  });

  it("the README's table of config keys lists the keys of docs/configuration.md's, in order, with the same defaults, and every key the program reads", async () => {
    const { CONFIG_KEYS } = await import("../../infra/config/settings.ts");
    /** The rows of the table headed `| Key | Default | What it does |`: each key and its default cell. */
    const rows = (md: string) => {
      const lines = md.split("\n");
      const start = lines.findIndex((l) => l.startsWith("| Key | Default | What it does |"));
      expect(start).toBeGreaterThanOrEqual(0);
      const end = lines.findIndex((l, i) => i > start && !l.startsWith("|"));
      return lines.slice(start + 2, end).map((l) => /^\| `([^`]+)` \| ([^|]+) \|/.exec(l)!).map((m) => ({ key: m[1]!, fallback: m[2]!.trim() }));
    };
    const readme = rows(read("README.md"));
    const reference = rows(read("docs/configuration.md"));
    expect(readme.map((r) => r.key)).toEqual(reference.map((r) => r.key));
    for (const r of readme) {
      const full = reference.find((x) => x.key === r.key)!.fallback;
      // A default given as one code span is the reference's (a few are said in words: "everyone").
      if (/^`[^`]*`$/.test(r.fallback)) expect(r.fallback, r.key).toBe(full);
    }
    for (const key of CONFIG_KEYS) expect(readme.some((r) => r.key === key || r.key.startsWith(`${key}.`)), key).toBe(true);
  });

  it("the README shows the cron line for reap-expired, with the environment it needs", () => {
    const readme = read("README.md");
    const section = readme.slice(readme.indexOf("## Operate many tenants"), readme.indexOf("## Layout"));
    expect(section).toMatch(/^\*\/15 \* \* \* \* .*cd \S+ && .*npm run --silent reap-expired -- --yes/m);
    for (const v of ["PATH=", "PULUMI_CONFIG_PASSPHRASE=", "LINODE_TOKEN="]) expect(section).toContain(v);
    expect(section).toContain("docs/operations.md");
  });
});

/**
 * The shell commands a Markdown text shows: each line of its fenced code blocks (``` or ~~~, also
 * indented under a list item; a line ending in `\` joined to the next) and each inline code span.
 */
function markdownCommands(md: string): string[] {
  const commands: string[] = [];
  const prose = md.replace(/^[ \t]*(```|~~~)[^\n]*\n([\s\S]*?)^[ \t]*\1/gm, (_all, _fence: string, block: string) => {
    commands.push(...block.replace(/\\\n/g, " ").split("\n"));
    return "";
  });
  for (const m of prose.matchAll(/`([^`\n]+)`/g)) commands.push(m[1]!);
  return commands;
}

/** The lines of a script's help text after "Examples:", continuations joined. */
function helpExamples(usage: string): string[] {
  const at = usage.indexOf("Examples:");
  return at === -1 ? [] : usage.slice(at).replace(/\\\n/g, " ").split("\n").slice(1);
}

/** The text of a script's `const USAGE = \`…\`` as --help prints it (escapes undone; `${…}` left as is). */
function usageOf(source: string): string | undefined {
  const literal = /const USAGE = `((?:[^`\\]|\\.)*)`/.exec(source)?.[1];
  return literal?.replace(/\\([\s\S])/g, "$1");
}

/**
 * The `npm run` of a command line whose stdout goes into a pipe, a file or `$(…)` without
 * --silent: npm's banner (`> gpu-sandbox@0.1.0 report-usage`) would land there too. Quoted text,
 * <placeholders>, a synopsis's groups and comments are not shell syntax and are left out.
 */
function bannerLeaks(line: string): boolean {
  // "$(npm run …)" or "`npm run …`", quoted or not: the substitution takes all of its stdout.
  for (const m of line.matchAll(/(?:\$\(|`)\s*(npm run\b[^)`]*)/g)) if (!silent(m[1]!)) return true;
  const shell = line
    .replace(/'[^']*'|"(?:[^"\\]|\\.)*"/g, "''")
    .replace(/<[^<>\s][^<>]*>/g, "X")
    .replace(/(?<!\$)\([^()]*\)|\[[^[\]]*\]/g, "X") // a synopsis's (a | b) and [optional]
    .replace(/(^|\s)#.*$/, "");
  return shell.split(/&&|\|\||;/).some((command) => {
    const at = command.search(/\bnpm run\b/);
    if (at === -1) return false;
    const after = command.slice(at);
    return !silent(after) && (after.includes("|") || /(^|[^2&>])>|&>/.test(after));
  });
}

/** Whether `npm run …` has -s or --silent among npm's own words: anywhere before `--` (or a pipe, a redirection). */
function silent(npmRun: string): boolean {
  const own = npmRun.split(/\s--(?=\s|$)|[|<>]/)[0]!;
  return /\s(?:-s|--silent)(?=\s|$)/.test(own);
}

/** What `npm run <script> -- --help` prints. */
async function helpOf(name: string): Promise<string> {
  const { main } = (await import(`../../scripts/${name}.ts`)) as { main: (argv: string[], deps: object) => Promise<number> };
  const io = memoryIo();
  await main(["--help"], { io, env: {} });
  return io.stdout.join("\n");
}

describe("the flags the docs give a script are in its --help", () => {
  const docs = docPages();
  it.each(docs)("%s", async (path) => {
    const unknown: string[] = [];
    for (const command of markdownCommands(read(path))) {
      const words = command.replace(/<[^<>\s][^<>]*>/g, "X"); // <placeholders>, not redirections
      for (const m of words.matchAll(/npm run (?:--silent |-s )?([a-z][\w-]*) -- ([^|>;&#]*)/g)) {
        const usage = SCRIPTS.includes(m[1]!) ? await helpOf(m[1]!) : undefined;
        if (usage === undefined) continue;
        for (const flag of m[2]!.matchAll(/(?<=^|\s)(--[a-z][\w-]*)/g)) {
          if (!new RegExp(`${flag[1]}\\b`).test(usage)) unknown.push(`${m[1]} ${flag[1]} (in \`${command.trim()}\`)`);
        }
      }
    }
    expect(unknown, "flags the script's --help does not list").toEqual([]);
  });
});

describe("examples that pipe or redirect `npm run` use --silent (npm's banner would be in the output)", () => {
  it("finds the cases it is for", () => {
    expect(bannerLeaks("npm run report-usage -- --stack acme --format csv > acme.csv   # the shim's CSV")).toBe(true);
    expect(bannerLeaks("npm run list-tenants -- --json | jq -r '.[] | .stack'")).toBe(true);
    expect(bannerLeaks("npm run reap-expired -- --yes >> reap.log 2>&1")).toBe(true);
    expect(bannerLeaks('KEY="$(npm run manage-keys -- create --stack acme --name a)"')).toBe(true);
    expect(bannerLeaks("KEY=$(npm run manage-keys -- create --stack acme --name a)")).toBe(true);
    expect(bannerLeaks("npm run --silent list-tenants -- --json | jq .")).toBe(false);
    expect(bannerLeaks("npm run manage-keys -- <create|list> (--stack <name> | --url <base URL>)")).toBe(false);
    expect(bannerLeaks("npm run report-usage -- --stack acme 2> errors.txt")).toBe(false);
    expect(bannerLeaks("printenv LINODE_TOKEN | npm run new-tenant -- acme && npm run list-tenants")).toBe(false);
    // Backtick command substitution is a substitution too.
    expect(bannerLeaks("KEY=`npm run manage-keys -- create --stack acme --name a`")).toBe(true);
    expect(bannerLeaks('KEY="`npm run manage-keys -- create --stack acme --name a`"')).toBe(true);
    expect(bannerLeaks("KEY=`npm run --silent manage-keys -- create --stack acme --name a`")).toBe(false);
    // npm's own -s / --silent, anywhere before `--`, silences the banner (checked with npm 11).
    expect(bannerLeaks("npm run -s list-tenants -- --json | jq .")).toBe(false);
    expect(bannerLeaks("npm run list-tenants --silent -- --json | jq .")).toBe(false);
    expect(bannerLeaks("KEY=$(npm run -s manage-keys -- create --stack acme --name a)")).toBe(false);
    // After `--` it is the script's argument, and a later command's -s is not npm's.
    expect(bannerLeaks("npm run list-tenants -- --json --silent | jq .")).toBe(true);
    expect(bannerLeaks("npm run list-tenants | jq -s .")).toBe(true);
  });

  it("reads the commands of every kind of fenced block", () => {
    const md = [
      "1. List them:",
      "",
      "   ```sh",
      "   npm run list-tenants -- --json | jq .",
      "   ```",
      "",
      "~~~",
      "npm run report-usage -- --stack acme > acme.csv",
      "~~~",
      "",
      "Prose with `npm run reap-expired`.",
    ].join("\n");
    expect(markdownCommands(md).filter(bannerLeaks).map((c) => c.trim())).toEqual([
      "npm run list-tenants -- --json | jq .",
      "npm run report-usage -- --stack acme > acme.csv",
    ]);
    expect(markdownCommands(md)).toContain("npm run reap-expired");
  });

  const docs = docPages();
  it.each(docs)("%s", (path) => {
    const leaks = markdownCommands(read(path)).filter(bannerLeaks);
    expect(leaks, `use \`npm run --silent …\` in:\n${leaks.join("\n")}`).toEqual([]);
  });

  const scripts = readdirSync(new URL("../../scripts/", import.meta.url)).filter((f) => f.endsWith(".ts"));
  it.each(scripts)("scripts/%s --help", (file) => {
    const usage = usageOf(read(`scripts/${file}`));
    const leaks = usage === undefined ? [] : helpExamples(usage).filter(bannerLeaks);
    expect(leaks, `use \`npm run --silent …\` in:\n${leaks.join("\n")}`).toEqual([]);
  });

  it("every script with a help text is seen by this check", () => {
    for (const name of Object.values(pkg.scripts).map((s) => /^node scripts\/(.+\.ts)$/.exec(s)?.[1]).filter((s) => s !== undefined)) {
      expect(usageOf(read(`scripts/${name}`)), name).toContain("Usage: npm run");
    }
  });
});

describe("docs/api-shim/shim-config.md's SHIM_CONFIG example", () => {
  it("is a configuration the shim starts with (its bootstrap key's placeholder hash filled in)", () => {
    const doc = read("docs/api-shim/shim-config.md");
    const block = /```yaml\n([\s\S]*?)```/.exec(doc.slice(doc.indexOf("# SHIM_CONFIG")))![1]!;
    const yaml = block.replace('"sha256:<hex of the full key>"', `"sha256:${"a".repeat(64)}"`);
    expect(yaml).not.toBe(block);
    const config = parseShimConfig({ SHIM_UPSTREAM_URL: "http://litellm:4000/v1", SHIM_CONFIG: "/etc/shim.yaml" }, () => yaml);
    // Every kind of price the example shows is read, the cached prompt's included.
    expect([...config.pricing.models.values()].some((p) => p.cachedPromptPer1k !== undefined)).toBe(true);
  });
});

describe("the upgrade notes have their own page, and the operations guide points to it", () => {
  it("the ledger's restore says a shim older than the restore-at-start ignores shim.db.restore (a later upgrade would swap it in), and how to restore by hand", () => {
    const ops = read("docs/operations.md");
    const section = ops.slice(ops.indexOf("## Backup and restore of the ledger"), ops.indexOf("\n## ", ops.indexOf("## Backup and restore of the ledger") + 1));
    expect(section).toMatch(/older than 2026-12-07[^]*ignores `shim\.db\.restore`[^]*undoes everything recorded\s+since/);
    // The by-hand steps move the ledger's three files away together, then put the backup in place as uid 1000's.
    expect(section).toContain('for f in shim.db shim.db-wal shim.db-shm; do if [ -e "$f" ]; then mv "$f" "$old/"; fi; done');
    expect(section).toContain("mv shim.db.restore shim.db && chown -R 1000:1000 /mnt/gpu-sandbox/shim");
  });

  it("docs/upgrading.md holds the dated entries, newest first; docs/operations.md keeps a short Upgrading section linking there", () => {
    const notes = read("docs/upgrading.md");
    expect(notes).toMatch(/^# Upgrading\n/);
    const dates = [...notes.matchAll(/^## (\d{4}-\d{2}-\d{2})$/gm)].map((m) => m[1]!);
    expect(dates.length).toBeGreaterThan(0);
    expect(dates).toEqual([...dates].sort().reverse());
    const ops = read("docs/operations.md");
    expect(ops).not.toMatch(/^#+ \d{4}-\d{2}-\d{2}/m);
    const section = ops.slice(ops.indexOf("## Upgrading"), ops.indexOf("\n## ", ops.indexOf("## Upgrading") + 1));
    expect(section).toContain("](upgrading.md)");
    expect(section.trim().split("\n").filter((l) => l.trim() !== "").length).toBeLessThanOrEqual(6); // the heading and 2-5 lines
    expect(read("README.md")).toMatch(/^- \[docs\/operations\.md\][^\n]*\n- \[docs\/upgrading\.md\]\(docs\/upgrading\.md\)/m);
  });
});

describe("the docs' links to their own pages and headings resolve", () => {
  it("slugs headings as GitHub does", () => {
    expect(slug("Several replicas (Postgres)")).toBe("several-replicas-postgres");
    expect(slug("`SHIM_UPSTREAM_TIMEOUT_MS` in detail")).toBe("shim_upstream_timeout_ms-in-detail");
    expect(slug("Retries by OpenAI's SDKs")).toBe("retries-by-openais-sdks");
    expect([...anchorsOf("# A\n## 2026-12-06\n```\n# not a heading\n```\n## 2026-12-06\n")]).toEqual(["a", "2026-12-06", "2026-12-06-1"]);
  });

  const docs = docPages();
  it.each(docs)("%s", (path) => {
    const broken: string[] = [];
    const text = read(path);
    for (const m of text.matchAll(/\]\((?!https?:|mailto:)([^)\s#]*)(?:#([^)\s]*))?\)/g)) {
      const [link, file, anchor] = [m[0], m[1]!, m[2]];
      // A link is relative to the page that has it; an empty path is the page itself.
      const target = file === "" ? path : new URL(file, new URL(path, "file:///r/")).pathname.slice("/r/".length);
      let targetText: string;
      try { targetText = target === path ? text : read(target); } catch { broken.push(`${link}: no file ${target}`); continue; }
      if (anchor !== undefined && target.endsWith(".md") && !anchorsOf(targetText).has(anchor)) broken.push(`${link}: no heading #${anchor} in ${target}`);
    }
    expect(broken).toEqual([]);
  });
});

describe("docs/api-shim.md is the index of the shim's reference, one page a topic in docs/api-shim/", () => {
  it("keeps its opening, then a Contents list linking every page once, each with what a reader finds there", () => {
    const index = read("docs/api-shim.md");
    expect(index).toMatch(/^# api-shim\n/);
    expect(index).toContain("Try it without a GPU:");
    const contents = index.slice(index.indexOf("\n## Contents\n"));
    expect(contents.length).toBeLessThan(index.length);
    const linked = [...contents.matchAll(/^- \[[^\]]+\]\(api-shim\/([\w-]+\.md)\)(.*)$/gm)];
    expect(linked.map((m) => `docs/api-shim/${m[1]}`).sort()).toEqual(markdownIn("docs/api-shim").sort());
    for (const m of linked) expect(m[2]!.length, m[1]).toBeGreaterThan(20); // what the page holds, in words
    // The reference itself moved out: the index holds no section but its contents.
    expect([...index.matchAll(/^#{2,6} (.+)$/gm)].map((m) => m[1])).toEqual(["Contents"]);
  });

  it.each(markdownIn("docs/api-shim"))("%s: a title, what it covers and a link back to the index, 100-500 lines", (path) => {
    const text = read(path);
    const lines = text.split("\n");
    expect(lines[0]).toMatch(/^# \S/);
    const intro = text.slice(text.indexOf("\n") + 1).split(/\n\s*\n/).find((p) => p.trim() !== "")!;
    expect(intro).toContain("](../api-shim.md)");
    expect(lines.length).toBeGreaterThanOrEqual(100);
    expect(lines.length).toBeLessThanOrEqual(500);
  });
});
