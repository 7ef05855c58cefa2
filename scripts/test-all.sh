#!/usr/bin/env bash
# `make test`: the fault suite (tests/faults) runs beside the rest of the suite, in a pytest
# process of its own. Its tests spend most of their time waiting (for a broker to restart, a
# lease to run out, a private PostgreSQL to come back) and use PostgreSQL, Redis and RabbitMQ
# servers of their own, so the two share nothing but the CPU. The rest prints as it runs; the
# fault suite's output follows it. The exit status is the first failure's, 0 when both passed.
#
# TEST_PARALLEL=0 runs the two one after the other. Extra arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${BIN:-.venv/bin}/python

if [ "${TEST_PARALLEL:-1}" = "0" ]; then
    "$python" -m pytest --ignore=tests/faults "$@" && "$python" -m pytest tests/faults "$@"
    exit $?
fi

log=$(mktemp "${TMPDIR:-/tmp}/etl_app-faults.XXXXXX")
"$python" -m pytest tests/faults "$@" >"$log" 2>&1 &
faults=$!
trap 'kill -INT "$faults" 2>/dev/null; wait "$faults"; rm -f "$log"; exit 130' INT TERM
echo "the fault suite (tests/faults) runs beside this one; its output follows at the end"
"$python" -m pytest --ignore=tests/faults "$@"
rest=$?
if kill -0 "$faults" 2>/dev/null; then
    echo "waiting for the fault suite (tests/faults) to end"
fi
wait "$faults"
fault_status=$?
trap - INT TERM
echo
echo "================================ tests/faults ================================"
cat "$log"
rm -f "$log"
if [ "$rest" -ne 0 ]; then exit "$rest"; fi
exit "$fault_status"
