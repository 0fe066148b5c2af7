"""Leader election of meridian-controller through the store's lease row.

Each test runs three controllers (regions eu, us, ap) against a fresh
database of a PostgreSQL cluster that this file starts for itself (so the
store can be stopped and started without disturbing the shared server), with
a LeaderChecker watching every controller and the lease row throughout: no
two controllers may ever claim leadership at once, and no controller may
claim a term older than one already seen.

  migrations         migrate from an empty database, then again: idempotent
  one leader         three controllers started at once agree on one leader
  SIGKILL            the leader dies: a new leader with a higher term
  SIGSTOP            the leader freezes past its TTL: another takes over, and
                     on SIGCONT the old one is a follower whose guarded
                     write the store refuses
  store restart      /v1/ready goes 503 then 200, a leader exists again, the
                     controllers were never restarted

Timing figures are printed, never asserted: waits are bounded with room for
a loaded machine.
"""

import os
import re
import time

from meridian_harness import (PgCluster, Controller, LeaderChecker, TempDir, fixture, test,
                              run_all, wait_until, wait_for_leader, agreed_leader, log,
                              require_env, source_dir, HarnessError)

TTL_MS = 2000
RENEW_MS = TTL_MS / 3            # the controller renews every TTL/3
TTL = TTL_MS / 1000.0
RENEW = RENEW_MS / 1000.0
SLACK = 8.0                      # room for a loaded 2-core machine
REGIONS = ("eu", "us", "ap")


@fixture
def store():
    """The store cluster shared by the tests of this file."""
    require_env("MERIDIAN_BUILD_DIR")
    return PgCluster.create("store")


def fresh_db(tag):
    return store().create_database("le_" + tag)


def make_controllers(conninfo, tmp, start=True):
    """Three controllers, one per region, started at once (no waiting
    between starts), then waited for health."""
    ctls = [Controller("ctl-" + r, r, conninfo, tmp=tmp, lease_ttl_ms=TTL_MS,
                       extra={"debug_endpoints": True}) for r in REGIONS]
    if start:
        for c in ctls:
            c.start(wait_healthy=False)
        for c in ctls:
            wait_until(c._healthy_or_dead, 20, what="%s /v1/health" % c.name)
    return ctls


def lease_row(conninfo_db):
    rows = store().sql("SELECT holder, term, expires_at > now() FROM meridian.lease",
                       dbname=conninfo_db)
    assert len(rows) == 1, "meridian.lease has %d rows" % len(rows)
    return rows[0]


def schema_snapshot(db):
    """Tables, columns and functions of schema meridian, to compare runs."""
    return store().sql(
        "SELECT 'col', c.relname || '.' || a.attname || ':' || format_type(a.atttypid, "
        "a.atttypmod) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'meridian' "
        "AND a.attnum > 0 AND NOT a.attisdropped "
        "UNION ALL SELECT 'fn', p.proname || '(' || pg_get_function_identity_arguments(p.oid) "
        "|| ')' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = 'meridian' "
        "UNION ALL SELECT 'trg', tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'meridian' "
        "AND NOT t.tgisinternal ORDER BY 1, 2", dbname=db)


@test
def test_migrations_from_empty_and_rerun():
    db = "le_migrate"
    conninfo = store().create_database(db)
    tmp = TempDir("migrate")
    ctl = Controller("ctl-migrate", "eu", conninfo, tmp=tmp, lease_ttl_ms=TTL_MS)
    assert store().sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'meridian'",
                       dbname=db)[0][0] == 0, "the database is not empty"

    out1 = ctl.migrate()
    log("first migrate: %s" % out1.stdout.strip().replace("\n", " | "))
    versions1 = store().sql("SELECT version FROM meridian.schema_migrations ORDER BY version",
                            dbname=db)
    snap1 = schema_snapshot(db)

    out2 = ctl.migrate()
    log("second migrate: %s" % out2.stdout.strip().replace("\n", " | "))
    versions2 = store().sql("SELECT version FROM meridian.schema_migrations ORDER BY version",
                            dbname=db)
    dup = store().sql("SELECT version, count(*) FROM meridian.schema_migrations "
                      "GROUP BY version HAVING count(*) <> 1", dbname=db)
    assert not dup, "versions recorded more than once: %s" % dup
    assert versions1 == versions2, "second run changed versions: %s -> %s" % (versions1,
                                                                              versions2)
    assert schema_snapshot(db) == snap1, "second run changed the schema"

    # every file of sql/ is applied, once, under its number
    sql_dir = os.path.join(source_dir(), "sql")
    files = sorted(f for f in os.listdir(sql_dir) if re.match(r"^\d+_.*\.sql$", f))
    assert files, "no migrations in %s" % sql_dir
    expect = [int(f.split("_", 1)[0]) for f in files]
    got = [v[0] for v in versions2]
    assert got == expect, "applied versions %s, files %s" % (got, files)

    # the lease row exists, with no holder yet
    holder, term, valid = lease_row(db)
    assert not valid, "fresh lease row already valid: holder %s term %s" % (holder, term)
    log("migrations applied: %s" % got)


