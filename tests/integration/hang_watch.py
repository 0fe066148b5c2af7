"""Watchers for the end-to-end tests of a hung primary (test_hung_primary_e2e.py,
test_frozen_region_e2e.py), on a Deployment of mrd_deploy.py:

  NewPrimaryWriter  tries an INSERT on every member but the frozen one every
                    50 ms, each on a new connection with a connect timeout:
                    the first one that commits is the first write on the new
                    primary. (The deployment's writer cannot tell: its INSERT
                    waits on the frozen primary until that resumes.)
  TwoWritable       samples Deployment.writable() until stopped and keeps
                    every sample in which more than one member accepted a
                    write; the deployment's per-member Sampler runs too and
                    its two_writable() must be empty.
  hung_failover     the scenario both files run: freeze, wait for the first
                    write on a new primary (the time from the freeze is
                    printed, not asserted), hold the freeze, resume, wait
                    until the old primary no longer accepts writes, then
                    check that no sample saw two writable members.
Every loop is bounded in count and time.
"""
import threading
import time

import psycopg2

import meridian_harness as h
from mrd_deploy import REGIONS


class NewPrimaryWriter:
    def __init__(self, d, skip):
        self.d, self.skip = d, skip
        self.first = None  # (monotonic time, region) of the first commit
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        i = -int(time.time() * 1000) * 1000  # negative ids: never the writer's
        deadline = time.monotonic() + 180
        while not self.stop.is_set() and self.first is None and time.monotonic() < deadline:
            for r, _ in REGIONS:
                if r == self.skip:
                    continue
                i -= 1
                try:
                    c = psycopg2.connect(self.d.pg[r].conninfo(), connect_timeout=2)
                    c.autocommit = True
                    with c.cursor() as cur:
                        cur.execute("INSERT INTO writes (id) VALUES (%s)", (i,))
                    c.close()
                    self.first = (time.monotonic(), r)
                    break
                except psycopg2.Error:
                    pass
            self.stop.wait(0.05)

    def close(self):
        self.stop.set()
        self.thread.join(10)


class TwoWritable:
    def __init__(self, d):
        self.d = d
        self.seen = []  # (monotonic time, regions) with more than one region
        self.samples = 0
        self.thawed = None  # when the frozen region was resumed
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            w = self.d.writable()
            self.samples += 1
            if len(w) > 1:
                self.seen.append((time.monotonic(), w))
            self.stop.wait(0.05)

    def close(self):
        self.stop.set()
        self.thread.join(10)

    def describe(self):
        """The samples that saw two writable members, each said to be before
        or after the frozen region was resumed."""
        return ["%s %.2f s %s the resume" % ("+".join(w), abs(t - self.thawed),
                                             "after" if t >= self.thawed else "before")
                for t, w in self.seen[:5]] if self.thawed else self.seen[:5]


def hung_failover(d, freeze, thaw, hold_s, what):
    """Freezes eu with freeze(), waits for the first write on a new primary,
    keeps eu frozen for hold_s seconds from the freeze, resumes it with
    thaw() and waits until eu accepts no write. Returns (seconds from the
    freeze to the first write on the new primary, its region, the
    TwoWritable sampler (stopped), the time of that first write)."""
    d.wait_ready()
    d.writer_start()
    time.sleep(1.0)
    leader = d.leader()
    sampler = TwoWritable(d)
    per_member = d.sampler_start()
    writer = NewPrimaryWriter(d, "eu")
    t0, t0_wall = time.monotonic(), time.time()
    freeze()
    h.log("%s (%s profile): eu frozen; leader %s" % (what, d.profile, leader.name))
    try:
        h.wait_until(lambda: writer.first, 60, interval_s=0.05,
                     what="a write committed on a new primary")
        t_first, region = writer.first
        h.log("%s (%s profile): first write on the new primary (%s) %.2f s after the freeze"
              % (what, d.profile, region, t_first - t0))
        rest = hold_s - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)
    finally:
        writer.close()
        thaw()
    t_thaw = sampler.thawed = time.monotonic()
    thaw_wall = time.time()
    h.wait_until(lambda: "eu" not in d.writable(), 30,
                 what="the old primary eu accepting no writes after it resumed")
    h.log("%s (%s profile): eu accepts no writes %.2f s after it resumed"
          % (what, d.profile, time.monotonic() - t_thaw))
    time.sleep(1.0)
    sampler.close()
    per_member.stop()
    d.writer_stop()
    d.log_timeline(per_member, t0_wall)
    pairs = per_member.two_writable()
    assert not pairs, ("two members accepted writes at once (per-member sampler), %d times: %s"
                       % (len(pairs), ["%s+%s at %+.2f s (eu resumed at %+.2f s)"
                                       % (a[0], b[0], b[1] - t0_wall, thaw_wall - t0_wall)
                                       for a, b in pairs[:5]]))
    op = d.latest_operation()
    assert op and op["kind"] == "failover" and op["actor"] == "meridian", op
    svc = d.service()
    assert svc["primary_region"] == region, (svc, region)
    assert d.writable() == [region], d.writable()
    h.log("%s (%s profile): %d writable() samples, %d with two writable members"
          % (what, d.profile, sampler.samples, len(sampler.seen)))
    return t_first - t0, region, sampler, t_first
