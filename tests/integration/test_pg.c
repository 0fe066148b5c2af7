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

static void wait_tick_cb(uv_timer_t *t)
{
    (void)t; /* only wakes the loop up so that the condition is re-read */
}

/* Runs the loop until cond holds or ms pass; evaluates to cond. A 5 ms tick
 * wakes the loop: a callback that ran in the timer phase of an iteration
 * would otherwise leave uv_run blocked in its poll phase. */
#define RUN_UNTIL(loop, cond, ms)                                                                  \
    ({                                                                                             \
        uv_timer_t tick_;                                                                          \
        uv_update_time(loop);                                                                      \
        uint64_t end_ = uv_now(loop) + (uint64_t)(ms);                                             \
        uv_timer_init((loop), &tick_);                                                             \
        uv_timer_start(&tick_, wait_tick_cb, 5, 5);                                                \
        while (!(cond) && uv_now(loop) < end_)                                                     \
            uv_run((loop), UV_RUN_ONCE);                                                           \
        uv_close((uv_handle_t *)&tick_, NULL);                                                     \
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
    cr_assert(RUN_UNTIL(&loop, slow.calls > 0, 10000), "no answer at all");
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

Test(pg, large_parameter_is_flushed)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    /* 16 MB does not fit the socket buffers: PQflush returns 1 and the
     * rest goes out when the socket is writable again. */
    size_t n = 16u << 20;
    char *big = malloc(n + 1);
    memset(big, 'm', n);
    big[n] = '\0';
    const char *params[] = {big};
    q_out o = {0}, after = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT length($1::text)", 1, params, on_q, &o), 0);
    free(big); /* copied */
    cr_assert_eq(mrd_pg_query(pg, "SELECT 'next'", 0, NULL, on_q, &after), 0);
    cr_assert(RUN_UNTIL(&loop, after.calls > 0, 20000));
    cr_assert_eq(o.err, 0);
    cr_assert_str_eq(o.value, "16777216");
    cr_assert_eq(after.err, 0);
    cr_assert_str_eq(after.value, "next");
    stop_and_finish(&loop, pg);
}

Test(pg, idle_connection_loss_is_noticed)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0}, sl2 = {0};
    mrd_pg_options opt = {
        .conninfo = pg_conninfo(), .reconnect_min_ms = 50, .reconnect_max_ms = 200};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    mrd_pg_options opt2 = {.conninfo = pg_conninfo()};
    mrd_pg *killer = start_connected(&loop, &opt2, &sl2);
    q_out pid = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT pg_backend_pid()", 0, NULL, on_q, &pid), 0);
    cr_assert(RUN_UNTIL(&loop, pid.calls > 0, 5000));
    cr_assert_eq(pid.err, 0);
    const char *params[] = {pid.value};
    q_out kill = {0};
    cr_assert_eq(
        mrd_pg_query(killer, "SELECT pg_terminate_backend($1::int)", 1, params, on_q, &kill), 0);
    /* No query runs on pg: the loss is seen on the idle socket. */
    cr_assert(RUN_UNTIL(&loop, sl.n >= 2 && kill.calls > 0, 5000),
              "idle connection loss not noticed");
    cr_assert_eq(kill.err, 0);
    cr_assert_str_eq(kill.value, "t");
    cr_assert_eq(sl.states[1], 0);
    cr_assert(RUN_UNTIL(&loop, mrd_pg_connected(pg), 5000));
    cr_assert_eq(sl.n, 3);
    q_out o = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT pg_backend_pid()", 0, NULL, on_q, &o), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
    cr_assert_eq(o.err, 0);
    cr_assert_str_neq(o.value, pid.value);
    int closed = 0;
    mrd_pg_stop(killer, on_closed, &closed);
    stop_and_finish(&loop, pg);
    cr_assert_eq(closed, 1);
}

