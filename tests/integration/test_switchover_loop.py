# meridian-test: e2e
# meridian-test: timeout 900
"""End to end (tests/integration/mrd_deploy.py with rejoin=True): 50
switchovers back to back, alternating targets, under a writer that commits
every 20 ms and a sampler that asks every member every 50 ms whether it
accepts writes.

  switchovers_back_to_back
      two fresh deployments (profile default, then fast), 25 switchovers
      each; the first starts as soon as the deployment is ready. For every
      switchover: the operation completes, the writer's writes move to the
      new primary, and from the first write the new primary acknowledged
      until the next switchover starts, every sample finds the new primary
      writable (a new primary stays primary: no agent fences a primary it
      has just promoted). At no sample are two members writable, no agent
      logs a self-fence, and no acknowledged write is missing on the last
      primary.

The switchover write gaps are logged (figures, not asserted; see
tests/bench/faults.py for the benchmark).
"""

import os
import statistics
import threading
import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test

# 25 per deployment: the 50 back-to-back switchovers (about 4.5
# minutes on 2 cores); MERIDIAN_SWITCHOVER_LOOP=N runs N per deployment.
PER_DEPLOYMENT = int(os.environ.get("MERIDIAN_SWITCHOVER_LOOP", "25"))


class WritableSampler:
    """Every interval, which regions accept writes (d.writable()), with the
    monotonic times at which the sample started and ended."""

    def __init__(self, d, interval_s=0.05):
        self.d, self.interval_s = d, interval_s
        self.samples = []  # (t_start, t_end, [regions])
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="sampler")
        self.thread.start()

    def _loop(self):
        deadline = time.monotonic() + 900
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            t0 = time.monotonic()
            w = self.d.writable()
            self.samples.append((t0, time.monotonic(), w))
            self.stop_ev.wait(self.interval_s)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(10)


def one_switchover(d, src, dst, epoch):
    """Switchover src -> dst; returns (t_start, t_first_write_on_dst, gap)."""
    t0 = time.monotonic()
    # a 422 means the target is not acceptable yet (the last rejoin is
    # still being reported): retried for a bounded time
    op_id = d.start_op("switchover", to=dst, retry_s=30)
    op = d.wait_op(op_id, 90)
    assert op["step"] == "done", "switchover %s -> %s ended in %s: %s" % (src, dst, op["step"],
                                                                          op)
    assert op["epoch"] == epoch + 1, op
    port = d.pg[dst].port
    first = h.wait_until(
        lambda: next((w for w in list(d.writes) if w[1] > t0 and w[2] == port), None), 30,
        interval_s=0.02, what="a write acknowledged by %s" % dst)
    gap, _, _, _ = d.write_gap(t0)
    return t0, first[1], gap


def run_deployment(profile, first_target, n):
    d = Deployment(profile=profile, rejoin=True, policy={"rejoin_timeout_ms": 60000})
    d.wait_ready()
    d.writer_start()
    sampler = WritableSampler(d)
    results = []  # (src, dst, t_start, t_first, gap)
    src = "eu"
    try:
        epoch = d.service()["epoch"]
        for i in range(n):
            # back and forth between eu and first_target; every fifth
            # switchover goes to the third region (neither the primary nor
            # the one before it)
            if i % 5 == 4:
                dst = [r for r in ("eu", "us", "ap") if r not in (src, results[-1][0])][0]
            else:
                dst = first_target if src == "eu" else "eu"
            t0, t_first, gap = one_switchover(d, src, dst, epoch)
            results.append((src, dst, t0, t_first, gap))
            h.log("%s switchover %d %s -> %s: write gap %.3f s, first write on %s %.3f s "
                  "after the request" % (profile, i + 1, src, dst, gap, dst, t_first - t0))
            epoch += 1
            src = dst
        time.sleep(1.0)
    finally:
        sampler.stop()
        d.writer_stop()

    # never two writable members
    two = [(t, w) for t, _, w in sampler.samples if len(w) > 1]
    assert not two, "two writable members at once (%s): %s" % (profile, two[:3])
    # the new primary stays writable from its first write until the next
    # switchover is requested (or the end)
    ends = [r[2] for r in results[1:]] + [sampler.samples[-1][0]]
    for (s, dst, _t0, t_first, _gap), end in zip(results, ends):
        window = [x for x in sampler.samples if x[0] > t_first and x[1] < end]
        missing = [(round(x[0] - t_first, 3), x[2]) for x in window if dst not in x[2]]
        assert not missing, ("%s: new primary %s (from %s) not writable after its first write, "
                             "at +s: %s" % (profile, dst, s, missing[:5]))
    for r, a in d.agents.items():
        text = a.proc.log_text()
        assert "isolated: fencing the primary" not in text, \
            "%s's agent fenced a primary for isolation during switchovers" % r
    last = results[-1][1]
    lost = d.lost_writes(last)
    assert not lost, "acknowledged writes lost (%s): %s" % (profile, lost[:10])
    gaps = [r[4] for r in results]
    h.log("%s: %d switchovers, write gap min %.3f / median %.3f / max %.3f s, %d writes, "
          "%d samples" % (profile, len(results), min(gaps), statistics.median(gaps), max(gaps),
                          len(d.writes), len(sampler.samples)))
    return results


@test
def switchovers_back_to_back():
    run_deployment("default", "us", PER_DEPLOYMENT)
    run_deployment("fast", "ap", PER_DEPLOYMENT)


if __name__ == "__main__":
    h.run_all()
