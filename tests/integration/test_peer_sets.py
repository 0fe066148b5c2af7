# meridian-test: e2e
"""The controller owns the peer sets (agent/README.md, "Self-fencing and peer
leases"); three regions on loopback (tests/integration/mrd_deploy.py), real
agents, controllers and store:

  controller_set_used   the controllers configure "nodes" (agent URLs); eu's
                        agent configures only us among its peers, plus a peer
                        the controllers do not know. eu's agent holds a lease
                        from ap too (the controller's set, its URL from the
                        nodes section, the token from peer_token), reports the
                        set it requires, and the leader raises the mismatch
                        (the unknown peer) as an event and in /metrics.
  outside_never_promoted
                        the controllers first configure eu and us only, so
                        eu's agent requires a lease from us alone; eu's agent
                        is then frozen, us's agent too, eu's PostgreSQL
                        killed, and ap added to the configuration (SIGHUP).
                        ap is healthy and within the lag bound, but outside
                        the set eu last reported: the leader does not promote
                        it, raises the mismatch (ap missing), and fails over
                        to us once us is heard from again.
"""

import json
import signal
import time
import urllib.request

import psycopg2

import meridian_harness as h
from mrd_deploy import Deployment, PEER_TOKEN, REGIONS

test = h.test


def store_rows(d, sql, params=None):
    conn = psycopg2.connect(d.store)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def member_leases(d, member):
    rows = store_rows(d, "SELECT leases_required, leases_held FROM meridian.members"
                      " WHERE service = 'orders' AND name = %s", (member,))
    return rows[0] if rows else (None, None)


def events(d, kind):
    return [r[0] for r in store_rows(d, "SELECT detail FROM meridian.events WHERE kind = %s"
                                     " ORDER BY id", (kind,))]


