/*
 * PostgreSQL on libuv: one libpq connection in non-blocking mode, for the
 * controller (store, lease, status batches) and the agent (checks). Connect
 * with PQconnectStart/PQconnectPoll on a uv_poll of PQsocket(), re-created
 * after every step (libpq may open a new socket with the old fd number);
 * then a FIFO of queries runs one at a time: PQsendQueryParams (text), PQflush
 * while it returns 1, PQconsumeInput/PQisBusy/PQgetResult when readable.
 *
 * Failure: a lost connection (read or flush error, EOF, CONNECTION_BAD, SQL
 * state class 08 or 57P) fails the query in flight and the queued ones with
 * MRD_ESTORE, reports on_state(0), reconnects after an exponential backoff
 * with jitter. A query past query_timeout_ms gets MRD_ETIMEOUT and the
 * connection is reset (no PQcancel: it blocks). With target_session_attrs
 * read-write/primary, a 25006 (read-only) error is delivered, then the
 * connection is reset so that libpq finds the read-write host again.
 * Invariants: no user callback runs inside mrd_pg_query or mrd_pg_start; the
 * state is re-checked after every call into user code, so callbacks may query
 * or stop; the struct is freed in the close callback of its last uv handle.
 */
#include "meridian/pg.h"
#include "meridian/error.h"
#include "meridian/log.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PG_DEFAULT_RECONNECT_MIN_MS   100
#define PG_DEFAULT_RECONNECT_MAX_MS   2000
#define PG_DEFAULT_CONNECT_TIMEOUT_MS 3000
#define PG_DEFAULT_QUERY_TIMEOUT_MS   5000
#define PG_DEFAULT_MAX_QUEUE          10000
#define PG_MAX_PARAMS                 65535

typedef enum { PG_WAITING, PG_CONNECTING, PG_CONNECTED, PG_STOPPING } pg_state;

typedef struct pg_query pg_query;
struct pg_query {
    pg_query *next;
    mrd_pg_result_cb cb;
    void *data;
    int nparams;
    const char *sql;
    const char **params; /* sql, params and their strings live in this allocation */
};

typedef struct {
    uv_poll_t h;
    mrd_pg *pg;
} pg_poll;

struct mrd_pg {
    uv_loop_t *loop;
    char *conninfo;
    uint64_t reconnect_min_ms, reconnect_max_ms, connect_timeout_ms, query_timeout_ms;
    size_t max_queue;
    mrd_pg_state_cb on_state;
    mrd_pg_notify_cb on_notify;
    void *data;

    pg_state state;
    PGconn *conn;
    pg_poll *poll; /* NULL when nothing is watched */
    int poll_events;
    uv_timer_t conn_timer;  /* connect timeout, reconnect delay, deferred loss */
    uv_timer_t query_timer; /* query_timeout_ms of the query in flight */
    uint64_t backoff_ms;
    uint64_t failures; /* failed connection attempts in a row */
    unsigned int seed; /* jitter */

    pg_query *head, *tail; /* queued, not yet sent */
    size_t queued;
    pg_query *inflight;
    PGresult *result; /* collected for the query in flight */
    int flushing;
    int want_rw; /* conninfo asks for target_session_attrs read-write/primary */

    int open_handles;
    void (*closed)(void *arg);
    void *closed_arg;
};

static void pg_lost(mrd_pg *pg, const char *why, int inflight_err);
static void pg_connect_begin(mrd_pg *pg);
static void pg_start_next(mrd_pg *pg, int from_api);

/* ---- handles ---- */

static void pg_maybe_free(mrd_pg *pg)
{
    if (pg->state == PG_STOPPING && pg->open_handles == 0) {
        void (*closed)(void *) = pg->closed;
        void *arg = pg->closed_arg;
        free(pg->conninfo);
        free(pg);
        if (closed)
            closed(arg);
    }
}

static void pg_on_handle_closed(uv_handle_t *h)
{
    mrd_pg *pg;
    if (h->type == UV_POLL) {
        pg_poll *p = h->data;
        pg = p->pg;
        free(p);
    } else {
        pg = h->data;
    }
    pg->open_handles--;
    pg_maybe_free(pg);
}

