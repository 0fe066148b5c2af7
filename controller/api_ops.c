/*
 * The operator API: services, regions, nodes, operations, events, plan,
 * switchover, failover, maintenance. Reads are answered by any controller
 * from the store (one query that builds the JSON); writes are carried out by
 * the leader only: a follower answers 307 with the leader's URL in Location
 * (meridianctl and curl -L follow it), or 503 when no leader is known.
 *
 * Every write names who asked (the token's name) and why, and lands in the
 * event log. Preconditions expect_primary / expect_epoch give 409 when the
 * topology moved, so automation and people cannot race each other; an
 * Idempotency-Key returns the operation the key already started.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/error.h"

/* ---- helpers ----------------------------------------------------------- */

typedef struct {
    mrd_http_response *res;
    const char *not_found;
} json_query;

static void json_query_done(int err, PGresult *r, void *data)
{
    json_query *q = data;
    if (err == MRD_EIO) {
        mrd_http_respond_error(q->res, 500, "store_error", PQresultErrorMessage(r));
    } else if (err != 0) {
        mrd_http_respond_error(q->res, 503, "store_unavailable", "store is not reachable");
    } else if (PQntuples(r) < 1 || PQgetisnull(r, 0, 0)) {
        mrd_http_respond_error(q->res, 404, "not_found", q->not_found ? q->not_found : "not found");
    } else {
        const char *text = PQgetvalue(r, 0, 0);
        mrd_http_respond(q->res, 200, "application/json", text, strlen(text));
    }
    free(q);
}

void mrd__api_respond_query(mrd_ctl *ctl, mrd_http_response *res, const char *sql, int n,
                            const char *const *params, const char *not_found)
{
    json_query *q = malloc(sizeof(*q));
    if (q == NULL) {
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    q->res = res;
    q->not_found = not_found;
    if (mrd_pg_query(ctl->pg, sql, n, params, json_query_done, q) != 0) {
        free(q);
        mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
    }
}

/* 0 when this controller may carry out a write; otherwise it has answered. */
static int require_leader(mrd_ctl *ctl, mrd_http_request *req, mrd_http_response *res)
{
    if (mrd__lease_is_leader(ctl) && ctl->synced_term == ctl->lease.term && ctl->snapshot)
        return 0;
    const mrd_lease_state *l = &ctl->lease;
    if (!mrd__lease_is_leader(ctl) && l->known && l->holder_url[0] &&
        l->holder_expires_at > mrd__now_ms() && strcmp(l->holder, ctl->cfg.name) != 0) {
        char loc[1024];
        const char *q = mrd_http_request_query(req);
        snprintf(loc, sizeof(loc), "%s%s%s%s", l->holder_url, mrd_http_request_path(req),
                 q[0] ? "?" : "", q);
        mrd_http_response_header(res, "Location", loc);
        json_t *body = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", "not_leader", "message",
                                 "this controller is not the leader; send writes to the leader",
                                 "leader_url", l->holder_url);
        mrd_http_respond_json(res, 307, body);
        return -1;
    }
    mrd_http_respond_error(res, 503, "no_leader",
                           "no leader is known right now; retry in a few seconds");
    return -1;
}

/* Checks a request body against allowed keys and types ('s' string, 'b'
 * bool, 'i' positive integer). Answers 400 itself and returns -1 on error. */
static int check_body(json_t *body, const char *const *keys, const char *types,
                      mrd_http_response *res)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        int found = -1;
        for (int i = 0; keys[i]; i++)
            if (strcmp(keys[i], key) == 0)
                found = i;
        char msg[200];
        if (found < 0) {
            snprintf(msg, sizeof(msg), "%.60s: unknown field", key);
            mrd_http_respond_error(res, 400, "bad_request", msg);
            return -1;
        }
        char t = types[found];
        int ok = (t == 's' && json_is_string(v) && json_string_length(v) < MRD_NAME_MAX) ||
                 (t == 'b' && json_is_boolean(v)) ||
                 (t == 'i' && json_is_integer(v) && json_integer_value(v) >= 1) ||
                 (t == 'S' && json_is_string(v) && json_string_length(v) < 1000);
        if (!ok) {
            snprintf(msg, sizeof(msg), "%s: must be %s", key,
                     t == 's'   ? "a string of at most 63 bytes"
                     : t == 'S' ? "a string of at most 999 bytes"
                     : t == 'b' ? "a boolean"
                                : "a positive integer");
            mrd_http_respond_error(res, 400, "bad_request", msg);
            return -1;
        }
    }
    return 0;
}