@test
def test_three_controllers_elect_one_leader():
    db = "le_one"
    conninfo = fresh_db("one")
    tmp = TempDir("one-leader")
    ctls = make_controllers(conninfo, tmp)
    checker = LeaderChecker(conninfo, ctls)
    t0 = time.monotonic()
    leader, term = wait_for_leader(ctls, 3 * TTL + SLACK)
    log("leader %s term %d after %.2f s" % (leader.name, term, time.monotonic() - t0))

    # the store agrees, and the leadership is stable over two TTLs
    holder, sterm, valid = lease_row(db)
    assert (holder, sterm, valid) == (leader.name, term, True), \
        "store lease %s/%s/%s, controllers say %s/%s" % (holder, sterm, valid, leader.name, term)
    end = time.monotonic() + 2 * TTL
    while time.monotonic() < end:
        r = agreed_leader(ctls)
        assert r is not None and r == (leader, term), "leadership moved: %r" % (r,)
        time.sleep(0.1)
    for c in ctls:
        st = c.status()
        assert st["controller"]["is_leader"] == (c is leader), st
        assert st["controller"]["region"] == c.region and st["controller"]["url"] == c.url, st
        assert st["leader"]["name"] == leader.name and st["leader"]["region"] == leader.region
        assert st["leader"]["url"] == leader.url and st["leader"]["term"] == term, st
        assert st["store"]["connected"] is True and st["store"]["migrated"] is True, st
        wait_until(lambda: c.ready_code() == 200, SLACK, what="%s /v1/ready" % c.name)
    # viewers read, anonymous callers do not
    code, _ = leader.get("/v1/status", token=None)
    assert code == 401, "GET /v1/status without a token: %s" % code
    checker.assert_ok()


@test
def test_sigkill_leader_elects_higher_term():
    conninfo = fresh_db("kill")
    tmp = TempDir("sigkill")
    ctls = make_controllers(conninfo, tmp)
    checker = LeaderChecker(conninfo, ctls)
    leader, term = wait_for_leader(ctls, 3 * TTL + SLACK)
    time.sleep(RENEW)  # let a renewal or two happen: a leader in its stride
    leader, term = wait_for_leader(ctls, SLACK)
    log("leader %s term %d: SIGKILL" % (leader.name, term))
    t0 = time.monotonic()
    leader.kill9()
    others = [c for c in ctls if c is not leader]
    new, new_term = wait_for_leader(others, TTL + RENEW + SLACK, min_term=term)
    dt = time.monotonic() - t0
    log("new leader %s term %d after %.2f s (TTL %.2f s + one renewal %.2f s = %.2f s: %s)"
        % (new.name, new_term, dt, TTL, RENEW, TTL + RENEW,
           "within" if dt <= TTL + RENEW else "LATER than that"))
    assert new_term > term

    # the killed controller comes back as a follower of the new leader
    leader.start()
    wait_until(lambda: agreed_leader(ctls) == (new, new_term), TTL + SLACK,
               what="restarted %s to follow %s" % (leader.name, new.name))
    checker.assert_ok(min_claims=2)


