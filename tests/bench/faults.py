#!/usr/bin/python3
"""Faults benchmark: what a client sees when something breaks, per fault.

Brings up a whole deployment per run (tests/integration/mrd_deploy.py: three
regions on loopback, eu primary, us and ap streaming replicas, service
"orders", rejoin hook configured), runs

  - a writer: one INSERT every 20 ms to the first member that takes it, in
    the order of the multi-host conninfo (what target_session_attrs=
    read-write does), each host and statement with a client-side deadline
    of 1 s (a frozen server never answers: the writer gives up and moves
    on, as an application with timeouts does);
  - a sampler: every 100 ms, one write attempt on EVERY member directly (a
    thread per member, deadline 0.5 s), rounds numbered; a round in which
    two members accepted a write is a two-writable sample;
  - a waiting client (freeze faults): one INSERT sent to eu right after the
    freeze (its backend frozen too), with no deadline: whether (and when) eu acknowledges it matters:
    acknowledged after the new primary's first write is two writers;

injects one fault, and measures:

  first write   time from the fault to the first write acknowledged by a
                new primary ("no failover" where none happened);
  outage        the longest time without an acknowledged write, from 1 s
                before the fault to the end of the run;
  after         the longest time without an acknowledged write in the 10 s
                after the new primary's first write (a new primary that
                fences itself shows here), and whether every sample of
                that window found the new primary accepting writes;
  lost          acknowledged writes missing on the final primary, and the
                operation's reported lost bytes;
  two-writable  sampler rounds with two members accepting writes (must be 0).

Faults (--fault, default all):
  switchover     POST switchover eu -> us
  kill           SIGKILL of eu's PostgreSQL (postmaster, backends) and agent
  pg-freeze      SIGSTOP of eu's postmaster and backends for 15 s
  region-freeze  SIGSTOP of eu's PostgreSQL, agent and controller for 12 s
  agent-freeze   SIGSTOP of eu's agent alone for 10 s (no failover expected)
  switchover-loop  N switchovers back to back (--loop N, default 50),
                 alternating targets; figures per switchover

  /usr/bin/python3 tests/bench/faults.py [--runs 3] [--profile default|fast|all]
      [--fault F[,F...]] [--loop 50] [--keep]

Uses MERIDIAN_BUILD_DIR (default <source>/build). Needs root (PostgreSQL
runs as user postgres). Figures, not assertions: run it on a quiet machine.
"""

import argparse
import os
import select
import signal
import statistics
import sys
import threading
import time

import psycopg2
import psycopg2.extensions

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import meridian_harness as h  # noqa: E402

REGIONS = ("eu", "us", "ap")
FAULTS = ("switchover", "kill", "pg-freeze", "region-freeze", "agent-freeze",
          "switchover-loop")
AFTER_S = 10.0


