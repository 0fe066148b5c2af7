/*
 * Benchmark (not a test: prints figures, asserts nothing about speed) of the
 * controller's heartbeat ingest: N simulated agents in one process, each
 * sending one heartbeat per 1/RATE s to one controller URL, the sends spread
 * evenly over the interval (send k goes out at k / (N * RATE) s, to agent
 * k mod N). The body is what a replica's agent sends: node, region, seq, one
 * PostgreSQL member with positions, three checks. An agent whose previous
 * heartbeat is still unanswered skips its turn ("overruns"), as a real agent
 * does. Requests go through the http_client (libcurl multi on libuv,
 * keep-alive); --connections caps its connections.
 *
 * Attackers on the same controller, for the resource limits: --idle-conns K
 * idle TCP connections that never send a byte (from --idle-sources
 * 127.0.0.2.. addresses instead of 127.0.0.1, reopened when the server
 * closes them with --idle-reconnect), and --bad-token-rate R requests a
 * second with a token the controller does not know (expected: 401).
 *
 * Prints achieved heartbeats/s, p50/p99/max answer latency, errors; with
 * --store, what the store holds (nodes and members seen in the last second,
 * rows inserted or updated per second from pg_stat_user_tables); with
 * --controller-pid, the controller's RSS (peak VmHWM) and CPU. The last line
 * ("RESULT k=v ...") is for scripts (tests/bench/heartbeats.py).
 *
 * The store and the controller are sampled from a second thread with a
 * blocking libpq connection, so the event loop that sends never waits for
 * them. Exit status: 0 when the run finished (whatever the figures), 2 on a
 * usage error, 1 when the client could not start.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "meridian/error.h"
#include "meridian/http_client.h"
#include "meridian/protocol.h"

#define BODY_MAX       2048
#define TICK_MS        1
#define DRAIN_MAX_MS   6000
#define REQ_TIMEOUT_MS 5000
/* libcurl 7.88's curl_multi_remove_handle costs O(transfers in the multi):
 * with thousands queued in one multi handle, the generator, not the
 * controller, becomes the bottleneck and collapses. So agents are spread
 * over several clients (multi handles), by default one per this many. */
#define AGENTS_PER_CLIENT 250

typedef struct {
    const char *url, *token, *store;
    long agents;
    double rate;
    double seconds, warmup;
    long connections;
    long clients;
    long idle_conns;
    long idle_sources;  /* 0: idle conns from 127.0.0.1; N: 127.0.0.2 .. N+1 */
    int idle_reconnect; /* reopen an idle conn the server closed */
    double bad_rate;    /* bad-token requests per second */
    long pid;
    long services; /* 0: every 3 agents share a service no config names */
} opts;

typedef struct bench bench;

typedef struct {
    bench *b;
    long id;
    int64_t seq;
    int in_flight;
    int measured; /* the request in flight was sent inside the window */
    uint64_t sent_ns;
} agent;

/* What the sampler thread measures (written by it, read after join). */
typedef struct {
    const opts *o;
    uint64_t start_ns; /* window start (monotonic, same clock as uv_hrtime) */
    uint64_t end_ns;
    long samples;
    long nodes_fresh_min, nodes_fresh_sum, members_fresh_min, members_fresh_sum;
    long long tup_start, tup_end;
    int store_ok;
    char store_err[256];
    long rss_max_kb, hwm_kb;
    double ctl_cpu_s; /* controller utime+stime over the window */
} sampler;

