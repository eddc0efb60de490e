#!/usr/bin/env bash
# Opens or closes SSH on the host itself (iptables/ip6tables INPUT rule), independent of the
# Cloud Firewall. Usage: ssh-gate.sh open | ssh-gate.sh close-unless <marker>...
#
# SSH stays closed until the host is ready (or setup has failed), so that `pulumi up`, which
# waits by retrying its SSH dial, never holds a session across the NVIDIA driver's reboot.
# cloud-init runs this from bootcmd on every boot, before any other file is written, with the
# ready and the failed markers: a host whose setup failed keeps SSH open across reboots, or
# nothing would open it again (the bootstrap does not run again by itself) and only Lish would
# be left to look at what failed.
set -euo pipefail

action=${1:?usage: ssh-gate.sh open | close-unless <marker>...}
if [ "$action" = close-unless ]; then
  [ $# -ge 2 ] || { echo "close-unless needs at least one marker path" >&2; exit 2; }
  for marker in "${@:2}"; do
    [ -f "$marker" ] && exit 0
  done
fi

for tool in iptables ip6tables; do
  command -v "$tool" >/dev/null || continue
  while "$tool" -D INPUT -p tcp --dport 22 -m comment --comment gpu-sandbox-bootstrap -j DROP 2>/dev/null; do :; done
  if [ "$action" = close-unless ]; then
    "$tool" -I INPUT -p tcp --dport 22 -m comment --comment gpu-sandbox-bootstrap -j DROP
  fi
done
