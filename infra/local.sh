#!/usr/bin/env bash
# infra/local.sh - run prequal's PostgreSQL and Apache Kafka locally, without Docker.
#
# Usage:
#   infra/local.sh up      [SERVICE...]  start (or reuse) and wait until each one answers
#   infra/local.sh down    [SERVICE...]  stop; stopping a stopped service succeeds
#   infra/local.sh status                one line per service; always exits 0
#   infra/local.sh restart SERVICE...    down, then up (data is kept)
#   infra/local.sh drop-slot             drop Debezium's replication slot and publication
#                                        and Connect's offsets; refused while connect runs
#
# SERVICE is "postgres", "kafka" or "connect" (Kafka Connect standalone running the
# Debezium outbox connector of infra/debezium/, capturing PREQUAL_PG_DATABASE's outbox).
# With PREQUAL_KAFKA_BROKERS=3, "kafka" is a cluster of three KRaft nodes, each broker
# and controller (a controller quorum of three), and "kafka-1", "kafka-2", "kafka-3"
# name one node of it (restart kafka-2: a rolling restart's step). "down" stops whichever
# Kafka runs from this infra dir, one node or three.
# No SERVICE means postgres and kafka: up starts postgres first; down also stops connect
# when it runs, then kafka, then postgres. up connect starts postgres and kafka first
# when they are not running; connect is ready when its connector and task are RUNNING.
#
# Environment (default):
#   PREQUAL_INFRA_DIR              <repo root>/.infra  data, logs, pid files, jars
#   PREQUAL_PG_HOST                127.0.0.1           listen address of PostgreSQL
#   PREQUAL_PG_PORT                55432
#   PREQUAL_PG_USER                prequal             LOGIN REPLICATION CREATEDB role, owns the db
#   PREQUAL_PG_PASSWORD            prequal
#   PREQUAL_PG_DATABASE            prequal
#   PREQUAL_KAFKA_PORT             9092                PLAINTEXT listener on 127.0.0.1
#   PREQUAL_KAFKA_ADVERTISED_PORT  (KAFKA_PORT)        port advertised to clients on 127.0.0.1;
#                                                      differs when they go through a forwarder
#                                                      (tests/fault's Toxiproxy), which must then
#                                                      be up before the broker starts
#   PREQUAL_KAFKA_CONTROLLER_PORT  9093                KRaft controller listener
#   PREQUAL_KAFKA_BROKERS          1                   1: one node; 3: the three-node cluster
#   PREQUAL_KAFKA_PORTS            (KAFKA_PORT,+2,+4)  with 3 brokers: each node's PLAINTEXT
#                                                      port, comma separated (9092,9094,9096)
#   PREQUAL_KAFKA_CONTROLLER_PORTS (CONTROLLER_PORT,+2,+4) with 3 brokers: each node's
#                                                      controller port (9093,9095,9097)
#   PREQUAL_KAFKA_HEAP             768m; 3 brokers: 384m  each broker's -Xms/-Xmx
#   PREQUAL_CONNECT_PORT           8083                Connect REST listener on 127.0.0.1
#   PREQUAL_CONNECT_HEAP           512m                Connect worker -Xms/-Xmx
#   PREQUAL_DEBEZIUM_SLOT          prequal_outbox      logical replication slot (pgoutput)
#   PREQUAL_DEBEZIUM_PUBLICATION   prequal_outbox_pub  publication on public.outbox only
#   PREQUAL_DEBEZIUM_POLL_INTERVAL_MS  20              connector poll.interval.ms
#   PREQUAL_PG_BINDIR              (auto)              PostgreSQL server bin dir override
#
# Logs: $PREQUAL_INFRA_DIR/logs/{postgres,kafka,connect}.log; kafka-N.log per cluster node.
# Needs PostgreSQL server binaries, java, mvn (and curl for connect); as root, missing
# ones are apt-installed. PostgreSQL runs as the "postgres" OS user when invoked as root
# (initdb refuses root). Kafka jars are resolved from Maven Central via
# infra/kafka/pom.xml, Connect + Debezium jars via infra/debezium/pom.xml, each once per
# pom change.

set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(dirname -- "$SCRIPT_DIR")

