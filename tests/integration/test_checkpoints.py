"""Data-sync checkpoints between regions, end to end.

Set-up (shared by the tests, in order): a store; a PostgreSQL primary in
region eu with streaming replicas in us and ap; one meridian-agent per node
(1 s heartbeats); two controllers (eu, us) with service "orders"
(automatic checkpoints every second, auto_failover off).

  reached_and_early_answer  a checkpoint taken after a write is reached by
                            every region; a wait_ms=10000 long-poll answers
                            well before its deadline, on the leader and on a
                            follower; POST without a position on the follower
                            is a 307 to the leader
  paused_region             replay paused in ap: ap stays pending, its
                            rpo_seconds grows while us's does not, the
                            long-poll answers at its deadline naming ap, a
                            poll for eu,us only answers early; after resume ap
                            catches up and the long-poll completes
  client_position           a position given by the client (on the follower)
  bad_requests              malformed position 400, future position 422,
                            roles, bad query parameters, unknown ids
  stop_answers_waiting_polls  a stopping controller answers its long-polls
  retention                 with a tiny retention, 5000 old checkpoints are
                            removed in batches while every agent's heartbeats
                            keep being recorded; each region keeps its
                            recovery point
  lost_after_promotion      (destructive, last) us is cut off, a checkpoint is
                            taken that only eu has, us is promoted and the
                            store moves to epoch 2: the checkpoint is marked
                            lost; an older one that us had is not
Timing figures are printed; bounds are generous (loaded 2-core machine).
"""

import re
import time
import urllib.request

from meridian_harness import (PgCluster, Controller, Agent, TempDir, fixture, test, run_all,
                              wait_until, wait_for_leader, log, require_env, lsn_to_int,
                              http_json, TOKENS, OPERATOR_TOKEN, VIEWER_TOKEN)

APP_TOKEN = "meridian-test-app-token-0123456789"
PEER_TOKEN = "meridian-test-peer-token-0123456789"
REGIONS = ("eu", "us", "ap")
SERVICE = "orders"


class Env:
    pass


def service_cfg(pgs, interval_ms=1000, retention_ms=None):
    members = [{"name": "orders-" + r, "node": "db-" + r, "region": r,
                "conninfo": pgs[r].conninfo()} for r in REGIONS]
    s = {"name": SERVICE, "primary_region": "eu", "policy": {"auto_failover": False},
         "members": members, "checkpoint_interval_ms": interval_ms}
    if retention_ms is not None:
        s["checkpoint_retention_ms"] = retention_ms
    return s


def controller_extra(pgs, **kw):
    return {"tokens": TOKENS + [{"name": "app", "token": APP_TOKEN, "role": "app"}],
            "agent_token": PEER_TOKEN,  # pokes: fresh reports while someone waits
            "regions": [{"name": r, "priority": i + 1} for i, r in enumerate(REGIONS)],
            "services": [service_cfg(pgs, **kw)]}


@fixture
def env():
    require_env("MERIDIAN_BUILD_DIR")
    e = Env()
    e.tmp = TempDir("ckpt")
    e.store = PgCluster.create("store", tmp=e.tmp)
    e.db = "ckpt"
    conninfo = e.store.create_database(e.db)
    e.pgs = {"eu": PgCluster.create("pg-eu", tmp=e.tmp)}
    e.pgs["eu"].sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
    for r in ("us", "ap"):
        e.pgs[r] = e.pgs["eu"].make_replica("pg-" + r)
    e.ctls = [Controller("ctl-" + r, r, conninfo, tmp=e.tmp, lease_ttl_ms=2000,
                         extra=controller_extra(e.pgs)) for r in ("eu", "us")]
    for c in e.ctls:
        c.start()
    urls = [c.url for c in e.ctls]
    e.agents = []
    for r in REGIONS:
        a = Agent("db-" + r, r, urls, tmp=e.tmp, extra={
            "heartbeat_ms": 1000,
            "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}],
            "members": [{"service": SERVICE, "name": "orders-" + r, "kind": "postgresql",
                         "conninfo": e.pgs[r].conninfo()}]})
        a.start()
        e.agents.append(a)
    wait_for_leader(e.ctls, 30)
    wait_until(lambda: first_auto(e), 40, what="a first automatic checkpoint reached by all")
    return e


