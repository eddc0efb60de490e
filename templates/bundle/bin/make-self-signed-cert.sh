#!/usr/bin/env bash
# For a host without `pulumi up`: writes a self-signed certificate for <name> to
# $GS_DATA_DIR/tls (fullchain.pem, privkey.pem), where nginx reads it. With tls.mode
# letsencrypt, certbot replaces it once Let's Encrypt has issued the real one.
set -euo pipefail
name=${1:?usage: make-self-signed-cert.sh <dns-name-or-ip>}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -f .env ]]; then
  echo "no .env in $PWD: cp .env.example .env && chmod 600 .env, then set GS_DATA_DIR in it" >&2
  exit 1
fi
# Only GS_DATA_DIR is needed, so .env is read, not sourced: the secrets may still be
# .env.example's placeholders, which are not shell.
data_dir=$(sed -n 's/^GS_DATA_DIR=//p' .env | tail -n 1)
dir="${data_dir:?set GS_DATA_DIR in .env}/tls"
mkdir -p "$dir"
if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san="IP:$name"; else san="DNS:$name"; fi
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=$name" -addext "subjectAltName=$san" \
  -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem"
echo "wrote $dir/fullchain.pem and $dir/privkey.pem for $name"