static int find_running(mrd_ctl *ctl, const char *service)
{
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(ctl->snapshot, "operations"), i, o)
    {
        if (strcmp(json_string_value(json_object_get(o, "service")), service) == 0)
            return 1;
    }
    return 0;
}

mrd__service *mrd__api_service_or_404(mrd_ctl *ctl, mrd_http_request *req, mrd_http_response *res)
{
    const char *name = mrd_http_request_param(req, "svc");
    mrd__service *s = name ? mrd__service_find(ctl, name) : NULL;
    if (s == NULL)
        mrd_http_respond_error(res, 404, "not_found", "no such service");
    return s;
}

static json_t *decision_json(const mrd_decision *d)
{
    json_t *cands = json_array();
    for (size_t i = 0; i < d->ncandidates; i++) {
        const mrd_candidate *c = &d->candidates[i];
        json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:b, s:b, s:s}", "node", c->node, "region",
                              c->region, "priority", c->priority, "replay_position",
                              (json_int_t)c->replay_pos, "acceptable", c->acceptable, "chosen",
                              c->chosen, "reason", mrd_reason_name(c->reason));
        json_object_set_new(
            o, "lag_bytes",
            c->lag_bytes == MRD_LAG_UNKNOWN ? json_null() : json_integer((json_int_t)c->lag_bytes));
        json_object_set_new(o, "lag_ms",
                            c->lag_ms == MRD_LAG_UNKNOWN ? json_null()
                                                         : json_integer((json_int_t)c->lag_ms));
        json_array_append_new(cands, o);
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:o}", "decision",
                          mrd_decision_kind_name(d->kind), "reason", mrd_reason_name(d->reason),
                          "message", d->text, "service", d->service, "epoch", (json_int_t)d->epoch,
                          "primary_state", mrd_reason_name(d->primary_state), "candidates", cands);
    if (d->target_region[0]) {
        json_object_set_new(o, "target_region", json_string(d->target_region));
        json_object_set_new(o, "target_node", json_string(d->target_node));
    }
    if (d->not_before_ms)
        json_object_set_new(o, "not_before_ms", json_integer((json_int_t)d->not_before_ms));
    return o;
}

/* ---- reads ------------------------------------------------------------- */

#define MEMBERS_JSON                                                                               \
    "(SELECT coalesce(json_agg(json_build_object('name', m.name, 'node', m.node,"                  \
    "  'region', m.region, 'role', m.role, 'fenced', m.fenced, 'healthy', m.healthy,"              \
    "  'position', m.position, 'receive_position', m.receive_position,"                            \
    "  'replay_position', m.replay_position, 'lag_bytes', m.lag_bytes, 'lag_ms', m.lag_ms,"        \
    "  'epoch_seen', m.epoch_seen, 'standbys', m.standbys,"                                        \
    "  'age_ms', (extract(epoch FROM now() - m.last_seen) * 1000)::bigint)"                        \
    "  ORDER BY m.region, m.name), '[]') FROM meridian.members m WHERE m.service = s.name)"

#define RUNNING_OP_JSON                                                                            \
    "(SELECT json_build_object('id', o.id, 'kind', o.kind, 'step', o.step, 'to_region',"           \
    "  o.to_region, 'started_at', o.started_at) FROM meridian.operations o"                        \
    "  WHERE o.service = s.name AND o.finished_at IS NULL)"

#define SERVICE_JSON                                                                               \
    "json_build_object('name', s.name, 'primary_region', s.primary_region,"                        \
    " 'primary_member', s.primary_member, 'epoch', s.epoch, 'maintenance', s.maintenance,"         \
    " 'maintenance_reason', s.maintenance_reason, 'last_failover_at', s.last_failover_at,"         \
    " 'members', " MEMBERS_JSON ", 'operation', " RUNNING_OP_JSON ")"