static void pg_poll_close(mrd_pg *pg)
{
    if (pg->poll == NULL)
        return;
    uv_poll_stop(&pg->poll->h);
    uv_close((uv_handle_t *)&pg->poll->h, pg_on_handle_closed);
    pg->poll = NULL;
    pg->poll_events = 0;
}

static void pg_on_poll(uv_poll_t *h, int status, int events);

/* Watches PQsocket() for events with a fresh poll handle. Returns 0 or -1. */
static int pg_poll_new(mrd_pg *pg, int events)
{
    pg_poll_close(pg);
    int fd = PQsocket(pg->conn);
    if (fd < 0)
        return -1;
    pg_poll *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -1;
    if (uv_poll_init_socket(pg->loop, &p->h, fd) != 0) {
        free(p);
        return -1;
    }
    p->pg = pg;
    p->h.data = p;
    pg->open_handles++;
    pg->poll = p;
    if (uv_poll_start(&p->h, events, pg_on_poll) != 0) {
        pg_poll_close(pg);
        return -1;
    }
    pg->poll_events = events;
    return 0;
}

/* Changes the events watched on the (unchanged) socket of a connection. */
static int pg_poll_set(mrd_pg *pg, int events)
{
    if (pg->poll == NULL)
        return pg_poll_new(pg, events);
    if (events == pg->poll_events)
        return 0;
    if (uv_poll_start(&pg->poll->h, events, pg_on_poll) != 0)
        return -1;
    pg->poll_events = events;
    return 0;
}

static void pg_conn_close(mrd_pg *pg)
{
    pg_poll_close(pg); /* before PQfinish closes the socket */
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
    if (pg->result) {
        PQclear(pg->result);
        pg->result = NULL;
    }
    pg->flushing = 0;
    uv_timer_stop(&pg->query_timer);
}

static void pg_set_state(mrd_pg *pg, pg_state st)
{
    int was = pg->state == PG_CONNECTED;
    pg->state = st;
    int now = st == PG_CONNECTED;
    if (was != now && st != PG_STOPPING && pg->on_state)
        pg->on_state(pg, now, pg->data);
}

/* ---- queries ---- */

static pg_query *pg_queue_pop(mrd_pg *pg)
{
    pg_query *q = pg->head;
    if (q) {
        pg->head = q->next;
        if (pg->head == NULL)
            pg->tail = NULL;
        pg->queued--;
        q->next = NULL;
    }
    return q;
}

/* Runs the callback of q (err, res) and frees q and res. */
static void pg_query_done(pg_query *q, int err, PGresult *res)
{
    q->cb(err, res, q->data);
    if (res)
        PQclear(res);
    free(q);
}

/* Fails every queued query with err, one at a time (callbacks may stop pg). */
static void pg_fail_queue(mrd_pg *pg, int err, pg_state expect)
{
    pg_query *q;
    while (pg->state == expect && (q = pg_queue_pop(pg)) != NULL)
        pg_query_done(q, err, NULL);
}

static int pg_is_conn_error(const PGresult *res)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return st && (strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0);
}

/* The query in flight has all its results: deliver and go on with the next. */
static void pg_deliver(mrd_pg *pg)
{
    pg_query *q = pg->inflight;
    PGresult *res = pg->result;
    pg->result = NULL;
    uv_timer_stop(&pg->query_timer);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (res == NULL || (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && pg_is_conn_error(res)) ||
        st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
        if (res && PQresultErrorMessage(res)[0])
            mrd_log(MRD_LOG_WARN, "store query failed with connection error",
                    MRD_S("error", PQresultErrorMessage(res)));
        if (res)
            PQclear(res);
        pg_lost(pg, "query ended without a usable result", MRD_ESTORE);
        return;
    }
    pg->inflight = NULL;
    int err = (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) ? 0 : MRD_EIO;
    /* A read-only server (fenced, or demoted) when the conninfo asked for a
     * read-write one: after the caller has seen the error, reconnect so that
     * libpq looks for the read-write host again. */
    const char *sqlstate = err ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int reconnect = pg->want_rw && sqlstate && strcmp(sqlstate, "25006") == 0;
    pg_query_done(q, err, res);
    if (pg->state == PG_CONNECTED && reconnect)
        pg_lost(pg, "server is read-only", MRD_ESTORE);
    else if (pg->state == PG_CONNECTED)
        pg_start_next(pg, 0);
}

