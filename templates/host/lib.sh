#!/usr/bin/env bash
# Shared by the host bootstrap scripts: settings, logging and state markers.
# Settings come from /etc/gpu-sandbox/host.env, which cloud-init writes (it holds no secrets).

set -euo pipefail

# shellcheck source=/dev/null
. /etc/gpu-sandbox/host.env

: "${STATE_DIR:?STATE_DIR is not set in /etc/gpu-sandbox/host.env}"
: "${DATA_DIR:?DATA_DIR is not set in /etc/gpu-sandbox/host.env}"
: "${VOLUME_DEVICE:?VOLUME_DEVICE is not set in /etc/gpu-sandbox/host.env}"
: "${NVIDIA_DRIVER_BRANCH:?NVIDIA_DRIVER_BRANCH is not set in /etc/gpu-sandbox/host.env}"

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly LIB_DIR LOG_FILE=/var/log/gpu-sandbox-bootstrap.log
# Used by the scripts that source this file.
# shellcheck disable=SC2034
readonly READY_MARKER="$STATE_DIR/ready" FAILED_MARKER="$STATE_DIR/failed" REBOOT_MARKER="$STATE_DIR/reboot-required"
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$STATE_DIR"

# Every line goes to the bootstrap log, the journal (tag gpu-sandbox) and the serial console,
# so progress is visible with `journalctl -t gpu-sandbox` or in Lish; and to the terminal of an
# operator who runs bootstrap.sh by hand. Only to a terminal: under cloud-init and systemd stderr
# is a log already, and in the steps it is the bootstrap log, where the line would be doubled.
log() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) gpu-sandbox: $*"
  echo "$line" | tee -a "$LOG_FILE" >/dev/console 2>/dev/null || echo "$line" >>"$LOG_FILE"
  if [ -t 2 ]; then echo "$line" >&2; fi
  logger -t gpu-sandbox -- "$*" 2>/dev/null || true
}

# On a terminal: the end of the bootstrap log, where a failed step's own error is.
show_log_tail() {
  if [ -t 2 ]; then
    echo "--- last lines of $LOG_FILE:" >&2
    tail -n 15 "$LOG_FILE" >&2 || true
  fi
}

# apt-get with retries: a fresh instance races unattended-upgrades for the dpkg lock.
apt_get() {
  local attempt
  for attempt in 1 2 3 4 5; do
    if apt-get -o DPkg::Lock::Timeout=300 -y -q "$@"; then return 0; fi
    log "apt-get $* failed (attempt $attempt of 5); retrying"
    sleep $((attempt * 10))
  done
  return 1
}

# Any failed step leaves a marker naming it, logs where to look and opens SSH for debugging.
on_failure() {
  local step=$1
  echo "$step" >"$FAILED_MARKER"
  show_log_tail
  log "FAILED at step '$step'; see $LOG_FILE and \`cloud-init status --long\`. SSH is open for debugging."
  "$LIB_DIR/ssh-gate.sh" open
}
