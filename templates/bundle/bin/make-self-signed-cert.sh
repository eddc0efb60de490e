#!/usr/bin/env bash
# For a host without `pulumi up`: writes a self-signed certificate for <name> to
# $GS_DATA_DIR/tls (fullchain.pem, privkey.pem), where nginx reads it. With tls.mode
# letsencrypt, certbot replaces it once Let's Encrypt has issued the real one.
set -euo pipefail
name=${1:?usage: make-self-signed-cert.sh <dns-name-or-ip>}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=/dev/null
. ./.env
dir="${GS_DATA_DIR:?set GS_DATA_DIR in .env}/tls"
mkdir -p "$dir"
if [[ $name =~ ^[0-9.]+$ ]]; then san="IP:$name"; else san="DNS:$name"; fi
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=$name" -addext "subjectAltName=$san" \
  -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem"
echo "wrote $dir/fullchain.pem and $dir/privkey.pem for $name"
