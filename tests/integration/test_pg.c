/*
 * Integration tests of the libuv/libpq store connection against the real
 * PostgreSQL 15 started by tests/run.sh (MERIDIAN_TEST_PG): parameters, SQL
 * errors, ordering, query timeout, a server restart under load, an
 * unreachable server, and stopping from inside callbacks. Each test runs its
 * own uv loop with bounded waits and checks that every handle was closed.
 * store_restart stops and starts the shared server with pg_ctl (as user
 * postgres) exactly as tests/lib/servers.sh started it.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "meridian/error.h"
#include "meridian/pg.h"

#define PG_CTL "/usr/lib/postgresql/15/bin/pg_ctl"

static void wait_expired_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until cond holds or ms pass; evaluates to cond. */
#define RUN_UNTIL(loop, cond, ms)                                                                  \
    ({                                                                                             \
        uv_timer_t guard_;                                                                         \
        int expired_ = 0;                                                                          \
        uv_timer_init((loop), &guard_);                                                            \
        guard_.data = &expired_;                                                                   \
        uv_timer_start(&guard_, wait_expired_cb, (ms), 0);                                         \
        while (!(cond) && !expired_)                                                               \
            uv_run((loop), UV_RUN_ONCE);                                                           \
        uv_close((uv_handle_t *)&guard_, NULL);                                                    \
        uv_run((loop), UV_RUN_NOWAIT);                                                             \
        (cond);                                                                                    \
    })

static void loop_finish(uv_loop_t *loop)
{
    for (int i = 0; i < 200 && uv_run(loop, UV_RUN_NOWAIT) != 0; i++)
        usleep(10000);
    cr_assert_eq(uv_loop_close(loop), 0, "handles left open on the loop");
}

static const char *pg_conninfo(void)
{
    const char *e = getenv("MERIDIAN_TEST_PG");
    cr_assert(e != NULL && e[0], "MERIDIAN_TEST_PG is not set");
    return e;
}

/* ---- recorders ---- */

typedef struct {
    int calls;
    int err;
    int isnull;
    char value[128];
    char sqlstate[8];
    int seq; /* order of completion, set by the caller's counter */
} q_out;

static void on_q(int err, PGresult *res, void *data)
{
    q_out *o = data;
    o->calls++;
    o->err = err;
    o->value[0] = o->sqlstate[0] = '\0';
    o->isnull = 0;
    if (res && err == 0 && PQntuples(res) > 0 && PQnfields(res) > 0) {
        o->isnull = PQgetisnull(res, 0, 0);
        snprintf(o->value, sizeof(o->value), "%s", PQgetvalue(res, 0, 0));
    }
    if (res && err == MRD_EIO) {
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        snprintf(o->sqlstate, sizeof(o->sqlstate), "%s", st ? st : "");
    }
}

typedef struct {
    int n;
    int states[64];
} state_log;

static void on_state(mrd_pg *pg, int connected, void *data)
{
    (void)pg;
    state_log *s = data;
    if (s->n < 64)
        s->states[s->n] = connected;
    s->n++;
}

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

static mrd_pg *start_connected(uv_loop_t *loop, mrd_pg_options *opt, state_log *sl)
{
    mrd_pg *pg;
    opt->on_state = on_state;
    opt->data = sl;
    cr_assert_eq(mrd_pg_start(&pg, loop, opt), 0);
    cr_assert(RUN_UNTIL(loop, mrd_pg_connected(pg), 10000), "no connection to %s", opt->conninfo);
    return pg;
}

static void stop_and_finish(uv_loop_t *loop, mrd_pg *pg)
{
    int closed = 0;
    mrd_pg_stop(pg, on_closed, &closed);
    cr_assert(RUN_UNTIL(loop, closed == 1, 5000));
    loop_finish(loop);
    cr_assert_eq(closed, 1);
}

/* ---- tests ---- */

