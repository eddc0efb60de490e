#!/usr/bin/env bash
# Run by `pulumi up` on the operator's machine once per host, after wait-for-ssh.sh and before
# any step that sends the host a secret: records the SSH key the host presents at this first
# login, and prints it ("<type> <base64>") alone on stdout, which Pulumi keeps in the stack's
# state. Every later SSH connection checks the host against it: the steps of `pulumi up`
# (@pulumi/command's hostKey), stop-serving-stack.sh and the sshCommand output. Trust on first
# use: this first login believes whatever key answers; docs/decisions.md says why the key is
# not handed to the host in its user data instead.
# Run again on the same host (Pulumi passes the last output as PULUMI_COMMAND_STDOUT), it prints
# the key it recorded, without connecting: a new version of this script must not trust anew.
# Environment: GS_SSH_KEY (the private key), GS_HOST (address).
set -u

# A key as this prints it: a type, then base64.
key_line='^[a-z0-9@.-]+ [A-Za-z0-9+/]+=*$'
if [[ ${PULUMI_COMMAND_STDOUT:-} =~ $key_line ]]; then
  printf '%s\n' "$PULUMI_COMMAND_STDOUT"
  exit 0
fi

if ! command -v ssh >/dev/null; then
  echo "gpu-sandbox: no ssh client on this machine: pulumi up needs OpenSSH's ssh to record the host's SSH key" >&2
  exit 1
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(umask 077 && printf '%s\n' "${GS_SSH_KEY:?}" >"$dir/key")

# The host key types in the order @pulumi/command's SSH client (Go's golang.org/x/crypto/ssh)
# asks for them, ECDSA before Ed25519: the host answers with the first it has, so the key
# recorded here is the one that client is shown (an Ubuntu host has ECDSA, Ed25519 and RSA keys).
algorithms=ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-256,rsa-sha2-512,ssh-ed25519
if ! ssh -F /dev/null -i "$dir/key" -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new \
  -o UserKnownHostsFile="$dir/known_hosts" -o HostKeyAlgorithms="$algorithms" -o ConnectTimeout=15 -o LogLevel=ERROR \
  "root@${GS_HOST:?}" true; then
  echo "gpu-sandbox: could not log in to $GS_HOST to record its SSH key; run pulumi up again" >&2
  exit 1
fi
# known_hosts lines read "<host> <type> <base64>".
key=$(awk 'NF >= 3 { print $2 " " $3; exit }' "$dir/known_hosts" 2>/dev/null)
if ! [[ $key =~ $key_line ]]; then
  echo "gpu-sandbox: $GS_HOST presented no SSH key that ssh recorded; run pulumi up again" >&2
  exit 1
fi
# The fingerprint, to compare with the one the host's first boot wrote to its console (Lish).
fingerprint=$(printf '%s\n' "$key" | ssh-keygen -lf - 2>/dev/null | awk '{ print $2 }')
echo "gpu-sandbox: recorded the SSH key of $GS_HOST (${fingerprint:-fingerprint unknown}); later connections check it" >&2
printf '%s\n' "$key"
