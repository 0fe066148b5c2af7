"""Heartbeat ingest of meridian-controller (controller/ingest.c) against a
store of its own (a PgCluster this file starts, so that stopping it disturbs
no other test).

  refused input      malformed JSON, a body over the server's 1 MiB limit,
                     wrong-typed and missing fields, a wrong token, a viewer
                     token: each gets its status and a JSON error naming the
                     field, and nothing reaches meridian.nodes / members
  replica, primary   a replica's heartbeat is answered "recorded": false; a
                     primary's is answered "recorded": true and its rows are
                     in the store when the answer arrives
  store restart      200 simulated nodes send heartbeats with growing seq
                     from 4 threads while the store is stopped and started
                     twice (the load ends while it is down): every heartbeat
                     is answered 200 ("recorded": false while the store is
                     down) and, once it is back, every node's and member's
                     row holds the LATEST report sent
  failed flush       the flush holding the latest reports fails (the store
                     stops while it waits for a table lock): they are
                     written once the store is back

Timing is never asserted: waits are bounded with room for a loaded machine.
"""

import http.client
import json
import socket
import threading
import time

from meridian_harness import (PgCluster, Controller, AGENT_TOKEN, VIEWER_TOKEN, fixture, test,
                              run_all, wait_until, log, require_env, http_json)

SLACK = 20.0
MAX_BODY = 1024 * 1024  # mrd_http_server_options.max_body_bytes default


@fixture
def store():
    require_env("MERIDIAN_BUILD_DIR")
    require_env("MERIDIAN_TEST_TMP")
    return PgCluster.create("ingest-store")


def fresh_controller(tag):
    db = "ing_" + tag
    ctl = Controller("ctl-" + tag, "eu", store().create_database(db), log_level="warn")
    ctl.start()
    wait_until(lambda: ctl.ready_code() == 200, SLACK, what="%s ready (migrated)" % ctl.name)
    return ctl, db


def member(node, role, pos, service="orders"):
    primary = role == "primary"
    return {"service": service, "name": "%s-%s" % (service, node), "kind": "postgresql",
            "role": role, "fenced": False, "timeline": 1,
            "position": pos if primary else 0,
            "receive_position": 0 if primary else pos,
            "replay_position": 0 if primary else pos,
            "replay_timestamp_ms": 0, "lag_bytes": 0 if primary else 16,
            "lag_ms": 0, "healthy": True}


def heartbeat(node, seq, role="replica", pos=None):
    return {"node": node, "region": "eu", "seq": seq, "epochs": {"orders": 1},
            "checks": [{"name": "pg", "status": "passing", "output": "", "duration_ms": 1}],
            "members": [member(node, role, pos if pos is not None else seq * 1000)]}


def store_counts(db):
    return (store().sql_value("SELECT count(*) FROM meridian.nodes", dbname=db),
            store().sql_value("SELECT count(*) FROM meridian.members", dbname=db))


def raw_post(url, body, token, timeout=10.0):
    """POST raw bytes; returns (status, parsed JSON or None). A server that
    answers before reading a large body may reset the connection while we
    still send: the answer is read anyway."""
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.putrequest("POST", "/v1/agent/heartbeat")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        if token:
            conn.putheader("Authorization", "Bearer " + token)
        conn.endheaders()
        try:
            conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, None
    finally:
        conn.close()


