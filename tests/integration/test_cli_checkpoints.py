# meridian-test: e2e
"""meridianctl's checkpoint, recovery and status RPO against a whole
deployment (tests/integration/mrd_deploy.py: eu primary, us and ap
streaming replicas, an agent per node, three controllers, service "orders").

  create_wait          `checkpoint create --wait` exits 0 and names all three
                       regions; `checkpoint show` and `list` print it
  json_outputs         --json of create --wait, show, list and recovery parse
                       and say what the API says
  show_unknown         `checkpoint show` of an unknown id exits 3 with
                       not_found; a bad id is a usage error (2)
  recovery_and_status  `recovery` lists three regions with an RPO; `status`
                       has an RPO column with a value per member
  status_without_recovery  a scripted fake API whose /recovery fails (503):
                       `status` still exits 0, the RPO column shows "-"
  paused_region        replay paused on ap, a write, then `checkpoint create
                       --position <LSN> --wait --timeout 3` exits 5 naming
                       ap; after resume_replay `checkpoint show --wait-ms`
                       sees it complete
"""

import http.server
import json
import os
import re
import socketserver
import subprocess
import threading
import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test
SERVICE = "orders"
REGIONS = ("eu", "us", "ap")
SANITIZER = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:")


@h.fixture
def deployment():
    d = Deployment(profile="default")
    d.wait_ready()
    return d


def cli(d, *args, timeout=90):
    """Runs build/meridianctl against all three controllers; returns
    (exit code, stdout, stderr)."""
    argv = [h.program_path("meridianctl"), "--no-color", "--token", h.OPERATOR_TOKEN]
    for c in d.controllers():
        argv += ["--url", c.url]
    argv += list(args)
    env = {k: v for k, v in os.environ.items() if k not in ("MERIDIAN_URL", "MERIDIAN_TOKEN")}
    t0 = time.monotonic()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, env=env)
    h.log("meridianctl %s -> %d (%.2f s)" % (" ".join(args), p.returncode,
                                             time.monotonic() - t0))
    for line in (p.stdout + p.stderr).splitlines()[:40]:
        h.log("  | " + line)
    assert not SANITIZER.search(p.stderr), "sanitizer report:\n" + p.stderr
    return p.returncode, p.stdout, p.stderr


def write_row(d):
    """Inserts a row on the primary; returns pg_current_wal_lsn() after it."""
    d.pg["eu"].sql("INSERT INTO writes (id) VALUES (%d)" % (time.monotonic_ns() % (1 << 62)))
    return d.pg["eu"].sql_value("SELECT pg_current_wal_lsn()::text")


@test
def test_create_wait():
    d = deployment()
    write_row(d)
    code, out, err = cli(d, "checkpoint", "create", SERVICE, "--wait", "--timeout", "60")
    assert code == 0, (code, out, err)
    m = re.search(r"checkpoint (\d+) created for orders at position [0-9A-F]+/[0-9A-F]+", out)
    assert m, out
    cid = m.group(1)
    for r in REGIONS:
        assert re.search(r"^  %s reached it at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d" % r, out, re.M), out
    assert "checkpoint %s complete" % cid in out, out

    code, out, err = cli(d, "checkpoint", "show", SERVICE, cid)
    assert code == 0, (code, out, err)
    assert out.startswith("checkpoint %s of orders (manual): position " % cid), out
    for r in REGIONS:
        assert re.search(r"^  %s\s+\d{4}-\d\d-\d\d" % r, out, re.M), out
    assert "state: complete" in out, out

    # the list shows the marks the leader stores (a little after the live
    # evaluation that answered the long-poll)
    last = {}

    def listed_complete():
        code, out, err = cli(d, "checkpoint", "list", SERVICE, "--kind", "manual", "--limit", "5")
        assert code == 0, (code, out, err)
        assert out.splitlines()[0].split()[:3] == ["ID", "KIND", "POSITION"], out
        row = [ln for ln in out.splitlines()[1:] if ln.split()[0] == cid]
        assert row and "manual" in row[0], out
        last["out"] = out
        return "complete" in row[0]
    h.wait_until(listed_complete, 20, interval_s=0.5,
                 what="the list to show the checkpoint complete")
    row = [ln for ln in last["out"].splitlines()[1:] if ln.split()[0] == cid][0]
    # ID KIND POSITION EPOCH CREATED(date time) STATE REACHED OPERATION
    assert set(row.split()[7].split(",")) == set(REGIONS), row


