#!/usr/bin/env bash
# Run over SSH by `pulumi up`: installs the bundle it copied to <install-dir>/.incoming (if
# any: a change of secrets alone copies nothing), then (re)starts the serving stack and waits
# until the endpoint answers; with Let's Encrypt (a public IPv4 address given), then checks that
# clients get its certificate and not the placeholder (a warning, not a failure).
# Usage: deploy.sh <install-dir> <ready-timeout-seconds> <ready-url> [<letsencrypt-public-ip>]
# Everything in <install-dir> but .env (the secrets), .incoming/ and .previous/ is replaced by
# the bundle, so a file dropped from the bundle disappears from the host too. What was installed
# before is kept in .previous/.
#
# A new bundle is installed only once its images are pulled and the shim's is built (from the
# new bundle, under .incoming), and it stays in .incoming until `docker compose up` succeeded, so
# a failed deploy is tried again by the next `pulumi up`. When `up` fails before any container
# was recreated (the old stack still runs), the bundle installed before is put back: Docker
# mounts the installed files again at each container start (a restart, a reboot), and old
# containers must not start on new files. When it fails after recreating some, the new bundle
# stays installed (those containers need its files) and the next `pulumi up` finishes the job.
set -euo pipefail

dest=${1:?usage: deploy.sh <install-dir> <ready-timeout-seconds> <ready-url>}
timeout=${2:?ready timeout missing}
ready_url=${3:?ready url missing}
letsencrypt_ip=${4:-}

log() { echo "gpu-sandbox: $*"; }

# The bundle this script belongs to: a new one copied under .incoming (pulumi up finds this
# script there first), or the one installed in <install-dir> when nothing new was copied.
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

new=""
if [ "$src" != "$(cd "$dest" && pwd)" ] && [ -f "$src/MANIFEST.sha256" ]; then
  # Every file arrived, intact.
  (cd "$src" && sha256sum --quiet --strict -c MANIFEST.sha256)
  new=yes
elif [ ! -f "$dest/MANIFEST.sha256" ]; then
  log "no bundle in $dest/.incoming and none installed; run pulumi up again" >&2
  exit 1
fi

# Only on a host made by the kit, which names its volume and where it is mounted in host.env
# (DATA_DIR, the GS_DATA_DIR of .env that compose mounts: both are HOST_PATHS.dataDir).
if [ -r /etc/gpu-sandbox/host.env ]; then
  # shellcheck source=/dev/null
  volume=$(. /etc/gpu-sandbox/host.env && echo "${VOLUME_DEVICE:-}")
  # shellcheck source=/dev/null
  data=$(. /etc/gpu-sandbox/host.env && echo "${DATA_DIR:-}")
  # Without the volume (detached, or its mount failed at boot: fstab's nofail lets the boot go
  # on) the stack would run on the root disk: vLLM downloading the model there again, the shim
  # starting an empty database beside the real ledger.
  if [ -n "$data" ] && ! mountpoint -q "$data"; then
    log "the volume is not mounted at $data: not starting the stack on the root disk. Attach the volume ($volume), run \`mount $data\` on the host, then pulumi up again" >&2
    exit 1
  fi
  # volumeSizeGb raised: Linode grows the volume in place, and ext4 grows online to fill it
  # (nothing to do when it already does).
  if [ -n "$volume" ] && [ -e "$volume" ] && [ -n "$data" ] && command -v resize2fs >/dev/null; then
    resize2fs "$volume" 2>&1 | grep -v '^resize2fs [0-9]' | sed 's/^/gpu-sandbox: volume: /' || true
    log "volume: $(df -h --output=size,avail "$data" | tail -n 1 | awk '{print $1 " (" $2 " free)"}')"
  fi
fi

