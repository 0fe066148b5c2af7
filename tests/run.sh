#!/usr/bin/env bash
# Meridian's whole test run: installs what is missing, builds (normal,
# sanitizer, fuzz), starts a throw-away PostgreSQL, PowerDNS and etcd on
# 127.0.0.1, runs every test with ctest (the end-to-end tests, label e2e,
# only in the normal build; every fuzz corpus is replayed there by the
# fuzz_replay.* tests), runs each fuzz target for a bounded time (new inputs
# it finds are kept, see MERIDIAN_FUZZ_OUT), stops the servers it started,
# and exits non-zero on any failure.
#
#   ./tests/run.sh              everything
#   MERIDIAN_NO_ASAN=1          skip the sanitizer build (quicker local loop)
#   MERIDIAN_FUZZ_SECONDS=N     seconds per fuzz target (default 20; 0 skips);
#                               11 targets: about 4 minutes in all
#   MERIDIAN_FUZZ_OUT=DIR       where new inputs and crashes go (default
#                               build-fuzz/new-inputs/<UTC time>; kept)
#   ./tests/run.sh -R regex     extra arguments go to ctest
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. tests/lib/deps.sh
. tests/lib/servers.sh

mrd_install_deps
JOBS=$(nproc 2>/dev/null || echo 2)
FUZZ_SECONDS=${MERIDIAN_FUZZ_SECONDS:-20}

echo "== build" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$JOBS"
if [ -z "${MERIDIAN_NO_ASAN:-}" ]; then
    echo "== build (address and undefined-behaviour sanitizers)" >&2
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMERIDIAN_SANITIZE=ON >/dev/null
    cmake --build build-asan -j"$JOBS"
fi

MRD_TMP=$(mktemp -d /tmp/meridian-test.XXXXXX)
chmod 755 "$MRD_TMP"
export MRD_TMP MERIDIAN_TEST_TMP=$MRD_TMP
cleanup() {
    mrd_servers_stop
    rm -rf "$MRD_TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mrd_servers_start pg pdns etcd

status=0
echo "== tests" >&2
(cd build && ctest --output-on-failure --timeout 600 "$@") || status=1
if [ -z "${MERIDIAN_NO_ASAN:-}" ]; then
    echo "== tests under sanitizers" >&2
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    # the end-to-end tests (label e2e) ran above; their servers are the same
    # code paths the sanitizer build's unit and integration tests cover
    (cd build-asan && ctest --output-on-failure --timeout 600 -LE e2e "$@") || status=1
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi

if [ "$FUZZ_SECONDS" != 0 ] && ls tests/fuzz/fuzz_*.c >/dev/null 2>&1; then
    echo "== fuzz (${FUZZ_SECONDS}s per target)" >&2
    CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DMERIDIAN_FUZZ=ON \
        -DMERIDIAN_TESTS=OFF -DCMAKE_C_COMPILER=clang >/dev/null
    cmake --build build-fuzz -j"$JOBS"
    FUZZ_OUT=${MERIDIAN_FUZZ_OUT:-$ROOT/build-fuzz/new-inputs/$(date -u +%Y%m%dT%H%M%SZ)}
    echo "== fuzz output (new inputs, crashes): $FUZZ_OUT" >&2
    for src in tests/fuzz/fuzz_*.c; do
        name=$(basename "$src" .c)
        short=${name#fuzz_}
        # new inputs go to the first directory; the seeds are only read
        new=$FUZZ_OUT/$short && mkdir -p "$new"
        echo "-- $name" >&2
        ./build-fuzz/tests/fuzz/"$name" -max_total_time="$FUZZ_SECONDS" -max_len=65536 \
            -print_final_stats=1 -artifact_prefix="$FUZZ_OUT/$short-" "$new" \
            "tests/fuzz/corpus/$short" >"$FUZZ_OUT/$name.log" 2>&1 || {
            tail -50 "$FUZZ_OUT/$name.log" >&2
            echo "   crash input: $(ls "$FUZZ_OUT/$short-"* 2>/dev/null | head -1)" >&2
            echo "   to keep it fixed: add it to tests/fuzz/corpus/$short/ with the fix" >&2
            status=1
        }
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$FUZZ_OUT/$name.log")
        echo "   ${execs:-?} executions, $(find "$new" -type f | wc -l) new inputs in $new" >&2
    done
fi

if [ "$status" = 0 ]; then echo "== all tests passed" >&2; else echo "== FAILED" >&2; fi
exit "$status"
