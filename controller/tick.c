/*
 * The leader's tick: read a snapshot of the store, build a view per
 * service, decide, and drive running operations one step at a time.
 *
 * Order of every tick (leader only, one at a time):
 *   1. one query returns the whole snapshot as JSON (services, members,
 *      nodes of members, running operations and their commands) with the
 *      store's clock, so every time below is on that one clock;
 *   2. per service with a running operation: gather the facts
 *      (mrd_op_inputs), call mrd_op_advance(); on a move, persist the new
 *      state, the epoch or primary change, the step rows, the commands of
 *      the new step and an event in ONE statement guarded by
 *      meridian.is_leader(); only after it committed are drivers called;
 *   3. per service without one: mrd_decide(); a failover decision creates
 *      an operation (guarded, and only if the epoch did not move), alerts
 *      become events when their reason changes.
 * A crash anywhere leaves the store with the last persisted step; a new
 * leader re-reads it and re-issues that step's commands (same ids, so no
 * agent executes one twice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "controller.h"
#include "epoch_guard.h"
#include "meridian/error.h"
#include "meridian/json_async.h"

static const char *snapshot_sql =
    "SELECT json_build_object("
    " 'now_ms', (extract(epoch FROM clock_timestamp()) * 1000)::bigint,"
    " 'services', (SELECT coalesce(json_agg(json_build_object('name', s.name,"
    "   'primary_region', s.primary_region, 'primary_member', s.primary_member,"
    "   'epoch', s.epoch, 'maintenance', s.maintenance,"
    "   'last_failover_ms', (extract(epoch FROM s.last_failover_at) * 1000)::bigint)), '[]')"
    "   FROM meridian.services s),"
    /* each member with what its node says: a warning check, its API URL */
    " 'members', (SELECT coalesce(json_agg(json_build_object('service', m.service,"
    "   'name', m.name, 'node', m.node, 'region', m.region, 'role', m.role,"
    "   'fenced', m.fenced, 'healthy', m.healthy, 'position', m.position,"
    "   'receive_position', m.receive_position, 'replay_position', m.replay_position,"
    "   'lag_bytes', m.lag_bytes, 'lag_ms', m.lag_ms, 'epoch_seen', m.epoch_seen,"
    "   'last_seen_ms', (extract(epoch FROM m.last_seen) * 1000)::bigint,"
    "   'leases_required', m.leases_required, 'leases_held', m.leases_held,"
    "   'api_url', n.api_url, 'warning', n.checks @> '[{\"status\": \"warning\"}]')), '[]')"
    "   FROM meridian.members m LEFT JOIN meridian.nodes n ON n.name = m.node"
    "   WHERE m.service IN (SELECT name FROM meridian.services)),"
    /* what each region's nodes last said of another region: when a node that
     * probed it ok, and one that probed it failing, last reported */
    " 'probes', (SELECT coalesce(json_agg(json_build_object('from', x.from_region,"
    "   'about', x.about, 'up_ms', x.up_ms, 'down_ms', x.down_ms)), '[]')"
    "   FROM (SELECT n.region AS from_region, p->>'region' AS about,"
    "    max((extract(epoch FROM n.last_seen) * 1000)::bigint)"
    "     FILTER (WHERE (p->>'ok')::boolean) AS up_ms,"
    "    max((extract(epoch FROM n.last_seen) * 1000)::bigint)"
    "     FILTER (WHERE NOT (p->>'ok')::boolean) AS down_ms"
    "    FROM meridian.nodes n, jsonb_array_elements(n.probes) p"
    "    WHERE n.probes <> '[]' GROUP BY 1, 2) x),"
    " 'operations', (SELECT coalesce(json_agg(json_build_object('id', o.id, 'service', o.service,"
    "   'step', o.step, 'state', o.state)), '[]')"
    "   FROM meridian.operations o WHERE o.finished_at IS NULL),"
    " 'commands', (SELECT coalesce(json_agg(json_build_object('id', c.id, 'kind', c.kind,"
    "   'node', c.node, 'epoch', c.epoch, 'status', c.status, 'result', c.result,"
    "   'operation_id', c.operation_id)), '[]')"
    "   FROM meridian.commands c JOIN meridian.operations o ON o.id = c.operation_id"
    "   WHERE o.finished_at IS NULL),"
    /* the newest finished op of a service, done with its rejoin pending: its
     * old primary may come back having written (diverge.c); among the 200
     * newest ops, through the primary key */
    " 'diverge_watch', (SELECT coalesce(json_agg(json_build_object('id', o.id,"
    "   'service', o.service, 'state', o.state, 'commands', (SELECT coalesce(json_agg("
    "    json_build_object('id', c.id, 'status', c.status, 'result', c.result)), '[]')"
    "    FROM meridian.commands c WHERE c.operation_id = o.id AND c.kind IN ('fence', 'rejoin')))),"
    "   '[]')"
    "   FROM meridian.operations o JOIN meridian.services s ON s.name = o.service"
    "    AND s.epoch = o.epoch"
    "   WHERE o.id > (SELECT coalesce(max(id), 0) - 200 FROM meridian.operations)"
    "    AND o.finished_at IS NOT NULL AND o.step = 'done'"
    "    AND (o.state->>'rejoin_pending')::boolean"
    "    AND NOT EXISTS (SELECT 1 FROM meridian.members m WHERE m.service = o.service"
    "     AND m.node = o.state->>'from_node' AND m.role = 'replica'"
    "     AND m.epoch_seen >= o.epoch)))";

static uint64_t jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
    if (json_is_real(v))
        return json_real_value(v) > 0 ? (uint64_t)json_real_value(v) : 0;
    return 0;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static json_t *find_by(json_t *array, const char *k1, const char *v1, const char *k2,
                       const char *v2)
{
    size_t i;
    json_t *e;
    json_array_foreach(array, i, e)
    {
        if (strcmp(jstr(e, k1), v1) == 0 && (k2 == NULL || strcmp(jstr(e, k2), v2) == 0))
            return e;
    }
    return NULL;
}

/* ---- the snapshot's index ---------------------------------------------------
 * Views are built per service from one snapshot that lists the rows of all
 * services; scanning them per service was quadratic (1,000 services with
 * 10,000 members took the whole core). snapshot_index() adds, once per
 * snapshot, "ix_services" (name -> row), "ix_members" (service -> name ->
 * row) and "ix_nodes" (node name -> one of its member rows, which carry the
 * node's api_url and warning). They hold references to the same rows and go
 * with the snapshot. */

static void snapshot_index(json_t *snap)
{
    json_t *services = json_object(), *members = json_object(), *nodes = json_object();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(snap, "services"), i, e)
        json_object_set(services, jstr(e, "name"), e);
    json_array_foreach(json_object_get(snap, "members"), i, e)
    {
        json_t *by_name = json_object_get(members, jstr(e, "service"));
        if (by_name == NULL) {
            by_name = json_object();
            json_object_set_new(members, jstr(e, "service"), by_name);
        }
        json_object_set(by_name, jstr(e, "name"), e);
        json_object_set(nodes, jstr(e, "node"), e);
    }
    json_object_set_new(snap, "ix_services", services);
    json_object_set_new(snap, "ix_members", members);
    json_object_set_new(snap, "ix_nodes", nodes);
}

