# meridian-test: e2e
"""End to end, three regions on loopback (tests/integration/mrd_deploy.py),
a writer committing every 20 ms: eu's PostgreSQL hangs (postmaster and every
backend SIGSTOPped for 15 s: its port still completes TCP handshakes, nothing
answers), its agent stays alive.

  pg_frozen_default   the agent reports the member critical (role unknown),
  pg_frozen_fast      the leader fails over to us without the vantage quorum
                      (the other regions' postgresql probes see eu down too);
                      when eu resumes it accepts no write; no writable()
                      sample saw two writable members, and the old primary
                      acknowledged no write after the new primary took one.
The time from the freeze to the first write on the new primary is printed
(tests/integration/hang_watch.py), not asserted.
"""
import meridian_harness as h
from hang_watch import hung_failover
from mrd_deploy import Deployment

test = h.test


def pg_frozen(profile):
    d = Deployment(profile=profile)
    eu = d.pg["eu"]
    took, region, sampler, t_first = hung_failover(d, eu.freeze, eu.thaw, 15.0,
                                                   "eu postgresql frozen")
    assert region == "us", "us has the higher priority: %s" % region
    assert not sampler.seen, "two writable members at once: %s" % sampler.describe()
    late = [w for w in d.writes if w[2] == eu.port and w[1] > t_first]
    assert not late, ("the frozen old primary acknowledged %d writes after the new primary "
                      "took one (first %.2f s after): %s"
                      % (len(late), late[0][1] - t_first, [w[0] for w in late[:5]]))
    op = d.latest_operation()
    h.log("operation %s: %s" % (op["id"], op))


@test
def pg_frozen_default():
    pg_frozen("default")


@test
def pg_frozen_fast():
    pg_frozen("fast")


if __name__ == "__main__":
    h.run_all()
