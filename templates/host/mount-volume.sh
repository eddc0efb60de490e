#!/usr/bin/env bash
# Mounts the Block Storage Volume (model weights, the shim's ledger, certificates) at DATA_DIR.
# Formats it only when it has no filesystem: a volume reattached to a replacement instance
# keeps its data.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Linode attaches the volume once the instance exists, which can be after this boot starts.
for _ in $(seq 1 120); do
  [ -e "$VOLUME_DEVICE" ] && break
  udevadm settle --timeout=5 || true
  sleep 5
done
[ -e "$VOLUME_DEVICE" ] || { log "volume $VOLUME_DEVICE did not appear within 10 minutes"; exit 1; }

# blkid -p exits 2 when it finds no filesystem signature at all, but also when it cannot read
# the device (EIO while the attachment settles, a storage hiccup). So a volume is formatted only
# when its first MiB also reads back as zeros: nothing that may hold the ledger is ever formatted
# because a read failed. Any other blkid failure (an ambivalent probe) stops here too.
probe=0
blkid -p "$VOLUME_DEVICE" >/dev/null 2>&1 || probe=$?
case $probe in
  0) ;;
  2)
    if ! cmp -s -n 1048576 "$VOLUME_DEVICE" /dev/zero; then
      log "no filesystem found on $VOLUME_DEVICE, but its first MiB is not blank or cannot be read: not formatting it; look at the volume by hand (wipefs -n, dmesg)"
      exit 1
    fi
    log "volume is blank: formatting it (ext4)"
    mkfs.ext4 -q -L gpu-sandbox "$VOLUME_DEVICE"
    ;;
  *)
    log "blkid -p $VOLUME_DEVICE failed (exit $probe): not formatting it; look at the volume by hand"
    exit 1
    ;;
esac

mkdir -p "$DATA_DIR"
# By the stable by-id path, and nofail so a detached volume never blocks booting (SSH comes up
# to look). Docker, whose restart policies start the stack at boot, requires the mount
# (x-systemd.required-by, with x-systemd.before for the order): ordering alone only waits until
# the mount was tried, and a volume missing at boot would leave the containers running on empty
# directories of the root disk (vLLM downloading the model there again, the shim starting an
# empty ledger). Without the mount Docker does not start at all. x-systemd.growfs grows the
# filesystem to the volume at each mount: a volume raised in size (volumeSizeGb) gets the space
# after a reboot even when the running kernel did not see it grow.
if ! grep -q "^$VOLUME_DEVICE " /etc/fstab; then
  echo "$VOLUME_DEVICE $DATA_DIR ext4 defaults,noatime,nofail,x-systemd.required-by=docker.service,x-systemd.before=docker.service,x-systemd.growfs 0 2" >>/etc/fstab
  systemctl daemon-reload # systemd reads fstab's mounts (and Docker's dependency) from it now
fi
mountpoint -q "$DATA_DIR" || mount "$DATA_DIR"

mkdir -p "$DATA_DIR/huggingface" "$DATA_DIR/shim" "$DATA_DIR/letsencrypt" "$DATA_DIR/certbot-www"
# The shim runs as uid 1000 (the node user of its image) and owns its database directory.
chown 1000:1000 "$DATA_DIR/shim"
