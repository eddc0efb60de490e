#!/usr/bin/env bash
# Last step, after any reboot: check that GPU, Docker and the volume work, then mark the host
# ready, log it and open SSH for the deployment. Its output goes to the bootstrap log (from
# bootstrap.sh, or gpu-sandbox-finish.service), so a failed check's own error is there too.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

trap 'on_failure finish' ERR

# A failed check says what failed and what to do about it, then fails the step.
fail() {
  log "finish: $*"
  on_failure finish
  exit 1
}

if ! mountpoint -q "$DATA_DIR" && ! mount "$DATA_DIR"; then
  fail "the volume is not mounted at $DATA_DIR and mounting it failed (its error is above): is $VOLUME_DEVICE attached? (\`ls -l $VOLUME_DEVICE\`, \`dmesg\`)"
fi
if ! names=$(nvidia-smi --query-gpu=name --format=csv,noheader) || [ -z "$names" ]; then
  fail "nvidia-smi sees no GPU (its error is above): look at \`nvidia-smi\` and \`dkms status\`; after a kernel update, install that kernel's headers (linux-headers-\$(uname -r)) and reboot"
fi
gpus=$(wc -l <<<"$names")
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
runtimes=$(docker info --format '{{json .Runtimes}}') \
  || fail "\`docker info\` failed (its error is above): is Docker running? (\`systemctl status docker\`)"
if ! grep -q nvidia <<<"$runtimes"; then
  fail "Docker has no NVIDIA runtime (its runtimes: $runtimes): run \`nvidia-ctk runtime configure --runtime=docker && systemctl restart docker\`, or bootstrap.sh again"
fi

rm -f "$REBOOT_MARKER" "$FAILED_MARKER"
systemctl disable gpu-sandbox-finish.service 2>/dev/null || true
echo "ready $(date -u +%Y-%m-%dT%H:%M:%SZ) driver=$driver gpus=$gpus" >"$READY_MARKER"
"$LIB_DIR/ssh-gate.sh" open
log "host ready: $gpus GPU(s), NVIDIA driver $driver, Docker with the NVIDIA runtime, volume at $DATA_DIR"
