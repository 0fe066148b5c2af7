"""The agent's fence must hold, and a new primary must stay primary: one
meridian-agent per node against a real PostgreSQL primary (p, agent a) and
its pg_basebackup replica (r, agent b), driven by the fake controller
(fake_controller.py: it delivers exactly the commands a test queues and says
whether a heartbeat was "recorded").

The tests share the clusters and agents and run in order:
  read_only_done_while_frozen
                     the issue's observation: fence read_only reports done with a
                     position while the postmaster and a waiting INSERT's backend
                     are stopped; the INSERT is acknowledged after they resume
  read_only_frozen   fence mode read_only against a PostgreSQL whose postmaster
                     and backends are stopped (SIGSTOP) while a client's INSERT
                     waits on it: what the fence reports, and that the INSERT
                     is acknowledged once the server resumes (why read_only is
                     not a fence; see the docstring)
  demote_healthy     fence mode demote (the default): a session that had run
                     BEGIN READ WRITE cannot commit, the reported position is
                     pg_controldata's checkpoint, the server is back in
                     recovery and the member reports fenced
  unfence_demoted    unfence: the server is a writable primary again
  demote_frozen      demote of a stopped (SIGSTOP) server: killed after
                     fence.timeout_ms, done with position 0 (unknown), every
                     frozen process gone, the INSERT that waited on it is never
                     acknowledged and its row does not exist
  promote_stays      a promoted replica whose agent has no recorded contact and
                     misses a peer lease is not fenced by its own agent for
                     10 s once the contact is recorded (the post-promote race)
Waits are bounded with room for a loaded machine; nothing asserts on timing
except that the fence of a frozen server comes back (bounded wait).
"""
import os
import signal
import threading
import time

import psycopg2

from fake_controller import FakeController
from meridian_harness import (PGBIN, Agent, PgCluster, _as_postgres, _children_of, fixture,
                              free_port, log, pid_alive, require_env, run, run_all, test,
                              wait_until)

ISOLATION_MS = 3000
FENCE_TIMEOUT_MS = 1500
PEER_TOKEN = "meridian-test-peer-token-0123456789"


class Env:
    pass


def member_cfg(e, mode, timeout_ms=FENCE_TIMEOUT_MS):
    # no data_dir: the agent learns it from the server (SHOW data_directory)
    return [{"service": "orders", "name": "orders-a", "kind": "postgresql",
             "conninfo": e.p.conninfo(connect_timeout=2, application_name="meridian-agent-a"),
             "fence": {"mode": mode, "timeout_ms": timeout_ms}}]


