/**
 * What the kit decides for vLLM itself: the flags it sets from config (and so refuses in
 * `model.extraArgs`), and how the plan's GPUs are split between tensor and pipeline parallelism.
 */
import type { Problems } from "./checks.ts";
import type { ModelPrice } from "./types.ts";
import { setSecretCommand } from "./settings.ts";

/**
 * Flags the kit sets itself from config; passing them in `model.extraArgs` would contradict the
 * config (or open vLLM to the network), so each names the key to use instead.
 */
const RESERVED_VLLM_FLAGS: Readonly<Record<string, string>> = {
  "--model": "model.id",
  "--served-model-name": "model.servedName",
  "--max-model-len": "model.maxModelLen",
  "--gpu-memory-utilization": "model.gpuMemoryUtilization",
  "--tensor-parallel-size": "the plan (its GPU count)",
  "--pipeline-parallel-size": "the plan (its GPU count)",
  "--host": "nothing: vLLM listens only on the private Docker network",
  "--port": "nothing: vLLM listens only on the private Docker network",
  "--api-key": "nothing: the kit generates vLLM's key",
  // A secret: given here it would sit in clear in the stack file, compose.yaml, `docker inspect`
  // and vLLM's log of its arguments, which the deploy shows on a failure.
  "--hf-token": `hfToken (${setSecretCommand("hfToken")})`,
};

/** Reserved flags whose value is a secret: a problem names the flag, never the value. */
const SECRET_VLLM_FLAGS: ReadonlySet<string> = new Set(["--hf-token"]);

/** vLLM's short spellings of reserved flags. */
const VLLM_SHORT_FLAGS: Readonly<Record<string, string>> = { "-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size" };

/**
 * What to use instead when `arg` would set one of RESERVED_VLLM_FLAGS, spelt as vLLM's parser
 * reads it: `--api_key` is `--api-key` (its FlexibleArgumentParser turns underscores before the
 * first dot into dashes), `-tp` is `--tensor-parallel-size`, and argparse takes any unambiguous
 * prefix (`--served-model`) for the whole flag. `name`: the flag as `arg` spells it (before any
 * "="), which a problem shows in place of a secret's value.
 */
function reservedVllmFlag(arg: string): { instead: string; secret: boolean; name: string } | undefined {
  const name = arg.split("=")[0]!;
  const flag = vllmFlag(name);
  const reserved = RESERVED_VLLM_FLAGS[flag] !== undefined ? flag
    : flag.length >= 4 && flag.startsWith("--") ? Object.keys(RESERVED_VLLM_FLAGS).find((r) => r.startsWith(flag)) : undefined;
  return reserved === undefined ? undefined : { instead: RESERVED_VLLM_FLAGS[reserved]!, secret: SECRET_VLLM_FLAGS.has(reserved), name };
}

/** A flag's name as vLLM's parser reads it: `--api_key` is `--api-key`, `-tp` is `--tensor-parallel-size`. */
export function vllmFlag(name: string): string {
  return name.startsWith("--")
    ? `--${name.slice(2).replace(/^[^.]*/, (head) => head.replaceAll("_", "-"))}`
    : VLLM_SHORT_FLAGS[name] ?? name;
}

/** vLLM's flag for prompt-cache hits in chat's and completions' usage (its Responses API reports them unasked). */
const PROMPT_TOKENS_DETAILS = "--enable-prompt-tokens-details";

/**
 * The flags the kit adds to vLLM's command for pricing: with the served model's cached prompt
 * tokens priced below its prompt tokens, vLLM must report cache hits on chat and completions as it
 * does on `/v1/responses`, or the same prompt costs less there. Only then: a new flag changes
 * vLLM's command, which restarts it on every upgraded host. Not over the operator's own
 * `--enable-prompt-tokens-details` or `--no-enable-prompt-tokens-details` in `model.extraArgs`.
 */
export function pricingVllmFlags(extraArgs: readonly string[], price: ModelPrice | undefined): string[] {
  const discounted = price?.cachedPromptPer1k !== undefined && price.cachedPromptPer1k < price.promptPer1k;
  return discounted && !setsVllmFlag(extraArgs, PROMPT_TOKENS_DETAILS) ? [PROMPT_TOKENS_DETAILS] : [];
}