Test(pg, query_with_params)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    cr_assert_eq(sl.n, 1);
    cr_assert_eq(sl.states[0], 1);

    const char *params[] = {"2", "40"};
    q_out o = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT $1::int + $2::int", 2, params, on_q, &o), 0);
    cr_assert_eq(mrd_pg_pending(pg), 1);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
    cr_assert_eq(o.err, 0);
    cr_assert_str_eq(o.value, "42");

    /* Parameters are data, never SQL. */
    const char *evil[] = {"x'); DROP TABLE nothing; --"};
    q_out e = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT $1::text", 1, evil, on_q, &e), 0);
    cr_assert(RUN_UNTIL(&loop, e.calls > 0, 5000));
    cr_assert_eq(e.err, 0);
    cr_assert_str_eq(e.value, evil[0]);

    /* A command without result rows. */
    q_out c = {0};
    cr_assert_eq(mrd_pg_query(pg, "SET application_name = 'meridian_test'", 0, NULL, on_q, &c), 0);
    cr_assert(RUN_UNTIL(&loop, c.calls > 0, 5000));
    cr_assert_eq(c.err, 0);
    cr_assert_eq(mrd_pg_pending(pg), 0);
    stop_and_finish(&loop, pg);
    cr_assert_eq(o.calls + e.calls + c.calls, 3);
}

Test(pg, null_param)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    const char *params[] = {NULL, "b"};
    q_out o = {0}, n = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT ($1::text IS NULL)::text || $2", 2, params, on_q, &o), 0);
    cr_assert_eq(mrd_pg_query(pg, "SELECT $1::text", 1, params, on_q, &n), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0 && n.calls > 0, 5000));
    cr_assert_eq(o.err, 0);
    cr_assert_str_eq(o.value, "trueb");
    cr_assert_eq(n.err, 0);
    cr_assert_eq(n.isnull, 1);
    stop_and_finish(&loop, pg);
}

Test(pg, sql_error_gives_eio_with_sqlstate)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    q_out div = {0}, syn = {0}, after = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1/0", 0, NULL, on_q, &div), 0);
    cr_assert_eq(mrd_pg_query(pg, "SELEC nonsense", 0, NULL, on_q, &syn), 0);
    cr_assert_eq(mrd_pg_query(pg, "SELECT 'still fine'", 0, NULL, on_q, &after), 0);
    cr_assert(RUN_UNTIL(&loop, after.calls > 0, 5000));
    cr_assert_eq(div.err, MRD_EIO);
    cr_assert_str_eq(div.sqlstate, "22012");
    cr_assert_eq(syn.err, MRD_EIO);
    cr_assert_str_eq(syn.sqlstate, "42601");
    cr_assert_eq(after.err, 0);
    cr_assert_str_eq(after.value, "still fine");
    cr_assert_eq(sl.n, 1, "an SQL error must not drop the connection");
    stop_and_finish(&loop, pg);
}

typedef struct {
    int next; /* index expected next */
    int bad;
    int done;
} order_ctx;

typedef struct {
    order_ctx *ctx;
    int index;
} order_item;

static void on_ordered(int err, PGresult *res, void *data)
{
    order_item *it = data;
    if (err != 0 || it->index != it->ctx->next || atoi(PQgetvalue(res, 0, 0)) != it->index)
        it->ctx->bad++;
    it->ctx->next++;
    it->ctx->done++;
}

Test(pg, thousand_queries_in_order)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    enum { N = 1000 };
    static order_item items[N];
    order_ctx ctx = {0};
    for (int i = 0; i < N; i++) {
        char num[16];
        snprintf(num, sizeof(num), "%d", i);
        const char *params[] = {num};
        items[i] = (order_item){&ctx, i};
        cr_assert_eq(mrd_pg_query(pg, "SELECT $1::int", 1, params, on_ordered, &items[i]), 0);
    }
    cr_assert_eq(mrd_pg_pending(pg), N);
    cr_assert(RUN_UNTIL(&loop, ctx.done == N, 60000), "%d of %d done", ctx.done, N);
    cr_assert_eq(ctx.bad, 0);
    cr_assert_eq(mrd_pg_pending(pg), 0);
    stop_and_finish(&loop, pg);
}

Test(pg, max_queue_enforced)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo(), .max_queue = 5};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    q_out o[6];
    memset(o, 0, sizeof(o));
    for (int i = 0; i < 5; i++)
        cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &o[i]), 0);
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &o[5]), MRD_ETOOBIG);
    cr_assert(RUN_UNTIL(&loop, o[4].calls > 0, 5000));
    cr_assert_eq(o[5].calls, 0);
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &o[5]), 0);
    cr_assert(RUN_UNTIL(&loop, o[5].calls > 0, 5000));
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", -1, NULL, on_q, &o[5]), MRD_EINVAL);
    cr_assert_eq(mrd_pg_query(pg, NULL, 0, NULL, on_q, &o[5]), MRD_EINVAL);
    stop_and_finish(&loop, pg);
}