typedef struct {
    mrd_http_response *res;
    json_t *body;
} status_req;

static void status_done(int err, PGresult *r, void *data)
{
    status_req *q = data;
    json_t *services = NULL;
    if (err == 0 && r && PQntuples(r) == 1) {
        json_error_t jerr;
        services = json_loads(PQgetvalue(r, 0, 0), 0, &jerr);
    }
    json_object_set_new(q->body, "services", services ? services : json_null());
    mrd_http_respond_json(q->res, 200, q->body);
    free(q);
}

void mrd__api_status_services(mrd_ctl *ctl, mrd_http_response *res, json_t *body)
{
    status_req *q = malloc(sizeof(*q));
    if (q == NULL) {
        mrd_http_respond_json(res, 200, body);
        return;
    }
    q->res = res;
    q->body = body;
    if (!ctl->migrated || mrd_pg_query(ctl->pg,
                                       "SELECT coalesce(json_agg(" SERVICE_JSON
                                       " ORDER BY s.name), '[]') FROM meridian.services s",
                                       0, NULL, status_done, q) != 0)
        status_done(MRD_ESTORE, NULL, q);
}

static void h_services(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)req;
    mrd__api_respond_query(data, res,
                           "SELECT json_build_object('services', coalesce(json_agg(" SERVICE_JSON
                           " ORDER BY s.name), '[]')) FROM meridian.services s",
                           0, NULL, NULL);
}

typedef struct {
    mrd_ctl *ctl;
    mrd_http_response *res;
    char service[MRD_NAME_MAX];
} svc_req;

static void service_done(int err, PGresult *r, void *data)
{
    svc_req *q = data;
    mrd_ctl *ctl = q->ctl;
    if (err != 0) {
        mrd_http_respond_error(q->res, err == MRD_EIO ? 500 : 503, "store_unavailable",
                               err == MRD_EIO ? PQresultErrorMessage(r) : "store is not reachable");
        free(q);
        return;
    }
    if (PQntuples(r) < 1) {
        mrd_http_respond_error(q->res, 404, "not_found", "no such service");
        free(q);
        return;
    }
    json_error_t jerr;
    json_t *o = json_loads(PQgetvalue(r, 0, 0), 0, &jerr);
    mrd__service *s = mrd__service_find(ctl, q->service);
    if (o && s) {
        json_t *drivers = mrd__cutover_json(ctl, s);
        json_object_set_new(o, "drivers", drivers);
        json_object_set_new(o, "profile", json_string(s->profile));
        if (mrd__lease_is_leader(ctl) && s->has_last)
            json_object_set_new(o, "decision", decision_json(&s->last));
        json_t *guard = mrd__epoch_guard_json(ctl, s);
        if (guard) /* the store lost an epoch: the leader decides nothing */
            json_object_set_new(o, "epoch_guard", guard);
    }
    if (o)
        mrd_http_respond_json(q->res, 200, o);
    else
        mrd_http_respond_error(q->res, 500, "internal", "bad JSON from the store");
    free(q);
}

static void h_service(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    svc_req *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    q->ctl = ctl;
    q->res = res;
    snprintf(q->service, sizeof(q->service), "%s", mrd_http_request_param(req, "svc"));
    const char *params[1] = {q->service};
    if (mrd_pg_query(ctl->pg, "SELECT " SERVICE_JSON " FROM meridian.services s WHERE s.name = $1",
                     1, params, service_done, q) != 0) {
        free(q);
        mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
    }
}

static void h_regions(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    (void)req;
    json_t *arr = json_array();
    for (size_t i = 0; i < ctl->nregions; i++)
        json_array_append_new(arr, json_pack("{s:s, s:i}", "name", ctl->regions[i].name, "priority",
                                             ctl->regions[i].priority));
    mrd_http_respond_json(res, 200, json_pack("{s:o}", "regions", arr));
}

