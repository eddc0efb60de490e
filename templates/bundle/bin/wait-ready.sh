#!/usr/bin/env bash
# Waits until the endpoint answers through nginx with the model loaded, or explains where to
# look. Usage: wait-ready.sh <ready-url> <timeout-seconds> | wait-ready.sh --diagnose <ready-url> [<service>…]
# (--diagnose shows the logs of the services named, then of each other service that is not up
# and healthy; vLLM's when there is none.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "gpu-sandbox: $*"; }

# The host's RAM, not the GPU's, ran out: vLLM reads the weights through it, and CPU-side flags
# (--cpu-offload-gb, --swap-space) hold their buffers there; the other services share the rest.
host_ram_hint() {
  echo "  The host ran out of RAM (not GPU memory): the plan's RAM is too small for this model with these flags. Pick"
  echo "  a plan with more RAM (npm run render shows the plan's), or fewer CPU-side flags in model.extraArgs such as"
  echo "  --cpu-offload-gb or --swap-space. On the host, \`dmesg | grep -i oom\` shows what the kernel killed."
}

# What the log `logs` says to do, for the failures it can tell (the words of vLLM 0.11 to 0.31, V1,
# the default 0.33 not re-read, and of the V0 engine before it; of the Hugging Face Hub).
hints() {
  local logs=$1
  # The KV cache (room for model.maxModelLen tokens) first: more memory for vLLM helps there, not
  # less. The V0 engine said "…larger than the maximum number of tokens that can be stored in KV cache".
  if grep -qE 'KV cache is needed, which is larger than the available KV cache memory|No available memory for the cache blocks|larger than the maximum number of tokens that can be stored in KV cache' <<<"$logs"; then
    echo "  The model does not fit in GPU memory with room for model.maxModelLen tokens: lower model.maxModelLen (vLLM's"
    echo "  error may estimate the longest that fits), raise model.gpuMemoryUtilization a little (0.9 to 0.95), pick a"
    echo "  smaller or quantised model, or a plan with more VRAM (npm run render shows the plan's GPU)."
  elif grep -qE 'Free memory on device .*on startup is less than desired GPU memory utilization' <<<"$logs"; then
    echo "  The model does not fit in GPU memory: less of it is free than model.gpuMemoryUtilization asks. Lower it, or"
    echo "  stop what else holds GPU memory (nvidia-smi lists it: a vLLM left from before?)."
  # Before the GPU's words: PyTorch's CPU allocator says "not enough memory" too (or "can't
  # allocate memory … (Cannot allocate memory)"), whatever exception carries it, and an engine core
  # the OOM killer ended says nothing at all.
  elif grep -qE "DefaultCPUAllocator: (not enough|can't allocate) memory|Cannot allocate memory" <<<"$logs" \
    || [ "$(engine_core_killed "$logs" | cut -d' ' -f2)" = 9 ]; then
    host_ram_hint
  elif grep -qiE 'out of memory|OutOfMemoryError|not enough (GPU )?memory' <<<"$logs"; then
    echo "  The model does not fit in GPU memory: lower model.maxModelLen or model.gpuMemoryUtilization,"
    echo "  pick a smaller model, or a plan with more VRAM (npm run render shows the plan's GPU)."
  fi
  # A gated model's refusal, not any 401: the Hub answers 401 for a repository that does not
  # exist too ("Repository Not Found", whose text mentions gated repos as well).
  if grep -qE 'GatedRepoError|Cannot access gated repo|Access to model .* is restricted' <<<"$logs"; then
    echo "  Hugging Face refused the download: set gpu-sandbox:hfToken and accept the model's licence on huggingface.co."
  elif grep -qE 'Repository Not Found|Invalid repository ID or local directory specified' <<<"$logs"; then
    echo "  Hugging Face has no model by that name: check model.id (exact, case-sensitive: owner/name as on"
    echo "  huggingface.co), or, for a private model, set gpu-sandbox:hfToken to a token that can read it."
  fi
}

# "<process> <signal>" when vLLM's API server says a signal ended its engine core ("Failed core
# proc(s): {'EngineCore_DP0': -9}", a multiprocessing exit code): killed, it logged no error.
engine_core_killed() {
  sed -nE "s/.*Engine core initialization failed.*Failed core proc\(s\): \{.*'([^']+)': -([0-9]+).*/\1 \2/p" <<<"$1" | tail -n 1
}

# The first error a log names (Python's `…Error: …` / `…Exception: …`), from the exception's name
# on: vLLM's log ends with its API server's "Engine core initialization failed. See root cause
# above", the root cause being the engine core's error, tens of lines up; unless a signal killed
# the engine core, which then is the cause whatever else was logged before.
root_cause() {
  local proc signal
  read -r proc signal < <(engine_core_killed "$1") || true
  if [ -n "${signal:-}" ]; then
    echo "vLLM's engine core ($proc) was killed by SIG$(kill -l "$signal" 2>/dev/null || echo "NAL $signal") (exit code -$signal)$(
      if [ "$signal" = 9 ]; then echo ", usually the host's OOM killer (it leaves no error in the log)"; fi)"
    return
  fi
  awk '/(Error|Exception): / && !/Engine core initialization failed/ {
    if (match($0, /[[:alnum:]_.]*(Error|Exception): .*/)) { print substr($0, RSTART); exit }
  }' <<<"$1"
}

