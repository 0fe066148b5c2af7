"""A whole Meridian deployment on loopback, for end-to-end tests, the
failover benchmark and the demo: three regions (eu, us, ap), each with a
PostgreSQL member (eu primary, us and ap streaming replicas), an agent and a
controller, one store, one service "orders".

    d = Deployment(profile="default")     # builds configs, starts everything
                                          # (rejoin=True: agents rejoin an old
                                          # primary with deploy/hooks/pg-rejoin)
    d.wait_ready()                        # leader elected, every member reported
    d.writer_start()                          # a client writing every 20 ms
    d.switchover("us")                    # through the API, waits for the cutover
    d.writer_stop(); d.check_no_acked_write_lost()

With netns=True every region and the store run in network namespaces of
their own, joined by a bridge in another namespace (tests/integration/
netns.py; d.net cuts links, adds loss); the test process talks to them from
the bridge's namespace. route(from_region, to_region, kind, host, port) ->
(host, port) lets a test send an agent's traffic to controllers ("controller")
or peer agents ("agent") through something of its own (a delaying proxy).

A Sampler (d.sampler_start()) tries one write on EACH member every 100 ms,
from inside the member's own region, into a table of its own (sampler), and
its checks say whether two members ever accepted writes at once.

Everything is registered with meridian_harness, so it is stopped at the end
of the test that created it.
"""

import os
import threading
import time

import psycopg2
import psycopg2.errors

import meridian_harness as h

REGIONS = [("eu", 1), ("us", 2), ("ap", 3)]
SERVICE = "orders"
PEER_TOKEN = "meridian-test-peer-token-0123456789"