Test(pg, read_only_server_triggers_reconnect_when_rw_wanted)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    char conninfo[512];
    snprintf(conninfo, sizeof(conninfo), "%s target_session_attrs=read-write", pg_conninfo());
    mrd_pg_options opt = {.conninfo = conninfo, .reconnect_min_ms = 50, .reconnect_max_ms = 200};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    /* The session turns read-only, as a fenced store would. */
    q_out ro = {0}, write = {0};
    cr_assert_eq(mrd_pg_query(pg, "SET default_transaction_read_only = on", 0, NULL, on_q, &ro), 0);
    cr_assert_eq(mrd_pg_query(pg, "CREATE TEMP TABLE t_ro (x int)", 0, NULL, on_q, &write), 0);
    cr_assert(RUN_UNTIL(&loop, write.calls > 0, 5000));
    cr_assert_eq(ro.err, 0);
    cr_assert_eq(write.err, MRD_EIO);
    cr_assert_str_eq(write.sqlstate, "25006");
    cr_assert(RUN_UNTIL(&loop, sl.n >= 3, 5000), "no reconnection after a read-only error");
    cr_assert_eq(sl.states[1], 0);
    cr_assert_eq(sl.states[2], 1);
    q_out again = {0};
    cr_assert_eq(mrd_pg_query(pg, "CREATE TEMP TABLE t_ro (x int)", 0, NULL, on_q, &again), 0);
    cr_assert(RUN_UNTIL(&loop, again.calls > 0, 5000));
    cr_assert_eq(again.err, 0, "%s", again.sqlstate);
    stop_and_finish(&loop, pg);
}

Test(pg, read_only_error_kept_without_rw_wanted)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = pg_conninfo()};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    q_out ro = {0}, write = {0}, after = {0};
    cr_assert_eq(mrd_pg_query(pg, "SET default_transaction_read_only = on", 0, NULL, on_q, &ro), 0);
    cr_assert_eq(mrd_pg_query(pg, "CREATE TEMP TABLE t_ro (x int)", 0, NULL, on_q, &write), 0);
    cr_assert_eq(mrd_pg_query(pg, "SHOW default_transaction_read_only", 0, NULL, on_q, &after), 0);
    cr_assert(RUN_UNTIL(&loop, after.calls > 0, 5000));
    cr_assert_eq(write.err, MRD_EIO);
    cr_assert_str_eq(write.sqlstate, "25006");
    cr_assert_eq(after.err, 0);
    cr_assert_str_eq(after.value, "on", "same session expected");
    cr_assert_eq(sl.n, 1);
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

/* A fake server on the test's loop that counts connection attempts. It
 * either closes each connection at once (slam) or holds it open without a
 * word until the client goes away (hold). */
typedef struct {
    uv_tcp_t server;
    int hold;
    int accepted;
    int port;
} fake_server;

static void on_fake_closed(uv_handle_t *h)
{
    free(h);
}

static void fake_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    static char sink[512]; /* read and dropped */
    *buf = uv_buf_init(sink, sizeof(sink));
}

static void fake_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n < 0)
        uv_close((uv_handle_t *)s, on_fake_closed);
}

static void on_fake_conn(uv_stream_t *server, int status)
{
    fake_server *f = server->data;
    if (status < 0)
        return;
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(server->loop, c);
    if (uv_accept(server, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, on_fake_closed);
        return;
    }
    f->accepted++;
    if (f->hold)
        uv_read_start((uv_stream_t *)c, fake_alloc, fake_on_read);
    else
        uv_close((uv_handle_t *)c, on_fake_closed);
}

static void fake_start(uv_loop_t *loop, fake_server *f, int hold)
{
    memset(f, 0, sizeof(*f));
    f->hold = hold;
    uv_tcp_init(loop, &f->server);
    f->server.data = f;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&f->server, (struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&f->server, 64, on_fake_conn), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&f->server, (struct sockaddr *)&a, &len);
    f->port = ntohs(a.sin_port);
}

Test(pg, reconnect_backoff_is_bounded)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    fake_server f;
    fake_start(&loop, &f, 0);
    char conninfo[256];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres dbname=x", f.port);
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
    cr_log_info("%d connection attempts in 3 s", f.accepted);
    cr_assert_geq(f.accepted, 3, "only %d connection attempts in 3 s", f.accepted);
    cr_assert_leq(f.accepted, 60, "%d connection attempts in 3 s: no backoff", f.accepted);
    cr_assert_eq(sl.n, 0);
    cr_assert_eq(mrd_pg_connected(pg), 0);
    uv_close((uv_handle_t *)&f.server, NULL);
    stop_and_finish(&loop, pg);
}