@test
def test_json_outputs():
    d = deployment()
    write_row(d)
    code, out, err = cli(d, "--json", "checkpoint", "create", SERVICE, "--wait", "--timeout", "60",
                         "--regions", "eu,us")
    assert code == 0, (code, out, err)
    doc = json.loads(out)
    assert doc["complete"] is True and doc["lost"] is False, doc
    assert set(doc["reached"]) >= {"eu", "us"}, doc
    cid = doc["id"]

    code, out, err = cli(d, "--json", "checkpoint", "create", SERVICE)
    assert code == 0, (code, out, err)
    created = json.loads(out)
    assert created["service"] == SERVICE and created["kind"] == "manual", created
    assert created["id"] > cid, created

    code, out, err = cli(d, "--json", "checkpoint", "show", SERVICE, str(cid), "--wait-ms", "100")
    assert code == 0, (code, out, err)
    shown = json.loads(out)
    assert shown["id"] == cid and shown["position"] == doc["position"], shown

    code, out, err = cli(d, "--json", "checkpoint", "list", SERVICE, "--limit", "3")
    assert code == 0, (code, out, err)
    lst = json.loads(out)
    assert 1 <= len(lst["checkpoints"]) <= 3, lst
    assert lst["checkpoints"][0]["id"] >= created["id"], lst

    code, out, err = cli(d, "--json", "recovery", SERVICE)
    assert code == 0, (code, out, err)
    rec = json.loads(out)
    assert rec["service"] == SERVICE and len(rec["regions"]) == 3, rec


@test
def test_show_unknown():
    d = deployment()
    code, out, err = cli(d, "checkpoint", "show", SERVICE, "987654321")
    assert code == 3, (code, out, err)
    assert "not_found" in err, err
    code, out, err = cli(d, "--json", "checkpoint", "show", SERVICE, "987654321")
    assert code == 3, (code, out, err)
    assert json.loads(out)["error"]["code"] == "not_found", out
    code, out, err = cli(d, "checkpoint", "show", "no-such-service", "1")
    assert code == 3 and "not_found" in err, (code, out, err)
    code, out, err = cli(d, "checkpoint", "show", SERVICE, "abc")
    assert code == 2 and "the id must be a positive integer" in err, (code, out, err)


@test
def test_recovery_and_status():
    d = deployment()
    write_row(d)
    code, out, err = cli(d, "checkpoint", "create", SERVICE, "--wait", "--timeout", "60")
    assert code == 0, (code, out, err)

    # recovery points come from the leader's marks, a moment after the wait
    def all_have_rpo():
        code, out, err = cli(d, "--json", "recovery", SERVICE)
        assert code == 0, (code, out, err)
        rec = json.loads(out)
        return len(rec["regions"]) == 3 and all(
            isinstance(x["rpo_seconds"], (int, float)) for x in rec["regions"])
    h.wait_until(all_have_rpo, 20, interval_s=0.5, what="every region to have an RPO")

    code, out, err = cli(d, "recovery", SERVICE)
    assert code == 0, (code, out, err)
    lines = out.splitlines()
    hdr = [ln for ln in lines if ln.startswith("REGION")]
    assert hdr and "RPO" in hdr[0] and "RECOVERY POINT" in hdr[0], out
    dur = r"(\d+ ms|\d+\.\d+ s|\d+m\d\ds|\d+h\d\dm|\d+d\d\dh)"
    for r in REGIONS:
        row = [ln for ln in lines if ln.split() and ln.split()[0] == r]
        assert row, out
        # region, role, date time of the recovery point, checkpoint id, RPO
        assert re.match(r"%s\s+(primary|replica)\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+\s+%s"
                        % (r, dur), row[0]), row[0]
    code, out2, err = cli(d, "--json", "recovery", SERVICE)
    assert code == 0
    rec = json.loads(out2)
    assert all(isinstance(x["rpo_seconds"], (int, float)) for x in rec["regions"]), rec

    code, out, err = cli(d, "status")
    assert code == 0, (code, out, err)
    lines = out.splitlines()
    hdr = [ln for ln in lines if ln.strip().startswith("MEMBER")]
    assert hdr and hdr[0].rstrip().endswith("RPO"), out
    for r in REGIONS:
        row = [ln for ln in lines if ln.split() and ln.split()[0] == "orders-" + r]
        assert row and re.search(dur + r"$", row[0].rstrip()), out

    code, out, err = cli(d, "--json", "status")
    assert code == 0, (code, out, err)
    st = json.loads(out)
    svc = [s for s in st["services"] if s["name"] == SERVICE][0]
    assert len(svc["recovery"]["regions"]) == 3, svc


