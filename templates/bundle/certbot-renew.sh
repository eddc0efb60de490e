#!/bin/sh
# certbot's entrypoint: obtains the certificate for TLS_DOMAIN by the webroot method (nginx
# serves /.well-known/acme-challenge/ from the shared webroot), renews it, and copies it to the
# directory nginx reads. Until the first issuance nginx serves the placeholder `pulumi up` wrote.
set -eu
: "${TLS_DOMAIN:?TLS_DOMAIN is not set}"

live="/etc/letsencrypt/live/$TLS_DOMAIN"
out=/gpu-sandbox-tls
if [ -n "${TLS_EMAIL:-}" ]; then
  account="--email $TLS_EMAIL --no-eff-email"
else
  account="--register-unsafely-without-email"
fi

trap 'exit 0' TERM
while :; do
  # shellcheck disable=SC2086 # $account holds two words on purpose
  if certbot certonly --webroot -w /var/www/certbot -d "$TLS_DOMAIN" --non-interactive \
      --agree-tos --keep-until-expiring $account; then
    if ! cmp -s "$live/fullchain.pem" "$out/fullchain.pem"; then
      # Key first, then the certificate nginx's watcher compares.
      cp "$live/privkey.pem" "$out/privkey.pem.new" && mv "$out/privkey.pem.new" "$out/privkey.pem"
      cp "$live/fullchain.pem" "$out/fullchain.pem.new" && mv "$out/fullchain.pem.new" "$out/fullchain.pem"
      echo "certbot: installed the certificate for $TLS_DOMAIN"
    fi
    sleep 12h & wait $!
  else
    # Let's Encrypt allows 5 failed validations per hour; retry well inside that.
    echo "certbot: could not obtain a certificate for $TLS_DOMAIN; retrying in 15 minutes" >&2
    sleep 900 & wait $!
  fi
done
