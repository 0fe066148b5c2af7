# meridian-test: e2e
"""End to end, three regions on loopback (tests/integration/mrd_deploy.py):

  switchover      eu -> us under a writer that commits every 20 ms: the
                  operation completes, the new primary is us, no
                  acknowledged write is lost, and at no sample were two
                  members writable
  failover        SIGKILL eu's PostgreSQL and agent: the controller fails
                  over to a replica by itself and the writer resumes on it;
                  when eu comes back its agent fences it (superseded)
"""

import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


def two_writable_sampler(d, stop, seen):
    import threading

    def loop():
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            w = d.writable()
            if len(w) > 1:
                seen.append(w)
            stop.wait(0.05)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


@test
def switchover():
    import threading
    d = Deployment(profile="default")
    d.wait_ready()
    d.writer_start()
    time.sleep(1.0)
    stop, seen = threading.Event(), []
    sampler = two_writable_sampler(d, stop, seen)
    t0 = time.monotonic()
    op_id = d.start_op("switchover", to="us")
    op = d.wait_op(op_id, 60, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), "switchover ended in %s: %s" % (op["step"], op)
    h.wait_until(lambda: d.writes and d.writes[-1][2] == d.pg["us"].port, 30,
                 what="writes acknowledged by us")
    time.sleep(0.5)
    d.writer_stop()
    stop.set()
    sampler.join(5)
    gap, before, after, _ = d.write_gap(t0)
    h.log("switchover: write gap %.3f s (port %s -> %s), %d writes, %d errors"
          % (gap, before, after, len(d.writes), d.write_errors))
    lost = d.lost_writes("us")
    assert not lost, "acknowledged writes lost on switchover: %s" % lost[:10]
    assert not seen, "two writable members at once: %s" % seen[:3]
    svc = d.service()
    assert svc["primary_region"] == "us", svc
    assert svc["epoch"] >= 2, svc
    # the switchover's barrier is a checkpoint that shows when us reached it
    code, cps = d.any_controller().get(
        "/v1/services/orders/checkpoints?kind=barrier&operation=%s" % op_id)
    assert code == 200, cps
    barriers = cps["checkpoints"]
    assert len(barriers) == 1 and "us" in barriers[0]["reached"], cps
    assert barriers[0]["epoch"] == svc["epoch"], cps
    # the other replica now streams from the new primary (rejoin step: follow)
    h.wait_until(lambda: d.pg["ap"].sql_value("SELECT sender_port FROM pg_stat_wal_receiver")
                 == d.pg["us"].port, 30, what="ap streams from us")
    # /metrics (open, Prometheus text format) tells the same from the leader
    leader = d.leader()
    import urllib.request
    text = urllib.request.urlopen(leader.url + "/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples.get("meridian_is_leader") == 1.0, text
    assert samples.get('meridian_service_epoch{service="orders"}') == float(svc["epoch"]), text
    assert samples.get('meridian_service_primary{service="orders",region="us"}') == 1.0, text
    assert "# TYPE meridian_heartbeats_total counter" in text, text


@test
def failover_after_kill():
    d = Deployment(profile="default")
    d.wait_ready()
    d.writer_start()
    time.sleep(1.0)
    t0 = time.monotonic()
    d.agents["eu"].kill9()
    d.pg["eu"].kill9()
    h.wait_until(lambda: d.writes and d.writes[-1][2] != d.pg["eu"].port, 60,
                 what="writes acknowledged by a new primary")
    t_first = next(w[1] for w in d.writes if w[1] > t0 and w[2] != d.pg["eu"].port)
    h.log("failover: first write on the new primary %.3f s after the kill" % (t_first - t0))
    d.writer_stop()
    h.wait_until(lambda: d.service()["primary_region"] != "eu", 30,
                 what="the service's primary moved away from eu")
    svc = d.service()
    assert svc["primary_region"] == "us", "us has the higher priority: %s" % svc
    lost = d.lost_writes("us")
    h.log("failover: %d acknowledged writes lost (bounded by max_lag)" % len(lost))
    op = d.latest_operation()
    assert op and op["kind"] == "failover", op
    assert op["actor"] == "meridian", op
    # The old primary comes back (crash recovery makes it a writable primary
    # again): its agent learns that the store names another primary in a
    # newer epoch and fences it at once.
    d.pg["eu"].start()
    d.agents["eu"].start()
    h.wait_until(lambda: "eu" not in d.writable(), 20, what="the returning old primary fenced")
    assert "superseded" in d.agents["eu"].proc.log_text(), "fenced for another reason"
    assert d.writable() == ["us"], d.writable()


if __name__ == "__main__":
    h.run_all()
