#!/usr/bin/python3
"""Failover and switchover benchmark of a whole Meridian deployment.

Brings up three regions on loopback (tests/integration/mrd_deploy.py: one
store, three controllers, a PostgreSQL 15 member and an agent per region, eu
primary with streaming replicas us and ap, service "orders") with a writer
that commits every 20 ms through a multi-host conninfo with
target_session_attrs=read-write, and measures for each policy profile:

  kill        SIGKILL eu's PostgreSQL (postmaster and backends) and its agent
              together: time from the kill to the first write acknowledged
              by the new primary, and acknowledged writes lost on it;
  switchover  `meridianctl switchover orders --to us --wait` (or, while
              build/meridianctl does not exist, the same through the REST
              API, said in the output): the write gap (last write
              acknowledged by the old primary -> first by the new), the time
              until the command returned, and acknowledged writes lost;
  agent-freeze
              SIGSTOP eu's agent alone for 10 s (PostgreSQL untouched: no
              failover is expected), then SIGCONT: the write outage after
              the resume (longest pause between two acknowledged writes
              that ends after it), failed writes after it, samples in
              which eu did not accept writes, and whether an operation or
              a fence happened.

Each run uses a fresh deployment (new temp dir, new store database). During
each run every member is asked every 50 ms whether it accepts writes; a
sample with two writable members is a violation (reported, must be 0).
Prints each run, then min/median/max per profile and scenario against the
targets, and the operation's step durations (where the time goes).

  /usr/bin/python3 tests/bench/failover.py [--runs N] [--profile P|all]
      [--scenario kill|switchover|agent-freeze|all] [--build DIR] [--keep]
  /usr/bin/python3 tests/bench/failover.py --probe [--profile P|all]
      [--scenario ...]   one trial per scenario measured by the external
                         failover probe script named by the environment
                         variable MERIDIAN_FAILOVER_PROBE, then its table

Uses MERIDIAN_BUILD_DIR (default <source>/build) and MERIDIAN_TEST_TMP
(default: a new dir under /tmp, removed at the end). Needs root (PostgreSQL
runs as user postgres). Figures, not assertions: run it on a quiet machine.
Exit status 0 unless a run could not be measured.
"""

import argparse
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import meridian_harness as h  # noqa: E402

PROBE = os.environ.get("MERIDIAN_FAILOVER_PROBE", "")  # --probe only; no default
TARGETS = {  # (profile, scenario, metric) -> bound on the median, seconds
    ("default", "kill", "first_write_s"): 6.0,
    ("fast", "kill", "first_write_s"): 2.5,
    ("default", "switchover", "write_gap_s"): 0.5,
    ("fast", "switchover", "write_gap_s"): 0.5,
}


def say(msg):
    print(msg, flush=True)


def ts(s):
    """An ISO timestamp of the store (json_build_object) -> epoch seconds."""
    if not s:
        return None
    return datetime.datetime.fromisoformat(s).timestamp()


def meridianctl():
    """Path of build/meridianctl, or None while it does not exist."""
    try:
        return h.program_path("meridianctl")
    except h.HarnessError:
        return None


# --------------------------------------------------------------------------
# switchover through the API, as `meridianctl switchover --wait` does it


def api_switchover(urls, to, timeout_s=120.0):
    """POSTs the switchover to the first controller that takes it (a
    follower answers 421/307: the next one is tried), then polls the
    operation until its cutover is complete (step rejoin or done) or it
    ended. Returns (exit status like meridianctl's, operation or error)."""
    last = None
    op_id = None
    for u in urls:
        try:
            code, body = h.http_post(u + "/v1/services/orders/switchover", {"to": to},
                                     h.OPERATOR_TOKEN, timeout=10)
        except OSError as e:
            last = str(e)
            continue
        if code == 202:
            op_id, url = body["operation"], u
            break
        last = "%s %s" % (code, body)
    if op_id is None:
        return 3, last
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for u in [url] + [x for x in urls if x != url]:
            try:
                code, op = h.http_get(u + "/v1/operations/%s" % op_id, h.VIEWER_TOKEN,
                                      timeout=5)
            except OSError:
                continue
            if code == 200:
                if op["step"] in ("rejoin", "done"):
                    return 0, op
                if op["step"] in ("aborted", "failed"):
                    return 1, op
                break
        time.sleep(0.02)
    return 5, "timed out"