/**
 * Whether `model.extraArgs` sets `flag` itself, in any spelling vLLM's parser reads as it
 * (`--flag_name`, `--flag=value`), a boolean's `--no-` form included: a flag the kit would add
 * is then the operator's choice, and the kit adds nothing over it.
 */
export function setsVllmFlag(extraArgs: readonly string[], flag: string): boolean {
  return extraArgs.some((arg) => vllmFlag(arg.split("=")[0]!).replace(/^--no-/, "--") === flag);
}

/**
 * The revision of model.id that vLLM downloads, which `pulumi up` checks on Hugging Face: the value
 * of the last `--revision` in validated `model.extraArgs` (`["--revision", "v1.0"]` or
 * `"--revision=v1.0"`; argparse keeps the last one, and takes a prefix such as `--rev` for the
 * whole flag: `--re` and shorter are ambiguous among vLLM's flags, `--reasoning-parser`…), or
 * `main`, huggingface_hub's default. A `--revision` without a value is `main` too: vLLM exits on
 * it, and the check has nothing better to ask about.
 */
export function vllmRevision(extraArgs: readonly string[]): string {
  return lastFlagValue(extraArgs, (flag) => flag.length >= "--rev".length && "--revision".startsWith(flag)) || "main";
}

/**
 * The value of the last of a flag's items in validated `model.extraArgs` (`["--flag", "v"]` or
 * `"--flag=v"`), as argparse keeps the last; `is` says which spellings are the flag (vllmFlag's
 * form). undefined when none is there; "" for one without a value.
 */
export function lastFlagValue(extraArgs: readonly string[], is: (flag: string) => boolean): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < extraArgs.length; i++) {
    const arg = extraArgs[i]!;
    const eq = arg.indexOf("=");
    if (!is(vllmFlag(eq < 0 ? arg : arg.slice(0, eq)))) continue;
    // The next item is the flag's value (and so not read as a flag itself).
    value = (eq < 0 ? extraArgs[++i] : arg.slice(eq + 1)) ?? "";
  }
  return value;
}

/** A flag as argparse reads one: `-q`, `--max-num-seqs`, `--compilation-config.level`. */
const FLAG = /^--?[A-Za-z][\w.-]*$/;

/**
 * A flag and its value written as one `model.extraArgs` item (`--max-num-seqs 64`), split as
 * meant (the value "" when only whitespace follows the flag: `--enforce-eager ` from a YAML block
 * scalar), or undefined. Each item is one argv element (compose's exec form), and argparse reads
 * an element that starts with "-" and has whitespace before any "=" as a positional: vLLM exits
 * ("unrecognized arguments"). A value item may hold spaces, and so may a value after "="
 * (`--chat-template={{ x }}`), and so may a value item that starts with "-" but whose head is no
 * flag's name (`-{{ messages }} x` after `--chat-template`, which argparse takes as the value).
 */
function flagWithValue(arg: string): [flag: string, value: string] | undefined {
  const m = /^(-[^=\s]*)\s+(.*)$/s.exec(arg);
  if (!m || !FLAG.test(m[1]!)) return undefined;
  return [m[1]!, m[2]!.trim()];
}

/**
 * `model.extraArgs` as vLLM will get them, each item one argv element; a problem for each item
 * that is not a non-empty string, sets a flag the kit sets (reservedVllmFlag), or holds a flag
 * and its value at a space (flagWithValue). A number is taken as its digits (Problems.digits): a
 * flag's value written unquoted (`- 64` in YAML, `pulumi config set --path
 * 'gpu-sandbox:model.extraArgs[1]' 64`) is the number 64, and meant as the argument "64". A number
 * is never a flag, nor a reserved one's value alone, so it needs no other check.
 */