class Deployment:
    def __init__(self, profile="default", policy=None, tmp=None, store=None,
                 heartbeat_ms=None, lease_ttl_ms=None, log_level="info", agent_extra=None,
                 dns=None, registry=None, webhooks=None, service_extra=None,
                 rejoin=False, netns=False, route=None, check_interval_ms=None,
                 nodes=False, member_regions=None):
        # nodes: the controllers configure "nodes" (each agent's URL);
        # member_regions: the regions whose members the controllers configure
        # (default all; self.all_members has every one); agent_extra: keys for
        # every agent, or {"by_region": {"eu": {...}}} for some
        self.tmp = tmp or h.TempDir("deploy")
        self.net = None
        if netns:
            import netns as netns_mod   # only the namespace tests need root's ip
            self.net = netns_mod.Network([r for r, _ in REGIONS] + ["store"])
        self.host = {r: self.net.addr(r) if self.net else "127.0.0.1"
                     for r, _ in REGIONS + [("store", 0)]}
        route = route or (lambda frm, to, kind, host, port: (host, port))
        self.profile = profile
        fast = profile == "fast"
        self.heartbeat_ms = heartbeat_ms or (250 if fast else 1000)
        self.lease_ttl_ms = lease_ttl_ms or (2000 if fast else 5000)
        self.isolation_ms = 1500 if fast else 4000
        # interval and timeout of the agents' postgresql check and tcp
        # probes (default: half a heartbeat, at least 100 ms)
        every = check_interval_ms or max(100, self.heartbeat_ms // 2)
        self.policy = dict(policy or {})
        self.policy.setdefault("heartbeat_ms", self.heartbeat_ms)
        self.policy.setdefault("rejoin_timeout_ms", 5000)
        self.writes = []          # (id, monotonic time acked, port, insert lsn)
        self.write_errors = 0
        self.write_error_log = []  # (monotonic time, first line of the error), last 1000
        self._writer = None
        self._stop = threading.Event()

        # PostgreSQL: eu primary, us and ap replicas
        self.pg = {}
        self.pg["eu"] = h.PgCluster.create("pg-eu", self.tmp, host=self.host["eu"],
                                           netns=self._ns("eu"))
        self.pg["eu"].sql("CREATE TABLE IF NOT EXISTS writes (id bigint PRIMARY KEY, "
                          "at timestamptz DEFAULT now())")
        # the Sampler's own table: its rows never mix with the writer's
        self.pg["eu"].sql("CREATE TABLE IF NOT EXISTS sampler (member text, "
                          "at timestamptz, seq bigint)")
        for r in ("us", "ap"):
            self.pg[r] = self.pg["eu"].make_replica("pg-" + r, host=self.host[r],
                                                    netns=self._ns(r))

        # store: a fresh database on the harness's server, or a given
        # conninfo; with namespaces, a PostgreSQL of its own in the store's
        self.store_pg = None
        if store is None and self.net:
            self.store_pg = h.PgCluster.create("pg-store", self.tmp, host=self.host["store"],
                                               netns=self._ns("store"))
            store = self.store_pg.create_database("meridian") + " connect_timeout=2"
        self.store = store or self._fresh_store()

        # controllers
        self.ctl = {}
        ports = {r: h.free_port() for r, _ in REGIONS}
        aports = {r: h.free_port() for r, _ in REGIONS}
        self.all_members = [{"name": "orders-" + r, "node": "node-" + r, "region": r,
                             "conninfo": "host=%s port=%d user=postgres application_name=pg-%s"
                             % (self.host[r], self.pg[r].port, r)} for r, _ in REGIONS]
        members = [m for m in self.all_members
                   if member_regions is None or m["region"] in member_regions]
        self.service_cfg = {"name": SERVICE, "primary_region": "eu", "profile": profile,
                            "policy": self.policy, "members": members}
        # cutover targets (include/meridian/cutover.h) and service-level keys
        # such as reconcile_interval_ms / repair_drift
        for key, value in (("dns", dns), ("registry", registry), ("webhooks", webhooks)):
            if value is not None:
                self.service_cfg[key] = value
        self.service_cfg.update(service_extra or {})
        for r, _ in REGIONS:
            extra = {"regions": [{"name": n, "priority": p} for n, p in REGIONS],
                     "services": [self.service_cfg], "tick_ms": 100 if fast else 250,
                     "agent_token": PEER_TOKEN}
            if nodes:
                extra["nodes"] = [{"name": "node-" + n, "region": n,
                                   "agent_url": "http://%s:%d" % (self.host[n], aports[n])}
                                  for n, _ in REGIONS]
            self.ctl[r] = h.Controller("ctl-" + r, r, self.store, self.tmp,
                                       lease_ttl_ms=self.lease_ttl_ms, port=ports[r],
                                       log_level=log_level, extra=extra, host=self.host[r],
                                       netns=self._ns(r))
        # agents: each talks to its own region's controller first
        self.agents = {}
        for r, _ in REGIONS:
            ctls = ["http://%s:%d" % route(r, o, "controller", self.host[o], ports[o])
                    for o in [r] + [o for o, _ in REGIONS if o != r]]
            peers = [{"name": "node-" + o,
                      "url": "http://%s:%d" % route(r, o, "agent", self.host[o], aports[o]),
                      "token": PEER_TOKEN} for o, _ in REGIONS if o != r]
            conn = self.pg[r].conninfo()
            extra = {"heartbeat_ms": self.heartbeat_ms,
                     "isolation_timeout_ms": self.isolation_ms,
                     "request_timeout_ms": min(1000, self.heartbeat_ms * 2),
                     "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}],
                     "peers": peers,
                     "members": [self._member_cfg(r, conn, rejoin)],
                     "checks": [{"name": "pg", "kind": "postgresql", "conninfo": conn,
                                 "interval_ms": every, "timeout_ms": every,
                                 "member": "orders-" + r}],
                     # application-level probes: a tcp connect succeeds
                     # against a frozen PostgreSQL, a query does not. Each
                     # run is a new connection (a backend fork): not too often
                     "probes": [{"region": o, "kind": "postgresql",
                                 "target": "host=%s port=%d user=postgres "
                                 "dbname=postgres application_name=probe-%s"
                                 % (self.host[o], self.pg[o].port, r),
                                 "interval_ms": max(500, self.heartbeat_ms),
                                 "timeout_ms": max(500, self.heartbeat_ms)}
                                for o, _ in REGIONS if o != r]}
            if agent_extra and "by_region" in agent_extra:
                extra.update(agent_extra["by_region"].get(r, {}))
            else:
                extra.update(agent_extra or {})
            self.agents[r] = h.Agent("node-" + r, r, ctls, self.tmp, log_level=log_level,
                                     extra=extra, port=aports[r], host=self.host[r],
                                     netns=self._ns(r))
        for r, _ in REGIONS:
            self.ctl[r].start()
        for r, _ in REGIONS:
            self.agents[r].start()

    # -- set-up helpers

    def _ns(self, region):
        """(Network, region) for the harness, or None on loopback."""
        return (self.net, region) if self.net else None

    def _member_cfg(self, region, conn, rejoin):
        """The agent's member entry; with rejoin, its data_dir and the
        rejoin hook deploy/hooks/pg-rejoin (run by the agent as root: the
        hook runs PostgreSQL's tools as user postgres itself)."""
        m = {"service": SERVICE, "name": "orders-" + region, "kind": "postgresql",
             "conninfo": conn, "promote_timeout_ms": 30000,
             # demote (the default); a hung server is killed well within the
             # controller's fence timeout of the profile
             "fence": {"mode": "demote",
                       "timeout_ms": 1500 if self.profile == "fast" else 5000}}
        if rejoin:
            m["data_dir"] = self.pg[region].data
            m["rejoin_command"] = [os.path.join(h.source_dir(), "deploy", "hooks", "pg-rejoin")]
        return m

    def _fresh_store(self):
        base = h.require_env("MERIDIAN_TEST_PG")
        name = "e2e_%d_%d" % (os.getpid(), int(time.monotonic() * 1000) % 1000000)
        conn = psycopg2.connect(base)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE " + name)
        conn.close()
        parts = [p for p in base.split() if not p.startswith("dbname=")]
        return " ".join(parts + ["dbname=" + name])

    def controllers(self):
        return [self.ctl[r] for r, _ in REGIONS]

    def leader(self, timeout_s=30):
        return h.wait_for_leader(self.controllers(), timeout_s)[0]

    def leader_or_none(self):
        r = h.agreed_leader([c for c in self.controllers() if c.alive()])
        return r[0] if r else None

    def _ask(self, path, ctl=None):
        """GET path from ctl, or from the first live controller that
        answers (one cut off by a test's partition does not)."""
        last = None
        for c in [ctl] if ctl else [c for c in self.controllers() if c.alive()]:
            try:
                code, body = c.get(path, timeout=2.0)
            except OSError as e:
                last = "%s: %s" % (c.name, e)
                continue
            if code == 200:
                return body
            last = "%s: %s %s" % (c.name, code, body)
        raise h.HarnessError("GET %s: %s" % (path, last or "no controller alive"))

    def service(self, ctl=None):
        return self._ask("/v1/services/" + SERVICE, ctl)

    def any_controller(self):
        for c in self.controllers():
            if c.alive():
                return c
        raise h.HarnessError("no controller alive")

    def members(self):
        return {m["region"]: m for m in self.service()["members"]}

    def wait_ready(self, timeout_s=60):
        """A leader, and every member reported with its role (eu primary);
        the leader sees the primary healthy and both replicas acceptable."""
        self.leader(timeout_s)

        def ready():
            try:
                ms = self.members()
            except (OSError, h.HarnessError):
                return False
            return (len(ms) == 3 and ms["eu"]["role"] == "primary"
                    and ms["us"]["role"] == "replica" and ms["ap"]["role"] == "replica"
                    and all(m["healthy"] and m["age_ms"] < 3 * self.heartbeat_ms
                            for m in ms.values()))
        h.wait_until(ready, timeout_s, interval_s=0.1, what="every member reported")

        def leader_sees_healthy():
            try:
                svc = self.service(self.leader(5))
            except (OSError, h.HarnessError):
                return False
            dec = svc.get("decision") or {}
            return dec.get("reason") == "ok"
        h.wait_until(leader_sees_healthy, timeout_s, interval_s=0.1,
                     what="the leader's decision sees a healthy primary")

        def leader_sees_replicas():
            # the leader plans from its last tick's snapshot, which can be a
            # tick older than what the store showed above
            code, plan = self.leader(5).get("/v1/services/%s/plan" % SERVICE)
            cands = (plan.get("candidates") or []) if code == 200 else []
            return len(cands) == 2 and all(c["acceptable"] for c in cands)
        h.wait_until(leader_sees_replicas, timeout_s, interval_s=0.1,
                     what="the leader's plan accepts both replicas")

    # -- the client's side

    def dsn(self):
        ports = ",".join(str(self.pg[r].port) for r, _ in REGIONS)
        hosts = ",".join(self.host[r] for r, _ in REGIONS)
        # a member cut off by a partition sends no RST: without these the
        # writer would wait on its dead connection for the kernel's default
        # retransmission time (minutes)
        return ("host=%s port=%s user=postgres dbname=postgres "
                "target_session_attrs=read-write connect_timeout=1 tcp_user_timeout=2000 "
                "keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2"
                % (hosts, ports))

    def writer_start(self, interval_s=0.02):
        """A client that inserts an increasing id every interval through the
        multi-host DSN (read-write), and records every acknowledged id."""
        self._stop.clear()

        def loop():
            conn = None
            i = int(time.time() * 1000) * 1000
            deadline = time.monotonic() + 600
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    if conn is None:
                        conn = psycopg2.connect(self.dsn())
                        conn.autocommit = True
                    i += 1
                    with conn.cursor() as cur:
                        # the WAL position before its commit record: a lost
                        # write must lie below the operation's old_last_pos
                        cur.execute("INSERT INTO writes (id) VALUES (%s) "
                                    "RETURNING pg_current_wal_insert_lsn()::text", (i,))
                        lsn = h.lsn_to_int(cur.fetchone()[0])
                    self.writes.append((i, time.monotonic(), conn.info.port, lsn))
                except Exception as e:
                    self.write_errors += 1
                    self.write_error_log.append((time.monotonic(), str(e).split("\n")[0]))
                    del self.write_error_log[:-1000]
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:
                            pass
                    conn = None
                    time.sleep(0.01)
                self._stop.wait(interval_s)
            if conn is not None:
                conn.close()

        self._writer = threading.Thread(target=loop, name="writer", daemon=True)
        self._writer.start()

    def writer_stop(self):
        self._stop.set()
        if self._writer:
            self._writer.join(10)

    def write_gap(self, after=0.0):
        """Longest pause between two acknowledged writes after `after`
        (monotonic), and the port before and after it."""
        best = (0.0, None, None, None)
        w = [x for x in self.writes if x[1] >= after]
        for a, b in zip(w, w[1:]):
            if b[1] - a[1] > best[0]:
                best = (b[1] - a[1], a[2], b[2], a[1])
        return best

    def lost_writes(self, region, writes=None):
        """Acknowledged ids missing on the member of region. While the writer
        still runs, pass a copy of self.writes taken before the LSN the
        member was waited for: a write acknowledged after that point may
        legitimately not have reached a replica yet."""
        if writes is None:
            writes = list(self.writes)
        ids = {r[0] for r in self.pg[region].sql("SELECT id FROM writes")}
        return [w[0] for w in writes if w[0] not in ids]

    # -- operations

    def start_op(self, kind, to=None, force=False, ctl=None, retry_s=0, headers=None):
        """POSTs a switchover/failover; returns the operation id. With
        retry_s, a 422 (e.g. a replica whose check just timed out on a
        loaded machine) is retried for that long before it fails."""
        ctl = ctl or self.leader()
        body = {}
        if to:
            body["to"] = to
        if force:
            body["force"] = True
        deadline = time.monotonic() + retry_s
        while True:
            code, res = h.http_json("POST", ctl.url + "/v1/services/%s/%s" % (SERVICE, kind),
                                    body, h.OPERATOR_TOKEN, headers=headers)
            if code != 422 or time.monotonic() >= deadline:
                break
            h.log("%s refused (%s), retrying" % (kind, res))
            time.sleep(0.3)
        if code != 202:
            raise h.HarnessError("%s: %s %s" % (kind, code, res))
        return res["operation"]

    def operation(self, op_id):
        return self._ask("/v1/operations/%s" % op_id)

    def wait_op(self, op_id, timeout_s=60, until=("done", "aborted", "failed")):
        def check():
            try:
                op = self.operation(op_id)
            except (OSError, h.HarnessError):
                return None
            return op if op["step"] in until else None
        return h.wait_until(check, timeout_s, interval_s=0.05,
                            what="operation %s in %s" % (op_id, "/".join(until)))

    def latest_operation(self):
        ops = self.operations()
        return ops[0] if ops else None

    def operations(self):
        """The service's operations, newest first."""
        return self._ask("/v1/operations?service=" + SERVICE).get("operations") or []

    def writable(self):
        """Regions whose PostgreSQL accepts a write right now."""
        out = []
        for r, _ in REGIONS:
            try:
                c = psycopg2.connect(self.pg[r].conninfo(), connect_timeout=1)
                c.autocommit = True
                with c.cursor() as cur:
                    cur.execute("SELECT NOT pg_is_in_recovery() AND "
                                "current_setting('default_transaction_read_only') = 'off'")
                    if cur.fetchone()[0]:
                        out.append(r)
                c.close()
            except Exception:
                pass
        return out

    # -- the sampler and the invariants it checks

    def sampler_start(self, interval_s=0.1):
        """Starts a Sampler on every member (see Sampler); returns it."""
        s = Sampler(self, interval_s)
        s.start()
        return s

    def log_timeline(self, sampler, t0):
        """Logs who accepted writes when (seconds after wall-clock t0), the
        sampler's counts and the latest operations with their steps."""
        for region, a, b in sampler.writable_timeline():
            h.log("  accepted on %s from %+.2f s to %+.2f s" % (region, a - t0, b - t0))
        h.log("  samples: %s" % sampler.summary())
        for op in self.operations()[:5]:
            op = self.operation(op["id"])
            h.log("  operation %s %s %s->%s step %s why %r lost_bytes %s entered %s"
                  % (op.get("id"), op.get("kind"), op.get("from_region"), op.get("to_region"),
                     op.get("step"), op.get("why"), op.get("lost_bytes"),
                     {k: "%+.2f" % (v / 1000.0 - t0)
                      for k, v in (op.get("step_entered_ms") or {}).items()}))

    def check_switchover(self, new_region, writes=None):
        """After a switchover: no acknowledged writer write missing on the
        new primary. Returns the number of writes checked."""
        writes = list(self.writes) if writes is None else writes
        lost = self.lost_writes(new_region, writes)
        assert not lost, ("%d acknowledged writes missing on %s after a switchover: %s"
                          % (len(lost), new_region, lost[:10]))
        return len(writes)

    def check_failover(self, op, new_region, writes=None):
        """After a failover: the writer's acknowledged writes missing on the
        new primary are within what the operation op (GET
        /v1/operations/{id}) reports as lost: none if it reports 0 bytes,
        every one below its old_last_pos (a write past the old primary's
        last reported position is a loss nobody reported), and lost_bytes
        within the policy's max_lag_bytes. Returns (lost ids, op)."""
        writes = list(self.writes) if writes is None else writes
        lost_ids = set(self.lost_writes(new_region, writes))
        lost = [w for w in writes if w[0] in lost_ids]
        bound = int(self.policy.get("max_lag_bytes", 16 * 1024 * 1024))
        h.log("failover %s: lost_bytes %s old_last_pos %x; %d of %d acknowledged writes "
              "missing on %s" % (op.get("id"), op.get("lost_bytes"), op.get("old_last_pos") or 0,
                                 len(lost), len(writes), new_region))
        assert op.get("lost_bytes", 0) <= bound, (
            "the failover lost %s bytes, over the policy's bound %d: %s"
            % (op.get("lost_bytes"), bound, op))
        if lost:
            assert op.get("lost_bytes", 0) > 0, (
                "%d acknowledged writes missing on %s but the operation reports 0 bytes "
                "lost: %s; first missing %s" % (len(lost), new_region, op, lost[:3]))
            beyond = [w for w in lost if w[3] is not None and w[3] >= op["old_last_pos"]]
            assert not beyond, (
                "%d acknowledged writes missing on %s lie past the old primary's last "
                "reported position %x (the operation does not count them): %s"
                % (len(beyond), new_region, op["old_last_pos"],
                   [(w[0], "%x" % w[3]) for w in beyond[:5]]))
        return sorted(lost_ids), op


class Sampler:
    """One thread per member: every interval (100 ms) it tries one INSERT
    into the member's own `sampler` table through the member's own conninfo
    (connect_timeout 1 s, statement_timeout 1 s), from inside the member's
    region (its namespace, when there are namespaces: a client next to the
    member still reaches it while its region is cut off from the rest).

    Each attempt is a sample (region, t_send, t_server, t_ack, outcome)
    with wall-clock times (time.time(); PostgreSQL's clock_timestamp() is
    the same clock on this machine) and outcome "ok" (committed and
    acknowledged), "ro" (refused: read-only transaction or recovery, i.e.
    a replica, a fenced or a demoted member) or "err" (anything else:
    unreachable, timeout, server down). A commit happens inside
    [t_server, t_ack] of its sample: two "ok" samples of different members
    whose windows overlap are a moment at which two members may both have
    accepted a write; samples whose windows do not overlap are ordered.
    """

    def __init__(self, d, interval_s=0.1):
        self.d = d
        self.interval_s = interval_s
        self.samples = []     # (region, t_send, t_server, t_ack, outcome, error, seq)
        self._stop = threading.Event()
        self._threads = []

    def start(self):
        for r, _ in REGIONS:
            t = threading.Thread(target=self._run, args=(r,), name="sampler-" + r, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(15)
        self._threads = []

    def _run(self, region):
        if self.d.net:
            with self.d.net.inside(region):
                self._loop(region)
        else:
            self._loop(region)

    def _loop(self, region):
        conn, seq = None, 0
        deadline = time.monotonic() + 900
        nxt = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            seq += 1
            t_send, t_server, outcome, err = time.time(), None, "err", None
            try:
                if conn is None:
                    conn = psycopg2.connect(self.d.pg[region].conninfo(), connect_timeout=1,
                                            options="-c statement_timeout=1000",
                                            application_name="meridian-sampler")
                    conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO sampler (member, at, seq) VALUES "
                                "(%s, clock_timestamp(), %s) "
                                "RETURNING extract(epoch FROM clock_timestamp())::float8",
                                (region, seq))
                    t_server = cur.fetchone()[0]
                outcome = "ok"
            except (psycopg2.errors.ReadOnlySqlTransaction,
                    psycopg2.errors.ObjectNotInPrerequisiteState) as e:
                outcome, err = "ro", str(e).strip().splitlines()[0]
            except Exception as e:
                err = "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0:1])
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
            self.samples.append((region, t_send, t_server, time.time(), outcome, err, seq))
            nxt += self.interval_s
            delay = nxt - time.monotonic()
            if delay < 0:            # a slow attempt: start again from now
                nxt, delay = time.monotonic(), 0
            self._stop.wait(delay)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    # -- results

    def of(self, region, outcome=None, since=None, until=None):
        """Samples of region (with that outcome, sent in [since, until))."""
        return [s for s in list(self.samples) if s[0] == region
                and (outcome is None or s[4] == outcome)
                and (since is None or s[1] >= since) and (until is None or s[1] < until)]

    def accepted_windows(self):
        """[(t_server, t_ack, region)] of every accepted write, by start."""
        return sorted((s[2], s[3], s[0]) for s in list(self.samples) if s[4] == "ok")

    def two_writable(self):
        """Pairs of accepted samples on different members whose commit
        windows overlap: ((region, t0, t1), (region, t0, t1))."""
        out = []
        open_ = []            # windows that may still overlap later ones
        for start, end, region in self.accepted_windows():
            open_ = [w for w in open_ if w[1] >= start]
            for w in open_:
                if w[2] != region:
                    out.append(((w[2], w[0], w[1]), (region, start, end)))
            open_.append((start, end, region))
        return out

    def writable_timeline(self):
        """[(region, first t_server, last t_ack)] runs of consecutive
        accepted samples of one member, in time order: who accepted writes
        when (for a test's log)."""
        runs = []
        for start, end, region in self.accepted_windows():
            if runs and runs[-1][0] == region:
                runs[-1][2] = end
            else:
                runs.append([region, start, end])
        return [tuple(r) for r in runs]

    def lost_rows(self, region, on_region, since=None):
        """Accepted samples of `region` (sent at or after `since`) whose row
        is not in on_region's sampler table: writes a member acknowledged
        that another member never got (an isolated primary's last writes)."""
        seqs = {r[0] for r in self.d.pg[on_region].sql(
            "SELECT seq FROM sampler WHERE member = %s", (region,))}
        # seq is per thread: rows of one member are told apart by seq alone
        return [x for x in self.of(region, "ok", since=since) if x[6] not in seqs]

    def runs(self, region, since=None, until=None):
        """[(outcome, first t_send, last t_ack, count)]: region's samples
        in [since, until) folded into runs of one outcome (how often a
        member went from accepting to refusing and back)."""
        out = []
        for x in self.of(region, since=since, until=until):
            if out and out[-1][0] == x[4]:
                out[-1][2], out[-1][3] = x[3], out[-1][3] + 1
            else:
                out.append([x[4], x[1], x[3], 1])
        return [tuple(r) for r in out]

    def summary(self):
        counts = {}
        for s in list(self.samples):
            counts.setdefault(s[0], {}).setdefault(s[4], 0)
            counts[s[0]][s[4]] += 1
        return counts

    def assert_ok(self):
        """No moment at which two members accepted writes."""
        bad = self.two_writable()
        assert not bad, ("two members accepted writes at overlapping moments (%d pairs), "
                         "first: %s; timeline: %s"
                         % (len(bad), bad[0], self.writable_timeline()[:20]))


# The agents' postgresql check and tcp probes every 500 ms in the namespace
# tests (fast: 125 ms). At 125 ms, two probes and a check reconnecting after
# each timeout make every postmaster fork more than 16 backends a second; on
# a loaded 2-core machine the postmaster falls behind its accept queue and
# the checks never connect. Those tests are about the network.
NETNS_CHECK_INTERVAL_MS = 500


def start_netns(profile="fast", **kw):
    """A Deployment in namespaces (profile fast unless said), ready, with a
    Sampler and the writer running on eu. Returns (deployment, sampler)."""
    d = Deployment(profile=profile, netns=True, check_interval_ms=NETNS_CHECK_INTERVAL_MS, **kw)
    try:
        d.wait_ready()
    except h.WaitTimeout:
        h.log("members: %s" % {r: (m["role"], m["healthy"], m["age_ms"])
                               for r, m in d.members().items()})
        raise
    s = d.sampler_start()
    d.writer_start()
    h.wait_until(lambda: len(d.writes) >= 20 and s.of("eu", "ok"), 30,
                 what="the writer and the sampler writing on eu")
    return d, s
