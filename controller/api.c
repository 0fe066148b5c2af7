/*
 * The controller's REST API: the routing table and the handlers that read
 * the controller's state. Handlers never block: what needs the store is a
 * queued query whose callback answers the request.
 *
 * Open:      GET /v1/health, GET /v1/ready
 * viewer+:   GET /v1/status
 * operator:  POST /v1/debug/guarded-write (only with "debug_endpoints": true;
 *            a write guarded by meridian.is_leader(), used by tests to show
 *            that a deposed leader cannot write)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/error.h"
#include "meridian/limits.h"

static void h_health(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)req;
    (void)data;
    mrd_http_respond_json(res, 200,
                          json_pack("{s:s, s:s}", "status", "ok", "version", MERIDIAN_VERSION));
}

static void h_ready(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    (void)req;
    /* both connections: without the ingest one no primary's heartbeat can
     * be recorded */
    if (!mrd_pg_connected(ctl->pg) || !mrd_pg_connected(ctl->pg_ingest)) {
        mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
        return;
    }
    if (!ctl->migrated) {
        mrd_http_respond_error(res, 503, "store_not_migrated", "store schema is not migrated yet");
        return;
    }
    mrd_http_respond_json(res, 200, json_pack("{s:b}", "ready", 1));
}

static json_t *leader_json(const mrd_ctl *ctl)
{
    const mrd_lease_state *l = &ctl->lease;
    uint64_t now = mrd__now_ms();
    if (mrd__lease_is_leader(ctl)) {
        return json_pack("{s:s, s:s, s:s, s:I, s:I}", "name", ctl->cfg.name, "region",
                         ctl->cfg.region, "url", ctl->cfg.advertise_url, "term",
                         (json_int_t)l->term, "expires_in_ms", (json_int_t)(l->valid_until - now));
    }
    if (!l->known || l->holder[0] == '\0' || l->holder_expires_at <= now)
        return json_null();
    return json_pack("{s:s, s:s, s:s, s:I, s:I}", "name", l->holder, "region", l->holder_region,
                     "url", l->holder_url, "term", (json_int_t)l->holder_term, "expires_in_ms",
                     (json_int_t)(l->holder_expires_at - now));
}

static void h_status(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    (void)req;
    int leader = mrd__lease_is_leader(ctl);
    json_t *body = json_pack("{s:{s:s, s:s, s:s, s:b, s:I}, s:o, s:{s:b, s:b}}", "controller",
                             "name", ctl->cfg.name, "region", ctl->cfg.region, "url",
                             ctl->cfg.advertise_url, "is_leader", leader, "term",
                             (json_int_t)ctl->lease.term, "leader", leader_json(ctl), "store",
                             "connected", mrd_pg_connected(ctl->pg), "migrated", ctl->migrated);
    /* services whose store epoch is below an agent's (the leader refuses
     * to decide for them until it moved the epoch past it) */
    json_t *behind = json_array();
    for (size_t i = 0; i < ctl->nservices; i++) {
        json_t *g = mrd__epoch_guard_json(ctl, &ctl->services[i]);
        if (g) {
            json_object_set_new(g, "service", json_string(ctl->services[i].name));
            json_array_append_new(behind, g);
        }
    }
    json_object_set_new(json_object_get(body, "store"), "epoch_behind", behind);
    mrd__api_status_services(ctl, res, body);
}

typedef struct {
    mrd_http_response *res;
    int local_leader;
    int64_t term;
} guarded_req;

static void guarded_done(int err, PGresult *r, void *data)
{
    guarded_req *g = data;
    if (err == MRD_ESTORE || err == MRD_ETIMEOUT || err == MRD_ECLOSED) {
        mrd_http_respond_error(g->res, 503, "store_unavailable", "store is not reachable");
    } else if (err != 0) {
        mrd_http_respond_error(g->res, 500, "store_error", PQresultErrorMessage(r));
    } else if (PQntuples(r) == 1) {
        mrd_http_respond_json(g->res, 200,
                              json_pack("{s:b, s:I, s:b}", "written", 1, "term",
                                        (json_int_t)g->term, "local_leader", g->local_leader));
    } else {
        mrd_http_respond_error(g->res, 409, "not_leader",
                               "the store refused the write: this controller does not hold the "
                               "lease in its term");
    }
    free(g);
}

