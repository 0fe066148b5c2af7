# Sourced by tests/run.sh and deploy/demo.sh. Starts throw-away servers on
# 127.0.0.1 in a directory under $MRD_TMP, each as its unprivileged user, and
# stops exactly the processes it started, by PID.
#
#   mrd_servers_start [pg] [pdns] [etcd]   exports MERIDIAN_TEST_* variables
#   mrd_servers_stop
#
# Ports are chosen free at run time (ports 2024 and 18081 are known taken).

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

# mrd_free_port: sets MRD_PORT to a free port below the kernel's ephemeral
# range (so that no outgoing connection takes it before the server binds
# it) that was not handed out before. Call it directly, not in $(...): the
# list of ports handed out lives in this shell.
MRD_PORTS_GIVEN=""
mrd_free_port() {
    local port
    port=$(MRD_PORTS_GIVEN="$MRD_PORTS_GIVEN" /usr/bin/python3 -c 'import os, random, socket
given = set(int(p) for p in os.environ.get("MRD_PORTS_GIVEN", "").split())
for _ in range(500):
    p = random.randrange(15000, 32000)
    if p in given or p in (2024, 18081):
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break')
    [ -n "$port" ] || return 1
    MRD_PORTS_GIVEN="$MRD_PORTS_GIVEN $port"
    MRD_PORT=$port
}

mrd_wait_port() { # port seconds
    local i
    for i in $(seq 1 $(($2 * 20))); do
        (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

mrd_start_pg() {
    local dir=$MRD_TMP/pg port
    mrd_free_port; port=$MRD_PORT
    mkdir -p "$dir" && chown postgres:postgres "$dir"
    runuser -u postgres -- "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres >"$MRD_TMP/pg-initdb.log" 2>&1
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -w -t 30 -l "$dir/log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null
    runuser -u postgres -- "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -qAt \
        -c "CREATE DATABASE meridian_test" >/dev/null
    export MERIDIAN_TEST_PG="host=127.0.0.1 port=$port user=postgres dbname=meridian_test"
    export MERIDIAN_TEST_PG_PORT=$port MERIDIAN_TEST_PG_DATA=$dir/data
    echo "postgresql on 127.0.0.1:$port" >&2
}

mrd_start_pdns() {
    local dir=$MRD_TMP/pdns dns api key
    mrd_free_port; dns=$MRD_PORT; mrd_free_port; api=$MRD_PORT; key=meridian-test-key
    mkdir -p "$dir"
    sqlite3 "$dir/pdns.sqlite3" </usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql
    cat >"$dir/pdns.conf" <<CONF
launch=gsqlite3
gsqlite3-database=$dir/pdns.sqlite3
local-address=127.0.0.1
local-port=$dns
api=yes
api-key=$key
webserver=yes
webserver-address=127.0.0.1
webserver-port=$api
webserver-allow-from=127.0.0.0/8
daemon=no
guardian=no
disable-syslog=yes
security-poll-suffix=
socket-dir=$dir
CONF
    chown -R pdns:pdns "$dir"
    runuser -u pdns -- /usr/sbin/pdns_server --config-dir="$dir" >"$dir/log" 2>&1 &
    MRD_PDNS_PID=$!
    mrd_wait_port "$api" 20 || { cat "$dir/log" >&2; return 1; }
    export MERIDIAN_TEST_PDNS_API="http://127.0.0.1:$api" MERIDIAN_TEST_PDNS_KEY=$key
    export MERIDIAN_TEST_PDNS_DNS_PORT=$dns MERIDIAN_TEST_PDNS_PID=$MRD_PDNS_PID
    export MERIDIAN_TEST_PDNS_CONF_DIR=$dir
    echo "powerdns on 127.0.0.1:$dns (api $api)" >&2
}

mrd_start_etcd() {
    local dir=$MRD_TMP/etcd client peer
    mrd_free_port; client=$MRD_PORT; mrd_free_port; peer=$MRD_PORT
    mkdir -p "$dir" && chown etcd:etcd "$dir" 2>/dev/null || chown etcd "$dir"
    runuser -u etcd -- /usr/bin/etcd --name meridian-test --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "meridian-test=http://127.0.0.1:$peer" >"$dir/log" 2>&1 &
    MRD_ETCD_PID=$!
    local i
    for i in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$client/health" 2>/dev/null | grep -q true && break
        sleep 0.05
    done
    curl -sf "http://127.0.0.1:$client/health" | grep -q true || { cat "$dir/log" >&2; return 1; }
    export MERIDIAN_TEST_ETCD="http://127.0.0.1:$client" MERIDIAN_TEST_ETCD_PID=$MRD_ETCD_PID
    echo "etcd on 127.0.0.1:$client" >&2
}

mrd_servers_start() {
    : "${MRD_TMP:?}"
    local s
    for s in "$@"; do "mrd_start_$s"; done
}

mrd_servers_stop() {
    if [ -n "${MERIDIAN_TEST_PG_DATA:-}" ] && [ -d "$MERIDIAN_TEST_PG_DATA" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$MERIDIAN_TEST_PG_DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    local pid
    for pid in ${MRD_PDNS_PID:-} ${MRD_ETCD_PID:-}; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in ${MRD_PDNS_PID:-} ${MRD_ETCD_PID:-}; do
        wait "$pid" 2>/dev/null || true
    done
    MRD_PDNS_PID= MRD_ETCD_PID=
}
