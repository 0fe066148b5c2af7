"""meridianctl against real controllers, and against a scripted fake API.

Real controllers: a fresh database on MERIDIAN_TEST_PG as the store, two
controllers (regions eu and us) with one service "orders" (members in eu and
us, no agents), one of them the leader.
  status --json       parses, names the leader, lists the service
  services/nodes/regions/events/operations --json parse; the human forms
                      print aligned tables
  plan via follower   a follower answers the leader-only plan with 307; the
                      CLI follows it
  maintenance         on through the follower (PUT with body redirected),
                      the event shows in `events`, also in a running
                      `events --follow`, then off
  refused             switchover with no live member (exit 3 and the API's
                      code), unknown region, viewer token (forbidden), wrong
                      token (unauthorized), unknown operation (not_found)
  reachability        unreachable URL first then a good one works; nothing
                      listening is exit 4; env and config file precedence;
                      usage errors are exit 2

Fake API (a small HTTP server in this file, scripted per test): the parts
that need agents and PostgreSQL replicas to happen for real:
  --wait              prints steps, "cutover complete; rejoin pending" exit 0,
                      aborted exit 1, timeout exit 5, done exit 0
  5xx then next URL, and the Idempotency-Key kept across controllers.

End to end: a real switchover (PostgreSQL primary and streaming replica,
two agents, deploy/hooks/pg-rejoin) followed with --wait, then its timeline.
"""

import http.server
import json
import os
import re
import socketserver
import subprocess
import threading
import time

import psycopg2

from meridian_harness import (Controller, Agent, PgCluster, TempDir, source_dir, fixture, test, run_all, wait_until,
                              wait_for_leader, log, require_env, program_path, dead_port,
                              free_port, http_json, OPERATOR_TOKEN, VIEWER_TOKEN)

SERVICE = "orders"
SANITIZER = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:")


def cli(*args, env=None, timeout=60, token=OPERATOR_TOKEN, urls=None):
    """Runs meridianctl; returns (exit code, stdout, stderr)."""
    argv = [program_path("meridianctl")]
    if urls is not None:
        for u in urls:
            argv += ["--url", u]
    if token is not None:
        argv += ["--token", token]
    argv += list(args)
    e = {k: v for k, v in os.environ.items() if not k.startswith("MERIDIAN_URL")
         and k != "MERIDIAN_TOKEN"}
    e.update(env or {})
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=e)
    log("meridianctl %s -> %d" % (" ".join(args), p.returncode))
    assert not SANITIZER.search(p.stderr), "sanitizer report:\n" + p.stderr
    return p.returncode, p.stdout, p.stderr


def cli_json(*args, **kw):
    code, out, err = cli("--json", *args, **kw)
    assert code == 0, "meridianctl --json %s: exit %d\n%s%s" % (" ".join(args), code, out, err)
    return json.loads(out)


# --------------------------------------------------------------------------
# real controllers


def fresh_store(db="meridian_cli"):
    base = require_env("MERIDIAN_TEST_PG")
    conn = psycopg2.connect(base)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
        cur.execute("CREATE DATABASE %s" % db)
    conn.close()
    return base + " dbname=" + db