static json_t *snap_member(json_t *snap, const char *service, const char *name)
{
    return json_object_get(json_object_get(json_object_get(snap, "ix_members"), service), name);
}

const char *mrd__snapshot_node_url(mrd_ctl *ctl, const char *node)
{
    return json_string_value(json_object_get(
        json_object_get(json_object_get(ctl->snapshot, "ix_nodes"), node), "api_url"));
}

json_t *mrd__snapshot_member(mrd_ctl *ctl, const char *service, const char *member)
{
    return snap_member(ctl->snapshot, service, member);
}

json_t *mrd__snapshot_service(mrd_ctl *ctl, const char *name)
{
    return json_object_get(json_object_get(ctl->snapshot, "ix_services"), name);
}

static json_t *snap_node(json_t *snap, const char *name)
{
    return json_object_get(json_object_get(snap, "ix_nodes"), name);
}

static mrd_role role_of(const char *s)
{
    mrd_role r;
    return mrd_role_parse(s, &r) == 0 ? r : MRD_ROLE_UNKNOWN;
}

/* What the probes of one region say about another: up when a node of it
 * that probed the other region ok reported within fresh_ms, else down when
 * one that probed it failing did, else unknown; *at is the newest of those
 * reports. The snapshot's "probes" has, per pair of regions, when a node
 * last reported each (the store aggregates every node's probes). */
static mrd_verdict region_verdict(json_t *snap, const char *from, const char *about, uint64_t now,
                                  uint32_t fresh_ms, uint64_t *at)
{
    size_t i;
    json_t *p;
    *at = 0;
    json_array_foreach(json_object_get(snap, "probes"), i, p)
    {
        if (strcmp(jstr(p, "from"), from) != 0 || strcmp(jstr(p, "about"), about) != 0)
            continue;
        uint64_t up = jint(p, "up_ms"), down = jint(p, "down_ms");
        int up_fresh = up > 0 && up + fresh_ms >= now;
        int down_fresh = down > 0 && down + fresh_ms >= now;
        if (up_fresh)
            *at = up;
        if (down_fresh && down > *at)
            *at = down;
        if (up_fresh)
            return MRD_VERDICT_UP;
        return down_fresh ? MRD_VERDICT_DOWN : MRD_VERDICT_UNKNOWN;
    }
    return MRD_VERDICT_UNKNOWN;
}

static int node_has_warning(json_t *snap, const char *node)
{
    return json_is_true(json_object_get(snap_node(snap, node), "warning"));
}

int mrd__view_build(mrd_ctl *ctl, const mrd__service *s, mrd_view *v, uint64_t *now_ms)
{
    json_t *snap = ctl->snapshot;
    memset(v, 0, sizeof(*v));
    json_t *row = json_object_get(json_object_get(snap, "ix_services"), s->name);
    if (row == NULL)
        return MRD_ENOTFOUND;
    uint64_t now = jint(snap, "now_ms");
    *now_ms = now;
    snprintf(v->service, sizeof(v->service), "%s", s->name);
    v->epoch = jint(row, "epoch");
    snprintf(v->primary_region, sizeof(v->primary_region), "%s", jstr(row, "primary_region"));
    v->maintenance = json_is_true(json_object_get(row, "maintenance"));
    v->last_failover_ms = jint(row, "last_failover_ms");
    const char *pmember = jstr(row, "primary_member");
    for (size_t i = 0; i < ctl->nregions && i < MRD_VIEW_MAX_REGIONS; i++) {
        mrd_view_region *r = &v->regions[v->nregions++];
        snprintf(r->name, sizeof(r->name), "%s", ctl->regions[i].name);
        r->priority = ctl->regions[i].priority;
        if (strcmp(r->name, v->primary_region) != 0)
            r->verdict = region_verdict(snap, r->name, v->primary_region, now,
                                        s->policy.node_timeout_ms, &r->verdict_ms);
    }
    /* The last known position of the primary: what replicas' lag counts from. */
    uint64_t primary_pos = 0;
    for (size_t i = 0; i < s->nmembers; i++) {
        json_t *m = snap_member(snap, s->name, s->members[i].name);
        if (m && strcmp(jstr(m, "role"), "primary") == 0 && jint(m, "position") > primary_pos)
            primary_pos = jint(m, "position");
    }
    for (size_t i = 0; i < s->nmembers && v->nmembers < MRD_VIEW_MAX_MEMBERS; i++) {
        const mrd__member_cfg *mc = &s->members[i];
        mrd_view_member *vm = &v->members[v->nmembers++];
        snprintf(vm->node, sizeof(vm->node), "%s", mc->node);
        snprintf(vm->region, sizeof(vm->region), "%s", mc->region);
        if (strcmp(mc->name, pmember) == 0)
            snprintf(v->primary_node, sizeof(v->primary_node), "%s", mc->node);
        json_t *m = snap_member(snap, s->name, mc->name);
        if (m == NULL) {
            vm->role = MRD_ROLE_UNKNOWN;
            vm->health = MRD_HEALTH_UNKNOWN;
            vm->lag_bytes = MRD_LAG_UNKNOWN;
            vm->lag_ms = MRD_LAG_UNKNOWN;
            continue;
        }
        vm->role = role_of(jstr(m, "role"));
        vm->last_seen_ms = jint(m, "last_seen_ms");
        vm->fenced = json_is_true(json_object_get(m, "fenced"));
        vm->fence_confirmed = vm->fenced && jint(m, "epoch_seen") >= v->epoch;
        if (!json_is_true(json_object_get(m, "healthy")))
            vm->health = MRD_HEALTH_CRITICAL;
        else
            vm->health = node_has_warning(snap, mc->node) ? MRD_HEALTH_WARNING : MRD_HEALTH_PASSING;
        vm->current_pos = jint(m, "position");
        vm->receive_pos = jint(m, "receive_position");
        vm->replay_pos = jint(m, "replay_position");
        if (vm->role == MRD_ROLE_PRIMARY)
            vm->lag_bytes = 0;
        else if (primary_pos == 0)
            vm->lag_bytes = json_is_null(json_object_get(m, "lag_bytes")) ? MRD_LAG_UNKNOWN
                                                                          : jint(m, "lag_bytes");
        else
            vm->lag_bytes = primary_pos > vm->replay_pos ? primary_pos - vm->replay_pos : 0;
        json_t *lm = json_object_get(m, "lag_ms");
        vm->lag_ms = json_is_null(lm) || lm == NULL ? MRD_LAG_UNKNOWN : jint(m, "lag_ms");
        if (vm->role == MRD_ROLE_PRIMARY)
            vm->lag_ms = 0;
    }
    mrd__peers_view(ctl, s, v); /* members outside the primary's lease set */
    return 0;
}

/* ---- events ----------------------------------------------------------- */

static void event_done(int err, PGresult *res, void *data)
{
    (void)data;
    if (err == MRD_EIO)
        mrd_log(MRD_LOG_WARN, "event not written", MRD_S("error", PQresultErrorMessage(res)));
}