/* Reads every complete result of the query in flight. */
static void pg_read_results(mrd_pg *pg)
{
    /* Bounded: each pass either consumes a result libpq already buffered or
     * delivers the query; a new query is only sent by pg_deliver. */
    while (pg->state == PG_CONNECTED && pg->inflight && !pg->flushing && !PQisBusy(pg->conn)) {
        PGresult *r = PQgetResult(pg->conn);
        if (r == NULL) {
            pg_deliver(pg);
            continue;
        }
        /* One statement gives one result; keep an error over anything else. */
        if (pg->result == NULL) {
            pg->result = r;
        } else if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
            PQclear(pg->result);
            pg->result = r;
        } else {
            PQclear(r);
        }
        ExecStatusType st = PQresultStatus(pg->result);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            mrd_log(MRD_LOG_WARN, "store query started copy, which is not supported");
            pg_deliver(pg);
        }
    }
}

static void pg_flush(mrd_pg *pg)
{
    int r = PQflush(pg->conn);
    if (r < 0) {
        pg_lost(pg, PQerrorMessage(pg->conn), MRD_ESTORE);
        return;
    }
    pg->flushing = r == 1;
    if (pg_poll_set(pg, UV_READABLE | (pg->flushing ? UV_WRITABLE : 0)) != 0)
        pg_lost(pg, "cannot watch the store socket", MRD_ESTORE);
}

static void pg_on_query_timeout(uv_timer_t *t)
{
    mrd_pg *pg = t->data;
    if (pg->state != PG_CONNECTED || pg->inflight == NULL)
        return;
    /* The answer may already wait in the socket: a process that was stopped
     * (SIGSTOP, a paused VM) wakes up with every timer late, and libuv runs
     * timers before it polls sockets. Read first; time out only a query
     * that still has no answer. */
    pg_query *q = pg->inflight;
    if (!pg->flushing && PQconsumeInput(pg->conn)) {
        pg_read_results(pg);
        if (pg->state != PG_CONNECTED || pg->inflight != q)
            return;
    }
    mrd_log(MRD_LOG_WARN, "store query timed out, resetting the connection",
            MRD_U("timeout_ms", pg->query_timeout_ms));
    pg_lost(pg, "query timeout", MRD_ETIMEOUT);
}

static void pg_on_deferred_loss(uv_timer_t *t)
{
    mrd_pg *pg = t->data;
    if (pg->state == PG_CONNECTED)
        pg_lost(pg, pg->conn ? PQerrorMessage(pg->conn) : "connection lost", MRD_ESTORE);
}

/* Sends the next queued query if the connection is idle. from_api: called
 * from mrd_pg_query, where no callback may run, so a failure is handled on the
 * next loop iteration. */
static void pg_start_next(mrd_pg *pg, int from_api)
{
    if (pg->state != PG_CONNECTED || pg->inflight || pg->head == NULL)
        return;
    pg_query *q = pg_queue_pop(pg);
    pg->inflight = q;
    int ok = PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0);
    int fl = ok ? PQflush(pg->conn) : -1;
    if (fl >= 0) {
        pg->flushing = fl == 1;
        if (pg_poll_set(pg, UV_READABLE | (pg->flushing ? UV_WRITABLE : 0)) == 0) {
            uv_timer_start(&pg->query_timer, pg_on_query_timeout, pg->query_timeout_ms, 0);
            return;
        }
    }
    if (from_api)
        uv_timer_start(&pg->conn_timer, pg_on_deferred_loss, 0, 0);
    else
        pg_lost(pg, PQerrorMessage(pg->conn), MRD_ESTORE);
}

