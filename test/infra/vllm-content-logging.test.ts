// vLLM logs prompts (--enable-log-requests) and answers (--enable-log-outputs) only when told to;
// model.extraArgs may tell it, and `pulumi up` and the plan then say that the tenant's prompts go
// to the host's logs (docs/privacy.md).
import { expect, it } from "vitest";
import { validateConfig, type TenantConfig } from "../../infra/config.ts";
import { configWarnings } from "../../infra/plan.ts";

function config(extraArgs: string[]): TenantConfig {
  const result = validateConfig({ region: "us-ord", adminCidrs: ["81.2.69.160/32"], model: { extraArgs } }, { stack: "acme" });
  if (!result.ok) throw new Error(JSON.stringify(result.problems));
  return result.config;
}
const logging = (extraArgs: string[]) => configWarnings(config(extraArgs)).filter((w) => w.includes("docs/privacy.md"));

it("says nothing of logging for the kit's own vLLM command, which logs no prompt", () => {
  expect(logging([])).toEqual([]);
  expect(logging(["--enable-prefix-caching", "--max-log-len", "100"])).toEqual([]);
});

it("warns that prompts are logged when model.extraArgs turns vLLM's request log on, in any spelling its parser reads", () => {
  for (const args of [["--enable-log-requests"], ["--enable_log_requests"], ["--max-log-len=50", "--enable-log-requests"]]) {
    const warnings = logging(args);
    expect(warnings, args.join(" ")).toHaveLength(1);
    expect(warnings[0]).toMatch(/--enable-log-requests: vLLM then writes every request's prompt to its log/);
  }
});

it("warns that answers are logged with --enable-log-outputs, each flag its own warning", () => {
  const warnings = logging(["--enable-log-requests", "--enable-log-outputs"]);
  expect(warnings).toHaveLength(2);
  expect(warnings[1]).toMatch(/--enable-log-outputs: vLLM then writes every answer's text to its log/);
});

it("does not warn for the flags' --no- forms, which keep vLLM's default", () => {
  expect(logging(["--no-enable-log-requests", "--no-enable-log-outputs"])).toEqual([]);
});
