/*
 * Peer leases over HTTP (docs/design.md, peer leases; rules in lease.c).
 *
 * Server: POST /v1/peer/lease on the agent's listen address, bearer tokens
 * of role agent (peer_tokens). The agent grants or refuses a lease for the
 * service of its local member: refused when it has no member of that
 * service, when its member is itself a writable primary, when it has seen a
 * higher epoch, or when it was ordered to promote at the lease's epoch.
 *
 * Peer set: per member, the controller's peers of its service (last answer
 * that carried them) plus the configured peers serving it; a configured
 * entry matching a controller peer (by node or member name) supplies its
 * token, a controller peer without one gets peer_token. Lease state is kept
 * by peer name across answers; an entry that left the set is dropped once
 * no request to it is in flight.
 *
 * Client: every heartbeat, the agent of each writable primary member asks
 * every peer of its set for a lease of isolation_timeout_ms, at most one
 * request per peer in flight, and counts a grant from the time the request
 * was sent.
 *
 * Poke: POST /v1/agent/poke {"commands": [...]} from a controller (its
 * agent token must be among peer_tokens): the commands are handled as if
 * they came in a heartbeat answer, and a heartbeat goes out at once.
 *
 * Failures of the client are not errors: a lease that is not renewed
 * simply ends. Bad requests to the server get 400 with the field named.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "meridian/error.h"
#include "meridian/log.h"

/* Refusals are logged at warn at most every 5 s per member, else debug:
 * a primary asks every heartbeat. */
static mrd_log_level lease_log_level(mrd__agent *a, mrd__member *m, int granted)
{
    if (granted)
        return MRD_LOG_DEBUG;
    if (!m)
        return MRD_LOG_WARN;
    uint64_t now = mrd__now_ms(a);
    if (m->lease_logged_ms && now - m->lease_logged_ms < 5000)
        return MRD_LOG_DEBUG;
    m->lease_logged_ms = now;
    return MRD_LOG_WARN;
}

/* ---- server ---- */