@fixture
def cluster():
    """Two controllers on a fresh store; returns (leader, follower)."""
    require_env("MERIDIAN_BUILD_DIR")
    store = fresh_store()
    tmp = TempDir("cli")
    extra = {
        "regions": [{"name": "eu", "priority": 1}, {"name": "us", "priority": 2},
                    {"name": "ap", "priority": 3}],
        "services": [{
            "name": SERVICE, "primary_region": "eu", "profile": "default",
            "policy": {"auto_failover": False},
            "members": [
                {"name": "orders-eu-1", "node": "db-eu-1", "region": "eu",
                 "conninfo": "host=127.0.0.1 port=1"},
                {"name": "orders-us-1", "node": "db-us-1", "region": "us",
                 "conninfo": "host=127.0.0.1 port=1"},
            ]}],
    }
    ctls = [Controller("ctl-" + r, r, store, tmp=tmp, lease_ttl_ms=2000, extra=extra)
            for r in ("eu", "us")]
    for c in ctls:
        c.start(wait_healthy=False)
    for c in ctls:
        wait_until(c._healthy_or_dead, 30, what="%s /v1/health" % c.name)
    leader, _ = wait_for_leader(ctls, 30)
    follower = [c for c in ctls if c is not leader][0]
    # the service is synced into the store by the leader
    wait_until(lambda: any(s["name"] == SERVICE for s in
                           (leader.get("/v1/services")[1] or {}).get("services", [])),
               30, what="service synced")
    # member rows as agents would report them, an hour old (so both look
    # silent to the decision: nothing is acceptable as a target)
    conn = psycopg2.connect(store)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO meridian.members (service, name, node, region, role, healthy,"
            " position, replay_position, lag_bytes, lag_ms, last_seen) VALUES"
            " (%s, 'orders-eu-1', 'db-eu-1', 'eu', 'primary', true, 50331648, 0, 0, 0,"
            "  now() - interval '1 hour'),"
            " (%s, 'orders-us-1', 'db-us-1', 'us', 'replica', true, 0, 37433936, 12897484,"
            "  1500, now() - interval '1 hour')"
            " ON CONFLICT DO NOTHING", (SERVICE, SERVICE))
    conn.close()
    # writes need the leader's view, one from after the rows went in (the
    # first tick after the sync may have read the store before them)
    def view_has_rows():
        code, plan = leader.get("/v1/services/%s/plan" % SERVICE)
        return code == 200 and any(c.get("node") == "db-us-1" and
                                   c.get("replay_position") == 37433936
                                   for c in plan.get("candidates", []))
    wait_until(view_has_rows, 30, what="leader's view with the inserted member rows")
    # and the follower must know the leader to redirect
    wait_until(lambda: (follower.status().get("leader") or {}).get("name") == leader.name, 30,
               what="follower knows the leader")
    log("leader %s, follower %s" % (leader.name, follower.name))
    return leader, follower


@test
def test_status_json_names_leader():
    leader, follower = cluster()
    for c in (leader, follower):
        doc = cli_json("status", urls=[c.url], token=VIEWER_TOKEN)
        assert doc["leader"]["name"] == leader.name, doc
        assert doc["controller"]["name"] == c.name, doc
        names = [s["name"] for s in doc["services"]]
        assert names == [SERVICE], doc
        members = doc["services"][0]["members"]
        assert {m["region"] for m in members} == {"eu", "us"}, members
    code, out, err = cli("status", urls=[follower.url], token=VIEWER_TOKEN)
    assert code == 0, err
    assert re.search(r"^leader\s+%s \(region %s\)" % (leader.name, leader.region), out, re.M), out
    assert "service %s: primary eu" % SERVICE in out, out
    # member table: header and one line per member, columns aligned
    lines = out.splitlines()
    hdr = [l for l in lines if l.strip().startswith("MEMBER")]
    assert len(hdr) == 1, out
    rows = [l for l in lines if "orders-eu-1" in l or "orders-us-1" in l]
    assert len(rows) == 2, out
    col = hdr[0].index("NODE")
    for r in rows:
        assert r[col:].startswith("db-"), "NODE column not aligned:\n" + out
    us = [r for r in rows if "orders-us-1" in r][0]
    assert re.search(r"replica\s+healthy\s+12\.3 MiB\s+1\.50 s\s+0/23B3250\s+(59m5\ds|1h0\dm) ago",
                     us), out
    eu = [r for r in rows if "orders-eu-1" in r][0]
    assert re.search(r"primary\s+healthy\s+0 B\s+0 ms\s+0/3000000\s", eu), out
    assert "\033[" not in out, "colours on a pipe"


