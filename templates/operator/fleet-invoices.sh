#!/usr/bin/env bash
# A UTC month's invoice files for every tenant, from the repository's root:
#   templates/operator/fleet-invoices.sh 2026-11 [dir]
# writes <dir>/<tenant>-<month>-usage.csv (per key and model) and <tenant>-<month>-credits.csv
# (per key: opening, granted, spent, written off, closing), the same columns for every tenant
# whose shim is from 2026-12-07 on (an older one's credits file lacks the last four; report-usage
# says so on stderr) (docs/operations.md, "A month's invoice, reconciled with the ledger"), for every stack with an
# endpoint: deployed, and expired but not yet destroyed (it served in the month). A file appears
# only whole; one already there is kept if it was made after the month ended, so a run again makes
# only those missing; one made while the month ran (its usage stops where that run read it) is
# made again. A month not yet over is written to now, said on stderr. Exit 1 when a
# tenant's files could not be made (its report failed, or its state could not be read), naming
# each; a file of it not made is then absent (one made is kept). A tenant destroyed in the month (reap-expired) is not
# listed: its usage to the day is in usage/<tenant>-usage-<time>.csv, its credits (grants,
# top-ups, write-offs) in usage/<tenant>-credits-<time>.json.
set -uo pipefail
# The files name each customer's keys, usage and credits: readable by the operator alone (0600, a
# directory made here 0700; one that exists keeps its mode, as reap-expired's --usage-dir does).
umask 077

month="${1:?usage: fleet-invoices.sh <YYYY-MM> [dir]}"
dir="${2:-invoices}"
# Checked before use: date takes 2026-1 too, and the files would be named for it.
if ! [[ "$month" =~ ^[0-9]{4}-(0[1-9]|1[0-2])$ ]]; then
  echo "fleet-invoices: the month is YYYY-MM (2026-11), not $month" >&2
  exit 2
fi
from="$month-01"
to="$(date -u -d "$from +1 month -1 day" +%F)" || exit 2
ended="$(date -u -d "$from +1 month" +%s)" || exit 2 # the month's end: a file made before it is not the whole month
if [ "$(date -u +%s)" -lt "$ended" ]; then
  echo "fleet-invoices: $month is not over: its files cover it only to now, and a run after it ends makes them again" >&2
fi
tenants="$(npm run --silent list-tenants -- --json)"
if ! jq -e 'type == "array"' >/dev/null 2>&1 <<<"$tenants"; then
  echo "fleet-invoices: list-tenants printed no list" >&2
  exit 2
fi
# Checked: without -e, a directory not made would be every tenant's report failing to be written.
mkdir -p "$dir" || { echo "fleet-invoices: cannot make $dir" >&2; exit 2; }

mapfile -t failed < <(jq -r '.[] | select(.status == "unknown") | .stack' <<<"$tenants")
# A line each, not words: a name is never split or globbed.
while IFS= read -r t; do
  for group in model key; do
    out="$dir/$t-$month-$([ "$group" = key ] && echo credits || echo usage).csv"
    [ -s "$out" ] && [ "$(date -u -r "$out" +%s)" -ge "$ended" ] && continue
    # The rename checked too: a file not put in place is a tenant without its invoice, not a success.
    if ! { npm run --silent report-usage -- --stack "$t" --from "$from" --to "$to" --group "$group" --format csv >"$out.partial" </dev/null && mv "$out.partial" "$out"; }; then
      rm -f "$out.partial"
      failed+=("$t")
      break
    fi
  done
done < <(jq -r '.[] | select(.endpoint != "-") | .stack' <<<"$tenants")

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fleet-invoices: no invoice files for ${failed[*]}: run again once they answer (or their state can be read)" >&2
  exit 1
fi