export function checkedExtraArgs(p: Problems, args: unknown[]): string[] {
  const extraArgs: string[] = [];
  args.forEach((item, i) => {
    if (p.encrypted(`model.extraArgs[${i}]`, item)) return;
    if (typeof item === "number" && Number.isFinite(item)) {
      const digits = p.digits(`model.extraArgs[${i}]`, item);
      if (digits !== undefined) extraArgs.push(digits);
      return;
    }
    const arg = item;
    if (typeof arg !== "string" || arg.length === 0) {
      p.add(`model.extraArgs[${i}]`, arg, "must be a non-empty string such as --enable-prefix-caching");
      return;
    }
    const joined = flagWithValue(arg);
    const reserved = reservedVllmFlag(joined?.[0] ?? arg);
    // A secret's value is not repeated on the terminal (nor in CI logs): the flag alone names the item.
    if (reserved) p.add(`model.extraArgs[${i}]`, reserved.secret && reserved.name !== arg ? `${reserved.name} <value not shown>` : arg, `is set by the kit; use ${reserved.instead}`);
    else if (joined?.[1] === "") {
      p.add(`model.extraArgs[${i}]`, arg, `is one argument to vLLM, whitespace included, and vLLM would exit; remove the trailing whitespace: ${JSON.stringify(joined[0])}`);
    } else if (joined) {
      const [flag, flagValue] = joined.map((x) => JSON.stringify(x));
      p.add(`model.extraArgs[${i}]`, arg, `is one argument to vLLM, which does not split a flag from its value at a space and would exit; write [${flag}, ${flagValue}] or ${JSON.stringify(joined.join("="))}`);
    } else extraArgs.push(arg);
  });
  // No branch, tag or commit is named `.` or `..` (git refuses both), and in the Hugging Face
  // check's URL they are path segments that fall away: `pulumi up` would check main, and pass.
  const revision = vllmRevision(extraArgs);
  if (revision === "." || revision === "..") p.add("model.extraArgs", revision, "is no revision of a Hugging Face repository (`--revision` takes a branch, tag or commit, e.g. main)");
  return extraArgs;
}

export interface ParallelLayout {
  /** vLLM `--tensor-parallel-size`. */
  readonly tensorParallelSize: number;
  /** vLLM `--pipeline-parallel-size`. */
  readonly pipelineParallelSize: number;
}

/**
 * How vLLM spreads the model over `gpuCount` GPUs, using every one (tensor × pipeline = GPUs).
 * Tensor parallelism splits each layer's attention heads, and vLLM refuses to start unless the
 * model's head counts divide by it: 3 does not divide 28 (Qwen2.5-7B) or 32 (Llama), while a
 * power of two divides nearly every model's. So the tensor size is the largest power of two that
 * divides the GPU count, and the rest is pipeline parallelism, which splits the model by layers
 * and takes uneven splits: 3 GPUs run tensor 1 × pipeline 3, as vLLM's docs advise for a GPU count
 * that does not divide the model ("Parallelism and Scaling", uneven GPU splits).
 */
export function parallelLayout(gpuCount: number): ParallelLayout {
  if (!Number.isInteger(gpuCount) || gpuCount < 1) throw new Error(`parallelLayout: bad GPU count ${gpuCount}`);
  let tensorParallelSize = 1;
  while (gpuCount % (tensorParallelSize * 2) === 0) tensorParallelSize *= 2;
  return { tensorParallelSize, pipelineParallelSize: gpuCount / tensorParallelSize };
}

/**
 * vLLM's flags that write what clients send or get to its log, which Docker keeps on the host's
 * disk for as long as its rotation allows (docs/privacy.md): off by default in the vLLM the kit
 * pins, and legal in `model.extraArgs` (a debugging session may want them), but rarely meant
 * for a tenant whose prompts are personal data. Their `--no-` forms are the default, said aloud.
 */
const CONTENT_LOGGING_VLLM_FLAGS: Readonly<Record<string, string>> = {
  "--enable-log-requests": "every request's prompt",
  "--enable-log-outputs": "every answer's text",
};

/** The warning (for `pulumi up` and the plan) when `model.extraArgs` has vLLM log prompts or answers. */
export function contentLoggingWarnings(extraArgs: readonly string[]): string[] {
  return Object.entries(CONTENT_LOGGING_VLLM_FLAGS)
    .filter(([flag]) => extraArgs.some((arg) => vllmFlag(arg) === flag))
    .map(([flag, what]) =>
      `model.extraArgs has ${flag}: vLLM then writes ${what} to its log (whole, unless --max-log-len cuts it), which Docker keeps on the host's disk ` +
      "with its other lines (docs/privacy.md); remove it unless the tenant's prompts and answers may be logged");
}
