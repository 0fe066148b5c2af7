# meridian-test: e2e
"""End to end (tests/integration/mrd_deploy.py): a store of two PostgreSQL
hosts, reached by every controller through one multi-host conninfo with
target_session_attrs=read-write, fails over.

  sync_store_primary_killed
      primary + synchronous standby (synchronous_standby_names). A writer
      runs; a switchover moves the service to epoch 2; the store's primary is
      SIGKILLed and its standby promoted (pg_promote). The controllers find
      the new store primary by themselves, a leader is agreed again with a
      term not below the last one, the service is still in epoch 2 with us
      primary, a switchover to ap then works (epoch 3), and no
      acknowledged write is missing.

  async_store_loses_an_epoch
      primary + asynchronous standby. The standby's WAL receiver is cut, the
      leader controller is killed (a new leader term the standby never
      sees), a switchover to us completes on the store's primary (epoch 2:
      every agent saw it), then the primary is killed and the stale standby
      promoted: the store shows epoch 1, eu primary, no operation, the first
      term. The controllers' next term is above the second. The
      leader detects the agents' higher epoch (an alert event and metrics),
      decides nothing until it moved the store's epoch to 2 with us primary
      (an event, under a term above every term held before), and the next
      switchover gets epoch 3. Its command ids differ from every id of the
      lost switchover (which the agents remember in their epoch files), its
      fence is executed (not answered from the file), and it completes.
"""

import json
import os
import urllib.request

import meridian_harness as h
from mrd_deploy import Deployment

test = h.test


def make_store(tmp, sync):
    """Two store hosts: a primary and a streaming standby (synchronous if
    sync). Returns (primary, standby, conninfo of both, read-write)."""
    a = h.PgCluster.create("store-a", tmp)
    b = a.make_replica("store-b")
    if sync:
        # on the primary only (postgresql.auto.conf is not in b's copy): once
        # b is promoted, nothing waits for a standby that does not exist
        a.sql("ALTER SYSTEM SET synchronous_standby_names = '\"store-b\"'")
        a.sql("SELECT pg_reload_conf()")
        h.wait_until(lambda: any(r[0] == "store-b" and r[1] == "sync" for r in a.sql(
            "SELECT application_name, sync_state FROM pg_stat_replication")), 30,
            what="store-b a synchronous standby")
    a.sql("CREATE DATABASE meridian")
    conninfo = ("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=meridian "
                "target_session_attrs=read-write connect_timeout=2" % (a.port, b.port))
    return a, b, conninfo


def switchover(d, to, timeout_s=90):
    """Starts a switchover through the leader (retrying refusals while the
    leader's view settles) and waits for it to end. Returns the operation."""
    def start():
        try:
            code, res = h.http_json("POST", d.leader(10).url + "/v1/services/orders/switchover",
                                    {"to": to}, h.OPERATOR_TOKEN)
        except (OSError, h.HarnessError):
            return None
        if code == 202:
            return res["operation"]
        h.log("switchover refused for now: %s %s" % (code, res))
        return None
    op_id = h.wait_until(start, 60, interval_s=0.5, what="a switchover to %s accepted" % to)
    op = d.wait_op(op_id, timeout_s)
    assert op["step"] == "done", "switchover to %s ended in %s: %s" % (to, op["step"], op)
    return op


def wait_streaming(d, region, primary, timeout_s=60):
    """The next switchover's target must follow the new primary first (the
    follow command of the last switchover reloads its primary_conninfo)."""
    lsn = d.pg[primary].current_lsn()

    def caught_up():
        return (d.pg[region].replay_lsn() or 0) >= lsn
    try:
        h.wait_until(caught_up, timeout_s, interval_s=0.2,
                     what="%s replaying from %s" % (region, primary))
    except h.WaitTimeout:
        h.log("%s WAL receiver: %s" % (region, d.pg[region].sql(
            "SELECT status, sender_port, received_tli, latest_end_lsn FROM pg_stat_wal_receiver")))
        raise


def events(d):
    code, body = d.any_controller().get("/v1/events?limit=1000")
    assert code == 200, body
    return body["events"]


