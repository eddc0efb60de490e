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
# Environment: GS_SSH_KEY (the private key), GS_HOST (address), GS_DIR (/opt/gpu-sandbox).
set -u

key=$(mktemp)
trap 'rm -f "$key"' EXIT
printf '%s\n' "${GS_SSH_KEY:?}" >"$key"

remote="if [ -f ${GS_DIR:?}/compose.yaml ]; then cd $GS_DIR && { docker compose stop --timeout 30 shim; docker compose down --remove-orphans --timeout 30; }; fi"
if command -v ssh >/dev/null &&
  ssh -F /dev/null -i "$key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=15 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 "root@${GS_HOST:?}" "$remote"; then
  echo "gpu-sandbox: stopped the serving stack on $GS_HOST"
else
  echo "gpu-sandbox: could not stop the serving stack on $GS_HOST (no ssh client, or the host is unreachable); destroying anyway" >&2
fi
exit 0