void mrd__event(mrd_ctl *ctl, const char *kind, const char *service, const char *actor,
                const char *message, json_t *detail)
{
    char *d = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    char term[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    const char *params[6] = {kind, service, actor, term, message, d ? d : "{}"};
    mrd_pg_query(ctl->pg,
                 "INSERT INTO meridian.events (kind, service, actor, term, message, detail) "
                 "VALUES ($1, NULLIF($2, ''), $3, $4::bigint, $5, $6::jsonb)",
                 6, params, event_done, NULL);
    free(d);
    json_decref(detail);
}

/* ---- operations ------------------------------------------------------- */

typedef struct {
    mrd_ctl *ctl;
    char service[MRD_NAME_MAX];
    mrd_op op;
    mrd_op_transition t;
    mrd__op_created_cb cb;
    void *data;
    int old_fenced;
} op_req;

static const char *cmd_kind(mrd_op_action a)
{
    switch (a) {
    case MRD_ACT_FENCE:
        return "fence";
    case MRD_ACT_UNFENCE:
        return "unfence";
    case MRD_ACT_PROMOTE:
        return "promote";
    case MRD_ACT_REJOIN:
        return "rejoin";
    default:
        return NULL;
    }
}

/* The agent commands of a transition as store rows. */
static json_t *command_rows(const mrd__service *s, const mrd_op *op, const mrd_op_transition *t,
                            int old_fenced)
{
    json_t *rows = json_array();
    for (size_t i = 0; i < t->ncommands; i++) {
        const mrd_op_command *c = &t->commands[i];
        const char *kind = cmd_kind(c->action);
        const mrd__member_cfg *m = mrd__member_by_node(s, c->node);
        if (kind == NULL || m == NULL)
            continue;
        json_t *args = json_object();
        if (c->action == MRD_ACT_REJOIN) {
            const mrd__member_cfg *leader = mrd__member_by_node(s, c->leader_node);
            json_object_set_new(args, "leader_node", json_string(c->leader_node));
            json_object_set_new(args, "primary_conninfo",
                                json_string(leader ? leader->conninfo : ""));
        }
        if (c->action == MRD_ACT_PROMOTE && old_fenced)
            json_object_set_new(args, "old_primary_fenced", json_true());
        json_object_set_new(args, "operation", json_string(op->id));
        json_array_append_new(rows,
                              json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:o}", "id", c->command_id,
                                        "service", s->name, "member", m->name, "node", c->node,
                                        "kind", kind, "epoch", (json_int_t)c->epoch, "args", args));
        if (c->action != MRD_ACT_REJOIN)
            continue;
        /* Every other replica follows the new primary too (a reload, no
         * restart), or it would keep streaming from the old one. */
        const mrd__member_cfg *leader = mrd__member_by_node(s, c->leader_node);
        for (size_t k = 0; k < s->nmembers; k++) {
            const mrd__member_cfg *o = &s->members[k];
            if (strcmp(o->node, c->node) == 0 || strcmp(o->node, c->leader_node) == 0)
                continue;
            char id[MRD_OP_CMD_ID_MAX], action[32];
            snprintf(action, sizeof(action), "follow-%zu", k);
            if (mrd_op_command_id(op, "rejoin", action, id, sizeof(id)) != 0)
                continue;
            json_array_append_new(
                rows, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:{s:s, s:s, s:b, s:s}}", "id", id,
                                "service", s->name, "member", o->name, "node", o->node, "kind",
                                "rejoin", "epoch", (json_int_t)c->epoch, "args", "leader_node",
                                c->leader_node, "primary_conninfo", leader ? leader->conninfo : "",
                                "follow", 1, "operation", op->id));
        }
    }
    return rows;
}

static void cache_commands(mrd_ctl *ctl, json_t *rows)
{
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        json_t *c = json_deep_copy(r);
        const char *node = jstr(r, "node");
        char nodebuf[MRD_NAME_MAX];
        snprintf(nodebuf, sizeof(nodebuf), "%s", node);
        json_object_del(c, "node");
        mrd__ingest_cache_command(ctl, nodebuf, c);
        json_decref(c);
        mrd__poke(ctl, nodebuf, 1);
    }
}

static void persist_done(int err, PGresult *res, void *data)
{
    op_req *r = data;
    mrd_ctl *ctl = r->ctl;
    if (err != 0) {
        mrd_log(MRD_LOG_WARN, "operation step not persisted", MRD_S("operation", r->op.id),
                MRD_S("error", err == MRD_EIO ? PQresultErrorMessage(res) : mrd_strerror(err)));
    } else if (strcmp(PQgetvalue(res, 0, 0), "1") != 0) {
        mrd_log(MRD_LOG_WARN, "operation step refused by the store", MRD_S("operation", r->op.id),
                MRD_S("hint", "lease lost or step moved"));
    } else {
        mrd_log(MRD_LOG_INFO, "operation step", MRD_S("operation", r->op.id),
                MRD_S("service", r->service), MRD_S("from", mrd_op_step_name(r->t.from)),
                MRD_S("to", mrd_op_step_name(r->t.to)), MRD_S("why", r->t.why));
        mrd__service *s = mrd__service_find(ctl, r->service);
        if (s) {
            json_t *rows = command_rows(s, &r->op, &r->t, r->old_fenced);
            cache_commands(ctl, rows);
            json_decref(rows);
        }
        ctl->tick_wanted = 1;
        mrd__tick_cron(ctl, mrd__now_ms());
    }
    free(r);
}

static const char *persist_sql =
    "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok),"
    " op AS (UPDATE meridian.operations SET step = $5, state = $6::jsonb,"
    "   outcome = CASE WHEN $7::boolean THEN $8 ELSE outcome END,"
    "   finished_at = CASE WHEN $7::boolean THEN now() ELSE NULL END"
    "  WHERE id = $3::bigint AND step = $4 AND (SELECT ok FROM g) RETURNING id),"
    " ep AS (UPDATE meridian.services SET"
    "   epoch = CASE WHEN $9::boolean THEN GREATEST(epoch, $10::bigint) ELSE epoch END,"
    "   primary_region = CASE WHEN $12::boolean THEN $13 ELSE primary_region END,"
    "   primary_member = CASE WHEN $12::boolean THEN $14 ELSE primary_member END,"
    "   last_failover_at = CASE WHEN $12::boolean AND $15::boolean THEN now()"
    "     ELSE last_failover_at END,"
    "   updated_at = now()"
    "  WHERE name = $11 AND EXISTS (SELECT 1 FROM op) AND ($9::boolean OR $12::boolean)"
    "  RETURNING 1),"
    " s1 AS (UPDATE meridian.operation_steps SET finished_at = now(), outcome = $18,"
    /* keep what the cutover drivers reported while the step ran */
    "   attempts = GREATEST(attempts, $19::int),"
    "   detail = CASE WHEN detail = '' THEN $17 ELSE $17 || ' (' || detail || ')' END"
    "  WHERE operation_id = $3::bigint AND step = $4 AND EXISTS (SELECT 1 FROM op) RETURNING 1),"
    " s2 AS (INSERT INTO meridian.operation_steps (operation_id, step)"
    "  SELECT $3::bigint, $5 WHERE EXISTS (SELECT 1 FROM op) AND NOT $7::boolean"
    "  ON CONFLICT DO NOTHING RETURNING 1),"
    " c AS (INSERT INTO meridian.commands (id, service, member, node, kind, epoch, args,"
    "   operation_id, term)"
    "  SELECT x.id, x.service, x.member, x.node, x.kind, x.epoch, coalesce(x.args, '{}'),"
    "   $3::bigint, $2::bigint"
    "  FROM jsonb_to_recordset($16::jsonb) AS x(id text, service text, member text, node text,"
    "   kind text, epoch bigint, args jsonb)"
    "  WHERE EXISTS (SELECT 1 FROM op) ON CONFLICT (id) DO NOTHING RETURNING 1),"
    " ev AS (INSERT INTO meridian.events (kind, service, actor, term, message, detail)"
    "  SELECT 'operation.step', $11, $1, $2::bigint, $17,"
    "   jsonb_build_object('operation', $3::bigint, 'from', $4, 'to', $5, 'condition', $18)"
    "  WHERE EXISTS (SELECT 1 FROM op) RETURNING 1),"
    /* every controller refreshes its cache of commands and epochs at once */
    " n AS (SELECT pg_notify('meridian_commands', $11) WHERE EXISTS (SELECT 1 FROM op))"
    " SELECT (SELECT count(*) FROM op), (SELECT count(*) FROM c), (SELECT count(*) FROM n)";

