# meridian-test: e2e
"""End to end, three regions on loopback (tests/integration/mrd_deploy.py),
a writer committing every 20 ms: the whole eu region is paused for 12 s
(agent, controller, PostgreSQL postmaster and backends: SIGSTOP), as a
paused VM or a region-wide stall. Its port still completes TCP handshakes.

  region_frozen_default  the other regions' postgresql probes see eu down and
  region_frozen_fast     eu's agent is silent: the leader (a new one when eu's
                         controller led) fails over to us once eu's isolation
                         has passed; when eu resumes its agent fences it
                         (isolated or superseded) and no writable() sample saw
                         two writable members.
A write that eu commits in the instant it resumes (the writer's INSERT was
waiting on it) cannot be prevented by anyone while its agent is frozen with
it; how many there were is printed, not asserted. The time from the freeze
to the first write on the new primary is printed too
(tests/integration/hang_watch.py).
"""
import meridian_harness as h
from hang_watch import hung_failover
from mrd_deploy import Deployment

test = h.test


def region_frozen(profile):
    d = Deployment(profile=profile)

    def freeze():
        d.agents["eu"].sigstop()
        d.ctl["eu"].sigstop()
        d.pg["eu"].freeze()

    def thaw():
        # a region resumes at once; its agent is the quickest to act
        d.agents["eu"].sigcont()
        d.ctl["eu"].sigcont()
        d.pg["eu"].thaw()

    took, region, sampler, t_first = hung_failover(d, freeze, thaw, 12.0, "eu region frozen")
    assert region == "us", "us has the higher priority: %s" % region
    assert not sampler.seen, "two writable members at once: %s" % sampler.describe()
    late = [w for w in d.writes if w[2] == d.pg["eu"].port and w[1] > t_first]
    h.log("eu region frozen (%s profile): %d writes acknowledged by eu after the new primary "
          "took one" % (profile, len(late)))
    log = d.agents["eu"].proc.log_text()
    assert "superseded" in log or "isolat" in log, "eu was not fenced by its agent"


@test
def region_frozen_default():
    region_frozen("default")


@test
def region_frozen_fast():
    region_frozen("fast")


if __name__ == "__main__":
    h.run_all()
