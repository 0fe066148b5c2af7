# meridian-test: e2e
"""End to end (tests/integration/mrd_deploy.py, profile default, rejoin=True):
a whole region frozen with its primary acknowledges a write in the instant
it resumes, after its replacement was promoted. Nobody can prevent that with
asynchronous replication (docs/diverged.md); Meridian must detect and report
it.

  frozen_region_write_after_failover_is_reported
      eu's agent, controller, postmaster and every backend are stopped with
      SIGSTOP while a client's INSERT waits on eu (its backend is frozen
      first, then the INSERT is sent: it waits in the socket). A forced
      failover to us waits out the isolation time and promotes us; the
      operation completes with its rejoin pending. Then the eu processes
      resume: eu commits and acknowledges the waiting INSERT, its agent
      fences it (superseded) and the queued rejoin rewinds it. Checked: the
      operation reports the divergence (fork, the old primary's position,
      diverged_bytes and written_after_failover_bytes, consistent with each
      other and with the LSN eu really reached), the audit log has an
      operation.diverged event, the metric counts it, meridianctl's
      operation view shows it, the INSERT's row is not on us, and eu follows
      us after the rejoin.
"""

import os
import signal
import threading
import time
import urllib.request

import psycopg2

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def eu_processes(d):
    """eu's agent and controller; its postmaster and children (backends and
    auxiliary processes), all ours."""
    pm = d.pg["eu"].postmaster_pid()
    assert pm is not None, "eu's postmaster is not running"
    return [d.agents["eu"].proc.pid, d.ctl["eu"].proc.pid], [pm] + h._children_of(pm)


def leader_of(d, regions=("us", "ap")):
    """The leader among the controllers of regions (eu's may be frozen: the
    deployment's helpers that ask every controller would wait on it)."""
    return h.wait_for_leader([d.ctl[r] for r in regions], 30)[0]