def metrics(ctl):
    text = urllib.request.urlopen(ctl.url + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@test
def controller_set_used():
    unknown_port = h.dead_port()
    eu_extra = {"peers": [{"name": "node-us", "url": "http://127.0.0.1:1",  # URL: the nodes'
                           "token": PEER_TOKEN},
                          {"name": "node-xx", "url": "http://127.0.0.1:%d" % unknown_port,
                           "token": PEER_TOKEN}],
                "peer_token": PEER_TOKEN}
    d = Deployment(profile="default", nodes=True, agent_extra={"by_region": {"eu": eu_extra}})
    d.wait_ready()

    # eu requires the controller's set plus its own extra peer, and holds the
    # leases of both replicas: ap's although its configuration does not list
    # ap (URL from the nodes section, token peer_token), us's at the URL the
    # nodes section gives (the configured one is a dead address)
    def leases_ok():
        req, held = member_leases(d, "orders-eu")
        return (req is not None and sorted(req) == ["node-ap", "node-us", "node-xx"]
                and held is not None and sorted(held) == ["node-ap", "node-us"])
    h.wait_until(leases_ok, 30, interval_s=0.2, what="eu holds leases from us and ap")
    # replicas report no lease set
    assert member_leases(d, "orders-us") == (None, None), member_leases(d, "orders-us")
    log = d.agents["eu"].proc.log_text()
    assert "configured peer unknown to the controller" in log, log[-2000:]

    # the leader: an event (once, not every tick) and the gauges
    def alerted():
        ev = events(d, "peer_set.mismatch")
        return ev if ev else None
    ev = h.wait_until(alerted, 30, interval_s=0.2, what="peer_set.mismatch event")
    assert ev[0]["member"] == "orders-eu" and ev[0]["unknown"] == ["node-xx"], ev
    assert ev[0]["missing"] == [], ev
    leader = d.leader()
    h.wait_until(lambda: metrics(leader).get(
        'meridian_peer_set_unknown_peers{service="orders"}') == 1.0, 10,
        what="unknown peer gauge")
    m = metrics(leader)
    assert m.get('meridian_peer_set_mismatch{service="orders"}') == 1.0, m
    assert m.get('meridian_peer_set_missing_members{service="orders"}') == 0.0, m
    time.sleep(2.0)  # many ticks: still one event (rate-limited)
    assert len(events(d, "peer_set.mismatch")) == 1, events(d, "peer_set.mismatch")

    # the switchover still works, and the new primary requires the whole set
    op = d.wait_op(d.start_op("switchover", to="us", retry_s=10), 60,
                   until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), op
    h.wait_until(lambda: sorted(member_leases(d, "orders-us")[1] or []) == ["node-ap", "node-eu"],
                 30, interval_s=0.2, what="us holds leases from eu and ap")
    assert sorted(member_leases(d, "orders-us")[0]) == ["node-ap", "node-eu"]


@test
def outside_never_promoted():
    # eu's agent configures no peer: its set is the controllers' alone
    d = Deployment(profile="default", member_regions=("eu", "us"), nodes=True,
                   agent_extra={"by_region": {"eu": {"peers": [], "peer_token": PEER_TOKEN}}})
    d.leader(60)

    def two_reported():
        try:
            ms = d.members()
        except (OSError, h.HarnessError):
            return False
        # (the store may list ap too: its agent reports a member not configured)
        return ("eu" in ms and "us" in ms and ms["eu"]["role"] == "primary"
                and ms["us"]["role"] == "replica" and ms["eu"]["healthy"] and ms["us"]["healthy"])
    h.wait_until(two_reported, 60, interval_s=0.2, what="eu and us reported")
    h.wait_until(lambda: member_leases(d, "orders-eu") == (["node-us"], ["node-us"]), 30,
                 interval_s=0.2, what="eu requires and holds a lease from us only")
    assert events(d, "peer_set.mismatch") == []

    # eu's agent frozen (its last report: us only), us's agent frozen (no
    # candidate inside the set), eu's PostgreSQL gone; then ap joins the
    # configuration of every controller
    d.agents["us"].proc.sigstop()
    d.agents["eu"].proc.sigstop()
    d.pg["eu"].kill9()
    t0 = time.monotonic()
    for r, _ in REGIONS:
        c = d.ctl[r]
        svc = dict(d.service_cfg)
        svc["members"] = d.all_members
        c.write_config(services=[svc])
        c.proc.signal(signal.SIGHUP)
    for r, _ in REGIONS:
        h.wait_until(lambda: "configuration reloaded" in d.ctl[r].proc.log_text(), 10,
                     what="ctl-%s reloaded" % r)

    # past grace and isolation (default: 3 s silence + 2 s grace, 4 s + 1 s
    # isolation): ap is the only live replica, outside eu's set, never chosen
    def no_candidate():
        try:
            svc = d.service(d.leader(5))
        except (OSError, h.HarnessError):
            return None
        dec = svc.get("decision") or {}
        ap = [c for c in dec.get("candidates", []) if c["node"] == "node-ap"]
        if dec.get("reason") == "no_candidate" and ap and ap[0]["reason"] == "outside_lease_set":
            return dec
        return None
    dec = h.wait_until(no_candidate, 30, interval_s=0.2, what="decision: no candidate")
    h.log("decision %s after %.1f s: %s" % (dec["reason"], time.monotonic() - t0, dec["message"]))
    deadline = t0 + 12.0
    while time.monotonic() < deadline:
        assert d.latest_operation() is None, d.latest_operation()
        assert d.service()["primary_region"] == "eu"
        time.sleep(0.5)
    # a manual failover to ap is refused too: eu is silent and confirmed no fence
    code, res = h.http_json("POST", d.leader().url + "/v1/services/orders/failover",
                            {"to": "ap", "force": True}, h.OPERATOR_TOKEN)
    assert code == 422, (code, res)
    # the mismatch: eu's set lacks ap
    ev = h.wait_until(lambda: events(d, "peer_set.mismatch") or None, 10, interval_s=0.2,
                      what="peer_set.mismatch event")
    assert ev[-1]["missing"] == ["node-ap"] and ev[-1]["unknown"] == [], ev
    m = metrics(d.leader())
    assert m.get('meridian_peer_set_missing_members{service="orders"}') == 1.0, m

    # us is heard from again: the leader fails over to us, inside the set
    d.agents["us"].proc.sigcont()
    h.wait_until(lambda: d.service()["primary_region"] == "us", 60, interval_s=0.2,
                 what="failover to us")
    op = d.latest_operation()
    assert op["kind"] == "failover" and op["to_region"] == "us", op
    d.agents["eu"].proc.sigcont()
    assert d.writable() == ["us"], d.writable()
    json.dumps(op)


if __name__ == "__main__":
    h.run_all()