@test
def refused_input_writes_nothing():
    ctl, db = fresh_controller("refused")
    url = ctl.url
    good = heartbeat("db-eu-1", 1)

    def with_(path, value):
        hb = json.loads(json.dumps(good))
        obj = hb
        for k in path[:-1]:
            obj = obj[k]
        if value is KeyError:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
        return json.dumps(hb).encode()

    big = json.dumps(dict(good, padding="x" * (MAX_BODY + 1024))).encode()
    cases = [
        # (what, body, token, status, text the error message must contain)
        ("malformed json", b'{"node": "db-eu-1", "seq": ', AGENT_TOKEN, 400, "json"),
        ("not an object", b'[1, 2]', AGENT_TOKEN, 400, "must be a JSON object"),
        ("oversized body", big, AGENT_TOKEN, 413, None),
        ("seq a string", with_(["seq"], "x"), AGENT_TOKEN, 400, "seq"),
        ("seq negative", with_(["seq"], -1), AGENT_TOKEN, 400, "seq"),
        ("negative lag", with_(["members", 0, "lag_bytes"], -5), AGENT_TOKEN, 400,
         "members[0].lag_bytes"),
        ("role unknown word", with_(["members", 0, "role"], "boss"), AGENT_TOKEN, 400,
         "members[0].role"),
        ("healthy a string", with_(["members", 0, "healthy"], "yes"), AGENT_TOKEN, 400,
         "members[0].healthy"),
        ("checks not array", with_(["checks"], {"a": 1}), AGENT_TOKEN, 400, "checks"),
        ("missing node", with_(["node"], KeyError), AGENT_TOKEN, 400, "node"),
        ("missing seq", with_(["seq"], KeyError), AGENT_TOKEN, 400, "seq"),
        ("missing member name", with_(["members", 0, "name"], KeyError), AGENT_TOKEN, 400,
         "members[0].name"),
        ("no token", json.dumps(good).encode(), None, 401, None),
        ("wrong token", json.dumps(good).encode(), "not-a-token-0123456789", 401, None),
        ("viewer token", json.dumps(good).encode(), VIEWER_TOKEN, 403, None),
    ]
    for what, body, token, status, text in cases:
        code, ans = raw_post(url, body, token)
        log("%-20s -> %s %s" % (what, code, json.dumps(ans)[:160]))
        assert code == status, "%s: status %s, expected %s (%r)" % (what, code, status, ans)
        assert isinstance(ans, dict) and isinstance(ans.get("error"), dict), \
            "%s: no JSON error: %r" % (what, ans)
        err = ans["error"]
        assert err.get("code") and err.get("message"), "%s: incomplete error %r" % (what, err)
        if text is not None:
            assert text in err["message"], "%s: message %r does not name %r" % (
                what, err["message"], text)
    # Past several flush intervals (50 ms) and a tick: still nothing written.
    time.sleep(1.0)
    assert store_counts(db) == (0, 0), "refused heartbeats were written: %r" % (
        store_counts(db),)
    # The same check sees a valid heartbeat: it is not blind.
    code, ans = http_json("POST", url + "/v1/agent/heartbeat", good, AGENT_TOKEN)
    assert code == 200 and ans["recorded"] is False, (code, ans)
    wait_until(lambda: store_counts(db) == (1, 1), SLACK, what="the valid heartbeat's rows")


@test
def replica_at_once_primary_recorded():
    ctl, db = fresh_controller("record")
    code, ans = http_json("POST", ctl.url + "/v1/agent/heartbeat",
                          heartbeat("db-eu-2", 5, "replica"), AGENT_TOKEN)
    assert code == 200, (code, ans)
    assert ans["recorded"] is False, "a replica's heartbeat must not wait: %r" % ans
    assert ans.get("heartbeat_ms", 0) > 0 and "commands" in ans, ans

    code, ans = http_json("POST", ctl.url + "/v1/agent/heartbeat",
                          heartbeat("db-eu-1", 7, "primary", pos=123456), AGENT_TOKEN,
                          timeout=SLACK)
    assert code == 200, (code, ans)
    assert ans["recorded"] is True, "a primary's heartbeat must be recorded: %r" % ans
    # Read at once: the answer came after the commit.
    rows = store().sql("SELECT seq, last_seen IS NOT NULL, last_seen > now() - interval '1 min'"
                       " FROM meridian.nodes WHERE name = 'db-eu-1'", dbname=db)
    assert rows == [(7, True, True)], "node row when recorded:true arrived: %r" % rows
    rows = store().sql("SELECT role, position::bigint, last_seen IS NOT NULL"
                       " FROM meridian.members WHERE name = 'orders-db-eu-1'", dbname=db)
    assert rows == [("primary", 123456, True)], "member row: %r" % rows
    # The replica's rows follow within a few flushes.
    wait_until(lambda: store().sql_value("SELECT seq FROM meridian.nodes WHERE name = 'db-eu-2'",
                                         dbname=db) == 5, SLACK, what="the replica's row")