def force_failover(d, to, timeout_s=40):
    """POST a forced failover to the leader among us and ap; a leader that
    has just taken over may answer 503 (no leader known yet) or 422 (its
    view is not complete yet) for a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        ctl = leader_of(d)
        code, res = h.http_json("POST", ctl.url + "/v1/services/orders/failover",
                                {"to": to, "force": True}, h.OPERATOR_TOKEN)
        if code == 202:
            return res["operation"]
        if code not in (307, 421, 422, 503) or time.monotonic() >= deadline:
            raise h.HarnessError("failover: %s %s" % (code, res))
        h.log("failover refused for now (%s %s), retrying" % (code, res))
        time.sleep(0.3)


def operation(ctl, op_id):
    code, body = ctl.get("/v1/operations/%s" % op_id)
    return body if code == 200 else None


def members(ctl):
    code, body = ctl.get("/v1/services/orders")
    if code != 200:
        return None
    return {m["region"]: m for m in body["members"]}


@test
def frozen_region_write_after_failover_is_reported():
    d = Deployment(profile="default", rejoin=True)
    d.wait_ready()
    epoch = d.service()["epoch"]
    eu = d.pg["eu"]
    eu.sql("INSERT INTO writes (id) VALUES (1), (2)")
    # the write that will wait on eu, and a connection to read eu's end of
    # WAL after it resumes: both opened before the freeze
    waiter = eu.connect()
    observer = eu.connect()
    with waiter.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        waiter_pid = cur.fetchone()[0]
    with observer.cursor() as cur:
        cur.execute("SET statement_timeout = '2s'")

    # the leader knows eu's last position: what the failover will count
    lsn0 = eu.current_lsn()
    us_ctl = d.ctl["us"]  # answers for the whole test, also while eu is frozen
    h.wait_until(lambda: (members(us_ctl)["eu"].get("position") or 0) >= lsn0, 20,
                 what="eu's position %x reported" % lsn0)

    # freeze the waiting INSERT's backend, send the INSERT (it waits in the
    # socket), then freeze the rest of the region
    frozen = [waiter_pid]
    acked = {}

    def insert():
        try:
            with waiter.cursor() as cur:
                cur.execute("INSERT INTO writes (id) VALUES (424242)")
            acked["at"] = time.monotonic()
        except psycopg2.Error as e:
            acked["error"] = str(e).strip()

    t = threading.Thread(target=insert, name="waiting-insert", daemon=True)
    meridian, pg = eu_processes(d)
    try:
        os.kill(waiter_pid, signal.SIGSTOP)
        t.start()
        time.sleep(0.2)
        assert t.is_alive(), "the INSERT did not wait: %s" % acked
        with observer.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()::text")
            lsn_freeze = lsn_int(cur.fetchone()[0])
        # the postmaster first (it forks no backend any more), then the
        # agent and the controller, then every child of the postmaster (one
        # may exit meanwhile: a check's short connection)
        for pid in [pg[0]] + meridian:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        for pid in h._children_of(pg[0]):
            if pid not in frozen:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    frozen.append(pid)
                except ProcessLookupError:
                    pass
        t_freeze = time.monotonic()
        h.log("eu frozen: %d processes" % len(frozen))

        # a forced failover to us: eu is silent, so it waits out the isolation
        op_id = force_failover(d, "us")
        h.log("failover %s started %.1f s after the freeze" % (op_id, time.monotonic() - t_freeze))
        h.wait_until(lambda: "us" in d.writable(), 60, what="us accepting writes")
        op = h.wait_until(lambda: (o := operation(us_ctl, op_id)) and o["step"] in (
            "done", "aborted", "failed") and o, 60, what="operation %s finished" % op_id)
        assert op["step"] == "done" and op["rejoin_pending"], op
        assert not op["diverged"], "divergence reported before eu resumed: %s" % op
        h.log("failover done %.1f s after the freeze: lost %s, fork %s, old last %s" % (
            time.monotonic() - t_freeze, op["lost_bytes"], op["fork_position"],
            op["old_last_position"]))
    finally:
        # PostgreSQL first (as a resumed VM would run it), then the agent
        for pid in frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    t.join(20)
    assert not t.is_alive(), "the waiting INSERT never returned"
    # eu's end of WAL right after the write (its agent fences and the rejoin
    # stops it soon: a failure to read is not fatal, the position is then
    # taken from before the freeze)
    observed = lsn0
    try:
        with observer.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()::text")
            observed = lsn_int(cur.fetchone()[0])
    except psycopg2.Error as e:
        h.log("eu's position after the resume not read: %s" % str(e).strip())
    h.log("waiting INSERT: %s; eu reached %x (before the freeze %x)" % (
        "acknowledged by eu" if "at" in acked else "failed: %s" % acked.get("error"),
        observed, lsn0))

    def diverged():
        o = operation(us_ctl, op_id)
        return o if o and o.get("diverged") else None
    if "at" in acked:
        # the unpreventable write happened: it must be reported
        op = h.wait_until(diverged, 30, what="operation %s reporting the divergence" % op_id)
        h.log("first reported: eu at %x" % op["old_seen_position"])

        # the figures grow to what eu really wrote once its fence reports
        # its final position (an earlier report may be from mid-write)
        def counted_all():
            o = operation(us_ctl, op_id)
            return o if o and (o.get("old_seen_position") or 0) >= observed else None
        op = h.wait_until(counted_all, 30, what="operation %s counting eu's WAL up to %x" % (
            op_id, observed))
    else:
        # no write acknowledged: whatever the op reports must be true of eu
        time.sleep(3)
        op = operation(us_ctl, op_id)
        h.log("no acknowledged write after the resume; the op says diverged=%s" % op["diverged"])
    fork, old_last = op["fork_position"], op["old_last_position"]
    assert fork and 0 < fork <= lsn_freeze, \
        "fork %s not within what eu had written (%x)" % (fork, lsn_freeze)
    if op["diverged"]:
        seen = op["old_seen_position"]
        assert seen > max(old_last, fork), op
        assert op["diverged_bytes"] == seen - fork, op
        assert op["written_after_failover_bytes"] == seen - max(old_last, fork), op
        h.log("reported: diverged %d bytes past the fork, %d written after the failover" % (
            op["diverged_bytes"], op["written_after_failover_bytes"]))

        # the audit event, at level error, naming the op and the member
        def event():
            code, body = us_ctl.get("/v1/events?service=orders&limit=1000")
            if code != 200:
                return None
            evs = [e for e in body["events"] if e["kind"] == "operation.diverged"]
            return evs[0] if evs else None
        ev = h.wait_until(event, 20, what="an operation.diverged event")
        det = ev["detail"]
        assert det["level"] == "error" and det["operation"] == int(op_id), ev
        assert det["member"] == "orders-eu" and det["region"] == "eu", ev
        assert det["diverged_bytes"] > 0 and det["written_after_failover_bytes"] > 0, ev
        # the leader counted it
        leader = leader_of(d, ("eu", "us", "ap"))
        text = urllib.request.urlopen(leader.url + "/metrics", timeout=5).read().decode()
        line = [x for x in text.splitlines()
                if x.startswith('meridian_diverged_operations_total{service="orders"}')]
        assert line and int(line[0].split()[-1]) >= 1, line
        # meridianctl's operation view says so
        cp = h.run([h.program_path("meridianctl"), "--url", us_ctl.url, "--token",
                    h.OPERATOR_TOKEN, "--no-color", "operations", str(op_id)], check=False)
        assert "DIVERGED" in cp.stdout, cp.stdout
    elif observed > max(old_last, fork):
        h.log("eu wrote %d bytes of WAL after the resume without a client write" % (
            observed - max(old_last, fork)))

    # the write acknowledged by eu after the failover is not on us
    assert not d.pg["us"].sql("SELECT 1 FROM writes WHERE id = 424242"), \
        "the write eu took after the failover is on us"

    # the rejoin rewound eu: it follows us
    def follows_us():
        m = (members(us_ctl) or {}).get("eu") or {}
        return (m.get("role") == "replica" and not m.get("fenced")
                and (m.get("epoch_seen") or 0) >= epoch + 1) and m
    h.wait_until(follows_us, 60, what="eu reporting replica after its rejoin")
    assert eu.is_in_recovery()
    h.wait_until(lambda: eu.wal_receiver_status() == "streaming", 30, what="eu streaming from us")
    assert not eu.sql("SELECT 1 FROM writes WHERE id = 424242"), "the rewind kept eu's write"
    assert d.writable() == ["us"], d.writable()
    for c in (waiter, observer):
        try:
            c.close()
        except psycopg2.Error:
            pass


if __name__ == "__main__":
    h.run_all()