# The services to show: those named, then each whose status is neither up nor healthy (never
# started, "Created", has no log to show), else vLLM. `status` is `docker compose ps` as
# "  <service>: <status>" lines, split at the first ": " only: a status has its own
# ("Up 30 minutes (health: starting)").
failed_services() {
  local status=$1
  shift
  {
    if [ "$#" -gt 0 ]; then printf '%s\n' "$@"; fi
    awk '{ sub(/^ +/, ""); i = index($0, ": "); svc = substr($0, 1, i - 1); st = substr($0, i + 2) }
      i > 1 && st !~ /^Created/ && (st !~ /^Up/ || st ~ /\((unhealthy|health: starting)\)/) { print svc }' <<<"$status"
  } | awk '!seen[$0]++' | grep . || echo vllm
}

# Why the service's container last stopped when its log cannot say: the kernel's OOM killer
# (Docker's OOMKilled, kept until the container stops again) or another SIGKILL (exit 137) ends a
# process before it writes a word. HostConfig.Memory is the container's memory limit (compose's
# mem_limit), 0 when it has none.
killed_hint() {
  local service=$1 ids oom code limit
  ids=$(docker compose ps -a -q "$service" 2>/dev/null) || return 0
  if [ -z "$ids" ]; then return 0; fi
  # A container OOM-killed first (sort -r: "true" before "false").
  # shellcheck disable=SC2086 # one id per word
  read -r oom code limit < <(docker inspect -f '{{.State.OOMKilled}} {{.State.ExitCode}} {{.HostConfig.Memory}}' $ids 2>/dev/null \
    | sort -r) || return 0
  if [ "$oom" = true ]; then
    echo "  $service was killed for lack of memory (docker inspect: OOMKilled): the kernel's OOM killer ended it or one of"
    echo "  its processes, which leaves no error in its log."
    if [[ "$limit" =~ ^[0-9]+$ ]] && [ "$limit" -gt 0 ]; then
      echo "  It used all of its container's memory limit, $((limit / 1048576)) MiB (mem_limit in compose.yaml): \`docker stats"
      echo "  --no-stream\` shows what it uses now. If it reaches the limit at every start, the limit is too small for it."
    else
      host_ram_hint
    fi
  elif [ "$code" = 137 ]; then
    echo "  $service was killed (SIGKILL, exit 137), not by its container's OOM killer: by the host's if \`dmesg | grep -i oom\`"
    echo "  names it (a plan with more RAM), else by a \`docker kill\` or a stop that timed out."
  fi
}

diagnose() {
  local status service logs cause
  {
    echo "gpu-sandbox: the endpoint is not ready. Where to look, on the host:"
    echo "  cd $(pwd) && docker compose ps -a && docker compose logs --tail 100 <service>"
    status=$(docker compose ps -a --format '  {{.Service}}: {{.Status}}' 2>/dev/null || true)
    if [ -n "$status" ]; then echo "$status"; fi
    for service in $(failed_services "$status" "$@"); do
      logs=$(docker compose logs --no-log-prefix --tail 300 "$service" 2>&1 || true)
      # The RAM hint once, when both the container's state and its log call for it.
      { killed_hint "$service"; hints "$logs"; } | awk '!seen[$0]++'
      echo "  Last lines from $service (docker compose logs --tail 100 $service):"
      cause=$(root_cause "$logs")
      if [ -n "$cause" ]; then echo "    Root cause: $cause"; fi
      tail -n 15 <<<"$logs" | sed 's/^/    /'
    done
  } >&2
  exit 1
}

if [ "${1:-}" = --diagnose ]; then diagnose "${@:3}"; fi
url=${1:?usage: wait-ready.sh <ready-url> <timeout-seconds>}
timeout=${2:?timeout missing}

# At most `timeout` seconds in all: each try (up to 5 s) and each pause (5 s) is cut to the time
# left, and there is always a first try.
deadline=$((SECONDS + timeout))
slice() {
  local left=$((deadline - SECONDS))
  echo $((left < 5 ? left : 5))
}
# Each slice is read once and used as read: $SECONDS may tick between two reads, and curl takes
# --max-time 0 as no limit at all.
while t=$(slice) && [ "$t" -gt 0 ]; do
  # -k: the certificate may still be the placeholder, or self-signed.
  if body=$(curl -fsSk --max-time "$t" "$url" 2>/dev/null); then
    log "ready: $body"
    exit 0
  fi
  t=$(slice)
  if [ "$t" -gt 0 ]; then sleep "$t"; fi
done
log "no ready answer from $url within ${timeout}s"
diagnose
