#!/usr/bin/env bash
# Run by `pulumi destroy` on the operator's machine, before the volume and the instance go:
# stops the serving stack on the host. The shim first, alone, for its stop_grace_period
# (templates/compose.yaml: 30 s): it drains while nginx still relays: requests in flight that end
# within SHIM_DRAIN_TIMEOUT_MS (23 s) end as usual, streams still running then end with a
# `service_unavailable` error event, charged for the content delivered, and all is settled into
# the ledger; new requests get a JSON 503 (or nginx's 502 once the shim is gone). Then
# `docker compose down` stops the rest: nginx, LiteLLM, then vLLM. `docker compose down` alone
# stopped nginx first (Compose stops dependents first): a stream still running after nginx's 30 s
# graceful stop was cut with no error event, and the shim charged it as a client that left.
# It is a local command with a best-effort SSH, because a destroy must never fail (and
# leave a GPU billing) for want of SSH: from an address outside adminCidrs, or after the host
# was deleted by hand, it says so and the destroy goes on.
# It talks to the host whose SSH key record-host-key.sh recorded (GS_HOST_KEY), and to no other:
# without one (SSH was never open to `pulumi up`, so it could not reach the host anyway), it
# does not connect.
# Environment: GS_SSH_KEY (the private key), GS_HOST (address), GS_HOST_KEY (its SSH key,
# "<type> <base64>", or empty), GS_DIR (/opt/gpu-sandbox).
set -u

if [ -z "${GS_HOST_KEY:-}" ]; then
  echo "gpu-sandbox: no SSH key of ${GS_HOST:?} was recorded (SSH was never open to pulumi up), so the serving stack is not stopped over SSH; destroying anyway" >&2
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(umask 077 && printf '%s\n' "${GS_SSH_KEY:?}" >"$dir/key")
printf '%s %s\n' "${GS_HOST:?}" "$GS_HOST_KEY" >"$dir/known_hosts"

remote="if [ -f ${GS_DIR:?}/compose.yaml ]; then cd $GS_DIR && { docker compose stop --timeout 30 shim; docker compose down --remove-orphans --timeout 30; }; fi"
if command -v ssh >/dev/null &&
  ssh -F /dev/null -i "$dir/key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$dir/known_hosts" \
    -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 "root@${GS_HOST:?}" "$remote"; then
  echo "gpu-sandbox: stopped the serving stack on $GS_HOST"
else
  echo "gpu-sandbox: could not stop the serving stack on $GS_HOST (no ssh client, the host is unreachable, or its SSH key is not the one recorded); destroying anyway" >&2
fi
exit 0