@test
def test_read_commands_parse():
    leader, follower = cluster()
    doc = cli_json("services", urls=[follower.url], token=VIEWER_TOKEN)
    assert doc["services"][0]["name"] == SERVICE
    assert doc["services"][0]["primary_region"] == "eu"
    doc = cli_json("services", SERVICE, urls=[leader.url], token=VIEWER_TOKEN)
    assert doc["name"] == SERVICE and "drivers" in doc, doc
    doc = cli_json("nodes", urls=[leader.url], token=VIEWER_TOKEN)
    assert isinstance(doc["nodes"], list)
    doc = cli_json("regions", urls=[leader.url], token=VIEWER_TOKEN)
    assert [r["name"] for r in doc["regions"]] == ["eu", "us", "ap"], doc
    doc = cli_json("events", urls=[leader.url], token=VIEWER_TOKEN)
    assert isinstance(doc["events"], list) and "last_id" in doc, doc
    doc = cli_json("operations", urls=[leader.url], token=VIEWER_TOKEN)
    assert isinstance(doc["operations"], list), doc
    for args in (["services"], ["services", SERVICE], ["nodes"], ["regions"], ["events"],
                 ["operations"], ["version"]):
        code, out, err = cli(*args, urls=[leader.url], token=VIEWER_TOKEN)
        assert code == 0, "%s: %d %s" % (args, code, err)
    code, out, err = cli("regions", urls=[leader.url], token=VIEWER_TOKEN)
    assert re.search(r"^REGION\s+PRIORITY$", out, re.M) and re.search(r"^us\s+2$", out, re.M), out
    code, out, err = cli("version", urls=[leader.url], token=None)
    assert code == 0 and re.search(r"^controller\s+\d+\.\d+\.\d+", out, re.M), out


@test
def test_plan_through_follower_is_redirected():
    leader, follower = cluster()
    # the API itself answers the follower with a redirect (http.client: no
    # redirect following)
    conn = http.client.HTTPConnection("127.0.0.1", follower.port, timeout=5)
    conn.request("GET", "/v1/services/%s/plan" % SERVICE,
                 headers={"Authorization": "Bearer " + VIEWER_TOKEN})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 307 and resp.getheader("Location").startswith(leader.url), \
        (resp.status, resp.getheaders())
    doc = cli_json("plan", SERVICE, "--to", "us", urls=[follower.url], token=VIEWER_TOKEN)
    assert doc["service"] == SERVICE and "decision" in doc and "candidates" in doc, doc
    code, out, err = cli("plan", SERVICE, "--force", urls=[follower.url], token=VIEWER_TOKEN)
    assert code == 0, err
    assert re.search(r"^decision\s+\S+", out, re.M), out
    assert re.search(r"NODE\s+REGION\s+PRIORITY\s+REPLAY", out), out
    assert re.search(r"db-us-1\s+us\s+2\s+0/23B3250\s+12\.3 MiB\s+1\.50 s\s+no", out), out