def say(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# clients with deadlines (psycopg2 asynchronous connections)


def _wait(conn, deadline):
    """Drives an asynchronous psycopg2 connection until its operation ends;
    raises TimeoutError past deadline (monotonic)."""
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        if state == psycopg2.extensions.POLL_READ:
            select.select([conn.fileno()], [], [], left)
        elif state == psycopg2.extensions.POLL_WRITE:
            select.select([], [conn.fileno()], [], left)
        else:
            raise psycopg2.OperationalError("bad poll state %r" % state)


class Client:
    """One asynchronous connection with a deadline per statement."""

    def __init__(self, dsn, timeout_s):
        self.dsn, self.timeout_s = dsn, timeout_s
        self.conn = None

    def execute(self, sql, params=None):
        """Runs sql; returns the connection's port. Raises on error or
        timeout (the connection is dropped then)."""
        deadline = time.monotonic() + self.timeout_s
        try:
            if self.conn is None:
                self.conn = psycopg2.connect(self.dsn, async_=1)
                _wait(self.conn, deadline)
            cur = self.conn.cursor()
            cur.execute(sql, params)
            _wait(self.conn, deadline)
            return int(self.conn.info.port)
        except Exception:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


class MultiHostClient:
    """What libpq's multi-host conninfo with target_session_attrs=read-write
    does, with a deadline per host: asynchronous connections do not apply
    connect_timeout, and a frozen server completes the TCP handshake but
    never answers, so every host gets its own deadline; a host that refuses
    the write (read-only, in recovery) or times out hands over to the next."""

    def __init__(self, dsns, timeout_s):
        self.clients = [Client(x, timeout_s) for x in dsns]
        self.cur = 0

    def execute(self, sql, params=None):
        last = None
        for k in range(len(self.clients)):
            c = self.clients[(self.cur + k) % len(self.clients)]
            try:
                port = c.execute(sql, params)
                self.cur = (self.cur + k) % len(self.clients)
                return port
            except Exception as e:
                last = e
        raise last

    def close(self):
        for c in self.clients:
            c.close()


class Writer:
    """An INSERT every interval through the deployment's members in order,
    as a multi-host DSN with target_session_attrs=read-write would;
    records (id, monotonic ack time, port) of every acknowledged write."""

    def __init__(self, d, interval_s=0.02, timeout_s=1.0):
        self.d = d
        self.acks = []
        self.errors = 0
        self.stop_ev = threading.Event()
        self.client = MultiHostClient([d.pg[r].conninfo(connect_timeout=1) for r in REGIONS],
                                      timeout_s)
        self.interval_s = interval_s
        self.thread = threading.Thread(target=self._loop, daemon=True, name="writer")
        self.thread.start()

    def _loop(self):
        i = int(time.time() * 1000) * 1000
        deadline = time.monotonic() + 900
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            i += 1
            try:
                port = self.client.execute("INSERT INTO writes (id) VALUES (%s)", (i,))
                self.acks.append((i, time.monotonic(), port))
            except Exception:
                self.errors += 1
                self.stop_ev.wait(0.01)
            self.stop_ev.wait(self.interval_s)
        self.client.close()

    def stop(self):
        self.stop_ev.set()
        self.thread.join(15)


class RoundSampler:
    """Every interval a round: each member (its own thread and connection)
    attempts one INSERT into bench_sample; rounds[n] = set of regions whose
    write in round n was acknowledged."""

    def __init__(self, d, interval_s=0.1, timeout_s=0.5):
        self.d, self.interval_s, self.timeout_s = d, interval_s, timeout_s
        self.t0 = time.monotonic()
        self.rounds = {}
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(r,), daemon=True,
                                         name="sample-" + r) for r in REGIONS]
        for t in self.threads:
            t.start()

    def _loop(self, region):
        client = Client(self.d.pg[region].conninfo(connect_timeout=1), self.timeout_s)
        n = 0
        deadline = self.t0 + 900
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            start = self.t0 + n * self.interval_s
            now = time.monotonic()
            if start < now - self.interval_s:  # fell behind (a frozen member)
                n = int((now - self.t0) / self.interval_s)
                continue
            if start > now:
                self.stop_ev.wait(start - now)
            try:
                client.execute("INSERT INTO bench_sample (region, round) VALUES (%s, %s)",
                               (region, n))
                with self.lock:
                    self.rounds.setdefault(n, set()).add(region)
            except Exception:
                pass
            n += 1
        client.close()

    def round_of(self, t):
        return int((t - self.t0) / self.interval_s)

    def two_writable(self):
        with self.lock:
            return sorted((n, sorted(s)) for n, s in self.rounds.items() if len(s) > 1)

    def accepted(self, region, t_from, t_to):
        """(rounds in [t_from, t_to] where region's write was acknowledged,
        rounds in that window)."""
        a, b = self.round_of(t_from) + 1, self.round_of(t_to)
        with self.lock:
            ok = sum(1 for n in range(a, b) if region in self.rounds.get(n, ()))
        return ok, max(0, b - a)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)


class WaitingClient:
    """One INSERT sent to eu without a deadline (a client stuck on a frozen
    server); records when it was acknowledged, if ever."""

    def __init__(self, d):
        self.acked_at = None
        self.error = None
        self.conn = psycopg2.connect(d.pg["eu"].conninfo(connect_timeout=2))
        self.conn.autocommit = True
        self.thread = threading.Thread(target=self._run, daemon=True, name="waiting")

    def start(self):
        self.thread.start()
        time.sleep(0.05)

    def _run(self):
        try:
            with self.conn.cursor() as cur:
                cur.execute("INSERT INTO writes (id) VALUES (%s)", (1,))
            self.acked_at = time.monotonic()
        except Exception as e:
            self.error = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)

    def join(self, timeout_s):
        self.thread.join(timeout_s)
        try:
            self.conn.close()
        except Exception:
            pass


