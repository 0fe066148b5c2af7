# meridian-test: e2e
"""The frozen-primary write, end to end (three regions on loopback,
tests/integration/mrd_deploy.py, profile fast, fence mode demote):

  frozen_primary   eu's PostgreSQL (postmaster and every backend) is stopped
                   with SIGSTOP for 15 s while a client's INSERT waits on it
                   and the writer runs. The leader fails over; eu's agent
                   kills the frozen server before its fence is reported done
                   (demote), so when the 15 s are over (SIGCONT) nothing of
                   it is left to resume: the waiting INSERT is never
                   acknowledged, no write is acknowledged by eu after the
                   freeze began, and the new primary stays the only
                   writable member for 10 s after the operation.

With fence mode read_only the same run acknowledged the waiting INSERT on
eu after the new primary was promoted (test_fence.py explains how).
"""

import os
import signal
import threading
import time

import psycopg2

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


@test
def frozen_primary():
    d = Deployment(profile="fast")
    # The profile's 125 ms check timeout cannot connect on a loaded machine
    # (2 cores shared by several test runs): the checks get 400 ms and the
    # agents' requests 1 s (below the 1.5 s isolation timeout). Detection
    # of the freeze is then slower, which this test does not measure.
    for a in d.agents.values():
        checks = [dict(c, interval_ms=500, timeout_ms=400) for c in a.cfg["checks"]]
        a.write_config(checks=checks, request_timeout_ms=1000)
        h.wait_until(lambda: "agent started" in a.proc.log_text(), 30,
                     what="%s started before its restart" % a.name)
        assert a.stop() == 0
        a.start()
    d.wait_ready(timeout_s=120)
    d.writer_start()
    time.sleep(1.0)
    eu = d.pg["eu"]
    waiting = {"outcome": None}
    conn = eu.connect()  # forked before the freeze: its backend is frozen too

    def insert():
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO writes (id) VALUES (1)")
            waiting["outcome"] = "acknowledged"
            waiting["at"] = time.monotonic()
        except psycopg2.Error as ex:
            waiting["outcome"] = "error: %s" % str(ex).strip()

    pm = eu.postmaster_pid()
    pids = []
    for p in [pm] + h._children_of(pm):
        try:
            os.kill(p, signal.SIGSTOP)
            pids.append(p)
        except ProcessLookupError:
            pass
    frozen_at = time.monotonic()
    t = threading.Thread(target=insert, daemon=True)
    t.start()
    try:
        def failed_over():
            svc = d.service()
            return svc and svc["primary_region"] != "eu" and svc
        svc = h.wait_until(failed_over, 40, interval_s=0.1, what="a failover away from eu")
        new = svc["primary_region"]
        h.wait_until(lambda: d.writes and d.writes[-1][2] == d.pg[new].port, 30,
                     what="writes acknowledged by %s" % new)
        first_new = min(w[1] for w in d.writes if w[2] == d.pg[new].port)
        h.log("failover to %s: first write on it %.1f s after the freeze"
              % (new, first_new - frozen_at))
        left = [p for p in pids if h.pid_alive(p)]
        assert not left, "eu's frozen processes survived its fence: %s" % left
        time.sleep(max(0.0, frozen_at + 15.0 - time.monotonic()))
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
    t.join(30)
    assert not t.is_alive(), "the INSERT on eu is still waiting"
    h.log("the INSERT that waited on eu: %s" % waiting["outcome"])
    assert waiting["outcome"] != "acknowledged", waiting
    op = d.latest_operation()
    assert op and op["kind"] == "failover", op
    # the new primary stays the only writable member for 10 s
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        w = d.writable()
        assert w == [new], "writable members %s after the failover to %s" % (w, new)
        time.sleep(0.5)
    d.writer_stop()
    late = [w for w in d.writes if w[2] == eu.port and w[1] >= frozen_at]
    assert not late, "writes acknowledged by eu after the freeze: %s" % late[:5]
    assert 1 not in {r[0] for r in d.pg[new].sql("SELECT id FROM writes WHERE id = 1")}
    # eu's member: demoted, reported fenced, its server back as a standby
    ms = {m["region"]: m for m in d.service()["members"]}
    h.log("eu after the failover: %s" % ms.get("eu"))
    h.wait_until(lambda: eu.running() and eu.is_in_recovery(), 60,
                 what="eu's server back as a standby")
    assert 1 not in {r[0] for r in eu.sql("SELECT id FROM writes WHERE id = 1")}
    lost = d.lost_writes(new)
    h.log("failover: %d writes, %d errors, %d acknowledged writes missing on %s"
          % (len(d.writes), d.write_errors, len(lost), new))
    try:
        conn.close()
    except psycopg2.Error:
        pass


if __name__ == "__main__":
    h.run_all()