#define NODE_JSON                                                                                  \
    "json_build_object('name', n.name, 'region', n.region, 'seq', n.seq, 'via', n.via,"            \
    " 'last_seen', n.last_seen,"                                                                   \
    " 'age_ms', (extract(epoch FROM now() - n.last_seen) * 1000)::bigint,"                         \
    " 'checks', n.checks, 'probes', n.probes,"                                                     \
    " 'members', (SELECT coalesce(json_agg(json_build_object('service', m.service,"                \
    "   'name', m.name, 'role', m.role, 'fenced', m.fenced, 'healthy', m.healthy,"                 \
    "   'position', m.position, 'replay_position', m.replay_position,"                             \
    "   'lag_bytes', m.lag_bytes, 'lag_ms', m.lag_ms, 'standbys', m.standbys)), '[]')"             \
    "   FROM meridian.members m WHERE m.node = n.name))"

static void h_nodes(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)req;
    mrd__api_respond_query(data, res,
                           "SELECT json_build_object('nodes', coalesce(json_agg(" NODE_JSON
                           " ORDER BY n.region, n.name), '[]')) FROM meridian.nodes n",
                           0, NULL, NULL);
}

static void h_node(mrd_http_request *req, mrd_http_response *res, void *data)
{
    const char *params[1] = {mrd_http_request_param(req, "node")};
    mrd__api_respond_query(data, res,
                           "SELECT " NODE_JSON " FROM meridian.nodes n WHERE n.name = $1", 1,
                           params, "no such node");
}

static void h_operation(mrd_http_request *req, mrd_http_response *res, void *data)
{
    const char *id = mrd_http_request_param(req, "id");
    char *end;
    long long v = strtoll(id ? id : "", &end, 10);
    if (id == NULL || *id == '\0' || *end != '\0' || v <= 0) {
        mrd_http_respond_error(res, 400, "bad_request", "operation id must be a positive integer");
        return;
    }
    const char *params[1] = {id};
    mrd__api_respond_query(
        data, res,
        "SELECT json_build_object('id', o.id, 'service', o.service, 'kind', o.kind,"
        " 'step', o.step, 'outcome', o.outcome, 'from_region', o.from_region,"
        " 'to_region', o.to_region, 'epoch', o.epoch, 'actor', o.actor, 'reason', o.reason,"
        " 'started_at', o.started_at, 'finished_at', o.finished_at,"
        " 'duration_ms', (extract(epoch FROM coalesce(o.finished_at, now()) - o.started_at)"
        "   * 1000)::bigint,"
        " 'lost_bytes', (o.state->>'lost_bytes')::bigint,"
        " 'barrier_position', (o.state->>'barrier_pos')::bigint,"
        " 'old_last_position', (o.state->>'old_last_pos')::bigint,"
        " 'fork_position', (o.state->>'fork_pos')::bigint,"
        " 'diverged', coalesce((o.state->>'written_after_failover_bytes')::bigint, 0) > 0,"
        " 'old_seen_position', (o.state->>'old_seen_pos')::bigint,"
        " 'diverged_bytes', (o.state->>'diverged_bytes')::bigint,"
        " 'written_after_failover_bytes', (o.state->>'written_after_failover_bytes')::bigint,"
        " 'rejoin_pending', (o.state->>'rejoin_pending')::boolean, 'why', o.state->>'why',"
        " 'steps', (SELECT coalesce(json_agg(json_build_object('step', st.step,"
        "   'started_at', st.started_at, 'finished_at', st.finished_at,"
        "   'duration_ms', (extract(epoch FROM coalesce(st.finished_at, now()) - st.started_at)"
        "     * 1000)::bigint,"
        "   'attempts', st.attempts, 'outcome', st.outcome, 'detail', st.detail)"
        "   ORDER BY st.started_at), '[]') FROM meridian.operation_steps st"
        "   WHERE st.operation_id = o.id),"
        " 'commands', (SELECT coalesce(json_agg(json_build_object('id', c.id, 'kind', c.kind,"
        "   'node', c.node, 'epoch', c.epoch, 'status', c.status, 'result', c.result,"
        "   'created_at', c.created_at, 'finished_at', c.finished_at) ORDER BY c.created_at),"
        "   '[]') FROM meridian.commands c WHERE c.operation_id = o.id))"
        " FROM meridian.operations o WHERE o.id = $1::bigint",
        1, params, "no such operation");
}

