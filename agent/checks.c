/*
 * Scheduled health checks and cross-region probes of the agent. Each check
 * has its own repeating timer (interval_ms); a run that is still in flight
 * when the timer fires again is not doubled. Kinds:
 *   postgresql  a query (default SELECT 1) on a persistent reconnecting
 *               connection (pg.h) whose query timeout is the check's timeout
 *   http        GET through the shared HTTP client; 2xx (or expect_status),
 *               and the body contains expect_body when one is set
 *   tcp         uv_tcp_connect with a timer that abandons it at timeout
 *   exec        a child process (exec.c): exit 0 passes
 * A failing check takes its weight (critical or warning). Probes are tcp,
 * http or postgresql checks whose result is reported as {region, target, ok,
 * latency_ms, error}; a postgresql probe opens a new connection for every
 * run (pg_probe.c: connect and query within its one timeout), since a kept
 * connection or a TCP connect says nothing about a server that hangs.
 *
 * Nothing here blocks; every run ends within its timeout. On stop the timers
 * are closed; runs in flight complete (bounded by their timeouts) into
 * structs that main.c frees only after the loop has ended.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "meridian/error.h"
#include "meridian/log.h"

static void finish(mrd__check *c, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish(mrd__check *c, int ok, const char *fmt, ...)
{
    va_list ap;
    uint64_t now = mrd__now_ms(c->agent);
    c->in_flight = 0;
    c->have_result = 1;
    c->ok = ok;
    c->duration_ms = now - c->started_ms;
    c->latency_ms = (double)c->duration_ms;
    c->status =
        ok ? MRD_CHECK_PASSING : (c->cfg->critical ? MRD_CHECK_CRITICAL : MRD_CHECK_WARNING);
    va_start(ap, fmt);
    vsnprintf(c->output, sizeof(c->output), fmt, ap);
    va_end(ap);
    if (!ok)
        mrd_log(MRD_LOG_DEBUG, "check failed", MRD_S("check", c->cfg->name),
                MRD_S("output", c->output));
}

/* ---- postgresql ---- */

static void on_pg(int err, PGresult *res, void *data)
{
    mrd__check *c = data;
    if (err == 0)
        finish(c, 1, "ok");
    else if (err == MRD_EIO && res)
        finish(c, 0, "%s", PQresultErrorMessage(res));
    else
        finish(c, 0, "%s", mrd_strerror(err));
}

/* A probe: a new connection every run (pg_probe.c), never the kept one */
static void on_pg_probe(int ok, const char *message, void *data)
{
    finish(data, ok, "%s", message);
}

static void run_pg_probe(mrd__check *c)
{
    mrd__pg_probe_run(c->agent->loop, c->cfg->conninfo, c->cfg->query, c->cfg->timeout_ms,
                      on_pg_probe, c);
}

static void run_pg(mrd__check *c)
{
    int rc = c->pg ? mrd_pg_query(c->pg, c->cfg->query, 0, NULL, on_pg, c) : MRD_ESTORE;
    if (rc)
        finish(c, 0, "%s", rc == MRD_ESTORE ? "not connected" : mrd_strerror(rc));
}

/* ---- http ---- */

/* Whether the len bytes at body (which may hold NULs) contain needle. */
static int contains(const char *body, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n <= len && i <= len - n; i++)
        if (memcmp(body + i, needle, n) == 0)
            return 1;
    return 0;
}

static void on_http(const mrd_http_client_result *r, void *data)
{
    mrd__check *c = data;
    int expect = c->cfg->expect_status;
    int status_ok = expect ? r->status == expect : (r->status >= 200 && r->status < 300);
    if (r->error)
        finish(c, 0, "%s", r->error);
    else if (!status_ok)
        finish(c, 0, "HTTP %d", r->status);
    else if (c->cfg->expect_body && !contains(r->body, r->body_len, c->cfg->expect_body))
        finish(c, 0, "HTTP %d, body lacks \"%.64s\"", r->status, c->cfg->expect_body);
    else
        finish(c, 1, "HTTP %d", r->status);
}

