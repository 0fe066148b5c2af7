#!/usr/bin/env bash
# Builds and runs the cutover driver benchmark (tests/bench/cutover.c)
# against a throw-away PowerDNS and etcd on 127.0.0.1, then stops them.
#   ./tests/bench/cutover.sh [ROUNDS]        (default 20)
# Uses servers that are already running when MERIDIAN_TEST_PDNS_API and
# MERIDIAN_TEST_ETCD are set. Prints figures; asserts nothing about speed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 --target meridian-controller_lib >/dev/null
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -Wall -Wextra -Werror -Iinclude -Icontroller tests/bench/cutover.c \
    build/libmeridian-controller_lib.a build/libmeridian.a build/libllhttp.a \
    $(pkg-config --cflags --libs libuv libcurl jansson libcrypto libpq) -lm -o build/bench_cutover

if [ -z "${MERIDIAN_TEST_PDNS_API:-}" ] || [ -z "${MERIDIAN_TEST_ETCD:-}" ]; then
    . tests/lib/servers.sh
    MRD_TMP=$(mktemp -d /tmp/meridian-bench.XXXXXX)
    chmod 755 "$MRD_TMP"
    export MRD_TMP
    trap 'mrd_servers_stop; rm -rf "$MRD_TMP"' EXIT
    mrd_servers_start pdns etcd
fi
./build/bench_cutover "${1:-20}"