def switchover_argv(d, to="us"):
    """The command that starts the switchover and waits for its cutover,
    and a label saying what it is."""
    urls = ",".join(d.ctl[r].url for r in ("eu", "us", "ap"))
    ctl = meridianctl()
    if ctl:
        return ([ctl, "--url", urls, "--token", h.OPERATOR_TOKEN, "switchover", "orders",
                 "--to", to, "--wait"], "meridianctl switchover orders --to %s --wait" % to)
    return ([sys.executable, os.path.abspath(__file__), "--api-switchover", urls, "--to", to],
            "REST API (POST /v1/services/orders/switchover, then poll the operation; "
            "build/meridianctl not built yet)")


# --------------------------------------------------------------------------
# one run


class Sampler:
    """Asks every member every 50 ms whether it accepts writes (in a thread);
    keeps the samples where more than one did."""

    def __init__(self, d, interval_s=0.05):
        self.d, self.interval_s = d, interval_s
        self.stop_ev = threading.Event()
        self.samples = 0
        self.bad = []
        self.eu_not_writable = []  # monotonic times of samples where eu refused writes
        self.thread = threading.Thread(target=self._loop, daemon=True, name="sampler")
        self.thread.start()

    def _loop(self):
        deadline = time.monotonic() + 600
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            w = self.d.writable()
            self.samples += 1
            if len(w) > 1:
                self.bad.append((time.monotonic(), w))
            if "eu" not in w:
                self.eu_not_writable.append(time.monotonic())
            self.stop_ev.wait(self.interval_s)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(10)


def _children(pid):
    return h._children_of(pid)


def kill_together(d, region):
    """SIGSTOP then SIGKILL the agent and the postmaster (and every backend)
    of region, so that neither sees the other die. Returns (monotonic, wall)
    of the moment just before the first signal."""
    pm = d.pg[region].postmaster_pid()
    agent = d.agents[region].proc.pid
    if pm is None:
        raise h.HarnessError("%s has no postmaster" % region)
    pids = [agent, pm] + _children(pm)
    t = (time.monotonic(), time.time())
    for p in pids:
        try:
            os.kill(p, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    pids += [c for c in _children(pm) if c not in pids]
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    d.agents[region].proc.popen.wait(10)
    return t


def op_breakdown(op, t_wall):
    """'detect 4.21 s, fence 0.00, catchup 0.01, ...' (seconds after
    t_wall: the operation's start, then each step's duration)."""
    if not op:
        return "no operation"
    parts = []
    st = ts(op.get("started_at"))
    if st is not None:
        parts.append("op started +%.2f s" % (st - t_wall))
    for s in op.get("steps") or []:
        dur = s.get("duration_ms")
        parts.append("%s %s" % (s["step"], "%.2f" % (dur / 1000.0) if dur is not None else "?"))
    return ", ".join(parts)


def port_region(d):
    return {d.pg[r].port: r for r in d.pg}


def run_kill(d):
    """SIGKILL eu's PostgreSQL and agent; returns the figures."""
    d.writer_start()
    h.wait_until(lambda: len(d.writes) >= 25, 30, what="25 writes before the kill")
    sampler = Sampler(d)
    time.sleep(0.5)
    eu_port = d.pg["eu"].port
    t0, t0_wall = kill_together(d, "eu")

    def first_new():
        return next((w for w in list(d.writes) if w[1] > t0 and w[2] != eu_port), None)
    first = h.wait_until(first_new, 60, interval_s=0.01,
                         what="a write acknowledged by a new primary")
    time.sleep(0.5)
    d.writer_stop()
    sampler.stop()
    new = port_region(d)[first[2]]
    lost = d.lost_writes(new)
    old_acks = [w for w in d.writes if w[2] == eu_port]
    # the operation: wait (bounded) until its cutover finished, for the steps
    op = None
    try:
        ref = d.latest_operation()
        if ref:
            op = d.wait_op(ref["id"], 15, until=("rejoin", "done", "aborted", "failed"))
    except (h.WaitTimeout, h.HarnessError, OSError):
        op = d.latest_operation()
    return {"first_write_s": first[1] - t0,
            "write_gap_s": first[1] - old_acks[-1][1] if old_acks else None,
            "lost": len(lost), "new_primary": new, "two_writable": len(sampler.bad),
            "samples": sampler.samples, "errors": d.write_errors,
            "op_kind": op and op.get("kind"), "op": op, "t0_wall": t0_wall,
            "breakdown": op_breakdown(op, t0_wall)}


def run_switchover(d):
    """Switchover eu -> us with the CLI (or API) and --wait; returns figures."""
    d.writer_start()
    h.wait_until(lambda: len(d.writes) >= 25, 30, what="25 writes before the switchover")
    sampler = Sampler(d)
    time.sleep(0.5)
    argv, how = switchover_argv(d)
    eu_port, us_port = d.pg["eu"].port, d.pg["us"].port
    t0, t0_wall = time.monotonic(), time.time()
    cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=180)
    t_cmd = time.monotonic() - t0
    if cp.returncode != 0:
        raise h.HarnessError("switchover command exited %d: %s" % (cp.returncode,
                                                                     cp.stdout[-2000:]))
    h.wait_until(lambda: any(w[2] == us_port and w[1] > t0 for w in list(d.writes)), 30,
                 interval_s=0.01, what="a write acknowledged by us")
    time.sleep(0.5)
    d.writer_stop()
    sampler.stop()
    writes = list(d.writes)
    last_old = [w for w in writes if w[2] == eu_port][-1]
    first_new = next(w for w in writes if w[2] == us_port and w[1] > t0)
    lost = d.lost_writes("us")
    op = None
    ref = d.latest_operation()
    if ref:
        op = d.operation(ref["id"])
    return {"write_gap_s": first_new[1] - last_old[1], "first_write_s": first_new[1] - t0,
            "last_old_s": last_old[1] - t0, "command_s": t_cmd, "lost": len(lost),
            "new_primary": "us", "two_writable": len(sampler.bad),
            "samples": sampler.samples, "errors": d.write_errors, "how": how,
            "op_kind": op and op.get("kind"), "op": op, "t0_wall": t0_wall,
            "breakdown": op_breakdown(op, t0_wall)}