@test
def awkward_text_is_stored_as_sent():
    """Check output and probe errors with quotes, backslashes, JSON-looking
    text and non-ASCII reach the store unchanged (control characters are
    refused by the protocol) (the rows are
    rendered as JSON text by the controller: one bad escape would make every
    flush fail)."""
    ctl, db = fresh_controller("text")
    weird = 'say "hi" \\ back\\slash \\n \\u0000 {"x": [1]} \u00e9t\u00e9 \u2603 \u2028 end'
    hb = heartbeat("db-eu-9", 3, "primary", pos=4096)
    hb["checks"] = [{"name": "pg", "status": "warning", "output": weird, "duration_ms": 2}]
    hb["probes"] = [{"region": "us", "target": "127.0.0.1:1", "ok": False, "latency_ms": 1.25,
                     "error": weird}]
    code, ans = http_json("POST", ctl.url + "/v1/agent/heartbeat", hb, AGENT_TOKEN,
                          timeout=SLACK)
    assert code == 200 and ans["recorded"] is True, (code, ans)
    row = store().sql("SELECT checks->0->>'output', probes->0->>'error',"
                      " (probes->0->>'latency_ms')::float FROM meridian.nodes"
                      " WHERE name = 'db-eu-9'", dbname=db)
    assert row == [(weird, weird, 1.25)], "stored %r" % row


@test
def standbys_reach_the_api():
    """A primary's standbys (its pg_stat_replication) are stored with the
    member and shown by GET /v1/nodes/{node}; a later report without any
    replaces them."""
    ctl, db = fresh_controller("standbys")
    hb = heartbeat("db-eu-7", 1, "primary", pos=8192)
    sb = [{"name": "pg-us", "address": "10.0.0.2", "state": "streaming", "sync_state": "async",
           "sent_position": 8192, "flush_position": 8000, "replay_position": 4096,
           "replay_lag_ms": 12},
          {"name": "", "address": None, "state": "startup", "sync_state": None,
           "sent_position": None, "flush_position": None, "replay_position": None,
           "replay_lag_ms": None}]
    hb["members"][0]["standbys"] = sb
    code, ans = http_json("POST", ctl.url + "/v1/agent/heartbeat", hb, AGENT_TOKEN,
                          timeout=SLACK)
    assert code == 200 and ans["recorded"] is True, (code, ans)
    code, node = ctl.get("/v1/nodes/db-eu-7")
    assert code == 200, (code, node)
    got = node["members"][0]["standbys"]
    assert got[0] == sb[0], got
    assert got[1]["state"] == "startup" and got[1]["sent_position"] is None, got
    assert got[1]["replay_lag_ms"] is None and got[1]["name"] == "", got
    assert got[1]["address"] is None and got[1]["sync_state"] is None, got
    hb = heartbeat("db-eu-7", 2, "primary", pos=9000)
    code, ans = http_json("POST", ctl.url + "/v1/agent/heartbeat", hb, AGENT_TOKEN,
                          timeout=SLACK)
    assert code == 200 and ans["recorded"] is True, (code, ans)
    code, node = ctl.get("/v1/nodes/db-eu-7")
    assert code == 200 and node["members"][0]["standbys"] == [], node


