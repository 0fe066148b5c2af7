#!/usr/bin/python3
"""Leader failover time of meridian-controller.

Starts a throw-away store (PostgreSQL 15) and three controllers (eu, us, ap)
on loopback, then ROUNDS times: SIGKILLs the leader, measures the time until
the two others agree on a new leader with a higher term, and restarts the
killed controller (as a follower). Prints each round, then min/median/max
and the lease TTL and renewal interval used. A LeaderChecker watches the
whole run; a leadership overlap fails the benchmark.

  /usr/bin/python3 tests/bench/leader_failover.py [--rounds N] [--ttl-ms MS]
      [--build DIR]

Uses MERIDIAN_BUILD_DIR (default <source>/build) and MERIDIAN_TEST_TMP
(default: a new dir under /tmp, removed at the end). Needs root (PostgreSQL
runs as user postgres). Figures, not assertions: run it on a quiet machine.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import meridian_harness as h  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--ttl-ms", type=int, default=2000)
    ap.add_argument("--build", default=None, help="build directory (default <source>/build)")
    args = ap.parse_args()
    h.setup_standalone(args.build)
    h.install_signal_handlers()
    ttl, renew = args.ttl_ms / 1000.0, args.ttl_ms / 3000.0

    store = h.PgCluster.create("store")
    conninfo = store.create_database("meridian_bench")
    ctls = [h.Controller("ctl-" + r, r, conninfo, lease_ttl_ms=args.ttl_ms,
                         log_level="warn") for r in ("eu", "us", "ap")]
    for c in ctls:
        c.start(wait_healthy=False)
    for c in ctls:
        h.wait_until(c._healthy_or_dead, 30, what=c.name + " health")
    checker = h.LeaderChecker(conninfo, ctls)
    leader, term = h.wait_for_leader(ctls, 3 * ttl + 10)
    print("store %s, controllers %s" % (store.conninfo("meridian_bench"),
                                        ", ".join(c.url for c in ctls)), flush=True)
    print("lease TTL %d ms, renewal every %d ms (TTL/3)" % (args.ttl_ms, args.ttl_ms // 3),
          flush=True)

    times = []
    for i in range(args.rounds):
        # a leader in its stride: at least one renewal since it won
        time.sleep(renew * 1.5)
        leader, term = h.wait_for_leader(ctls, ttl + 10)
        t0 = time.monotonic()
        leader.kill9()
        others = [c for c in ctls if c is not leader]
        new, new_term = h.wait_for_leader(others, ttl + renew + 20, min_term=term)
        dt = time.monotonic() - t0
        times.append(dt)
        print("round %2d: SIGKILL %s (term %d) -> %s term %d after %.3f s"
              % (i + 1, leader.name, term, new.name, new_term, dt), flush=True)
        leader.start()
        h.wait_until(lambda: h.agreed_leader(ctls) == (new, new_term), ttl + 20,
                     what=leader.name + " to rejoin as follower")

    checker.assert_ok(min_claims=args.rounds + 1)
    print("leader failover after SIGKILL, %d rounds: min %.3f s, median %.3f s, max %.3f s "
          "(TTL %.3f s, renewal %.3f s, TTL + renewal %.3f s)"
          % (len(times), min(times), statistics.median(times), max(times), ttl, renew,
             ttl + renew), flush=True)


if __name__ == "__main__":
    status = 0
    try:
        main()
    except (h.HarnessError, AssertionError) as e:
        print("benchmark failed: %s" % e, file=sys.stderr, flush=True)
        h._state.failed = True  # keeps the temp dir for the post-mortem
        h._print_logs([])
        status = 1
    finally:
        problems = h.cleanup_all()
        for p in problems:
            print("problem: %s" % p, file=sys.stderr, flush=True)
    sys.exit(status or (1 if problems else 0))
