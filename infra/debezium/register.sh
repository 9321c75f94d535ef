#!/usr/bin/env bash
# infra/debezium/register.sh - create or update prequal's Debezium outbox connector on a
# Kafka Connect cluster that runs elsewhere (docker compose, a shared cluster).
#
# Usage: infra/debezium/register.sh [CONNECT_URL]     (default http://127.0.0.1:8083)
#
# Renders infra/debezium/outbox-connector.json with render.sh (the same placeholders and
# defaults as infra/local.sh: PREQUAL_PG_HOST, PREQUAL_PG_PORT, PREQUAL_PG_USER,
# PREQUAL_PG_PASSWORD, PREQUAL_PG_DATABASE, PREQUAL_DEBEZIUM_SLOT,
# PREQUAL_DEBEZIUM_PUBLICATION, PREQUAL_DEBEZIUM_POLL_INTERVAL_MS), then
# PUT CONNECT_URL/connectors/<name>/config: it creates the connector or updates its
# config, so running it again is harmless. Waits for the REST API first, and afterwards
# until the connector and its task are RUNNING.
#
# Environment: PREQUAL_CONNECT_WAIT_S (120) bounds each of the two waits.
# The database host is as seen from the Connect worker (in compose e.g. "postgres").
# Needs bash and curl.

set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=render.sh
. "$SCRIPT_DIR/render.sh"

URL=${1:-http://127.0.0.1:8083}
URL=${URL%/}
WAIT_S=${PREQUAL_CONNECT_WAIT_S:-120}

die() {
  printf 'register.sh: %s\n' "$*" >&2
  exit 1
}

case ${1:-} in -h | --help)
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' -- "$0"
  exit 0
  ;;
esac
(($# <= 1)) || die "usage: $0 [CONNECT_URL]"
command -v curl >/dev/null || die "curl is required"

rendered=$(prequal_render "$SCRIPT_DIR/outbox-connector.json")
# The file is {"name": "...", "config": {...}}; the name comes first and the config
# object last, which is all this needs to split it without a JSON tool.
name=$(prequal_connector_name "$rendered") || exit 1
config=${rendered#*\"config\"*:}
config=${config%\}*}
[[ $config =~ ^[[:space:]]*\{ && $config =~ \}[[:space:]]*$ ]] ||
  die "outbox-connector.json must end with a \"config\": {...} object"

deadline=$((SECONDS + WAIT_S))
if ! curl -fs -o /dev/null --max-time 5 "$URL/connectors"; then
  printf 'register.sh: waiting up to %ss for Kafka Connect at %s\n' "$WAIT_S" "$URL"
  until curl -fs -o /dev/null --max-time 5 "$URL/connectors"; do
    ((SECONDS < deadline)) || die "no Kafka Connect REST API at $URL after ${WAIT_S}s"
    sleep 1
  done
fi

out=$(curl -sS --max-time 60 -w '\n%{http_code}' -X PUT -H 'Content-Type: application/json' \
  --data-binary @- "$URL/connectors/$name/config" <<<"$config") ||
  die "PUT $URL/connectors/$name/config failed"
code=${out##*$'\n'}
case $code in
  201) printf 'register.sh: created connector %s on %s\n' "$name" "$URL" ;;
  200) printf 'register.sh: updated connector %s on %s\n' "$name" "$URL" ;;
  *) die "PUT $URL/connectors/$name/config answered HTTP $code: ${out%$'\n'*}" ;;
esac

deadline=$((SECONDS + WAIT_S))
while :; do
  status=$(curl -sS --max-time 5 "$URL/connectors/$name/status" 2>&1) || status=
  rc=0
  summary=$(prequal_connector_state "$status") || rc=$?
  case $rc in
    0)
      printf 'register.sh: %s: %s\n' "$name" "$summary"
      exit 0
      ;;
    1) die "$name: $summary; status: $status" ;;
  esac
  ((SECONDS < deadline)) || die "$name not RUNNING after ${WAIT_S}s ($summary)"
  sleep 0.5
done