# realpath -m: absolute even before the directory exists, and the same string every run,
# which matters because Kafka's pid check matches the config path in the command line.
INFRA_DIR=$(realpath -m -- "${PREQUAL_INFRA_DIR:-$REPO_ROOT/.infra}")
PG_HOST=${PREQUAL_PG_HOST:-127.0.0.1}
PG_PORT=${PREQUAL_PG_PORT:-55432}
PG_USER=${PREQUAL_PG_USER:-prequal}
PG_PASSWORD=${PREQUAL_PG_PASSWORD:-prequal}
PG_DATABASE=${PREQUAL_PG_DATABASE:-prequal}
KAFKA_PORT=${PREQUAL_KAFKA_PORT:-9092}
KAFKA_ADVERTISED_PORT=${PREQUAL_KAFKA_ADVERTISED_PORT:-$KAFKA_PORT}
KAFKA_CONTROLLER_PORT=${PREQUAL_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_BROKERS=${PREQUAL_KAFKA_BROKERS:-1}
# Three JVMs must fit beside PostgreSQL, Connect and six Python processes on a small
# machine; a broker carrying prequal's load keeps well under 384 MB of heap
# (docs/operations.md, "Three brokers", has the measured resident sizes).
if [[ $KAFKA_BROKERS == 3 ]]; then
  KAFKA_HEAP=${PREQUAL_KAFKA_HEAP:-384m}
else
  KAFKA_HEAP=${PREQUAL_KAFKA_HEAP:-768m}
fi
CONNECT_PORT=${PREQUAL_CONNECT_PORT:-8083}
CONNECT_HEAP=${PREQUAL_CONNECT_HEAP:-512m}
DEBEZIUM_SLOT=${PREQUAL_DEBEZIUM_SLOT:-prequal_outbox}
DEBEZIUM_PUBLICATION=${PREQUAL_DEBEZIUM_PUBLICATION:-prequal_outbox_pub}
DEBEZIUM_POLL_INTERVAL_MS=${PREQUAL_DEBEZIUM_POLL_INTERVAL_MS:-20}

PG_TIMEOUT=60
KAFKA_TIMEOUT=90
CONNECT_TIMEOUT=120
STOP_TIMEOUT=30

# Start order; down walks it backwards. connect needs both of the others.
ALL_SERVICES=(postgres kafka connect)
# What up/down/restart mean without a SERVICE (down adds connect when it runs).
DEFAULT_SERVICES=(postgres kafka)

LOG_DIR=$INFRA_DIR/logs
RUN_DIR=$INFRA_DIR/run
LOCK_FILE=$RUN_DIR/local.sh.lock

PG_DIR=$INFRA_DIR/pg
PG_DATA=$PG_DIR/data
PG_SOCK=$PG_DIR/run
PG_LOG=$LOG_DIR/postgres.log
# Unix socket paths are limited to ~107 bytes; deep checkouts (pytest tmp dirs) overflow it,
# so fall back to a short directory that is still unique per infra dir.
if ((${#PG_SOCK} + 20 > 100)); then
  PG_SOCK=/tmp/prequal-pg-$(printf '%s' "$INFRA_DIR" | sha256sum | cut -c1-12)
fi

KAFKA_DIR=$INFRA_DIR/kafka
KAFKA_LIBS=$KAFKA_DIR/libs
KAFKA_STAMP=$KAFKA_DIR/libs.pom.sha256
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_CLUSTER_ID_FILE=$KAFKA_DIR/cluster.id
KAFKA_PID=$RUN_DIR/kafka.pid
KAFKA_LOG=$LOG_DIR/kafka.log
KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
# The single node's values: kafka_node points the kafka_* functions at one node, and
# moves these back into KAFKA_PORT, KAFKA_CONF, ... for node 0 (the single node).
SINGLE_KAFKA_PORT=$KAFKA_PORT
SINGLE_KAFKA_ADVERTISED_PORT=$KAFKA_ADVERTISED_PORT
SINGLE_KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT
# The cluster's nodes 1..3: their own config, data, pid file and log under kafka/cluster.
KAFKA_CLUSTER_DIR=$KAFKA_DIR/cluster
KAFKA_NODE_IDS=(1 2 3)
KAFKA_NODE_PORTS=()
KAFKA_NODE_CONTROLLER_PORTS=()
if [[ $KAFKA_BROKERS == 3 ]]; then
  IFS=, read -ra KAFKA_NODE_PORTS <<<"${PREQUAL_KAFKA_PORTS:-$KAFKA_PORT,$((KAFKA_PORT + 2)),$((KAFKA_PORT + 4))}"
  IFS=, read -ra KAFKA_NODE_CONTROLLER_PORTS <<<"${PREQUAL_KAFKA_CONTROLLER_PORTS:-$KAFKA_CONTROLLER_PORT,$((KAFKA_CONTROLLER_PORT + 2)),$((KAFKA_CONTROLLER_PORT + 4))}"
fi
# The nodes a kafka command acts on: every node of the chosen layout unless kafka-N
# named some (main fills it in).
KAFKA_TARGETS=()
KAFKA_LOG4J=$SCRIPT_DIR/kafka/log4j2.properties

CONNECT_DIR=$INFRA_DIR/connect
CONNECT_LIBS=$CONNECT_DIR/libs
CONNECT_STAMP=$CONNECT_DIR/libs.pom.sha256
CONNECT_CONF=$CONNECT_DIR/worker.properties
CONNECT_CONNECTOR=$CONNECT_DIR/outbox-connector.json
# Named in infra/debezium/connect-standalone.properties (offset.storage.file.filename):
# one file per slot, since the offsets are a position in that slot's stream. The owner
# file says which cluster and database they were read from (connect_check_offsets).
CONNECT_OFFSETS=$CONNECT_DIR/offsets-$DEBEZIUM_SLOT.dat
CONNECT_OFFSETS_OWNER=$CONNECT_DIR/offsets-$DEBEZIUM_SLOT.owner
CONNECT_PID=$RUN_DIR/connect.pid
CONNECT_LOG=$LOG_DIR/connect.log
DEBEZIUM_DIR=$SCRIPT_DIR/debezium
CONNECT_POM=$DEBEZIUM_DIR/pom.xml
CONNECT_LOG4J=$DEBEZIUM_DIR/log4j2.properties

# prequal_render (templates) and prequal_connector_state (REST status), shared with
# infra/debezium/register.sh.
# shellcheck source-path=SCRIPTDIR source=debezium/render.sh
. "$DEBEZIUM_DIR/render.sh"

# ---------------------------------------------------------------------------- helpers

usage() {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' -- "${BASH_SOURCE[0]}"
}

info() { printf '%s\n' "$*"; }

# Prints which step failed, where its log is and the log's tail, then exits non-zero.
fail() { # SERVICE STEP LOGFILE
  {
    printf 'ERROR: %s: %s failed.\n' "$1" "$2"
    if [[ -n ${3:-} ]]; then
      printf 'Log file: %s (last 30 lines):\n' "$3"
      if [[ -r $3 ]]; then tail -n 30 -- "$3" | sed 's/^/  | /'; else printf '  (missing)\n'; fi
    fi
  } >&2
  exit 1
}

die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}

# Microsecond clock; EPOCHREALTIME uses the locale's decimal separator.
now_us() {
  local t=$EPOCHREALTIME
  printf '%s' "${t//[.,]/}"
}

since() { # START_US -> "1.23s"
  local d=$(($(now_us) - $1))
  printf '%d.%02ds' $((d / 1000000)) $((d % 1000000 / 10000))
}

port_open() { # HOST PORT
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# True for a live process; a zombie (our own child that already exited) counts as dead.
proc_alive() { # PID
  local stat
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# Runs a command as the PostgreSQL owner: the "postgres" OS user when we are root,
# ourselves otherwise. cd / so tools don't warn about an unreadable cwd (e.g. /root).
as_pg() {
  if ((EUID == 0)); then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

# ---------------------------------------------------------------------- prerequisites

# Newest installed server matters more than pg_config, which on Debian belongs to the
# client package and may point at a version without initdb; an existing cluster pins
# its own major version.
find_pg_bindir() {
  local d v best=
  if [[ -n ${PREQUAL_PG_BINDIR:-} ]]; then
    printf '%s' "$PREQUAL_PG_BINDIR"
    return 0
  fi
  if [[ -r $PG_DATA/PG_VERSION ]]; then
    v=$(<"$PG_DATA/PG_VERSION")
    if [[ -x /usr/lib/postgresql/$v/bin/initdb ]]; then
      printf '%s' "/usr/lib/postgresql/$v/bin"
      return 0
    fi
  fi
  best=$(for d in /usr/lib/postgresql/*/bin; do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then printf '%s\n' "$d"; fi
  done | sort -V | tail -n 1)
  if [[ -z $best ]] && command -v pg_config >/dev/null; then
    d=$(pg_config --bindir 2>/dev/null) || d=
    if [[ -n $d && -x $d/initdb ]]; then best=$d; fi
  fi
  if [[ -z $best ]] && d=$(command -v initdb); then
    best=$(dirname -- "$d")
  fi
  [[ -n $best ]] || return 1
  printf '%s' "$best"
}

ensure_prereqs() { # SERVICE...
  local svc pkgs=()
  for svc in "$@"; do
    case $svc in
      postgres) find_pg_bindir >/dev/null || pkgs+=(postgresql) ;;
      kafka | connect)
        command -v java >/dev/null || pkgs+=(openjdk-17-jdk-headless)
        command -v mvn >/dev/null || pkgs+=(maven)
        if [[ $svc == connect ]] && ! command -v curl >/dev/null; then pkgs+=(curl); fi
        ;;
    esac
  done
  # Both kafka and connect may have asked for java and maven.
  if ((${#pkgs[@]})); then
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
  fi
  ((${#pkgs[@]})) || return 0
  if ((EUID != 0)); then
    die "missing prerequisites (${pkgs[*]}); install them with:
  sudo apt-get update && sudo apt-get install -y ${pkgs[*]}"
  fi
  info "installing prerequisites: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The lock timeout lets us queue behind an apt run that is already in progress.
  local apt=(apt-get -q -o DPkg::Lock::Timeout=600)
  if ! "${apt[@]}" install -y "${pkgs[@]}"; then
    if ! { "${apt[@]}" update && "${apt[@]}" install -y "${pkgs[@]}"; }; then
      die "apt-get install -y ${pkgs[*]} failed"
    fi
  fi
}

# ------------------------------------------------------------------------- postgres

pg_pid() { # prints the postmaster pid if our cluster is running
  local pid
  [[ -f $PG_DATA/postmaster.pid ]] || return 1
  read -r pid <"$PG_DATA/postmaster.pid" || return 1
  proc_alive "$pid" || return 1
  printf '%s' "$pid"
}

pg_running_port() {
  sed -n 4p -- "$PG_DATA/postmaster.pid" 2>/dev/null
}

# Right after a kill -9 the old postmaster can linger as a zombie until it is reaped, and
# PostgreSQL refuses to start while the pid in postmaster.pid still exists.
pg_wait_reaped() {
  local old i
  [[ -f $PG_DATA/postmaster.pid ]] || return 0
  read -r old <"$PG_DATA/postmaster.pid" || return 0
  [[ $old =~ ^[0-9]+$ ]] || return 0
  for ((i = 0; i < 25; i++)); do
    [[ -e /proc/$old ]] || return 0
    sleep 0.2
  done
}

pg_ready() {
  "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" -t 2
}

# The real readiness criterion: what the application does (password auth over TCP).
pg_query_ok() {
  local out
  out=$(PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -w -t -A \
    -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DATABASE" -c 'select 1' 2>&1) &&
    [[ $out == 1 ]]
}

# The postgres user must reach its data dir and write its log even when the checkout
# lives under a private directory; open only the components that block it.
pg_ensure_access() { # PATH...
  local target p comp comps
  ((EUID == 0)) || return 0
  for target in "$@"; do
    if as_pg test -x "$target"; then continue; fi
    p=
    IFS=/ read -ra comps <<<"${target#/}"
    for comp in "${comps[@]}"; do
      p=$p/$comp
      if ! as_pg test -x "$p"; then
        info "postgres: chmod o+x $p (so the postgres user can reach $target)"
        chmod o+x -- "$p"
      fi
    done
  done
}

pg_prepare_dirs() {
  mkdir -p -- "$LOG_DIR" "$PG_DIR" "$PG_DATA" "$PG_SOCK"
  touch -- "$PG_LOG"
  chmod 700 -- "$PG_DATA"
  if ((EUID == 0)); then
    chown postgres:postgres -- "$PG_DATA" "$PG_SOCK" "$PG_LOG"
    pg_ensure_access "$PG_DATA" "$PG_SOCK" "$LOG_DIR"
  fi
}

pg_init() {
  local locale=()
  # C.UTF-8 gives byte-order collation (deterministic tests) with Unicode-aware ctype.
  if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
    locale=(--locale=C.UTF-8)
  else
    locale=(--no-locale)
  fi
  info "postgres: initialising a new cluster in $PG_DATA"
  # initdb wants an empty directory; a leftover from an interrupted init is useless.
  find "$PG_DATA" -mindepth 1 -delete
  printf '\n===== %s initdb (local.sh) =====\n' "$(date -Is)" >>"$PG_LOG"
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 "${locale[@]}" \
    --auth-local=trust --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1 ||
    fail postgres "initdb" "$PG_LOG"
  # Our settings live in a file rewritten on every start, so env changes take effect.
  printf "\ninclude_if_exists = 'prequal.conf'\n" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

pg_write_config() {
  as_pg tee "$PG_DATA/prequal.conf" >/dev/null <<EOF
# Written by infra/local.sh on every start; edits are lost.
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
# Logical decoding for Debezium / CDC.
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
# Tests rely on committed data surviving a crash or kill, so stay durable.
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by infra/local.sh on every start; edits are lost.
# TYPE  DATABASE     USER      ADDRESS        METHOD
local   all          postgres                 trust
local   replication  postgres                 trust
local   all          all                      scram-sha-256
host    all          all       127.0.0.1/32   scram-sha-256
host    replication  all       127.0.0.1/32   scram-sha-256
host    all          all       ::1/128        scram-sha-256
host    replication  all       ::1/128        scram-sha-256
host    all          all       samehost       scram-sha-256
host    replication  all       samehost       scram-sha-256
EOF
}

# Idempotent, so it also repairs a changed password or a dropped database.
pg_ensure_role() {
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres \
    -d postgres -v user="$PG_USER" -v pw="$PG_PASSWORD" -v db="$PG_DATABASE" -f - \
    >>"$PG_LOG" 2>&1 <<'SQL'
SELECT format('CREATE ROLE %I', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN REPLICATION CREATEDB PASSWORD %L', :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
}

pg_up() {
  local t0 pid port deadline
  t0=$(now_us)
  deadline=$((SECONDS + PG_TIMEOUT))
  PG_BIN=$(find_pg_bindir) || die "postgres: no PostgreSQL server binaries found"

  if pid=$(pg_pid); then
    port=$(pg_running_port)
    [[ $port == "$PG_PORT" ]] ||
      die "postgres: running (pid $pid) on port $port, not PREQUAL_PG_PORT=$PG_PORT; run: $0 restart postgres"
    if pg_ready && pg_query_ok; then
      info "postgres: already running (pid $pid, port $PG_PORT)"
      return 0
    fi
  else
    if port_open "$PG_HOST" "$PG_PORT"; then
      die "postgres: port $PG_HOST:$PG_PORT is already in use by another process"
    fi
    pg_prepare_dirs
    pg_wait_reaped
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
      pg_init
    fi
    pg_write_config
    printf '\n===== %s start (local.sh) =====\n' "$(date -Is)" >>"$PG_LOG"
    # pg_ctl -w polls the postmaster itself and notices promptly if it dies.
    # 9>&- keeps our lock fd out of the long-lived server. Both the server (-l) and
    # pg_ctl's own complaints append to the same log, which is what we want.
    # shellcheck disable=SC2094
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_TIMEOUT" start \
      >/dev/null 2>>"$PG_LOG" 9>&-; then
      # A start that timed out may still be running; don't leave it behind half-started.
      as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 9>&- || true
      fail postgres "pg_ctl start" "$PG_LOG"
    fi
  fi

  until pg_ready; do
    ((SECONDS < deadline)) || fail postgres "pg_isready on $PG_HOST:$PG_PORT (${PG_TIMEOUT}s)" "$PG_LOG"
    sleep 0.2
  done
  # Every start, not only the first: it is one cheap psql, and it brings a cluster made
  # by an older version of this script up to today's role attributes.
  pg_ensure_role || fail postgres "creating role/database $PG_USER/$PG_DATABASE" "$PG_LOG"
  pg_query_ok || fail postgres "psql 'select 1' as $PG_USER over TCP" "$PG_LOG"
  info "postgres: ready in $(since "$t0") (pid $(pg_pid || echo '?'), port $PG_PORT)"
}

pg_down() {
  local pid t0
  t0=$(now_us)
  if ! pid=$(pg_pid); then
    info "postgres: already stopped"
    return 0
  fi
  if PG_BIN=$(find_pg_bindir); then
    # A fast shutdown waits for each walsender until its client confirms the last WAL;
    # Debezium confirms only positions of captured (outbox) changes, so with a Connect
    # worker attached the stop would take 10 s or more. Disconnect them first: Debezium
    # treats it as a retriable error and reconnects once the server is back.
    as_pg "$PG_BIN/psql" -X -q -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -c \
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'walsender'" \
      >/dev/null 2>>"$PG_LOG" 9>&- || true
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop \
      >/dev/null 2>>"$PG_LOG" 9>&- ||
      as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>>"$PG_LOG" 9>&- ||
      fail postgres "pg_ctl stop" "$PG_LOG"
  else
    # Binaries gone (uninstalled) but the server lives on: SIGINT is a fast shutdown.
    kill -INT "$pid"
    stop_wait "$pid" || kill -QUIT "$pid" 2>/dev/null || true
  fi
  info "postgres: stopped in $(since "$t0")"
}

pg_status() {
  local pid
  if pid=$(pg_pid); then
    local port
    port=$(pg_running_port)
    if port_open "$PG_HOST" "$port"; then
      info "postgres: running (pid $pid, port $port)"
    else
      info "postgres: running (pid $pid, port $port) but not answering yet"
    fi
  else
    info "postgres: stopped"
  fi
}

# ---------------------------------------------------------------------------- kafka

# Points the kafka_* functions (KAFKA_PORT, KAFKA_CONF, KAFKA_PID, KAFKA_LOG, ...) at one
# node: 0 is the single node, 1..3 a node of the cluster.
kafka_node() { # N
  KAFKA_NODE=$1
  if (($1 == 0)); then
    KAFKA_NAME=kafka
    KAFKA_PORT=$SINGLE_KAFKA_PORT
    KAFKA_ADVERTISED_PORT=$SINGLE_KAFKA_ADVERTISED_PORT
    KAFKA_CONTROLLER_PORT=$SINGLE_KAFKA_CONTROLLER_PORT
    KAFKA_DATA=$KAFKA_DIR/data
    KAFKA_CONF=$KAFKA_DIR/server.properties
    KAFKA_CLUSTER_ID_FILE=$KAFKA_DIR/cluster.id
    KAFKA_PID=$RUN_DIR/kafka.pid
    KAFKA_LOG=$LOG_DIR/kafka.log
  else
    KAFKA_NAME=kafka-$1
    KAFKA_PORT=${KAFKA_NODE_PORTS[$1 - 1]:-}
    KAFKA_ADVERTISED_PORT=$KAFKA_PORT
    KAFKA_CONTROLLER_PORT=${KAFKA_NODE_CONTROLLER_PORTS[$1 - 1]:-}
    KAFKA_DATA=$KAFKA_CLUSTER_DIR/data-$1
    KAFKA_CONF=$KAFKA_CLUSTER_DIR/node-$1.properties
    KAFKA_CLUSTER_ID_FILE=$KAFKA_CLUSTER_DIR/cluster.id
    KAFKA_PID=$RUN_DIR/kafka-$1.pid
    KAFKA_LOG=$LOG_DIR/kafka-$1.log
  fi
}

kafka_pid() { # prints the broker pid if our broker is running
  local pid cmdline
  [[ -f $KAFKA_PID ]] || return 1
  read -r pid <"$KAFKA_PID" || return 1
  proc_alive "$pid" || return 1
  # Guards against a recycled pid: it must be a broker started with our config file.
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *kafka.Kafka*"$KAFKA_CONF"* ]] || return 1
  printf '%s' "$pid"
}

# The port the broker listens on (its PLAINTEXT listener), which may differ from the one
# it advertises (PREQUAL_KAFKA_ADVERTISED_PORT).
kafka_running_port() {
  local port
  port=$(sed -n 's|^listeners=PLAINTEXT://[^,]*:\([0-9][0-9]*\).*|\1|p' "$KAFKA_CONF" 2>/dev/null)
  [[ -n $port ]] || return 1
  printf '%s' "$port"
}

kafka_advertised_port() {
  local line
  line=$(grep -m1 '^advertised.listeners=' "$KAFKA_CONF" 2>/dev/null) || return 1
  printf '%s' "${line##*:}"
}

# Short-lived CLI JVMs: C1 only and a small serial heap start noticeably faster.
# An array rather than a function so it can run under `timeout`.
KAFKA_TOOL=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dprequal.log.level=WARN
  -cp "$KAFKA_LIBS/*")

# Resolving takes seconds even with a warm ~/.m2, so it only reruns when the pom changes.
mvn_resolve_libs() { # SERVICE POM DIR LIBS STAMP LOGFILE
  local svc=$1 pom=$2 dir=$3 libs=$4 stamp=$5 log=$6 sum tmp
  sum=$(sha256sum <"$pom" | cut -d' ' -f1)
  if [[ -d $libs && -f $stamp && $(<"$stamp") == "$sum" ]]; then
    return 0
  fi
  info "$svc: resolving jars with Maven into $libs (once per pom change)"
  tmp=$dir/libs.tmp
  rm -rf -- "$tmp" "$dir/mvn"
  # Build from a copy so Maven's scratch output lands in the infra dir, not the repo.
  mkdir -p -- "$dir/mvn"
  cp -- "$pom" "$dir/mvn/pom.xml"
  printf '\n===== %s maven resolve (local.sh) =====\n' "$(date -Is)" >>"$log"
  local from pid status=0 t0=$SECONDS
  from=$(($(wc -l <"$log") + 1))
  # Not quiet: Maven logs each download, and the loop below counts them so that a first
  # start (about a minute of downloads) says how far along it is.
  mvn -B -Dstyle.color=never -f "$dir/mvn/pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$tmp" >>"$log" 2>&1 9>&- &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if kill -0 "$pid" 2>/dev/null; then
      info "$svc: resolving jars: $(tail -n "+$from" "$log" | grep -c 'Downloaded from') files downloaded in $((SECONDS - t0)) s"
    fi
  done
  wait "$pid" || status=$?
  ((status == 0)) || fail "$svc" "resolving jars (mvn copy-dependencies)" "$log"
  info "$svc: jars resolved in $((SECONDS - t0)) s ($(find "$tmp" -name '*.jar' | wc -l) jars)"
  # Swap in whole so a changed pom never leaves stale jars on the classpath.
  rm -rf -- "$libs"
  mv -- "$tmp" "$libs"
  printf '%s\n' "$sum" >"$stamp"
}

kafka_resolve_libs() {
  mvn_resolve_libs kafka "$KAFKA_POM" "$KAFKA_DIR" "$KAFKA_LIBS" "$KAFKA_STAMP" "$KAFKA_LOG"
}

kafka_write_config() {
  if ((KAFKA_NODE > 0)); then
    kafka_write_cluster_config
    return
  fi
  cat >"$KAFKA_CONF" <<EOF
# Written by infra/local.sh on every start; edits are lost.
# Single-node KRaft: this one process is both broker and controller.
process.roles=broker,controller
node.id=1
# Static voters (not a dynamic --standalone quorum) so the controller port can change
# between runs without reformatting.
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
# Clients (and the broker itself, for transaction markers) connect to this address.
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_ADVERTISED_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=3
# One broker, so every internal topic must make do with one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests should not wait 3 s for the first consumer group rebalance.
group.initial.rebalance.delay.ms=0
# Longer than any pause of this process (a 10 s SIGSTOP in the fault drills, a starved
# machine): on thawing, the controller in the same JVM would otherwise fence its own broker
# for having missed heartbeats, every partition would be leaderless for a moment, and the
# transaction coordinator then skips the markers it is writing ("Couldn't find leader
# endpoint ... can be skipped", Kafka 4.3.1). An aborted transaction's records left open
# were committed by the next one: reports read twice, or read_committed readers stalled.
# A cluster's broker does not lead alone, so its 2.5 s stays. The cost: after a kill -9
# the restarted node registers only once its old session expires (up to 20 s).
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=20000
# Topics are created explicitly so a typo fails loudly instead of creating a topic.
auto.create.topics.enable=false
EOF
}

# One node of the three-node cluster: the same settings as the single node, but with a
# quorum of three controllers and everything replicated three times.
kafka_write_cluster_config() {
  local voters='' i
  for i in "${KAFKA_NODE_IDS[@]}"; do
    voters+="${voters:+,}$i@127.0.0.1:${KAFKA_NODE_CONTROLLER_PORTS[i - 1]}"
  done
  mkdir -p -- "$KAFKA_CLUSTER_DIR"
  cat >"$KAFKA_CONF" <<EOF
# Written by infra/local.sh on every start; edits are lost.
# Node $KAFKA_NODE of a three-node KRaft cluster: each process is broker and controller.
process.roles=broker,controller
node.id=$KAFKA_NODE
# Static voters: a majority (2 of 3) elects the active controller, so one node may be lost.
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=3
# Every partition on every broker; a write is acknowledged (acks=all) once 2 of the 3
# have it, so any one broker may be lost without losing or refusing a write.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
# A replica that missed writes never becomes leader: that would drop acknowledged ones.
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
# A killed node is fenced (and its partitions led elsewhere) within 2.5 s, and may
# register again as soon as it restarts.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2500
auto.create.topics.enable=false
EOF
}

# Same shape as `kafka-storage random-uuid` (16 random bytes, URL-safe base64 without
# padding) without paying for a JVM start. Like Kafka's Uuid.randomUuid it draws again
# when the id starts with "-": the tool's argument parser would read such an id as an
# option ("--cluster-id: expected one argument"), one format in 64.
kafka_cluster_id() {
  local id=-
  while [[ $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  printf '%s\n' "$id"
}

kafka_format() {
  local id=
  if [[ -f $KAFKA_DATA/meta.properties ]]; then return 0; fi
  if [[ -s $KAFKA_CLUSTER_ID_FILE ]]; then
    id=$(<"$KAFKA_CLUSTER_ID_FILE")
  fi
  if [[ ! $id =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]]; then
    id=$(kafka_cluster_id)
    printf '%s\n' "$id" >"$KAFKA_CLUSTER_ID_FILE"
  fi
  info "$KAFKA_NAME: formatting storage in $KAFKA_DATA (cluster id $id)"
  printf '\n===== %s storage format (local.sh) =====\n' "$(date -Is)" >>"$KAFKA_LOG"
  "${KAFKA_TOOL[@]}" kafka.tools.StorageTool format --config "$KAFKA_CONF" --cluster-id="$id" \
    --ignore-formatted >>"$KAFKA_LOG" 2>&1 9>&- ||
    fail "$KAFKA_NAME" "storage format (kafka.tools.StorageTool)" "$KAFKA_LOG"
}

kafka_start() {
  local i
  rm -f -- "$KAFKA_PID"
  printf '\n===== %s start (local.sh) =====\n' "$(date -Is)" >>"$KAFKA_LOG"
  # setsid: own session and process group, so down can signal the whole group and a
  # closing terminal or the caller's Ctrl-C doesn't reach the broker. The inner shell
  # records its own pid right before exec'ing java, so the pid is java's whatever
  # setsid decides about forking. stdio goes to the log so callers that capture our
  # output (subprocess pipes) don't wait for the broker to exit.
  # shellcheck disable=SC2016 # $$ and "$@" are for the inner shell
  setsid bash -c 'printf "%s\n" "$$" >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' \
    "$KAFKA_PID" \
    java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$LOG_DIR" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" \
    </dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
  for ((i = 0; i < 50; i++)); do
    [[ -s $KAFKA_PID ]] && return 0
    sleep 0.05
  done
  fail "$KAFKA_NAME" "launching the broker process (no pid file)" "$KAFKA_LOG"
}

kafka_wait_ready() { # DEADLINE_SECONDS
  local deadline=$1 pid
  pid=$(<"$KAFKA_PID")
  # The port opening is cheap to poll; only then pay for a JVM that asks for API versions.
  # That request goes to the advertised port, so a forwarder in front of it must be up.
  until port_open 127.0.0.1 "$KAFKA_PORT"; do
    if ! proc_alive "$pid"; then
      rm -f -- "$KAFKA_PID"
      fail "$KAFKA_NAME" "broker start-up (process $pid exited)" "$KAFKA_LOG"
    fi
    if ((SECONDS >= deadline)); then
      kafka_kill "$pid"
      fail "$KAFKA_NAME" "waiting for port 127.0.0.1:$KAFKA_PORT (${KAFKA_TIMEOUT}s)" "$KAFKA_LOG"
    fi
    sleep 0.25
  done
  # A cluster node is asked about as part of the whole (kafka_cluster_wait_ready).
  ((KAFKA_NODE == 0)) || return 0
  until timeout "$((deadline - SECONDS > 1 ? deadline - SECONDS : 1))" \
    "${KAFKA_TOOL[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "127.0.0.1:$KAFKA_PORT" >/dev/null 2>>"$KAFKA_LOG" 9>&-; do
    if ! proc_alive "$pid" || ((SECONDS >= deadline)); then
      kafka_kill "$pid"
      fail kafka "API versions request to 127.0.0.1:$KAFKA_PORT (BrokerApiVersionsCommand)" "$KAFKA_LOG"
    fi
    sleep 0.5
  done
}

# The ids of the brokers the cluster's metadata lists (registered and not fenced), one a
# line, as a client bootstrapped from the three nodes sees them.
kafka_cluster_brokers() { # TIMEOUT_SECONDS
  local bootstrap='' p
  for p in "${KAFKA_NODE_PORTS[@]}"; do bootstrap+="${bootstrap:+,}127.0.0.1:$p"; done
  timeout "$1" "${KAFKA_TOOL[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$bootstrap" 2>/dev/null 9>&- |
    sed -n 's/^[^ ].* (id: \([0-9][0-9]*\) .*/\1/p' | sort -u
}

# Ready when every node of KAFKA_TARGETS is a broker the metadata lists: a node that
# only listens has not joined yet (it needs the quorum: 2 of the 3 controllers).
kafka_cluster_wait_ready() { # DEADLINE_SECONDS
  local deadline=$1 n listed missing
  while :; do
    listed=$(kafka_cluster_brokers "$((deadline - SECONDS > 1 ? deadline - SECONDS : 1))") || listed=
    missing=()
    for n in "${KAFKA_TARGETS[@]}"; do
      if ! grep -qx "$n" <<<"$listed"; then missing+=("$n"); fi
    done
    ((${#missing[@]})) || return 0
    for n in "${missing[@]}"; do
      kafka_node "$n"
      if ! kafka_pid >/dev/null; then
        rm -f -- "$KAFKA_PID"
        fail "$KAFKA_NAME" "broker start-up (process exited)" "$KAFKA_LOG"
      fi
    done
    if ((SECONDS >= deadline)); then
      kafka_node "${missing[0]}"
      fail "$KAFKA_NAME" "joining the cluster (listed brokers: ${listed//$'\n'/ }; ${KAFKA_TIMEOUT}s)" "$KAFKA_LOG"
    fi
    sleep 0.5
  done
}

# Waits for a process to exit; false if it is still alive after STOP_TIMEOUT.
stop_wait() { # PID
  local i
  for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
    proc_alive "$1" || return 0
    sleep 0.2
  done
  return 1
}

# SIGTERM to the process group (setsid made the JVM its leader) lets the JVM shut down
# cleanly; SIGKILL only if it hangs.
group_kill() { # SERVICE PID PIDFILE
  local svc=$1 pid=$2
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  if ! stop_wait "$pid"; then
    info "$svc: no exit after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    stop_wait "$pid" || true
  fi
  rm -f -- "$3"
}

# SIGTERM lets the broker do a controlled shutdown and flush.
kafka_kill() { # PID
  group_kill "$KAFKA_NAME" "$1" "$KAFKA_PID"
}

# Starts the selected node unless it runs already (its ports checked); KAFKA_STARTED
# says which (a flag, not the status: set -e does not apply inside a tested function).
kafka_node_start() {
  local pid port p
  KAFKA_STARTED=0
  if pid=$(kafka_pid); then
    port=$(kafka_running_port)
    [[ $port == "$KAFKA_PORT" ]] ||
      die "$KAFKA_NAME: running (pid $pid) on port $port, not $KAFKA_PORT as configured; run: $0 restart $KAFKA_NAME"
    port=$(kafka_advertised_port) || port='?'
    [[ $port == "$KAFKA_ADVERTISED_PORT" ]] ||
      die "$KAFKA_NAME: running (pid $pid) advertising port $port, not PREQUAL_KAFKA_ADVERTISED_PORT=$KAFKA_ADVERTISED_PORT; run: $0 restart $KAFKA_NAME"
    return 0
  fi
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open 127.0.0.1 "$p"; then
      die "$KAFKA_NAME: port 127.0.0.1:$p is already in use by another process"
    fi
  done
  mkdir -p -- "$KAFKA_DIR" "$KAFKA_DATA" "$LOG_DIR" "$RUN_DIR"
  touch -- "$KAFKA_LOG"
  kafka_resolve_libs
  kafka_write_config
  kafka_format
  kafka_start
  KAFKA_STARTED=1
}

# The nodes of the layout not asked for that run from this infra dir, one a line.
kafka_other_layout() {
  local n nodes=(1 2 3)
  [[ $KAFKA_BROKERS == 3 ]] && nodes=(0)
  for n in "${nodes[@]}"; do
    kafka_node "$n"
    if kafka_pid >/dev/null; then printf '%s\n' "$KAFKA_NAME"; fi
  done
}

kafka_up() {
  local t0 deadline n others started=()
  t0=$(now_us)
  deadline=$((SECONDS + KAFKA_TIMEOUT))
  # One node and the cluster share the default ports and the clients' settings: never both.
  others=$(kafka_other_layout)
  if [[ -n $others ]]; then
    die "kafka: ${others//$'\n'/, } already running from $INFRA_DIR, not PREQUAL_KAFKA_BROKERS=$KAFKA_BROKERS; stop it first: $0 down kafka"
  fi
  if [[ $KAFKA_BROKERS != 3 ]]; then
    kafka_node 0
    kafka_node_start
    if ((!KAFKA_STARTED)) && port_open 127.0.0.1 "$KAFKA_PORT"; then
      info "kafka: already running (pid $(<"$KAFKA_PID"), port $KAFKA_PORT)"
      return 0
    fi
    # Started now, or alive but not listening (another `up` still starting it): wait.
    kafka_wait_ready "$deadline"
    if [[ $KAFKA_ADVERTISED_PORT != "$KAFKA_PORT" ]]; then
      info "kafka: ready in $(since "$t0") (pid $(<"$KAFKA_PID"), port $KAFKA_PORT, advertised $KAFKA_ADVERTISED_PORT)"
    else
      info "kafka: ready in $(since "$t0") (pid $(<"$KAFKA_PID"), port $KAFKA_PORT)"
    fi
    return 0
  fi
  # All started before any is waited for: a node joins only once 2 of 3 controllers run.
  for n in "${KAFKA_TARGETS[@]}"; do
    kafka_node "$n"
    kafka_node_start
    if ((KAFKA_STARTED)); then started+=("$n"); fi
  done
  for n in "${started[@]}"; do
    kafka_node "$n"
    kafka_wait_ready "$deadline"
  done
  kafka_cluster_wait_ready "$deadline"
  for n in "${KAFKA_TARGETS[@]}"; do
    kafka_node "$n"
    if in_list "$n" "${started[@]}"; then
      info "$KAFKA_NAME: ready in $(since "$t0") (pid $(<"$KAFKA_PID"), port $KAFKA_PORT, controller $KAFKA_CONTROLLER_PORT)"
    else
      info "$KAFKA_NAME: already running (pid $(<"$KAFKA_PID"), port $KAFKA_PORT)"
    fi
  done
}

kafka_down() {
  local t0 n pid nodes=() running=()
  t0=$(now_us)
  # Plain "kafka" stops whatever Kafka runs from this infra dir, whichever layout.
  if ((KAFKA_NAMED)); then nodes=("${KAFKA_TARGETS[@]}"); else nodes=(0 1 2 3); fi
  # SIGTERM to every node first: a node's controlled shutdown needs the controller
  # quorum, which nodes stopped one after the other would take away from the last one.
  for n in "${nodes[@]}"; do
    kafka_node "$n"
    if pid=$(kafka_pid); then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      running+=("$n")
    else
      rm -f -- "$KAFKA_PID"
    fi
  done
  if ((${#running[@]} == 0)); then
    if ((KAFKA_NAMED)); then
      for n in "${nodes[@]}"; do info "kafka-$n: already stopped"; done
    else
      info "kafka: already stopped"
    fi
    return 0
  fi
  for n in "${running[@]}"; do
    kafka_node "$n"
    if pid=$(kafka_pid); then kafka_kill "$pid"; else rm -f -- "$KAFKA_PID"; fi
    info "$KAFKA_NAME: stopped in $(since "$t0")"
  done
}

kafka_node_status() {
  local pid port
  if pid=$(kafka_pid); then
    port=$(kafka_running_port) || port=$KAFKA_PORT
    if port_open 127.0.0.1 "$port"; then
      info "$KAFKA_NAME: running (pid $pid, port $port)"
    else
      info "$KAFKA_NAME: running (pid $pid, port $port) but not answering yet"
    fi
  else
    info "$KAFKA_NAME: stopped"
  fi
}

# The asked-for layout, one line per node; a node of the other layout only when it runs.
kafka_status() {
  local n
  if [[ $KAFKA_BROKERS == 3 ]]; then
    for n in 1 2 3; do
      kafka_node "$n"
      kafka_node_status
    done
    kafka_node 0
    if kafka_pid >/dev/null; then kafka_node_status; fi
  else
    kafka_node 0
    kafka_node_status
    for n in 1 2 3; do
      kafka_node "$n"
      if kafka_pid >/dev/null; then kafka_node_status; fi
    done
  fi
}

# -------------------------------------------------------------------------- connect

# The connector's name, from the template (register.sh reads it the same way).
CONNECTOR_NAME=$(prequal_connector_name "$DEBEZIUM_DIR/outbox-connector.json" 2>/dev/null) ||
  CONNECTOR_NAME=prequal-outbox

connect_pid() { # prints the worker pid if our Connect worker is running
  local pid cmdline
  [[ -f $CONNECT_PID ]] || return 1
  read -r pid <"$CONNECT_PID" || return 1
  proc_alive "$pid" || return 1
  # Guards against a recycled pid: it must be a worker started with our config file.
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *ConnectStandalone*"$CONNECT_CONF"* ]] || return 1
  printf '%s' "$pid"
}

connect_running_port() {
  local line
  line=$(grep -m1 '^listeners=' "$CONNECT_CONF" 2>/dev/null) || return 1
  printf '%s' "${line##*:}"
}

connect_rest() { # PORT PATH [curl args...] - prints the body, fails on no answer
  local port=$1 path=$2
  shift 2
  curl -sS --max-time 5 "$@" "http://127.0.0.1:$port$path" 2>/dev/null
}

# psql as the application role on PREQUAL_PG_DATABASE, unaligned, stopping at the first
# error; :'slot' and :'pub' are the slot and publication names. Prints output and errors.
connect_psql() { # PSQL_ARGS...
  PG_BIN=$(find_pg_bindir) || die "postgres: no PostgreSQL binaries found"
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -w -t -A \
    -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DATABASE" \
    -v slot="$DEBEZIUM_SLOT" -v pub="$DEBEZIUM_PUBLICATION" "$@" 2>&1
}

# The filtered publication needs the table: without it the task fails with "No table
# filters found for filtered publication", which says little about the cause.
connect_check_outbox() {
  local out
  out=$(connect_psql -c "SELECT to_regclass('public.outbox') IS NOT NULL") ||
    die "connect: cannot query database $PG_DATABASE on $PG_HOST:$PG_PORT: $out"
  [[ $out == t ]] ||
    die "connect: database $PG_DATABASE has no table public.outbox yet; migrate it first (make migrate)"
}

# True when the offsets file holds a Debezium position (a reset leaves an empty map).
connect_has_offsets() {
  [[ -s $CONNECT_OFFSETS ]] && grep -aq '"lsn' -- "$CONNECT_OFFSETS"
}

# The highest LSN (a number) in the offsets file: its values are JSON text.
connect_offsets_lsn() {
  grep -ao '"lsn[a-z_]*":[0-9]*' -- "$CONNECT_OFFSETS" 2>/dev/null | grep -o '[0-9]*$' |
    sort -n | tail -n 1
}

# A new slot starts streaming where it is created: what was committed before it is the
# outbox-relay's hand-over (outbox/cdc.py), which runs again once its record is gone.
connect_reset_handover() {
  local out
  out=$(connect_psql -f - <<'SQL'
SELECT 'DELETE FROM relay_handover WHERE slot_name = ' || quote_literal(:'slot')
 WHERE to_regclass('public.relay_handover') IS NOT NULL \gexec
SQL
  ) || die "connect: cannot reset the hand-over of slot $DEBEZIUM_SLOT: $out"
}

# Connect's offsets (Debezium's LSN) and the replication slot are one piece of state.
# Offsets from another slot make the task fail ("... is no longer available on the
# server") or skip changes; a slot without its offsets is read from the current WAL
# position, skipping what was committed while nothing streamed. So, before a start:
#   no slot                       the offsets (if any) belonged to a dropped one: removed
#   slot of another database      refused
#   slot with offsets of another  both reset: the slot is dropped (Debezium makes a new
#   database/cluster, or none,    one), the offsets removed
#   or behind its position
# (offsets are written before Debezium confirms them to the slot, so a slot ahead of
# them was made anew since) and whenever a new slot is to be made, the hand-over record
# goes with the old one.
connect_check_offsets() {
  local out owner='' here slot_db confirmed lsn
  out=$(connect_psql -f - <<'SQL'
SELECT (SELECT system_identifier FROM pg_control_system())
    || ' ' || (SELECT oid FROM pg_database WHERE datname = current_database()) || '|'
    || coalesce((SELECT database || '|' || coalesce(confirmed_flush_lsn - '0/0', 0)
                   FROM pg_replication_slots WHERE slot_name = :'slot'), '|');
SQL
  ) || die "connect: cannot read replication slot $DEBEZIUM_SLOT: $out"
  IFS='|' read -r here slot_db confirmed <<<"$out"
  [[ -z $slot_db || $slot_db == "$PG_DATABASE" ]] ||
    die "connect: replication slot $DEBEZIUM_SLOT belongs to database $slot_db, not $PG_DATABASE; set another PREQUAL_DEBEZIUM_SLOT, or drop it: PREQUAL_PG_DATABASE=$slot_db $0 drop-slot"
  if [[ -r $CONNECT_OFFSETS_OWNER ]]; then owner=$(<"$CONNECT_OFFSETS_OWNER"); fi
  if [[ -z $slot_db ]]; then
    if connect_has_offsets; then
      info "connect: no slot $DEBEZIUM_SLOT: removing Connect's offsets (they were a dropped slot's)"
    fi
    rm -f -- "$CONNECT_OFFSETS"
    connect_reset_handover
  elif ! connect_has_offsets || [[ $owner != "$here" ]] ||
    { lsn=$(connect_offsets_lsn) && ((${lsn:-0} < ${confirmed:-0})); }; then
    info "connect: Connect's offsets for slot $DEBEZIUM_SLOT are missing, another database's or older than the slot: dropping the slot too; the outbox-relay hand-over publishes what was committed meanwhile"
    out=$(connect_psql -f - <<<"SELECT pg_drop_replication_slot(:'slot');") ||
      die "connect: cannot drop replication slot $DEBEZIUM_SLOT (does another Connect read it?): $out"
    rm -f -- "$CONNECT_OFFSETS"
    connect_reset_handover
  fi
  printf '%s\n' "$here" >"$CONNECT_OFFSETS_OWNER"
}

connect_resolve_libs() {
  mvn_resolve_libs connect "$CONNECT_POM" "$CONNECT_DIR" "$CONNECT_LIBS" "$CONNECT_STAMP" \
    "$CONNECT_LOG"
}

# The broker Connect bootstraps from: the single node, or the cluster's first node (the
# worker learns the other two from its metadata).
kafka_bootstrap_port() {
  if [[ $KAFKA_BROKERS == 3 ]]; then
    printf '%s' "${KAFKA_NODE_PORTS[0]}"
  else
    printf '%s' "$SINGLE_KAFKA_PORT"
  fi
}

# A template of infra/debezium/ rendered with this script's values, to stdout. Other
# PREQUAL_* variables (e.g. PREQUAL_DEBEZIUM_HEARTBEAT_INTERVAL_MS) come from the
# environment or render.sh's defaults. The password is never rendered (see connect_start).
connect_render() { # TEMPLATE
  PREQUAL_INFRA_DIR=$INFRA_DIR PREQUAL_PG_HOST=$PG_HOST PREQUAL_PG_PORT=$PG_PORT \
    PREQUAL_PG_USER=$PG_USER \
    PREQUAL_PG_DATABASE=$PG_DATABASE PREQUAL_KAFKA_PORT=$(kafka_bootstrap_port) \
    PREQUAL_TOPIC_REPLICATION_FACTOR=${PREQUAL_TOPIC_REPLICATION_FACTOR:-$KAFKA_BROKERS} \
    PREQUAL_CONNECT_PORT=$CONNECT_PORT PREQUAL_DEBEZIUM_SLOT=$DEBEZIUM_SLOT \
    PREQUAL_DEBEZIUM_PUBLICATION=$DEBEZIUM_PUBLICATION \
    PREQUAL_DEBEZIUM_POLL_INTERVAL_MS=$DEBEZIUM_POLL_INTERVAL_MS \
    prequal_render "$DEBEZIUM_DIR/$1"
}

# Rendered on every start from the templates in infra/debezium/, so env changes take
# effect. Owner-only, though the connector file holds no password, only the reference
# ${env:PREQUAL_PG_PASSWORD} that the worker resolves (connect_start).
connect_write_config() {
  local template out
  for template in connect-standalone.properties outbox-connector.json; do
    case $template in
      *.json) out=$CONNECT_CONNECTOR ;;
      *) out=$CONNECT_CONF ;;
    esac
    (
      umask 077
      connect_render "$template" >"$out.tmp"
    ) 2>>"$CONNECT_LOG" || fail connect "rendering $DEBEZIUM_DIR/$template" "$CONNECT_LOG"
    mv -f -- "$out.tmp" "$out"
  done
}

connect_start() {
  local i
  rm -f -- "$CONNECT_PID"
  printf '\n===== %s start (local.sh) =====\n' "$(date -Is)" >>"$CONNECT_LOG"
  # Same launch as the broker (see kafka_start): own session, pid written by the shell
  # that execs java, stdio into the log. ConnectStandalone creates the connector from
  # the JSON file given after the worker config. The worker resolves the connector's
  # "${env:PREQUAL_PG_PASSWORD}" (config.providers in connect-standalone.properties) from
  # its own environment, so the password is in no file and in no config Connect shows.
  # shellcheck disable=SC2016 # $$ and "$@" are for the inner shell
  PREQUAL_PG_PASSWORD=$PG_PASSWORD setsid bash -c 'printf "%s\n" "$$" >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' \
    "$CONNECT_PID" \
    java -Xms"$CONNECT_HEAP" -Xmx"$CONNECT_HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CONNECT_LOG4J" \
    -cp "$CONNECT_LIBS/*" org.apache.kafka.connect.cli.ConnectStandalone \
    "$CONNECT_CONF" "$CONNECT_CONNECTOR" \
    </dev/null >>"$CONNECT_LOG" 2>&1 9>&- &
  for ((i = 0; i < 50; i++)); do
    [[ -s $CONNECT_PID ]] && return 0
    sleep 0.05
  done
  fail connect "launching the Connect worker (no pid file)" "$CONNECT_LOG"
}

# Does the running worker PID resolve ${env:PREQUAL_PG_PASSWORD} to this environment's
# password? The connector file cannot tell (it holds the reference only).
connect_worker_has_password() { # PID
  local entry
  while IFS= read -r -d '' entry; do
    if [[ $entry == PREQUAL_PG_PASSWORD=* ]]; then
      [[ ${entry#*=} == "$PG_PASSWORD" ]]
      return
    fi
  done 2>/dev/null <"/proc/$1/environ"
  return 1
}

# Like fail, but first stops the worker (when PID is given) and prints the errors logged
# since its start: the tail alone would show only the shutdown that follows them.
connect_fail() { # STEP [PID]
  local errors
  errors=$(awk '/^===== .* start \(local\.sh\) =====$/ { buf = "" }
    / ERROR |^Caused by: / { buf = buf "  ! " $0 "\n" } END { printf "%s", buf }' "$CONNECT_LOG" 2>/dev/null |
    tail -n 15) || errors=
  if [[ -n ${2:-} ]]; then group_kill connect "$2" "$CONNECT_PID"; fi
  if [[ -n $errors ]]; then
    printf 'connect: errors logged since the worker started:\n%s\n' "$errors" >&2
  fi
  fail connect "$1" "$CONNECT_LOG"
}

# Ready means the connector and its task are RUNNING: only then is the slot (and the
# publication) created and changes are being streamed.
connect_wait_ready() { # PID DEADLINE_SECONDS
  local pid=$1 deadline=$2 json summary rc stable=0
  until port_open 127.0.0.1 "$CONNECT_PORT"; do
    if ! proc_alive "$pid"; then
      rm -f -- "$CONNECT_PID"
      connect_fail "worker start-up (process $pid exited)"
    fi
    if ((SECONDS >= deadline)); then
      connect_fail "waiting for port 127.0.0.1:$CONNECT_PORT (${CONNECT_TIMEOUT}s)" "$pid"
    fi
    sleep 0.25
  done
  while :; do
    json=$(connect_rest "$CONNECT_PORT" "/connectors/$CONNECTOR_NAME/status") || json=
    rc=0
    summary=$(prequal_connector_state "$json") || rc=$?
    # RUNNING is reported before the task has read anything; a task that cannot process
    # what waits in the slot (or cannot reach the database) fails within a second or so,
    # so RUNNING must hold for a second before we call it ready.
    if ((rc == 0)); then
      ((stable == 0)) || return 0
      stable=1
      sleep 1
      continue
    fi
    stable=0
    if ((rc == 1)); then
      connect_fail "connector $CONNECTOR_NAME ($summary)" "$pid"
    fi
    if ! proc_alive "$pid"; then
      rm -f -- "$CONNECT_PID"
      connect_fail "worker start-up (process $pid exited)"
    fi
    if ((SECONDS >= deadline)); then
      connect_fail "waiting for connector $CONNECTOR_NAME to run (${CONNECT_TIMEOUT}s; $summary)" \
        "$pid"
    fi
    sleep 0.25
  done
}

connect_up() {
  local t0 pid port deadline json rc=0
  t0=$(now_us)
  deadline=$((SECONDS + CONNECT_TIMEOUT))
  if pid=$(connect_pid); then
    port=$(connect_running_port) || port=$CONNECT_PORT
    [[ $port == "$CONNECT_PORT" ]] ||
      die "connect: running (pid $pid) on port $port, not PREQUAL_CONNECT_PORT=$CONNECT_PORT; run: $0 restart connect"
    # Reusing a worker that reads another database (or slot) would stream the wrong one.
    [[ $(connect_render outbox-connector.json 2>/dev/null) == "$(<"$CONNECT_CONNECTOR")" ]] ||
      die "connect: running (pid $pid) with another connector configuration than this environment's (database $PG_DATABASE, slot $DEBEZIUM_SLOT); run: $0 restart connect"
    connect_worker_has_password "$pid" ||
      die "connect: running (pid $pid) with another database password than this environment's PREQUAL_PG_PASSWORD; run: $0 restart connect"
    json=$(connect_rest "$CONNECT_PORT" "/connectors/$CONNECTOR_NAME/status") || json=
    prequal_connector_state "$json" >/dev/null || rc=$?
    if ((rc == 0)); then
      info "connect: already running (pid $pid, port $CONNECT_PORT)"
      return 0
    fi
    if ((rc == 1)); then
      # E.g. the task gave up while PostgreSQL was down for long: restart what failed.
      info "connect: connector $CONNECTOR_NAME has failed; restarting it"
      connect_rest "$CONNECT_PORT" \
        "/connectors/$CONNECTOR_NAME/restart?includeTasks=true&onlyFailed=true" -X POST \
        >/dev/null || true
    fi
    # Otherwise still starting (or restarting): wait for it.
  else
    if port_open 127.0.0.1 "$CONNECT_PORT"; then
      die "connect: port 127.0.0.1:$CONNECT_PORT is already in use by another process"
    fi
    connect_check_outbox
    mkdir -p -- "$CONNECT_DIR" "$LOG_DIR" "$RUN_DIR"
    connect_check_offsets
    touch -- "$CONNECT_LOG"
    connect_resolve_libs
    connect_write_config
    connect_start
    pid=$(<"$CONNECT_PID")
  fi
  connect_wait_ready "$pid" "$deadline"
  info "connect: ready in $(since "$t0") (pid $pid, port $CONNECT_PORT, connector $CONNECTOR_NAME, slot $DEBEZIUM_SLOT)"
}

connect_down() {
  local pid t0
  t0=$(now_us)
  if ! pid=$(connect_pid); then
    rm -f -- "$CONNECT_PID"
    info "connect: already stopped"
    return 0
  fi
  # SIGTERM: the worker stops the task and flushes its offsets (the slot's position).
  group_kill connect "$pid" "$CONNECT_PID"
  info "connect: stopped in $(since "$t0")"
}

connect_status() {
  local pid port json summary
  if pid=$(connect_pid); then
    port=$(connect_running_port) || port=$CONNECT_PORT
    if json=$(connect_rest "$port" "/connectors/$CONNECTOR_NAME/status"); then
      summary=$(prequal_connector_state "$json") || true
      info "connect: running (pid $pid, port $port, $summary)"
    else
      info "connect: running (pid $pid, port $port) but not answering yet"
    fi
  else
    info "connect: stopped"
  fi
}

# Forgets the CDC position: the slot (which pins WAL while it exists), the publication
# and the worker's offsets, which only make sense together with that slot. Slot names are
# cluster-wide, so the slot goes whichever database it was made in; the publication is
# dropped in PREQUAL_PG_DATABASE.
drop_slot() {
  local pid out i slot_db pub_count slot_msg pub_msg
  if pid=$(connect_pid); then
    die "connect is running (pid $pid) and uses slot $DEBEZIUM_SLOT; stop it first: $0 down connect"
  fi
  PG_BIN=$(find_pg_bindir) || die "postgres: no PostgreSQL binaries found"
  pg_query_ok ||
    die "drop-slot: PostgreSQL does not answer on $PG_HOST:$PG_PORT (database $PG_DATABASE); start it: $0 up postgres"
  for ((i = 0; ; i++)); do
    if out=$(PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -w -t -A \
      -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DATABASE" \
      -v slot="$DEBEZIUM_SLOT" -v pub="$DEBEZIUM_PUBLICATION" -f - 2>&1 <<'SQL'
SET client_min_messages = warning;
SELECT coalesce((SELECT database FROM pg_replication_slots WHERE slot_name = :'slot'), '')
    || '|' || (SELECT count(*) FROM pg_publication WHERE pubname = :'pub');
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :'slot';
DROP PUBLICATION IF EXISTS :"pub";
SQL
    ); then
      break
    fi
    # Right after a worker stops, its walsender may hold the slot for a moment longer.
    if [[ $out == *"is active for PID"* ]] && ((i < 50)); then
      sleep 0.2
      continue
    fi
    die "drop-slot: $out"
  done
  # offsets.dat is where all slots' offsets went before they had a file each; no worker
  # reads it any more.
  rm -f -- "$CONNECT_OFFSETS" "$CONNECT_OFFSETS_OWNER" "$CONNECT_DIR/offsets.dat"
  out=${out%%$'\n'*}
  slot_db=${out%%|*}
  pub_count=${out##*|}
  if [[ -n $slot_db ]]; then
    slot_msg="dropped replication slot $DEBEZIUM_SLOT (database $slot_db)"
  else
    slot_msg="no replication slot $DEBEZIUM_SLOT"
  fi
  if [[ $pub_count == 0 ]]; then
    pub_msg="no publication $DEBEZIUM_PUBLICATION in database $PG_DATABASE"
  else
    pub_msg="dropped publication $DEBEZIUM_PUBLICATION (database $PG_DATABASE)"
  fi
  info "drop-slot: $slot_msg; $pub_msg; removed Connect's offsets"
}

# ------------------------------------------------------------------------- dispatch

service_op() { # OP SERVICE
  case $2 in
    postgres) "pg_$1" ;;
    kafka) "kafka_$1" ;;
    connect) "connect_$1" ;;
    *) die "unknown service '$2'" ;;
  esac
}

in_list() { # WORD LIST...
  local w=$1
  shift
  [[ " $* " == *" $w "* ]]
}

main() {
  local cmd=${1:-} svc want=() selected=() reversed=() starting=() i
  shift || true
  case $cmd in
    up | down | restart | status) ;;
    drop-slot)
      (($# == 0)) || die "drop-slot takes no arguments"
      ;;
    -h | --help | help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      exit 2
      ;;
  esac

  [[ $KAFKA_BROKERS == 1 || $KAFKA_BROKERS == 3 ]] ||
    die "PREQUAL_KAFKA_BROKERS=$KAFKA_BROKERS: expected 1 (one node) or 3 (a cluster)"
  if [[ $KAFKA_BROKERS == 3 ]]; then
    ((${#KAFKA_NODE_PORTS[@]} == 3 && ${#KAFKA_NODE_CONTROLLER_PORTS[@]} == 3)) ||
      die "PREQUAL_KAFKA_PORTS and PREQUAL_KAFKA_CONTROLLER_PORTS must name 3 ports each"
  fi
  KAFKA_NAMED=0
  for svc in "$@"; do
    case $svc in
      postgres | kafka | connect) want+=("$svc") ;;
      kafka-[123])
        [[ $KAFKA_BROKERS == 3 ]] || die "$svc is a node of the cluster: set PREQUAL_KAFKA_BROKERS=3"
        KAFKA_NAMED=1
        KAFKA_TARGETS+=("${svc#kafka-}")
        want+=(kafka)
        ;;
      *) die "unknown service '$svc' (expected: ${ALL_SERVICES[*]}, or kafka-1..3 of the cluster)" ;;
    esac
  done
  if ((!KAFKA_NAMED)); then
    if [[ $KAFKA_BROKERS == 3 ]]; then KAFKA_TARGETS=("${KAFKA_NODE_IDS[@]}"); else KAFKA_TARGETS=(0); fi
  fi
  kafka_node "${KAFKA_TARGETS[0]}"

  if [[ $cmd == status ]]; then
    for svc in "${ALL_SERVICES[@]}"; do service_op status "$svc"; done
    exit 0
  fi

  # Serialise concurrent up/down (parallel test workers, make -j) on the same infra dir.
  mkdir -p -- "$RUN_DIR" "$LOG_DIR"
  exec 9>"$LOCK_FILE"
  flock -w 300 9 || die "another infra/local.sh holds $LOCK_FILE for more than 300s"

  if [[ $cmd == drop-slot ]]; then
    drop_slot
    exit 0
  fi

  if ((${#want[@]} == 0)); then
    want=("${DEFAULT_SERVICES[@]}")
    # Plain down (and restart) also covers a running connect, so nothing is left behind.
    if [[ $cmd != up ]] && connect_pid >/dev/null; then want+=(connect); fi
  fi
  # Canonical order regardless of how they were named on the command line.
  for svc in "${ALL_SERVICES[@]}"; do
    if in_list "$svc" "${want[@]}"; then selected+=("$svc"); fi
  done
  for ((i = ${#selected[@]} - 1; i >= 0; i--)); do reversed+=("${selected[i]}"); done
  # connect needs the other two: up connect starts (or reuses) them first.
  for svc in "${ALL_SERVICES[@]}"; do
    if in_list "$svc" "${selected[@]}" || { in_list connect "${selected[@]}" && [[ $svc != connect ]]; }; then
      starting+=("$svc")
    fi
  done

  case $cmd in
    up)
      ensure_prereqs "${starting[@]}"
      for svc in "${starting[@]}"; do service_op up "$svc"; done
      ;;
    down)
      for svc in "${reversed[@]}"; do service_op down "$svc"; done
      ;;
    restart)
      ensure_prereqs "${starting[@]}"
      for svc in "${reversed[@]}"; do service_op down "$svc"; done
      for svc in "${starting[@]}"; do service_op up "$svc"; done
      ;;
  esac
}

main "$@"