static void h_operations(mrd_http_request *req, mrd_http_response *res, void *data)
{
    char service[MRD_NAME_MAX] = "";
    mrd_http_request_query_param(req, "service", service, sizeof(service));
    const char *params[1] = {service};
    mrd__api_respond_query(
        data, res,
        "SELECT json_build_object('operations', coalesce(json_agg(json_build_object("
        " 'id', o.id, 'service', o.service, 'kind', o.kind, 'step', o.step,"
        " 'outcome', o.outcome, 'from_region', o.from_region, 'to_region', o.to_region,"
        " 'epoch', o.epoch, 'actor', o.actor, 'started_at', o.started_at,"
        " 'finished_at', o.finished_at,"
        " 'duration_ms', (extract(epoch FROM coalesce(o.finished_at, now())"
        "   - o.started_at) * 1000)::bigint) ORDER BY o.id DESC), '[]'))"
        " FROM (SELECT * FROM meridian.operations WHERE $1 = '' OR service = $1"
        "  ORDER BY id DESC LIMIT 100) o",
        1, params, NULL);
}

static void h_events(mrd_http_request *req, mrd_http_response *res, void *data)
{
    char after[32] = "0", limit[32] = "100", service[MRD_NAME_MAX] = "";
    mrd_http_request_query_param(req, "after", after, sizeof(after));
    mrd_http_request_query_param(req, "limit", limit, sizeof(limit));
    mrd_http_request_query_param(req, "service", service, sizeof(service));
    char *e1, *e2;
    long long a = strtoll(after, &e1, 10), l = strtoll(limit, &e2, 10);
    if (*e1 || *e2 || a < 0 || l < 1 || l > 1000) {
        mrd_http_respond_error(res, 400, "bad_request",
                               "after must be an event id >= 0 and limit between 1 and 1000");
        return;
    }
    const char *params[3] = {after, limit, service};
    mrd__api_respond_query(
        data, res,
        "SELECT json_build_object('events', coalesce(json_agg(json_build_object("
        " 'id', e.id, 'at', e.at, 'kind', e.kind, 'service', e.service,"
        " 'actor', e.actor, 'term', e.term, 'message', e.message, 'detail', e.detail)"
        " ORDER BY e.id), '[]'), 'last_id', coalesce(max(e.id), $1::bigint))"
        " FROM (SELECT * FROM meridian.events WHERE id > $1::bigint"
        "  AND ($3 = '' OR service = $3) ORDER BY id LIMIT $2::int) e",
        3, params, NULL);
}

/* ---- plan and writes --------------------------------------------------- */

static void h_plan(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__service *s = mrd__api_service_or_404(ctl, req, res);
    if (s == NULL || require_leader(ctl, req, res) != 0)
        return;
    char to[MRD_NAME_MAX] = "", force[8] = "";
    mrd_http_request_query_param(req, "to", to, sizeof(to));
    mrd_http_request_query_param(req, "force", force, sizeof(force));
    if (to[0] && mrd__region_priority(ctl, to) < 0) {
        mrd_http_respond_error(res, 404, "unknown_region", "no such region");
        return;
    }
    mrd_view *v = malloc(sizeof(*v));
    mrd_decision *d = malloc(sizeof(*d));
    uint64_t now;
    if (v == NULL || d == NULL || mrd__view_build(ctl, s, v, &now) != 0) {
        free(v);
        free(d);
        mrd_http_respond_error(res, 503, "no_view", "the leader has no view of the service yet");
        return;
    }
    mrd_decide_plan(v, &s->policy, now, to[0] ? to : NULL, strcmp(force, "true") == 0, d);
    json_t *o = decision_json(d);
    json_object_set_new(
        o, "would_act",
        json_boolean(d->kind == MRD_DECISION_FAILOVER || d->kind == MRD_DECISION_WAIT));
    if (s->has_last)
        json_object_set_new(o, "automatic", decision_json(&s->last));
    free(v);
    free(d);
    mrd_http_respond_json(res, 200, o);
}

typedef struct {
    mrd_http_response *res;
} create_ctx;

