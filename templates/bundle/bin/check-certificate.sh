#!/usr/bin/env bash
# Run by deploy.sh with tls.mode letsencrypt, once the endpoint is ready: checks that nginx
# serves TLS_DOMAIN (from .env) a certificate clients trust. Until Let's Encrypt has issued one,
# nginx serves the placeholder `pulumi up` installed and every client gets a certificate error,
# while the endpoint itself is up; this says so, and why, without failing the deploy (certbot
# keeps retrying). Usage: check-certificate.sh <host's public IPv4 address> [wait-seconds]
# GS_TLS_CONNECT (host:port, default 127.0.0.1:443) is where nginx listens, for tests.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

ip=${1:?usage: check-certificate.sh <public-ip> [wait-seconds]}
wait_seconds=${2:-90}
connect=${GS_TLS_CONNECT:-127.0.0.1:443}
log() { echo "gpu-sandbox: $*"; }

domain=$(sed -n 's/^TLS_DOMAIN=//p' .env 2>/dev/null | tail -n 1)
if [ -z "$domain" ]; then
  log "no TLS_DOMAIN in $(pwd)/.env; the certificate was not checked" >&2
  exit 0
fi
port=${connect##*:}

# certbot may have the certificate already and nginx reload it within a minute: give it that.
deadline=$((SECONDS + wait_seconds))
while :; do
  # No -k: the host's CA store decides, as a client's would (Let's Encrypt's roots are in it).
  curl -sS -o /dev/null --max-time 10 --connect-to "$domain:$port:$connect" "https://$domain:$port/health" 2>/dev/null
  rc=$?
  if [ "$rc" -eq 0 ]; then
    log "certificate for $domain: issued by Let's Encrypt, trusted by clients"
    exit 0
  fi
  [ "$SECONDS" -lt "$deadline" ] || break
  sleep 10
done

# 60: not signed by a trusted CA (the placeholder); 51: not for this name. Anything else is
# not about the certificate.
if [ "$rc" -ne 60 ] && [ "$rc" -ne 51 ]; then
  log "could not check the certificate for $domain (curl exit $rc); see docker compose logs nginx certbot" >&2
  exit 0
fi
dns=$(getent ahostsv4 "$domain" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' ' | sed 's/ $//')
# AAAA records at another address than this host's own (ahostsv6 also lists the A records, as
# ::ffff: addresses).
own6=" $(ip -6 -o addr show scope global 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4}' | tr '\n' ' ') "
stray6=$(getent ahostsv6 "$domain" 2>/dev/null | awk '$1 ~ /:/ && $1 !~ /^::ffff:/ {print $1}' | sort -u \
  | while read -r a; do case "$own6" in *" $a "*) ;; *) printf '%s ' "$a" ;; esac; done | sed 's/ $//')
{
  log "WARNING: clients get a certificate error: nginx still serves the placeholder certificate for $domain,"
  log "  because Let's Encrypt has not issued the real one yet (the endpoint itself is up)."
  if [ "$dns" != "$ip" ] && [ "$domain" = "${ip//./-}.ip.linodeusercontent.com" ]; then
    # The kit's own name, under Linode's zone: nothing for the operator to create.
    log "  DNS for $domain (Linode's name for this host) does not resolve here yet (${dns:-nothing});"
    log "  it usually does within minutes of a new instance."
  elif [ "$dns" != "$ip" ]; then
    log "  DNS for $domain points at ${dns:-nothing}, not at this host: create an A record"
    log "  \"$domain. A $ip\" at your DNS provider; Let's Encrypt checks the name over HTTP on port 80."
  else
    if [ -n "$stray6" ]; then
      # Let's Encrypt validates over IPv6 first, and falls back to IPv4 only on a timeout.
      log "  $domain also has an AAAA record ($stray6), not this host's: Let's Encrypt checks it first,"
      log "  and fails if something answers there; remove it at your DNS provider."
    fi
    log "  DNS for $domain points here, so Let's Encrypt refused or failed the issuance: its rate limits"
    log "  (5 failed validations an hour, 5 certificates for the same name a week), or port 80 not open to"
    log "  everyone (allowedCidrs)."
  fi
  log "  certbot retries every 15 minutes (hourly after a day of failures), and nginx takes the certificate within a minute of its issuance."
  log "  Why it failed: cd $(pwd) && docker compose logs certbot"
} >&2
exit 0