class ReadOnlyWatch:
    """Polls one member's default_transaction_read_only every 10 ms on one
    connection (in a thread): the times it read "on". A backend applies a
    reload before its next statement, so this sees a read-only fence within
    one poll of the reload, whatever a client's reconnects cost."""

    def __init__(self, pg, interval_s=0.01):
        self.pg, self.interval_s = pg, interval_s
        self.stop_ev = threading.Event()
        self.on = []
        self.polls = 0
        self.thread = threading.Thread(target=self._loop, daemon=True, name="read-only watch")
        self.thread.start()

    def _loop(self):
        import psycopg2
        conn = None
        deadline = time.monotonic() + 600
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            try:
                if conn is None:
                    conn = psycopg2.connect(self.pg.conninfo(), connect_timeout=1)
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SHOW default_transaction_read_only")
                    v = cur.fetchone()[0]
                self.polls += 1
                if v == "on":
                    self.on.append(time.monotonic())
            except Exception:
                conn = None
            self.stop_ev.wait(self.interval_s)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(10)


def run_agent_freeze(d, pause_s=10.0, after_s=5.0):
    """SIGSTOP eu's agent for pause_s, SIGCONT, watch after_s; figures."""
    d.writer_start()
    h.wait_until(lambda: len(d.writes) >= 25, 30, what="25 writes before the freeze")
    sampler = Sampler(d)
    ro = ReadOnlyWatch(d.pg["eu"])
    time.sleep(0.5)
    ref0 = d.latest_operation()
    agent = d.agents["eu"]
    agent.sigstop()
    time.sleep(pause_s)
    errors0 = d.write_errors
    t0, t0_wall = time.monotonic(), time.time()
    agent.sigcont()
    time.sleep(after_s)
    d.writer_stop()
    sampler.stop()
    ro.stop()
    on = [t for t in ro.on if t > t0]
    read_only_s = on[-1] - on[0] + ro.interval_s if on else 0.0
    writes = list(d.writes)
    before = [w for w in writes if w[1] <= t0]
    after = [w for w in writes if w[1] > t0]
    # the longest pause between two acknowledged writes that ends after the
    # resume (a pause in progress at the resume counts whole)
    seq = before[-1:] + after
    gaps = [(b[1] - a[1], a[1] - t0, b[1] - t0) for a, b in zip(seq, seq[1:])]
    outage, gap_from, gap_to = max(gaps) if gaps else (None, None, None)
    for t, e in d.write_error_log:
        if t > t0 - 0.5:
            say("      write error at %+.3f s: %s" % (t - t0, e))
    ref = d.latest_operation()
    op = None
    if ref and (not ref0 or ref["id"] != ref0["id"]):
        op = d.operation(ref["id"])
    text = agent.proc.log_text()
    return {"outage_s": outage, "gap_from_s": gap_from, "gap_to_s": gap_to,
            "read_only_s": read_only_s, "read_only_from_s": on[0] - t0 if on else None,
            "failed_after": d.write_errors - errors0,
            "writes_after": len(after),
            "eu_refused_samples": len([t for t in sampler.eu_not_writable if t > t0 - pause_s]),
            "self_fenced": "isolated: fencing the primary" in text,
            "lost": len(d.lost_writes("eu")), "two_writable": len(sampler.bad),
            "samples": sampler.samples, "errors": d.write_errors,
            "op_kind": op and op.get("kind"), "op": op, "t0_wall": t0_wall,
            "breakdown": op_breakdown(op, t0_wall) if op else "no operation"}