Test(pg, connect_timeout_against_silent_server)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    fake_server f;
    fake_start(&loop, &f, 1);
    char conninfo[256];
    snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d user=postgres dbname=x", f.port);
    state_log sl = {0};
    mrd_pg_options opt = {.conninfo = conninfo,
                          .connect_timeout_ms = 300,
                          .reconnect_min_ms = 50,
                          .reconnect_max_ms = 100,
                          .on_state = on_state,
                          .data = &sl};
    mrd_pg *pg;
    cr_assert_eq(mrd_pg_start(&pg, &loop, &opt), 0);
    RUN_UNTIL(&loop, 0, 2000);
    /* Each attempt hangs until the 300 ms timeout, then a new one starts:
     * without the timeout there would be one attempt. */
    cr_log_info("%d connection attempts in 2 s", f.accepted);
    cr_assert_geq(f.accepted, 3, "only %d connection attempts in 2 s", f.accepted);
    cr_assert_leq(f.accepted, 8, "%d connection attempts in 2 s", f.accepted);
    cr_assert_eq(mrd_pg_connected(pg), 0);
    cr_assert_eq(sl.n, 0);
    uv_close((uv_handle_t *)&f.server, NULL);
    stop_and_finish(&loop, pg);
}

/* A proxy to the real server whose first connection accepts libpq's
 * SSLRequest ('S') and then hangs up in the middle of the TLS handshake:
 * with sslmode=prefer libpq then retries without SSL on a new socket, often
 * with the same fd number as the one it just closed, in the middle of
 * PQconnectPoll. The poll handle must follow the new socket. Later
 * connections are relayed to the real server. */
typedef struct proxy_side proxy_side;
struct proxy_side {
    uv_tcp_t h;
    proxy_side *peer;
    int closing;
    int said_yes;
};

typedef struct {
    uv_tcp_t server;
    int accepted;
    int upstream_port;
} ssl_proxy;

static void proxy_on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void proxy_close(proxy_side *s)
{
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    if (s->peer) {
        s->peer->peer = NULL;
        proxy_close(s->peer);
    }
    uv_close((uv_handle_t *)&s->h, proxy_on_closed);
}

static void proxy_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    *buf = uv_buf_init(malloc(16384), 16384);
}

static void proxy_on_written(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void proxy_write(proxy_side *to, char *data, size_t n)
{
    uv_write_t *w = malloc(sizeof(*w));
    w->data = data;
    uv_buf_t b = uv_buf_init(data, (unsigned int)n);
    if (uv_write(w, (uv_stream_t *)&to->h, &b, 1, proxy_on_written) != 0) {
        free(data);
        free(w);
    }
}

static void proxy_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    proxy_side *s = st->data;
    if (n < 0 || s->peer == NULL) {
        free(buf->base);
        proxy_close(s);
        return;
    }
    if (n == 0) {
        free(buf->base);
        return;
    }
    proxy_write(s->peer, buf->base, (size_t)n);
}

/* First connection: answer the 8-byte SSLRequest with 'S', then hang up
 * when the TLS handshake begins. */
static void proxy_on_ssl_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    proxy_side *s = st->data;
    free(buf->base);
    if (n > 0 && !s->said_yes) {
        char *yes = malloc(1);
        *yes = 'S';
        proxy_write(s, yes, 1);
        s->said_yes = 1;
    } else if (n != 0) {
        proxy_close(s);
    }
}

static void proxy_on_upstream(uv_connect_t *req, int status)
{
    proxy_side *up = req->data;
    free(req);
    if (status < 0 || up->peer == NULL) {
        proxy_close(up);
        return;
    }
    uv_read_start((uv_stream_t *)&up->h, proxy_alloc, proxy_on_read);
    uv_read_start((uv_stream_t *)&up->peer->h, proxy_alloc, proxy_on_read);
}