static void op_persist(mrd_ctl *ctl, const mrd__service *s, const mrd_op *before,
                       const mrd_op *after, const mrd_op_transition *t, int old_fenced)
{
    op_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    r->ctl = ctl;
    snprintf(r->service, sizeof(r->service), "%s", s->name);
    r->op = *after;
    r->t = *t;
    r->old_fenced = old_fenced;
    json_t *state = mrd__op_to_json(after);
    char *state_text = json_dumps(state, JSON_COMPACT);
    json_decref(state);
    json_t *rows = command_rows(s, after, t, old_fenced);
    char *rows_text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    int terminal = mrd_op_step_terminal(after->step);
    int set_primary = t->from == MRD_STEP_PROMOTE && t->to == MRD_STEP_REGISTRY;
    const mrd__member_cfg *target = mrd__member_by_node(s, after->to_node);
    char term[32], epoch[32], attempts[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)after->epoch);
    snprintf(attempts, sizeof(attempts), "%u", before->attempts);
    const char *params[19] = {ctl->cfg.name,
                              term,
                              before->id,
                              mrd_op_step_name(before->step),
                              mrd_op_step_name(after->step),
                              state_text ? state_text : "{}",
                              terminal ? "true" : "false",
                              mrd_op_step_name(after->step),
                              (t->record & MRD_REC_COMMIT_EPOCH) ? "true" : "false",
                              epoch,
                              s->name,
                              set_primary ? "true" : "false",
                              after->to_region,
                              target ? target->name : "",
                              after->kind == MRD_OP_FAILOVER ? "true" : "false",
                              rows_text ? rows_text : "[]",
                              t->why,
                              mrd_op_cond_name(t->cond),
                              attempts};
    int rc = mrd_pg_query(ctl->pg, persist_sql, 19, params, persist_done, r);
    free(state_text);
    free(rows_text);
    if (rc != 0)
        free(r);
}

static void issue_done(int err, PGresult *res, void *data)
{
    (void)data;
    if (err == MRD_EIO)
        mrd_log(MRD_LOG_WARN, "commands not written", MRD_S("error", PQresultErrorMessage(res)));
}

/* Re-issues the commands of the current step that the store does not have
 * yet (a new leader resuming, or a command lost). Idempotent by id. */
static void op_issue(mrd_ctl *ctl, const mrd__service *s, const mrd_op *op,
                     const mrd_op_transition *t, json_t *cmds, int old_fenced)
{
    json_t *rows = command_rows(s, op, t, old_fenced);
    json_t *missing = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        if (find_by(cmds, "id", jstr(r, "id"), NULL, NULL) == NULL)
            json_array_append(missing, r);
    }
    if (json_array_size(missing) > 0) {
        char *text = json_dumps(missing, JSON_COMPACT);
        char term[32];
        snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
        const char *params[4] = {ctl->cfg.name, term, text ? text : "[]", op->id};
        mrd_pg_query(ctl->pg,
                     "INSERT INTO meridian.commands (id, service, member, node, kind, epoch, args,"
                     " operation_id, term)"
                     " SELECT x.id, x.service, x.member, x.node, x.kind, x.epoch,"
                     "  coalesce(x.args, '{}'), $4::bigint, $2::bigint"
                     " FROM jsonb_to_recordset($3::jsonb) AS x(id text, service text,"
                     "  member text, node text, kind text, epoch bigint, args jsonb)"
                     " WHERE meridian.is_leader($1, $2::bigint) ON CONFLICT (id) DO NOTHING",
                     4, params, issue_done, NULL);
        free(text);
        cache_commands(ctl, missing);
    }
    json_decref(missing);
    json_decref(rows);
}

static json_t *command_of(json_t *cmds, const mrd_op *op, const char *step, const char *action)
{
    char id[MRD_OP_CMD_ID_MAX];
    if (mrd_op_command_id(op, step, action, id, sizeof(id)) != 0)
        return NULL;
    return find_by(cmds, "id", id, NULL, NULL);
}

static int command_is(json_t *c, const char *status)
{
    return c && strcmp(jstr(c, "status"), status) == 0;
}