class Bench:
    def __init__(self, args):
        self.args = args
        self.store = h.PgCluster.create("store")
        self.n = 0

    def deployment(self, profile):
        """A fresh Deployment (new temp dir, new store database), ready."""
        from mrd_deploy import Deployment
        self.n += 1
        conninfo = self.store.create_database("bench_%d_%d" % (os.getpid(), self.n))
        t = time.monotonic()
        d = Deployment(profile=profile, store=conninfo, log_level=self.args.log_level,
                       rejoin=not self.args.no_rejoin)
        d.wait_ready(90)
        d.setup_s = time.monotonic() - t
        return d

    def one(self, profile, scenario):
        """One run in a fresh deployment, torn down afterwards."""
        with h._state.lock:
            mark = len(h._state.resources)
        try:
            d = self.deployment(profile)
            runs = {"kill": run_kill, "switchover": run_switchover,
                    "agent-freeze": run_agent_freeze}
            res = runs[scenario](d)
            res["setup_s"] = d.setup_s
            res["dir"] = d.tmp.path
            if self.args.keep:
                self.save_logs(d, res)
            return res
        finally:
            h._release_since(mark)

    def save_logs(self, d, res):
        with open(d.tmp.join("result.json"), "w") as f:
            json.dump({k: v for k, v in res.items()}, f, indent=1, default=str)


def fmt_run(profile, scenario, i, r):
    if scenario == "agent-freeze":
        return ("%-7s %-12s run %d: eu read-only for %.3f s%s; write outage after the resume"
                " %.3f s (+%.3f to +%.3f s), %d failed and %d"
                " acknowledged writes after it, eu refused writes in %d samples, agent fenced"
                " itself: %s; two writable in %d/%d samples; setup %.1f s\n      %s: %s"
                % (profile, scenario, i, r["read_only_s"],
                   " from +%.3f s" % r["read_only_from_s"]
                   if r["read_only_from_s"] is not None else "",
                   r["outage_s"] or 0.0, r["gap_from_s"] or 0.0,
                   r["gap_to_s"] or 0.0, r["failed_after"],
                   r["writes_after"], r["eu_refused_samples"],
                   "yes" if r["self_fenced"] else "no", r["two_writable"], r["samples"],
                   r["setup_s"], r["op_kind"] or "no operation", r["breakdown"]))
    if scenario == "kill":
        main = ("first write on new primary %.3f s (write gap %s), new primary %s"
                % (r["first_write_s"], "%.3f s" % r["write_gap_s"]
                   if r["write_gap_s"] is not None else "-", r["new_primary"]))
    else:
        main = ("write gap %.3f s (last ack on eu +%.3f s, first on us +%.3f s), "
                "command returned after %.3f s" % (r["write_gap_s"], r["last_old_s"],
                                                    r["first_write_s"], r["command_s"]))
    return ("%-7s %-10s run %d: %s; lost %d; two writable in %d/%d samples; %d write errors;"
            " setup %.1f s\n      %s: %s" % (profile, scenario, i, main, r["lost"],
                                             r["two_writable"], r["samples"], r["errors"],
                                             r["setup_s"], r["op_kind"], r["breakdown"]))


