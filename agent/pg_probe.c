/*
 * One application-level probe of a PostgreSQL (probe kind "postgresql"):
 * open a NEW connection, run one query (default SELECT 1), close. A TCP
 * connect succeeds against a frozen or hung server (the kernel completes the
 * handshake for a stopped process); only an answer to the startup packet and
 * to a query says that the server serves, so both must come within the
 * probe's one timeout, which covers the whole run. A connection is never
 * kept between runs: no run can report ok from a connection that a hung
 * server opened earlier.
 *
 * Called by checks.c for every run of a postgresql probe. Non-blocking:
 * PQconnectStart/PQconnectPoll and PQsendQuery on a uv_poll of PQsocket(),
 * re-created after every connect step (libpq may open a new socket for the
 * next address); libpq resolves host names synchronously, so probes should
 * name hosts by address (host=10.0.0.2 or hostaddr=). The callback runs
 * exactly once: before mrd__pg_probe_run returns on an immediate failure,
 * else from the loop, at the latest at the timeout. The run's memory is
 * freed once its handles are closed, after the callback.
 */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

typedef enum { PP_CONNECTING, PP_QUERYING, PP_DONE } pp_phase;

typedef struct pp_run pp_run;

typedef struct {
    uv_poll_t h;
    pp_run *run;
} pp_poll;

struct pp_run {
    uv_loop_t *loop;
    PGconn *conn;
    pp_poll *poll; /* NULL when nothing is watched */
    int events;    /* watched on poll */
    uv_timer_t timer;
    int open; /* handles not closed yet */
    pp_phase phase;
    int flushing; /* the query is not fully sent */
    int failed;   /* an error result arrived */
    char error[256];
    const char *query;
    uint64_t timeout_ms;
    mrd__pg_probe_cb cb;
    void *data;
};

static void maybe_free(pp_run *r)
{
    if (r->phase == PP_DONE && r->open == 0)
        free(r);
}

static void on_poll_closed(uv_handle_t *h)
{
    pp_poll *p = h->data;
    pp_run *r = p->run;
    free(p);
    r->open--;
    maybe_free(r);
}

static void on_timer_closed(uv_handle_t *h)
{
    pp_run *r = h->data;
    r->open--;
    maybe_free(r);
}

static void poll_close(pp_run *r)
{
    if (!r->poll)
        return;
    uv_poll_stop(&r->poll->h);
    uv_close((uv_handle_t *)&r->poll->h, on_poll_closed);
    r->poll = NULL;
    r->events = 0;
}