struct bench {
    uv_loop_t *loop;
    mrd_http_client **clients; /* agent i uses clients[i % nclients] */
    long nclients;
    opts o;
    agent *agents;
    const char *headers[3];
    char auth[600];
    char url[1024]; /* the heartbeat endpoint */
    uv_timer_t tick;
    uint64_t start_ns;
    uint64_t total; /* sends scheduled over the whole run */
    uint64_t next;  /* next send index */
    int sending_done;
    uint64_t drain_start_ns;
    /* the generator's own loop: how late its 1 ms tick fired */
    uint64_t last_tick_ns, tick_lag_max_ns, tick_late20;
    /* window figures (latp: answers to agents hosting a primary) */
    double *lat, *latp;
    size_t nlat, caplat, nlatp, caplatp;
    uint64_t ok, errors, overruns, recorded_true, started;
    char first_error[200];
    /* idle connections (a fleet's keep-alive sockets) */
    uv_tcp_t *idle;
    uv_connect_t *idle_req;
    long idle_connected, idle_failed, idle_closed_by_server, idle_open_now;
    struct sockaddr_in idle_addr;
    int idle_stopping;
    /* bad-token attacker */
    mrd_http_client *bad;
    const char *bad_headers[3];
    uint64_t bad_next, bad_sent, bad_401, bad_other, bad_skipped;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
    for (int i = 0; i < 100000; i++) {
        uint64_t now = mono_ns();
        if (now >= t)
            return;
        uint64_t d = t - now;
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
}

/* ---- sampling thread: store and controller process ---- */

static int read_status_kb(long pid, const char *key, long *out)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    int found = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            *out = strtol(line + klen + 1, NULL, 10);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

/* utime + stime of a process in seconds, or -1. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command may contain spaces */
    if (p == NULL)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ... utime is field 14, stime 15 */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static const char *sample_sql =
    "SELECT (SELECT count(*) FROM meridian.nodes WHERE last_seen > now() - interval '1 second'),"
    " (SELECT count(*) FROM meridian.members WHERE last_seen > now() - interval '1 second'),"
    " (SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables"
    "  WHERE schemaname = 'meridian' AND relname IN ('nodes', 'members'))";

static int sample_store(PGconn *pg, long *nodes, long *members, long long *tup)
{
    PGresult *r = PQexec(pg, sample_sql);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok) {
        *nodes = atol(PQgetvalue(r, 0, 0));
        *members = atol(PQgetvalue(r, 0, 1));
        *tup = atoll(PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static void *sampler_main(void *arg)
{
    sampler *s = arg;
    const opts *o = s->o;
    PGconn *pg = NULL;
    if (o->store) {
        pg = PQconnectdb(o->store);
        if (PQstatus(pg) != CONNECTION_OK) {
            snprintf(s->store_err, sizeof(s->store_err), "%s", PQerrorMessage(pg));
            PQfinish(pg);
            pg = NULL;
        }
    }
    sleep_until_ns(s->start_ns);
    double cpu0 = o->pid > 0 ? proc_cpu_s(o->pid) : -1;
    long n, m;
    long long tup;
    if (pg && sample_store(pg, &n, &m, &tup) == 0) {
        s->tup_start = tup;
        s->store_ok = 1;
    }
    s->nodes_fresh_min = s->members_fresh_min = -1;
    long nsamples = (long)((s->end_ns - s->start_ns) / 1000000000ull);
    for (long i = 1; i <= nsamples && i < 100000; i++) {
        sleep_until_ns(s->start_ns + (uint64_t)i * 1000000000ull);
        long rss;
        if (o->pid > 0 && read_status_kb(o->pid, "VmRSS", &rss) == 0 && rss > s->rss_max_kb)
            s->rss_max_kb = rss;
        if (pg && s->store_ok && sample_store(pg, &n, &m, &tup) == 0) {
            s->samples++;
            s->nodes_fresh_sum += n;
            s->members_fresh_sum += m;
            if (s->nodes_fresh_min < 0 || n < s->nodes_fresh_min)
                s->nodes_fresh_min = n;
            if (s->members_fresh_min < 0 || m < s->members_fresh_min)
                s->members_fresh_min = m;
        }
    }
    sleep_until_ns(s->end_ns);
    if (o->pid > 0) {
        double cpu1 = proc_cpu_s(o->pid);
        s->ctl_cpu_s = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
        read_status_kb(o->pid, "VmHWM", &s->hwm_kb);
    }
    if (pg) {
        /* Backends report table statistics at most once a second. */
        sleep_until_ns(mono_ns() + 1500000000ull);
        if (s->store_ok && sample_store(pg, &n, &m, &tup) == 0)
            s->tup_end = tup;
        PQfinish(pg);
    }
    return NULL;
}

/* ---- the load ---- */

/* With --services S, agent i hosts member "svc-K-mJ" of service svc-K
 * (K = i mod S, J = i / S) in region r(J mod 3); member m0 is the primary,
 * so one heartbeat in every i/S waits for its batch to commit, as a fleet's
 * primaries do. tests/bench/heartbeats.py writes the matching config. */
static int agent_is_primary(const bench *b, const agent *a)
{
    return b->o.services > 0 && a->id / b->o.services == 0;
}

static int make_body_services(const bench *b, const agent *a, char *buf, size_t len)
{
    long svc = a->id % b->o.services, j = a->id / b->o.services;
    int64_t pos = 16777216 + a->seq * 8192;
    long long now_ms = (long long)time(NULL) * 1000;
    int primary = agent_is_primary(b, a);
    int n = snprintf(
        buf, len,
        "{\"node\":\"bench-%05ld\",\"region\":\"r%ld\",\"seq\":%" PRId64 ","
        "\"epochs\":{\"svc-%ld\":1},"
        "\"checks\":[{\"name\":\"pg\",\"status\":\"passing\",\"output\":\"\",\"duration_ms\":2},"
        "{\"name\":\"disk\",\"status\":\"passing\",\"output\":\"used 41%%\",\"duration_ms\":0},"
        "{\"name\":\"http\",\"status\":\"passing\",\"output\":\"200\",\"duration_ms\":1}],"
        "\"members\":[{\"service\":\"svc-%ld\",\"name\":\"svc-%ld-m%ld\","
        "\"kind\":\"postgresql\",\"role\":\"%s\",\"fenced\":false,\"timeline\":1,"
        "\"position\":%" PRId64 ",\"receive_position\":%" PRId64 ",\"replay_position\":%" PRId64
        ",\"replay_timestamp_ms\":%lld,\"lag_bytes\":%d,\"lag_ms\":%d,\"healthy\":true}],"
        "\"probes\":[],\"results\":[],\"api_url\":\"http://127.0.0.1:7002\"}",
        a->id, j % 3, a->seq, svc, svc, svc, j, primary ? "primary" : "replica", primary ? pos : 0,
        primary ? 0 : pos, primary ? 0 : pos - 8192, primary ? 0 : now_ms, primary ? 0 : 8192,
        primary ? 0 : 12);
    return n > 0 && (size_t)n < len ? n : -1;
}

static int make_body(const bench *b, const agent *a, char *buf, size_t len)
{
    if (b->o.services > 0)
        return make_body_services(b, a, buf, len);
    int64_t pos = 16777216 + a->seq * 8192;
    long long now_ms = (long long)time(NULL) * 1000;
    int n = snprintf(
        buf, len,
        "{\"node\":\"bench-%05ld\",\"region\":\"r%ld\",\"seq\":%" PRId64 ","
        "\"epochs\":{\"svc-%ld\":3},"
        "\"checks\":[{\"name\":\"pg\",\"status\":\"passing\",\"output\":\"\",\"duration_ms\":2},"
        "{\"name\":\"disk\",\"status\":\"passing\",\"output\":\"used 41%%\",\"duration_ms\":0},"
        "{\"name\":\"http\",\"status\":\"passing\",\"output\":\"200\",\"duration_ms\":1}],"
        "\"members\":[{\"service\":\"svc-%ld\",\"name\":\"svc-%ld-bench-%05ld\","
        "\"kind\":\"postgresql\",\"role\":\"replica\",\"fenced\":false,\"timeline\":1,"
        "\"position\":0,\"receive_position\":%" PRId64 ",\"replay_position\":%" PRId64 ","
        "\"replay_timestamp_ms\":%lld,\"lag_bytes\":8192,\"lag_ms\":12,\"healthy\":true}],"
        "\"probes\":[],\"results\":[],\"api_url\":\"http://127.0.0.1:7002\"}",
        a->id, a->id % 3, a->seq, a->id / 3, a->id / 3, a->id / 3, a->id, pos, pos - 8192, now_ms);
    (void)b;
    return n > 0 && (size_t)n < len ? n : -1;
}

static void push_latency(double **v, size_t *n, size_t *cap, double ms)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 65536;
        double *p = realloc(*v, c * sizeof(*p));
        if (p == NULL)
            return;
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = ms;
}

static void on_answer(const mrd_http_client_result *res, void *data)
{
    agent *a = data;
    bench *b = a->b;
    a->in_flight = 0;
    if (!a->measured)
        return;
    double ms = (double)(uv_hrtime() - a->sent_ns) / 1e6;
    int good = res->error == NULL && res->status == 200 && strstr(res->body, "\"recorded\"");
    if (!good) {
        b->errors++;
        if (b->first_error[0] == '\0')
            snprintf(b->first_error, sizeof(b->first_error), "status %d %s %.120s", res->status,
                     res->error ? res->error : "", res->body);
        return;
    }
    b->ok++;
    if (strstr(res->body, "\"recorded\":true") || strstr(res->body, "\"recorded\": true"))
        b->recorded_true++;
    push_latency(&b->lat, &b->nlat, &b->caplat, ms);
    if (agent_is_primary(b, a))
        push_latency(&b->latp, &b->nlatp, &b->caplatp, ms);
}

static void send_one(bench *b, agent *a, int measured)
{
    char body[BODY_MAX];
    a->seq++;
    int n = make_body(b, a, body, sizeof(body));
    if (n < 0) {
        b->errors += measured;
        return;
    }
    mrd_http_client_req req = {0};
    req.method = "POST";
    req.url = b->url;
    req.body = body;
    req.body_len = (size_t)n;
    req.headers = b->headers;
    req.timeout_ms = REQ_TIMEOUT_MS;
    a->sent_ns = uv_hrtime();
    a->measured = measured;
    if (measured)
        b->started++;
    if (mrd_http_client_request(b->clients[a->id % b->nclients], &req, on_answer, a) != 0) {
        if (measured) {
            b->errors++;
            if (b->first_error[0] == '\0')
                snprintf(b->first_error, sizeof(b->first_error), "request not started");
        }
        return;
    }
    a->in_flight = 1;
}

static void idle_close_all(bench *b);
static void bad_tick(bench *b, uint64_t now);

static void on_tick(uv_timer_t *t)
{
    bench *b = t->data;
    uint64_t now = uv_hrtime();
    if (b->last_tick_ns && now > b->last_tick_ns + TICK_MS * 1000000ull) {
        uint64_t lag = now - b->last_tick_ns - TICK_MS * 1000000ull;
        if (lag > b->tick_lag_max_ns)
            b->tick_lag_max_ns = lag;
        b->tick_late20 += lag > 20000000ull;
    }
    b->last_tick_ns = now;
    if (!b->sending_done)
        bad_tick(b, now);
    if (!b->sending_done) {
        double el = (double)(now - b->start_ns) / 1e9;
        uint64_t due = (uint64_t)(el * (double)b->o.agents * b->o.rate);
        if (due > b->total)
            due = b->total;
        double per_s = (double)b->o.agents * b->o.rate;
        for (; b->next < due; b->next++) {
            agent *a = &b->agents[b->next % (uint64_t)b->o.agents];
            int measured = (double)b->next / per_s >= b->o.warmup;
            if (a->in_flight) {
                b->overruns += measured;
                continue;
            }
            send_one(b, a, measured);
        }
        if (b->next >= b->total) {
            b->sending_done = 1;
            b->drain_start_ns = now;
        }
        return;
    }
    size_t pending = 0;
    for (long i = 0; i < b->nclients; i++)
        pending += mrd_http_client_pending(b->clients[i]);
    if (pending == 0 || now - b->drain_start_ns > (uint64_t)DRAIN_MAX_MS * 1000000ull) {
        uv_timer_stop(t);
        uv_close((uv_handle_t *)t, NULL);
        for (long i = 0; i < b->nclients; i++)
            mrd_http_client_close(b->clients[i]);
        if (b->bad)
            mrd_http_client_close(b->bad);
        idle_close_all(b);
    }
}

/* ---- idle connections (attackers with --idle-sources) ---- */

static void idle_connect(bench *b, long i);

/* After the server closed it: reopened with --idle-reconnect. */
static void on_idle_closed(uv_handle_t *h)
{
    bench *b = h->data;
    long i = (long)((uv_tcp_t *)h - b->idle);
    b->idle_open_now--;
    if (b->o.idle_reconnect && !b->idle_stopping)
        idle_connect(b, i);
}

/* After a failed connect or at the end: not reopened (bounded). */
static void on_idle_closed_final(uv_handle_t *h)
{
    bench *b = h->data;
    b->idle_open_now--;
}

static void idle_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    static char scratch[256];
    (void)h;
    (void)sz;
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

/* The server closed it (header timeout, or refused over a cap). */
static void idle_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    bench *b = s->data;
    (void)buf;
    if (n >= 0)
        return;
    b->idle_closed_by_server++;
    if (!uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, on_idle_closed);
}

static void on_idle_connect(uv_connect_t *req, int status)
{
    bench *b = req->data;
    if (status == 0 && !b->idle_stopping) {
        b->idle_connected++;
        uv_read_start(req->handle, idle_alloc, idle_read);
    } else {
        b->idle_failed += status != 0;
        if (!uv_is_closing((uv_handle_t *)req->handle))
            uv_close((uv_handle_t *)req->handle, on_idle_closed_final);
    }
}

static void idle_connect(bench *b, long i)
{
    uv_tcp_init(b->loop, &b->idle[i]);
    b->idle[i].data = b;
    b->idle_open_now++;
    if (b->o.idle_sources > 0) {
        struct sockaddr_in src;
        char ip[32];
        snprintf(ip, sizeof(ip), "127.0.0.%ld", 2 + i % b->o.idle_sources);
        uv_ip4_addr(ip, 0, &src);
        uv_tcp_bind(&b->idle[i], (const struct sockaddr *)&src, 0);
    }
    b->idle_req[i].data = b;
    if (uv_tcp_connect(&b->idle_req[i], &b->idle[i], (const struct sockaddr *)&b->idle_addr,
                       on_idle_connect) != 0) {
        b->idle_failed++;
        uv_close((uv_handle_t *)&b->idle[i], on_idle_closed_final);
    }
}

static void idle_open(bench *b)
{
    const char *hp = strstr(b->o.url, "://");
    char host[64] = "127.0.0.1";
    int port = 80;
    if (hp) {
        hp += 3;
        size_t hl = strcspn(hp, ":/");
        if (hl > 0 && hl < sizeof(host)) {
            memcpy(host, hp, hl);
            host[hl] = '\0';
        }
        if (hp[hl] == ':')
            port = atoi(hp + hl + 1);
    }
    if (uv_ip4_addr(host, port, &b->idle_addr) != 0) {
        fprintf(stderr, "bench_heartbeats: --idle-conns needs a numeric IPv4 URL\n");
        b->idle_failed = b->o.idle_conns;
        return;
    }
    b->idle = calloc((size_t)b->o.idle_conns, sizeof(*b->idle));
    b->idle_req = calloc((size_t)b->o.idle_conns, sizeof(*b->idle_req));
    if (b->idle == NULL || b->idle_req == NULL) {
        b->idle_failed = b->o.idle_conns;
        return;
    }
    for (long i = 0; i < b->o.idle_conns; i++)
        idle_connect(b, i);
}

static void idle_close_all(bench *b)
{
    b->idle_stopping = 1;
    for (long i = 0; b->idle && i < b->o.idle_conns; i++)
        if (!uv_is_closing((uv_handle_t *)&b->idle[i]))
            uv_close((uv_handle_t *)&b->idle[i], on_idle_closed_final);
}

/* ---- bad-token attacker ---- */

static void on_bad_answer(const mrd_http_client_result *res, void *data)
{
    bench *b = data;
    if (res->error == NULL && res->status == 401)
        b->bad_401++;
    else
        b->bad_other++;
}

/* Sends the bad-token requests due by now (at most 1000 in flight). */
static void bad_tick(bench *b, uint64_t now)
{
    if (!b->bad)
        return;
    double el = (double)(now - b->start_ns) / 1e9;
    uint64_t due = (uint64_t)(el * b->o.bad_rate);
    static const char body[] = "{\"node\":\"attacker\"}";
    for (; b->bad_next < due; b->bad_next++) {
        if (mrd_http_client_pending(b->bad) > 1000) {
            b->bad_skipped++;
            continue;
        }
        mrd_http_client_req req = {0};
        req.method = "POST";
        req.url = b->url;
        req.body = body;
        req.body_len = sizeof(body) - 1;
        req.headers = b->bad_headers;
        req.timeout_ms = REQ_TIMEOUT_MS;
        if (mrd_http_client_request(b->bad, &req, on_bad_answer, b) == 0)
            b->bad_sent++;
        else
            b->bad_other++;
    }
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_heartbeats --url URL --token TOKEN [--agents N] [--rate HZ]\n"
                    "       [--seconds S] [--warmup S] [--connections C] [--idle-conns K]\n"
                    "       [--store CONNINFO] [--controller-pid PID]\n"
                    "  --url           controller base URL (http://127.0.0.1:PORT); the path\n"
                    "                  /v1/agent/heartbeat is added when it has no /v1/\n"
                    "  --agents        simulated agents (default 1000)\n"
                    "  --rate          heartbeats per second per agent (default 1)\n"
                    "  --seconds       measured seconds (default 20), after --warmup (default 3)\n"
                    "  --clients       http clients (libcurl multi handles) the agents are spread\n"
                    "                  over (default: one per 250 agents)\n"
                    "  --connections   cap on each client's connections, kept open (default:\n"
                    "                  agents per client, one per agent like a fleet)\n"
                    "  --idle-conns    extra idle TCP connections held open to the controller,\n"
                    "                  that never send a byte (default 0)\n"
                    "  --idle-sources N  open them from 127.0.0.2 .. 127.0.0.(N+1), not\n"
                    "                  127.0.0.1 (the agents' address)\n"
                    "  --idle-reconnect  reopen each idle connection the server closes\n"
                    "  --bad-token-rate R  also send R requests/s with an unknown token\n"
                    "  --store         libpq conninfo of the store: rows written, freshness\n"
                    "  --controller-pid  sample the controller's RSS and CPU\n"
                    "  --services S    agents host the members of S services (svc-0..), member\n"
                    "                  m0 of each a primary; the controller must be configured\n"
                    "                  with them (heartbeats.py --services does it)\n");
}