static void drive_op(mrd_ctl *ctl, mrd__service *s, const mrd_view *v, json_t *oprow, uint64_t now)
{
    mrd_op op;
    if (mrd__op_from_json(json_object_get(oprow, "state"), &op) != 0) {
        mrd_log(MRD_LOG_ERROR, "operation state unreadable", MRD_S("service", s->name));
        return;
    }
    snprintf(op.id, sizeof(op.id), "%llu", (unsigned long long)jint(oprow, "id"));
    json_t *all = json_object_get(ctl->snapshot, "commands");
    json_t *cmds = json_array();
    size_t i;
    json_t *c;
    json_array_foreach(all, i, c)
    {
        if (jint(c, "operation_id") == jint(oprow, "id"))
            json_array_append(cmds, c);
    }
    const mrd__member_cfg *oldc = mrd__member_by_node(s, op.from_node);
    const mrd__member_cfg *tgtc = mrd__member_by_node(s, op.to_node);
    json_t *old = oldc ? snap_member(ctl->snapshot, s->name, oldc->name) : NULL;
    json_t *tgt = tgtc ? snap_member(ctl->snapshot, s->name, tgtc->name) : NULL;

    mrd_op_inputs in;
    memset(&in, 0, sizeof(in));
    if (op.step == MRD_STEP_PLAN) {
        mrd_decision *pd = malloc(sizeof(*pd));
        if (pd == NULL) {
            json_decref(cmds);
            return;
        }
        mrd_decide_plan(v, &s->policy, now, op.to_region, op.force || op.kind == MRD_OP_SWITCHOVER,
                        pd);
        int ok = pd->kind == MRD_DECISION_FAILOVER ||
                 (pd->kind == MRD_DECISION_WAIT && op.kind == MRD_OP_FAILOVER);
        if (op.kind == MRD_OP_SWITCHOVER && pd->primary_state != MRD_REASON_OK)
            ok = 0;
        in.plan_ok = ok ? 1 : -1;
        free(pd);
    }
    const char *step = mrd_op_step_name(op.step);
    const char *action = NULL;
    switch (op.step) {
    case MRD_STEP_FENCE:
        action = "fence";
        break;
    case MRD_STEP_PROMOTE:
        action = "promote";
        break;
    case MRD_STEP_REJOIN:
        action = "rejoin";
        break;
    case MRD_STEP_ROLLBACK:
        action = "unfence";
        break;
    default:
        break;
    }
    json_t *cur = action ? command_of(cmds, &op, step, action) : NULL;
    in.step_failed = command_is(cur, "failed") || command_is(cur, "refused");
    uint64_t old_seen = old ? jint(old, "last_seen_ms") : 0;
    in.old_reachable = old_seen != 0 && old_seen + s->policy.node_timeout_ms > now;
    json_t *fence = command_of(cmds, &op, "fence", "fence");
    in.old_fence_confirmed = command_is(fence, "done");
    for (size_t k = 0; k < v->nmembers; k++)
        if (strcmp(v->members[k].node, op.to_node) == 0)
            in.target_outside_leases = v->members[k].outside_leases;
    in.old_unfence_confirmed = command_is(command_of(cmds, &op, "rollback", "unfence"), "done");
    in.old_last_contact_ms = old_seen;
    in.old_last_pos = old ? jint(old, "position") : 0;
    json_t *fres = fence ? json_object_get(fence, "result") : NULL;
    in.old_final_pos = jint(fres, "position");
    if (in.old_final_pos == 0 && old)
        in.old_final_pos = jint(old, "position");
    in.target_receive_pos = tgt ? jint(tgt, "receive_position") : 0;
    in.target_replay_pos = tgt ? jint(tgt, "replay_position") : 0;
    in.target_is_primary = tgt && strcmp(jstr(tgt, "role"), "primary") == 0 &&
                           !json_is_true(json_object_get(tgt, "fenced")) &&
                           (command_is(command_of(cmds, &op, "promote", "promote"), "done") ||
                            jint(tgt, "epoch_seen") >= op.epoch);
    in.registry_epoch = s->registry == NULL ? op.epoch : s->registry_epoch;
    in.dns_epoch = s->dns == NULL ? op.epoch : s->dns_epoch;
    if (mrd__cutover_refused(ctl, s, &op)) /* a required driver met a newer epoch */
        in.step_failed = 1;
    in.old_rejoined = old && strcmp(jstr(old, "role"), "replica") == 0 &&
                      !json_is_true(json_object_get(old, "fenced")) &&
                      jint(old, "epoch_seen") >= op.epoch;

    /* did the old primary write after the promotion? (recorded in op) */
    mrd__diverge_observe(ctl, s, &op, old, cmds, now);

    mrd_op_transition t;
    if (mrd_op_advance(&op, &in, now, &t) < 0) {
        json_decref(cmds);
        return;
    }
    /* The catchup step waits for the target's position: ask for it now. A
     * switchover's barrier is also a checkpoint, so its record shows when
     * each region reached the old primary's final position (idempotent). */
    if (op.step == MRD_STEP_CATCHUP) {
        mrd__poke(ctl, op.to_node, 0);
        if (op.kind == MRD_OP_SWITCHOVER && op.barrier_pos > 0)
            mrd__checkpoint_record_barrier(ctl, s->name, op.epoch, op.barrier_pos, op.id);
    }
    if (t.result == MRD_OP_MOVE) {
        mrd_op after = op;
        mrd_op_apply(&after, &t, now);
        op_persist(ctl, s, &op, &after, &t, in.old_fence_confirmed);
    } else {
        op_issue(ctl, s, &op, &t, cmds, in.old_fence_confirmed);
        for (size_t k = 0; k < t.ncommands; k++) {
            if (t.commands[k].action == MRD_ACT_REGISTRY || t.commands[k].action == MRD_ACT_DNS)
                mrd__cutover_drive(ctl, s, &op, t.commands[k].action, now);
        }
    }
    json_decref(cmds);
}

/* ---- creating operations ---------------------------------------------- */

/* 16 random hex digits (a new op's tag, part of its command ids). Neither
 * the op id (a store sequence) nor the epoch or the term is enough on its
 * own: a store whose asynchronous standby was promoted without the last
 * transactions can hand all three out again, while agents remember the
 * command ids they ran and would answer a reused one from their file.
 * Returns 0, or MRD_EINTERNAL when the random source fails. */
static int random_tag(char *buf, size_t len)
{
    uint64_t v = 0;
    if (len < 17 || RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        return MRD_EINTERNAL;
    snprintf(buf, len, "%016llx", (unsigned long long)v);
    return 0;
}

static void create_done(int err, PGresult *res, void *data)
{
    op_req *r = data;
    char id[32] = "";
    const char *detail = "";
    int rc = 0;
    if (err == MRD_EIO) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        rc = state && strcmp(state, "23505") == 0 ? MRD_ECONFLICT : MRD_EIO;
        detail = rc == MRD_ECONFLICT ? "an operation is already running for this service"
                                     : PQresultErrorMessage(res);
    } else if (err != 0) {
        rc = err;
        detail = mrd_strerror(err);
    } else if (PQgetisnull(res, 0, 0)) {
        int leader = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        rc = leader ? MRD_ECONFLICT : MRD_ENOTLEADER;
        detail = leader ? "the service's epoch moved meanwhile" : "this controller lost the lease";
    } else {
        snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 0));
        r->ctl->tick_wanted = 1;
        mrd_log(MRD_LOG_INFO, "operation started", MRD_S("operation", id),
                MRD_S("service", r->service), MRD_S("kind", mrd_op_kind_name(r->op.kind)),
                MRD_S("to", r->op.to_region));
    }
    if (r->cb)
        r->cb(rc, id, detail, r->data);
    free(r);
}

