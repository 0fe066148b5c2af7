# meridian-test: e2e
"""End to end (tests/integration/mrd_deploy.py): the leader controller dies
in the middle of a switchover, and a new leader finishes the same operation.

  leader_dies_in_catchup
      replay is paused on the target (us) so that the switchover eu -> us
      stops in its catchup step (the barrier, eu's final position, is not
      replayed); the leader is SIGKILLed there; once a new leader with a
      higher term is agreed, replay resumes. The new leader carries the SAME
      operation (same id, same epoch) through promote to the end: the
      primary is us, the service's epoch is the operation's, no operation
      was started besides it, the steps after catchup were recorded under
      the new term, and no write acknowledged to the client is missing on us.
"""

import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


@test
def leader_dies_in_catchup():
    d = Deployment(profile="default")
    d.wait_ready()
    d.writer_start()
    time.sleep(1.0)
    old_leader, old_term = h.wait_for_leader(d.controllers(), 30)
    epoch0 = d.service()["epoch"]

    d.pg["us"].pause_replay()
    op_id = d.start_op("switchover", to="us", ctl=old_leader, retry_s=10)
    op = d.wait_op(op_id, 30, until=("catchup", "rollback", "done", "aborted", "failed"))
    assert op["step"] == "catchup", "switchover did not stop in catchup: %s" % op
    assert op["epoch"] == epoch0 + 1, op
    # still there a moment later: the barrier really is not replayed
    time.sleep(0.5)
    assert d.operation(op_id)["step"] == "catchup", d.operation(op_id)

    h.log("SIGKILL the leader %s (term %s) in catchup" % (old_leader.name, old_term))
    old_leader.kill9()
    new_leader, new_term = h.wait_for_leader(d.controllers(), 40, min_term=old_term)
    assert new_leader is not old_leader
    h.log("new leader %s (term %s)" % (new_leader.name, new_term))
    # the new leader holds the operation in catchup until the target replays
    op = d.operation(op_id)
    assert op["step"] == "catchup", "moved before replay resumed: %s" % op
    d.pg["us"].resume_replay()

    op = d.wait_op(op_id, 60, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), "switchover ended in %s: %s" % (op["step"], op)
    assert str(op["id"]) == str(op_id) and op["epoch"] == epoch0 + 1, op
    assert op["kind"] == "switchover" and op["to_region"] == "us", op
    steps = [s["step"] for s in op["steps"]]
    for s in ("plan", "fence", "catchup", "promote"):
        assert s in steps, "step %s missing: %s" % (s, steps)
    # one fence (by the old leader) and one promote (by the new), both done
    cmds = {}
    for c in op["commands"]:
        cmds.setdefault(c["kind"], []).append(c)
    for kind, node in (("fence", "node-eu"), ("promote", "node-us")):
        assert len(cmds.get(kind, [])) == 1, op["commands"]
        c = cmds[kind][0]
        assert c["status"] == "done" and c["node"] == node and c["epoch"] == epoch0 + 1, c

    h.wait_until(lambda: d.writes and d.writes[-1][2] == d.pg["us"].port, 30,
                 what="writes acknowledged by us")
    time.sleep(0.5)
    d.writer_stop()

    svc = d.service()
    assert svc["primary_region"] == "us", svc
    assert svc["epoch"] == epoch0 + 1, "one operation, one epoch: %s" % svc
    code, body = d.any_controller().get("/v1/operations?service=orders")
    assert code == 200, body
    assert [str(o["id"]) for o in body["operations"]] == [str(op_id)], body
    # the new leader persisted the steps from catchup on
    code, ev = d.any_controller().get("/v1/events?limit=1000")
    assert code == 200, ev
    moves = [e for e in ev["events"] if e["kind"] == "operation.step"
             and str((e["detail"] or {}).get("operation")) == str(op_id)]
    promote = [e for e in moves if e["detail"].get("from") == "catchup"]
    assert len(promote) == 1, "catchup left once: %s" % moves
    assert promote[0]["detail"].get("to") == "promote", promote
    assert promote[0]["term"] == new_term, "catchup -> promote not by the new leader: %s" % promote
    assert promote[0]["actor"] == new_leader.name, promote
    lost = d.lost_writes("us")
    assert not lost, "acknowledged writes lost: %s" % lost[:10]
    assert d.writable() == ["us"], d.writable()
    h.log("%d writes, %d errors, none lost" % (len(d.writes), d.write_errors))


if __name__ == "__main__":
    h.run_all()