static void h_guarded_write(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    if (!ctl->cfg.debug_endpoints) {
        mrd_http_respond_error(res, 404, "not_found", "no such endpoint");
        return;
    }
    guarded_req *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    g->res = res;
    g->local_leader = mrd__lease_is_leader(ctl);
    g->term = ctl->lease.term;
    char term[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    const char *params[3] = {ctl->cfg.name, term, mrd_http_request_principal(req)};
    int rc = mrd_pg_query(ctl->pg,
                          "INSERT INTO meridian.events (kind, actor, term, message) "
                          "SELECT 'debug', $3, $2::bigint, 'guarded write by ' || $1 "
                          "WHERE meridian.is_leader($1, $2::bigint) RETURNING id",
                          3, params, guarded_done, g);
    if (rc != 0) {
        free(g);
        mrd_http_respond_error(res, 503, "store_unavailable", "store is not reachable");
    }
}

static const mrd_http_route routes[] = {
    {"GET", "/v1/health", 0, h_health},
    {"GET", "/v1/ready", 0, h_ready},
    {"GET", "/v1/status", MRD_ROLES_READ, h_status},
    {"POST", "/v1/debug/guarded-write", MRD_ROLE_OPERATOR, h_guarded_write},
    {"POST", "/v1/agent/heartbeat", MRD_ROLE_AGENT, mrd__ingest_heartbeat},
};

int mrd__api_start(mrd_ctl *ctl)
{
    /* One table from the modules' tables. */
    size_t nbase = sizeof(routes) / sizeof(routes[0]), nops, nmetrics, nckpt;
    const mrd_http_route *ops = mrd__api_ops_routes(&nops);
    const mrd_http_route *metrics = mrd__metrics_routes(&nmetrics);
    const mrd_http_route *ckpt = mrd__api_checkpoints_routes(&nckpt);
    ctl->routes = calloc(nbase + nops + nmetrics + nckpt, sizeof(*ctl->routes));
    if (ctl->routes == NULL)
        return MRD_ENOMEM;
    memcpy(ctl->routes, routes, sizeof(routes));
    memcpy(ctl->routes + nbase, ops, nops * sizeof(*ops));
    memcpy(ctl->routes + nbase + nops, metrics, nmetrics * sizeof(*metrics));
    memcpy(ctl->routes + nbase + nops + nmetrics, ckpt, nckpt * sizeof(*ckpt));
    nops += nmetrics + nckpt;
    mrd_http_server_options opt;
    memset(&opt, 0, sizeof(opt));
    opt.host = ctl->cfg.listen_host;
    opt.port = ctl->cfg.listen_port;
    opt.routes = ctl->routes;
    opt.nroutes = nbase + nops;
    opt.auth = ctl->auth;
    opt.data = ctl;
    /* The connection cap leaves fds for the store connections, libcurl
     * (pokes, cutover calls, webhooks) and files. */
    mrd_fd_budget fdb;
    mrd_fd_budget_init(&fdb, 256, ctl->cfg.http_max_connections);
    opt.max_connections = fdb.max_connections;
    opt.max_connections_per_client = ctl->cfg.http_max_per_client;
    opt.header_timeout_ms = ctl->cfg.http_header_timeout_ms;
    mrd_log(MRD_LOG_INFO, "connection limits", MRD_U("nofile_before", fdb.soft_before),
            MRD_U("nofile", fdb.soft), MRD_U("nofile_hard", fdb.hard),
            MRD_U("reserve", fdb.reserve), MRD_U("max_connections", opt.max_connections),
            MRD_U("max_connections_per_client", opt.max_connections_per_client),
            MRD_U("header_timeout_ms", opt.header_timeout_ms));
    return mrd_http_server_start(&ctl->http, ctl->loop, &opt);
}
