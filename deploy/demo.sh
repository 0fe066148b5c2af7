#!/usr/bin/env bash
# Meridian on one machine: three regions on loopback, a planned switchover,
# an unplanned failover of the database, and a leader controller failover.
#
# What it does, step by step (each step prints what it does):
#   1. installs the Debian packages that are missing (tests/lib/deps.sh)
#   2. builds Meridian in build/ (cmake)
#   3. starts a throw-away PostgreSQL store on 127.0.0.1 (tests/lib/servers.sh)
#   4. deploy/demo.py: PostgreSQL in eu (primary), us and ap (streaming
#      replicas), an agent and a controller per region; a client writing every
#      20 ms; a switchover eu -> us; SIGKILL of us's node and the automatic
#      failover; SIGKILL of the leader controller and the new leader
#   5. stops everything it started and removes its files (also on Ctrl-C or error)
#
#   MERIDIAN_DEMO_PROFILE=default ./deploy/demo.sh   the default policy (slower, wider margins)
#   MERIDIAN_DEMO_LEASE_ONLY=1 ./deploy/demo.sh      only the controllers' leader failover
#
#   ./deploy/demo.sh
#   MERIDIAN_DEMO_HOLD=1 ./deploy/demo.sh    keep it running at the end until Ctrl-C
#   MERIDIAN_DEMO_KEEP=1 ./deploy/demo.sh    keep the logs and configs (path printed)
#   MERIDIAN_DEMO_NO_BUILD=1 MERIDIAN_BUILD_DIR=DIR ./deploy/demo.sh   use an existing build
#
# Needs root (PostgreSQL runs as user postgres). Touches nothing outside its
# temp dir and build/, and listens on 127.0.0.1 only.
#
# Layout for what comes next (primary/replicas/agents, a real failover): each
# part of the scenario is a demo_* function; the main sequence at the bottom
# calls them in order.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. tests/lib/deps.sh
. tests/lib/servers.sh

PY=/usr/bin/python3
BUILD=${MERIDIAN_BUILD_DIR:-$ROOT/build}
LEASE_TTL_MS=${MERIDIAN_DEMO_TTL_MS:-2000}
REGIONS="eu us ap"
OPERATOR_TOKEN=demo-operator-token-0123456789
VIEWER_TOKEN=demo-viewer-token-0123456789
AGENT_TOKEN=demo-agent-token-0123456789

declare -A CTL_PID=() CTL_URL=() CTL_CFG=() CTL_LOG=()
CTL_NAMES=()