static void op_created(int err, const char *id, const char *detail, void *data)
{
    create_ctx *c = data;
    if (err == 0)
        mrd_http_respond_json(c->res, 202,
                              json_pack("{s:s, s:s}", "operation", id, "status", "started"));
    else if (err == MRD_ECONFLICT)
        mrd_http_respond_error(c->res, 409, "conflict", detail);
    else if (err == MRD_ENOTLEADER)
        mrd_http_respond_error(c->res, 503, "not_leader", detail);
    else if (err == MRD_EINVAL)
        mrd_http_respond_error(c->res, 422, "invalid_operation", detail);
    else
        mrd_http_respond_error(c->res, 503, "store_unavailable", detail);
    free(c);
}

/* A start request, validated and parsed; the preconditions are checked by
 * start_checked() once any Idempotency-Key has been looked up. */
typedef struct {
    mrd_ctl *ctl;
    mrd_http_response *res;
    char service[MRD_NAME_MAX];
    mrd_op_kind kind;
    char to[MRD_NAME_MAX]; /* requested target region, "" for any */
    char expect_primary[MRD_NAME_MAX];
    uint64_t expect_epoch; /* 0: no precondition */
    int force;
    char actor[MRD_NAME_MAX];
    char reason[256];
    char key[128];
} start_req;

/* Checks the preconditions against the leader's view and starts the
 * operation (the answer comes from op_created), or answers 409/422/503. */
static void start_checked(start_req *q)
{
    mrd_ctl *ctl = q->ctl;
    mrd__service *s = mrd__service_find(ctl, q->service);
    mrd_view *v = malloc(sizeof(*v));
    mrd_decision *d = malloc(sizeof(*d));
    create_ctx *c = malloc(sizeof(*c));
    uint64_t now;
    if (s == NULL || v == NULL || d == NULL || c == NULL || mrd__view_build(ctl, s, v, &now) != 0) {
        free(v);
        free(d);
        free(c);
        mrd_http_respond_error(q->res, 503, "no_view", "the leader has no view of the service yet");
        return;
    }
    const char *to = q->to[0] ? q->to : NULL;
    char msg[400];
    int status = 0;
    const char *code = "conflict";
    if (q->expect_primary[0] && strcmp(q->expect_primary, v->primary_region) != 0) {
        status = 409;
        snprintf(msg, sizeof(msg), "expect_primary: the primary is in %s, not %s",
                 v->primary_region, q->expect_primary);
    } else if (q->expect_epoch && q->expect_epoch != v->epoch) {
        status = 409;
        snprintf(msg, sizeof(msg), "expect_epoch: the epoch is %llu, not %llu",
                 (unsigned long long)v->epoch, (unsigned long long)q->expect_epoch);
    } else if (find_running(ctl, s->name)) {
        status = 409;
        snprintf(msg, sizeof(msg), "an operation is already running for this service");
    } else if (to && strcmp(to, v->primary_region) == 0) {
        status = 409;
        code = "already_primary";
        snprintf(msg, sizeof(msg), "the primary is already in %s", to);
    }
    if (status == 0) {
        mrd_decide_plan(v, &s->policy, now, to, q->force, d);
        if (q->kind == MRD_OP_SWITCHOVER && d->primary_state != MRD_REASON_OK) {
            status = 422;
            code = "primary_unhealthy";
            snprintf(msg, sizeof(msg),
                     "the primary is not healthy (%s): a switchover needs it to fence and hand "
                     "over; use a failover",
                     mrd_reason_name(d->primary_state));
        } else if (d->kind != MRD_DECISION_FAILOVER &&
                   !(d->kind == MRD_DECISION_WAIT && q->kind == MRD_OP_FAILOVER)) {
            status = 422;
            code = mrd_reason_name(d->reason);
            snprintf(msg, sizeof(msg), "%s", d->text);
        }
    }
    if (status != 0) {
        free(v);
        free(d);
        free(c);
        mrd_http_respond_error(q->res, status, code, msg);
        return;
    }
    c->res = q->res;
    mrd__op_create(ctl, s, q->kind, d->target_region, d->target_node, q->force, v->epoch, q->actor,
                   q->reason, q->key[0] ? q->key : NULL, op_created, c);
    free(v);
    free(d);
}