static void proxy_on_conn(uv_stream_t *server, int status)
{
    ssl_proxy *p = server->data;
    if (status < 0)
        return;
    proxy_side *down = calloc(1, sizeof(*down));
    uv_tcp_init(server->loop, &down->h);
    down->h.data = down;
    if (uv_accept(server, (uv_stream_t *)&down->h) != 0) {
        proxy_close(down);
        return;
    }
    if (p->accepted++ == 0) {
        uv_read_start((uv_stream_t *)&down->h, proxy_alloc, proxy_on_ssl_read);
        return;
    }
    proxy_side *up = calloc(1, sizeof(*up));
    uv_tcp_init(server->loop, &up->h);
    up->h.data = up;
    up->peer = down;
    down->peer = up;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", p->upstream_port, &a);
    uv_connect_t *req = malloc(sizeof(*req));
    req->data = up;
    if (uv_tcp_connect(req, &up->h, (struct sockaddr *)&a, proxy_on_upstream) != 0) {
        free(req);
        proxy_close(up);
    }
}

Test(pg, socket_change_during_connect)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *port = getenv("MERIDIAN_TEST_PG_PORT");
    cr_assert(port != NULL && port[0], "MERIDIAN_TEST_PG_PORT is not set");
    ssl_proxy px = {.upstream_port = atoi(port)};
    uv_tcp_init(&loop, &px.server);
    px.server.data = &px;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&px.server, (struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&px.server, 64, proxy_on_conn), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&px.server, (struct sockaddr *)&a, &len);
    char conninfo[256];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=meridian_test sslmode=prefer",
             ntohs(a.sin_port));
    state_log sl = {0};
    /* Long reconnect delays: the connection must succeed in its first
     * attempt, on the second socket. */
    mrd_pg_options opt = {.conninfo = conninfo,
                          .connect_timeout_ms = 3000,
                          .reconnect_min_ms = 20000,
                          .reconnect_max_ms = 20000};
    mrd_pg *pg = start_connected(&loop, &opt, &sl);
    cr_assert_eq(px.accepted, 2, "%d connections", px.accepted);
    q_out o = {0};
    cr_assert_eq(mrd_pg_query(pg, "SELECT 'through the proxy'", 0, NULL, on_q, &o), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
    cr_assert_eq(o.err, 0);
    cr_assert_str_eq(o.value, "through the proxy");
    uv_close((uv_handle_t *)&px.server, NULL);
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

typedef struct {
    int n;
    char channel[64];
    char payload[64];
} notify_log;

static void on_notify(mrd_pg *pg, const char *channel, const char *payload, void *data)
{
    (void)pg;
    notify_log *l = data;
    l->n++;
    snprintf(l->channel, sizeof(l->channel), "%s", channel);
    snprintf(l->payload, sizeof(l->payload), "%s", payload);
}

Test(pg, notifications_reach_the_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    notify_log nl = {0};
    mrd_pg_options opt = {0};
    opt.conninfo = pg_conninfo();
    opt.on_notify = on_notify;
    opt.data = &nl;
    mrd_pg *pg;
    cr_assert_eq(mrd_pg_start(&pg, &loop, &opt), 0);
    cr_assert(RUN_UNTIL(&loop, mrd_pg_connected(pg), 10000));
    q_out a = {0}, b = {0};
    cr_assert_eq(mrd_pg_query(pg, "LISTEN meridian_test", 0, NULL, on_q, &a), 0);
    cr_assert(RUN_UNTIL(&loop, a.calls == 1, 5000));
    cr_assert_eq(a.err, 0);
    const char *params[1] = {"hello"};
    cr_assert_eq(mrd_pg_query(pg, "SELECT pg_notify('meridian_test', $1)", 1, params, on_q, &b), 0);
    cr_assert(RUN_UNTIL(&loop, nl.n == 1, 5000), "no notification arrived");
    cr_assert_str_eq(nl.channel, "meridian_test");
    cr_assert_str_eq(nl.payload, "hello");
    cr_assert(RUN_UNTIL(&loop, b.calls == 1, 5000));
    stop_and_finish(&loop, pg);
}