# --------------------------------------------------------------------------
# faults


def pg_pids(d, region):
    pm = d.pg[region].postmaster_pid()
    if pm is None:
        raise h.HarnessError("%s has no postmaster" % region)
    return [pm] + h._children_of(pm)


def signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


class Freeze:
    """SIGSTOPs a set of processes now and SIGCONTs them after seconds (in
    a timer thread; also at cleanup, whatever happens)."""

    def __init__(self, pids, seconds):
        self.pids = list(pids)
        signal_all(self.pids, signal.SIGSTOP)
        self.timer = threading.Timer(seconds, self.resume)
        self.timer.daemon = True
        self.timer.start()

    def resume(self):
        signal_all(self.pids, signal.SIGCONT)

    def cancel(self):
        self.timer.cancel()
        self.resume()


def inject(d, fault, run):
    """Starts the fault; returns (monotonic time, cleanup callable)."""
    if fault == "switchover":
        t = time.monotonic()
        threading.Thread(target=lambda: d.start_op("switchover", to="us", retry_s=10),
                         daemon=True).start()
        return t, lambda: None
    if fault == "kill":
        pids = [d.agents["eu"].proc.pid] + pg_pids(d, "eu")
        t = time.monotonic()
        signal_all(pids, signal.SIGSTOP)
        signal_all(pids + [p for p in h._children_of(pids[1]) if p not in pids], signal.SIGKILL)
        d.agents["eu"].proc.popen.wait(10)
        return t, lambda: None
    if fault in ("pg-freeze", "region-freeze"):
        # the waiting client's backend is frozen with the rest before its
        # INSERT is sent: the INSERT surely waits on the frozen server
        run["waiting"] = WaitingClient(d)
        pids = pg_pids(d, "eu")
        if fault == "region-freeze":
            pids = [d.agents["eu"].proc.pid, d.ctl["eu"].proc.pid] + pids
        t = time.monotonic()
        f = Freeze(pids, 15.0 if fault == "pg-freeze" else 12.0)
        run["waiting"].start()
        return t, f.cancel
    if fault == "agent-freeze":
        t = time.monotonic()
        f = Freeze([d.agents["eu"].proc.pid], 10.0)
        return t, f.cancel
    raise ValueError(fault)


# --------------------------------------------------------------------------
# one run


def longest_gap(acks, t_from, t_to):
    """Longest time without an acknowledged write within [t_from, t_to]."""
    times = [t_from] + [a[1] for a in acks if t_from < a[1] < t_to] + [t_to]
    return max(b - a for a, b in zip(times, times[1:]))


