// A stack file with a stray top-level "ns:key" (Pulumi ignores it: it unmarshals the file into
// ProjectStack, unknown top-level keys dropped) is read as Pulumi reads it, config: alone, so
// `pulumi up` keeps its plaintext-secret check; and a key without a namespace is the project's,
// so one beside its `gpu-sandbox:` twin is refused, and checked for plaintext secrets too.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { afterEach, describe, expect, it } from "vitest";
import { formatProblem } from "../../infra/config/checks.ts";
import { loadConfig, validateConfig } from "../../infra/config.ts";
import { REPO_ROOT } from "../../infra/repo-root.ts";
import { parseStackConfig } from "../../infra/stack-file.ts";

const STACK = "zz-stray-key";
const file = join(REPO_ROOT, "stacks", `Pulumi.${STACK}.yaml`);

afterEach(() => rmSync(file, { force: true }));

function pulumiUp(stackFileText: string): unknown {
  mkdirSync(join(REPO_ROOT, "stacks"), { recursive: true });
  writeFileSync(file, stackFileText);
  pulumi.runtime.setMocks({ newResource: (a) => ({ id: a.name, state: a.inputs }), call: (a) => a.inputs }, "gpu-sandbox", STACK, false);
  // What Pulumi hands the program: the config: map's values (the stray key is not config to Pulumi).
  pulumi.runtime.setAllConfig({
    "gpu-sandbox:region": "us-ord",
    "gpu-sandbox:adminCidrs": JSON.stringify(["81.2.69.160/32"]),
    "gpu-sandbox:hfToken": "hf_PLAINTEXT_IN_GIT",
  });
  try {
    loadConfig();
    return "accepted";
  } catch (err) {
    return (err as Error).message;
  }
}

const config = 'config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: ["81.2.69.160/32"]\n  gpu-sandbox:hfToken: hf_PLAINTEXT_IN_GIT\n';

describe("pulumi up's plaintext-secret check with a stray top-level key", () => {
  it("baseline: the plaintext hfToken in the file is refused", () => {
    expect(pulumiUp(config)).toMatch(/hfToken = "\[plaintext\]"/);
  });

  it("still refuses it when the file also has a top-level gpu-sandbox:ttlHours (Pulumi ignores that key)", () => {
    expect(pulumiUp(`gpu-sandbox:ttlHours: 24\n${config}`)).toMatch(/plaintext|must be under "config:"/);
  });
});

// Pulumi rewrites a config key without a namespace to the project's (workspace/loaders.go,
// stackConfigNamespacedWithProject: `config: {instanceSize: x}` is `{project}:instanceSize`), so
// `config: {region: us-ord}` is a valid stack file setting gpu-sandbox:region. parseStackConfig
// keeps only "gpu-sandbox:"-prefixed keys: render / list-tenants say "region is required", and
// pulumi up misses a plaintext hfToken written that way.
describe("un-namespaced config keys (valid for Pulumi)", () => {
  it("pulumi up refuses a plaintext hfToken written without the namespace", () => {
    expect(pulumiUp('config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: ["81.2.69.160/32"]\n  hfToken: hf_PLAINTEXT_IN_GIT\n'))
      .toMatch(/hfToken = "\[plaintext\]"/);
  });
});

// Pulumi rewrites the bare key into a map that already holds its twin, in Go's random map order:
// either value may be the one deployed, and the bare one is committed all the same. This is what
// the file looks like after following the advice for a bare `hfToken: hf_…` when the `pulumi
// config set --secret --path 'gpu-sandbox:hfToken'` left the bare key in place.
describe("a bare key beside its gpu-sandbox: twin", () => {
  const twins = 'config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: ["81.2.69.160/32"]\n' +
    "  hfToken: hf_PLAINTEXT_IN_GIT\n  gpu-sandbox:hfToken:\n    secure: v1:abc\n";
  /** What `npm run render` and list-tenants say of a stack file: its settings checked against themselves. */
  const render = (text: string) => {
    const raw = parseStackConfig(text);
    const r = validateConfig(raw, { stack: "acme", fileConfig: raw });
    return r.ok ? [] : r.problems.map((p) => formatProblem(p, "gpu-sandbox"));
  };

  it("a plaintext hfToken shadowed by an encrypted gpu-sandbox:hfToken is refused by render, naming both spellings, without its value", () => {
    const got = render(twins);
    expect(got).toEqual([
      "gpu-sandbox:hfToken: `hfToken` is shadowed by `gpu-sandbox:hfToken` in stacks/Pulumi.acme.yaml (Pulumi reads both as gpu-sandbox:hfToken and keeps either one); " +
        "remove `hfToken` (its value is not shown: it may be a secret)",
      "gpu-sandbox:hfToken = \"[plaintext]\": is in plaintext in stacks/Pulumi.acme.yaml, as `hfToken`, which is committed; remove `hfToken`",
    ]);
    expect(got.join("\n")).not.toContain("PLAINTEXT_IN_GIT");
  });

  it("and by pulumi up", () => {
    expect(pulumiUp(twins)).toMatch(/`hfToken` is shadowed by `gpu-sandbox:hfToken`[^]*hfToken = "\[plaintext\]": is in plaintext/);
  });

  it("a bare providers list shadowed by gpu-sandbox:providers: its plaintext apiKey is refused, its other fields are not secrets", () => {
    const text = 'config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: ["81.2.69.160/32"]\n' +
      "  providers:\n    - {name: groq, model: groq/llama-3.1-8b-instant, apiKey: gsk_PLAINTEXT_IN_GIT}\n" +
      "  gpu-sandbox:providers:\n    - name: groq\n      model: groq/llama-3.1-8b-instant\n      apiKey:\n        secure: v1:abc\n";
    const got = render(text);
    expect(got).toHaveLength(2);
    expect(got[0]).toContain("`providers` is shadowed by `gpu-sandbox:providers`");
    expect(got[1]).toMatch(/^gpu-sandbox:providers\[0\]\.apiKey = "\[plaintext\]": is in plaintext in stacks\/Pulumi\.acme\.yaml, as `providers`/);
    expect(got.join("\n")).not.toContain("PLAINTEXT_IN_GIT");
  });

  it("a shadowed setting that is not a secret is refused with its value", () => {
    expect(render('config:\n  region: us-east\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: ["81.2.69.160/32"]\n')).toEqual([
      "gpu-sandbox:region = \"us-east\": `region` is shadowed by `gpu-sandbox:region` in stacks/Pulumi.acme.yaml (Pulumi reads both as gpu-sandbox:region and keeps either one); remove `region`",
    ]);
  });

  it("control: the bare plaintext hfToken alone is refused, and the encrypted twin alone accepted", () => {
    expect(render('config:\n  gpu-sandbox:region: us-ord\n  gpu-sandbox:adminCidrs: ["81.2.69.160/32"]\n  hfToken: hf_PLAINTEXT_IN_GIT\n'))
      .toEqual([expect.stringMatching(/^gpu-sandbox:hfToken = "\[plaintext\]": is in plaintext/)]);
    expect(render(twins.replace("  hfToken: hf_PLAINTEXT_IN_GIT\n", ""))).toEqual([]);
  });
});
