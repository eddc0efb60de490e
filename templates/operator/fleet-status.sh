#!/usr/bin/env bash
# Every tenant's state in one run, for a morning check or a cron job, from the repository's root:
#   templates/operator/fleet-status.sh > fleet.json || echo "a tenant needs you"
# stdout: a JSON array, a row per stack (list-tenants' stack, status, expiresAt, reason), and for
# each stack with an endpoint (deployed or expired) whether its admin API answered and, for the
# current UTC month, the credits spent, the balance of its active keys and those running low.
# Exit 1 when a stack with an endpoint did not answer (its row's `exit` is report-usage's code:
# 3 not reached, 4 refused, 5 no answer; a report of a shape it cannot read: `error`, no `exit`)
# or a stack's state could not be read (`unknown`);
# 2 when list-tenants printed no list. Credits and expiry are data, not failures: jq them.
# FLEET_LOW_SHARE (0.1): a key is low when its balance is under this share of the credits it had
# for the month (its opening balance and what was granted in it), or 0 or less.
# Needs jq, and what --stack needs (pulumi and the stacks' state): each tenant's admin token is
# read from its stack, never from the command line.
set -uo pipefail

share="${FLEET_LOW_SHARE:-0.1}"
tenants="$(npm run --silent list-tenants -- --json)"
status=$? # 1: a stack's state could not be read; its row is there, `unknown`, with why
if ! jq -e 'type == "array"' >/dev/null 2>&1 <<<"$tenants"; then
  echo "fleet-status: list-tenants printed no list (exit $status)" >&2
  exit 2
fi

rows=()
while IFS= read -r row; do
  stack="$(jq -r .stack <<<"$row")"
  if [ "$(jq -r .endpoint <<<"$row")" = "-" ]; then
    rows+=("$(jq -c '. + {answered: null}' <<<"$row")")
    continue
  fi
  if report="$(npm run --silent report-usage -- --stack "$stack" --group key --format json </dev/null)"; then # stdin: the loop's rows
    # jq's failure is checked: without -e, its empty output would drop the tenant's row unsaid.
    if read_row="$(jq -ec --argjson row "$row" --argjson share "$share" '
      [.data[] | select(.status == "active")] as $active
      | $row + {answered: true, spent: .totals.cost,
          balance: ([$active[].balance] | add // 0),
          low: [$active[] | select(.balance <= 0 or .balance < $share * ((.opening // 0) + (.granted // 0))) | .key_name]}' <<<"$report" 2>/dev/null)"; then
      rows+=("$read_row")
    else
      echo "fleet-status: $stack answered, but its report could not be read" >&2
      rows+=("$(jq -c '. + {answered: false, error: "its report could not be read"}' <<<"$row")")
      status=1
    fi
  else
    code=$?
    echo "fleet-status: $stack did not answer (report-usage exit $code)" >&2
    rows+=("$(jq -c --argjson code "$code" '. + {answered: false, exit: $code}' <<<"$row")")
    status=1
  fi
done < <(jq -c '.[] | {stack, status, expiresAt, endpoint, reason}' <<<"$tenants")

printf '%s\n' "${rows[@]}" | jq -s .
exit "$status"
