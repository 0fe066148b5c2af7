#!/usr/bin/python3
"""Meridian's local demo: three regions on loopback, a writer, a planned
switchover, an unplanned failover, and a leader controller killed.

Run through deploy/demo.sh (it installs, builds and starts the store), or
by hand: MERIDIAN_TEST_PG='host=127.0.0.1 port=P user=postgres
dbname=postgres' /usr/bin/python3 deploy/demo.py
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import meridian_harness as h  # noqa: E402
from mrd_deploy import Deployment  # noqa: E402

BOLD = "\033[1m" if sys.stdout.isatty() else ""
OFF = "\033[0m" if sys.stdout.isatty() else ""


def step(text):
    print("\n%s== %s%s" % (BOLD, text, OFF), flush=True)


def info(text):
    print("   " + text, flush=True)


def show(d):
    svc = d.service()
    leader = d.leader()
    info("leader controller: %s (region %s)   service orders: primary %s, epoch %s"
         % (leader.name, leader.region, svc["primary_region"], svc["epoch"]))
    info("%-8s %-8s %-8s %-7s %-7s %12s %8s" % ("region", "node", "role", "fenced", "healthy",
                                                "lag bytes", "age ms"))
    for m in svc["members"]:
        info("%-8s %-8s %-8s %-7s %-7s %12s %8s" % (m["region"], m["node"], m["role"], m["fenced"],
                                                    m["healthy"], m["lag_bytes"], m["age_ms"]))


def timeline(d, op_id):
    op = d.operation(op_id)
    info("operation %s: %s %s -> %s, epoch %s, %s in %d ms, lost bytes %s"
         % (op["id"], op["kind"], op["from_region"], op["to_region"], op["epoch"],
            op["outcome"] or op["step"], op["duration_ms"], op["lost_bytes"]))
    for s in op["steps"]:
        info("   %-9s %6d ms  %s" % (s["step"], s["duration_ms"] or 0, s["detail"] or ""))


def main():
    h.setup_standalone()
    profile = os.environ.get("MERIDIAN_DEMO_PROFILE", "fast")
    step("1. three regions on loopback (profile %s): PostgreSQL eu (primary), us, ap "
         "(streaming replicas), an agent and a controller in each" % profile)
    d = Deployment(profile=profile, rejoin=True, nodes=True)
    d.wait_ready()
    show(d)

    step("2. a client writes every 20 ms through a multi-host DSN (target_session_attrs="
         "read-write)")
    d.writer_start()
    time.sleep(1.5)
    info("%d writes acknowledged so far" % len(d.writes))

    step("3. planned switchover eu -> us (POST /v1/services/orders/switchover)")
    t0 = time.monotonic()
    op = d.start_op("switchover", to="us")
    d.wait_op(op, 60, until=("rejoin", "done", "aborted", "failed"))
    h.wait_until(lambda: d.writes and d.writes[-1][2] == d.pg["us"].port, 30,
                 what="writes on us")
    gap = d.write_gap(t0)[0]
    timeline(d, op)
    lost = d.lost_writes("us")
    info("client write gap %.3f s; acknowledged writes lost: %d" % (gap, len(lost)))
    show(d)

    step("3b. every region's recovery point (GET /v1/services/orders/recovery) and a "
         "checkpoint the client waits on until every region has it")
    code, rec = d.any_controller().get("/v1/services/orders/recovery")
    if code == 200:
        info("%-6s %-8s %-26s %8s %10s" % ("region", "primary", "recovery point", "rpo s",
                                           "lag bytes"))
        for r in rec["regions"]:
            info("%-6s %-8s %-26s %8s %10s" % (r["region"], r["primary"], r["recovery_point"],
                                               r["rpo_seconds"], r["lag_bytes"]))
    code, cp = d.leader().post("/v1/services/orders/checkpoints", {})
    if code in (200, 201, 202):
        t0 = time.monotonic()
        code, got = d.any_controller().get("/v1/services/orders/checkpoints/%s?wait_ms=10000"
                                           % cp["id"], timeout=15)
        info("checkpoint %s at %s: reached by %s in %.0f ms (complete: %s)"
             % (cp["id"], got.get("position_text"), ", ".join(sorted(got.get("reached", {}))),
                (time.monotonic() - t0) * 1000, got.get("complete")))

    step("4. unplanned: SIGKILL of us's PostgreSQL and agent (the node dies)")
    time.sleep(1.0)
    t0 = time.monotonic()
    d.agents["us"].kill9()
    d.pg["us"].kill9()
    h.wait_until(lambda: d.writes and d.writes[-1][1] > t0 and
                 d.writes[-1][2] not in (d.pg["us"].port,), 60, what="writes on a new primary")
    t1 = next(w[1] for w in d.writes if w[1] > t0 and w[2] != d.pg["us"].port)
    info("first write acknowledged by the new primary %.2f s after the kill" % (t1 - t0))
    h.wait_until(lambda: d.service()["primary_region"] != "us", 30, what="primary moved")
    op = d.latest_operation()
    timeline(d, op["id"])
    new = d.service()["primary_region"]
    info("acknowledged writes missing on %s: %d (asynchronous replication: the loss is "
         "bounded by max_lag_bytes / max_lag_ms)" % (new, len(d.lost_writes(new))))
    info("(an automatic failover waits for the dead primary's isolation timeout: a primary "
         "cut off from the store fences itself by then, so two primaries are impossible)")
    show(d)

    step("5. the leader controller dies (SIGKILL): another region's controller takes over")
    leader = d.leader()
    term = leader.status()["controller"]["term"]
    t0 = time.monotonic()
    leader.kill9()
    new, new_term = h.wait_for_leader(d.controllers(), 30, min_term=term)
    info("%s was leader (term %s); %s leads after %.2f s (term %s)"
         % (leader.name, term, new.name, time.monotonic() - t0, new_term))
    d.writer_stop()
    info("%d writes acknowledged in all, %d client errors while primaries moved"
         % (len(d.writes), d.write_errors))
    step("done: every process is stopped and the temporary directory removed")


if __name__ == "__main__":
    try:
        main()
    finally:
        h.cleanup_all()