@test
def test_maintenance_event_shows_in_events_and_follow():
    leader, follower = cluster()
    before = cli_json("events", urls=[leader.url], token=VIEWER_TOKEN)["last_id"]
    # a follower of the event log, started before the change
    argv = [program_path("meridianctl"), "--url", follower.url, "--token", VIEWER_TOKEN,
            "events", "--follow", "--after", str(before), "--service", SERVICE,
            "--max-seconds", "30", "--json"]
    follow = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        code, out, err = cli("maintenance", SERVICE, "on", "--reason", "cli test window",
                             urls=[follower.url])
        assert code == 0, "maintenance on: %d %s %s" % (code, out, err)
        assert "maintenance on for %s" % SERVICE in out, out
        doc = cli_json("services", SERVICE, urls=[leader.url], token=VIEWER_TOKEN)
        assert doc["maintenance"] is True and doc["maintenance_reason"] == "cli test window"
        evs = cli_json("events", "--after", str(before), "--service", SERVICE,
                       urls=[leader.url], token=VIEWER_TOKEN)["events"]
        kinds = [(e["kind"], e["message"]) for e in evs]
        assert ("maintenance", "maintenance on: cli test window") in kinds, kinds
        code, out, err = cli("events", "--service", SERVICE, urls=[leader.url],
                             token=VIEWER_TOKEN)
        assert code == 0 and "maintenance on: cli test window" in out, out
        # the running follower prints it too, one JSON object per line; SIGTERM ends it
        got = []

        def seen():
            line = follow.stdout.readline()
            if line:
                got.append(json.loads(line))
            return any(e["message"] == "maintenance on: cli test window" for e in got)
        wait_until(seen, 20, what="the event in events --follow")
        follow.terminate()
        follow.wait(10)
        ferr = follow.stderr.read()
        assert follow.returncode == 0 and not SANITIZER.search(ferr), (follow.returncode, ferr)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    code, out, err = cli("maintenance", SERVICE, "off", urls=[leader.url])
    assert code == 0, err
    doc = cli_json("services", SERVICE, urls=[leader.url], token=VIEWER_TOKEN)
    assert doc["maintenance"] is False
    # --max-seconds bounds a quiet follow
    t0 = time.monotonic()
    code, out, err = cli("events", "--follow", "--max-seconds", "1.5", urls=[leader.url],
                         token=VIEWER_TOKEN)
    took = time.monotonic() - t0
    assert code == 0 and took >= 1.4, (code, took, err)
    log("events --follow --max-seconds 1.5 took %.2f s" % took)


@test
def test_refusals_exit_3_with_api_code():
    leader, follower = cluster()
    # what the API itself says to the same request
    code, body = http_json("POST", leader.url + "/v1/services/%s/switchover" % SERVICE,
                           {"to": "us"}, token=OPERATOR_TOKEN)
    assert 400 <= code < 500, (code, body)
    api_code = body["error"]["code"]
    log("API refuses the switchover with %d %s" % (code, api_code))
    code, out, err = cli("switchover", SERVICE, "--to", "us", urls=[follower.url])
    assert code == 3, (code, out, err)
    assert err.startswith("meridianctl: error: %s: " % api_code), err
    # unknown region, and a region with no member at all
    code, out, err = cli("switchover", SERVICE, "--to", "mars", urls=[leader.url])
    assert code == 3 and "unknown_region" in err, (code, err)
    code, out, err = cli("switchover", SERVICE, "--to", "ap", urls=[leader.url])
    assert code == 3 and "error:" in err, (code, err)
    code, out, err = cli("failover", SERVICE, "--to", "ap", urls=[leader.url])
    assert code == 3 and "error:" in err, (code, err)
    # --json: the API's error document on stdout
    code, out, err = cli("--json", "switchover", SERVICE, "--to", "mars", urls=[leader.url])
    assert code == 3 and json.loads(out)["error"]["code"] == "unknown_region", out
    # roles and tokens
    code, out, err = cli("maintenance", SERVICE, "on", urls=[leader.url], token=VIEWER_TOKEN)
    assert code == 3 and "forbidden" in err, (code, err)
    code, out, err = cli("status", urls=[leader.url], token="not-a-valid-token-at-all")
    assert code == 3 and "unauthorized" in err, (code, err)
    code, out, err = cli("status", urls=[leader.url], token=None)
    assert code == 3 and "unauthorized" in err, (code, err)
    code, out, err = cli("operations", "999999", urls=[leader.url], token=VIEWER_TOKEN)
    assert code == 3 and "not_found" in err, (code, err)
    code, out, err = cli("plan", "no-such-service", urls=[leader.url], token=VIEWER_TOKEN)
    assert code == 3 and "not_found" in err, (code, err)
    # a precondition that does not hold
    code, out, err = cli("switchover", SERVICE, "--to", "us", "--expect-primary", "us",
                         urls=[leader.url])
    assert code == 3 and "conflict" in err and "expect_primary" in err, (code, err)


