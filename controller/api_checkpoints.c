/*
 * The checkpoint API (routes merged into the table by api.c):
 *
 *   POST /v1/services/{svc}/checkpoints            operator, app
 *        body optional {"position": "0/3000148" | 50331976}
 *        201 {id, service, position, position_text, epoch, created_at, kind}
 *        400 malformed body or position; 422 position beyond the primary's
 *        known position; 503 primary position unknown / no leader / store.
 *        Without a position only the leader creates (307 to it otherwise);
 *        with one, any controller does.
 *   GET  /v1/services/{svc}/checkpoints?limit=&kind=&operation=   viewer+, app
 *        the newest checkpoints with the marks the leader stored
 *   GET  /v1/services/{svc}/checkpoints/{id}?wait_ms=N&regions=a,b viewer+, app
 *        long-poll: answers as soon as every named region (default: every
 *        region with a member of the service) reached it, or it is lost, or
 *        wait_ms (capped at 60000) passed: {id, position, position_text,
 *        epoch, created_at, reached: {region: time}, pending: [region],
 *        complete, lost, ...}. Any controller answers (it reads the store).
 *   GET  /v1/services/{svc}/recovery                viewer+, app
 *        per region: recovery_point, checkpoint_id, rpo_seconds, lag_bytes,
 *        lag_seconds.
 * Handlers never block: each queues one store query whose callback answers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_store.h"
#include "meridian/error.h"
#include "meridian/position.h"

#define ROLES_CKPT_READ  (MRD_ROLES_READ | MRD_ROLE_APP)
#define ROLES_CKPT_WRITE (MRD_ROLE_OPERATOR | MRD_ROLE_APP)

/* 307 to the leader, or 503 when none is known. */
static void redirect_to_leader(mrd_ctl *ctl, mrd_http_request *req, mrd_http_response *res)
{
    const mrd_lease_state *l = &ctl->lease;
    if (!mrd__lease_is_leader(ctl) && l->known && l->holder_url[0] &&
        l->holder_expires_at > mrd__now_ms() && strcmp(l->holder, ctl->cfg.name) != 0) {
        char loc[1024];
        const char *q = mrd_http_request_query(req);
        snprintf(loc, sizeof(loc), "%s%s%s%s", l->holder_url, mrd_http_request_path(req),
                 q[0] ? "?" : "", q);
        mrd_http_response_header(res, "Location", loc);
        mrd_http_respond_json(res, 307,
                              json_pack("{s:{s:s, s:s, s:s}}", "error", "code", "not_leader",
                                        "message",
                                        "this controller is not the leader; send writes to the "
                                        "leader (or give a position)",
                                        "leader_url", l->holder_url));
        return;
    }
    mrd_http_respond_error(res, 503, "no_leader",
                           "no leader is known right now; retry in a few seconds");
}

static void h_create(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__service *s = mrd__api_service_or_404(ctl, req, res);
    if (s == NULL)
        return;
    size_t len = 0;
    const char *raw = mrd_http_request_body(req, &len);
    int has_position = 0;
    uint64_t position = 0;
    if (raw && len > 0) {
        json_t *body = mrd_http_request_json(req, res);
        if (body == NULL)
            return;
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v)
        {
            if (strcmp(key, "position") != 0) {
                char msg[120];
                snprintf(msg, sizeof(msg), "%.60s: unknown field", key);
                json_decref(body);
                mrd_http_respond_error(res, 400, "bad_request", msg);
                return;
            }
        }
        json_t *p = json_object_get(body, "position");
        if (p && !json_is_null(p)) {
            if (mrd_pos_from_json(p, &position) != 0 || position == 0) {
                json_decref(body);
                mrd_http_respond_error(res, 400, "bad_position",
                                       "position: must be a position \"X/Y\" (hex, as "
                                       "pg_current_wal_lsn() prints it) or a positive integer");
                return;
            }
            has_position = 1;
        }
        json_decref(body);
    }
    int leader = mrd__lease_is_leader(ctl) && ctl->synced_term == ctl->lease.term;
    if (!has_position && !leader) {
        redirect_to_leader(ctl, req, res);
        return;
    }
    mrd__ckpt_create(ctl, res, s->name, has_position, position, mrd_http_request_principal(req),
                     !has_position);
}

