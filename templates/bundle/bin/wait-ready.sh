#!/usr/bin/env bash
# Waits until the endpoint answers through nginx with the model loaded, or explains where to
# look. Usage: wait-ready.sh <ready-url> <timeout-seconds> | wait-ready.sh --diagnose <ready-url>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "gpu-sandbox: $*"; }

diagnose() {
  {
    echo "gpu-sandbox: the endpoint is not ready. Where to look, on the host:"
    echo "  cd $(pwd) && docker compose ps && docker compose logs --tail 100 vllm"
    docker compose ps --format '  {{.Service}}: {{.Status}}' || true
    local logs
    logs=$(docker compose logs --no-log-prefix --tail 300 vllm 2>&1 || true)
    if grep -qiE 'out of memory|OutOfMemoryError|not enough (GPU )?memory|larger than the maximum number of tokens that can be stored in KV cache' <<<"$logs"; then
      echo "  The model does not fit in GPU memory: lower model.maxModelLen or model.gpuMemoryUtilization,"
      echo "  pick a smaller model, or a plan with more VRAM (npm run render shows the plan's GPU)."
    fi
    if grep -qiE 'gated repo|GatedRepoError|401 Client Error|Access to model .* is restricted' <<<"$logs"; then
      echo "  Hugging Face refused the download: set gpu-sandbox:hfToken and accept the model's licence on huggingface.co."
    fi
    echo "  Last lines from vllm:"
    tail -n 15 <<<"$logs" | sed 's/^/    /'
  } >&2
  exit 1
}

if [ "${1:-}" = --diagnose ]; then diagnose; fi
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