void mrd__op_create(mrd_ctl *ctl, mrd__service *s, mrd_op_kind kind, const char *to_region,
                    const char *to_node, int force, uint64_t expect_epoch, const char *actor,
                    const char *reason, const char *idempotency_key, mrd__op_created_cb cb,
                    void *data)
{
    mrd_view *v = malloc(sizeof(*v));
    op_req *r = calloc(1, sizeof(*r));
    uint64_t now = 0;
    if (v == NULL || r == NULL || mrd__view_build(ctl, s, v, &now) != 0) {
        free(v);
        free(r);
        if (cb)
            cb(MRD_ESTORE, "", "the leader has no view of the service yet", data);
        return;
    }
    const mrd__member_cfg *old = NULL;
    for (size_t i = 0; i < s->nmembers; i++)
        if (strcmp(s->members[i].node, v->primary_node) == 0)
            old = &s->members[i];
    if (old == NULL)
        old = mrd__member_by_region(s, v->primary_region);
    r->ctl = ctl;
    r->cb = cb;
    r->data = data;
    snprintf(r->service, sizeof(r->service), "%s", s->name);
    int rc = mrd_op_init(&r->op, "0", kind, s->name, v->epoch, v->primary_region,
                         old ? old->node : "", to_region, to_node, force, &s->policy, now);
    if (rc == 0)
        rc = random_tag(r->op.tag, sizeof(r->op.tag));
    free(v);
    if (rc != 0 || old == NULL) {
        free(r);
        if (cb)
            cb(MRD_EINVAL, "", "cannot describe the operation (unknown primary or target)", data);
        return;
    }
    /* the gate of the tick (epoch_gate) holds for operators too */
    if (s->epoch_reported >= r->op.epoch) {
        free(r);
        if (cb)
            cb(MRD_ECONFLICT, "",
               "the store's epoch is below one an agent reported (the store lost transactions); "
               "the leader is moving it past that first",
               data);
        return;
    }
    if (expect_epoch != 0 && expect_epoch != r->op.epoch - 1) {
        free(r);
        if (cb)
            cb(MRD_ECONFLICT, "", "the service's epoch moved meanwhile", data);
        return;
    }
    json_t *state = mrd__op_to_json(&r->op);
    char *text = json_dumps(state, JSON_COMPACT);
    json_decref(state);
    char term[32], epoch[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)r->op.epoch);
    const char *params[11] = {
        ctl->cfg.name, term,  s->name, mrd_op_kind_name(kind), r->op.from_region, to_region,
        epoch,         actor, reason,  idempotency_key,        text ? text : "{}"};
    rc = mrd_pg_query(
        ctl->pg,
        "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok),"
        " o AS (INSERT INTO meridian.operations (service, kind, step, from_region, to_region,"
        "   epoch, actor, reason, idempotency_key, state, term)"
        "  SELECT $3, $4, 'plan', $5, $6, $7::bigint, $8, $9, $10, $11::jsonb, $2::bigint"
        "  FROM g, meridian.services s WHERE g.ok AND s.name = $3 AND s.epoch = $7::bigint - 1"
        "  RETURNING id),"
        " st AS (INSERT INTO meridian.operation_steps (operation_id, step)"
        "  SELECT id, 'plan' FROM o RETURNING 1),"
        " ev AS (INSERT INTO meridian.events (kind, service, actor, term, message, detail)"
        "  SELECT 'operation.start', $3, $8, $2::bigint, $4 || ' to ' || $6 || ': ' || $9,"
        "   jsonb_build_object('operation', o.id, 'kind', $4, 'to', $6) FROM o RETURNING 1)"
        " SELECT (SELECT id FROM o), (SELECT ok FROM g)",
        11, params, create_done, r);
    free(text);
    if (rc != 0) {
        free(r);
        if (cb)
            cb(rc, "", "store is not reachable", data);
    }
}

/* ---- a store that went back ------------------------------------------- */

/* When an asynchronous standby of the store is promoted without the last
 * transactions, the store can show a service in an epoch below one that
 * agents already saw (and executed commands in). Deciding from that store
 * would hand the same epoch out again: agents accept commands at an epoch
 * equal to the highest they saw, so a new operation's fence or promote could
 * pass where it must be refused. So the leader refuses to decide (no
 * operation started or advanced) until the store's epoch is at least the
 * highest reported, and moves it there itself.
 *
 * Why setting service.epoch := R (the highest reported) is safe:
 *  - R was created by a leader and committed before any agent could see it;
 *    the store lost it, but R is a real epoch, so no epoch is invented;
 *  - it runs in one statement guarded by meridian.is_leader() (this
 *    leader's lease and term, which never go back: lease.c), together with
 *    its event, so no other controller decides meanwhile;
 *  - the next operation gets R + 1, above every epoch any reporting agent
 *    has seen: its commands are ordered after everything the lost
 *    operation did, and agents refuse anything of the lost epochs;
 *  - the store's primary becomes the member that reports primary, unfenced,
 *    at R (the one the lost operation promoted); when there is no single
 *    such member the primary stays as it was and the usual decision applies
 *    to it in epoch R + 1;
 *  - operations still running in the store are from epochs <= the store's
 *    old epoch < R: their commands would be refused; they are finished as
 *    failed in the same statement, so that none can reuse epoch R.
 * Agents that do not report (down, cut off) cannot be counted: an epoch
 * only they saw stays unknown. That is why the store must replicate
 * synchronously (docs/store.md). */
typedef struct {
    mrd_ctl *ctl;
    char service[MRD_NAME_MAX];
} catchup_req;

static void catchup_done(int err, PGresult *res, void *data)
{
    catchup_req *r = data;
    mrd__service *s = mrd__service_find(r->ctl, r->service);
    if (s)
        s->epoch_catchup_busy = 0;
    if (err != 0) {
        mrd_log(MRD_LOG_WARN, "epoch catch-up not written", MRD_S("service", r->service),
                MRD_S("error", err == MRD_EIO ? PQresultErrorMessage(res) : mrd_strerror(err)));
    } else if (strcmp(PQgetvalue(res, 0, 0), "1") == 0) {
        if (s)
            s->epoch_catchups_total++;
        mrd_log(MRD_LOG_WARN, "store epoch moved past the agents'", MRD_S("service", r->service),
                MRD_S("epoch", PQgetvalue(res, 0, 2)), MRD_S("primary", PQgetvalue(res, 0, 3)),
                MRD_S("operations_failed", PQgetvalue(res, 0, 4)));
        r->ctl->tick_wanted = 1;
    }
    free(r);
}

static const char *catchup_sql =
    "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok),"
    " sv AS (UPDATE meridian.services SET epoch = $4::bigint,"
    "   primary_region = CASE WHEN $5 <> '' THEN $5 ELSE primary_region END,"
    "   primary_member = CASE WHEN $6 <> '' THEN $6 ELSE primary_member END,"
    "   updated_at = now()"
    "  WHERE name = $3 AND epoch < $4::bigint AND (SELECT ok FROM g)"
    "  RETURNING epoch, primary_member),"
    " op AS (UPDATE meridian.operations SET step = 'failed', outcome = 'failed',"
    "   finished_at = now(), state = jsonb_set(jsonb_set(state, '{step}', '\"failed\"'),"
    "    '{why}', to_jsonb($7::text))"
    "  WHERE service = $3 AND finished_at IS NULL AND EXISTS (SELECT 1 FROM sv) RETURNING id),"
    " st AS (UPDATE meridian.operation_steps SET finished_at = now(), outcome = 'failed',"
    "   detail = $7 WHERE operation_id IN (SELECT id FROM op) AND finished_at IS NULL"
    "  RETURNING 1),"
    " ev AS (INSERT INTO meridian.events (kind, service, actor, term, message, detail)"
    "  SELECT 'store.epoch_catchup', $3, $1, $2::bigint, $8, $9::jsonb"
    "   || jsonb_build_object('operations_failed', (SELECT coalesce(jsonb_agg(id), '[]')"
    "    FROM op))"
    "  WHERE EXISTS (SELECT 1 FROM sv) RETURNING 1),"
    /* every controller refreshes its cache of epochs and commands at once */
    " n AS (SELECT pg_notify('meridian_commands', $3) WHERE EXISTS (SELECT 1 FROM sv))"
    " SELECT (SELECT count(*) FROM sv), (SELECT ok FROM g), (SELECT epoch FROM sv),"
    "  (SELECT primary_member FROM sv), (SELECT count(*) FROM op), (SELECT count(*) FROM st),"
    "  (SELECT count(*) FROM ev), (SELECT count(*) FROM n)";