class FakeApi(http.server.BaseHTTPRequestHandler):
    """/v1/status and /v1/services answer; /recovery is a 503."""
    docs = {
        "/v1/status": {"controller": {"name": "fake", "region": "eu", "is_leader": True},
                       "leader": None, "store": {"connected": True, "migrated": True}},
        "/v1/services": {"services": [{
            "name": SERVICE, "primary_region": "eu", "epoch": 1, "maintenance": False,
            "members": [{"name": "orders-eu", "region": "eu", "node": "node-eu",
                         "role": "primary", "healthy": True, "age_ms": 10,
                         "lag_bytes": 0, "lag_ms": 0}]}]},
    }

    def do_GET(self):
        self.server.paths.append(self.path)
        doc, code = self.docs.get(self.path), 200
        if doc is None:
            code = 503
            doc = {"error": {"code": "store_unavailable", "message": "store is not reachable"}}
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@test
def test_status_without_recovery():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), FakeApi)
    srv.daemon_threads = True
    srv.paths = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        argv = [h.program_path("meridianctl"), "--no-color", "--url",
                "http://127.0.0.1:%d" % srv.server_address[1]]
        p = subprocess.run(argv + ["status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
        assert not SANITIZER.search(p.stderr), p.stderr
        assert "/v1/services/orders/recovery" in srv.paths, srv.paths
        hdr = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("MEMBER")]
        assert hdr and hdr[0].rstrip().endswith("RPO"), p.stdout
        row = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("orders-eu")]
        assert row and row[0].rstrip().endswith(" -"), p.stdout
        p = subprocess.run(argv + ["--json", "status"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
        assert json.loads(p.stdout)["services"][0]["recovery"] is None, p.stdout
    finally:
        srv.shutdown()
        srv.server_close()


@test
def test_paused_region():
    d = deployment()
    d.pg["ap"].pause_replay()
    try:
        lsn = write_row(d)
        code, out, err = cli(d, "checkpoint", "create", SERVICE, "--position", lsn, "--wait",
                             "--timeout", "3")
        assert code == 5, (code, out, err)
        m = re.search(r"checkpoint (\d+) created", out)
        assert m, out
        cid = m.group(1)
        assert "checkpoint %s pending in: ap" % cid in out, out
        assert "pending: ap" in err, err
        for r in ("eu", "us"):
            assert re.search(r"^  %s reached it at " % r, out, re.M), out
        assert not re.search(r"^  ap reached", out, re.M), out
    finally:
        d.pg["ap"].resume_replay()
    code, out, err = cli(d, "checkpoint", "show", SERVICE, cid, "--wait-ms", "30000",
                         "--regions", "ap")
    assert code == 0, (code, out, err)
    assert re.search(r"^  ap\s+\d{4}-", out, re.M), out


if __name__ == "__main__":
    h.run_all()