@fixture
def env():
    require_env("MERIDIAN_BUILD_DIR")
    e = Env()
    e.p = PgCluster.create("primary")
    e.p.sql("CREATE TABLE t (id bigserial PRIMARY KEY, v text)")
    e.r = e.p.make_replica("replica")
    wait_until(lambda: [x for x in e.p.replication_state() if x["state"] == "streaming"], 30,
               what="replica streaming")
    e.ctl = FakeController()
    e.ctl.services["orders"] = {"epoch": 1, "primary_region": "eu", "primary_position": 0,
                                "primary_member": "orders-a"}
    e.ctl.primary_node = "a"
    common = {"heartbeat_ms": 200, "isolation_timeout_ms": ISOLATION_MS,
              "request_timeout_ms": 500,
              "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}]}
    port_a, port_b = free_port(), free_port()
    e.ca = dict(common)
    e.ca.update({"peers": [{"name": "b", "url": "http://127.0.0.1:%d" % port_b,
                            "token": PEER_TOKEN}],
                 "members": member_cfg(e, "read_only")})
    cb = dict(common)
    cb.update({"peers": [{"name": "a", "url": "http://127.0.0.1:%d" % port_a,
                          "token": PEER_TOKEN}],
               "members": [{"service": "orders", "name": "orders-b", "kind": "postgresql",
                            "conninfo": e.r.conninfo(connect_timeout=2), "data_dir": e.r.data}]})
    e.a = Agent("a", "eu", e.ctl.url, log_level="debug", extra=e.ca, port=port_a)
    e.b = Agent("b", "us", e.ctl.url, log_level="debug", extra=cb, port=port_b)
    e.ctl.token = e.a.cfg["token"]
    e.a.start()
    e.b.start()
    wait_until(lambda: (m := e.ctl.last_member("a", "orders-a")) and m["role"] == "primary",
               30, what="a reporting its primary")
    return e


def member(e, node, name):
    return e.ctl.last_member(node, name)


def server_pids(pg):
    pm = pg.postmaster_pid()
    assert pm, "postgres %s is not running" % pg.name
    return [pm] + _children_of(pm)


def freeze(pids):
    """SIGSTOPs pids (the postmaster first: it forks no more); returns those
    stopped (a backend may have exited since it was listed)."""
    done = []
    for p in pids:
        try:
            os.kill(p, signal.SIGSTOP)
            done.append(p)
        except ProcessLookupError:
            pass
    return done


def thaw(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGCONT)
        except ProcessLookupError:
            pass


class WaitingInsert:
    """An INSERT sent on a connection opened before the server froze: it
    waits on the frozen backend. outcome: 'acknowledged' or the error."""

    def __init__(self, pg, value):
        self.conn = pg.connect()
        self.value = value
        self.outcome = None
        self.acked_at = None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        try:
            with self.conn.cursor() as cur:
                cur.execute("INSERT INTO t(v) VALUES (%s)", (self.value,))
            self.acked_at = time.monotonic()
            self.outcome = "acknowledged"
        except psycopg2.Error as ex:
            self.outcome = "error: %s" % str(ex).strip()

    def start(self):
        self.thread.start()

    def join(self, timeout_s):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the INSERT is still waiting after %.0f s" % timeout_s
        try:
            self.conn.close()
        except psycopg2.Error:
            pass


def controldata_checkpoint(pg):
    out = run(_as_postgres(PGBIN + "/pg_controldata", "-D", pg.data)).stdout
    for line in out.splitlines():
        if line.startswith("Latest checkpoint location:"):
            hi, lo = line.split(":", 1)[1].strip().split("/")
            return (int(hi, 16) << 32) | int(lo, 16)
    raise AssertionError("no checkpoint location in pg_controldata:\n" + out)


def restart_agent_a(e, mode, timeout_ms=FENCE_TIMEOUT_MS):
    e.a.write_config(members=member_cfg(e, mode, timeout_ms))
    restart_a(e)


def restart_a(e):
    """Restarts agent a and waits for two beats of the new process (the
    second one follows a status poll, which learns the data directory)."""
    assert e.a.stop() == 0
    with e.ctl.lock:
        seen = len(e.ctl.beats.get("a", []))
    e.a.start()

    def fresh():
        with e.ctl.lock:
            new = [b for _, b in e.ctl.beats.get("a", [])[seen:]]
        return len(new) >= 3 and new[-1]["members"][0]["role"] in ("primary", "fenced")
    wait_until(fresh, 30, what="a reporting after its restart")


@test
def read_only_done_while_frozen():
    """The issue's observation, reproduced: fence read_only came back done
    with a position while eu's postmaster and the backend of a waiting
    INSERT were stopped, and the INSERT was acknowledged after they resumed.

    How: a read_only fence is five statements on the agent's own action
    connection (member.c run_sql; done only when all five answered, pg.c
    fails them all on a timeout or a lost connection). When that one backend
    runs -- here it is left out of the freeze, as a backend forked after the
    list of PIDs to stop was taken is -- every statement succeeds at once:
    ALTER SYSTEM writes a file; pg_reload_conf() is kill(postmaster, SIGHUP)
    and pg_terminate_backend() is kill(backend, SIGTERM), and kill() succeeds
    on a stopped process: the signal waits, undelivered, until SIGCONT; the
    position is read from shared memory. So "done" proved nothing about the
    stopped processes. The INSERT's backend was idle from PostgreSQL's view
    (it had not read the statement: no xid, no transaction start), so it was
    not even among those terminated; on SIGCONT it read the INSERT and ran it
    in a read-write transaction before the postmaster had processed its
    SIGHUP and forwarded the reload: committed, acknowledged. read_only is
    therefore not a fence of a hung server (and a session can always BEGIN
    READ WRITE); demote confirms that every process is gone."""
    e = env()
    e.ctl.services["orders"]["epoch"] = 2
    ins = WaitingInsert(e.p, "frozen-agent-running")
    agent_pids = {r[0] for r in e.p.sql(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'meridian-agent-a'")}
    assert len(agent_pids) >= 1, agent_pids
    pids = freeze([p for p in server_pids(e.p) if p not in agent_pids])
    t0 = time.monotonic()
    try:
        ins.start()
        time.sleep(0.3)
        e.ctl.command("a", "ro-fence-0", "orders", "orders-a", "fence", 2)
        res = e.ctl.result("ro-fence-0", timeout=20)
        log("read_only fence, postmaster and the INSERT's backend stopped: %s after %.1f s"
            % (res, time.monotonic() - t0))
        assert res["status"] == "done" and res["position"] > 0, res
        assert ins.outcome is None, ins.outcome  # still waiting: nothing ran on the server
    finally:
        thaw(pids)
    ins.join(30)
    log("waiting INSERT after resume: %s" % ins.outcome)
    assert ins.outcome == "acknowledged", ins.outcome
    e.ctl.command("a", "ro-unfence-0", "orders", "orders-a", "unfence", 2)
    assert e.ctl.result("ro-unfence-0")["status"] == "done"
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "primary", 20,
               what="a primary again")


@test
def read_only_frozen():
    """Reproduces the frozen-primary write with the weaker mode read_only.

    How a read_only fence "holds" on a frozen server: its statements run on
    the agent's action connection, whose backend is stopped like every other
    one, so they wait; the fence can only fail (query timeout) or, worse,
    succeed once the server resumes -- and a session that was already
    waiting (the client's INSERT) is then served before or concurrently with
    the fence: its transaction began read-write, nothing in read_only stops
    its commit. Whatever the agent reports, it can report nothing that holds
    while the server is frozen: no statement of a stopped server runs. The
    test asserts the two facts that make read_only unfit as the default:
    no 'done' arrives while the server is frozen, and the waiting INSERT is
    acknowledged after the server resumes, although a fence was ordered
    before it."""
    e = env()
    e.ctl.services["orders"]["epoch"] = 2
    ins = WaitingInsert(e.p, "frozen-read-only")
    pids = server_pids(e.p)
    pids = freeze(pids)
    frozen_at = time.monotonic()
    try:
        ins.start()
        time.sleep(0.3)  # the INSERT is on the wire, its backend stopped
        e.ctl.command("a", "ro-fence-1", "orders", "orders-a", "fence", 2)
        # the agent's action statements wait on a stopped backend: no result
        # that claims the fence holds can come while it is frozen
        deadline = time.monotonic() + 6.0
        res = None
        while time.monotonic() < deadline and res is None:
            with e.ctl.lock:
                res = e.ctl.results.get("ro-fence-1")
            time.sleep(0.05)
        log("read_only fence while frozen (%.1f s): %s" % (time.monotonic() - frozen_at, res))
        assert res is None or res[1]["status"] != "done", res
    finally:
        thaw(pids)
    ins.join(30)
    log("waiting INSERT after resume: %s" % ins.outcome)
    res = e.ctl.result("ro-fence-1", timeout=30)
    log("read_only fence result: %s" % res)
    assert ins.outcome == "acknowledged", ins.outcome
    assert e.p.sql_value("SELECT count(*) FROM t WHERE v = 'frozen-read-only'") == 1
    # back to a writable primary for the next tests
    e.ctl.command("a", "ro-unfence-1", "orders", "orders-a", "unfence", 2)
    assert e.ctl.result("ro-unfence-1")["status"] == "done"
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "primary", 20,
               what="a primary again")


@test
def demote_healthy():
    e = env()
    # a clean stop however loaded the machine: its position is the checkpoint
    restart_agent_a(e, "demote", timeout_ms=60000)
    e.ctl.services["orders"]["epoch"] = 3
    s = e.p.connect()
    s.autocommit = False
    with s.cursor() as cur:
        cur.execute("BEGIN READ WRITE")
        cur.execute("INSERT INTO t(v) VALUES ('begun before the fence')")
    e.ctl.command("a", "demote-1", "orders", "orders-a", "fence", 3)
    res = e.ctl.result("demote-1", timeout=30)
    assert res["status"] == "done", res
    try:
        s.commit()
        committed = True
    except psycopg2.Error:
        committed = False
    assert not committed, "a session that began read-write committed after the fence"
    assert e.p.is_in_recovery(), "the demoted server must run as a standby"
    assert res["position"] == controldata_checkpoint(e.p) > 0, res
    assert e.p.sql_value("SELECT count(*) FROM t WHERE v = 'begun before the fence'") == 0
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "fenced"
               and m["fenced"], 20, what="a reporting its member fenced")
    # a new session cannot write either
    try:
        e.p.sql("INSERT INTO t(v) VALUES ('after')")
        raise AssertionError("a write succeeded on the demoted server")
    except psycopg2.Error as ex:
        assert "read-only" in str(ex), ex
    # the state survives an agent restart: still fenced, never "replica"
    restart_a(e)
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "fenced", 20,
               what="a reporting fenced after its restart")
    with e.ctl.lock:
        beats = [b for _, b in e.ctl.beats["a"][-10:]]
    assert all(m["role"] != "replica" for b in beats for m in b["members"]), beats