# The new bundle's images, fetched and built from .incoming before anything installed changes
# (a registry refusing a pull, npm down for the shim's build): the project and secrets are the
# installed ones (.env names the project, COMPOSE_PROJECT_NAME).
fetch() { docker compose --env-file "$dest/.env" -f "$src/compose.yaml" "$@"; }
# The stack's containers (ids, whatever the compose file), to tell whether a failed `up`
# recreated any; fails when that cannot be told.
containers() {
  local project
  project=$(sed -n 's/^COMPOSE_PROJECT_NAME=//p' "$dest/.env" 2>/dev/null | tail -n 1)
  [ -n "$project" ] && docker ps -a -q --no-trunc --filter "label=com.docker.compose.project=$project" | sort
}
# Each of the stack's containers as "<id> <restarts> <service> <state>": how often Docker
# restarted it (restart: unless-stopped, each time its process exited; not `docker restart`).
restart_counts() {
  local ids
  ids=$(docker compose ps -a -q 2>/dev/null) || return 0
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086 # one id per word
    docker inspect --format '{{.Id}} {{.RestartCount}} {{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}}' $ids 2>/dev/null || true
  fi
}
# "<service> <restarts>" for the first container restarted CRASH_LOOP_RESTARTS times since
# restart_counts gave `restarts_before`, if any. `compose up --wait` never gives up on such a
# container (its state is `restarting` between runs, its health `starting` for vLLM's 4 h
# start_period) until --wait-timeout. A slow start never restarts: vLLM downloading or loading a
# model for an hour is one run.
# A container created since counts from 0, and so does one that was stopped then (exited,
# created, dead) and that compose up starts again, kept as it was: Docker resets RestartCount
# when it starts a container, so counting from the old count would miss a container stopped
# after N restarts until it restarted N+2 times more. A running, restarting or paused one is not
# started, and keeps its count.
CRASH_LOOP_RESTARTS=2
crash_looping() {
  restart_counts | awk -v limit="$CRASH_LOOP_RESTARTS" 'NR == FNR { was[$1] = ($4 ~ /^(running|restarting|paused)$/) ? $2 : 0; next }
    $2 - was[$1] >= limit { print $3 " " $2 - was[$1]; exit }' <(printf '%s\n' "$restarts_before") - || true
}
# The new bundle's nginx.conf tested by the new bundle's nginx (`nginx -t`, the nginx-check
# service) before anything installed changes: a configuration that nginx refuses (a directive a
# new nginx image dropped) would otherwise replace the running one and leave nginx restarting,
# the endpoint down. Only nginx's own verdict stops the deploy; a check that could not run (the
# error is shown) does not, and the crash-loop watch below would still name nginx.
check_nginx_config() {
  local out
  if out=$(fetch run --rm -T nginx-check 2>&1); then
    log "nginx -t: the new bundle's nginx accepts its nginx.conf"
    return 0
  fi
  printf '%s\n' "$out" >&2
  if grep -q "test failed" <<<"$out"; then
    log "the new bundle's nginx refuses its nginx.conf (nginx -t, above); the installed bundle and the running stack are unchanged" >&2
    exit 1
  fi
  log "could not run nginx -t on the new bundle's nginx.conf (above); deploying it all the same" >&2
}
# Everything installed but .env, .incoming, .previous and .staging.
installed() { find "$dest" -mindepth 1 -maxdepth 1 ! -name .env ! -name .incoming ! -name .previous ! -name .previous.old ! -name .staging "$@"; }

# The bundle from two deploys back is deleted under another name (below): one a reboot left half
# deleted is finished here, never taken for a .previous whose move aside was cut short.
rm -rf "$dest/.previous.old"

# The bundle before, back from .previous. Each manifest first out and last in, and only what
# .previous holds replaced, one entry at a time: a put-back cut short is finished by the next
# run's (below), never undone. Entries only the failed bundle had stay (the stack before does
# not use them; the next deploy moves them aside).
put_back() {
  local entry
  rm -f "$dest/MANIFEST.sha256"
  while IFS= read -r -d '' entry; do
    rm -rf "${dest:?}/${entry##*/}"
    mv "$entry" "$dest/"
  done < <(find "$dest/.previous" -mindepth 1 -maxdepth 1 ! -name MANIFEST.sha256 -print0)
  if [ -f "$dest/.previous/MANIFEST.sha256" ]; then mv "$dest/.previous/MANIFEST.sha256" "$dest/MANIFEST.sha256"; fi
}

