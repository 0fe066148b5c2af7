# meridian-test: e2e
"""The operator API's error paths against a real three-region deployment
(tests/integration/mrd_deploy.py): every refusal has the right status and
a JSON body {"error": {"code", "message"}}, and starts nothing.

  auth_and_input_errors
      401 without or with an unknown token (WWW-Authenticate: Bearer), 403
      for a viewer's write, 400 for malformed JSON, a non-object body, an
      unknown field, wrong types ("to": 5, "force": "yes", "expect_epoch":
      "1", "enabled": "yes"), a switchover without "to" or with "force";
      404 unknown service / operation, 400 bad operation id, 422 unknown
      region, 405 unknown method, 413 oversized body (refused at the
      headers, and for a chunked body while reading it).
  preconditions_and_followers
      409 expect_epoch / expect_primary mismatch, 409 switchover to the
      current primary; a follower answers writes (switchover, failover,
      maintenance, plan) with 307 and Location = leader URL + path (+ query);
      none of this started an operation.
  running_operation_and_idempotency
      with replay paused on us, a switchover holds in catchup: a second
      request gets 409; the same Idempotency-Key gets 202 with the same
      operation id, while it runs and after it is done; 24 hours after it
      finished (finished_at moved back in the store) the key starts a new one.
  events_paging
      GET /v1/events with limit and after= pages through the log without
      gap or overlap; bad after/limit are 400.
"""

import http.client
import json
import socket
import time

import psycopg2

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


@h.fixture
def deployment():
    d = Deployment(profile="default")
    d.wait_ready()
    return d