def mmm(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return "%.3f / %.3f / %.3f" % (min(vals), statistics.median(vals), max(vals))


def summary(results):
    if any(rs for (p, sc), rs in results.items() if sc != "agent-freeze"):
        summary_failovers(results)
    summary_freeze(results)


def summary_failovers(results):
    say("")
    say("| profile | scenario | runs | first write on new primary s min/med/max "
        "| write gap s min/med/max | acked writes lost min/med/max "
        "| two-writable samples | target (median) |")
    say("|---|---|---|---|---|---|---|---|")
    for (profile, scenario), rs in results.items():
        if not rs or scenario == "agent-freeze":
            continue
        metric = "first_write_s" if scenario == "kill" else "write_gap_s"
        bound = TARGETS.get((profile, scenario, metric))
        med = statistics.median([r[metric] for r in rs])
        target = "-"
        if bound is not None:
            target = "%s <= %.1f s: %s" % ("first write" if scenario == "kill" else "write gap",
                                          bound, "met" if med <= bound else "MISSED")
        if scenario == "switchover":
            lost_ok = all(r["lost"] == 0 for r in rs)
            target += "; 0 lost: %s" % ("met" if lost_ok else "MISSED")
        lost = [r["lost"] for r in rs]
        say("| %s | %s | %d | %s | %s | %d / %g / %d | %d of %d | %s |" % (
            profile, scenario, len(rs), mmm([r["first_write_s"] for r in rs]),
            mmm([r["write_gap_s"] for r in rs]), min(lost), statistics.median(lost),
            max(lost), sum(r["two_writable"] for r in rs), sum(r["samples"] for r in rs),
            target))


def summary_freeze(results):
    freeze = [(k, rs) for k, rs in results.items() if k[1] == "agent-freeze" and rs]
    if freeze:
        say("")
        say("| profile | scenario | runs | eu read-only s min/med/max "
            "| write outage after resume s min/med/max "
            "| failed writes after resume min/med/max | runs where eu fenced itself "
            "| operations | two-writable samples |")
        say("|---|---|---|---|---|---|---|---|---|")
    for (profile, scenario), rs in freeze:
        failed = [r["failed_after"] for r in rs]
        say("| %s | %s | %d | %s | %s | %d / %g / %d | %d | %d | %d of %d |" % (
            profile, scenario, len(rs), mmm([r["read_only_s"] for r in rs]),
            mmm([r["outage_s"] for r in rs]), min(failed),
            statistics.median(failed), max(failed), sum(1 for r in rs if r["self_fenced"]),
            sum(1 for r in rs if r["op_kind"]), sum(r["two_writable"] for r in rs),
            sum(r["samples"] for r in rs)))


# --------------------------------------------------------------------------
# the probe cross-check


def probe_trial(bench, profile, scenario, outdir):
    """One failover_probe.py trial against a fresh deployment; returns the
    path of its result JSON."""
    with h._state.lock:
        mark = len(h._state.resources)
    try:
        d = bench.deployment(profile)
        nodes = []
        for r in ("eu", "us", "ap"):
            nodes += ["--node", "%s=%s" % (r, d.pg[r].conninfo(connect_timeout=1))]
        label = "meridian/%s/%s" % (profile, "failover" if scenario == "kill" else "switchover")
        out = os.path.join(outdir, "%s-%s.json" % (profile, scenario))
        argv = [sys.executable, PROBE, "trial", "--dsn", d.dsn()] + nodes + [
            "--label", label, "--out", out,
            "--log", os.path.join(outdir, "%s-%s.tsv" % (profile, scenario))]
        if scenario == "kill":
            pids = [d.pg["eu"].postmaster_pid(), d.agents["eu"].proc.pid]
            argv += ["--kill-pids", ",".join(str(p) for p in pids)]
        else:
            sargv, how = switchover_argv(d)
            argv += ["--action", " ".join(shlex.quote(a) for a in sargv)]
            say("probe %s/%s: action = %s" % (profile, scenario, how))
        sampler = Sampler(d)
        cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=300)
        sampler.stop()
        say("probe %s/%s: %s" % (profile, scenario, cp.stdout.strip()))
        say("probe %s/%s: two writable (default_transaction_read_only off and not in "
            "recovery) in %d of %d samples of our own sampler"
            % (profile, scenario, len(sampler.bad), sampler.samples))
        try:
            with open(out) as f:
                res = json.load(f)
            say("probe %s/%s: dual_primary_s %s (seconds in which two nodes reported "
                "pg_is_in_recovery() = false), node events %s"
                % (profile, scenario, res.get("dual_primary_s"),
                   json.dumps(res.get("node_events"))))
            ref = d.latest_operation()
            if ref:
                op = d.operation(ref["id"])
                say("probe %s/%s: %s: %s" % (profile, scenario, op.get("kind"),
                                             op_breakdown(op, res.get("t0", 0))))
        except (OSError, ValueError, h.HarnessError) as e:
            say("probe %s/%s: no result: %s" % (profile, scenario, e))
        return out
    finally:
        h._release_since(mark)


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per profile and scenario (5)")
    ap.add_argument("--profile", choices=("default", "fast", "all"), default="all")
    ap.add_argument("--scenario", choices=("kill", "switchover", "agent-freeze", "all"),
                    default="all", help="all: kill and switchover")
    ap.add_argument("--probe", action="store_true",
                    help="one failover_probe.py trial per profile and scenario instead")
    ap.add_argument("--build", default=None, help="build directory (default <source>/build)")
    ap.add_argument("--no-rejoin", action="store_true",
                    help="configure no rejoin hook: the old primary stays a fenced primary")
    ap.add_argument("--keep", action="store_true",
                    help="keep every run's directory (logs, result.json) and print it")
    ap.add_argument("--log-level", default="info", help="of controllers and agents (info)")
    ap.add_argument("--api-switchover", metavar="URLS", help=argparse.SUPPRESS)
    ap.add_argument("--to", default="us", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe and not PROBE:
        ap.error("--probe needs MERIDIAN_FAILOVER_PROBE, the path of the failover probe script")
    if args.probe and not os.path.isfile(PROBE):
        ap.error("--probe: no such file: %s (MERIDIAN_FAILOVER_PROBE)" % PROBE)

    if args.api_switchover:  # the action the probe runs while meridianctl is missing
        h.setup_standalone(args.build)
        rc, res = api_switchover(args.api_switchover.split(","), args.to)
        print(json.dumps(res, default=str)[:2000] if not isinstance(res, str) else res)
        sys.exit(rc)

    if args.keep:
        os.environ["MERIDIAN_KEEP_TMP"] = "1"
        if not os.environ.get("MERIDIAN_TEST_TMP"):  # ours, so not removed at exit
            import tempfile
            os.environ["MERIDIAN_TEST_TMP"] = tempfile.mkdtemp(prefix="meridian-bench.",
                                                               dir="/tmp")
            os.chmod(os.environ["MERIDIAN_TEST_TMP"], 0o755)
    h.setup_standalone(args.build)
    h.install_signal_handlers()
    profiles = ["default", "fast"] if args.profile == "all" else [args.profile]
    scenarios = ["kill", "switchover"] if args.scenario == "all" else [args.scenario]
    started = time.monotonic()
    ctl = meridianctl()
    say("switchover through: %s" % (
        "%s --url URL_EU,URL_US,URL_AP --token OPERATOR_TOKEN switchover orders --to us --wait"
        % ctl if ctl else "the REST API (build/meridianctl does not exist yet: POST "
        "/v1/services/orders/switchover, then poll GET /v1/operations/{id} until rejoin/done)"))
    bench = Bench(args)

    if args.probe:
        if "agent-freeze" in scenarios:
            say("--probe measures kill and switchover only")
            return 2
        if not os.path.isfile(PROBE):
            say("probe not found: %s (set MERIDIAN_FAILOVER_PROBE)" % PROBE)
            return 2
        outdir = h.TempDir("probe").path
        outs = []
        for p in profiles:
            for s in scenarios:
                outs.append(probe_trial(bench, p, s, outdir))
        say("")
        cp = subprocess.run([sys.executable, PROBE, "summarize"] +
                            [o for o in outs if os.path.exists(o)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        say(cp.stdout.rstrip())
        say("probe results in %s; total %.0f s" % (outdir, time.monotonic() - started))
        return 0

    results, failures = {}, 0
    for p in profiles:
        for s in scenarios:
            results[(p, s)] = []
            for i in range(1, args.runs + 1):
                try:
                    r = bench.one(p, s)
                except (h.HarnessError, AssertionError, subprocess.SubprocessError) as e:
                    failures += 1
                    say("%-7s %-10s run %d: FAILED: %s" % (p, s, i, e))
                    continue
                results[(p, s)].append(r)
                say(fmt_run(p, s, i, r))
                if args.keep:
                    say("      kept %s" % r["dir"])
    summary(results)
    say("switchover through %s; %d run(s) failed; total %.0f s"
        % ("meridianctl" if ctl else "the REST API", failures, time.monotonic() - started))
    return 1 if failures else 0


if __name__ == "__main__":
    status = 0
    try:
        status = main()
    finally:
        problems = h.cleanup_all()
        for p in problems:
            print("problem at exit: %s" % p, flush=True)
    sys.exit(status)