static void idem_done(int err, PGresult *r, void *data)
{
    start_req *q = data;
    if (err == 0 && PQntuples(r) == 1) {
        mrd_http_respond_json(q->res, 202,
                              json_pack("{s:s, s:s}", "operation", PQgetvalue(r, 0, 0), "status",
                                        "already started with this Idempotency-Key"));
    } else if (err != 0) {
        mrd_http_respond_error(q->res, 503, "store_unavailable", "store is not reachable");
    } else {
        start_checked(q);
    }
    free(q);
}

static void h_start(mrd_http_request *req, mrd_http_response *res, mrd_ctl *ctl, mrd_op_kind kind)
{
    mrd__service *s = mrd__api_service_or_404(ctl, req, res);
    if (s == NULL)
        return;
    json_t *body = mrd_http_request_json(req, res);
    if (body == NULL)
        return;
    static const char *const keys[] = {"to",           "force",  "expect_primary",
                                       "expect_epoch", "reason", NULL};
    if (check_body(body, keys, "sbsiS", res) != 0) {
        json_decref(body);
        return;
    }
    const char *to = json_string_value(json_object_get(body, "to"));
    int force = json_is_true(json_object_get(body, "force"));
    const char *expect_primary = json_string_value(json_object_get(body, "expect_primary"));
    json_int_t expect_epoch = json_integer_value(json_object_get(body, "expect_epoch"));
    const char *reason = json_string_value(json_object_get(body, "reason"));
    if (kind == MRD_OP_SWITCHOVER && to == NULL) {
        json_decref(body);
        mrd_http_respond_error(res, 400, "bad_request", "to: a switchover needs a target region");
        return;
    }
    if (kind == MRD_OP_SWITCHOVER && force) {
        json_decref(body);
        mrd_http_respond_error(res, 400, "bad_request",
                               "force: only a failover can be forced; a switchover never loses "
                               "data");
        return;
    }
    if (to && mrd__region_priority(ctl, to) < 0) {
        json_decref(body);
        mrd_http_respond_error(res, 422, "unknown_region", "to: no such region");
        return;
    }
    if (require_leader(ctl, req, res) != 0) {
        json_decref(body);
        return;
    }
    start_req *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        json_decref(body);
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    q->ctl = ctl;
    q->res = res;
    q->kind = kind;
    q->force = force;
    q->expect_epoch = (uint64_t)expect_epoch;
    snprintf(q->service, sizeof(q->service), "%s", s->name);
    snprintf(q->to, sizeof(q->to), "%s", to ? to : "");
    snprintf(q->expect_primary, sizeof(q->expect_primary), "%s",
             expect_primary ? expect_primary : "");
    snprintf(q->actor, sizeof(q->actor), "%s", mrd_http_request_principal(req));
    snprintf(q->reason, sizeof(q->reason), "%s",
             reason ? reason
                    : (kind == MRD_OP_SWITCHOVER ? "planned switchover" : "manual failover"));
    const char *key = mrd_http_request_header(req, "Idempotency-Key");
    if (key)
        snprintf(q->key, sizeof(q->key), "%s", key);
    json_decref(body);
    /* A retry with the key gets the operation it started, whatever the
     * topology became since (running: a conflict; done: already primary).
     * A key expires 24 hours after its operation finished (as payment APIs
     * do): the statement frees it, and the request starts a new operation. */
    if (q->key[0]) {
        const char *params[2] = {q->key, q->service};
        if (mrd_pg_query(ctl->pg,
                         "WITH x AS (UPDATE meridian.operations SET idempotency_key = NULL"
                         "  WHERE idempotency_key = $1 AND service = $2"
                         "  AND finished_at < now() - interval '24 hours' RETURNING id)"
                         " SELECT id FROM meridian.operations"
                         " WHERE idempotency_key = $1 AND service = $2"
                         " AND id NOT IN (SELECT id FROM x)",
                         2, params, idem_done, q) != 0) {
            mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
            free(q);
        }
        return;
    }
    start_checked(q);
    free(q);
}

static void h_switchover(mrd_http_request *req, mrd_http_response *res, void *data)
{
    h_start(req, res, data, MRD_OP_SWITCHOVER);
}

static void h_failover(mrd_http_request *req, mrd_http_response *res, void *data)
{
    h_start(req, res, data, MRD_OP_FAILOVER);
}