@test
def test_reachability_and_settings():
    leader, follower = cluster()
    dead = "http://127.0.0.1:%d" % dead_port()
    # unreachable first, then a good one
    doc = cli_json("status", urls=[dead, follower.url], token=VIEWER_TOKEN)
    assert doc["leader"]["name"] == leader.name
    doc = cli_json("status", urls=[dead + "," + leader.url], token=VIEWER_TOKEN)
    assert doc["controller"]["name"] == leader.name
    # a write through a dead URL, then the follower, then redirected to the leader
    code, out, err = cli("maintenance", SERVICE, "off", urls=[dead, follower.url])
    assert code == 0, (code, err)
    # nothing listening
    code, out, err = cli("status", urls=[dead], token=VIEWER_TOKEN)
    assert code == 4, (code, err)
    assert err.startswith("meridianctl: error: cannot reach any controller"), err
    assert "detail: %s/v1/status" % dead in err, err
    # environment, and flags over environment
    code, out, err = cli("--json", "status", token=None,
                         env={"MERIDIAN_URL": dead + "," + leader.url,
                              "MERIDIAN_TOKEN": VIEWER_TOKEN})
    assert code == 0, err
    code, out, err = cli("status", token=VIEWER_TOKEN, urls=[dead],
                         env={"MERIDIAN_URL": leader.url})
    assert code == 4, "--url must win over MERIDIAN_URL: %d %s" % (code, err)
    code, out, err = cli("status", token="bad-token-from-flag", urls=[leader.url],
                         env={"MERIDIAN_TOKEN": VIEWER_TOKEN})
    assert code == 3, "--token must win over MERIDIAN_TOKEN"
    # config file, and environment over config file
    tmp = TempDir("clicfg")
    cfg = tmp.join("ctl.json")
    with open(cfg, "w") as f:
        json.dump({"urls": [dead, follower.url], "token": VIEWER_TOKEN}, f)
    code, out, err = cli("--config", cfg, "--json", "regions", token=None)
    assert code == 0 and json.loads(out)["regions"], (code, err)
    code, out, err = cli("--config", cfg, "regions", token=None, env={"MERIDIAN_URL": dead})
    assert code == 4, "MERIDIAN_URL must win over the config file: %d" % code
    code, out, err = cli("--config", cfg, "regions", token=None,
                         env={"MERIDIAN_TOKEN": "bad-token-from-env"})
    assert code == 3, "MERIDIAN_TOKEN must win over the config file: %d" % code
    with open(cfg, "w") as f:
        json.dump({"urls": [leader.url], "tokn": "x"}, f)
    code, out, err = cli("--config", cfg, "regions", token=None)
    assert code == 2 and "tokn" in err, (code, err)
    # usage errors
    for args in (["switchover", SERVICE], ["maintenance", SERVICE, "maybe"], ["frobnicate"],
                 ["status", "--follow"], ["events", "--after", "x"], ["operations", "abc"], [],
                 ["status", "--url", "ftp://x"]):
        code, out, err = cli(*args, urls=[leader.url], token=VIEWER_TOKEN)
        assert code == 2 and err.startswith("meridianctl: error: "), (args, code, err)
    code, out, err = cli("--help", token=None)
    assert code == 0 and "EXIT STATUS" in out and "switchover" in out, out
    code, out, err = cli("help", "switchover", token=None)
    assert code == 0 and "--expect-epoch" in out, out


# --------------------------------------------------------------------------
# fake API: scripted answers for --wait, 5xx failover and redirects