/* ---- connection ---- */

static void pg_on_retry(uv_timer_t *t)
{
    pg_connect_begin(t->data);
}

static void pg_schedule_retry(mrd_pg *pg)
{
    uint64_t d = pg->backoff_ms;
    uint64_t half = d / 2;
    uint64_t delay = half + (half ? (uint64_t)rand_r(&pg->seed) % (half + 1) : 0);
    pg->backoff_ms = d * 2 > pg->reconnect_max_ms ? pg->reconnect_max_ms : d * 2;
    uv_timer_start(&pg->conn_timer, pg_on_retry, delay, 0);
}

/* Tears the connection down, fails the query in flight with inflight_err
 * and the queued ones with MRD_ESTORE, reports the change, schedules a
 * reconnect. */
static void pg_lost(mrd_pg *pg, const char *why, int inflight_err)
{
    int was_connected = pg->state == PG_CONNECTED;
    /* libpq messages span lines ("\n\t"): one log line, spaces instead. */
    char msg[512];
    size_t n = 0;
    for (const char *p = why && why[0] ? why : "unknown"; *p && n + 1 < sizeof(msg); p++) {
        char ch = (*p == '\n' || *p == '\t') ? ' ' : *p;
        if (ch != ' ' || (n > 0 && msg[n - 1] != ' '))
            msg[n++] = ch;
    }
    while (n > 0 && msg[n - 1] == ' ')
        n--;
    msg[n] = '\0';
    /* While the store stays down, only the first failed attempt is logged
     * above debug: one line per outage, not one per retry. */
    pg->failures = was_connected ? 0 : pg->failures + 1;
    mrd_log(was_connected ? MRD_LOG_WARN : (pg->failures == 1 ? MRD_LOG_WARN : MRD_LOG_DEBUG),
            was_connected ? "store connection lost" : "store connection failed",
            MRD_S("error", msg), MRD_U("attempt", pg->failures));
    pg_conn_close(pg);
    uv_timer_stop(&pg->conn_timer);
    pg_set_state(pg, PG_WAITING);
    if (pg->state != PG_WAITING)
        return; /* on_state stopped us */
    pg_query *q = pg->inflight;
    pg->inflight = NULL;
    if (q) {
        pg_query_done(q, inflight_err, NULL);
        if (pg->state != PG_WAITING)
            return;
    }
    pg_fail_queue(pg, MRD_ESTORE, PG_WAITING);
    if (pg->state == PG_WAITING && !uv_is_active((uv_handle_t *)&pg->conn_timer))
        pg_schedule_retry(pg);
}

static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    size_t n = strlen(message);
    char buf[512];
    snprintf(buf, sizeof(buf), "%.*s", (int)(n && message[n - 1] == '\n' ? n - 1 : n), message);
    mrd_log(MRD_LOG_DEBUG, "store notice", MRD_S("notice", buf));
}

static void pg_connected(mrd_pg *pg)
{
    uv_timer_stop(&pg->conn_timer);
    if (PQsetnonblocking(pg->conn, 1) != 0 || pg_poll_new(pg, UV_READABLE) != 0) {
        pg_lost(pg, "cannot set up the connection", MRD_ESTORE);
        return;
    }
    pg->backoff_ms = pg->reconnect_min_ms;
    pg->want_rw = 0;
    PQconninfoOption *opts = PQconninfo(pg->conn);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "target_session_attrs") == 0 && o->val &&
            (strcmp(o->val, "read-write") == 0 || strcmp(o->val, "primary") == 0))
            pg->want_rw = 1;
    PQconninfoFree(opts);
    mrd_log(MRD_LOG_INFO, "store connected", MRD_I("server_version", PQserverVersion(pg->conn)),
            MRD_U("failed_attempts", pg->failures));
    pg->failures = 0;
    pg_set_state(pg, PG_CONNECTED);
    if (pg->state == PG_CONNECTED)
        pg_start_next(pg, 0);
}

