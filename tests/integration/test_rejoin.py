# meridian-test: e2e
"""End to end (tests/integration/mrd_deploy.py with rejoin=True): the old
primary rejoins as a replica of the new one through deploy/hooks/pg-rejoin
(run by its agent for the operation's rejoin command: pg_rewind, standby
configuration, restart), and the service can switch back.

  switchover_rejoin_and_back
      switchover eu -> us under a writer: the operation ends "done" without
      rejoin_pending, its rejoin command is done, eu's PostgreSQL is in
      recovery streaming from us and its member reports role replica,
      unfenced, at the new epoch; then a switchover us -> eu works too (eu's
      rejoin made it a valid target, and us rejoins in turn): no
      acknowledged write is lost and eu is the only writable member.
"""

import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


def switchover(d, src, dst, epoch):
    t0 = time.monotonic()
    op_id = d.start_op("switchover", to=dst, retry_s=10)
    op = d.wait_op(op_id, 80)
    h.log("switchover %s -> %s: %s in %.1f s" % (src, dst, op["step"], time.monotonic() - t0))
    assert op["step"] == "done", "switchover %s -> %s ended in %s: %s" % (src, dst, op["step"], op)
    assert op["outcome"] and op["epoch"] == epoch + 1, op
    assert not op["rejoin_pending"], "rejoin left pending: %s" % op
    rejoin = [c for c in op["commands"] if c["id"].endswith("/rejoin/rejoin")]
    assert len(rejoin) == 1 and rejoin[0]["status"] == "done", op["commands"]
    assert rejoin[0]["node"] == "node-" + src, rejoin
    # the third member was told to follow the new primary (no restart)
    follow = [c for c in op["commands"] if "/rejoin/follow-" in c["id"]]
    assert len(follow) == 1 and follow[0]["status"] == "done", op["commands"]
    # the old primary follows the new one
    assert d.pg[src].is_in_recovery(), "%s is not in recovery" % src
    h.wait_until(lambda: d.pg[src].wal_receiver_status() == "streaming", 30,
                 what="%s streaming from %s" % (src, dst))
    conninfo = d.pg[src].sql_value("SELECT conninfo FROM pg_stat_wal_receiver")
    assert "port=%d" % d.pg[dst].port in conninfo, conninfo

    def reports_replica():
        m = d.members()[src]
        return (m["role"] == "replica" and not m["fenced"] and m["healthy"]
                and m["epoch_seen"] >= epoch + 1) and m
    h.wait_until(reports_replica, 20, what="%s reporting replica" % src)
    svc = d.service()
    assert svc["primary_region"] == dst and svc["epoch"] == epoch + 1, svc
    return op


@test
def switchover_rejoin_and_back():
    d = Deployment(profile="default", rejoin=True,
                   policy={"rejoin_timeout_ms": 60000})
    d.wait_ready()
    epoch = d.service()["epoch"]
    d.writer_start()
    time.sleep(1.0)

    switchover(d, "eu", "us", epoch)
    h.wait_until(lambda: d.writes and d.writes[-1][2] == d.pg["us"].port, 30,
                 what="writes acknowledged by us")
    # what us commits reaches the rejoined eu: every write acknowledged
    # before the LSN we wait for (the writer goes on meanwhile, so later
    # acknowledgements may not have been replayed yet)
    acked = list(d.writes)
    lsn = d.pg["us"].current_lsn()
    d.pg["eu"].wait_replayed(lsn, 30)
    lost = d.lost_writes("eu", acked)
    assert not lost, "eu misses acknowledged writes after its rejoin: %s" % lost[:10]
    # the controller sees eu as a valid candidate again
    h.wait_until(lambda: d.service(d.leader())["decision"]["reason"] == "ok", 20,
                 what="the leader's decision ok")
    # ... once its agent reports the restarted member healthy (its check runs
    # on its own schedule after the hook restarted PostgreSQL)
    def plan_accepts_eu():
        code, plan = d.leader().get("/v1/services/orders/plan?to=eu")
        return code == 200 and plan["decision"] == "failover" and \
            plan.get("target_region") == "eu" and plan
    h.wait_until(plan_accepts_eu, 30, what="the plan accepting eu as a target")

    switchover(d, "us", "eu", epoch + 1)
    h.wait_until(lambda: d.writes and d.writes[-1][2] == d.pg["eu"].port, 30,
                 what="writes acknowledged by eu again")
    time.sleep(0.5)
    d.writer_stop()
    lost = d.lost_writes("eu")
    assert not lost, "acknowledged writes lost: %s" % lost[:10]
    assert d.writable() == ["eu"], d.writable()
    d.pg["us"].wait_replayed(d.pg["eu"].current_lsn(), 30)
    assert not d.lost_writes("us")
    h.log("%d writes, %d errors, none lost" % (len(d.writes), d.write_errors))


if __name__ == "__main__":
    h.run_all()