static void on_lease(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd__agent *a = data;
    char err[256];
    json_t *j = mrd_http_request_json(req, res);
    if (!j)
        return;
    mrd_lease_request lr;
    int rc = mrd_lease_request_from_json(j, &lr, err, sizeof(err));
    json_decref(j);
    if (rc) {
        mrd_http_respond_error(res, 400, mrd_err_name(rc), err);
        return;
    }
    mrd_lease_answer ans;
    memset(&ans, 0, sizeof(ans));
    mrd__member *m = mrd__member_of_service(a, lr.service);
    int64_t highest = mrd__epoch_store_epoch(a->epochs, lr.service);
    if (!m) {
        ans.epoch = highest;
        snprintf(ans.reason, sizeof(ans.reason), "no member of service %s on this node",
                 lr.service);
    } else if (m->role == MRD_MEMBER_PRIMARY) {
        ans.epoch = highest;
        snprintf(ans.reason, sizeof(ans.reason), "member %s is a writable primary", m->cfg->name);
    } else {
        mrd__lease_grant(&m->grants, highest, &lr, mrd__now_ms(a), a->cfg.isolation_timeout_ms,
                         &ans);
    }
    mrd_log(lease_log_level(a, m, ans.granted),
            ans.granted ? "peer lease granted" : "peer lease refused", MRD_S("from", lr.node),
            MRD_S("service", lr.service), MRD_I("epoch", lr.epoch), MRD_I("ttl_ms", ans.ttl_ms),
            MRD_S("reason", ans.reason));
    json_t *out = mrd_lease_answer_to_json(&ans);
    if (!out) {
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    mrd_http_respond_json(res, 200, out);
}

/* A controller pushes the node's pending commands and asks for a heartbeat
 * now. The commands go through the same path as those of an answer (epoch
 * check, at-most-once), so a poke can never do what a heartbeat could not. */
static void on_poke(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd__agent *a = data;
    char err[256];
    json_t *j = mrd_http_request_json(req, res);
    if (!j)
        return;
    mrd_hb_answer poke;
    int rc = mrd_hb_poke_from_json(j, &poke, err, sizeof(err));
    json_decref(j);
    if (rc) {
        mrd_http_respond_error(res, 400, mrd_err_name(rc), err);
        return;
    }
    mrd_log(MRD_LOG_DEBUG, "poked", MRD_S("by", mrd_http_request_principal(req)),
            MRD_U("commands", poke.ncommands));
    for (size_t i = 0; i < poke.ncommands; i++)
        mrd__commands_handle(a, &poke.commands[i]);
    size_t n = poke.ncommands;
    mrd_hb_answer_free(&poke);
    mrd__heartbeat_asap(a);
    mrd_http_respond_json(res, 200, json_pack("{s:b, s:I}", "ok", 1, "accepted", (json_int_t)n));
}

static const mrd_http_route routes[] = {
    {"POST", "/v1/peer/lease", MRD_ROLE_AGENT, on_lease},
    {"POST", "/v1/agent/poke", MRD_ROLE_AGENT, on_poke},
};

int mrd__peer_server_start(mrd__agent *a)
{
    if (a->cfg.listen_port < 0)
        return 0;
    char err[256];
    int rc = mrd_auth_init(&a->auth, a->cfg.peer_tokens, err, sizeof(err));
    if (rc) {
        mrd_log(MRD_LOG_ERROR, "invalid peer_tokens", MRD_S("error", err));
        return rc;
    }
    mrd_http_server_options o;
    memset(&o, 0, sizeof(o));
    o.host = a->cfg.listen_host;
    o.port = a->cfg.listen_port;
    o.max_body_bytes = 16 * 1024;
    o.read_timeout_ms = 5000;
    o.max_connections = a->http_max_connections ? a->http_max_connections : PEER_MAX_CONNECTIONS;
    o.max_connections_per_client = PEER_MAX_PER_CLIENT;
    o.routes = routes;
    o.nroutes = sizeof(routes) / sizeof(routes[0]);
    o.auth = a->auth;
    o.data = a;
    rc = mrd_http_server_start(&a->server, a->loop, &o);
    if (rc) {
        mrd_log(MRD_LOG_ERROR, "cannot listen", MRD_S("host", a->cfg.listen_host),
                MRD_I("port", a->cfg.listen_port), MRD_I("error", rc));
        return rc;
    }
    mrd_log(MRD_LOG_INFO, "peer api listening", MRD_S("host", a->cfg.listen_host),
            MRD_I("port", mrd_http_server_port(a->server)));
    return 0;
}

static void server_stopped(void *arg)
{
    mrd__agent_handle_closed(arg);
}

void mrd__peer_server_stop(mrd__agent *a)
{
    if (a->server) {
        a->open_handles++;
        mrd_http_server_stop(a->server, server_stopped, a);
        a->server = NULL;
    }
}

/* ---- the peer set ---- */

static int peer_serves(const mrd__peer_cfg *p, const char *service)
{
    if (!p->services)
        return 1;
    for (size_t i = 0; p->services[i]; i++)
        if (strcmp(p->services[i], service) == 0)
            return 1;
    return 0;
}

static mrd__peer_state *peer_find(mrd__member *m, const char *name)
{
    for (size_t i = 0; i < m->npeers; i++)
        if (strcmp(m->peers[i].name, name) == 0)
            return &m->peers[i];
    return NULL;
}

/* The entry named name, added unlisted (lease state empty) when missing;
 * NULL when the set is full. */
static mrd__peer_state *peer_get(mrd__member *m, const char *name)
{
    mrd__peer_state *p = peer_find(m, name);
    if (p || m->npeers >= MRD__MAX_PEERS)
        return p;
    p = &m->peers[m->npeers++];
    memset(p, 0, sizeof(*p));
    mrd__strlcpy(p->name, name, sizeof(p->name));
    return p;
}

/* Rebuilds m's set: the controller's peers of its service (when an answer
 * carried them), then every configured peer serving it. A configured entry
 * whose name is a controller peer's node or member supplies the token (and
 * the URL where the controller configures none); any other configured entry
 * adds a peer. A controller peer without a configured entry gets peer_token.
 * Entries that left the set are dropped once no request to them is in flight. */
static void peer_set_build(mrd__agent *a, mrd__member *m)
{
    const char *service = m->cfg->service;
    const mrd__service_view *sv = mrd__service_find(a, service);
    int told = sv && sv->have_peers;
    for (size_t i = 0; i < m->npeers; i++) {
        m->peers[i].listed = m->peers[i].from_controller = m->peers[i].from_config = 0;
        m->peers[i].token = NULL;
    }
    for (size_t i = 0; told && i < sv->npeers; i++) {
        const mrd_hb_peer *cp = &sv->peers[i];
        if (strcmp(cp->node, a->cfg.node) == 0)
            continue; /* this node's own member is no peer of itself */
        mrd__peer_state *p = peer_get(m, cp->node);
        if (!p)
            break;
        p->listed = p->from_controller = 1;
        mrd__strlcpy(p->member, cp->member, sizeof(p->member));
        mrd__strlcpy(p->url, cp->agent_url, sizeof(p->url));
    }
    for (size_t k = 0; k < a->cfg.npeers; k++) {
        const mrd__peer_cfg *c = &a->cfg.peers[k];
        if (!peer_serves(c, service))
            continue;
        mrd__peer_state *p = NULL;
        for (size_t i = 0; i < m->npeers && !p; i++)
            if (m->peers[i].from_controller && (strcmp(m->peers[i].name, c->name) == 0 ||
                                                strcmp(m->peers[i].member, c->name) == 0))
                p = &m->peers[i];
        if (!p && !(p = peer_get(m, c->name)))
            break;
        p->listed = p->from_config = 1;
        p->token = c->token;
        if (!p->from_controller) {
            p->member[0] = '\0';
            mrd__strlcpy(p->url, c->url, sizeof(p->url));
        } else if (p->url[0] == '\0') {
            mrd__strlcpy(p->url, c->url, sizeof(p->url));
        }
        if (told && !p->from_controller && !p->logged) {
            p->logged = 1;
            mrd_log(MRD_LOG_WARN, "configured peer unknown to the controller",
                    MRD_S("peer", c->name), MRD_S("service", service),
                    MRD_S("hint", "its lease is required too; the leader raises an alert"));
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < m->npeers; i++) {
        mrd__peer_state *p = &m->peers[i];
        if (p->from_controller && !p->from_config)
            p->token = a->cfg.peer_token;
        if (p->listed || p->busy)
            m->peers[n++] = *p;
    }
    m->npeers = n;
}

int mrd__peer_set_init(mrd__agent *a, mrd__member *m)
{
    m->peers = calloc(MRD__MAX_PEERS, sizeof(*m->peers));
    if (!m->peers)
        return MRD_ENOMEM;
    m->npeers = 0;
    peer_set_build(a, m);
    return 0;
}

void mrd__peer_set_refresh(mrd__agent *a)
{
    for (size_t i = 0; i < a->nmembers; i++)
        if (a->members[i].peers)
            peer_set_build(a, &a->members[i]);
}

int mrd__peer_report(mrd__agent *a, const mrd__member *m, mrd_hb_member *x)
{
    if (m->role != MRD_MEMBER_PRIMARY || m->fenced || !m->peers)
        return 0;
    uint64_t now = mrd__now_ms(a);
    x->leases_required = calloc(m->npeers + 1, sizeof(*x->leases_required));
    x->leases_held = calloc(m->npeers + 1, sizeof(*x->leases_held));
    if (!x->leases_required || !x->leases_held)
        return MRD_ENOMEM;
    x->have_leases = 1;
    for (size_t i = 0; i < m->npeers && x->nleases_required < MRD_PROTO_MAX_PEERS; i++) {
        const mrd__peer_state *p = &m->peers[i];
        if (!p->listed)
            continue;
        mrd__strlcpy(x->leases_required[x->nleases_required++].name, p->name, MRD_PROTO_NAME_MAX);
        if (p->until > now)
            mrd__strlcpy(x->leases_held[x->nleases_held++].name, p->name, MRD_PROTO_NAME_MAX);
    }
    return 0;
}

/* ---- client ---- */

typedef struct {
    mrd__agent *agent;
    size_t member;
    char peer[MRD_PROTO_NAME_MAX];
    uint64_t sent_ms;
} lease_call;

static void on_lease_answer(const mrd_http_client_result *r, void *data)
{
    lease_call *call = data;
    mrd__agent *a = call->agent;
    mrd__member *m = &a->members[call->member];
    mrd__peer_state *p = peer_find(m, call->peer);
    if (p)
        p->busy = 0;
    if (r->error || r->status != 200) {
        mrd_log(MRD_LOG_DEBUG, "peer lease request failed", MRD_S("peer", call->peer),
                MRD_I("status", r->status), MRD_S("error", r->error ? r->error : r->body));
        free(call);
        return;
    }
    json_error_t jerr;
    char err[256];
    mrd_lease_answer ans;
    json_t *j = json_loadb(r->body, r->body_len, 0, &jerr);
    int rc = j ? mrd_lease_answer_from_json(j, &ans, err, sizeof(err)) : MRD_EPARSE;
    json_decref(j);
    if (rc) {
        mrd_log(MRD_LOG_WARN, "bad peer lease answer", MRD_S("peer", call->peer),
                MRD_S("error", j ? err : jerr.text));
        free(call);
        return;
    }
    if (!ans.granted)
        mrd_log(lease_log_level(a, m, 0), "peer refused a lease", MRD_S("peer", call->peer),
                MRD_S("service", m->cfg->service), MRD_I("epoch", ans.epoch),
                MRD_S("reason", ans.reason));
    if (p)
        mrd__lease_record(&p->until, call->sent_ms, &ans);
    free(call);
}

void mrd__peer_renew(mrd__agent *a)
{
    if (a->stopping)
        return;
    for (size_t i = 0; i < a->nmembers; i++) {
        mrd__member *m = &a->members[i];
        if (m->role != MRD_MEMBER_PRIMARY || m->fenced)
            continue;
        for (size_t k = 0; k < m->npeers; k++) {
            mrd__peer_state *p = &m->peers[k];
            if (!p->listed || p->busy)
                continue;
            if (!p->url[0] || !p->token) {
                if (!p->logged)
                    mrd_log(MRD_LOG_WARN, "cannot ask a peer for a lease", MRD_S("peer", p->name),
                            MRD_S("service", m->cfg->service),
                            MRD_S("error", p->url[0] ? "no token: set peer_token or configure "
                                                       "the peer in peers"
                                                     : "no agent URL known"));
                p->logged = 1;
                continue;
            }
            mrd_lease_request lr;
            memset(&lr, 0, sizeof(lr));
            snprintf(lr.service, sizeof(lr.service), "%s", m->cfg->service);
            snprintf(lr.node, sizeof(lr.node), "%s", a->cfg.node);
            lr.epoch = mrd__epoch_store_epoch(a->epochs, m->cfg->service);
            lr.ttl_ms = (int64_t)mrd__lease_request_ttl(a->cfg.isolation_timeout_ms);
            json_t *j = mrd_lease_request_to_json(&lr);
            char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
            lease_call *call = calloc(1, sizeof(*call));
            char url[1100], auth[1100];
            snprintf(url, sizeof(url), "%s/v1/peer/lease", p->url);
            snprintf(auth, sizeof(auth), "Authorization: Bearer %s", p->token);
            const char *headers[] = {auth, "Content-Type: application/json", NULL};
            mrd_http_client_req req;
            memset(&req, 0, sizeof(req));
            req.method = "POST";
            req.url = url;
            req.body = body;
            req.body_len = body ? strlen(body) : 0;
            req.headers = headers;
            req.timeout_ms = (long)a->cfg.request_timeout_ms;
            req.max_response_bytes = 16 * 1024;
            if (body && call) {
                call->agent = a;
                call->member = i;
                mrd__strlcpy(call->peer, p->name, sizeof(call->peer));
                call->sent_ms = mrd__now_ms(a);
                mrd_log(MRD_LOG_DEBUG, "peer lease requested", MRD_S("peer", p->name),
                        MRD_S("url", p->url), MRD_S("service", m->cfg->service),
                        MRD_S("source", p->from_controller
                                            ? (p->from_config ? "controller+config" : "controller")
                                            : "config"));
                if (mrd_http_client_request(a->http, &req, on_lease_answer, call) == 0) {
                    p->busy = 1;
                    call = NULL;
                }
            }
            free(call);
            free(body);
        }
    }
}

size_t mrd__peer_untils(const mrd__agent *a, const mrd__member *m, uint64_t *untils)
{
    (void)a;
    size_t n = 0;
    for (size_t k = 0; k < m->npeers && n < MRD__MAX_PEERS; k++)
        if (m->peers[k].listed)
            untils[n++] = m->peers[k].until;
    return n;
}