def measure(d, fault, profile):
    port_region = {d.pg[r].port: r for r in REGIONS}
    d.pg["eu"].sql("CREATE TABLE IF NOT EXISTS bench_sample (n bigserial PRIMARY KEY, "
                   "region text, round int, at timestamptz DEFAULT clock_timestamp())")
    for r in ("us", "ap"):
        h.wait_until(lambda r=r: d.pg[r].sql_value(
            "SELECT to_regclass('bench_sample') IS NOT NULL"), 20, what="table on " + r)
    w = Writer(d)
    h.wait_until(lambda: len(w.acks) >= 25, 30, what="25 writes before the fault")
    s = RoundSampler(d)
    time.sleep(1.0)
    run = {}
    eu_port = d.pg["eu"].port
    t0, cleanup = inject(d, fault, run)
    res = {"fault": fault, "profile": profile}
    try:
        expect_failover = fault not in ("agent-freeze",)
        first = None
        if expect_failover:
            first = h.wait_until(
                lambda: next((a for a in list(w.acks) if a[1] > t0 and a[2] != eu_port), None),
                60, interval_s=0.01, what="a write acknowledged by a new primary")
            time.sleep(AFTER_S)
        else:
            time.sleep(25.0)  # the freeze, and long enough after it
            first = next((a for a in list(w.acks) if a[1] > t0 and a[2] != eu_port), None)
        t_end = time.monotonic()
    finally:
        cleanup()
    if "waiting" in run:
        run["waiting"].join(20)
    w.stop()
    s.stop()
    acks = list(w.acks)
    res["first_write_s"] = first[1] - t0 if first else None
    res["new_primary"] = port_region[first[2]] if first else None
    res["outage_s"] = longest_gap(acks, t0 - 1.0, t_end)
    if first:
        res["after_gap_s"] = longest_gap(acks, first[1], min(t_end, first[1] + AFTER_S))
        ok, n = s.accepted(res["new_primary"], first[1], min(t_end, first[1] + AFTER_S))
        res["after_writable"] = (ok, n)
    final = d.service()["primary_region"]
    ids = {r[0] for r in d.pg[final].sql("SELECT id FROM writes")}
    res["lost"] = sum(1 for a in acks if a[0] not in ids)
    res["final_primary"] = final
    res["two_writable"] = len(s.two_writable())
    res["two_writable_rounds"] = s.two_writable()[:5]
    res["rounds"] = len(s.rounds)
    res["errors"] = w.errors
    op = d.latest_operation()
    res["op"] = "%s %s->%s %s lost_bytes=%s" % (
        op.get("kind"), op.get("from_region"), op.get("to_region"), op.get("step"),
        op.get("lost_bytes")) if op and op.get("epoch", 0) > 1 else "no operation"
    if "waiting" in run:
        wc = run["waiting"]
        if wc.acked_at is None:
            res["waiting"] = "not acknowledged (%s)" % (wc.error or "still waiting")
        else:
            late = first is not None and wc.acked_at > first[1]
            res["waiting"] = "acknowledged %.2f s after the fault%s" % (
                wc.acked_at - t0, ": AFTER the new primary's first write" if late else "")
            if late:
                res["two_writable"] += 1
    return res


def run_loop(d, profile, n):
    """n switchovers back to back; returns a result per switchover."""
    port_region = {d.pg[r].port: r for r in REGIONS}
    d.pg["eu"].sql("CREATE TABLE IF NOT EXISTS bench_sample (n bigserial PRIMARY KEY, "
                   "region text, round int, at timestamptz DEFAULT clock_timestamp())")
    time.sleep(0.5)
    w = Writer(d)
    h.wait_until(lambda: len(w.acks) >= 10, 30, what="writes before the loop")
    s = RoundSampler(d)
    out = []
    src, prev = "eu", None
    try:
        for i in range(n):
            if i % 5 == 4:
                dst = [r for r in REGIONS if r not in (src, prev)][0]
            else:
                dst = "us" if src == "eu" else "eu"
            t0 = time.monotonic()
            op_id = d.start_op("switchover", to=dst, retry_s=30)
            port = d.pg[dst].port
            first = h.wait_until(
                lambda: next((a for a in list(w.acks) if a[1] > t0 and a[2] == port), None),
                60, interval_s=0.01, what="a write on " + dst)
            op = d.wait_op(op_id, 90)
            last_old = [a for a in list(w.acks) if a[1] < first[1] and port_region[a[2]] == src]
            gap = first[1] - last_old[-1][1] if last_old else None
            out.append({"i": i + 1, "from": src, "to": dst, "gap": gap, "t_first": first[1],
                        "step": op["step"], "t0": t0})
            prev, src = src, dst
        time.sleep(2.0)
    finally:
        w.stop()
        s.stop()
    ends = [x["t0"] for x in out[1:]] + [time.monotonic() - 2.0]
    for x, end in zip(out, ends):
        x["after_gap_s"] = longest_gap(w.acks, x["t_first"], end)
        x["after_writable"] = s.accepted(x["to"], x["t_first"], end)
    ids = {r[0] for r in d.pg[src].sql("SELECT id FROM writes")}
    lost = sum(1 for a in w.acks if a[0] not in ids)
    return out, lost, len(s.two_writable())


# --------------------------------------------------------------------------


