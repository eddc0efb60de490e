#!/usr/bin/env bash
# Run by `pulumi up` on the operator's machine when the host is new, before any step over SSH:
# waits until the host's SSH answers this machine. The host keeps port 22 shut until its first
# boot is done (5-15 minutes), and the Linode firewall drops it for addresses outside adminCidrs;
# from here both look the same, a connection that times out. So when SSH never answers, this
# says so in words, with the first thing to check, instead of the SSH library's dial error.
# Environment: GS_SSH_KEY (the private key), GS_HOST (address), GS_WAIT_SECONDS,
# GS_ADMIN_CIDRS (as configured, for the message).
set -u

if ! command -v ssh >/dev/null; then
  echo "gpu-sandbox: no ssh client on this machine; host-ready waits for SSH by itself" >&2
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(umask 077 && printf '%s\n' "${GS_SSH_KEY:?}" >"$dir/key")

wait_seconds=${GS_WAIT_SECONDS:?}
deadline=$((SECONDS + wait_seconds))
echo "gpu-sandbox: waiting for SSH on ${GS_HOST:?} (the host's first boot takes 5-15 minutes; at most $((wait_seconds / 60)) minutes)"
while :; do
  # This login sends nothing but `true`; record-host-key.sh, next, records the host's key. The
  # key accepted here goes to a file of this run's own, thrown away at its end.
  if ssh -F /dev/null -i "$dir/key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new \
    -o UserKnownHostsFile="$dir/known_hosts" -o ConnectTimeout=15 -o LogLevel=ERROR "root@$GS_HOST" true 2>/dev/null; then
    echo "gpu-sandbox: SSH on $GS_HOST answers"
    exit 0
  fi
  [ "$SECONDS" -lt "$deadline" ] || break
  sleep 10
done
cat >&2 <<MESSAGE
gpu-sandbox: SSH on $GS_HOST did not answer within $((wait_seconds / 60)) minutes.
  Is your address in adminCidrs? They are: ${GS_ADMIN_CIDRS:-(none)}. The firewall lets SSH in from
  those alone; your public address is what \`curl -4s https://ifconfig.me\` prints. Fix it with
  pulumi config set --path 'gpu-sandbox:adminCidrs[0]' "\$(curl -4s https://ifconfig.me)/32"
  and run \`pulumi up\` again (the host is kept; the firewall changes in place).
  If it is, the host's first boot has not finished: open Linode's Lish console (rootPassword
  output) and look at /var/log/gpu-sandbox-bootstrap.log and \`cloud-init status --long\`.
MESSAGE
exit 1
