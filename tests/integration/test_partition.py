# meridian-test: e2e
"""Partitions, with each region and the store in a network namespace of its
own (mrd_deploy.Deployment(netns=True), tests/integration/netns.py), profile
fast, a writer (every 20 ms, multi-host DSN from the bridge's namespace) and
a Sampler (one write per member every 100 ms from inside its region):

  primary_region_isolated   eu's link to the bridge down (nothing in or out)
                            for 8 s: us takes over (failover), eu's agent
                            fences eu (it still hears its own region's
                            controller, which has no store), never two
                            members accepting writes; the writer's losses are
                            what the failover reports; after the heal eu
                            stays refused
  controllers_cut_from_primary
                            eu's agent reaches no controller (every
                            controller's port dropped in eu's namespace) for
                            10 s while the other regions still reach eu's
                            PostgreSQL and agent: no failover (the vantage
                            quorum sees eu up) and eu stays writable (peer
                            leases from us and ap)

Without root or iproute2/iptables these tests FAIL (netns.require()).
"""

import time

import meridian_harness as h
from mrd_deploy import start_netns

test = h.test


@test
def primary_region_isolated():
    d, s = start_netns()
    eu_port = d.pg["eu"].port
    epoch0 = d.service()["epoch"]
    t0, m0 = time.time(), time.monotonic()
    d.net.cut("eu")
    h.log("eu cut off from every other namespace")
    # the others fail over: the writer (outside eu) acknowledges writes on
    # a new primary
    h.wait_until(lambda: any(w[2] != eu_port and w[1] > m0 for w in list(d.writes)), 60,
                 what="writes acknowledged by a new primary")
    t_first = next(w[1] for w in list(d.writes) if w[2] != eu_port and w[1] > m0)
    h.log("first write on the new primary %.2f s after the cut" % (t_first - m0))
    # eu's agent fences eu: its local sampler is refused
    h.wait_until(lambda: s.of("eu", "ro", since=t0), 30, what="eu refusing writes (fenced)")
    t_fenced = s.of("eu", "ro", since=t0)[0][1]
    last_eu_ok = max([x[3] for x in s.of("eu", "ok")] or [0])
    h.log("eu refused its first write %.2f s after the cut; its last accepted write %.2f s "
          "after" % (t_fenced - t0, last_eu_ok - t0))
    time.sleep(3)                           # the partition goes on
    d.net.heal("eu")
    h.log("eu healed")
    time.sleep(3)
    d.writer_stop()
    s.stop()
    d.log_timeline(s, t0)
    svc = d.service()
    assert svc["primary_region"] == "us", "us has the higher priority: %s" % svc
    assert svc["epoch"] > epoch0, svc
    ops = [o for o in d.operations() if o["kind"] == "failover"]
    assert len(ops) == 1, "exactly one failover: %s" % ops
    op = d.wait_op(ops[0]["id"], 30, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), op
    s.assert_ok()
    # after the heal the old primary stays refused (superseded)
    late = s.of("eu", since=time.time() - 2.5)
    assert late and all(x[4] != "ok" for x in late), "eu accepted writes after the heal: %s" % (
        [x for x in late if x[4] == "ok"][:3])
    # refused before the heal, when nothing could reach eu: eu's own agent
    # fenced it
    assert "isolated: fencing the primary" in d.agents["eu"].proc.log_text(), \
        d.agents["eu"].log_tail(30)
    # the writer's losses are what the failover reports
    d.check_failover(op, "us")
    # what eu acknowledged to its own region's clients after the cut and
    # before it fenced itself never reached us: the asynchronous window the
    # isolation timeout bounds; the operation cannot see it (eu was silent)
    lost = s.lost_rows("eu", "us", since=t0)
    h.log("eu acknowledged %d sampler writes after the cut that us never got (last %.2f s "
          "after the cut); the failover reports lost_bytes %s"
          % (len(lost), max([x[3] - t0 for x in lost] or [0]), op.get("lost_bytes")))


@test
def controllers_cut_from_primary():
    d, s = start_netns()
    epoch0 = d.service()["epoch"]
    ops0 = len(d.operations())
    t0 = time.time()
    for r in ("eu", "us", "ap"):
        c = d.ctl[r]
        d.net.iptables("eu", "-A", "OUTPUT", "-p", "tcp", "-d", c.host, "--dport", c.port,
                       "-j", "DROP")
    h.log("eu's namespace drops every packet to a controller's port")
    time.sleep(10)
    # eu's agent has no contact: its controllers see its heartbeat age grow
    ms = d.members()
    h.log("members during the cut: %s" % {r: (m["role"], m["age_ms"], m["healthy"])
                                           for r, m in ms.items()})
    d.net.clear_rules("eu")
    h.log("eu's rules removed")
    h.wait_until(lambda: d.members()["eu"]["age_ms"] < 3 * d.heartbeat_ms, 30,
                 what="eu's agent heard again")
    time.sleep(1)
    d.writer_stop()
    s.stop()
    d.log_timeline(s, t0)
    assert ms["eu"]["age_ms"] > 5000, "eu's agent still reached a controller: %s" % ms
    svc = d.service()
    assert svc["primary_region"] == "eu" and svc["epoch"] == epoch0, (
        "the controllers failed over although us and ap still reached eu: %s" % svc)
    assert len(d.operations()) == ops0, d.operations()[:3]
    s.assert_ok()
    refused = s.of("eu", "ro", since=t0)
    assert not refused, ("eu refused writes while only its controllers were cut off "
                         "(its peer leases from us and ap should keep it writable): %d "
                         "refusals, first %.2f s after the cut: %s"
                         % (len(refused), refused[0][1] - t0, refused[0][5]))
    d.check_switchover("eu")     # no failover: every acknowledged write is on eu


if __name__ == "__main__":
    h.run_all()
