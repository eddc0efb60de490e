#!/usr/bin/env bash
# First-boot setup of a gpu-sandbox GPU host, run once by cloud-init (runcmd).
# Each step is idempotent, so running this again after a failure resumes the work.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STEPS=(mount-volume install-docker install-nvidia install-container-toolkit)

step=start
rm -f "$FAILED_MARKER" # a run by hand after a failure starts clean
trap 'on_failure "$step"' ERR
log "bootstrap started (tenant ${TENANT:-unknown})"
for step in "${STEPS[@]}"; do
  log "step $step: started"
  "$LIB_DIR/$step.sh" >>"$LOG_FILE" 2>&1
  log "step $step: done"
done
step=finish

if [ -f "$REBOOT_MARKER" ]; then
  # The driver could not be loaded into the running kernel: finish after a reboot, which
  # cloud-init's power_state performs on the first boot because the marker exists; a run by
  # hand leaves the reboot to the operator.
  systemctl enable gpu-sandbox-finish.service
  log "the NVIDIA driver needs a reboot to load; the host finishes setting up after it. On the first boot cloud-init reboots now by itself; if you ran bootstrap.sh by hand, run \`reboot\` now"
else
  # finish.sh reports its own failure (it also runs alone, from gpu-sandbox-finish.service
  # after the reboot), so this trap would report it twice.
  trap - ERR
  if ! "$LIB_DIR/finish.sh" >>"$LOG_FILE" 2>&1; then
    show_log_tail
    exit 1
  fi
  log "bootstrap finished: the host is $(cat "$READY_MARKER")"
fi