static void epoch_catchup(mrd_ctl *ctl, mrd__service *s, const mrd__member_cfg *adopt)
{
    catchup_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    r->ctl = ctl;
    snprintf(r->service, sizeof(r->service), "%s", s->name);
    char term[32], epoch[32], msg[256];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)s->epoch_reported);
    snprintf(msg, sizeof(msg),
             "the store's epoch %llu was below epoch %llu reported by %s: moved to %llu%s%s",
             (unsigned long long)s->epoch_store, (unsigned long long)s->epoch_reported,
             s->epoch_reported_by, (unsigned long long)s->epoch_reported, adopt ? ", primary " : "",
             adopt ? adopt->name : "");
    json_t *detail = json_pack("{s:I, s:I, s:s, s:s?}", "store_epoch", (json_int_t)s->epoch_store,
                               "reported_epoch", (json_int_t)s->epoch_reported, "reported_by",
                               s->epoch_reported_by, "primary", adopt ? adopt->name : NULL);
    char *dtext = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    const char *params[9] = {ctl->cfg.name,
                             term,
                             s->name,
                             epoch,
                             adopt ? adopt->region : "",
                             adopt ? adopt->name : "",
                             "superseded: the store lost a newer epoch (store failover)",
                             msg,
                             dtext ? dtext : "{}"};
    if (mrd_pg_query(ctl->pg, catchup_sql, 9, params, catchup_done, r) == 0)
        s->epoch_catchup_busy = 1;
    else
        free(r);
    free(dtext);
}

json_t *mrd__epoch_guard_json(mrd_ctl *ctl, const mrd__service *s)
{
    if (!mrd__lease_is_leader(ctl) || s->epoch_reported == 0)
        return NULL;
    return json_pack("{s:s, s:I, s:I, s:s, s:I, s:b}", "state", "refusing_to_decide", "store_epoch",
                     (json_int_t)s->epoch_store, "reported_epoch", (json_int_t)s->epoch_reported,
                     "reported_by", s->epoch_reported_by, "since_ms",
                     (json_int_t)s->epoch_behind_since_ms, "catching_up", s->epoch_catchup_busy);
}

/* Returns 1 when the leader must not decide for this service this tick: the
 * store's epoch is below one an agent reported (the catch-up is then sent,
 * once at a time). Logs and records an event when that starts and ends. */
static int epoch_gate(mrd_ctl *ctl, mrd__service *s, const mrd_view *v, uint64_t now)
{
    mrd__eg_member m[MRD_VIEW_MAX_MEMBERS];
    const mrd__member_cfg *cfg[MRD_VIEW_MAX_MEMBERS];
    size_t n = 0;
    for (size_t i = 0; i < s->nmembers && n < MRD_VIEW_MAX_MEMBERS; i++) {
        json_t *row = snap_member(ctl->snapshot, s->name, s->members[i].name);
        if (row == NULL)
            continue;
        cfg[n] = &s->members[i];
        m[n].epoch_seen = jint(row, "epoch_seen");
        m[n].primary = strcmp(jstr(row, "role"), "primary") == 0;
        m[n].fenced = json_is_true(json_object_get(row, "fenced"));
        m[n].last_seen_ms = jint(row, "last_seen_ms");
        n++;
    }
    mrd__eg_result g;
    uint64_t since = s->epoch_reported ? s->epoch_behind_since_ms : now;
    if (mrd__epoch_guard(v->epoch, m, n, since, s->policy.node_timeout_ms, now, &g) != 1) {
        if (s->epoch_reported != 0) {
            mrd_log(MRD_LOG_INFO, "store epoch caught up", MRD_S("service", s->name),
                    MRD_I("epoch", v->epoch));
            mrd__event(ctl, "store.epoch_ok", s->name, "meridian",
                       "the store's epoch is no longer below an agent's: deciding again",
                       json_pack("{s:I}", "epoch", (json_int_t)v->epoch));
            s->epoch_reported = 0;
        }
        return 0;
    }
    if (s->epoch_reported != g.reported || s->epoch_store != v->epoch) {
        int first = s->epoch_reported == 0;
        s->epoch_reported = g.reported;
        s->epoch_store = v->epoch;
        if (first)
            s->epoch_behind_since_ms = now;
        s->epoch_behind_total++;
        snprintf(s->epoch_reported_by, sizeof(s->epoch_reported_by), "%s", cfg[g.by]->node);
        mrd_log(MRD_LOG_ERROR, "store epoch below an agent's: not deciding",
                MRD_S("service", s->name), MRD_I("store_epoch", v->epoch),
                MRD_I("reported_epoch", g.reported), MRD_S("node", cfg[g.by]->node));
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the store's epoch %llu is below epoch %llu reported by %s: the store lost "
                 "transactions; no decision until it moved past it",
                 (unsigned long long)v->epoch, (unsigned long long)g.reported, cfg[g.by]->node);
        mrd__event(ctl, "alert", s->name, "meridian", msg,
                   json_pack("{s:s, s:I, s:I, s:s}", "reason", "store_epoch_behind", "store_epoch",
                             (json_int_t)v->epoch, "reported_epoch", (json_int_t)g.reported,
                             "reported_by", cfg[g.by]->node));
    }
    /* rows the store kept from before its failover are stale: wait until
     * every member reported again (or node_timeout), so that the member the
     * lost epoch promoted shows as primary before it is named */
    if (!s->epoch_catchup_busy && g.ready)
        epoch_catchup(ctl, s, g.adopt >= 0 ? cfg[g.adopt] : NULL);
    return 1;
}

/* ---- the tick ---------------------------------------------------------- */

#define UNFENCE_RETRY_MS 5000

/* A primary that fenced itself (isolated from the store and a peer) stays
 * read-only until told otherwise. When it is the member the store names
 * primary, in the current epoch, and it is heard from again (its contact is
 * recorded), no one else can be writable: the leader unfences it rather
 * than failing over. Returns 1 when it sent (or recently sent) an unfence;
 * the decision is skipped then. */