class Load:
    """N simulated nodes, heartbeats with growing seq, from a few threads
    over keep-alive connections. Node k hosts a primary when k % 10 == 0.
    Records per node the last seq sent and answered, and every answer that
    was not a 200 with a boolean "recorded"."""

    def __init__(self, url, nodes=200, threads=4):
        self.host, port = url.split("//")[1].split(":")
        self.port = int(port)
        self.names = ["n%03d" % k for k in range(nodes)]
        self.last = {}          # node -> last seq answered 200
        self.sent = 0
        self.recorded = {True: 0, False: 0}
        self.by_kind = {}       # (role, "up"/"down", recorded) -> answers
        self.bad = []
        self.stop_flag = threading.Event()
        self.phase = "start"    # up, stopping, down, starting: the store, as the test drives it
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(self.names[i::threads],),
                                         daemon=True) for i in range(threads)]

    @staticmethod
    def role(name):
        return "primary" if int(name[1:]) % 10 == 0 else "replica"

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), "load thread did not stop"

    def _post(self, conn, body):
        hdrs = {"Content-Type": "application/json", "Authorization": "Bearer " + AGENT_TOKEN}
        conn.request("POST", "/v1/agent/heartbeat", body, hdrs)
        r = conn.getresponse()
        return r.status, r.read()

    def _run(self, names):
        conn = None
        seq = {n: 0 for n in names}
        while not self.stop_flag.is_set():
            for n in names:
                if self.stop_flag.is_set():
                    break
                seq[n] += 1
                body = json.dumps(heartbeat(n, seq[n], self.role(n), pos=seq[n] * 1000))
                phase = self.phase
                for attempt in (1, 2):  # a keep-alive conn closed by the server: reconnect once
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                        status, raw = self._post(conn, body)
                        break
                    except (http.client.HTTPException, OSError) as e:
                        conn.close()
                        conn = None
                        if attempt == 2:
                            status, raw = 0, str(e).encode()
                with self.lock:
                    self.sent += 1
                    try:
                        ans = json.loads(raw)
                    except ValueError:
                        ans = None
                    if status != 200 or not isinstance(ans, dict) \
                            or not isinstance(ans.get("recorded"), bool):
                        self.bad.append((n, seq[n], status, raw[:200]))
                        continue
                    self.last[n] = seq[n]
                    self.recorded[ans["recorded"]] += 1
                    # The phase when the request was sent and when the answer came
                    # must agree: answers around a transition count as neither.
                    if phase == self.phase:
                        key = (self.role(n), phase, ans["recorded"])
                        self.by_kind[key] = self.by_kind.get(key, 0) + 1
                    if phase == "down" and self.phase == "down" and ans["recorded"]:
                        self.bad.append((n, seq[n], "recorded:true while the store was down"))
            time.sleep(0.005)
        if conn is not None:
            conn.close()


def store_matches(db, load):
    rows = store().sql("SELECT n.name, n.seq, m.role, m.position::bigint,"
                       " m.replay_position::bigint FROM meridian.nodes n"
                       " LEFT JOIN meridian.members m ON m.node = n.name", dbname=db)
    got = {r[0]: r[1:] for r in rows}
    wrong = []
    for n, seq in load.last.items():
        role = Load.role(n)
        want = (seq, role, seq * 1000 if role == "primary" else 0,
                0 if role == "primary" else seq * 1000)
        if got.get(n) != want:
            wrong.append((n, got.get(n), want))
    return wrong


