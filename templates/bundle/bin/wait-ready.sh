#!/usr/bin/env bash
# Waits until the endpoint answers through nginx with the model loaded, or explains where to
# look. Usage: wait-ready.sh <ready-url> <timeout-seconds> | wait-ready.sh --diagnose <ready-url> [<service>…]
# (--diagnose shows the logs of the services named, then of each other service that is not up
# and healthy; vLLM's when there is none.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "gpu-sandbox: $*"; }

# What the log `logs` says to do, for the failures it can tell (the words of vLLM 0.11 to 0.31, V1, and
# of the V0 engine before it; of the Hugging Face Hub).
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

# The first error a log names (Python's `…Error: …` / `…Exception: …`), from the exception's name
# on: vLLM's log ends with its API server's "Engine core initialization failed. See root cause
# above", the root cause being the engine core's error, tens of lines up.
root_cause() {
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

diagnose() {
  local status service logs cause
  {
    echo "gpu-sandbox: the endpoint is not ready. Where to look, on the host:"
    echo "  cd $(pwd) && docker compose ps -a && docker compose logs --tail 100 <service>"
    status=$(docker compose ps -a --format '  {{.Service}}: {{.Status}}' 2>/dev/null || true)
    if [ -n "$status" ]; then echo "$status"; fi
    for service in $(failed_services "$status" "$@"); do
      logs=$(docker compose logs --no-log-prefix --tail 300 "$service" 2>&1 || true)
      hints "$logs"
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
