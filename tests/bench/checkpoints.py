#!/usr/bin/python3
"""Checkpoint long-poll latency of meridian-controller.

Starts a store, a PostgreSQL primary (eu) with replicas (us, ap), one
meridian-agent per node (1 s heartbeats by default) and two controllers
(eu, us) on loopback. Then ROUNDS times:
  1. pauses replay on both replicas;
  2. writes on the primary and creates a checkpoint at the primary's LSN
     (client-supplied position) on the leader;
  3. starts a long-poll (wait_ms=30000, every region) on the leader or the
     follower (alternating);
  4. resumes replay and samples pg_last_wal_replay_lsn() of both replicas
     every few ms to find when the last one passed the position (t_pass);
  5. records t_answer - t_pass, the time the poll took to notice.
Prints each round, then p50/p99/max (ms) overall and per controller, and
the controllers' own part (from the store recording the report that reached
the position to the answer). The leader pokes the agents of regions that
have not reached an on-demand checkpoint for fresh reports (controller
"agent_token" set), so the figure does not wait for the next heartbeat.

  /usr/bin/python3 tests/bench/checkpoints.py [--rounds N] [--heartbeat-ms MS]
      [--build DIR]

Uses MERIDIAN_BUILD_DIR (default <source>/build) and MERIDIAN_TEST_TMP
(default: a new dir under /tmp, removed at the end). Needs root. Figures,
not assertions.
"""

import argparse
import datetime
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import meridian_harness as h  # noqa: E402

REGIONS = ("eu", "us", "ap")
PEER_TOKEN = "meridian-bench-peer-token-0123456789"


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--heartbeat-ms", type=int, default=1000)
    ap.add_argument("--build", default=None, help="build directory (default <source>/build)")
    args = ap.parse_args()
    h.setup_standalone(args.build)
    h.install_signal_handlers()

    store = h.PgCluster.create("store")
    conninfo = store.create_database("meridian_bench")
    pgs = {"eu": h.PgCluster.create("pg-eu")}
    pgs["eu"].sql("CREATE TABLE t (id serial PRIMARY KEY, v text)")
    for r in ("us", "ap"):
        pgs[r] = pgs["eu"].make_replica("pg-" + r)
    members = [{"name": "orders-" + r, "node": "db-" + r, "region": r,
                "conninfo": pgs[r].conninfo()} for r in REGIONS]
    extra = {"agent_token": PEER_TOKEN,
             "regions": [{"name": r, "priority": i + 1} for i, r in enumerate(REGIONS)],
             "services": [{"name": "orders", "primary_region": "eu",
                           "policy": {"auto_failover": False,
                                      "heartbeat_ms": args.heartbeat_ms},
                           "members": members, "checkpoint_interval_ms": 5000}]}
    ctls = [h.Controller("ctl-" + r, r, conninfo, log_level="warn", extra=extra)
            for r in ("eu", "us")]
    for c in ctls:
        c.start()
    for r in REGIONS:
        h.Agent("db-" + r, r, [c.url for c in ctls], log_level="warn", extra={
            "heartbeat_ms": args.heartbeat_ms,
            "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}],
            "members": [{"service": "orders", "name": "orders-" + r, "kind": "postgresql",
                         "conninfo": pgs[r].conninfo()}]}).start()
    leader, _ = h.wait_for_leader(ctls, 30)
    follower = [c for c in ctls if c is not leader][0]
    h.wait_until(lambda: store.sql("SELECT count(*) FROM meridian.checkpoints",
                                   dbname="meridian_bench")[0][0] > 0, 40,
                 what="a first automatic checkpoint")
    print("3 regions, heartbeats every %d ms, leader %s, follower %s" %
          (args.heartbeat_ms, leader.name, follower.name), flush=True)

    lat = {leader.name: [], follower.name: []}
    own = []
    for i in range(args.rounds):
        for r in ("us", "ap"):
            pgs[r].pause_replay()
        pgs["eu"].sql("INSERT INTO t (v) SELECT 'x' FROM generate_series(1, 10)")
        lsn = pgs["eu"].sql_value("SELECT pg_current_wal_lsn()::text")  # after the commit
        code, body = h.http_json("POST", leader.url + "/v1/services/orders/checkpoints",
                                 {"position": lsn}, h.OPERATOR_TOKEN, timeout=10)
        if code != 201:
            raise SystemExit("create failed: %s %s" % (code, body))
        target = h.lsn_to_int(lsn)
        ctl = leader if i % 2 == 0 else follower
        out = {}

        def poll():
            code, got = h.http_json("GET", ctl.url + "/v1/services/orders/checkpoints/%d"
                                    "?wait_ms=30000" % body["id"], None, h.VIEWER_TOKEN,
                                    timeout=40)
            out["t"] = time.monotonic()
            out["wall"] = time.time()
            out["got"] = (code, got)
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.2)  # the poll is waiting now
        conns = {r: pgs[r].connect() for r in ("us", "ap")}
        t_res = time.monotonic()
        for r in ("us", "ap"):
            pgs[r].resume_replay()
        t_res2 = time.monotonic()
        first = {}
        passed = {}
        deadline = time.monotonic() + 20
        while len(passed) < 2 and time.monotonic() < deadline:
            for r, c in conns.items():
                if r in passed:
                    continue
                with c.cursor() as cur:
                    cur.execute("SELECT pg_last_wal_replay_lsn()::text")
                    v = h.lsn_to_int(cur.fetchone()[0])
                    first.setdefault(r, (v, time.monotonic() - t_res))
                    if v >= target:
                        passed[r] = time.monotonic()
            time.sleep(0.002)
        for c in conns.values():
            c.close()
        th.join(40)
        code, got = out.get("got", (None, None))
        if code != 200 or not got.get("complete") or len(passed) < 2:
            print("round %d: poll %s %s, passed %s" % (i, code, got, passed), flush=True)
            continue
        d = (out["t"] - max(passed.values())) * 1000
        lat[ctl.name].append(d)
        # the controllers' own part: from the store recording the report that
        # reached (store clock, same host) to the answer
        last = max(datetime.datetime.strptime(v, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp() for v in got["reached"].values())
        own.append((out["wall"] - last) * 1000)
        print("round %2d  %-7s %7.1f ms  (controller side %6.1f ms)" % (i, ctl.name, d, own[-1]),
              flush=True)
        if os.environ.get("BENCH_DEBUG"):
            print("   target %x resume took %.3f first %s passed %s answered %.3f got %s" % (
                target, t_res2 - t_res, {k: ("%x" % v[0], v[1]) for k, v in first.items()},
                {k: v - t_res for k, v in passed.items()}, out["t"] - t_res, got), flush=True)

    allv = lat[leader.name] + lat[follower.name]
    print("\nlong-poll answer after the last replica's replay passed the position (ms):")
    for name, xs in [("all", allv)] + sorted(lat.items()):
        if xs:
            print("  %-7s n=%3d  p50 %7.1f  p99 %7.1f  max %7.1f  mean %7.1f" % (
                name, len(xs), pct(xs, 50), pct(xs, 99), max(xs), statistics.mean(xs)))
    if own:
        print("  from the store recording the reaching report to the answer: p50 %.1f  p99 %.1f"
              "  max %.1f ms" % (pct(own, 50), pct(own, 99), max(own)))
    h.cleanup_all()


if __name__ == "__main__":
    main()