typedef struct {
    mrd_ctl *ctl;
    mrd_http_response *res;
    char service[MRD_NAME_MAX];
    uint64_t id;
    char regions[MRD__CKPT_MAX_REGIONS][MRD_NAME_MAX];
    size_t nregions;
    uint64_t wait_ms;
    uint64_t deadline_ms;
} get_req;

static void get_done(int err, json_t *doc, void *data)
{
    get_req *q = data;
    if (err != 0) {
        mrd_http_respond_error(q->res, 503, "store_unavailable", "store is not reachable");
        free(q);
        return;
    }
    int status, done;
    json_t *a =
        mrd__ckpt_answer(q->ctl, doc, q->service, q->id, q->regions, q->nregions, &status, &done);
    if (status == 404 || a == NULL) {
        json_decref(a);
        mrd_http_respond_error(q->res, status == 404 ? 404 : 500,
                               status == 404 ? "not_found" : "internal",
                               status == 404 ? "no such checkpoint" : "out of memory");
    } else if (done || q->wait_ms == 0 || mrd__now_ms() >= q->deadline_ms || q->ctl->stopping) {
        mrd_http_respond_json(q->res, 200, a);
    } else {
        mrd__ckpt_wait_add(q->ctl, q->res, q->service, q->id, q->regions, q->nregions,
                           q->deadline_ms, a);
    }
    free(q);
}

static int parse_id(const char *id, uint64_t *out)
{
    char *end;
    long long v = strtoll(id ? id : "", &end, 10);
    if (id == NULL || *id == '\0' || *end != '\0' || v <= 0)
        return MRD_EINVAL;
    *out = (uint64_t)v;
    return 0;
}

static void h_get(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__service *s = mrd__api_service_or_404(ctl, req, res);
    if (s == NULL)
        return;
    get_req *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    q->ctl = ctl;
    q->res = res;
    snprintf(q->service, sizeof(q->service), "%s", s->name);
    char wait[32] = "", regions[1100] = "";
    int has_wait = mrd_http_request_query_param(req, "wait_ms", wait, sizeof(wait));
    int has_regions = mrd_http_request_query_param(req, "regions", regions, sizeof(regions));
    const char *bad = NULL;
    int n = 0;
    if (parse_id(mrd_http_request_param(req, "id"), &q->id) != 0)
        bad = "checkpoint id must be a positive integer";
    else if ((has_wait == 0 && strstr(mrd_http_request_query(req), "wait_ms=") != NULL) ||
             mrd__ckpt_parse_wait(wait, &q->wait_ms) != 0)
        bad = "wait_ms: must be a number of milliseconds (at most 60000 are used)";
    else if (has_regions &&
             (n = mrd__ckpt_parse_regions(regions, q->regions, MRD__CKPT_MAX_REGIONS)) <= 0)
        bad = "regions: must be a comma-separated list of distinct region names";
    for (int i = 0; bad == NULL && i < n; i++) {
        if (mrd__member_by_region(s, q->regions[i]) == NULL)
            bad = "regions: every region must have a member of the service";
    }
    if (bad == NULL && has_regions == 0 && strstr(mrd_http_request_query(req), "regions=") != NULL)
        bad = "regions: must be a comma-separated list of distinct region names";
    if (bad) {
        free(q);
        mrd_http_respond_error(res, 400, "bad_request", bad);
        return;
    }
    q->nregions = n > 0 ? (size_t)n : 0;
    q->deadline_ms = mrd__now_ms() + q->wait_ms;
    char ids[32];
    snprintf(ids, sizeof(ids), "[%llu]", (unsigned long long)q->id);
    if (mrd__ckpt_state_query(ctl, s->name, ids, 0, get_done, q) != 0) {
        free(q);
        mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
    }
}

typedef struct {
    mrd_ctl *ctl;
    mrd_http_response *res;
    char service[MRD_NAME_MAX];
} svc_req;

static int service_row_missing(json_t *doc, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "services"), i, e)
    {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && strcmp(n, name) == 0)
            return 0;
    }
    return 1;
}

