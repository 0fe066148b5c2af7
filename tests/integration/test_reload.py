"""Configuration reload on SIGHUP (controller/reload.c), one controller with
a service and no agents:

  reload_applies       a new region priority and a new token take effect
                       without a restart; the removed token gets 401
  invalid_is_refused   a file with a bad key is refused, the running
                       configuration stays (old token still works)
  unsafe_is_refused    removing the member that holds the primary is
                       refused with a message naming the member
"""

import json
import os
import signal

import meridian_harness as h

test = h.test

NEW_TOKEN = "meridian-test-new-operator-token-0123456789"


def fresh_store():
    import psycopg2
    base = h.require_env("MERIDIAN_TEST_PG")
    name = "reload_%d" % os.getpid()
    conn = psycopg2.connect(base)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS " + name)
        cur.execute("CREATE DATABASE " + name)
    conn.close()
    return " ".join([p for p in base.split() if not p.startswith("dbname=")] + ["dbname=" + name])


def service(members):
    return {"name": "orders", "primary_region": "eu", "members": [
        {"name": "orders-" + r, "node": "node-" + r, "region": r} for r in members]}


def controller():
    extra = {"regions": [{"name": "eu", "priority": 1}, {"name": "us", "priority": 2}],
             "services": [service(["eu", "us"])]}
    c = h.Controller("ctl-eu", "eu", fresh_store(), extra=extra)
    c.start()
    h.wait_for_leader([c], 30)
    # the leader has written the topology and read it back once
    h.wait_until(lambda: c.get("/v1/services/orders")[0] == 200, 20, what="service synced")
    return c


def rewrite(c, **changes):
    with open(c.config_path) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(c.config_path, "w") as f:
        json.dump(cfg, f)
    c.proc.signal(signal.SIGHUP)


@test
def reload_applies():
    c = controller()
    tokens = [t for t in h.TOKENS if t["name"] != "ops"] + [
        {"name": "ops2", "token": NEW_TOKEN, "role": "operator"}]
    rewrite(c, regions=[{"name": "eu", "priority": 1}, {"name": "us", "priority": 7}],
            tokens=tokens)
    h.wait_until(lambda: c.get("/v1/regions")[1]["regions"][1]["priority"] == 7, 10,
                 what="the new priority")
    assert c.get("/v1/status", token=NEW_TOKEN)[0] == 200
    assert c.get("/v1/status", token=h.OPERATOR_TOKEN)[0] == 401
    assert "configuration reloaded" in c.proc.log_text()
    assert c.proc.alive()


@test
def invalid_is_refused():
    c = controller()
    rewrite(c, lease_ttl_ms="soon")
    h.wait_until(lambda: "configuration not reloaded" in c.proc.log_text(), 10,
                 what="the refusal in the log")
    assert "lease_ttl_ms" in c.proc.log_text()
    assert c.get("/v1/status", token=h.OPERATOR_TOKEN)[0] == 200
    assert c.proc.alive()


@test
def unsafe_is_refused():
    c = controller()
    rewrite(c, services=[service(["us"]) | {"primary_region": "us"}])
    h.wait_until(lambda: "configuration not reloaded: unsafe" in c.proc.log_text(), 10,
                 what="the refusal in the log")
    assert "orders-eu" in c.proc.log_text()
    code, svc = c.get("/v1/services/orders")
    assert code == 200 and len(svc["members"]) == 0 or svc["primary_region"] == "eu", svc
    code, regions = c.get("/v1/regions")
    assert [r["name"] for r in regions["regions"]] == ["eu", "us"], regions


if __name__ == "__main__":
    h.run_all()