@test
def test_sigstop_leader_is_deposed_and_cannot_write():
    db = "le_stop"
    conninfo = fresh_db("stop")
    tmp = TempDir("sigstop")
    ctls = make_controllers(conninfo, tmp)
    checker = LeaderChecker(conninfo, ctls)
    wait_for_leader(ctls, 3 * TTL + SLACK)
    time.sleep(1.5 * RENEW)  # a leader in its stride, seen leading by the checker
    old, term = wait_for_leader(ctls, SLACK)
    code, body = old.post("/v1/debug/guarded-write")
    assert code == 200 and (body or {}).get("written") is True, \
        "guarded write by the leader: %s %s" % (code, body)

    log("leader %s term %d: SIGSTOP" % (old.name, term))
    t0 = time.monotonic()
    old.sigstop()
    try:
        others = [c for c in ctls if c is not old]
        new, new_term = wait_for_leader(others, TTL + RENEW + SLACK, min_term=term)
        log("new leader %s term %d after %.2f s" % (new.name, new_term, time.monotonic() - t0))
        # stay stopped for well over a TTL in all
        time.sleep(max(0.0, t0 + 1.5 * TTL - time.monotonic()))
    finally:
        old.sigcont()
    log("SIGCONT %s after %.2f s" % (old.name, time.monotonic() - t0))

    # its very first answer after waking up must not claim leadership
    st = old.status()
    assert st["controller"]["is_leader"] is False, "deposed leader still claims: %s" % st
    code, body = old.post("/v1/debug/guarded-write")
    assert code == 409 and (body or {}).get("error", {}).get("code") == "not_leader", \
        "guarded write by the deposed leader: %s %s" % (code, body)
    # and it never claims leadership again while the new leader lives
    end = time.monotonic() + TTL
    while time.monotonic() < end:
        assert not old.status()["controller"]["is_leader"], "deposed leader claims again"
        time.sleep(0.05)
    wait_until(lambda: agreed_leader(ctls) == (new, new_term), SLACK,
               what="%s to follow %s" % (old.name, new.name))
    code, body = new.post("/v1/debug/guarded-write")
    assert code == 200 and (body or {}).get("written") is True, \
        "guarded write by the new leader: %s %s" % (code, body)

    # the store holds the old leader's write in its own term only, none later
    rows = store().sql("SELECT term, message FROM meridian.events WHERE kind = 'debug' "
                       "ORDER BY id", dbname=db)
    log("debug writes in the store: %s" % rows)
    by_old = [r for r in rows if r[1].endswith(" " + old.name)]
    by_new = [r for r in rows if r[1].endswith(" " + new.name)]
    assert [r[0] for r in by_old] == [term], "writes by %s: %s" % (old.name, by_old)
    assert [r[0] for r in by_new] == [new_term], "writes by %s: %s" % (new.name, by_new)
    checker.assert_ok(min_claims=2)


@test
def test_store_restart_under_running_controllers():
    db = "le_restart"
    conninfo = fresh_db("restart")
    tmp = TempDir("store-restart")
    ctls = make_controllers(conninfo, tmp)
    pids = [c.proc.pid for c in ctls]
    checker = LeaderChecker(conninfo, ctls)
    wait_for_leader(ctls, 3 * TTL + SLACK)
    for c in ctls:
        wait_until(lambda: c.ready_code() == 200, SLACK, what="%s ready" % c.name)
    time.sleep(1.5 * RENEW)
    leader, term = wait_for_leader(ctls, SLACK)

    log("leader %s term %d: stopping the store" % (leader.name, term))
    t0 = time.monotonic()
    store().stop("fast")
    try:
        for c in ctls:
            wait_until(lambda: c.ready_code() == 503, TTL + SLACK,
                       what="%s /v1/ready to answer 503" % c.name)
        log("all controllers not ready %.2f s after the stop" % (time.monotonic() - t0))
        # without the store nobody can renew: the leader steps down on its own clock
        wait_until(lambda: not any(c.is_leader() for c in ctls), TTL + SLACK,
                   what="the leader to step down without its store")
        log("no leader %.2f s after the stop" % (time.monotonic() - t0))
        for c in ctls:
            st = c.status()
            assert st["store"]["connected"] is False, "%s: %s" % (c.name, st)
    finally:
        if not store().running():
            store().start()
    t1 = time.monotonic()
    log("store started again")
    for c in ctls:
        wait_until(lambda: c.ready_code() == 200, SLACK + 5,
                   what="%s /v1/ready to answer 200 again" % c.name)
    log("all controllers ready %.2f s after the store restart" % (time.monotonic() - t1))
    new, new_term = wait_for_leader(ctls, 3 * TTL + SLACK)
    log("leader %s term %d %.2f s after the store restart" % (new.name, new_term,
                                                              time.monotonic() - t1))
    assert new_term > term, "term %d after the outage, %d before" % (new_term, term)
    assert [c.proc.pid for c in ctls] == pids and all(c.alive() for c in ctls), \
        "a controller was restarted or died"
    checker.assert_ok(min_claims=2)


if __name__ == "__main__":
    run_all()
