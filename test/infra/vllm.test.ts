// The revision vLLM downloads is the one `pulumi up` checks on Hugging Face: read from
// model.extraArgs as vLLM's argparse reads it, `main` when none is given.
import { describe, expect, it } from "vitest";
import { vllmRevision } from "../../infra/config/vllm.ts";

describe("vllmRevision", () => {
  it("is main without --revision, whatever other revisions are given", () => {
    expect(vllmRevision([])).toBe("main");
    expect(vllmRevision(["--enable-prefix-caching", "--tokenizer-revision", "v2", "--code-revision=v3"])).toBe("main");
  });

  it("reads --revision as two items or as one with =", () => {
    expect(vllmRevision(["--max-num-seqs", "64", "--revision", "v1.0"])).toBe("v1.0");
    expect(vllmRevision(["--revision=refs/pr/1", "--enforce-eager"])).toBe("refs/pr/1");
  });

  it("takes the last --revision, as argparse does", () => {
    expect(vllmRevision(["--revision", "v1", "--revision=v2"])).toBe("v2");
  });

  it("reads an unambiguous prefix (--rev, --revi=) as argparse does", () => {
    expect(vllmRevision(["--rev", "v4"])).toBe("v4");
    expect(vllmRevision(["--revi=v5"])).toBe("v5");
  });

  it("is main when --revision has no value (vLLM exits on it anyway)", () => {
    expect(vllmRevision(["--revision"])).toBe("main");
    expect(vllmRevision(["--revision="])).toBe("main");
  });
});
