#!/usr/bin/env bash
# Run every prequal process in the foreground with its name before each log line.
# Ctrl-C (or SIGTERM) stops them all gracefully; if one dies, the others are stopped too.
# Expects the servers to be up and the database migrated (`make run` does both).
set -uo pipefail

processes=(command-api query-api query-projector outbox-relay credit-worker decision-worker)

pids=()
stop_all() {
  trap - INT TERM
  echo "[run] stopping ${#pids[@]} processes" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait
}
trap 'stop_all; exit 0' INT TERM

for name in "${processes[@]}"; do
  # The prefixing sed is in the same background job, so TERM reaches the process itself.
  "$name" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  echo "[run] started $name (pid $!)" >&2
done

wait -n
status=$?
echo "[run] a process exited (status $status); stopping the rest" >&2
stop_all
exit "$status"