@test
def unfence_demoted():
    e = env()
    e.ctl.command("a", "undemote-1", "orders", "orders-a", "unfence", 3)
    res = e.ctl.result("undemote-1", timeout=60)
    assert res["status"] == "done", res
    assert not e.p.is_in_recovery()
    e.p.sql("INSERT INTO t(v) VALUES ('after unfence')")
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "primary"
               and not m["fenced"], 20, what="a reporting primary after unfence")
    wait_until(lambda: [x for x in e.p.replication_state() if x["state"] == "streaming"], 60,
               what="the replica streaming again")


@test
def demote_frozen():
    e = env()
    restart_agent_a(e, "demote", timeout_ms=FENCE_TIMEOUT_MS)
    e.ctl.services["orders"]["epoch"] = 4
    ins = WaitingInsert(e.p, "frozen-demote")  # its backend is forked before the freeze
    pids = server_pids(e.p)
    pids = freeze(pids)
    try:
        ins.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        e.ctl.command("a", "demote-2", "orders", "orders-a", "fence", 4)
        res = e.ctl.result("demote-2", timeout=30)
        log("demote of a frozen server: %s after %.1f s" % (res, time.monotonic() - t0))
        assert res["status"] == "done", res
        assert res.get("position", 0) == 0, res  # killed: the position is unknown
        left = [p for p in pids if pid_alive(p)]
        assert not left, "frozen processes still alive after the fence: %s" % left
    finally:
        thaw(pids)
    ins.join(30)
    assert ins.outcome != "acknowledged", ins.outcome
    assert "killed: fence holds" in e.a.proc.log_text()
    wait_until(lambda: e.p.running() and e.p.is_in_recovery(), 60,
               what="the killed server back as a standby")
    assert e.p.sql_value("SELECT count(*) FROM t WHERE v = 'frozen-demote'") == 0
    wait_until(lambda: (m := member(e, "a", "orders-a")) and m["role"] == "fenced", 20,
               what="a reporting fenced")


