#!/usr/bin/python3
"""What one meridian-agent costs its node: memory and CPU.

Builds the programs (RelWithDebInfo, in <source>/build-bench unless --build
is given), starts a throw-away PostgreSQL 15 that serves both as the store
(database meridian_bench_agent) and as the agent's member (a primary, so
every heartbeat waits for its store commit, the most expensive case), one
meridian-controller and one meridian-agent with that member and three
checks (postgresql, tcp, http), all at 1 Hz. After a warm-up it samples the
agent's VmRSS every second for --seconds (default 60) and reads VmHWM and
utime+stime (/proc/PID/stat) at both ends; prints the figures and their
extrapolation to one hour.

Targets (the issue's): under 8 MB RSS, under 0.5 % of one core.
Figures, not assertions.

  /usr/bin/python3 tests/bench/agent_cost.py [--seconds S] [--warmup S]
      [--build DIR] [--no-build]
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
sys.path.insert(0, HERE)

import meridian_harness as h  # noqa: E402
from heartbeats import build  # noqa: E402


def status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def pss_kb(pid):
    """Proportional set size: shared pages divided among the processes
    that map them (/proc/PID/smaps_rollup)."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def uss_kb(pid):
    """Unique set size: the pages only this process maps (private clean +
    dirty): what stopping it would give back."""
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def libs_kb(pid, top=6):
    """The largest shared-library mappings by RSS: [(kB, name)]."""
    by = {}
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:
                name = os.path.basename(parts[5]) if len(parts) > 5 else "[anon]"
            elif parts and parts[0] == "Rss:" and name and ".so" in name:
                by[name] = by.get(name, 0) + int(parts[1])
    return sorted(((v, k) for k, v in by.items()), reverse=True)[:top]


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): utime is field 14, stime 15
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--build", default=os.path.join(SOURCE, "build-bench"))
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        build(args.build)
    h.setup_standalone(args.build)
    h.install_signal_handlers()

    pg = h.PgCluster.create("pg")
    store = pg.create_database("meridian_bench_agent")
    ctl = h.Controller("ctl-bench", "eu", store, log_level="warn")
    ctl.start()
    h.wait_until(lambda: ctl.ready_code() == 200, 60, what="controller ready")
    extra = {
        "heartbeat_ms": 1000,
        "peer_tokens": [{"name": "peers", "token": "meridian-bench-peer-token-0123456789",
                         "role": "agent"}],
        "members": [{"service": "orders", "name": "orders-a", "kind": "postgresql",
                     "conninfo": pg.conninfo(connect_timeout=2)}],
        "checks": [
            {"name": "pg", "kind": "postgresql", "conninfo": pg.conninfo(),
             "interval_ms": 1000, "timeout_ms": 800, "member": "orders-a"},
            {"name": "tcp", "kind": "tcp", "target": "127.0.0.1:%d" % pg.port,
             "interval_ms": 1000, "timeout_ms": 800, "member": "orders-a"},
            {"name": "http", "kind": "http", "url": ctl.url + "/v1/health",
             "weight": "warning", "interval_ms": 1000, "timeout_ms": 800},
        ],
    }
    agent = h.Agent("node-a", "eu", ctl.url, log_level="warn", extra=extra)
    agent.start()
    pid = agent.proc.pid

    def seen():
        return pg.sql_value("SELECT seq FROM meridian.nodes WHERE name = 'node-a'",
                            dbname="meridian_bench_agent")
    try:
        h.wait_until(lambda: (seen() or 0) > 0, 30, what="the agent's first recorded heartbeat")
    except h.WaitTimeout:
        print("agent log:\n" + agent.log_tail(30) + "\ncontroller log:\n" + ctl.log_tail(10))
        raise
    time.sleep(args.warmup)
    seq0 = seen()
    c0, t0 = cpu_s(pid), time.monotonic()
    rss = []
    for i in range(args.seconds):
        time.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
        if not agent.alive():
            raise h.HarnessError("the agent exited:\n" + agent.log_tail(20))
        rss.append(status_kb(pid, "VmRSS"))
    c1, t1 = cpu_s(pid), time.monotonic()
    hwm = status_kb(pid, "VmHWM")
    anon, files = status_kb(pid, "RssAnon"), status_kb(pid, "RssFile")
    pss = pss_kb(pid)
    uss = uss_kb(pid)
    libs = libs_kb(pid)
    seq1 = seen()
    role = pg.sql_value("SELECT role FROM meridian.members WHERE name = 'orders-a'",
                        dbname="meridian_bench_agent")
    wall = t1 - t0
    cpu = c1 - c0
    print("meridian-agent pid %d: 1 postgresql member (%s), 3 checks (postgresql, tcp, http), "
          "heartbeat 1 s; sampled %.0f s after a %d s warm-up" % (pid, role, wall, args.warmup))
    print("heartbeats recorded in the window: %d (%.2f/s)" % (seq1 - seq0, (seq1 - seq0) / wall))
    print("RSS: avg %.1f MB, max %.1f MB (VmRSS each second); peak VmHWM %.1f MB"
          % (sum(rss) / len(rss) / 1024.0, max(rss) / 1024.0, hwm / 1024.0))
    print("     at the end: RssAnon %.1f MB (heap, stacks), RssFile %.1f MB (mapped program and "
          "shared libraries: libcurl, OpenSSL, libpq, libuv, jansson); PSS %.1f MB"
          % (anon / 1024.0, files / 1024.0, pss / 1024.0))
    print("     USS %.1f MB (pages only the agent maps); largest libraries by RSS: %s"
          % (uss / 1024.0, ", ".join("%s %.1f MB" % (n, k / 1024.0) for k, n in libs)))
    print("CPU: %.2f s in %.0f s = %.3f %% of one core = %.1f s per hour (clock tick %d Hz, "
          "so +-%.2f s per reading)" % (cpu, wall, 100.0 * cpu / wall, cpu / wall * 3600,
                                       os.sysconf("SC_CLK_TCK"), 1.0 / os.sysconf("SC_CLK_TCK")))
    print("RESULT rss_avg_kb=%d rss_max_kb=%d hwm_kb=%d anon_kb=%d file_kb=%d pss_kb=%d "
          "uss_kb=%d cpu_pct=%.4f cpu_s_per_hour=%.1f"
          % (sum(rss) // len(rss), max(rss), hwm, anon, files, pss, uss, 100.0 * cpu / wall,
             cpu / wall * 3600))
    sys.stdout.flush()
    h.cleanup_all()


if __name__ == "__main__":
    main()
