#!/usr/bin/env bash
# Last step, after any reboot: check that GPU, Docker and the volume work, then mark the host
# ready, log it and open SSH for the deployment.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

trap 'on_failure finish' ERR

mountpoint -q "$DATA_DIR" || mount "$DATA_DIR"
gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
docker info --format '{{json .Runtimes}}' | grep -q nvidia

rm -f "$REBOOT_MARKER" "$FAILED_MARKER"
systemctl disable gpu-sandbox-finish.service 2>/dev/null || true
echo "ready $(date -u +%Y-%m-%dT%H:%M:%SZ) driver=$driver gpus=$gpus" >"$READY_MARKER"
"$LIB_DIR/ssh-gate.sh" open
log "host ready: $gpus GPU(s), NVIDIA driver $driver, Docker with the NVIDIA runtime, volume at $DATA_DIR"