if [ -t 1 ]; then BOLD=$'\033[1m' DIM=$'\033[2m' OFF=$'\033[0m'; else BOLD='' DIM='' OFF=''; fi
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$OFF"; }
info() { printf '   %s\n' "$*"; }
run() { printf '   %s$ %s%s\n' "$DIM" "$*" "$OFF"; "$@"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { "$PY" -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$2"; }

# ---------------------------------------------------------------- cleanup

demo_cleanup() {
    local status=$? name pid
    trap - EXIT INT TERM
    step "stopping everything the demo started"
    for name in "${CTL_NAMES[@]}"; do
        pid=${CTL_PID[$name]:-}
        [ -n "$pid" ] || continue
        if kill -TERM "$pid" 2>/dev/null; then info "stopped $name (pid $pid)"; fi
    done
    for name in "${CTL_NAMES[@]}"; do
        pid=${CTL_PID[$name]:-}
        [ -n "$pid" ] || continue
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    mrd_servers_stop && info "stopped the store"
    if [ -n "${MRD_TMP:-}" ] && [ -d "$MRD_TMP" ]; then
        if [ -n "${MERIDIAN_DEMO_KEEP:-}" ] || [ "$status" != 0 ]; then
            info "logs and configs kept in $MRD_TMP"
        else
            rm -rf "$MRD_TMP"
        fi
    fi
    exit "$status"
}

# ---------------------------------------------------------------- steps

demo_install() {
    step "1. installing missing packages (if any)"
    mrd_install_deps
    info "all packages present"
}

demo_build() {
    if [ -n "${MERIDIAN_DEMO_NO_BUILD:-}" ]; then
        step "2. using the build in $BUILD"
        [ -x "$BUILD/meridian-controller" ] || die "$BUILD/meridian-controller does not exist"
        return 0
    fi
    step "2. building Meridian in $BUILD"
    run cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    run cmake --build "$BUILD" -j2 >/dev/null
    [ -x "$BUILD/meridian-controller" ] || die "build/meridian-controller was not built"
    info "built $BUILD/meridian-controller"
}

demo_store() {
    step "3. starting a throw-away PostgreSQL store"
    MRD_TMP=$(mktemp -d /tmp/meridian-demo.XXXXXX)
    chmod 755 "$MRD_TMP"
    export MRD_TMP
    mrd_servers_start pg 2>&1   # exports MERIDIAN_TEST_PG, _PORT, _DATA
    STORE=$MERIDIAN_TEST_PG
    info "store: $STORE"
}

# demo_controller NAME REGION: writes NAME's config and starts it.
demo_controller() {
    local name=$1 region=$2 port cfg log
    mrd_free_port; port=$MRD_PORT
    cfg=$MRD_TMP/$name.json
    log=$MRD_TMP/$name.log
    cat >"$cfg" <<JSON
{
  "name": "$name",
  "region": "$region",
  "listen": "127.0.0.1:$port",
  "advertise_url": "http://127.0.0.1:$port",
  "store": "$STORE",
  "lease_ttl_ms": $LEASE_TTL_MS,
  "log_level": "info",
  "tokens": [
    {"name": "ops", "token": "$OPERATOR_TOKEN", "role": "operator"},
    {"name": "view", "token": "$VIEWER_TOKEN", "role": "viewer"},
    {"name": "agents", "token": "$AGENT_TOKEN", "role": "agent"}
  ]
}
JSON
    "$BUILD/meridian-controller" --config "$cfg" >>"$log" 2>&1 &
    CTL_PID[$name]=$!
    CTL_URL[$name]=http://127.0.0.1:$port
    CTL_CFG[$name]=$cfg
    CTL_LOG[$name]=$log
    info "$name (region $region) on ${CTL_URL[$name]}, pid ${CTL_PID[$name]}, log $log"
}

# demo_wait_healthy NAME: waits (bounded) for GET /v1/health.
demo_wait_healthy() {
    local name=$1
    for _ in $(seq 1 200); do
        curl -sf "${CTL_URL[$name]}/v1/health" >/dev/null 2>&1 && return 0
        kill -0 "${CTL_PID[$name]}" 2>/dev/null || { tail -20 "${CTL_LOG[$name]}" >&2; die "$name exited"; }
        sleep 0.1
    done
    tail -20 "${CTL_LOG[$name]}" >&2
    die "$name did not answer /v1/health within 20 s"
}

demo_controllers() {
    step "4. starting three controllers (lease TTL ${LEASE_TTL_MS} ms, renewed every $((LEASE_TTL_MS / 3)) ms)"
    local r
    for r in $REGIONS; do
        CTL_NAMES+=("ctl-$r")
        demo_controller "ctl-$r" "$r"
    done
    for r in $REGIONS; do demo_wait_healthy "ctl-$r"; done
    info "all three answer /v1/health"
}

# Prints one line per running controller from its /v1/status and, on the
# last line, "LEADER <name> <term>" when exactly one claims leadership and all
# agree (for the caller to parse; not shown).
STATUS_PY='
import json, sys, urllib.request
token, rows, claims, views = sys.argv[1], [], [], set()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for arg in sys.argv[2:]:
    name, url = arg.split("=", 1)
    req = urllib.request.Request(url + "/v1/status", headers={"Authorization": "Bearer " + token})
    try:
        st = json.load(opener.open(req, timeout=2))
    except Exception as e:
        rows.append((name, "-", "-", "-", "no answer (%s)" % type(e).__name__))
        continue
    me, ld = st["controller"], st.get("leader") or {}
    if me["is_leader"]:
        claims.append((name, me["term"]))
    views.add((ld.get("name"), ld.get("term")))
    rows.append((name, me["region"], "LEADER" if me["is_leader"] else "follower",
                 str(me["term"]) if me["is_leader"] else "-", "%s (term %s)" % (ld.get("name"), ld.get("term")) if ld else "none"))
print("   %-8s %-6s %-9s %-5s %s" % ("name", "region", "role", "term", "sees as leader"))
for r in rows:
    print("   %-8s %-6s %-9s %-5s %s" % r)
if len(claims) == 1 and views == {claims[0]}:
    print("LEADER %s %s" % claims[0])
'

# demo_status [NAME...]: prints the table; sets LEADER and TERM when agreed.
demo_status() {
    local args=() name out names=("$@")
    [ $# -gt 0 ] || names=("${CTL_NAMES[@]}")
    for name in "${names[@]}"; do args+=("$name=${CTL_URL[$name]}"); done
    out=$("$PY" -c "$STATUS_PY" "$VIEWER_TOKEN" "${args[@]}")
    printf '%s\n' "$out" | grep -v '^LEADER '
    read -r _ LEADER TERM <<<"$(printf '%s\n' "$out" | grep '^LEADER ' || echo "- - -")"
}

# demo_wait_leader MIN_TERM SECONDS NAME...: waits until NAMEs agree on a
# leader with term > MIN_TERM; sets LEADER and TERM.
demo_wait_leader() {
    local min=$1 secs=$2 args=() name out
    shift 2
    for name in "$@"; do args+=("$name=${CTL_URL[$name]}"); done
    for _ in $(seq 1 $((secs * 50))); do
        out=$("$PY" -c "$STATUS_PY" "$VIEWER_TOKEN" "${args[@]}" | grep '^LEADER ' || true)
        if [ -n "$out" ]; then
            read -r _ LEADER TERM <<<"$out"
            [ "$TERM" -gt "$min" ] && return 0
        fi
        sleep 0.02
    done
    die "no agreed leader with term > $min within $secs s"
}

demo_show_leader() {
    step "5. who leads? (GET /v1/status on every controller)"
    info "curl -s -H 'Authorization: Bearer $VIEWER_TOKEN' ${CTL_URL[${CTL_NAMES[0]}]}/v1/status"
    demo_wait_leader 0 30 "${CTL_NAMES[@]}"
    demo_status
    info "leader: $LEADER, term $TERM"
}

demo_kill_leader() {
    local old=$LEADER old_term=$TERM t0 t1 others=() name
    step "6. SIGKILL the leader $old (pid ${CTL_PID[$old]})"
    for name in "${CTL_NAMES[@]}"; do [ "$name" = "$old" ] || others+=("$name"); done
    t0=$(now)
    run kill -KILL "${CTL_PID[$old]}"
    wait "${CTL_PID[$old]}" 2>/dev/null || true
    CTL_PID[$old]=
    demo_wait_leader "$old_term" 30 "${others[@]}"
    t1=$(now)
    info "new leader $LEADER with term $TERM (was $old, term $old_term) after $(elapsed "$t0" "$t1") s"
    info "(the lease had to run out first: at most TTL + one renewal = $((LEASE_TTL_MS + LEASE_TTL_MS / 3)) ms)"
    demo_status "${others[@]}"
    KILLED=$old
}

demo_restart_killed() {
    local name=$KILLED cfg
    step "7. restarting $name: it comes back as a follower"
    cfg=${CTL_CFG[$name]}
    "$BUILD/meridian-controller" --config "$cfg" >>"${CTL_LOG[$name]}" 2>&1 &
    CTL_PID[$name]=$!
    demo_wait_healthy "$name"
    local want=$LEADER want_term=$TERM
    demo_wait_leader $((want_term - 1)) 30 "${CTL_NAMES[@]}"
    demo_status
    if [ "$LEADER" != "$want" ] || [ "$TERM" != "$want_term" ]; then
        die "leadership moved to $LEADER term $TERM after $name came back"
    fi
    info "$name follows $LEADER (term $TERM)"
}

demo_hold() {
    [ -n "${MERIDIAN_DEMO_HOLD:-}" ] || return 0
    step "running; press Ctrl-C to stop everything"
    local name
    for name in "${CTL_NAMES[@]}"; do info "$name ${CTL_URL[$name]} log ${CTL_LOG[$name]}"; done
    info "viewer token $VIEWER_TOKEN, operator token $OPERATOR_TOKEN"
    while true; do sleep 3600; done
}

# ---------------------------------------------------------------- main

trap demo_cleanup EXIT
trap 'exit 130' INT TERM
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL is started as user postgres)"
demo_install
demo_build
demo_store
if [ -n "${MERIDIAN_DEMO_LEASE_ONLY:-}" ]; then
    demo_controllers
    demo_show_leader
    demo_kill_leader
    demo_restart_killed
    demo_hold
else
    step "4. three regions with data, switchover and failover (deploy/demo.py)"
    MERIDIAN_BUILD_DIR=$BUILD "$PY" deploy/demo.py
fi
step "done"
