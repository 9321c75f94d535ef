#!/usr/bin/env bash
# infra/debezium/register.sh - create or update prequal's Debezium outbox connector on a
# Kafka Connect cluster that runs elsewhere (docker compose, a shared cluster).
#
# Usage: infra/debezium/register.sh [CONNECT_URL]     (default http://127.0.0.1:8083)
#
# Renders infra/debezium/outbox-connector.json with render.sh (the same placeholders and
# defaults as infra/local.sh: PREQUAL_PG_HOST, PREQUAL_PG_PORT, PREQUAL_PG_USER,
# PREQUAL_PG_DATABASE, PREQUAL_DEBEZIUM_SLOT,
# PREQUAL_DEBEZIUM_PUBLICATION, PREQUAL_DEBEZIUM_POLL_INTERVAL_MS,
# PREQUAL_DEBEZIUM_HEARTBEAT_INTERVAL_MS and the PREQUAL_TOPIC_* settings), then
# PUT CONNECT_URL/connectors/<name>/config: it creates the connector or updates its
# config, so running it again is harmless. Waits for the REST API first, and afterwards
# until the connector and its task are RUNNING.
#
# Moving a registered connector to another database or slot (host, port, dbname or
# slot.name differ) stops it, updates its config, resets its stored offsets (positions
# in the old slot's stream; KIP-875) and resumes it. To reset the slot itself with the
# offsets, and publish what was committed meanwhile: `prequal-ops cdc reset-slot`.
#
# Environment: PREQUAL_CONNECT_WAIT_S (120) bounds each of the two waits.
# The database host is as seen from the Connect worker (in compose e.g. "postgres").
#
# The password is never sent: the config says "${env:PREQUAL_PG_PASSWORD}", a reference
# the worker resolves from its own environment when it starts the connector, so Connect's
# stored config (its config topic) and REST API hold the reference only. The worker needs
#   config.providers=env
#   config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
# and PREQUAL_PG_PASSWORD in its environment (compose's connect service has both).
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

# The value of "KEY": "..." in a connector config (JSON text), or nothing.
config_value() { # JSON KEY
  local re="\"${2//./\\.}\"[[:space:]]*:[[:space:]]*\"([^\"]*)\""
  if [[ $1 =~ $re ]]; then printf '%s' "${BASH_REMATCH[1]}"; fi
}

# Connect's offsets are positions in one slot's stream: a connector moved to another
# database or slot must not keep them (its task would fail with "... is no longer
# available on the server", or skip changes). KIP-875: reset them while it is stopped.
switching=0
if current=$(curl -fsS --max-time 10 "$URL/connectors/$name/config" 2>/dev/null); then
  for key in database.hostname database.port database.dbname slot.name; do
    if [[ $(config_value "$current" "$key") != "$(config_value "$config" "$key")" ]]; then
      switching=1
    fi
  done
fi
if ((switching)); then
  printf 'register.sh: %s moves to another database or slot: stopping it to reset its offsets\n' "$name"
  curl -fsS --max-time 60 -o /dev/null -X PUT "$URL/connectors/$name/stop" ||
    die "PUT $URL/connectors/$name/stop failed"
  deadline=$((SECONDS + WAIT_S))
  until [[ $(curl -sS --max-time 5 "$URL/connectors/$name/status" 2>&1) =~ \"state\":\"STOPPED\".*\"tasks\":\[\] ]]; do
    ((SECONDS < deadline)) || die "$name not STOPPED after ${WAIT_S}s"
    sleep 0.5
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
if ((switching)); then
  curl -fsS --max-time 60 -o /dev/null -X DELETE "$URL/connectors/$name/offsets" ||
    die "DELETE $URL/connectors/$name/offsets failed; the connector stays STOPPED"
  curl -fsS --max-time 60 -o /dev/null -X PUT "$URL/connectors/$name/resume" ||
    die "PUT $URL/connectors/$name/resume failed"
  printf 'register.sh: reset the offsets of %s; if its new slot existed already, or rows were\n' "$name"
  printf 'register.sh: committed before it, run: prequal-ops cdc reset-slot (docs/operations.md)\n'
fi

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
    1)
      if [[ $status == *'password authentication failed'* ]]; then
        # shellcheck disable=SC2016 # ${env:...} is literal text, not an expansion
        printf 'register.sh: does the worker at %s resolve ${env:PREQUAL_PG_PASSWORD}? It needs config.providers=env and PREQUAL_PG_PASSWORD in its environment\n' \
          "$URL" >&2
      fi
      die "$name: $summary; status: $status"
      ;;
  esac
  ((SECONDS < deadline)) || die "$name not RUNNING after ${WAIT_S}s ($summary)"
  sleep 0.5
done
