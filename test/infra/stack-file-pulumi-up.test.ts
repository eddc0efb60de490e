// A stack file with a stray top-level "ns:key" (Pulumi ignores it: it unmarshals the file into
// ProjectStack, unknown top-level keys dropped) is read as Pulumi reads it, config: alone, so
// `pulumi up` keeps its plaintext-secret check; and a key without a namespace is the project's.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../../infra/config.ts";
import { REPO_ROOT } from "../../infra/repo-root.ts";

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
