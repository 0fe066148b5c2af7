# meridian-test: e2e
"""End to end (tests/integration/mrd_deploy.py): the RPO bound stops an
automatic failover, and an operator can still force one.

  failover_refused_for_lag
      policy max_lag_bytes = 1024. Both replicas' WAL receivers are cut
      (stop_wal_receiver) and the primary writes well over 1024 bytes that
      its agent reports; then the primary's agent and PostgreSQL are
      SIGKILLed. Long past node_timeout + failure_grace + isolation the
      controller has started no operation; the event log has an "alert"
      with reason lag_exceeded; GET /plan answers decision alert, reason
      lag_exceeded, every candidate refused for lag. A POST failover
      {"to": "ap", "force": true} is accepted (202), completes, and the
      member promoted is ap's (the forced one, not us's, which has the
      higher priority).
"""

import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test

MAX_LAG = 1024


@test
def failover_refused_for_lag():
    d = Deployment(profile="default", policy={"max_lag_bytes": MAX_LAG})
    d.wait_ready()
    for r in ("us", "ap"):
        d.pg[r].stop_wal_receiver()
    stalled = {r: d.pg[r].replay_lsn() for r in ("us", "ap")}
    # well over the bound, in a few transactions
    for _ in range(5):
        d.pg["eu"].sql("INSERT INTO writes (id) SELECT g FROM generate_series(%s, %s) g",
                       (int(time.time() * 1e6), int(time.time() * 1e6) + 199))
        time.sleep(0.05)
    eu_pos = d.pg["eu"].current_lsn()
    assert eu_pos - max(stalled.values()) > 10 * MAX_LAG, (eu_pos, stalled)

    # the controller knows how far the primary got before it dies
    def reported():
        m = d.members()
        return m["eu"]["position"] >= eu_pos and m
    h.wait_until(reported, 20, interval_s=0.1, what="eu's agent to report its position")
    ms = d.members()
    assert ms["us"]["replay_position"] < eu_pos - MAX_LAG, ms
    code, ev0 = d.any_controller().get("/v1/events?limit=1000")
    after = ev0["last_id"]

    t_kill = time.monotonic()
    d.agents["eu"].kill9()
    d.pg["eu"].kill9()

    def lag_alert():
        code, ev = d.any_controller().get("/v1/events?after=%d&limit=1000" % after)
        if code != 200:
            return None
        return [e for e in ev["events"] if e["kind"] == "alert"
                and (e["detail"] or {}).get("reason") == "lag_exceeded"]
    alerts = h.wait_until(lag_alert, 40, interval_s=0.2, what="an alert lag_exceeded")
    h.log("alert after %.1f s: %s" % (time.monotonic() - t_kill, alerts[0]["message"]))
    assert alerts[0]["service"] == "orders" and alerts[0]["actor"] == "meridian", alerts

    # well past node_timeout 3 s + grace 2 s + isolation 4 s + margin 1 s,
    # and a while after the alert however late it came on a loaded machine
    until = max(t_kill + 14, time.monotonic() + 3)
    while time.monotonic() < until:
        assert d.latest_operation() is None, "failover despite lag: %s" % d.latest_operation()
        time.sleep(0.5)
    svc = d.service(d.leader())
    assert svc["primary_region"] == "eu" and svc["operation"] is None, svc
    dec = svc["decision"]
    assert dec["decision"] == "alert" and dec["reason"] == "lag_exceeded", dec

    leader = d.leader()
    code, plan = leader.get("/v1/services/orders/plan")
    assert code == 200, plan
    assert plan["decision"] == "alert" and plan["reason"] == "lag_exceeded", plan
    assert plan["would_act"] is False, plan
    cands = {c["region"]: c for c in plan["candidates"]}
    assert set(cands) == {"us", "ap"}, plan
    for r, c in cands.items():
        assert c["reason"] in ("lag_bytes_exceeded", "lag_ms_exceeded"), "%s: %s" % (r, c)
        assert not c["acceptable"] and not c["chosen"], c
        assert c["lag_bytes"] is not None and c["lag_bytes"] > MAX_LAG, c
    # the dry run of the forced failover accepts ap
    code, fplan = leader.get("/v1/services/orders/plan?to=ap&force=true")
    assert code == 200, fplan
    assert fplan["decision"] in ("failover", "wait"), fplan
    assert fplan["target_region"] == "ap", fplan
    # without force, the same request is refused
    code, body = leader.post("/v1/services/orders/failover", {"to": "ap"})
    assert code == 422, (code, body)
    assert body["error"]["code"] == "lag_exceeded", body

    op_id = d.start_op("failover", to="ap", force=True, ctl=leader, retry_s=10)
    op = d.wait_op(op_id, 60, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), "forced failover ended in %s: %s" % (op["step"], op)
    assert op["kind"] == "failover" and op["to_region"] == "ap" and op["actor"] == "ops", op
    assert op["lost_bytes"] is not None and op["lost_bytes"] > MAX_LAG, op
    h.wait_until(lambda: d.service()["primary_region"] == "ap", 20,
                 what="the service's primary in ap")
    svc = d.service()
    assert svc["primary_member"] == "orders-ap", svc
    h.wait_until(lambda: d.writable() == ["ap"], 20, what="ap alone writable")
    assert d.pg["us"].is_in_recovery(), "us was promoted too"
    assert not d.pg["ap"].is_in_recovery()


if __name__ == "__main__":
    h.run_all()