static void recovery_done(int err, json_t *doc, void *data)
{
    svc_req *q = data;
    mrd__service *s = mrd__service_find(q->ctl, q->service);
    if (err != 0 || s == NULL)
        mrd_http_respond_error(q->res, 503, "store_unavailable", "store is not reachable");
    else if (service_row_missing(doc, s->name))
        mrd_http_respond_error(q->res, 404, "not_found", "no such service in the store yet");
    else
        mrd_http_respond_json(q->res, 200, mrd__ckpt_recovery_json(q->ctl, doc, s));
    free(q);
}

static void h_recovery(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__service *s = mrd__api_service_or_404(ctl, req, res);
    if (s == NULL)
        return;
    svc_req *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    q->ctl = ctl;
    q->res = res;
    snprintf(q->service, sizeof(q->service), "%s", s->name);
    if (mrd__ckpt_state_query(ctl, s->name, "[]", 200, recovery_done, q) != 0) {
        free(q);
        mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
    }
}

static void h_list(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__service *s = mrd__api_service_or_404(ctl, req, res);
    if (s == NULL)
        return;
    char limit[16] = "50", kind[16] = "", op[32] = "";
    mrd_http_request_query_param(req, "limit", limit, sizeof(limit));
    mrd_http_request_query_param(req, "kind", kind, sizeof(kind));
    mrd_http_request_query_param(req, "operation", op, sizeof(op));
    char *end;
    long long l = strtoll(limit, &end, 10);
    uint64_t opid = 0;
    if (*end || l < 1 || l > 1000) {
        mrd_http_respond_error(res, 400, "bad_request", "limit: must be between 1 and 1000");
        return;
    }
    if (kind[0] && strcmp(kind, "auto") != 0 && strcmp(kind, "manual") != 0 &&
        strcmp(kind, "barrier") != 0) {
        mrd_http_respond_error(res, 400, "bad_request", "kind: must be auto, manual or barrier");
        return;
    }
    if (op[0] && parse_id(op, &opid) != 0) {
        mrd_http_respond_error(res, 400, "bad_request", "operation: must be an operation id");
        return;
    }
    const char *params[4] = {s->name, kind, op, limit};
    mrd__api_respond_query(
        ctl, res,
        "SELECT json_build_object('service', $1::text, 'checkpoints',"
        " coalesce(json_agg(json_build_object('id', c.id, 'kind', c.kind,"
        " 'position', c.position, 'position_text', ('0/0'::pg_lsn + c.position)::text,"
        " 'epoch', c.epoch, 'timeline', c.timeline, 'created_at', c.created_at,"
        " 'position_at', c.position_at, 'actor', c.actor, 'operation_id', c.operation_id,"
        " 'complete', c.complete, 'lost', c.lost, 'lost_operation_id', c.lost_operation_id,"
        " 'reached', (SELECT coalesce(json_object_agg(r.region, r.reached_at), '{}')"
        "   FROM meridian.checkpoint_reached r WHERE r.checkpoint_id = c.id))"
        " ORDER BY c.id DESC), '[]'))"
        " FROM (SELECT * FROM meridian.checkpoints WHERE service = $1"
        "  AND ($2 = '' OR kind = $2) AND ($3 = '' OR operation_id = $3::bigint)"
        "  ORDER BY id DESC LIMIT $4::int) c",
        4, params, NULL);
}

static const mrd_http_route ckpt_routes[] = {
    {"POST", "/v1/services/{svc}/checkpoints", ROLES_CKPT_WRITE, h_create},
    {"GET", "/v1/services/{svc}/checkpoints", ROLES_CKPT_READ, h_list},
    {"GET", "/v1/services/{svc}/checkpoints/{id}", ROLES_CKPT_READ, h_get},
    {"GET", "/v1/services/{svc}/recovery", ROLES_CKPT_READ, h_recovery},
};

const mrd_http_route *mrd__api_checkpoints_routes(size_t *n)
{
    *n = sizeof(ckpt_routes) / sizeof(ckpt_routes[0]);
    return ckpt_routes;
}
