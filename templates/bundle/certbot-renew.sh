#!/bin/sh
# certbot's entrypoint: obtains the certificate for TLS_DOMAIN by the webroot method (nginx
# serves /.well-known/acme-challenge/ from the shared webroot), renews it, and copies it to the
# directory nginx reads. Until the first issuance nginx serves the placeholder `pulumi up` wrote.
set -eu
: "${TLS_DOMAIN:?TLS_DOMAIN is not set}"
case "$TLS_DOMAIN" in
  *'<'* | *'>'*)
    # .env.example's placeholder, left in place: no certificate can be had for it, and asking
    # Let's Encrypt every 15 minutes would only count failures against the account.
    trap 'exit 0' TERM
    while :; do
      echo "certbot: TLS_DOMAIN in .env is still the placeholder $TLS_DOMAIN: set it to this host's DNS name (its A record pointing here), then: docker compose up -d" >&2
      sleep 3600 & wait $!
    done
    ;;
esac

live="/etc/letsencrypt/live/$TLS_DOMAIN"
out=/gpu-sandbox-tls
if [ -n "${TLS_EMAIL:-}" ]; then
  account="--email $TLS_EMAIL --no-eff-email"
else
  account="--register-unsafely-without-email"
fi

# Copies a new certificate to $out. Both files are staged and checked before either replaces the
# pair nginx uses: a new key beside the old certificate stops nginx at its next start ("key
# values mismatch"). Then the key first, and the certificate nginx's watcher compares.
install_certificate() {
  # Both, not only the certificate: an older copy whose key failed left the new certificate
  # beside the old key, which only installing both again repairs.
  if cmp -s "$live/fullchain.pem" "$out/fullchain.pem" && cmp -s "$live/privkey.pem" "$out/privkey.pem"; then return 0; fi
  if cp "$live/privkey.pem" "$out/privkey.pem.new" && cp "$live/fullchain.pem" "$out/fullchain.pem.new" \
      && cmp -s "$live/privkey.pem" "$out/privkey.pem.new" && cmp -s "$live/fullchain.pem" "$out/fullchain.pem.new" \
      && mv "$out/privkey.pem.new" "$out/privkey.pem" && mv "$out/fullchain.pem.new" "$out/fullchain.pem"; then
    echo "certbot: installed the certificate for $TLS_DOMAIN"
    return 0
  fi
  rm -f "$out/privkey.pem.new" "$out/fullchain.pem.new"
  echo "certbot: could not copy the certificate for $TLS_DOMAIN to $out (the error is above: a full volume?); retrying in 15 minutes" >&2
  return 1
}

# certbot writes a new lineage, live/<domain>-0001, when it cannot read renewal/<domain>.conf
# (a hand edit, a copy of the volume that turned the live/ links into files), even with
# --cert-name, and exits 0. Prints that lineage when it is newer than the one the script copies.
other_lineage() {
  for dir in "$live"-[0-9][0-9][0-9][0-9]; do
    # shellcheck disable=SC3013 # the image's sh is BusyBox's, which has -nt (as dash, the tests')
    if [ -f "$dir/fullchain.pem" ] && { [ ! -f "$live/fullchain.pem" ] || [ "$dir/fullchain.pem" -nt "$live/fullchain.pem" ]; }; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# Let's Encrypt allows 5 failed validations an hour, and pauses a name for an account after
# 3,600 failed authorizations in a row (refilled one a day), which only a person can lift. Every
# 15 minutes reaches that in 38 days of DNS that never points here; hourly after the first day,
# in about five months.
failures=0
trap 'exit 0' TERM
while :; do
  # shellcheck disable=SC2086 # $account holds two words on purpose
  if ! certbot certonly --webroot -w /var/www/certbot -d "$TLS_DOMAIN" --cert-name "$TLS_DOMAIN" \
      --non-interactive --agree-tos --keep-until-expiring $account; then
    failures=$((failures + 1))
    if [ "$failures" -le 96 ]; then
      echo "certbot: could not obtain a certificate for $TLS_DOMAIN; retrying in 15 minutes" >&2
      sleep 900 & wait $!
    else
      echo "certbot: could not obtain a certificate for $TLS_DOMAIN ($failures tries in a row, over a day); retrying hourly from now on, so that Let's Encrypt does not pause the name for too many failures" >&2
      sleep 3600 & wait $!
    fi
    continue
  fi
  failures=0
  if stray=$(other_lineage); then
    # Each try orders another certificate until a person repairs it: no sooner than a renewal.
    echo "certbot: certbot wrote the certificate for $TLS_DOMAIN to $stray, not $live: it could not read /etc/letsencrypt/renewal/$TLS_DOMAIN.conf (why: /var/log/letsencrypt/letsencrypt.log); nginx keeps the certificate it has until that expires" >&2
    echo "certbot: to repair, delete the name's certificates and restart certbot (it then obtains one): cd /opt/gpu-sandbox && docker compose exec certbot sh -c 'cd /etc/letsencrypt && rm -rf live/$TLS_DOMAIN live/$TLS_DOMAIN-[0-9]* archive/$TLS_DOMAIN archive/$TLS_DOMAIN-[0-9]* renewal/$TLS_DOMAIN.conf renewal/$TLS_DOMAIN-[0-9]*.conf' && docker compose restart certbot" >&2
    sleep 12h & wait $!
  elif install_certificate; then
    sleep 12h & wait $!
  else
    # The certificate is issued: the retry copies it without asking Let's Encrypt again.
    sleep 900 & wait $!
  fi
done