class FakeApi:
    """An HTTP server that answers from a script: handler(method, path,
    headers, body) -> (status, json, extra headers). Records requests."""

    def __init__(self, handler):
        self.handler = handler
        self.requests = []
        api = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _do(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                api.requests.append((self.command, self.path, dict(self.headers), body))
                status, doc, hdrs = api.handler(self.command, self.path, self.headers, body)
                raw = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (hdrs or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = _do

        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = S(("127.0.0.1", free_port()), H)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def step(name, ms, outcome="ok", attempts=1, finished=True):
    return {"step": name, "started_at": "2026-11-27T17:00:00.000000+00:00",
            "finished_at": "2026-11-27T17:00:01.000000+00:00" if finished else None,
            "duration_ms": ms, "attempts": attempts, "outcome": outcome if finished else None,
            "detail": "%s detail" % name}


def operation(steps, current, outcome=None, finished=False):
    return {"id": 7, "service": SERVICE, "kind": "switchover", "step": current,
            "outcome": outcome, "from_region": "eu", "to_region": "us", "epoch": 2,
            "actor": "ops", "reason": "test", "started_at": "2026-11-27T17:00:00+00:00",
            "finished_at": "2026-11-27T17:00:05+00:00" if finished else None,
            "duration_ms": 5000, "lost_bytes": 0, "barrier_position": 50331648,
            "rejoin_pending": current == "rejoin", "why": "because",
            "steps": steps, "commands": [
                {"id": "7/fence/fence", "kind": "fence", "node": "db-eu-1", "epoch": 2,
                 "status": "done", "result": {"ok": True},
                 "created_at": "2026-11-27T17:00:00.100+00:00",
                 "finished_at": "2026-11-27T17:00:00.350+00:00"}]}


def scripted(timeline):
    """A handler: POST starts operation 7; each GET of it returns the next
    entry of timeline (the last one repeats)."""
    polls = [0]

    def handler(method, path, headers, body):
        if method == "POST" and path.endswith("/switchover"):
            return 202, {"operation": "7", "status": "started"}, None
        if path == "/v1/operations/7":
            i = min(polls[0], len(timeline) - 1)
            polls[0] += 1
            return 200, timeline[i], None
        return 404, {"error": {"code": "not_found", "message": "no such endpoint"}}, None
    return handler


@test
def test_wait_until_cutover_complete():
    tl = [operation([], "plan"),
          operation([step("plan", 10)], "fence"),
          operation([step("plan", 10), step("fence", 250, attempts=2)], "catchup"),
          operation([step("plan", 10), step("fence", 250, attempts=2), step("catchup", 1200),
                     step("promote", 300), step("registry", 40), step("dns", 30),
                     step("rejoin", 0, finished=False)], "rejoin")]
    api = FakeApi(scripted(tl))
    try:
        code, out, err = cli("switchover", SERVICE, "--to", "us", "--wait", urls=[api.url])
        assert code == 0, (code, out, err)
        assert "operation 7 started" in out, out
        assert out.rstrip().endswith("cutover complete; rejoin pending"), out
        for s in ("plan", "fence", "catchup", "promote", "registry", "dns"):
            assert re.search(r"^  %s\s" % s, out, re.M), "step %s not printed:\n%s" % (s, out)
        assert len(re.findall(r"^  fence\s", out, re.M)) == 1, "a step printed twice:\n" + out
        assert re.search(r"fence\s+250 ms\s+2 attempts\s+ok", out), out
        assert not re.search(r"^  rejoin", out, re.M), out
        post = [r for r in api.requests if r[0] == "POST"][0]
        assert json.loads(post[3]) == {"to": "us"}, post
        assert post[2].get("Idempotency-Key", "").startswith("meridianctl-"), post[2]
        # the timeline of the same operation
        code, out, err = cli("operations", "7", urls=[api.url])
        assert code == 0, err
        assert re.search(r"^catchup\s+\+0 ms\s+1\.20 s\s+24% #####", out, re.M), out
        assert re.search(r"^total\s+5\.00 s", out, re.M), out
        assert "barrier     0/3000000" in out, out
        assert re.search(r"7/fence/fence\s+fence\s+db-eu-1\s+2\s+done\s+250 ms", out), out
    finally:
        api.close()


@test
def test_wait_outcomes():
    done = operation([step("plan", 10), step("dns", 20), step("rejoin", 100)], "done",
                     outcome="done", finished=True)
    api = FakeApi(scripted([done]))
    try:
        code, out, err = cli("switchover", SERVICE, "--to", "us", "--wait", urls=[api.url])
        assert code == 0 and "operation 7 done after 5.00 s, lost 0 B" in out, (code, out, err)
        code, out, err = cli("--json", "switchover", SERVICE, "--to", "us", "--wait",
                             urls=[api.url])
        assert code == 0 and json.loads(out)["outcome"] == "done", (code, out)
    finally:
        api.close()
    aborted = operation([step("plan", 10), step("fence", 5000, outcome="timeout"),
                         step("rollback", 100)], "aborted", outcome="aborted", finished=True)
    api = FakeApi(scripted([aborted]))
    try:
        code, out, err = cli("switchover", SERVICE, "--to", "us", "--wait", urls=[api.url])
        assert code == 1 and "operation 7 aborted" in out and "because" in out, (code, out)
    finally:
        api.close()
    api = FakeApi(scripted([operation([step("plan", 10)], "catchup")]))
    try:
        t0 = time.monotonic()
        code, out, err = cli("switchover", SERVICE, "--to", "us", "--wait", "--timeout", "1",
                             urls=[api.url])
        assert code == 5 and "timed out" in err, (code, out, err)
        assert time.monotonic() - t0 < 15
        # SIGTERM while waiting: stops waiting, exit 5
        p = subprocess.Popen([program_path("meridianctl"), "--url", api.url, "--token", "t" * 20,
                              "switchover", SERVICE, "--to", "us", "--wait"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        p.terminate()
        out, err = p.communicate(timeout=15)
        assert p.returncode == 5 and "interrupted" in err, (p.returncode, err)
        assert not SANITIZER.search(err), err
    finally:
        api.close()


@test
def test_5xx_and_redirect_move_on():
    key = []

    def sick(method, path, headers, body):
        key.append(headers.get("Idempotency-Key"))
        return 503, {"error": {"code": "store_unavailable", "message": "store down"}}, None
    bad = FakeApi(sick)

    good_hits = []

    def good(method, path, headers, body):
        good_hits.append((method, path, headers.get("Authorization"), body))
        if method == "POST":
            key.append(headers.get("Idempotency-Key"))
            return 202, {"operation": "9", "status": "started"}, None
        return 200, {"ok": True}, None
    leader = FakeApi(good)

    def follower(method, path, headers, body):
        return 307, {"error": {"code": "not_leader", "message": "go"}}, {
            "Location": leader.url + path}
    fol = FakeApi(follower)
    try:
        code, out, err = cli("switchover", SERVICE, "--to", "us", urls=[bad.url, fol.url])
        assert code == 0 and "operation 9 started" in out, (code, out, err)
        assert len(key) == 2 and key[0] == key[1] and key[0], key
        m, p, auth, body = good_hits[-1]
        assert m == "POST" and p == "/v1/services/%s/switchover" % SERVICE, good_hits
        assert auth == "Bearer " + OPERATOR_TOKEN, "token lost on redirect"
        assert json.loads(body) == {"to": "us"}, body
        # only 5xx everywhere: exit 4 with the API's code
        code, out, err = cli("status", urls=[bad.url])
        assert code == 4 and "store_unavailable" in err, (code, err)
    finally:
        bad.close()
        fol.close()
        leader.close()


# --------------------------------------------------------------------------
# end to end: a real switchover with agents and PostgreSQL replicas

PEER_TOKEN = "meridian-test-peer-token-0123456789"


@test
def test_switchover_wait_end_to_end():
    """A real switchover eu -> us (PostgreSQL primary and streaming replica,
    two agents): --wait prints the steps up to the cutover and exits 0 at
    "cutover complete; rejoin pending"; `operations ID` shows the timeline;
    status then names the new primary and epoch."""
    store = fresh_store("meridian_cli_e2e")
    tmp = TempDir("clie2e")
    p = PgCluster.create("pg-eu", tmp=tmp, settings={"wal_log_hints": "on"})
    r = p.make_replica("pg-us", tmp=tmp)
    hook = os.path.join(source_dir(), "deploy", "hooks", "pg-rejoin")
    extra = {"regions": [{"name": "eu", "priority": 1}, {"name": "us", "priority": 2}],
             "services": [{"name": SERVICE, "primary_region": "eu",
                           "policy": {"auto_failover": False},
                           "members": [{"name": "orders-eu-1", "node": "db-eu-1", "region": "eu",
                                        "conninfo": p.conninfo()},
                                       {"name": "orders-us-1", "node": "db-us-1", "region": "us",
                                        "conninfo": r.conninfo()}]}]}
    ctl = Controller("ctl-e2e", "eu", store, tmp=tmp, extra=extra).start()
    wait_for_leader([ctl], 30)
    for node, region, name, pg in (("db-eu-1", "eu", "orders-eu-1", p),
                                   ("db-us-1", "us", "orders-us-1", r)):
        Agent(node, region, [ctl.url], tmp=tmp, extra={
            "heartbeat_ms": 200,
            "peer_tokens": [{"name": "peers", "token": PEER_TOKEN, "role": "agent"}],
            "members": [{"service": SERVICE, "name": name, "kind": "postgresql",
                         "conninfo": pg.conninfo(), "data_dir": pg.data,
                         "rejoin_command": [hook]}]}).start()

    def acceptable():
        d = cli_json("plan", SERVICE, "--to", "us", urls=[ctl.url], token=VIEWER_TOKEN)
        return d["decision"] == "failover" and d
    wait_until(acceptable, 60, interval_s=0.5, what="a switchover to us acceptable")
    code, out, err = cli("status", urls=[ctl.url], token=VIEWER_TOKEN)
    assert re.search(r"orders-us-1\s+us\s+db-us-1\s+replica\s+healthy", out), out

    code, out, err = cli("switchover", SERVICE, "--to", "us", "--expect-primary", "eu",
                         "--expect-epoch", "1", "--reason", "cli e2e", "--wait",
                         "--timeout", "90", urls=[ctl.url], timeout=120)
    log("switchover --wait output:\n" + out + err)
    assert code == 0, (code, out, err)
    m = re.search(r"^operation (\d+) started: switchover of orders to us$", out, re.M)
    assert m, out
    op_id = m.group(1)
    for s_ in ("plan", "fence", "catchup", "promote"):
        assert re.search(r"^  %s\s+\S+ m?s\s+\d+ attempts?\s+\S+" % s_, out, re.M), (s_, out)
    last = out.rstrip().splitlines()[-1]
    assert last in ("cutover complete; rejoin pending", "operation %s done after" % op_id) or \
        last.startswith("operation %s done after" % op_id), out

    doc = cli_json("status", urls=[ctl.url], token=VIEWER_TOKEN)
    svc = doc["services"][0]
    assert svc["primary_region"] == "us" and svc["epoch"] == 2, svc
    code, out, err = cli("operations", op_id, urls=[ctl.url], token=VIEWER_TOKEN)
    assert code == 0, err
    log("timeline:\n" + out)
    assert "requested by ops: cli e2e" in out, out
    assert re.search(r"^promote\s+\+\S+ m?s\s+\S+ m?s\s+\d+%", out, re.M), out
    assert re.search(r"^total\s+\S+ m?s", out, re.M), out
    assert re.search(r"/promote/promote\s+promote\s+db-us-1\s+2\s+done", out), out
    code, out, err = cli("operations", urls=[ctl.url], token=VIEWER_TOKEN)
    assert re.search(r"^\s*%s\s+orders\s+switchover\s+eu\s+us" % op_id, out, re.M), out
    # a second switchover with the old expectations is refused: the topology moved
    code, out, err = cli("switchover", SERVICE, "--to", "eu", "--expect-epoch", "1",
                         urls=[ctl.url])
    assert code == 3 and "conflict" in err, (code, err)


if __name__ == "__main__":
    run_all()