@test
def promote_stays():
    """The post-promote race: b has no recorded contact when its promote
    starts and holds no peer lease yet (it asks for leases only once it is a
    writable primary). pg_promote(wait) polls every 100 ms: a status poll
    that saw b writable before the promote's result fenced it ("no recorded
    contact and a peer lease is missing", since_contact_ms=-1). The promote
    now counts as a contact from its start: b is never fenced by its agent."""
    e = env()
    e.ctl.recorded = False
    e.ctl.services["orders"]["epoch"] = 5
    e.ctl.services["orders"]["primary_member"] = "orders-b"
    e.ctl.primary_node = "b"
    time.sleep(ISOLATION_MS / 1000.0 + 0.5)  # b's last recorded contact has expired
    e.ctl.command("b", "promote-1", "orders", "orders-b", "promote", 5,
                  {"old_primary_fenced": True})
    res = e.ctl.result("promote-1", timeout=60)
    assert res["status"] == "done", res
    e.ctl.recorded = True
    wait_until(lambda: (m := member(e, "b", "orders-b")) and m["role"] == "primary", 20,
               what="b reporting its member primary")
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        m = member(e, "b", "orders-b")
        assert m["role"] == "primary" and not m["fenced"], m
        time.sleep(0.1)
    e.r.sql("INSERT INTO t(v) VALUES ('on the new primary')")
    assert "isolated: fencing" not in e.b.proc.log_text()


if __name__ == "__main__":
    run_all()
