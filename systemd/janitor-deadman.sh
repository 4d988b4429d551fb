#!/usr/bin/env bash
# Dead-man switch: powers the instance off when janitord's heartbeat file is older than the
# limit (or missing that long after boot). The last line of defence against a GPU billing
# for nothing when every other stop (idle scale-in, timeouts, watchdog) has failed.
#
# Settings (environment, e.g. from /etc/janitor/deadman.env):
#   JANITOR_HEARTBEAT_FILE       default /var/lib/janitor/janitord.heartbeat
#   JANITOR_DEADMAN_LIMIT_SECONDS  default 900
#   JANITOR_DEADMAN_DRY_RUN=1    print the decision instead of acting
#   JANITOR_LEAVE                the command that leaves the Auto Scaling group first (default
#                                `janitord leave`): a powered-off member would be replaced by the
#                                group, and the replacement would end the same way
# For tests: JANITOR_DEADMAN_NOW (Unix seconds) and JANITOR_DEADMAN_UPTIME (seconds).
set -euo pipefail

file="${JANITOR_HEARTBEAT_FILE:-/var/lib/janitor/janitord.heartbeat}"
leave="${JANITOR_LEAVE:-/usr/local/bin/janitord leave}"
limit="${JANITOR_DEADMAN_LIMIT_SECONDS:-900}"
now="${JANITOR_DEADMAN_NOW:-$(date +%s)}"
uptime="${JANITOR_DEADMAN_UPTIME:-$(cut -d. -f1 /proc/uptime)}"

if ! [[ "$limit" =~ ^[0-9]+$ ]] || [ "$limit" -lt 60 ]; then
  echo "janitor-deadman: JANITOR_DEADMAN_LIMIT_SECONDS=$limit must be a whole number of at least 60" >&2
  exit 2
fi

decide() {
  if [ -f "$file" ]; then
    local beat age
    beat=$(stat -c %Y "$file")
    age=$((now - beat))
    if [ "$age" -gt "$limit" ]; then
      echo "poweroff: heartbeat $file is ${age}s old (limit ${limit}s)"
    else
      echo "ok: heartbeat $file is ${age}s old (limit ${limit}s)"
    fi
  elif [ "$uptime" -gt "$limit" ]; then
    echo "poweroff: no heartbeat at $file ${uptime}s after boot (limit ${limit}s)"
  else
    echo "ok: no heartbeat yet, ${uptime}s after boot (limit ${limit}s)"
  fi
}

decision=$(decide)
echo "janitor-deadman: $decision"
if [[ "$decision" == poweroff:* ]]; then
  if [ "${JANITOR_DEADMAN_DRY_RUN:-0}" = 1 ]; then
    echo "janitor-deadman: would run \`$leave\`, then power off"
    exit 0
  fi
  logger -t janitor-deadman "$decision" 2>/dev/null || true
  # Out of the group first, with its desired capacity lowered, so no replacement is launched;
  # powered off whatever that answers (billing stops either way).
  # shellcheck disable=SC2086 # the command and its arguments, split on purpose
  if ! timeout 60 $leave; then
    logger -t janitor-deadman "could not leave the Auto Scaling group; powering off anyway" 2>/dev/null || true
  fi
  exec systemctl poweroff
fi
