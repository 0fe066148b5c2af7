# meridian-test: e2e
"""End to end (tests/integration/mrd_deploy.py): maintenance mode suspends
automatic decisions, not manual ones.

  maintenance_blocks_automatic_failover
      PUT /v1/services/orders/maintenance {"enabled": true, "reason": ...}
      as the operator token "ops": the service says maintenance, and the
      event log has a "maintenance" event by actor "ops" with the reason.
      The primary's agent and PostgreSQL are SIGKILLed: an "alert" event
      with reason maintenance appears, and long past node_timeout + grace +
      isolation no operation has started. A manual POST failover to us is
      accepted (202, actor ops) and completes: us is the only writable
      member. PUT maintenance off is logged too.
"""

import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test

REASON = "kernel upgrade on db-eu-1"


def put_maintenance(ctl, body, token=h.OPERATOR_TOKEN):
    return h.http_json("PUT", ctl.url + "/v1/services/orders/maintenance", body, token)


def events_after(d, after):
    code, ev = d.any_controller().get("/v1/events?after=%d&limit=1000" % after)
    assert code == 200, ev
    return ev["events"]


@test
def maintenance_blocks_automatic_failover():
    d = Deployment(profile="default")
    d.wait_ready()
    leader = d.leader()
    code, ev0 = leader.get("/v1/events?limit=1000")
    assert code == 200, ev0
    after = ev0["last_id"]

    # a viewer may not switch it on; the operator may
    code, body = put_maintenance(leader, {"enabled": True, "reason": REASON}, h.VIEWER_TOKEN)
    assert code == 403, (code, body)
    code, body = put_maintenance(leader, {"enabled": True, "reason": REASON})
    assert code == 200 and body == {"maintenance": True}, (code, body)
    svc = d.service()
    assert svc["maintenance"] is True and svc["maintenance_reason"] == REASON, svc
    ev = [e for e in events_after(d, after) if e["kind"] == "maintenance"]
    assert len(ev) == 1, ev
    assert ev[0]["actor"] == "ops" and ev[0]["service"] == "orders", ev
    assert REASON in ev[0]["message"] and ev[0]["detail"]["enabled"] is True, ev

    t_kill = time.monotonic()
    d.agents["eu"].kill9()
    d.pg["eu"].kill9()

    def maint_alert():
        return [e for e in events_after(d, after) if e["kind"] == "alert"
                and (e["detail"] or {}).get("reason") == "maintenance"]
    alerts = h.wait_until(maint_alert, 40, interval_s=0.2, what="an alert with reason maintenance")
    h.log("alert after %.1f s: %s" % (time.monotonic() - t_kill, alerts[0]["message"]))
    assert alerts[0]["actor"] == "meridian", alerts

    # node_timeout 3 s + grace 2 s + isolation 4 s + margin 1 s, and more,
    # and a while after the alert however late it came on a loaded machine
    until = max(t_kill + 14, time.monotonic() + 3)
    while time.monotonic() < until:
        assert d.latest_operation() is None, "automatic failover in maintenance: %s" \
            % d.latest_operation()
        time.sleep(0.5)
    leader = d.leader()
    dec = d.service(leader)["decision"]
    assert dec["decision"] == "alert" and dec["reason"] == "maintenance", dec
    # the dry run of a manual failover is not blocked by maintenance
    code, plan = leader.get("/v1/services/orders/plan?to=us")
    assert code == 200 and plan["decision"] in ("failover", "wait"), plan
    assert plan["target_region"] == "us", plan

    op_id = d.start_op("failover", to="us", ctl=leader, retry_s=10)
    op = d.wait_op(op_id, 60, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), "manual failover ended in %s: %s" % (op["step"], op)
    assert op["kind"] == "failover" and op["actor"] == "ops" and op["to_region"] == "us", op
    h.wait_until(lambda: d.service()["primary_region"] == "us", 20, what="primary in us")
    h.wait_until(lambda: d.writable() == ["us"], 20, what="us alone writable")
    assert d.service()["maintenance"] is True, "the failover must not end maintenance"

    code, body = put_maintenance(d.leader(), {"enabled": False})
    assert code == 200 and body == {"maintenance": False}, (code, body)
    ev = [e for e in events_after(d, after) if e["kind"] == "maintenance"]
    assert len(ev) == 2 and ev[1]["detail"]["enabled"] is False and ev[1]["actor"] == "ops", ev
    assert d.service()["maintenance"] is False


if __name__ == "__main__":
    h.run_all()