def mm(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return "%.3f / %.3f" % (statistics.median(vals), max(vals))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", choices=("default", "fast", "all"), default="all")
    ap.add_argument("--fault", default="all", help="comma-separated, or all")
    ap.add_argument("--loop", type=int, default=50, help="switchovers of switchover-loop")
    ap.add_argument("--build", default=None)
    ap.add_argument("--keep", action="store_true", help="keep every run's directory")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args()
    faults = list(FAULTS) if args.fault == "all" else args.fault.split(",")
    for f in faults:
        if f not in FAULTS:
            ap.error("unknown fault %s" % f)
    if args.keep:
        os.environ["MERIDIAN_KEEP_TMP"] = "1"
    h.setup_standalone(args.build)
    h.install_signal_handlers()
    from mrd_deploy import Deployment
    store = h.PgCluster.create("store")
    profiles = ["default", "fast"] if args.profile == "all" else [args.profile]
    table = []
    started = time.monotonic()
    k = 0
    for profile in profiles:
        for fault in faults:
            runs = []
            for i in range(1 if fault == "switchover-loop" else args.runs):
                with h._state.lock:
                    mark = len(h._state.resources)
                try:
                    k += 1
                    conninfo = store.create_database("faults_%d_%d" % (os.getpid(), k))
                    d = Deployment(profile=profile, store=conninfo, rejoin=True,
                                   log_level=args.log_level,
                                   policy={"rejoin_timeout_ms": 60000})
                    d.wait_ready(90)
                    if fault == "switchover-loop":
                        out, lost, two = run_loop(d, profile, args.loop)
                        for x in out:
                            ok, n = x["after_writable"]
                            say("%-7s loop %2d %s->%s gap %s s, after: longest gap %.3f s, "
                                "new primary accepted %d/%d rounds, %s" % (
                                    profile, x["i"], x["from"], x["to"],
                                    "%.3f" % x["gap"] if x["gap"] is not None else "-",
                                    x["after_gap_s"], ok, n, x["step"]))
                        gaps = [x["gap"] for x in out]
                        outages = sum(1 for x in out if x["after_writable"][0]
                                      < x["after_writable"][1])
                        say("%-7s switchover-loop: %d switchovers, gap median/max %s s, "
                            "%d with a new primary not accepting every round after its first "
                            "write, lost %d, two-writable rounds %d" % (
                                profile, len(out), mm(gaps), outages, lost, two))
                        table.append((profile, fault, len(out), "-", mm(gaps), mm(
                            [x["after_gap_s"] for x in out]), "%d" % lost, two,
                            "%d outages after" % outages))
                        continue
                    r = measure(d, fault, profile)
                    runs.append(r)
                    aw = r.get("after_writable")
                    say("%-7s %-13s run %d: first write %s, new primary %s, outage %.3f s, "
                        "after: gap %s, accepted %s; lost %d; two-writable %d/%d; %s%s" % (
                            profile, fault, i + 1,
                            "%.3f s" % r["first_write_s"] if r["first_write_s"] is not None
                            else "no failover", r["new_primary"] or "-", r["outage_s"],
                            "%.3f s" % r["after_gap_s"] if "after_gap_s" in r else "-",
                            "%d/%d" % aw if aw else "-", r["lost"], r["two_writable"],
                            r["rounds"], r["op"],
                            "; waiting INSERT " + r["waiting"] if "waiting" in r else ""))
                    if args.keep:
                        say("      kept %s" % d.tmp.path)
                except (h.HarnessError, AssertionError, psycopg2.Error) as e:
                    say("%-7s %-13s run %d: FAILED: %s" % (profile, fault, i + 1, e))
                finally:
                    h._release_since(mark)
            if runs:
                fw = [r["first_write_s"] for r in runs]
                table.append((profile, fault, len(runs),
                              mm(fw) if any(v is not None for v in fw) else "no failover",
                              mm([r["outage_s"] for r in runs]),
                              mm([r.get("after_gap_s") for r in runs]),
                              "%d" % max(r["lost"] for r in runs),
                              sum(r["two_writable"] for r in runs),
                              "; ".join(sorted(set(r.get("waiting", "") for r in runs) - {""}))))
    say("")
    say("| profile | fault | runs | first write on new primary s (median / max) "
        "| write outage s (median / max) | longest gap in the 10 s after s (median / max) "
        "| acked writes lost (max) | two-writable | notes |")
    say("|---|---|---|---|---|---|---|---|---|")
    for row in table:
        say("| %s | %s | %d | %s | %s | %s | %s | %d | %s |" % row)
    say("total %.0f s" % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    status = 0
    try:
        status = main()
    finally:
        for p in h.cleanup_all():
            print("problem at exit: %s" % p, flush=True)
    sys.exit(status)