static int parse_opts(int argc, char **argv, opts *o)
{
    static const struct option lo[] = {
        {"url", required_argument, NULL, 'u'},
        {"token", required_argument, NULL, 't'},
        {"agents", required_argument, NULL, 'n'},
        {"rate", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 's'},
        {"warmup", required_argument, NULL, 'w'},
        {"connections", required_argument, NULL, 'c'},
        {"idle-conns", required_argument, NULL, 'i'},
        {"store", required_argument, NULL, 'd'},
        {"controller-pid", required_argument, NULL, 'p'},
        {"clients", required_argument, NULL, 'k'},
        {"services", required_argument, NULL, 'S'},
        {"idle-sources", required_argument, NULL, 'I'},
        {"idle-reconnect", no_argument, NULL, 'R'},
        {"bad-token-rate", required_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->agents = 1000;
    o->rate = 1;
    o->seconds = 20;
    o->warmup = 3;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'u':
            o->url = optarg;
            break;
        case 't':
            o->token = optarg;
            break;
        case 'n':
            o->agents = atol(optarg);
            break;
        case 'r':
            o->rate = atof(optarg);
            break;
        case 's':
            o->seconds = atof(optarg);
            break;
        case 'w':
            o->warmup = atof(optarg);
            break;
        case 'c':
            o->connections = atol(optarg);
            break;
        case 'i':
            o->idle_conns = atol(optarg);
            break;
        case 'd':
            o->store = optarg;
            break;
        case 'p':
            o->pid = atol(optarg);
            break;
        case 'k':
            o->clients = atol(optarg);
            break;
        case 'S':
            o->services = atol(optarg);
            break;
        case 'I':
            o->idle_sources = atol(optarg);
            break;
        case 'R':
            o->idle_reconnect = 1;
            break;
        case 'B':
            o->bad_rate = atof(optarg);
            break;
        default:
            return -1;
        }
    }
    if (optind != argc || !o->url || !o->token || o->agents < 1 || o->agents > 1000000 ||
        !(o->rate > 0 && o->rate <= 1000) || !(o->seconds >= 1 && o->seconds <= 86400) ||
        !(o->warmup >= 0 && o->warmup <= 600) || o->connections < 0 || o->idle_conns < 0 ||
        o->clients < 0 || o->clients > 10000 || o->idle_conns > 100000 || o->services < 0 ||
        o->services > o->agents || o->idle_sources < 0 || o->idle_sources > 250 ||
        !(o->bad_rate >= 0 && o->bad_rate <= 100000))
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    bench *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return 1;
    if (parse_opts(argc, argv, &b->o) != 0) {
        usage();
        free(b);
        return 2;
    }
    const opts *o = &b->o;
    b->agents = calloc((size_t)o->agents, sizeof(*b->agents));
    if (b->agents == NULL) {
        free(b);
        return 1;
    }
    for (long i = 0; i < o->agents; i++) {
        b->agents[i].b = b;
        b->agents[i].id = i;
    }
    /* The body must be a valid heartbeat: decode one with the protocol. */
    {
        char body[BODY_MAX], err[256];
        agent probe = {.id = 0, .seq = 1};
        int n = make_body(b, &probe, body, sizeof(body));
        mrd_hb_request hb;
        if (n < 0 || mrd_hb_request_parse(body, (size_t)n, &hb, err, sizeof(err)) != 0) {
            fprintf(stderr, "bench_heartbeats: the body is not a valid heartbeat: %s\n", err);
            free(b->agents);
            free(b);
            return 1;
        }
        printf("body %d bytes: %s\n", n, body);
        mrd_hb_request_free(&hb);
    }
    snprintf(b->auth, sizeof(b->auth), "Authorization: Bearer %s", o->token);
    /* A base URL gets the heartbeat path. */
    size_t ul = strlen(o->url);
    snprintf(b->url, sizeof(b->url), "%.*s%s", (int)(ul && o->url[ul - 1] == '/' ? ul - 1 : ul),
             o->url, strstr(o->url, "/v1/") ? "" : "/v1/agent/heartbeat");
    b->headers[0] = b->auth;
    b->headers[1] = "Content-Type: application/json";
    b->headers[2] = NULL;

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    b->loop = uv_default_loop();
    b->nclients = o->clients ? o->clients : (o->agents + AGENTS_PER_CLIENT - 1) / AGENTS_PER_CLIENT;
    /* Default: as many connections as agents per client, kept open, as a
     * fleet keeps one per agent (libcurl's own default cache is a few per
     * transfer in flight: it would close and reopen connections all the
     * time, which no agent does). */
    if (b->o.connections == 0)
        b->o.connections = (o->agents + b->nclients - 1) / b->nclients;
    b->clients = calloc((size_t)b->nclients, sizeof(*b->clients));
    for (long i = 0; b->clients && i < b->nclients; i++) {
        if (mrd_http_client_init(&b->clients[i], b->loop) != 0 ||
            mrd_http_client_set_max_connections(b->clients[i], o->connections) != 0) {
            fprintf(stderr, "bench_heartbeats: http client init failed\n");
            return 1;
        }
    }
    if (b->clients == NULL)
        return 1;
    if (o->idle_conns > 0)
        idle_open(b);
    if (o->bad_rate > 0) {
        b->bad_headers[0] = "Authorization: Bearer not-a-token-of-this-controller-0123";
        b->bad_headers[1] = "Content-Type: application/json";
        b->bad_headers[2] = NULL;
        if (mrd_http_client_init(&b->bad, b->loop) != 0 ||
            mrd_http_client_set_max_connections(b->bad, 64) != 0) {
            fprintf(stderr, "bench_heartbeats: http client init failed\n");
            return 1;
        }
    }

    double total = (o->warmup + o->seconds) * (double)o->agents * o->rate;
    b->total = (uint64_t)total;
    b->start_ns = uv_hrtime();
    sampler s = {0};
    s.o = o;
    s.start_ns = b->start_ns + (uint64_t)(o->warmup * 1e9);
    s.end_ns = s.start_ns + (uint64_t)(o->seconds * 1e9);
    pthread_t th;
    int have_thread = pthread_create(&th, NULL, sampler_main, &s) == 0;
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);

    uv_timer_init(b->loop, &b->tick);
    b->tick.data = b;
    uv_timer_start(&b->tick, on_tick, 0, TICK_MS);
    uv_run(b->loop, UV_RUN_DEFAULT);
    getrusage(RUSAGE_SELF, &ru1);
    if (have_thread)
        pthread_join(th, NULL);

    if (b->nlat > 0)
        qsort(b->lat, b->nlat, sizeof(double), cmp_double);
    if (b->nlatp > 0)
        qsort(b->latp, b->nlatp, sizeof(double), cmp_double);
    double achieved = (double)b->ok / o->seconds;
    double self_cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                      (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                      (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                      (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    double p50 = pct(b->lat, b->nlat, 0.50), p99 = pct(b->lat, b->nlat, 0.99),
           mx = b->nlat ? b->lat[b->nlat - 1] : 0;
    printf("agents %ld at %.2f Hz for %.0f s (+%.0f s warm-up), %ld clients, connections per "
           "client %s%ld, idle connections %ld/%ld\n",
           o->agents, o->rate, o->seconds, o->warmup, b->nclients,
           o->connections ? "" : "unlimited ", o->connections, b->idle_connected, o->idle_conns);
    printf("heartbeats: %.0f/s answered (target %.0f/s), ok %" PRIu64 ", errors %" PRIu64
           ", overruns %" PRIu64 ", recorded:true %" PRIu64 "\n",
           achieved, (double)o->agents * o->rate, b->ok, b->errors, b->overruns, b->recorded_true);
    if (b->first_error[0])
        printf("first error: %s\n", b->first_error);
    if (o->idle_conns > 0)
        printf("idle attackers: %ld connects, %ld closed by the server, %ld failed, %ld sources, "
               "reconnect %s\n",
               b->idle_connected, b->idle_closed_by_server, b->idle_failed, o->idle_sources,
               o->idle_reconnect ? "on" : "off");
    if (o->bad_rate > 0)
        printf("bad-token attacker: %" PRIu64 " sent (%.0f/s), %" PRIu64 " answered 401, %" PRIu64
               " other, %" PRIu64 " skipped (1000 in flight)\n",
               b->bad_sent, (double)b->bad_sent / (o->warmup + o->seconds), b->bad_401,
               b->bad_other, b->bad_skipped);
    printf("latency ms: p50 %.2f  p99 %.2f  max %.2f\n", p50, p99, mx);
    printf("generator loop: longest stall %.1f ms, tick late > 20 ms %" PRIu64
           " times (its own delays count in the latency)\n",
           (double)b->tick_lag_max_ns / 1e6, b->tick_late20);
    double pp50 = pct(b->latp, b->nlatp, 0.50), pp99 = pct(b->latp, b->nlatp, 0.99);
    if (b->nlatp > 0)
        printf("latency ms of agents hosting a primary (answered after the commit): p50 %.2f  "
               "p99 %.2f  (%zu answers)\n",
               pp50, pp99, b->nlatp);
    double rows_s = -1, nodes_avg = -1, members_avg = -1;
    if (o->store) {
        if (!s.store_ok) {
            printf("store: not sampled (%s)\n", s.store_err[0] ? s.store_err : "query failed");
        } else {
            rows_s =
                (double)(s.tup_end - s.tup_start) / o->seconds; /* the load ends with the window */
            nodes_avg = s.samples ? (double)s.nodes_fresh_sum / (double)s.samples : 0;
            members_avg = s.samples ? (double)s.members_fresh_sum / (double)s.samples : 0;
            printf("store: nodes seen in the last second avg %.0f min %ld, members avg %.0f min "
                   "%ld; rows written %.0f/s (pg_stat_user_tables, nodes + members)\n",
                   nodes_avg, s.nodes_fresh_min, members_avg, s.members_fresh_min, rows_s);
        }
    }
    double ctl_cpu = s.ctl_cpu_s >= 0 ? 100.0 * s.ctl_cpu_s / o->seconds : -1;
    if (o->pid > 0)
        printf("controller pid %ld: VmHWM %ld kB (%.1f MB), max VmRSS in window %ld kB, CPU %.1f%% "
               "of one core\n",
               o->pid, s.hwm_kb, (double)s.hwm_kb / 1024.0, s.rss_max_kb, ctl_cpu);
    printf("load generator CPU: %.1f%% of one core\n", 100.0 * self_cpu / (o->seconds + o->warmup));
    printf("RESULT agents=%ld rate=%.3f target=%.0f achieved=%.1f ok=%" PRIu64 " errors=%" PRIu64
           " overruns=%" PRIu64 " p50_ms=%.3f p99_ms=%.3f max_ms=%.3f"
           " nodes_fresh=%.0f members_fresh=%.0f rows_s=%.0f hwm_kb=%ld rss_kb=%ld"
           " ctl_cpu_pct=%.1f gen_cpu_pct=%.1f primary_p50_ms=%.3f primary_p99_ms=%.3f"
           " idle_connects=%ld idle_closed=%ld bad_sent=%" PRIu64 " bad_401=%" PRIu64 "\n",
           o->agents, o->rate, (double)o->agents * o->rate, achieved, b->ok, b->errors, b->overruns,
           p50, p99, mx, nodes_avg, members_avg, rows_s, s.hwm_kb, s.rss_max_kb, ctl_cpu,
           100.0 * self_cpu / (o->seconds + o->warmup), pp50, pp99, b->idle_connected,
           b->idle_closed_by_server, b->bad_sent, b->bad_401);
    fflush(stdout);
    uv_loop_close(b->loop);
    free(b->lat);
    free(b->latp);
    free(b->idle);
    free(b->idle_req);
    free(b->clients);
    free(b->agents);
    free(b);
    return 0;
}
