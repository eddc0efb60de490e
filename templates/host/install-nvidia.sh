#!/usr/bin/env bash
# The NVIDIA server driver (open kernel module: Turing, Ada and Blackwell cards all need or
# support it), loaded without a reboot when the running kernel allows it.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if nvidia-smi >/dev/null 2>&1; then
  # A reboot marker left by an earlier run (the driver loaded since, after a reboot by hand)
  # would keep bootstrap.sh from ever finishing.
  rm -f "$REBOOT_MARKER"
  exit 0
fi

# Headless (no X libraries) server branch; DKMS builds the module for the running kernel.
kernel="$(uname -r)"
apt_get install "linux-headers-$kernel" \
  "nvidia-headless-${NVIDIA_DRIVER_BRANCH}-server-open" "nvidia-utils-${NVIDIA_DRIVER_BRANCH}-server"
# The headers metapackage of the kernel's flavour (6.8.0-45-generic → linux-headers-generic), so
# the kernels unattended-upgrades installs come with headers and DKMS rebuilds the module for
# them; without it the next reboot would come up without the NVIDIA driver.
if ! apt_get install "linux-headers-${kernel##*-}"; then
  log "warning: no linux-headers-${kernel##*-} package; after a kernel update, install its headers before rebooting"
fi

# nouveau holds the card if it was loaded at boot; unloading it is enough on a headless host.
# Read from /proc/modules, not `lsmod | grep -q`: grep exits at the first match, and lsmod's
# SIGPIPE fails that pipeline under pipefail, as if nouveau were not loaded.
if grep -q '^nouveau ' /proc/modules; then modprobe -r nouveau || true; fi
modprobe nvidia || true
modprobe nvidia_uvm || true

if nvidia-smi >/dev/null 2>&1; then
  log "NVIDIA driver loaded without a reboot"
else
  log "NVIDIA driver installed; the running kernel needs a reboot to load it"
  touch "$REBOOT_MARKER"
fi