static void run_http(mrd__check *c)
{
    mrd_http_client_req req = {0};
    req.method = "GET";
    req.url = c->cfg->url;
    req.timeout_ms = (long)c->cfg->timeout_ms;
    req.max_response_bytes = 64 * 1024;
    int rc = mrd_http_client_request(c->agent->http, &req, on_http, c);
    if (rc)
        finish(c, 0, "%s", mrd_strerror(rc));
}

/* ---- tcp ---- */

typedef struct {
    mrd__check *check;
    uv_getaddrinfo_t gai;
    uv_tcp_t tcp;
    uv_connect_t conn;
    uv_timer_t timer;
    int tcp_open, done, gai_pending, open;
    char host[256];
    char port[8];
} tcp_run;

/* Freed once the result is in, the resolver has answered and every handle
 * is closed. */
static void tcp_free_if_done(tcp_run *t)
{
    if (t->done && !t->gai_pending && t->open == 0)
        free(t);
}

static void tcp_closed(uv_handle_t *h)
{
    tcp_run *t = h->data;
    t->open--;
    tcp_free_if_done(t);
}

static void tcp_done(tcp_run *t, int ok, const char *why)
{
    if (t->done)
        return;
    t->done = 1;
    if (ok)
        finish(t->check, 1, "connected");
    else
        finish(t->check, 0, "connect %s:%s: %s", t->host, t->port, why);
    t->open = 1 + t->tcp_open;
    uv_close((uv_handle_t *)&t->timer, tcp_closed);
    if (t->tcp_open)
        uv_close((uv_handle_t *)&t->tcp, tcp_closed);
}

static void tcp_on_connect(uv_connect_t *req, int status)
{
    tcp_run *t = req->data;
    if (t->done)
        return; /* timed out already; the handle is closing */
    tcp_done(t, status == 0, status ? uv_strerror(status) : NULL);
}

static void tcp_on_timeout(uv_timer_t *h)
{
    tcp_done(h->data, 0, "timeout");
}

static void tcp_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    tcp_run *t = req->data;
    t->gai_pending = 0;
    if (t->done) {
        uv_freeaddrinfo(res);
        tcp_free_if_done(t);
        return;
    }
    if (status != 0 || !res) {
        uv_freeaddrinfo(res);
        tcp_done(t, 0, status ? uv_strerror(status) : "no address");
        return;
    }
    uv_tcp_init(t->check->agent->loop, &t->tcp);
    t->tcp.data = t;
    t->tcp_open = 1;
    t->conn.data = t;
    int rc = uv_tcp_connect(&t->conn, &t->tcp, res->ai_addr, tcp_on_connect);
    uv_freeaddrinfo(res);
    if (rc)
        tcp_done(t, 0, uv_strerror(rc));
}

static void run_tcp(mrd__check *c)
{
    tcp_run *t = calloc(1, sizeof(*t));
    if (!t) {
        finish(c, 0, "out of memory");
        return;
    }
    t->check = c;
    const char *target = c->cfg->host;
    const char *colon = strrchr(target, ':');
    size_t hl = (size_t)(colon - target);
    if (hl >= sizeof(t->host))
        hl = sizeof(t->host) - 1;
    memcpy(t->host, target, hl);
    t->host[hl] = '\0';
    if (t->host[0] == '[' && hl > 2 && t->host[hl - 1] == ']') {
        memmove(t->host, t->host + 1, hl - 2);
        t->host[hl - 2] = '\0';
    }
    snprintf(t->port, sizeof(t->port), "%d", c->cfg->port);
    uv_timer_init(c->agent->loop, &t->timer);
    t->timer.data = t;
    t->gai.data = t;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    uv_timer_start(&t->timer, tcp_on_timeout, c->cfg->timeout_ms, 0);
    t->gai_pending = 1;
    int rc = uv_getaddrinfo(c->agent->loop, &t->gai, tcp_on_resolved, t->host, t->port, &hints);
    if (rc) {
        t->gai_pending = 0;
        tcp_done(t, 0, uv_strerror(rc));
    }
}

/* ---- exec ---- */

