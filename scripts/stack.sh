#!/usr/bin/env bash
# The full stack on the local services: migrations, then the outbox relay, the projector, the
# expirer of unpaid orders and the API workers, until Ctrl-C (which stops them all).
#
#   FLASHORDER_DATABASE_URL, FLASHORDER_REDIS_URL, FLASHORDER_KAFKA_BOOTSTRAP   must be set
#   STACK_WORKERS (default 2)   API worker processes
set -euo pipefail
cd "$(dirname "$0")/.."
: "${FLASHORDER_DATABASE_URL:?set FLASHORDER_DATABASE_URL (make stack does)}"
: "${FLASHORDER_REDIS_URL:?set FLASHORDER_REDIS_URL}"
: "${FLASHORDER_KAFKA_BOOTSTRAP:?set FLASHORDER_KAFKA_BOOTSTRAP}"
bin=.venv/bin
mkdir -p .data/logs

# Once, before anything else: concurrent first migrations would race.
"$bin/flashorder" migrate

pids=()
stop() {
  trap - INT TERM EXIT
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$bin/flashorder" relay >>.data/logs/relay.log 2>&1 &
pids+=($!)
"$bin/flashorder" projector >>.data/logs/projector.log 2>&1 &
pids+=($!)
"$bin/flashorder" expirer >>.data/logs/expirer.log 2>&1 &
pids+=($!)
echo "relay, projector and expirer running (logs in .data/logs/)"
"$bin/flashorder" serve --workers "${STACK_WORKERS:-2}" &
pids+=($!)
wait -n "${pids[@]}"