def leader(e):
    return wait_for_leader(e.ctls, 20)[0]


def follower(e):
    ld = leader(e)
    return [c for c in e.ctls if c is not ld][0]


def store_sql(e, q, params=None):
    return e.store.sql(q, params, dbname=e.db)


def first_auto(e):
    rows = store_sql(e, "SELECT count(*) FROM meridian.checkpoint_reached r JOIN "
                        "meridian.checkpoints c ON c.id = r.checkpoint_id WHERE c.kind = 'auto' "
                        "GROUP BY c.id HAVING count(*) = 3")
    return len(rows) > 0


def write(e, n=1):
    """Writes n rows on the primary; returns its LSN after them (int)."""
    e.pgs["eu"].sql("INSERT INTO t (v) SELECT repeat('x', 200) FROM generate_series(1, %s)",
                    (n,))
    return e.pgs["eu"].current_lsn()


def known_primary_position(e):
    v = store_sql(e, "SELECT position FROM meridian.members WHERE service = %s AND "
                     "name = 'orders-eu'", (SERVICE,))
    return int(v[0][0]) if v else 0


def create(ctl, body=None, token=OPERATOR_TOKEN, timeout=10.0):
    return http_json("POST", ctl.url + "/v1/services/%s/checkpoints" % SERVICE,
                     body if body is not None else None, token, timeout)


def poll(ctl, cid, wait_ms=0, regions=None, token=VIEWER_TOKEN, timeout=70.0):
    q = "?wait_ms=%d" % wait_ms
    if regions:
        q += "&regions=" + ",".join(regions)
    t0 = time.monotonic()
    code, body = http_json("GET", ctl.url + "/v1/services/%s/checkpoints/%s%s"
                           % (SERVICE, cid, q), None, token, timeout)
    return code, body, time.monotonic() - t0


def recovery(ctl):
    code, body = ctl.get("/v1/services/%s/recovery" % SERVICE)
    assert code == 200, (code, body)
    return {r["region"]: r for r in body["regions"]}


