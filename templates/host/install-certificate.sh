#!/usr/bin/env bash
# Run over SSH by `pulumi up`: installs the PEM certificate chain and private key read from
# stdin into $DATA_DIR/tls (fullchain.pem, privkey.pem, mode 0600), where nginx reads them.
# Usage: install-certificate.sh replace | install-certificate.sh placeholder
#   replace      the certificate is Pulumi's (tls.mode self-signed): always written
#   placeholder  only written when no certificate is there yet, so the Let's Encrypt
#                certificate certbot installed is never replaced by the placeholder
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=${1:?usage: install-certificate.sh replace|placeholder}
dir="$DATA_DIR/tls"
pem=$(cat)
# Not onto the root disk: Pulumi would record the certificate as installed, and after the volume
# is mounted nginx would serve the one on it (deploy.sh refuses the same way).
if ! mountpoint -q "$DATA_DIR"; then
  echo "install-certificate.sh: the volume is not mounted at $DATA_DIR: attach it, run \`mount $DATA_DIR\`, then pulumi up again" >&2
  exit 1
fi
mkdir -p "$dir"

if [ "$mode" = placeholder ] && [ -s "$dir/fullchain.pem" ]; then
  echo "keeping the certificate already in $dir"
  exit 0
fi

umask 077
sed -n '/-----BEGIN [A-Z ]*PRIVATE KEY-----/,/-----END [A-Z ]*PRIVATE KEY-----/p' <<<"$pem" >"$dir/privkey.pem.new"
sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' <<<"$pem" >"$dir/fullchain.pem.new"
if [ ! -s "$dir/privkey.pem.new" ] || [ ! -s "$dir/fullchain.pem.new" ]; then
  echo "install-certificate.sh: stdin must hold a certificate and a private key in PEM" >&2
  exit 1
fi
mv -f "$dir/privkey.pem.new" "$dir/privkey.pem"
mv -f "$dir/fullchain.pem.new" "$dir/fullchain.pem"
echo "installed the certificate in $dir ($mode)"
