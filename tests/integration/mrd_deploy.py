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

Everything is registered with meridian_harness, so it is stopped at the end
of the test that created it.
"""

import os
import threading
import time

import psycopg2

import meridian_harness as h

REGIONS = [("eu", 1), ("us", 2), ("ap", 3)]
SERVICE = "orders"
PEER_TOKEN = "meridian-test-peer-token-0123456789"


class Deployment:
    def __init__(self, profile="default", policy=None, tmp=None, store=None,
                 heartbeat_ms=None, lease_ttl_ms=None, log_level="info", agent_extra=None,
                 dns=None, registry=None, webhooks=None, service_extra=None,
                 rejoin=False):
        self.tmp = tmp or h.TempDir("deploy")
        self.profile = profile
        fast = profile == "fast"
        self.heartbeat_ms = heartbeat_ms or (250 if fast else 1000)
        self.lease_ttl_ms = lease_ttl_ms or (2000 if fast else 5000)
        self.isolation_ms = 1500 if fast else 4000
        self.policy = dict(policy or {})
        self.policy.setdefault("heartbeat_ms", self.heartbeat_ms)
        self.policy.setdefault("rejoin_timeout_ms", 5000)
        self.writes = []          # (id, monotonic time acked, port)
        self.write_errors = 0
        self._writer = None
        self._stop = threading.Event()

        # PostgreSQL: eu primary, us and ap replicas
        self.pg = {}
        self.pg["eu"] = h.PgCluster.create("pg-eu", self.tmp)
        self.pg["eu"].sql("CREATE TABLE IF NOT EXISTS writes (id bigint PRIMARY KEY, "
                          "at timestamptz DEFAULT now())")
        for r in ("us", "ap"):
            self.pg[r] = self.pg["eu"].make_replica("pg-" + r)

        # store: a fresh database on the harness's server, or a given conninfo
        self.store = store or self._fresh_store()

        # controllers
        self.ctl = {}
        ports = {r: h.free_port() for r, _ in REGIONS}
        members = [{"name": "orders-" + r, "node": "node-" + r, "region": r,
                    "conninfo": "host=127.0.0.1 port=%d user=postgres application_name=pg-%s"
                    % (self.pg[r].port, r)} for r, _ in REGIONS]
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
            self.ctl[r] = h.Controller("ctl-" + r, r, self.store, self.tmp,
                                       lease_ttl_ms=self.lease_ttl_ms, port=ports[r],
                                       log_level=log_level, extra=extra)
        # agents: each talks to its own region's controller first
        self.agents = {}
        aports = {r: h.free_port() for r, _ in REGIONS}
        for r, _ in REGIONS:
            ctls = [self.ctl[r].url] + [self.ctl[o].url for o, _ in REGIONS if o != r]
            peers = [{"name": "node-" + o, "url": "http://127.0.0.1:%d" % aports[o],
                      "token": PEER_TOKEN} for o, _ in REGIONS if o != r]
            conn = self.pg[r].conninfo()
            extra = {"heartbeat_ms": self.heartbeat_ms,
                     "isolation_timeout_ms": self.isolation_ms,
                     "request_timeout_ms": min(1000, self.heartbeat_ms * 2),
                     "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}],
                     "peers": peers,
                     "members": [self._member_cfg(r, conn, rejoin)],
                     "checks": [{"name": "pg", "kind": "postgresql", "conninfo": conn,
                                 "interval_ms": max(100, self.heartbeat_ms // 2),
                                 "timeout_ms": max(100, self.heartbeat_ms // 2),
                                 "member": "orders-" + r}],
                     "probes": [{"region": o, "kind": "tcp",
                                 "target": "127.0.0.1:%d" % self.pg[o].port,
                                 "interval_ms": max(100, self.heartbeat_ms // 2),
                                 "timeout_ms": max(100, self.heartbeat_ms // 2)}
                                for o, _ in REGIONS if o != r]}
            extra.update(agent_extra or {})
            self.agents[r] = h.Agent("node-" + r, r, ctls, self.tmp, log_level=log_level,
                                     extra=extra, port=aports[r])
        for r, _ in REGIONS:
            self.ctl[r].start()
        for r, _ in REGIONS:
            self.agents[r].start()

    # -- set-up helpers

    def _member_cfg(self, region, conn, rejoin):
        """The agent's member entry; with rejoin, its data_dir and the
        rejoin hook deploy/hooks/pg-rejoin (run by the agent as root: the
        hook runs PostgreSQL's tools as user postgres itself)."""
        m = {"service": SERVICE, "name": "orders-" + region, "kind": "postgresql",
             "conninfo": conn, "promote_timeout_ms": 30000}
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

    def service(self, ctl=None):
        ctl = ctl or self.any_controller()
        code, body = ctl.get("/v1/services/" + SERVICE)
        if code != 200:
            raise h.HarnessError("GET service: %s %s" % (code, body))
        return body

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
        hosts = ",".join("127.0.0.1" for _ in REGIONS)
        return ("host=%s port=%s user=postgres dbname=postgres "
                "target_session_attrs=read-write connect_timeout=1" % (hosts, ports))

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
                        cur.execute("INSERT INTO writes (id) VALUES (%s)", (i,))
                    self.writes.append((i, time.monotonic(), conn.info.port))
                except Exception:
                    self.write_errors += 1
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
        code, body = self.any_controller().get("/v1/operations/%s" % op_id)
        if code != 200:
            raise h.HarnessError("GET operation: %s %s" % (code, body))
        return body

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
        code, body = self.any_controller().get("/v1/operations?service=" + SERVICE)
        ops = body.get("operations") if code == 200 else None
        return ops[0] if ops else None

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