static void on_exec(int status, int timed_out, const char *output, void *data)
{
    mrd__check *c = data;
    if (timed_out)
        finish(c, 0, "timeout after %llu ms: %s", (unsigned long long)c->cfg->timeout_ms, output);
    else if (status == 0)
        finish(c, 1, "%s", output);
    else if (status == -2)
        finish(c, 0, "%s", output);
    else
        finish(c, 0, "exit %d: %s", status, output);
}

static void run_exec(mrd__check *c)
{
    int rc = mrd__exec_start(c->agent->loop, c->cfg->argv, NULL, c->cfg->timeout_ms,
                             MRD_PROTO_OUTPUT_MAX - 64, on_exec, c, NULL);
    if (rc)
        finish(c, 0, "%s", mrd_strerror(rc));
}

/* ---- schedule ---- */

static void on_timer(uv_timer_t *t)
{
    mrd__check *c = t->data;
    if (c->in_flight || c->agent->stopping)
        return;
    c->in_flight = 1;
    c->started_ms = mrd__now_ms(c->agent);
    switch (c->cfg->kind) {
    case MRD__CHECK_PG:
        if (c->is_probe)
            run_pg_probe(c);
        else
            run_pg(c);
        break;
    case MRD__CHECK_HTTP:
        run_http(c);
        break;
    case MRD__CHECK_TCP:
        run_tcp(c);
        break;
    case MRD__CHECK_EXEC:
        run_exec(c);
        break;
    }
}

static int start_one(mrd__agent *a, mrd__check *c, const mrd__check_cfg *cfg, int probe)
{
    c->agent = a;
    c->cfg = cfg;
    c->is_probe = probe;
    if (cfg->kind == MRD__CHECK_PG && !probe) {
        mrd_pg_options o = {0};
        o.conninfo = cfg->conninfo;
        o.query_timeout_ms = cfg->timeout_ms;
        o.connect_timeout_ms = cfg->timeout_ms;
        o.reconnect_max_ms = cfg->interval_ms;
        int rc = mrd_pg_start(&c->pg, a->loop, &o);
        if (rc)
            return rc;
    }
    uv_timer_init(a->loop, &c->timer);
    c->timer.data = c;
    /* first run soon (staggered a little), then every interval */
    uv_timer_start(&c->timer, on_timer, 10, cfg->interval_ms);
    return 0;
}

int mrd__checks_start(mrd__agent *a)
{
    a->checks = calloc(a->cfg.nchecks + 1, sizeof(*a->checks));
    a->probes = calloc(a->cfg.nprobes + 1, sizeof(*a->probes));
    if (!a->checks || !a->probes)
        return MRD_ENOMEM;
    for (size_t i = 0; i < a->cfg.nchecks; i++) {
        int rc = start_one(a, &a->checks[i], &a->cfg.checks[i], 0);
        if (rc)
            return rc;
        a->nchecks++;
    }
    for (size_t i = 0; i < a->cfg.nprobes; i++) {
        int rc = start_one(a, &a->probes[i], &a->cfg.probes[i], 1);
        if (rc)
            return rc;
        a->nprobes++;
    }
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    mrd__check *c = h->data;
    mrd__agent_handle_closed(c->agent);
}

static void pg_closed(void *arg)
{
    mrd__agent_handle_closed(arg);
}

static void stop_list(mrd__agent *a, mrd__check *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        mrd__check *c = &list[i];
        a->open_handles++;
        uv_close((uv_handle_t *)&c->timer, timer_closed);
        if (c->pg) {
            a->open_handles++;
            mrd_pg_stop(c->pg, pg_closed, a);
            c->pg = NULL;
        }
    }
}

void mrd__checks_stop(mrd__agent *a)
{
    stop_list(a, a->checks, a->nchecks);
    stop_list(a, a->probes, a->nprobes);
}

int mrd__checks_member_healthy(const mrd__agent *a, const char *member)
{
    for (size_t i = 0; i < a->nchecks; i++) {
        const mrd__check *c = &a->checks[i];
        if (!c->cfg->critical || !c->have_result || c->ok)
            continue;
        if (!c->cfg->member || (member && strcmp(c->cfg->member, member) == 0))
            return 0;
    }
    return 1;
}