static int recover_self_fenced(mrd_ctl *ctl, mrd__service *s, const mrd_view *v, uint64_t now)
{
    const mrd_view_member *p = NULL;
    for (size_t i = 0; i < v->nmembers; i++)
        if (strcmp(v->members[i].node, v->primary_node) == 0)
            p = &v->members[i];
    if (p == NULL || !p->fenced || p->last_seen_ms == 0 ||
        p->last_seen_ms + s->policy.node_timeout_ms <= now)
        return 0;
    if (p->role != MRD_ROLE_FENCED && p->role != MRD_ROLE_PRIMARY)
        return 0;
    if (s->unfence_sent_ms && now < s->unfence_sent_ms + UNFENCE_RETRY_MS)
        return 1;
    const mrd__member_cfg *m = mrd__member_by_node(s, p->node);
    if (m == NULL)
        return 0;
    s->unfence_sent_ms = now;
    char id[MRD_OP_CMD_ID_MAX], tag[MRD_OP_TAG_MAX];
    if (random_tag(tag, sizeof(tag)) != 0)
        return 1;
    /* Ids travel to agents and stay short (at most 63 bytes); the random
     * tag keeps them unique even if the store's clock or epoch went back. */
    snprintf(id, sizeof(id), "rcv/%llx/%llx/%.8s/%.20s", (unsigned long long)now,
             (unsigned long long)v->epoch, tag, s->name);
    json_t *rows =
        json_pack("[{s:s, s:s, s:s, s:s, s:s, s:I, s:{s:s}}]", "id", id, "service", s->name,
                  "member", m->name, "node", m->node, "kind", "unfence", "epoch",
                  (json_int_t)v->epoch, "args", "reason", "self-fenced primary heard from again");
    char *text = json_dumps(rows, JSON_COMPACT);
    char term[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    const char *params[3] = {ctl->cfg.name, term, text ? text : "[]"};
    mrd_pg_query(
        ctl->pg,
        "INSERT INTO meridian.commands (id, service, member, node, kind, epoch, args, term)"
        " SELECT x.id, x.service, x.member, x.node, x.kind, x.epoch, x.args, $2::bigint"
        " FROM jsonb_to_recordset($3::jsonb) AS x(id text, service text, member text,"
        "  node text, kind text, epoch bigint, args jsonb)"
        " WHERE meridian.is_leader($1, $2::bigint) ON CONFLICT (id) DO NOTHING",
        3, params, issue_done, NULL);
    free(text);
    cache_commands(ctl, rows);
    json_decref(rows);
    mrd_log(MRD_LOG_WARN, "unfencing a self-fenced primary", MRD_S("service", s->name),
            MRD_S("member", m->name), MRD_I("epoch", v->epoch));
    mrd__event(ctl, "unfence", s->name, "meridian",
               "the primary had fenced itself and is heard from again: unfenced",
               json_pack("{s:s}", "member", m->name));
    return 1;
}

static void auto_decide(mrd_ctl *ctl, mrd__service *s, mrd_view *v, uint64_t now)
{
    if (recover_self_fenced(ctl, s, v, now))
        return;
    mrd_decision *d = malloc(sizeof(*d));
    if (d == NULL)
        return;
    mrd_view_carry(v, s->has_last ? &s->last : NULL);
    mrd_decide(v, &s->policy, now, d);
    s->last = *d;
    s->has_last = 1;
    const char *reason = mrd_reason_name(d->reason);
    if (d->kind == MRD_DECISION_FAILOVER) {
        mrd_log(MRD_LOG_WARN, "failover decided", MRD_S("service", s->name),
                MRD_S("to", d->target_region), MRD_S("reason", d->text));
        mrd__op_create(ctl, s, MRD_OP_FAILOVER, d->target_region, d->target_node, 0, v->epoch,
                       "meridian", d->text, NULL, NULL, NULL);
        s->last_alert[0] = '\0';
    } else if (d->kind == MRD_DECISION_ALERT || d->kind == MRD_DECISION_WAIT) {
        if (strcmp(s->last_alert, reason) != 0) {
            snprintf(s->last_alert, sizeof(s->last_alert), "%s", reason);
            mrd_log(MRD_LOG_WARN, "decision", MRD_S("service", s->name),
                    MRD_S("kind", mrd_decision_kind_name(d->kind)), MRD_S("reason", reason),
                    MRD_S("detail", d->text));
            mrd__event(ctl, d->kind == MRD_DECISION_ALERT ? "alert" : "wait", s->name, "meridian",
                       d->text,
                       json_pack("{s:s, s:s}", "reason", reason, "target", d->target_region));
        }
    } else if (s->last_alert[0] != '\0' && d->reason == MRD_REASON_OK) {
        mrd__event(ctl, "recovered", s->name, "meridian", "the primary is healthy again",
                   json_pack("{s:s}", "previous", s->last_alert));
        s->last_alert[0] = '\0';
    }
    free(d);
}

/* The snapshot, parsed and indexed on the thread pool (a fleet's snapshot is
 * megabytes: parsing it on the loop delayed every heartbeat answer). */
static void tick_parsed(json_t *snap, void *data)
{
    mrd_ctl *ctl = data;
    ctl->tick_running = 0;
    if (snap == NULL)
        return;
    mrd_json_release_async(ctl->loop, ctl->snapshot);
    ctl->snapshot = snap;
    ctl->snapshot_ms = jint(snap, "now_ms");
    if (!mrd__lease_is_leader(ctl) || ctl->stopping)
        return;
    mrd_view *v = malloc(sizeof(*v));
    if (v == NULL)
        return;
    json_t *ops = json_object_get(snap, "operations");
    for (size_t i = 0; i < ctl->nservices; i++) {
        mrd__service *s = &ctl->services[i];
        uint64_t now;
        if (mrd__view_build(ctl, s, v, &now) != 0)
            continue;
        if (epoch_gate(ctl, s, v, now))
            continue;
        json_t *op = find_by(ops, "service", s->name, NULL, NULL);
        mrd__peers_check(ctl, s, v, now);
        if (op)
            drive_op(ctl, s, v, op, now);
        else
            auto_decide(ctl, s, v, now);
    }
    free(v);
    mrd__diverge_watch(ctl, snap, jint(snap, "now_ms"));
}

/* The store's share of the leader's work stays bounded: when a snapshot
 * takes longer than a quarter of tick_ms (a large fleet), the next one waits
 * four times as long as this one took. Decisions get slower at that scale
 * instead of the store saturating (and every heartbeat flush with it);
 * events (command results, API requests) still tick at once. */
#define TICK_STORE_SHARE 4

static void tick_done(int err, PGresult *res, void *data)
{
    mrd_ctl *ctl = data;
    uint64_t now = mrd__now_ms();
    ctl->tick_query_ms = now - ctl->tick_started_ms;
    if (ctl->tick_query_ms * TICK_STORE_SHARE > ctl->cfg.tick_ms)
        ctl->tick_next_ms = ctl->tick_started_ms + ctl->tick_query_ms * TICK_STORE_SHARE;
    if (err != 0 || PQntuples(res) != 1 ||
        mrd_json_parse_async(ctl->loop, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0),
                             snapshot_index, tick_parsed, ctl) != 0)
        ctl->tick_running = 0;
}

void mrd__tick_cron(mrd_ctl *ctl, uint64_t now)
{
    if (!mrd__lease_is_leader(ctl) || !ctl->migrated || ctl->stopping)
        return;
    mrd__services_sync(ctl);
    if (ctl->synced_term != ctl->lease.term || ctl->tick_running)
        return;
    if (now < ctl->tick_next_ms && !ctl->tick_wanted)
        return;
    if (mrd_pg_query(ctl->pg, snapshot_sql, 0, NULL, tick_done, ctl) == 0) {
        ctl->tick_running = 1;
        ctl->tick_wanted = 0;
        ctl->tick_started_ms = now;
        ctl->tick_next_ms = now + ctl->cfg.tick_ms;
    }
}