def metrics(ctl):
    """GET /metrics (open) -> {(name, region): value} of the checkpoint gauges."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(ctl.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r'^(meridian_recovery_point_age_seconds|meridian_replication_lag_bytes)'
                         r'\{service="orders",region="(\w+)"\} (\S+)$', text, re.M):
        out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def checkpoint_after_write(e, ctl=None):
    lsn = write(e, 50)
    wait_until(lambda: known_primary_position(e) >= lsn, 15,
               what="the store to know the primary's position %x" % lsn)
    code, body = create(ctl or leader(e))
    assert code == 201, (code, body)
    assert body["position"] >= lsn, (body, lsn)
    return body, lsn


@test
def test_reached_and_early_answer():
    e = env()
    ld, fo = leader(e), follower(e)
    body, lsn = checkpoint_after_write(e, ld)
    hi, lo = body["position"] >> 32, body["position"] & 0xFFFFFFFF
    assert body["position_text"] == "%X/%X" % (hi, lo), body
    assert body["epoch"] == 1 and body["kind"] == "manual" and body["id"] > 0, body
    code, got, dt = poll(ld, body["id"], 10000)
    log("long-poll on the leader answered in %.2f s: %s" % (dt, got))
    assert code == 200, (code, got)
    assert got["complete"] is True and got["pending"] == [], got
    assert sorted(got["reached"]) == sorted(REGIONS), got
    assert dt < 5.0, "the long-poll waited %.2f s for a checkpoint every region reached" % dt
    for r in REGIONS:
        assert got["reached"][r] >= got["created_at"], got

    body2, _ = checkpoint_after_write(e, ld)
    code, got, dt = poll(fo, body2["id"], 10000)
    log("long-poll on the follower answered in %.2f s" % dt)
    assert code == 200 and got["complete"] is True, (code, got)
    assert dt < 5.0, dt

    # a position the replicas cannot have reported yet: the long-poll wakes
    # up when they do
    e.pgs["eu"].sql("INSERT INTO t (v) SELECT 'y' FROM generate_series(1, 100)")
    lsn_text = e.pgs["eu"].sql_value("SELECT pg_current_wal_lsn()::text")
    code, body3 = create(ld, {"position": lsn_text})
    assert code == 201, (code, body3)
    code, got, dt = poll(ld, body3["id"], 10000)
    log("long-poll for a fresh position answered in %.2f s" % dt)
    assert code == 200 and got["complete"] is True, (code, got)
    assert dt < 5.0, dt

    # the leader persisted the marks
    wait_until(lambda: store_sql(e, "SELECT count(*) FROM meridian.checkpoint_reached WHERE "
                                    "checkpoint_id = %s", (body["id"],))[0][0] == 3, 10,
               what="3 stored marks")
    assert store_sql(e, "SELECT complete FROM meridian.checkpoints WHERE id = %s",
                     (body["id"],))[0][0] is True

    # without a position, only the leader creates
    code, b = create(fo)
    assert code == 307, (code, b)
    assert b["error"]["leader_url"] == ld.url, b

    # the list shows it
    code, lst = fo.get("/v1/services/%s/checkpoints?limit=5&kind=manual" % SERVICE)
    assert code == 200 and lst["checkpoints"][0]["id"] == body3["id"], (code, lst)
    assert set(lst["checkpoints"][0]["reached"]) <= set(REGIONS)


@test
def test_paused_region():
    e = env()
    ld, fo = leader(e), follower(e)
    e.pgs["ap"].pause_replay()
    try:
        body, lsn = checkpoint_after_write(e, ld)
        rec1 = recovery(fo)
        code, got, dt = poll(fo, body["id"], 3000)
        log("long-poll with ap paused answered in %.2f s: pending %s" % (dt, got.get("pending")))
        assert code == 200, (code, got)
        assert got["complete"] is False and got["pending"] == ["ap"], got
        assert sorted(got["reached"]) == ["eu", "us"], got
        assert 2.5 <= dt < 8.0, "answered after %.2f s, deadline 3 s" % dt

        code, got2, dt2 = poll(fo, body["id"], 10000, regions=["eu", "us"])
        assert code == 200 and got2["complete"] is True and got2["pending"] == [], got2
        assert dt2 < 5.0, dt2

        write(e, 20)
        time.sleep(2.5)
        rec2 = recovery(fo)
        log("rpo ap %.2f -> %.2f s, us %.2f -> %.2f s, ap lag %s bytes" % (
            rec1["ap"]["rpo_seconds"], rec2["ap"]["rpo_seconds"], rec1["us"]["rpo_seconds"],
            rec2["us"]["rpo_seconds"], rec2["ap"]["lag_bytes"]))
        assert rec2["ap"]["rpo_seconds"] > rec1["ap"]["rpo_seconds"] + 2.0, (rec1, rec2)
        assert rec2["us"]["rpo_seconds"] < rec2["ap"]["rpo_seconds"] - 2.0, rec2
        assert rec2["us"]["rpo_seconds"] < 6.0, rec2
        assert rec2["ap"]["lag_bytes"] > 0 and rec2["us"]["lag_bytes"] is not None, rec2
        assert rec2["eu"]["primary"] is True and rec2["eu"]["lag_bytes"] == 0, rec2
        for c in e.ctls:  # leader and follower both export them
            m = metrics(c)
            log("%s metrics: %s" % (c.name, m))
            age = m[("meridian_recovery_point_age_seconds", "ap")]
            assert age > m[("meridian_recovery_point_age_seconds", "us")] + 1.0, m
            assert m[("meridian_replication_lag_bytes", "ap")] > 0, m
            assert m[("meridian_replication_lag_bytes", "eu")] == 0, m
    finally:
        e.pgs["ap"].resume_replay()
    code, got, dt = poll(fo, body["id"], 15000)
    log("after resume, ap reached it within %.2f s" % dt)
    assert code == 200 and got["complete"] is True, got
    assert got["reached"]["ap"] > got["reached"]["us"], got
    wait_until(lambda: recovery(fo)["ap"]["rpo_seconds"] < 6.0, 15,
               what="ap's rpo to come back down")


@test
def test_client_position():
    e = env()
    fo = follower(e)
    e.pgs["eu"].sql("INSERT INTO t (v) VALUES ('client')")
    lsn_text = e.pgs["eu"].sql_value("SELECT pg_current_wal_lsn()::text")
    # any controller creates when the client gives the position; the
    # primary's report may lag a heartbeat behind: the controller waits
    code, body = create(fo, {"position": lsn_text}, token=APP_TOKEN)
    assert code == 201, (code, body)
    assert body["position"] == lsn_to_int(lsn_text), (body, lsn_text)
    assert body["position_text"] == lsn_text.upper().lstrip("0") or \
        lsn_to_int(body["position_text"]) == lsn_to_int(lsn_text), body
    code, got, dt = poll(fo, body["id"], 10000, token=APP_TOKEN)
    assert code == 200 and got["complete"] is True and got["position_at"] is None, got
    # integer form too
    code, body = create(fo, {"position": lsn_to_int(lsn_text)}, token=APP_TOKEN)
    assert code == 201 and body["position"] == lsn_to_int(lsn_text), (code, body)


@test
def test_bad_requests():
    e = env()
    ld, fo = leader(e), follower(e)
    for bad in ({"position": "zz"}, {"position": "1/2/3"}, {"position": -5}, {"position": 1.5},
                {"position": "0/0"}, {"position": [1]}, {"lsn": "0/1"}):
        code, body = create(fo, bad)
        assert code == 400, (bad, code, body)
    code, body = http_json("POST", fo.url + "/v1/services/%s/checkpoints" % SERVICE, None,
                           OPERATOR_TOKEN, headers={"Content-Type": "application/json"})
    assert code in (307, 201), (code, body)   # empty body: a normal request
    t0 = time.monotonic()
    code, body = create(fo, {"position": "FF/0"})
    log("future position answered %s after %.2f s" % (code, time.monotonic() - t0))
    assert code == 422, (code, body)
    assert body["error"]["code"] == "position_beyond_primary", body
    code, body = create(ld, token=VIEWER_TOKEN)
    assert code == 403, (code, body)
    code, body = create(ld, token=APP_TOKEN)
    assert code == 201, (code, body)
    cid = body["id"]
    code, body = http_json("POST", ld.url + "/v1/services/nope/checkpoints", {}, OPERATOR_TOKEN)
    assert code == 404, (code, body)
    for q in ("?wait_ms=abc", "?wait_ms=-1", "?regions=mars", "?regions=eu,,us",
              "?regions=eu,eu"):
        code, body = fo.get("/v1/services/%s/checkpoints/%d%s" % (SERVICE, cid, q))
        assert code == 400, (q, code, body)
    for path in ("/checkpoints/0", "/checkpoints/x", "/checkpoints/99999999"):
        code, body = fo.get("/v1/services/%s%s" % (SERVICE, path))
        assert code in (400, 404), (path, code, body)
    code, body = fo.get("/v1/services/%s/checkpoints/99999999?wait_ms=5000" % SERVICE)
    assert code == 404, (code, body)
    code, body = fo.get("/v1/services/%s/checkpoints/%d" % (SERVICE, cid), token=None)
    assert code == 401, (code, body)
    # a capped wait: 600000 is accepted (and capped at 60 s, not waited here)
    code, got, dt = poll(fo, cid, 600000, regions=["eu"])
    assert code == 200 and got["complete"] is True and dt < 5.0, (code, got, dt)


def restart_controllers(e, **kw):
    for c in e.ctls:
        c.write_config(**controller_extra(e.pgs, **kw))
        c.stop()
        c.start()
    wait_for_leader(e.ctls, 30)


@test
def test_stop_answers_waiting_polls():
    """A controller that stops answers its waiting long-polls (503) at once
    instead of holding its exit until they end."""
    import threading
    e = env()
    fo = follower(e)
    e.pgs["ap"].pause_replay()
    try:
        body, _ = checkpoint_after_write(e)
        out = {}

        def waiter():
            out["r"] = poll(fo, body["id"], 30000, regions=["ap"])
        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        rc = fo.stop()
        th.join(20)
        log("follower stopped in %.2f s with a poll waiting; poll got %s" % (
            time.monotonic() - t0, out.get("r", (None,))[0]))
        assert rc == 0, rc
        assert time.monotonic() - t0 < 5.0
        assert out["r"][0] == 503 and out["r"][2] < 10.0, out
    finally:
        e.pgs["ap"].resume_replay()
        if not fo.alive():
            fo.start()


@test
def test_retention():
    e = env()
    # small retention, restart both controllers with it
    restart_controllers(e, interval_ms=500, retention_ms=3000)
    try:
        retention_checks(e)
    finally:
        restart_controllers(e)


def retention_checks(e):
    store_sql(e, "INSERT INTO meridian.checkpoints (service, epoch, timeline, position, "
                 "position_at, kind, actor, primary_region, created_at, complete) "
                 "SELECT %s, 1, 1, 1000, now() - interval '2 hours', 'auto', 'test', 'eu', "
                 "now() - interval '2 hours', true FROM generate_series(1, 5000)", (SERVICE,))
    seen = []
    t0 = time.monotonic()

    def old_gone():
        seen.append(store_sql(e, "SELECT max(now() - last_seen) FROM meridian.members "
                                 "WHERE service = %s", (SERVICE,))[0][0].total_seconds())
        n = store_sql(e, "SELECT count(*) FROM meridian.checkpoints WHERE "
                         "created_at < now() - interval '1 hour'")[0][0]
        return n == 0
    wait_until(old_gone, 60, interval_s=0.1, what="old checkpoints to be removed")
    log("5000 old checkpoints removed in %.2f s; heartbeats: stalest member %.2f s behind "
        "(%d samples)" % (time.monotonic() - t0, max(seen), len(seen)))
    assert max(seen) < 4.0, "a member was not recorded for %.2f s during retention" % max(seen)
    time.sleep(4)
    # only recent ones remain, plus at most one recovery point per region
    old = store_sql(e, "SELECT count(*) FROM meridian.checkpoints WHERE created_at < "
                       "now() - interval '5 seconds'")[0][0]
    assert old <= len(REGIONS), "%d checkpoints older than retention kept" % old
    rec = recovery(e.ctls[0])
    for r in REGIONS:
        assert rec[r]["recovery_point"] is not None and rec[r]["rpo_seconds"] < 6, rec


@test
def test_lost_after_promotion():
    e = env()
    ld = leader(e)
    # a checkpoint that us has
    kept, _ = checkpoint_after_write(e, ld)
    code, got, _ = poll(ld, kept["id"], 10000)
    assert got["complete"] is True, got
    # cut us off, write, take one only eu (and ap) can have
    e.pgs["us"].stop_wal_receiver()
    cut, _ = checkpoint_after_write(e, ld)
    code, got, _ = poll(ld, cut["id"], 3000, regions=["eu", "ap"])
    assert got["complete"] is True and "us" not in got["reached"], got
    # tell the store, then promote us by hand (what a failover does: the
    # epoch is committed first): epoch 2, primary us. The other way round,
    # us's agent would see a writable primary the store does not name and
    # fence it (superseded), killing the promote's connection.
    store_sql(e, "UPDATE meridian.services SET epoch = epoch + 1, primary_region = 'us', "
                 "primary_member = 'orders-us' WHERE name = %s", (SERVICE,))

    def every_controller_names_us():
        for c in e.ctls:
            code, svc = c.get("/v1/services/" + SERVICE)
            if code != 200 or svc.get("primary_region") != "us":
                return False
        return True
    # the agents' answers come from the controllers' views: promote once
    # every controller names us, or us's agent fences it (superseded)
    wait_until(every_controller_names_us, 20, what="every controller naming us primary")
    time.sleep(1.0)  # and a few ticks of the controllers' own refresh
    e.pgs["us"].promote()
    wait_until(lambda: store_sql(e, "SELECT lost FROM meridian.checkpoints WHERE id = %s",
                                 (cut["id"],))[0][0], 20, what="the cut checkpoint to be lost")
    assert store_sql(e, "SELECT lost FROM meridian.checkpoints WHERE id = %s",
                     (kept["id"],))[0][0] is False
    code, got, _ = poll(ld, cut["id"], 0)
    assert got["lost"] is True and got["complete"] is False, got
    ev = store_sql(e, "SELECT count(*) FROM meridian.events WHERE kind = 'checkpoint.lost'")
    assert ev[0][0] >= 1


if __name__ == "__main__":
    run_all()