/* libpq's messages span lines: one line, no trailing space, into dst. */
static void one_line(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    for (const char *p = src && src[0] ? src : "unknown error"; *p && n + 1 < size; p++) {
        char ch = (*p == '\n' || *p == '\t' || *p == '\r') ? ' ' : *p;
        if (ch != ' ' || (n > 0 && dst[n - 1] != ' '))
            dst[n++] = ch;
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

static void end(pp_run *r, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Reports the result once, closes the connection and the handles. */
static void end(pp_run *r, int ok, const char *fmt, ...)
{
    char msg[MRD_PROTO_OUTPUT_MAX];
    va_list ap;
    if (r->phase == PP_DONE)
        return;
    r->phase = PP_DONE;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    uv_timer_stop(&r->timer);
    poll_close(r); /* before PQfinish closes the socket */
    if (r->conn) {
        PQfinish(r->conn);
        r->conn = NULL;
    }
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    r->cb(ok, msg, r->data);
    maybe_free(r);
}

static void fail_conn(pp_run *r, const char *what)
{
    char e[256];
    one_line(e, sizeof(e), r->conn ? PQerrorMessage(r->conn) : NULL);
    end(r, 0, "%s: %s", what, e);
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Watches PQsocket() for events with a fresh poll handle. Returns 0 or -1. */
static int watch_new(pp_run *r, int events)
{
    poll_close(r);
    int fd = PQsocket(r->conn);
    if (fd < 0)
        return -1;
    pp_poll *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    if (uv_poll_init_socket(r->loop, &p->h, fd) != 0) {
        free(p);
        return -1;
    }
    p->run = r;
    p->h.data = p;
    r->open++;
    r->poll = p;
    if (uv_poll_start(&p->h, events, on_poll) != 0) {
        poll_close(r);
        return -1;
    }
    r->events = events;
    return 0;
}

/* Reads what has arrived; ends the run once the query's last result is in. */
static void read_results(pp_run *r)
{
    while (r->phase == PP_QUERYING && !PQisBusy(r->conn)) {
        PGresult *res = PQgetResult(r->conn);
        if (!res) {
            if (r->failed)
                end(r, 0, "query: %s", r->error);
            else
                end(r, 1, "ok");
            return;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && !r->failed) {
            r->failed = 1;
            one_line(r->error, sizeof(r->error), PQresultErrorMessage(res));
        }
        PQclear(res);
    }
}

static void start_query(pp_run *r)
{
    r->phase = PP_QUERYING;
    if (PQsetnonblocking(r->conn, 1) != 0 || !PQsendQuery(r->conn, r->query)) {
        fail_conn(r, "query");
        return;
    }
    int fl = PQflush(r->conn);
    if (fl < 0) {
        fail_conn(r, "query");
        return;
    }
    r->flushing = fl == 1;
    if (watch_new(r, UV_READABLE | (r->flushing ? UV_WRITABLE : 0)) != 0)
        end(r, 0, "cannot watch the connection");
}

static void connect_step(pp_run *r)
{
    switch (PQconnectPoll(r->conn)) {
    case PGRES_POLLING_OK:
        start_query(r);
        return;
    case PGRES_POLLING_READING:
        if (watch_new(r, UV_READABLE) != 0)
            end(r, 0, "cannot watch the connection");
        return;
    case PGRES_POLLING_WRITING:
        if (watch_new(r, UV_WRITABLE) != 0)
            end(r, 0, "cannot watch the connection");
        return;
    default:
        fail_conn(r, "connect");
        return;
    }
}

static void query_step(pp_run *r, int events)
{
    if (r->flushing && (events & UV_WRITABLE)) {
        int fl = PQflush(r->conn);
        if (fl < 0) {
            fail_conn(r, "query");
            return;
        }
        r->flushing = fl == 1;
        if (!r->flushing && uv_poll_start(&r->poll->h, UV_READABLE, on_poll) == 0)
            r->events = UV_READABLE;
    }
    if ((events & UV_READABLE) && !PQconsumeInput(r->conn)) {
        fail_conn(r, "query");
        return;
    }
    read_results(r);
}

static void step(pp_run *r, int events)
{
    if (r->phase == PP_CONNECTING)
        connect_step(r);
    else if (r->phase == PP_QUERYING)
        query_step(r, events);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    pp_run *r = ((pp_poll *)h->data)->run;
    if (r->phase == PP_DONE)
        return;
    if (status < 0) {
        /* libuv reports POLLERR (a refused connect, a reset) as an error
         * and stops watching: libpq says what happened on its next step. */
        pp_poll *was = h->data;
        step(r, r->events);
        if (r->phase == PP_DONE || (r->poll && r->poll != was))
            return; /* ended, or the step watches a new socket */
        end(r, 0, "connection: %s", uv_strerror(status));
        return;
    }
    step(r, events);
}

static const char *waiting_for(const pp_run *r)
{
    if (r->phase == PP_QUERYING)
        return "no answer to the query";
    switch (PQstatus(r->conn)) {
    case CONNECTION_STARTED:
        return "tcp connect not completed";
    case CONNECTION_MADE:
    case CONNECTION_AWAITING_RESPONSE:
    case CONNECTION_SSL_STARTUP:
    case CONNECTION_GSS_STARTUP:
        return "no answer to the startup packet";
    default:
        return "connection not ready";
    }
}

static void on_timeout(uv_timer_t *t)
{
    pp_run *r = t->data;
    if (r->phase == PP_DONE)
        return;
    /* The answer may already wait in the socket: after this process was
     * stopped (SIGSTOP, a paused VM) every timer is late, and libuv runs
     * timers before it polls sockets. Take one step on what is ready now;
     * time out only a run that still has no answer. */
    int fd = r->conn ? PQsocket(r->conn) : -1;
    if (fd >= 0 && r->events) {
        struct pollfd pfd = {.fd = fd, .events = 0, .revents = 0};
        if (r->events & UV_READABLE)
            pfd.events |= POLLIN;
        if (r->events & UV_WRITABLE)
            pfd.events |= POLLOUT;
        if (poll(&pfd, 1, 0) == 1) {
            int ev = ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) ? UV_READABLE : 0) |
                     ((pfd.revents & POLLOUT) ? UV_WRITABLE : 0);
            step(r, ev & r->events ? ev & r->events : r->events);
            if (r->phase == PP_DONE)
                return;
        }
    }
    end(r, 0, "timeout after %llu ms: %s", (unsigned long long)r->timeout_ms, waiting_for(r));
}

void mrd__pg_probe_run(uv_loop_t *loop, const char *conninfo, const char *query,
                       uint64_t timeout_ms, mrd__pg_probe_cb cb, void *data)
{
    pp_run *r = calloc(1, sizeof(*r));
    if (!r) {
        cb(0, "out of memory", data);
        return;
    }
    r->loop = loop;
    r->query = query && query[0] ? query : "SELECT 1";
    r->timeout_ms = timeout_ms;
    r->cb = cb;
    r->data = data;
    r->phase = PP_CONNECTING;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->open = 1;
    r->conn = PQconnectStart(conninfo);
    if (!r->conn) {
        end(r, 0, "connect: out of memory");
        return;
    }
    if (PQstatus(r->conn) == CONNECTION_BAD) {
        fail_conn(r, "connect");
        return;
    }
    uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
    /* libpq: after PQconnectStart, act as if PQconnectPoll returned WRITING */
    if (watch_new(r, UV_WRITABLE) != 0)
        end(r, 0, "cannot watch the connection");
}