@test
def store_restart_under_load_loses_no_latest_status():
    ctl, db = fresh_controller("restart")
    st = store()
    load = Load(ctl.url, nodes=200, threads=4)
    load.start()
    try:
        wait_until(lambda: len(load.last) == 200, SLACK, what="every node answered once")
        load.phase = "up"
        time.sleep(1.0)
        for rnd in (1, 2):
            log("round %d: stopping the store (load running, %d sent)" % (rnd, load.sent))
            load.phase = "stopping"
            st.stop("fast")
            load.phase = "down"
            before, t0 = load.sent, time.monotonic()
            wait_until(lambda: load.sent > before + 400 and time.monotonic() > t0 + 1.0, SLACK,
                       what="heartbeats answered while the store is down")
            if rnd == 2:
                # The load ends while the store is down: the latest reports
                # exist only in the controller's batch.
                load.stop()
            load.phase = "starting"
            log("round %d: starting the store (%d sent)" % (rnd, load.sent))
            st.start()
            wait_until(lambda: ctl.ready_code() == 200, SLACK, what="controller ready again")
            load.phase = "up"
            if rnd == 1:
                before = load.recorded[True]
                wait_until(lambda: load.recorded[True] > before + 20, SLACK,
                           what="primaries recorded again after the restart")
                time.sleep(0.5)
    finally:
        if not load.stop_flag.is_set():
            load.stop()
    kinds = sorted(load.by_kind.items())
    log("sent %d heartbeats, recorded true %d, false %d, bad %d; by (role, store, recorded): %r"
        % (load.sent, load.recorded[True], load.recorded[False], len(load.bad), kinds))
    assert not load.bad, "heartbeats not answered properly (%d), first: %r" % (
        len(load.bad), load.bad[:5])
    assert load.by_kind.get(("primary", "down", False), 0) > 0, kinds
    assert load.by_kind.get(("replica", "down", False), 0) > 0, kinds
    assert load.by_kind.get(("primary", "up", True), 0) > 0, kinds
    assert load.by_kind.get(("primary", "up", False), 0) == 0, \
        "a primary's heartbeat was not recorded while the store was up: %r" % kinds
    assert load.by_kind.get(("replica", "up", True), 0) == 0, kinds
    assert len(load.last) == 200
    wrong = []

    def settled():
        wrong[:] = store_matches(db, load)
        return not wrong
    try:
        wait_until(settled, SLACK, interval_s=0.2, what="the store to hold every latest report")
    except AssertionError:
        raise AssertionError("%d nodes do not hold their latest report, e.g. %r"
                             % (len(wrong), wrong[:5]))
    # Still right a few flushes later (no older report written afterwards).
    time.sleep(0.5)
    assert not store_matches(db, load), store_matches(db, load)[:5]
    assert store_counts(db) == (200, 200), store_counts(db)



@test
def failed_flush_is_written_again():
    """The latest reports of 50 nodes are all in ONE flush, which fails (the
    store stops while the flush waits for a table lock): once the store is
    back, they are written, although no node sends anything newer."""
    ctl, db = fresh_controller("refill")
    names = ["f%02d" % k for k in range(50)]

    def send_all(seq):
        for n in names:
            code, ans = http_json("POST", ctl.url + "/v1/agent/heartbeat", heartbeat(n, seq),
                                  AGENT_TOKEN)
            assert code == 200 and ans["recorded"] is False, (n, seq, code, ans)

    def seqs():
        return dict(store().sql("SELECT name, seq FROM meridian.nodes", dbname=db))

    send_all(1)
    wait_until(lambda: seqs() == {n: 1 for n in names}, SLACK, what="seq 1 of every node")
    locker = store().connect(db)
    try:
        locker.autocommit = False
        with locker.cursor() as cur:
            # EXCLUSIVE: blocks writes, not the reads of the leader tick
            cur.execute("LOCK TABLE meridian.nodes IN EXCLUSIVE MODE")
        send_all(2)
        # Every seq 2 is in the flush that now waits for the lock.
        wait_until(lambda: store().sql_value(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = "
            "'Lock' AND query LIKE 'WITH b AS%%'", (db,)) == 1, SLACK,
            what="the flush to wait for the lock")
        log("flush blocked; stopping the store")
        store().stop("fast")
    finally:
        try:
            locker.close()
        except Exception:
            pass
    store().start()
    wait_until(lambda: ctl.ready_code() == 200, SLACK, what="controller ready again")
    wait_until(lambda: seqs() == {n: 2 for n in names}, SLACK,
               what="seq 2 of every node written after the failed flush")


if __name__ == "__main__":
    run_all()
