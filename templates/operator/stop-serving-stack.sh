#!/usr/bin/env bash
# Run by `pulumi destroy` on the operator's machine, before the volume and the instance go:
# stops the serving stack on the host (nginx lets its streams finish, then the shim drains and
# settles what is left into the ledger). It is a local command with a best-effort SSH, because a destroy must never fail (and
# leave a GPU billing) for want of SSH: from an address outside adminCidrs, or after the host
# was deleted by hand, it says so and the destroy goes on.
# Environment: GS_SSH_KEY (the private key), GS_HOST (address), GS_DIR (/opt/gpu-sandbox).
set -u

key=$(mktemp)
trap 'rm -f "$key"' EXIT
printf '%s\n' "${GS_SSH_KEY:?}" >"$key"

remote="if [ -f ${GS_DIR:?}/compose.yaml ]; then cd $GS_DIR && docker compose down --remove-orphans --timeout 30; fi"
if command -v ssh >/dev/null &&
  ssh -F /dev/null -i "$key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 "root@${GS_HOST:?}" "$remote"; then
  echo "gpu-sandbox: stopped the serving stack on $GS_HOST"
else
  echo "gpu-sandbox: could not stop the serving stack on $GS_HOST (no ssh client, or the host is unreachable); destroying anyway" >&2
fi
exit 0