# A swap cut short by a reboot. Moving the installed bundle aside moves its manifest last, and
# so does moving the new one in: the manifests say how far it got. Put back what was moved
# first, so the bundle before is neither deleted below nor mistaken for a new host's nothing.
if [ ! -f "$dest/MANIFEST.sha256" ] && [ -f "$dest/.previous/MANIFEST.sha256" ]; then
  # All of it aside and part of the new one in (or a put-back cut short): the one before comes back.
  put_back
  log "put back the bundle installed before a deploy that was cut short"
elif [ -f "$dest/MANIFEST.sha256" ] && [ -d "$dest/.previous" ] && [ ! -f "$dest/.previous/MANIFEST.sha256" ]; then
  # Part of it aside, its manifest still in place: the part aside comes back (a .previous with
  # no manifest is otherwise empty: a new host's first deploy, or a bundle put back).
  while IFS= read -r -d '' entry; do
    if [ ! -e "$dest/${entry##*/}" ]; then
      mv "$entry" "$dest/"
      log "put back ${entry##*/}, which a deploy cut short had moved aside"
    fi
  done < <(find "$dest/.previous" -mindepth 1 -maxdepth 1 -print0)
fi

if [ -n "$new" ]; then
  log "pulling the new bundle's images and building the shim's"
  if ! fetch pull --ignore-buildable || ! fetch build; then
    log "could not pull or build the new bundle's images (the error is above); the installed bundle and the running stack are unchanged. Run pulumi up again" >&2
    exit 1
  fi
  check_nginx_config
  before=$(containers) || before="unknown"
  # Written beside the installed bundle first (a full root disk fails here, with the installed
  # one untouched), then swapped in by renames.
  rm -rf "$dest/.staging"
  mkdir "$dest/.staging"
  # (set -e does not apply inside `if !`: each failure exits the subshell itself.)
  if ! (while read -r _ file; do install -D -m 0644 "$src/$file" "$dest/.staging/$file" || exit 1; done <"$src/MANIFEST.sha256" \
      && install -m 0644 "$src/MANIFEST.sha256" "$dest/.staging/MANIFEST.sha256"); then
    rm -rf "$dest/.staging"
    log "could not install the new bundle (the error is above: a full root disk?); the installed bundle and the running stack are unchanged. Run pulumi up again" >&2
    exit 1
  fi
  if [ -d "$dest/.previous" ]; then mv "$dest/.previous" "$dest/.previous.old"; fi
  rm -rf "$dest/.previous.old"
  mkdir "$dest/.previous"
  # Each manifest last: a run cut short here is put back (above) by the next one.
  installed ! -name MANIFEST.sha256 -exec mv -t "$dest/.previous" {} +
  if [ -f "$dest/MANIFEST.sha256" ]; then mv "$dest/MANIFEST.sha256" "$dest/.previous/MANIFEST.sha256"; fi
  find "$dest/.staging" -mindepth 1 -maxdepth 1 ! -name MANIFEST.sha256 -exec mv -t "$dest" {} +
  mv "$dest/.staging/MANIFEST.sha256" "$dest/MANIFEST.sha256"
  rmdir "$dest/.staging"
  log "bundle $(sha256sum "$dest/MANIFEST.sha256" | cut -c1-12) installed in $dest (the one before is in $dest/.previous)"
fi

