#!/usr/bin/env bash
# Run over SSH by `pulumi up` before deploying: returns once the host is ready, or fails with
# the bootstrap log when setup failed. SSH only opens when one of the two is true, so this
# rarely waits; the loop covers a connection that raced the gate.
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

timeout=${1:-1800}
for _ in $(seq 1 $((timeout / 5))); do
  if [ -f "$READY_MARKER" ]; then
    echo "host ready: $(cat "$READY_MARKER")"
    exit 0
  fi
  if [ -f "$FAILED_MARKER" ]; then
    echo "host setup failed at step '$(cat "$FAILED_MARKER")'. Last lines of $LOG_FILE:" >&2
    tail -n 40 "$LOG_FILE" >&2 || true
    echo "More: ssh in and run \`cloud-init status --long\` and \`journalctl -t gpu-sandbox\`." >&2
    echo "To resume once the cause is fixed (each step is idempotent): ssh in, run $LIB_DIR/bootstrap.sh (it shows its progress; run \`reboot\` if it ends by asking for it), then \`pulumi up\` again; or rebuild the host with \`pulumi up --replace <the instance's URN>\`." >&2
    exit 1
  fi
  sleep 5
done
echo "host not ready after ${timeout}s; see $LOG_FILE on the host" >&2
exit 1
