#!/usr/bin/env bash
# infra/debezium/render.sh - render a Connect template (worker .properties or connector
# .json) to stdout, replacing each ${PREQUAL_NAME} placeholder with the environment's
# value or the default below. Other ${...} text (e.g. the outbox router's
# ${routedByValue}, or a Connect config provider reference such as
# ${env:PREQUAL_PG_PASSWORD}) is left alone; an unknown ${PREQUAL_...} placeholder is an
# error.
#
# Usage: infra/debezium/render.sh TEMPLATE   (or source it and call prequal_render TEMPLATE)
#
# Placeholder (default; an empty variable also means the default):
#   PREQUAL_PG_HOST (127.0.0.1)  PREQUAL_PG_PORT (55432)  PREQUAL_PG_USER (prequal)
#   PREQUAL_PG_DATABASE (prequal)
#   PREQUAL_DEBEZIUM_SLOT (prequal_outbox)  PREQUAL_DEBEZIUM_PUBLICATION (prequal_outbox_pub)
#   PREQUAL_DEBEZIUM_POLL_INTERVAL_MS (20)  PREQUAL_DEBEZIUM_HEARTBEAT_INTERVAL_MS (10000)
#   PREQUAL_TOPIC_PARTITIONS (3)  PREQUAL_TOPIC_REPLICATION_FACTOR (1)
#   PREQUAL_TOPIC_RETENTION_MS (604800000)   (the Settings defaults of the same names)
#   PREQUAL_KAFKA_PORT (9092)  PREQUAL_CONNECT_PORT (8083)
#   PREQUAL_INFRA_DIR (<repo root>/.infra)
#
# The database password is never rendered: ${PREQUAL_PG_PASSWORD} in a template is an
# error. A connector config says "${env:PREQUAL_PG_PASSWORD}" instead, which the Connect
# worker resolves from its own environment (its config.providers), so the password stays
# out of the config Connect stores and shows (docs/deployment.md).
#
# Values are escaped for the target: JSON string escaping for *.json, backslashes doubled
# for anything else (Java properties). Needs only bash.
#
# Sourced by infra/local.sh and infra/debezium/register.sh, which also share the two
# small helpers below it: prequal_connector_name and prequal_connector_state.

_prequal_render_defaults() {
  local root
  root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
  cat <<DEFAULTS
PREQUAL_PG_HOST=127.0.0.1
PREQUAL_PG_PORT=55432
PREQUAL_PG_USER=prequal
PREQUAL_PG_DATABASE=prequal
PREQUAL_DEBEZIUM_SLOT=prequal_outbox
PREQUAL_DEBEZIUM_PUBLICATION=prequal_outbox_pub
PREQUAL_DEBEZIUM_POLL_INTERVAL_MS=20
PREQUAL_DEBEZIUM_HEARTBEAT_INTERVAL_MS=10000
PREQUAL_TOPIC_PARTITIONS=3
PREQUAL_TOPIC_REPLICATION_FACTOR=1
PREQUAL_TOPIC_RETENTION_MS=604800000
PREQUAL_KAFKA_PORT=9092
PREQUAL_CONNECT_PORT=8083
PREQUAL_INFRA_DIR=$root/.infra
DEFAULTS
}

_prequal_json_escape() { # VALUE -> the value as the inside of a JSON string
  local s=$1 out='' c i
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  # Any other control character becomes \u00XX.
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    if [[ $c == [[:cntrl:]] ]]; then
      printf -v c '\\u%04x' "'$c"
    fi
    out+=$c
  done
  printf '%s' "$out"
}

prequal_render() { # TEMPLATE
  local template=$1 text name default value
  [[ -r $template ]] || {
    printf 'render.sh: cannot read %s\n' "$template" >&2
    return 1
  }
  text=$(<"$template")
  # shellcheck disable=SC2016 # the ${...} here are literal text, not expansions
  if [[ $text == *'${PREQUAL_PG_PASSWORD}'* ]]; then
    printf 'render.sh: %s: the database password is never rendered; write ${env:PREQUAL_PG_PASSWORD} (a Connect config provider reference) instead\n' \
      "$template" >&2
    return 1
  fi
  # & in a replacement must stay literal (bash 5.2 patsub_replacement).
  shopt -u patsub_replacement 2>/dev/null || true
  while IFS='=' read -r name default; do
    value=${!name:-$default}
    if [[ $template == *.json ]]; then
      value=$(_prequal_json_escape "$value")
    else
      value=${value//\\/\\\\}
    fi
    text=${text//"\${$name}"/"$value"}
  done < <(_prequal_render_defaults)
  if [[ $text =~ \$\{PREQUAL_[A-Za-z0-9_]*\} ]]; then
    printf 'render.sh: %s: unknown placeholder %s\n' "$template" "${BASH_REMATCH[0]}" >&2
    return 1
  fi
  printf '%s\n' "$text"
}

# Prints the connector name of a connector config in the REST format
# ({"name": "...", "config": {...}}, name first), given as a file or as text.
prequal_connector_name() { # FILE_OR_JSON
  local json=$1
  local name_re='^[[:space:]]*\{[[:space:]]*"name"[[:space:]]*:[[:space:]]*"([^"]+)"'
  if [[ $json != *'{'* ]]; then json=$(<"$json") || return 1; fi
  [[ $json =~ $name_re ]] || {
    printf 'render.sh: expected {"name": ...} first in the connector config\n' >&2
    return 1
  }
  printf '%s' "${BASH_REMATCH[1]}"
}

# Summarises a GET /connectors/NAME/status answer as "connector RUNNING, tasks RUNNING"
# and returns 0 when the connector and every task (at least one) are RUNNING, 1 when the
# connector or a task FAILED, 2 otherwise (still starting, paused, no task yet...).
# Plain bash on Connect's compact JSON, so no jq or python is needed where it runs.
prequal_connector_state() { # STATUS_JSON
  local json=$1 conn=none rest st states=() rc=0
  local ws='[[:space:]]*'
  local conn_re="\"connector\"$ws:$ws\\{[^}]*\"state\"$ws:$ws\"([A-Z_]+)\""
  local state_re="\"state\"$ws:$ws\"([A-Z_]+)\""
  if [[ $json =~ $conn_re ]]; then conn=${BASH_REMATCH[1]}; fi
  rest=${json#*\"tasks\"*:*\[}
  [[ $rest != "$json" ]] || rest=
  while [[ $rest =~ $state_re ]]; do
    states+=("${BASH_REMATCH[1]}")
    rest=${rest#*"${BASH_REMATCH[0]}"}
  done
  printf 'connector %s, tasks %s' "$conn" "${states[*]:-none}"
  [[ $conn == RUNNING ]] || rc=2
  ((${#states[@]})) || rc=2
  for st in "${states[@]}"; do [[ $st == RUNNING ]] || rc=2; done
  if [[ $conn == FAILED || " ${states[*]} " == *" FAILED "* ]]; then rc=1; fi
  return "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  if (($# != 1)); then
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' -- "$0" >&2
    exit 2
  fi
  prequal_render "$1"
fi