/* One PQconnectPoll step. */
static void pg_connect_step(mrd_pg *pg)
{
    switch (PQconnectPoll(pg->conn)) {
    case PGRES_POLLING_OK:
        pg_connected(pg);
        return;
    case PGRES_POLLING_READING:
        if (pg_poll_new(pg, UV_READABLE) == 0)
            return;
        break;
    case PGRES_POLLING_WRITING:
        if (pg_poll_new(pg, UV_WRITABLE) == 0)
            return;
        break;
    default:
        break;
    }
    pg_lost(pg, PQerrorMessage(pg->conn), MRD_ESTORE);
}

static void pg_on_connect_timeout(uv_timer_t *t)
{
    mrd_pg *pg = t->data;
    if (pg->state == PG_CONNECTING)
        pg_lost(pg, "connect timeout", MRD_ESTORE);
}

static void pg_connect_begin(mrd_pg *pg)
{
    pg->conn = PQconnectStart(pg->conninfo);
    if (pg->conn == NULL) {
        pg_lost(pg, "out of memory", MRD_ESTORE);
        return;
    }
    PQsetNoticeProcessor(pg->conn, pg_notice, NULL);
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        pg_lost(pg, PQerrorMessage(pg->conn), MRD_ESTORE);
        return;
    }
    pg->state = PG_CONNECTING;
    uv_timer_start(&pg->conn_timer, pg_on_connect_timeout, pg->connect_timeout_ms, 0);
    /* libpq: after PQconnectStart, act as if PQconnectPoll returned WRITING. */
    if (pg_poll_new(pg, UV_WRITABLE) != 0)
        pg_lost(pg, "cannot watch the store socket", MRD_ESTORE);
}

static void pg_on_poll(uv_poll_t *h, int status, int events)
{
    mrd_pg *pg = ((pg_poll *)h->data)->pg;
    if (pg->state == PG_CONNECTING) {
        pg_connect_step(pg);
        return;
    }
    if (pg->state != PG_CONNECTED)
        return;
    if (status < 0) {
        pg_lost(pg, uv_strerror(status), MRD_ESTORE);
        return;
    }
    if ((events & UV_READABLE) && !PQconsumeInput(pg->conn)) {
        pg_lost(pg, PQerrorMessage(pg->conn), MRD_ESTORE);
        return;
    }
    if (pg->flushing) {
        pg_flush(pg);
        if (pg->state != PG_CONNECTED)
            return;
    }
    if (PQstatus(pg->conn) == CONNECTION_BAD) {
        pg_lost(pg, PQerrorMessage(pg->conn), MRD_ESTORE);
        return;
    }
    /* Notifications first: a callback may queue queries (or stop us). */
    PGnotify *n;
    while (pg->state == PG_CONNECTED && (n = PQnotifies(pg->conn)) != NULL) {
        if (pg->on_notify)
            pg->on_notify(pg, n->relname, n->extra, pg->data);
        PQfreemem(n);
    }
    if (pg->state != PG_CONNECTED)
        return;
    if (pg->inflight)
        pg_read_results(pg);
}

/* ---- public ---- */