Test(pg, query_timeout_resets_and_recovers)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo(),
                          .query_timeout_ms = 500,
                          .reconnect_min_ms = 50,
                          .reconnect_max_ms = 500};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    q_out slow = {0}, queued = {0};
    uint64_t t0 = uv_hrtime();
    cr_assert_eq(mrd_pg_query(pg, "SELECT pg_sleep(3)", 0, NULL, on_q, &slow), 0);
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &queued), 0);
    cr_assert(RUN_UNTIL(&loop, slow.calls > 0, 2500), "no timeout within 2.5 s");
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    cr_assert_eq(slow.err, MRD_ETIMEOUT);
    cr_assert_geq(ms, 450);
    cr_assert_eq(queued.calls, 1);
    cr_assert_eq(queued.err, MRD_ESTORE);
    cr_assert_eq(mrd_pg_connected(pg), 0);
    cr_assert_eq(sl.n, 2);
    cr_assert_eq(sl.states[1], 0);

    cr_assert(RUN_UNTIL(&loop, mrd_pg_connected(pg), 10000), "no reconnection");
    cr_assert_eq(sl.n, 3);
    cr_assert_eq(sl.states[2], 1);
    q_out later = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT 'back'", 0, NULL, on_q, &later), 0);
    cr_assert(RUN_UNTIL(&loop, later.calls > 0, 5000));
    cr_assert_eq(later.err, 0);
    cr_assert_str_eq(later.value, "back");
    cr_assert_eq(slow.calls, 1);
    stop_and_finish(&loop, pg);
}

/* ---- server restart ---- */

/* Runs argv (no shell), output discarded, no descriptor of ours inherited
 * (the postmaster it may start must not hold the test runner's pipes).
 * Returns the exit status. */
static int run_cmd(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
        close_range(3, ~0U, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *pg_data(void)
{
    const char *d = getenv("MERIDIAN_TEST_PG_DATA");
    cr_assert(d != NULL && d[0], "MERIDIAN_TEST_PG_DATA is not set");
    return d;
}

static int pg_server_stop(void)
{
    char *argv[] = {"runuser", "-u",   "postgres", "--", PG_CTL, "-D",   (char *)pg_data(),
                    "-m",      "fast", "-w",       "-t", "30",   "stop", NULL};
    return run_cmd(argv);
}

/* Starts the server with the options of tests/lib/servers.sh. */
static int pg_server_start(void)
{
    const char *port = getenv("MERIDIAN_TEST_PG_PORT");
    cr_assert(port != NULL && port[0], "MERIDIAN_TEST_PG_PORT is not set");
    char data[512], dir[512], opts[1024], log[600];
    snprintf(data, sizeof(data), "%s", pg_data());
    snprintf(dir, sizeof(dir), "%s", dirname(data));
    snprintf(opts, sizeof(opts),
             "-c listen_addresses=127.0.0.1 -p %s -k %s -c fsync=off -c max_connections=200", port,
             dir);
    snprintf(log, sizeof(log), "%s/log", dir);
    char *argv[] = {"runuser", "-u", "postgres", "--", PG_CTL, "-D", (char *)pg_data(), "-w",
                    "-t",      "30", "-l",       log,  "-o",   opts, "start",           NULL};
    return run_cmd(argv);
}

static int pg_server_running(void)
{
    char *argv[] = {"runuser",         "-u",     "postgres", "--", PG_CTL, "-D",
                    (char *)pg_data(), "status", NULL};
    return run_cmd(argv) == 0;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 4096);
    size_t n = fread(buf, 1, 4095, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Whatever happened in the test, leave the shared server running. */
static void ensure_server_running(void)
{
    if (getenv("MERIDIAN_TEST_PG_DATA") && !pg_server_running())
        pg_server_start();
}

Test(pg, store_restart_fails_inflight_and_recovers, .fini = ensure_server_running)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo(),
                          .reconnect_min_ms = 50,
                          .reconnect_max_ms = 500,
                          .query_timeout_ms = 30000};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    char opts_path[600];
    snprintf(opts_path, sizeof(opts_path), "%s/postmaster.opts", pg_data());
    char *opts_before = read_file(opts_path);
    cr_assert_not_null(opts_before);

    q_out sleeping = {0}, queued = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT pg_sleep(20)", 0, NULL, on_q, &sleeping), 0);
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &queued), 0);
    RUN_UNTIL(&loop, 0, 300); /* the sleep reaches the server */
    cr_assert_eq(sleeping.calls, 0);

    cr_assert_eq(pg_server_stop(), 0, "pg_ctl stop failed");
    cr_assert(RUN_UNTIL(&loop, sleeping.calls > 0 && queued.calls > 0, 5000));
    cr_assert_eq(sleeping.err, MRD_ESTORE);
    cr_assert_eq(queued.err, MRD_ESTORE);
    cr_assert_eq(mrd_pg_connected(pg), 0);
    cr_assert_eq(sl.n, 2);
    cr_assert_eq(sl.states[1], 0);
    q_out refused = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &refused), MRD_ESTORE);

    /* Down for a while: retries fail quietly, no state flapping. */
    RUN_UNTIL(&loop, 0, 1000);
    cr_assert_eq(sl.n, 2);

    cr_assert_eq(pg_server_start(), 0, "pg_ctl start failed");
    char *opts_after = read_file(opts_path);
    cr_assert_not_null(opts_after);
    cr_assert_str_eq(opts_after, opts_before, "server restarted with other options");
    free(opts_before);
    free(opts_after);

    cr_assert(RUN_UNTIL(&loop, mrd_pg_connected(pg), 10000), "no reconnection after restart");
    cr_assert_eq(sl.n, 3);
    cr_assert_eq(sl.states[2], 1);
    q_out back = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT 'back'", 0, NULL, on_q, &back), 0);
    cr_assert(RUN_UNTIL(&loop, back.calls > 0, 5000));
    cr_assert_eq(back.err, 0);
    cr_assert_str_eq(back.value, "back");
    cr_assert_eq(refused.calls, 0);
    stop_and_finish(&loop, pg);
}