cd "$dest"
# Compose recreates each service whose definition (or mounted bundle files' label) changed, in
# dependency order, and leaves the others running: a recreated shim drains (up to 23 s) while
# nginx still relays; a recreated nginx (its configuration changed) gives its requests in flight
# 30 s, and a stream still running then is cut (docs/serving.md). nginx is recreated, not
# reloaded: its nginx.conf is a file mounted from the bundle installed before, which the swap
# above replaced by a new file the running container does not see.
log "docker compose up -d --build --wait (the first start downloads the model and can take many minutes)"
restarts_before=$(restart_counts)
SECONDS=0
docker compose up -d --build --remove-orphans --wait --wait-timeout "$timeout" &
up=$!
# Polled every second, so a compose up that fails at once (a port taken, a build or pull error)
# is reported at once; a service crash-looping is looked for every 10 s, progress every 30 s.
# Neither fails the deploy by failing itself: a container being recreated makes `docker compose
# logs` fail while compose up runs on.
polls=0
looping=""
restarts=0
while kill -0 "$up" 2>/dev/null; do
  sleep 1
  polls=$((polls + 1))
  kill -0 "$up" 2>/dev/null || break
  if [ $((polls % 10)) -eq 0 ]; then
    read -r looping restarts < <(crash_looping) || true
    if [ -n "$looping" ]; then
      # Stops waiting only: the containers stay as compose up left them.
      kill "$up" 2>/dev/null || true
      break
    fi
  fi
  if [ $((polls % 30)) -eq 0 ]; then
    log "waiting: $(docker compose ps --format '{{.Service}} {{.Status}}' 2>/dev/null | tr '\n' ';' | sed 's/;$//' || true)"
    last=$(docker compose logs --no-log-prefix --tail 1 vllm 2>/dev/null | tail -n 1 | cut -c1-160 || true)
    if [ -n "$last" ]; then log "vllm: $last"; fi
  fi
done
rc=0
wait "$up" || rc=$?
# A crash loop is a failed compose up: the same put-back below, then the service's logs.
if [ -n "$looping" ] || [ "$rc" -ne 0 ]; then
  if [ -n "$looping" ]; then
    log "$looping keeps crashing (restarted $restarts times since this docker compose up began): not waiting for it any longer; its error is below"
  elif [ "$SECONDS" -ge "$timeout" ]; then
    log "docker compose did not bring every service up within ${timeout}s"
  else
    log "docker compose up failed after ${SECONDS}s (exit $rc); its error is above"
  fi
  if [ -n "$new" ]; then
    after=$(containers) || after="unknown"
    # Nothing was installed before (a new host): no old container to protect, and the new
    # bundle's wait-ready.sh diagnoses below.
    if [ ! -f "$dest/.previous/MANIFEST.sha256" ]; then
      log "the new bundle stays installed (none was before); pulumi up again once the error above is fixed" >&2
    elif [ "$before" != "unknown" ] && [ "$after" = "$before" ]; then
      put_back
      log "no container was recreated: the bundle installed before is back in $dest, under the stack that still runs; the new one stays in $dest/.incoming for the next pulumi up" >&2
    else
      log "containers were recreated from the new bundle, so it stays installed (the one before is in $dest/.previous); pulumi up again to finish" >&2
    fi
  fi
  exec bash "$dest/bin/wait-ready.sh" --diagnose "$ready_url" ${looping:+"$looping"}
fi
if [ -n "$new" ]; then
  find "$dest/.incoming" -mindepth 1 -delete
fi
# Images no container uses any more and no tag names (a replaced shim build, an image pinned by
# digest that a new pin replaced) would pile up on the root disk; never a reason to fail.
log "images: $(docker image prune -f 2>&1 | tail -n 1 || true)"

# A recreated shim may have a new address; nginx resolves service names when it (re)loads.
docker compose exec -T nginx nginx -s reload >/dev/null
if [ -z "$letsencrypt_ip" ]; then
  exec bash "$dest/bin/wait-ready.sh" "$ready_url" 120
fi
bash "$dest/bin/wait-ready.sh" "$ready_url" 120
exec bash "$dest/bin/check-certificate.sh" "$letsencrypt_ip"