def metrics(ctl):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(ctl.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("meridian_store_epoch") and 'service="orders"' in line:
            out[line.split("{")[0]] = float(line.split()[-1])
    return out


def agent_command_ids(d):
    """Every command id the agents remember (their epoch files)."""
    ids = {}
    for r, a in d.agents.items():
        with open(os.path.join(a.state_dir, "epochs.json")) as f:
            for c in json.load(f).get("commands", []):
                ids[c["id"]] = r
    return ids


def store_commands(pg):
    return {row[0]: row[1:] for row in pg.sql(
        "SELECT id, node, kind, epoch, status FROM meridian.commands", dbname="meridian")}


def wait_store_recovered(d, store, old_term):
    """The controllers reconnect to the new store primary and agree on a
    leader whose term is not below old_term and is the one the new store's
    lease row holds (a leader of the old store may still claim its lease
    for a moment: it steps down on its own clock). Returns (leader, term)."""
    h.wait_until(lambda: all(c.status()["store"]["connected"] for c in d.controllers()
                             if c.alive()), 60,
                 what="every controller connected to the store again")

    def agreed():
        r = h.agreed_leader(d.controllers())
        if r is None or r[1] < old_term:
            return None
        row = store.sql("SELECT holder, term FROM meridian.lease", dbname="meridian")[0]
        return r if (r[0].name, r[1]) == tuple(row) else None
    return h.wait_until(agreed, 60, interval_s=0.1,
                        what="a leader agreed on in the new store's term")


@test
def sync_store_primary_killed():
    tmp = h.TempDir("store-sync")
    a, b, store = make_store(tmp, sync=True)
    d = Deployment(profile="default", tmp=tmp, store=store)
    d.wait_ready()
    d.writer_start()
    op1 = switchover(d, "us")
    assert op1["epoch"] == 2, op1
    _, term1 = h.wait_for_leader(d.controllers(), 30)
    svc = d.service()
    assert svc["epoch"] == 2 and svc["primary_region"] == "us", svc

    h.log("SIGKILL the store's primary, promote its synchronous standby")
    a.kill9()
    b.promote()
    leader, term2 = wait_store_recovered(d, b, term1)
    h.log("leader %s in term %s after the store failover (term %s before)"
          % (leader.name, term2, term1))
    assert term2 >= term1, (term1, term2)
    # nothing of the committed state went back
    svc = d.service()
    assert svc["epoch"] == 2 and svc["primary_region"] == "us", svc
    assert svc.get("epoch_guard") is None, svc

    wait_streaming(d, "ap", "us")
    op2 = switchover(d, "ap")
    assert op2["epoch"] == 3, op2
    assert int(op2["id"]) > int(op1["id"]), (op1["id"], op2["id"])
    h.wait_until(lambda: d.writes and d.writes[-1][2] == d.pg["ap"].port, 30,
                 what="writes acknowledged by ap")
    d.writer_stop()
    svc = d.service()
    assert svc["epoch"] == 3 and svc["primary_region"] == "ap", svc
    assert d.writable() == ["ap"], d.writable()
    lost = d.lost_writes("ap")
    assert not lost, "acknowledged writes lost: %s" % lost[:10]
    # the synchronous standby had everything: no epoch was ever behind
    assert not [e for e in events(d) if e["kind"] == "store.epoch_catchup"]
    m = metrics(d.leader())
    assert m.get("meridian_store_epoch_behind_total") == 0, m
    h.log("%d writes, %d errors, none lost; terms %s -> %s"
          % (len(d.writes), d.write_errors, term1, term2))


@test
def async_store_loses_an_epoch():
    tmp = h.TempDir("store-async")
    a, b, store = make_store(tmp, sync=False)
    d = Deployment(profile="default", tmp=tmp, store=store)
    d.wait_ready()
    assert d.service()["epoch"] == 1

    h.log("cut the store standby off its primary's WAL")
    b.stop_wal_receiver()
    # a new leader tenure that only the store's primary records: the
    # standby's lease row stays in the first term
    old_leader, first_term = h.wait_for_leader(d.controllers(), 30)
    old_leader.kill9()
    h.wait_for_leader(d.controllers(), 60, min_term=first_term)
    op1 = switchover(d, "us")
    assert op1["epoch"] == 2, op1
    # every agent saw epoch 2 (commands, answers) before the store fails
    h.wait_until(lambda: all(m["epoch_seen"] == 2 for m in d.members().values()), 30,
                 what="every member reports epoch 2")
    lost_ids = store_commands(a)
    assert lost_ids, "the switchover issued no command"
    _, term1 = h.wait_for_leader(d.controllers(), 30)
    term_max = a.sql_value("SELECT term FROM meridian.lease", dbname="meridian")

    h.log("SIGKILL the store's primary, promote the stale standby")
    a.kill9()
    b.promote()
    assert b.sql_value("SELECT epoch FROM meridian.services WHERE name = 'orders'",
                       dbname="meridian") in (1, 2)
    leader, term2 = wait_store_recovered(d, b, term1)
    h.log("leader %s in term %s after the store failover (term %s, row %s before)"
          % (leader.name, term2, term1, term_max))
    # the standby's row says first_term: without the controllers' memory the
    # next tenure would get first_term + 1, a term already held
    assert b.sql_value("SELECT term FROM meridian.lease", dbname="meridian") == term2
    assert term2 > term_max > first_term, "a term was handed out again: %s <= %s" % (
        term2, term_max)

    # the leader caught the store up before deciding anything
    def caught_up():
        svc = d.service()
        return svc if svc["epoch"] == 2 and svc.get("epoch_guard") is None else None
    svc = h.wait_until(caught_up, 60, interval_s=0.2, what="the store's epoch back at 2")
    assert svc["primary_region"] == "us", svc
    ev = events(d)
    alerts = [e for e in ev if e["kind"] == "alert"
              and (e["detail"] or {}).get("reason") == "store_epoch_behind"]
    catchups = [e for e in ev if e["kind"] == "store.epoch_catchup"]
    assert alerts and catchups, [(e["kind"], e["message"]) for e in ev]
    assert alerts[0]["detail"]["reported_epoch"] == 2, alerts[0]
    c = catchups[0]
    assert c["detail"]["reported_epoch"] == 2 and c["detail"]["primary"] == "orders-us", c
    assert c["term"] == term2 or c["term"] > term_max, (c, term2, term_max)
    # nothing was decided before the catch-up
    assert not [e for e in ev if e["kind"].startswith("operation.") and e["id"] < c["id"]], ev
    # the service may have been read from a follower, which shows no guard:
    # the leader's own gauge clears at its next tick after the catch-up
    m = h.wait_until(lambda: (lambda x: x if x.get("meridian_store_epoch_behind") == 0
                              else None)(metrics(leader)), 15, interval_s=0.2,
                     what="the leader's meridian_store_epoch_behind back at 0")
    assert m.get("meridian_store_epoch_behind_total", 0) >= 1, m
    assert m.get("meridian_store_epoch_catchups_total", 0) >= 1, m

    known = agent_command_ids(d)
    for cid in lost_ids:
        assert cid in known, "agents do not remember %s: %s" % (cid, sorted(known))
    wait_streaming(d, "ap", "us")
    op2 = switchover(d, "ap")
    assert op2["epoch"] == 3, op2
    new_ids = store_commands(b)
    h.log("lost operation %s: %s; new operation %s: %s"
          % (op1["id"], sorted(lost_ids), op2["id"], sorted(new_ids)))
    if str(op2["id"]) == str(op1["id"]):
        h.log("the store handed operation id %s out again" % op2["id"])
    reused = set(new_ids) & set(lost_ids)
    assert not reused, "command ids reused: %s" % sorted(reused)
    for cid, (node, kind, epoch, status) in new_ids.items():
        assert epoch == 3 and status != "refused", (cid, node, kind, epoch, status)
    done = {(kind, node) for cid, (node, kind, epoch, status) in new_ids.items()
            if status == "done"}
    assert ("fence", "node-us") in done and ("promote", "node-ap") in done, new_ids
    svc = d.service()
    assert svc["epoch"] == 3 and svc["primary_region"] == "ap", svc
    assert d.writable() == ["ap"], d.writable()


if __name__ == "__main__":
    h.run_all()