/* ---- unreachable server ---- */

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

Test(pg, unreachable_server_keeps_retrying)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    char conninfo[256];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres dbname=x",
             free_port());
    mrd_pg_options opt = {.conninfo = conninfo,
                          .reconnect_min_ms = 50,
                          .reconnect_max_ms = 400,
                          .on_state = on_state,
                          .data = &sl};
    mrd_pg *pg;
    cr_assert_eq(mrd_pg_start(&pg, &loop, &opt), 0);
    q_out o = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &o), MRD_ESTORE);
    RUN_UNTIL(&loop, 0, 1500);
    cr_assert_eq(mrd_pg_connected(pg), 0);
    cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &o), MRD_ESTORE);
    cr_assert_eq(sl.n, 0, "on_state called without any change");
    cr_assert_eq(o.calls, 0);
    stop_and_finish(&loop, pg);
}

/* A server that accepts and at once closes: counts connection attempts. */
typedef struct {
    uv_tcp_t server;
    int accepted;
} slammer;

static void on_slam_closed(uv_handle_t *h)
{
    free(h);
}

static void on_slam_conn(uv_stream_t *server, int status)
{
    slammer *s = server->data;
    if (status < 0)
        return;
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(server->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) == 0)
        s->accepted++;
    uv_close((uv_handle_t *)c, on_slam_closed);
}

Test(pg, reconnect_backoff_is_bounded)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    slammer sm = {0};
    uv_tcp_init(&loop, &sm.server);
    sm.server.data = &sm;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&sm.server, (struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&sm.server, 64, on_slam_conn), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&sm.server, (struct sockaddr *)&a, &len);
    char conninfo[256];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres dbname=x",
             ntohs(a.sin_port));

    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = conninfo,
                          .reconnect_min_ms = 100,
                          .reconnect_max_ms = 400,
                          .on_state = on_state,
                          .data = &sl};
    mrd_pg *pg;
    cr_assert_eq(mrd_pg_start(&pg, &loop, &opt), 0);
    RUN_UNTIL(&loop, 0, 3000);
    /* Delays: 50-100, 100-200, then 200-400 ms each: about 10 attempts in
     * 3 s (libpq may use two connections per attempt, SSL then plain).
     * Without backoff there would be hundreds. */
    cr_assert_geq(sm.accepted, 3, "only %d connection attempts in 3 s", sm.accepted);
    cr_assert_leq(sm.accepted, 60, "%d connection attempts in 3 s: no backoff", sm.accepted);
    cr_assert_eq(sl.n, 0);
    cr_assert_eq(mrd_pg_connected(pg), 0);
    uv_close((uv_handle_t *)&sm.server, NULL);
    stop_and_finish(&loop, pg);
}