def req(ctl, method, path, body=None, token=h.OPERATOR_TOKEN, headers=None, raw=None):
    """One request; returns (status, headers with lower-case names, JSON or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", ctl.port, timeout=10)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = "Bearer " + token
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read()
        out_headers = {k.lower(): v for k, v in resp.getheaders()}
        try:
            js = json.loads(text) if text else None
        except ValueError:
            js = None
        return resp.status, out_headers, js
    finally:
        conn.close()


def raw_exchange(ctl, head, chunks):
    """Sends head then chunks on one connection (stopping when the server
    closes) and returns what the server answered."""
    s = socket.create_connection(("127.0.0.1", ctl.port), timeout=10)
    got = b""
    try:
        s.sendall(head)
        for c in chunks:
            try:
                s.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
        while b"\r\n\r\n" not in got:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                break
            if not data:
                break
            got += data
    finally:
        s.close()
    return got


def expect_error(res, status, code=None):
    st, _, body = res
    assert st == status, "expected %d, got %s %s" % (status, st, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, "expected code %s: %s" % (code, body)
    return body["error"]


def no_operation(d):
    assert d.latest_operation() is None, "an error path started %s" % d.latest_operation()


SW = "/v1/services/orders/switchover"
FO = "/v1/services/orders/failover"
MAINT = "/v1/services/orders/maintenance"


@test
def auth_and_input_errors():
    d = deployment()
    ld = d.leader()
    # 401 / 403
    st, hd, body = req(ld, "GET", "/v1/services/orders", token=None)
    assert st == 401 and hd.get("www-authenticate", "").startswith("Bearer"), (st, hd, body)
    expect_error((st, hd, body), 401, "unauthorized")
    expect_error(req(ld, "POST", SW, {"to": "us"}, token=None), 401, "unauthorized")
    expect_error(req(ld, "POST", SW, {"to": "us"}, token="not-a-token-0123456789"), 401)
    expect_error(req(ld, "POST", SW, {"to": "us"}, token=h.VIEWER_TOKEN), 403, "forbidden")
    expect_error(req(ld, "PUT", MAINT, {"enabled": True}, token=h.VIEWER_TOKEN), 403)
    expect_error(req(ld, "POST", FO, {"to": "us"}, token=h.AGENT_TOKEN), 403)
    assert req(ld, "GET", "/v1/services/orders", token=h.VIEWER_TOKEN)[0] == 200
    # 400: the body
    expect_error(req(ld, "POST", SW, raw=b'{"to": "us"'), 400, "bad_request")
    expect_error(req(ld, "POST", SW, raw=b'["us"]'), 400, "bad_request")
    expect_error(req(ld, "POST", SW, raw=b'{"to": "us", "to": "ap"}'), 400, "bad_request")
    e = expect_error(req(ld, "POST", SW, {"to": "us", "region": "us"}), 400, "bad_request")
    assert "region" in e["message"], e
    e = expect_error(req(ld, "POST", SW, {"to": 5}), 400, "bad_request")
    assert e["message"].startswith("to:"), e
    e = expect_error(req(ld, "POST", FO, {"to": "us", "force": "yes"}), 400, "bad_request")
    assert e["message"].startswith("force:"), e
    expect_error(req(ld, "POST", SW, {"to": "us", "expect_epoch": "1"}), 400, "bad_request")
    expect_error(req(ld, "POST", SW, {"to": "us", "expect_epoch": 0}), 400, "bad_request")
    expect_error(req(ld, "POST", SW, {"to": "us", "reason": ["x"]}), 400, "bad_request")
    expect_error(req(ld, "POST", SW, {"to": "u" * 100}), 400, "bad_request")
    expect_error(req(ld, "POST", SW, {}), 400, "bad_request")
    expect_error(req(ld, "POST", SW, {"to": "us", "force": True}), 400, "bad_request")
    expect_error(req(ld, "PUT", MAINT, {"enabled": "yes"}), 400, "bad_request")
    expect_error(req(ld, "PUT", MAINT, {"reason": "no flag"}), 400, "bad_request")
    expect_error(req(ld, "PUT", MAINT, {"enabled": True, "until": 5}), 400, "bad_request")
    # 404 / 422 / 405
    expect_error(req(ld, "POST", "/v1/services/nope/switchover", {"to": "us"}), 404)
    expect_error(req(ld, "GET", "/v1/services/nope"), 404)
    expect_error(req(ld, "GET", "/v1/services/nope/plan"), 404)
    expect_error(req(ld, "PUT", "/v1/services/nope/maintenance", {"enabled": True}), 404)
    expect_error(req(ld, "GET", "/v1/operations/999999"), 404)
    expect_error(req(ld, "GET", "/v1/operations/abc"), 400, "bad_request")
    expect_error(req(ld, "GET", "/v1/nosuchthing"), 404)
    expect_error(req(ld, "POST", SW, {"to": "mars"}), 422, "unknown_region")
    expect_error(req(ld, "POST", FO, {"to": "mars", "force": True}), 422, "unknown_region")
    e = expect_error(req(ld, "GET", "/v1/services/orders/plan?to=mars"), 404, "unknown_region")
    st, hd, body = req(ld, "DELETE", "/v1/services/orders")
    assert st == 405 and "GET" in hd.get("allow", ""), (st, hd, body)
    # 413: refused at the headers (Content-Length), and for a chunked body
    # that grows past the bound while it is read
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\n" % (SW, h.OPERATOR_TOKEN))
    got = raw_exchange(ld, (head + "Content-Length: %d\r\n\r\n" % (8 << 20)).encode(),
                       [b'{"to": "' + b"u" * 4096])
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    chunk = b"x" * 65536
    got = raw_exchange(ld, (head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                       [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 40)
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    # the server still serves
    assert req(ld, "GET", "/v1/services/orders", token=h.VIEWER_TOKEN)[0] == 200
    no_operation(d)


@test
def preconditions_and_followers():
    d = deployment()
    ld = d.leader()
    svc = d.service(ld)
    epoch = svc["epoch"]
    e = expect_error(req(ld, "POST", SW, {"to": "us", "expect_epoch": epoch + 5}), 409,
                     "conflict")
    assert "expect_epoch" in e["message"], e
    e = expect_error(req(ld, "POST", SW, {"to": "us", "expect_primary": "ap"}), 409, "conflict")
    assert "expect_primary" in e["message"], e
    e = expect_error(req(ld, "POST", FO, {"to": "us", "expect_primary": "us"}), 409, "conflict")
    expect_error(req(ld, "POST", SW, {"to": "eu"}), 409, "already_primary")
    expect_error(req(ld, "POST", FO, {"to": "eu", "force": True}), 409, "already_primary")
    # a switchover needs a healthy primary; a failover with none down is a
    # manual one and is allowed, so it is not tried here
    no_operation(d)

    # writes sent to a follower: 307 to the leader, same path and query
    followers = [c for c in d.controllers() if c is not ld]
    assert len(followers) == 2
    for f in followers:
        for method, path, body in (("POST", SW, {"to": "us"}),
                                   ("POST", FO, {"to": "us", "force": True}),
                                   ("PUT", MAINT, {"enabled": True, "reason": "x"})):
            st, hd, js = req(f, method, path, body)
            assert st == 307, "%s %s on follower %s: %s %s" % (method, path, f.name, st, js)
            assert hd.get("location") == ld.url + path, (hd, ld.url)
            assert js["error"]["code"] == "not_leader" and js["error"]["leader_url"] == ld.url, js
        st, hd, js = req(f, "GET", "/v1/services/orders/plan?to=us&force=true")
        assert st == 307, (st, js)
        assert hd.get("location") == ld.url + "/v1/services/orders/plan?to=us&force=true", hd
        # validation comes before the redirect: a bad request is refused here
        expect_error(req(f, "POST", SW, {"to": 5}), 400)
        # reads are answered by any controller
        assert req(f, "GET", "/v1/services/orders", token=h.VIEWER_TOKEN)[0] == 200
    no_operation(d)
    assert d.service()["epoch"] == epoch and d.service()["maintenance"] is False


@test
def running_operation_and_idempotency():
    d = deployment()
    ld = d.leader()
    d.pg["us"].pause_replay()
    d.writer_start()
    key = {"Idempotency-Key": "e2e-switchover-%d" % time.time_ns()}
    deadline = time.monotonic() + 10
    while True:  # a 422 may be a replica's check that just timed out on a loaded machine
        st, _, js = req(ld, "POST", SW, {"to": "us", "reason": "e2e api test"}, headers=key)
        if st != 422 or time.monotonic() > deadline:
            break
        h.log("switchover refused (%s), retrying" % js)
        time.sleep(0.3)
    assert st == 202 and js["status"] == "started", (st, js)
    op_id = js["operation"]
    try:
        op = d.wait_op(op_id, 30, until=("catchup", "rollback", "done", "aborted", "failed"))
        assert op["step"] == "catchup", op
        # the same key: the same operation, not a conflict
        st, _, js = req(ld, "POST", SW, {"to": "us", "reason": "e2e api test"}, headers=key)
        assert st == 202 and str(js["operation"]) == str(op_id), (st, js)
        # any other start: 409 while it runs
        e = expect_error(req(ld, "POST", SW, {"to": "ap"}), 409, "conflict")
        assert "already running" in e["message"], e
        expect_error(req(ld, "POST", FO, {"to": "ap", "force": True}), 409, "conflict")
        st, _, js = req(ld, "POST", SW, {"to": "us"},
                        headers={"Idempotency-Key": "another-key-%d" % time.time_ns()})
        assert st == 409, (st, js)
    finally:
        d.pg["us"].resume_replay()
    op = d.wait_op(op_id, 60, until=("rejoin", "done", "aborted", "failed"))
    assert op["step"] in ("rejoin", "done"), op
    assert op["reason"] == "e2e api test" and op["actor"] == "ops", op
    h.wait_until(lambda: d.service()["primary_region"] == "us", 20, what="primary in us")
    # the key still names it once the topology moved on
    st, _, js = req(ld, "POST", SW, {"to": "us", "reason": "e2e api test"}, headers=key)
    assert st == 202 and str(js["operation"]) == str(op_id), (st, js)
    d.writer_stop()
    code, body = d.any_controller().get("/v1/operations?service=orders")
    assert [str(o["id"]) for o in body["operations"]] == [str(op_id)], body
    assert not d.lost_writes("us")
    # 24 hours after its operation finished, the key is free again: the same
    # request starts a new operation
    op = d.wait_op(op_id, 60, until=("done", "aborted", "failed"))
    assert op["step"] == "done", op
    conn = psycopg2.connect(d.store)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("UPDATE meridian.operations SET finished_at = now() - interval '25 hours'"
                    " WHERE id = %s", (int(op_id),))
    conn.close()
    deadline = time.monotonic() + 10
    while True:
        st, _, js = req(ld, "POST", SW, {"to": "ap", "reason": "e2e api test"}, headers=key)
        if st != 422 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert st == 202 and str(js["operation"]) != str(op_id), (st, js)


@test
def events_paging():
    d = deployment()
    c = d.any_controller()
    for on in (True, False, True, False, True, False):
        st, _, js = req(d.leader(), "PUT", MAINT, {"enabled": on, "reason": "paging"})
        assert st == 200, (st, js)
    code, full = c.get("/v1/events?limit=1000")
    assert code == 200, full
    ids = [e["id"] for e in full["events"]]
    assert len(ids) >= 4, "too few events to page: %s" % full
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert full["last_id"] == ids[-1], full
    paged, after = [], 0
    for _ in range(len(ids) + 2):
        code, page = c.get("/v1/events?after=%d&limit=2" % after)
        assert code == 200, page
        if not page["events"]:
            assert page["last_id"] == after, page
            break
        assert len(page["events"]) <= 2, page
        assert all(e["id"] > after for e in page["events"]), (after, page)
        assert page["last_id"] == page["events"][-1]["id"], page
        paged.extend(e["id"] for e in page["events"])
        after = page["last_id"]
    assert paged[:len(ids)] == ids, (paged, ids)
    code, page = c.get("/v1/events?after=%d&limit=1" % ids[1])
    assert code == 200 and [e["id"] for e in page["events"]] == [ids[2]], page
    code, page = c.get("/v1/events?after=%d&service=orders&limit=1000" % ids[0])
    assert code == 200 and all(e["service"] == "orders" for e in page["events"]), page
    for q in ("limit=0", "limit=1001", "after=-1", "after=abc", "limit=2x"):
        expect_error(req(c, "GET", "/v1/events?" + q, token=h.VIEWER_TOKEN), 400, "bad_request")
    expect_error(req(c, "GET", "/v1/events", token=None), 401)


if __name__ == "__main__":
    h.run_all()
