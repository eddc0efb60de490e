#!/bin/sh
# nginx's entrypoint: starts nginx and reloads it whenever the certificate changes (the first
# Let's Encrypt certificate replacing the placeholder, or a renewal), checking once a minute.
# A failed reload (say, a key copied before its certificate) is retried the next minute.
set -eu

cert_sum() {
  cat /etc/nginx/tls/fullchain.pem /etc/nginx/tls/privkey.pem 2>/dev/null | md5sum
}

(
  last=$(cert_sum)
  while sleep 60; do
    now=$(cert_sum)
    if [ "$now" != "$last" ] && nginx -s reload; then
      last=$now
    fi
  done
) &

exec nginx -g 'daemon off;'