/* ---- stop ---- */

typedef struct {
    mrd_pg *pg;
    int closed;
    int calls;
    int errs[16];
} stopper;

static void on_stop_in_cb(int err, PGresult *res, void *data)
{
    (void)res;
    stopper *s = data;
    if (s->calls < 16)
        s->errs[s->calls] = err;
    s->calls++;
    if (s->calls == 1) {
        mrd_pg_stop(s->pg, on_closed, &s->closed);
        /* Re-entrant use after stop is refused, not a crash. */
        if (mrd_pg_query(s->pg, "SELECT 1", 0, NULL, on_stop_in_cb, s) == 0)
            s->errs[15] = 99;
        mrd_pg_stop(s->pg, on_closed, &s->closed);
    }
}

Test(pg, stop_from_inside_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    stopper s = {0};
    s.pg = start_connected(&loop, &opt, &sl);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(mrd_pg_query(s.pg, "SELECT 1", 0, NULL, on_stop_in_cb, &s), 0);
    cr_assert(RUN_UNTIL(&loop, s.closed == 1, 5000));
    cr_assert_eq(s.calls, 10);
    cr_assert_eq(s.errs[0], 0);
    for (int i = 1; i < 10; i++)
        cr_assert_eq(s.errs[i], MRD_ECLOSED, "query %d: %d", i, s.errs[i]);
    cr_assert_eq(s.errs[15], 0);
    loop_finish(&loop);
    cr_assert_eq(s.closed, 1);
}

static void on_state_stop(mrd_pg *pg, int connected, void *data)
{
    stopper *s = data;
    if (connected)
        mrd_pg_stop(pg, on_closed, &s->closed);
}

Test(pg, stop_from_state_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    stopper s = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo(), .on_state = on_state_stop, .data = &s};
    cr_assert_eq(mrd_pg_start(&s.pg, &loop, &opt), 0);
    cr_assert(RUN_UNTIL(&loop, s.closed == 1, 10000));
    loop_finish(&loop);
}

Test(pg, stop_fails_queue_with_closed)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    q_out o[5];
    memset(o, 0, sizeof(o));
    cr_assert_eq(mrd_pg_query(pg, "SELECT pg_sleep(10)", 0, NULL, on_q, &o[0]), 0);
    for (int i = 1; i < 5; i++)
        cr_assert_eq(mrd_pg_query(pg, "SELECT 1", 0, NULL, on_q, &o[i]), 0);
    RUN_UNTIL(&loop, 0, 100);
    int closed = 0;
    mrd_pg_stop(pg, on_closed, &closed);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(o[i].calls, 1);
        cr_assert_eq(o[i].err, MRD_ECLOSED);
    }
    cr_assert_eq(closed, 0, "memory released before the handles closed");
    cr_assert(RUN_UNTIL(&loop, closed == 1, 5000));
    loop_finish(&loop);
}

Test(pg, stop_while_connecting)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg;
    cr_assert_eq(mrd_pg_start(&pg, &loop, &opt), 0);
    uv_run(&loop, UV_RUN_NOWAIT); /* connection started, not finished */
    int closed = 0;
    mrd_pg_stop(pg, on_closed, &closed);
    cr_assert(RUN_UNTIL(&loop, closed == 1, 5000));
    loop_finish(&loop);
}

typedef struct {
    mrd_pg *pg;
    int done;
    int failed;
} pg_chain;

static void on_pg_chain(int err, PGresult *res, void *data)
{
    (void)res;
    pg_chain *ch = data;
    if (err != 0) {
        ch->failed++;
        return;
    }
    if (++ch->done < 10 && mrd_pg_query(ch->pg, "SELECT 1", 0, NULL, on_pg_chain, ch) != 0)
        ch->failed++;
}

Test(pg, query_from_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    pg_chain ch = {0};
    ch.pg = start_connected(&loop, &opt, &sl);
    cr_assert_eq(mrd_pg_query(ch.pg, "SELECT 1", 0, NULL, on_pg_chain, &ch), 0);
    cr_assert(RUN_UNTIL(&loop, ch.done == 10 || ch.failed, 5000));
    cr_assert_eq(ch.failed, 0);
    cr_assert_eq(ch.done, 10);
    stop_and_finish(&loop, ch.pg);
}
