# meridian-test: e2e
"""A frozen primary agent must not cause a failover or a lasting outage.

eu's agent alone is stopped (SIGSTOP) for well past its isolation timeout
while its PostgreSQL keeps serving a writer (one insert every 20 ms), then
resumed (SIGCONT), in the default profile (a fast-profile deployment
does not get ready on a loaded 2-core machine: its 125 ms checks swamp the
postmasters; the behaviour is the same). The other regions' probes see
eu's PostgreSQL up the whole time, so the leader decides no failover. On resume the agent's
contact and leases are stale and the leader may, for all it can tell
without a round trip, have failed over meanwhile: it fences at once
(agent/heartbeat.c, on_tick) with the soft fence of the isolation rule
(read_only, although eu's configured fence is demote), reports the fence
at once, and the leader unfences the primary it still names. Checked:

  - the agent noticed the stall (logged);
  - no operation was started, eu is still the primary and unfenced, and its
    PostgreSQL was never stopped (same postmaster);
  - if the agent fenced itself, the unfence came from the leader and was
    carried out, and the writer is acknowledged by eu again;
  - the deployment's sampler (one write attempt on each member every
    50 ms) never saw two members accept writes at once, nor us or ap
    accept one; eu accepted sampled writes after the resume; every write
    the writer saw acknowledged is on eu.

No timing is asserted: tests/bench/failover.py --scenario agent-freeze
measures the outage.
"""

import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


def freeze_and_resume(profile, pause_s):
    d = Deployment(profile=profile)
    agent = d.agents["eu"]
    # eu's configured fence is the default, demote; the isolation rule's
    # fence on resume is soft (read_only), so the leader's unfence is quick
    # and eu's PostgreSQL never stops
    assert "fence" not in agent.cfg["members"][0] or \
        agent.cfg["members"][0]["fence"].get("mode", "demote") == "demote", agent.cfg
    d.wait_ready()
    d.writer_start()
    h.wait_until(lambda: len(d.writes) >= 25, 30, what="25 writes before the freeze")
    sampler = d.sampler_start(0.05)  # one write attempt per member every 50 ms
    eu_port = d.pg["eu"].port
    eu_postmaster = d.pg["eu"].postmaster_pid()
    try:
        agent.sigstop()
        time.sleep(pause_s)
        agent.sigcont()
        t_resume, t_resume_wall = time.monotonic(), time.time()
        h.wait_until(lambda: "agent loop stalled" in agent.proc.log_text(), 10,
                     what="the agent noticing its stall")

        def eu_unfenced():
            try:
                m = d.members()["eu"]
            except (OSError, h.HarnessError):
                return False
            return m["role"] == "primary" and not m["fenced"] and m["age_ms"] < 1000
        h.wait_until(eu_unfenced, 30, what="eu reported an unfenced primary after the resume")
        h.wait_until(lambda: sum(1 for w in list(d.writes)
                                 if w[1] > t_resume and w[2] == eu_port) >= 25, 30,
                     what="25 writes acknowledged by eu after the resume")
        time.sleep(1.0)  # keep sampling a little past the recovery
    finally:
        d.writer_stop()
        sampler.stop()

    log = agent.proc.log_text()
    assert d.latest_operation() is None, d.latest_operation()
    svc = d.service()
    assert svc["primary_region"] == "eu", svc
    assert d.writable() == ["eu"], d.writable()
    # the fence on resume was the soft one: eu's PostgreSQL never stopped
    assert d.pg["eu"].postmaster_pid() == eu_postmaster, "eu's PostgreSQL was restarted"
    if "isolated: fencing the primary" in log:
        # the unfence of a self-fenced primary, sent by the leader, ran
        assert "unfencing a self-fenced primary" in "".join(
            c.proc.log_text() for c in d.controllers()), "no controller unfenced eu"
        assert "kind=unfence" in log and "command done" in log, log[-3000:]
    assert sampler.of("eu", "ok", since=t_resume_wall), "no sampled write accepted by eu"
    sampler.assert_ok()
    assert not sampler.of("us", "ok") and not sampler.of("ap", "ok"), sampler.summary()
    # every write the client saw acknowledged is on eu (nothing moved)
    assert d.lost_writes("eu") == []
    h.log("%s: samples %s, %d write errors, self-fenced: %s" % (
        profile, sampler.summary(), d.write_errors, "isolated: fencing the primary" in log))
    d.log_timeline(sampler, t_resume_wall)


@test
def default_profile():
    freeze_and_resume("default", 10.0)


if __name__ == "__main__":
    h.run_all()
