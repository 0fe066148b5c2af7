# meridian-test: e2e
"""Failsafe and self-fencing with the real controllers (docs/design.md, fencing
and failsafe), three regions on loopback with their own store:

  store_outage_keeps_writes   the store stops: controllers answer
                              recorded:false, the primary stays writable on
                              its peer leases; then one replica's agent is
                              SIGSTOPped as well: the primary loses a lease
                              and fences itself (read-only); once the
                              store and the peer are back, the leader
                              unfences it (no failover)
  controllers_gone            every controller and one replica agent
                              SIGSTOPped: the primary fences itself
"""

import time

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


def writes_ok(d):
    try:
        d.pg["eu"].sql("INSERT INTO writes (id) VALUES (%s)", (int(time.time() * 1e6),))
        return True
    except Exception:
        return False


def deployment():
    store = h.PgCluster.create("store")
    d = Deployment(profile="fast", store=store.conninfo(dbname="postgres"))
    d.wait_ready()
    return d, store


@test
def store_outage_keeps_writes():
    d, store = deployment()
    store.stop()
    h.wait_until(lambda: d.leader_or_none() is None, 20, what="no leader without a store")
    # Several isolation timeouts pass: the peer leases keep the primary writable.
    deadline = time.monotonic() + 3 * d.isolation_ms / 1000.0
    while time.monotonic() < deadline:
        assert writes_ok(d), "the primary stopped taking writes during a store outage"
        time.sleep(0.2)
    assert d.writable() == ["eu"], d.writable()
    # One peer stops answering: no recorded contact and a lease missing.
    d.agents["us"].sigstop()
    h.wait_until(lambda: not writes_ok(d), 10 + d.isolation_ms / 1000.0,
                 what="the primary fenced itself")
    assert "isolated: fencing the primary" in d.agents["eu"].proc.log_text()
    assert d.writable() == [], d.writable()
    d.agents["us"].sigcont()
    store.start()
    # Heard from again, the self-fenced primary is unfenced by the leader
    # (no failover: it is still the store's primary in the current epoch).
    h.wait_until(lambda: writes_ok(d), 30, what="the primary unfenced after the outage")
    # every controller answers from the store again once its own connection
    # is back (each reconnects on its own backoff, up to 5 s after the store)
    h.wait_until(lambda: all(c.get("/v1/services/orders")[0] == 200 for c in d.controllers()),
                 15, what="every controller reading the store again")
    assert d.service()["primary_region"] == "eu"
    assert d.latest_operation() is None, d.latest_operation()


@test
def controllers_gone():
    d, _store = deployment()
    for c in d.controllers():
        c.sigstop()
    d.agents["ap"].sigstop()
    h.wait_until(lambda: not writes_ok(d), 10 + d.isolation_ms / 1000.0,
                 what="the primary fenced itself")
    assert "isolated: fencing the primary" in d.agents["eu"].proc.log_text()
    assert d.writable() == [], d.writable()
    d.agents["ap"].sigcont()
    for c in d.controllers():
        c.sigcont()
    h.wait_until(lambda: writes_ok(d), 30, what="the primary unfenced after the outage")
    assert d.service()["primary_region"] == "eu"


if __name__ == "__main__":
    h.run_all()