typedef struct {
    mrd_ctl *ctl;
    mrd_http_response *res;
    int enabled;
} maint_req;

static void maint_done(int err, PGresult *r, void *data)
{
    maint_req *q = data;
    if (err != 0)
        mrd_http_respond_error(q->res, err == MRD_EIO ? 500 : 503, "store_unavailable",
                               err == MRD_EIO ? PQresultErrorMessage(r) : "store is not reachable");
    else if (PQntuples(r) != 1)
        mrd_http_respond_error(q->res, 503, "not_leader", "this controller lost the lease");
    else {
        q->ctl->tick_wanted = 1;
        mrd_http_respond_json(q->res, 200, json_pack("{s:b}", "maintenance", q->enabled));
    }
    free(q);
}

static void h_maintenance(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__service *s = mrd__api_service_or_404(ctl, req, res);
    if (s == NULL)
        return;
    json_t *body = mrd_http_request_json(req, res);
    if (body == NULL)
        return;
    static const char *const keys[] = {"enabled", "reason", NULL};
    if (check_body(body, keys, "bS", res) != 0) {
        json_decref(body);
        return;
    }
    if (!json_is_boolean(json_object_get(body, "enabled"))) {
        json_decref(body);
        mrd_http_respond_error(res, 400, "bad_request", "enabled: must be a boolean");
        return;
    }
    if (require_leader(ctl, req, res) != 0) {
        json_decref(body);
        return;
    }
    maint_req *q = malloc(sizeof(*q));
    if (q == NULL) {
        json_decref(body);
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    q->ctl = ctl;
    q->res = res;
    q->enabled = json_is_true(json_object_get(body, "enabled"));
    const char *reason = json_string_value(json_object_get(body, "reason"));
    char term[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    const char *params[6] = {ctl->cfg.name,
                             term,
                             s->name,
                             q->enabled ? "true" : "false",
                             reason ? reason : "",
                             mrd_http_request_principal(req)};
    int rc = mrd_pg_query(
        ctl->pg,
        "WITH u AS (UPDATE meridian.services SET maintenance = $4::boolean,"
        "  maintenance_reason = NULLIF($5, ''), updated_at = now()"
        "  WHERE name = $3 AND meridian.is_leader($1, $2::bigint) RETURNING name),"
        " e AS (INSERT INTO meridian.events (kind, service, actor, term, message, detail)"
        "  SELECT 'maintenance', $3, $6, $2::bigint,"
        "   CASE WHEN $4::boolean THEN 'maintenance on' ELSE 'maintenance off' END"
        "   || CASE WHEN $5 = '' THEN '' ELSE ': ' || $5 END,"
        "   jsonb_build_object('enabled', $4::boolean) FROM u RETURNING 1)"
        " SELECT name FROM u",
        6, params, maint_done, q);
    json_decref(body);
    if (rc != 0) {
        free(q);
        mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
    }
}

static const mrd_http_route op_routes[] = {
    {"GET", "/v1/services", MRD_ROLES_READ, h_services},
    {"GET", "/v1/services/{svc}", MRD_ROLES_READ, h_service},
    {"GET", "/v1/services/{svc}/plan", MRD_ROLES_READ, h_plan},
    {"POST", "/v1/services/{svc}/switchover", MRD_ROLE_OPERATOR, h_switchover},
    {"POST", "/v1/services/{svc}/failover", MRD_ROLE_OPERATOR, h_failover},
    {"PUT", "/v1/services/{svc}/maintenance", MRD_ROLE_OPERATOR, h_maintenance},
    {"GET", "/v1/regions", MRD_ROLES_READ, h_regions},
    {"GET", "/v1/nodes", MRD_ROLES_READ, h_nodes},
    {"GET", "/v1/nodes/{node}", MRD_ROLES_READ, h_node},
    {"GET", "/v1/operations", MRD_ROLES_READ, h_operations},
    {"GET", "/v1/operations/{id}", MRD_ROLES_READ, h_operation},
    {"GET", "/v1/events", MRD_ROLES_READ, h_events},
};

const mrd_http_route *mrd__api_ops_routes(size_t *n)
{
    *n = sizeof(op_routes) / sizeof(op_routes[0]);
    return op_routes;
}