int mrd_pg_start(mrd_pg **out, uv_loop_t *loop, const mrd_pg_options *opt)
{
    if (out == NULL || loop == NULL || opt == NULL || opt->conninfo == NULL)
        return MRD_EINVAL;
    mrd_pg *pg = calloc(1, sizeof(*pg));
    if (pg == NULL)
        return MRD_ENOMEM;
    pg->conninfo = strdup(opt->conninfo);
    if (pg->conninfo == NULL) {
        free(pg);
        return MRD_ENOMEM;
    }
    pg->loop = loop;
    pg->reconnect_min_ms =
        opt->reconnect_min_ms ? opt->reconnect_min_ms : PG_DEFAULT_RECONNECT_MIN_MS;
    pg->reconnect_max_ms =
        opt->reconnect_max_ms ? opt->reconnect_max_ms : PG_DEFAULT_RECONNECT_MAX_MS;
    if (pg->reconnect_max_ms < pg->reconnect_min_ms)
        pg->reconnect_max_ms = pg->reconnect_min_ms;
    pg->connect_timeout_ms =
        opt->connect_timeout_ms ? opt->connect_timeout_ms : PG_DEFAULT_CONNECT_TIMEOUT_MS;
    pg->query_timeout_ms =
        opt->query_timeout_ms ? opt->query_timeout_ms : PG_DEFAULT_QUERY_TIMEOUT_MS;
    pg->max_queue = opt->max_queue ? opt->max_queue : PG_DEFAULT_MAX_QUEUE;
    pg->on_state = opt->on_state;
    pg->on_notify = opt->on_notify;
    pg->data = opt->data;
    pg->backoff_ms = pg->reconnect_min_ms;
    pg->seed = (unsigned int)(uv_hrtime() ^ (uint64_t)(uintptr_t)pg ^ (uint64_t)getpid());
    pg->state = PG_WAITING;
    uv_timer_init(loop, &pg->conn_timer);
    uv_timer_init(loop, &pg->query_timer);
    pg->conn_timer.data = pg;
    pg->query_timer.data = pg;
    pg->open_handles = 2;
    /* Connect from the loop, so that no callback runs inside mrd_pg_start. */
    uv_timer_start(&pg->conn_timer, pg_on_retry, 0, 0);
    *out = pg;
    return 0;
}

int mrd_pg_query(mrd_pg *pg, const char *sql, int nparams, const char *const *params,
                 mrd_pg_result_cb cb, void *data)
{
    if (pg == NULL || sql == NULL || cb == NULL || nparams < 0 || nparams > PG_MAX_PARAMS ||
        (nparams > 0 && params == NULL))
        return MRD_EINVAL;
    if (pg->state == PG_STOPPING)
        return MRD_ECLOSED;
    if (pg->state != PG_CONNECTED)
        return MRD_ESTORE;
    if (pg->queued + (pg->inflight ? 1 : 0) >= pg->max_queue)
        return MRD_ETOOBIG;
    size_t size = sizeof(pg_query) + (size_t)nparams * sizeof(char *) + strlen(sql) + 1;
    for (int i = 0; i < nparams; i++)
        size += params[i] ? strlen(params[i]) + 1 : 0;
    pg_query *q = malloc(size);
    if (q == NULL)
        return MRD_ENOMEM;
    q->next = NULL;
    q->cb = cb;
    q->data = data;
    q->nparams = nparams;
    q->params = (const char **)(q + 1);
    char *p = (char *)(q->params + nparams);
    size_t n = strlen(sql) + 1;
    memcpy(p, sql, n);
    q->sql = p;
    p += n;
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL) {
            q->params[i] = NULL;
            continue;
        }
        n = strlen(params[i]) + 1;
        memcpy(p, params[i], n);
        q->params[i] = p;
        p += n;
    }
    if (pg->tail)
        pg->tail->next = q;
    else
        pg->head = q;
    pg->tail = q;
    pg->queued++;
    pg_start_next(pg, 1);
    return 0;
}

int mrd_pg_connected(const mrd_pg *pg)
{
    return pg && pg->state == PG_CONNECTED;
}

size_t mrd_pg_pending(const mrd_pg *pg)
{
    return pg ? pg->queued + (pg->inflight ? 1 : 0) : 0;
}

void mrd_pg_stop(mrd_pg *pg, void (*closed)(void *arg), void *arg)
{
    if (pg == NULL || pg->state == PG_STOPPING)
        return;
    pg->state = PG_STOPPING;
    pg->closed = closed;
    pg->closed_arg = arg;
    pg_conn_close(pg);
    uv_timer_stop(&pg->conn_timer);
    pg_query *q = pg->inflight;
    pg->inflight = NULL;
    if (q)
        pg_query_done(q, MRD_ECLOSED, NULL);
    pg_fail_queue(pg, MRD_ECLOSED, PG_STOPPING);
    uv_close((uv_handle_t *)&pg->conn_timer, pg_on_handle_closed);
    uv_close((uv_handle_t *)&pg->query_timer, pg_on_handle_closed);
}
