/*
 * Integration tests of the libuv/libcurl HTTP client against the real etcd
 * started by tests/run.sh (MERIDIAN_TEST_ETCD), plus local sockets that refuse
 * or never answer. Each test runs its own uv loop with bounded waits and
 * checks at the end that every handle was closed (uv_loop_close == 0).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "meridian/error.h"
#include "meridian/http_client.h"

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

/* Runs close callbacks (bounded) and checks that nothing is left open. */
static void loop_finish(uv_loop_t *loop)
{
    for (int i = 0; i < 200 && uv_run(loop, UV_RUN_NOWAIT) != 0; i++)
        usleep(10000);
    cr_assert_eq(uv_loop_close(loop), 0, "handles left open on the loop");
}

static const char *etcd_url(void)
{
    const char *e = getenv("MERIDIAN_TEST_ETCD");
    cr_assert(e != NULL && e[0], "MERIDIAN_TEST_ETCD is not set");
    return e;
}

typedef struct {
    int calls;
    int status;
    char *error;
    char *body;
    size_t body_len;
    double total_ms;
    mrd_http_client *close_client; /* closes this client from the callback */
} http_out;

static void out_free(http_out *o)
{
    free(o->error);
    free(o->body);
    o->error = o->body = NULL;
}

static void on_http(const mrd_http_client_result *r, void *data)
{
    http_out *o = data;
    o->calls++;
    o->status = r->status;
    free(o->error);
    free(o->body);
    o->error = r->error ? strdup(r->error) : NULL;
    o->body = strndup(r->body, r->body_len);
    o->body_len = r->body_len;
    o->total_ms = r->total_ms;
    if (o->close_client)
        mrd_http_client_close(o->close_client);
}

/* A 127.0.0.1 port with nothing listening. */
static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* A listening socket that never accepts nor answers; returns its fd. */
static int silent_listener(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(s, 128), 0);
    cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return s;
}

static char *b64(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static void post_json(uv_loop_t *loop, mrd_http_client *c, const char *path, json_t *body,
                      size_t max, http_out *o)
{
    char url[256];
    snprintf(url, sizeof(url), "%s%s", etcd_url(), path);
    char *text = json_dumps(body, JSON_COMPACT);
    mrd_http_client_req req = {.method = "POST",
                               .url = url,
                               .body = text,
                               .body_len = strlen(text),
                               .headers = json_headers,
                               .max_response_bytes = max};
    memset(o, 0, sizeof(*o));
    cr_assert_eq(mrd_http_client_request(c, &req, on_http, o), 0);
    free(text); /* the client copied it */
    cr_assert(RUN_UNTIL(loop, o->calls == 1, 10000), "no answer to POST %s", path);
}

Test(http_client, get_health)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    char url[256];
    snprintf(url, sizeof(url), "%s/health", etcd_url());
    mrd_http_client_req req = {.url = url};
    http_out o = {0};
    cr_assert_eq(mrd_http_client_request(c, &req, on_http, &o), 0);
    cr_assert_eq(mrd_http_client_pending(c), 1);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 10000));
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.status, 200);
    cr_assert_null(o.error);
    cr_assert(strstr(o.body, "\"health\":\"true\"") != NULL, "body: %s", o.body);
    cr_assert_gt(o.total_ms, 0);
    cr_assert_eq(mrd_http_client_pending(c), 0);
    out_free(&o);
    mrd_http_client_close(c);
    loop_finish(&loop);
}

Test(http_client, etcd_put_then_range)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    char *k = b64("meridian/test/http_client"), *v = b64("value with spaces & symbols");
    http_out o;
    json_t *put = json_pack("{s:s, s:s}", "key", k, "value", v);
    post_json(&loop, c, "/v3/kv/put", put, 0, &o);
    json_decref(put);
    cr_assert_eq(o.status, 200, "put: %d %s %s", o.status, o.error, o.body);
    out_free(&o);

    json_t *range = json_pack("{s:s}", "key", k);
    post_json(&loop, c, "/v3/kv/range", range, 0, &o);
    json_decref(range);
    cr_assert_eq(o.status, 200);
    json_t *doc = json_loads(o.body, 0, NULL);
    cr_assert_not_null(doc, "range answer is not JSON: %s", o.body);
    json_t *kv0 = json_array_get(json_object_get(doc, "kvs"), 0);
    cr_assert_not_null(kv0, "no kvs in %s", o.body);
    cr_assert_str_eq(json_string_value(json_object_get(kv0, "key")), k);
    cr_assert_str_eq(json_string_value(json_object_get(kv0, "value")), v);
    json_decref(doc);
    out_free(&o);
    free(k);
    free(v);
    mrd_http_client_close(c);
    loop_finish(&loop);
}

Test(http_client, hundred_concurrent_complete_once)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    char url[256];
    snprintf(url, sizeof(url), "%s/health", etcd_url());
    enum { N = 100 };
    static http_out outs[N];
    memset(outs, 0, sizeof(outs));
    mrd_http_client_req req = {.url = url, .timeout_ms = 20000};
    for (int i = 0; i < N; i++)
        cr_assert_eq(mrd_http_client_request(c, &req, on_http, &outs[i]), 0);
    cr_assert_eq(mrd_http_client_pending(c), N);
    int done = 0;
    cr_assert(RUN_UNTIL(&loop, (done = (int)(N - mrd_http_client_pending(c))) == N, 30000),
              "only %d of %d requests completed", done, N);
    /* Let any stray second callback show up. */
    RUN_UNTIL(&loop, 0, 100);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(outs[i].calls, 1, "request %d called %d times", i, outs[i].calls);
        cr_assert_eq(outs[i].status, 200, "request %d: %d %s", i, outs[i].status,
                     outs[i].error ? outs[i].error : "");
        out_free(&outs[i]);
    }
    mrd_http_client_close(c);
    loop_finish(&loop);
}

Test(http_client, closed_port_fails_with_status_0)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", closed_port());
    mrd_http_client_req req = {.url = url, .timeout_ms = 3000};
    http_out o = {0};
    cr_assert_eq(mrd_http_client_request(c, &req, on_http, &o), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 10000));
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.status, 0);
    cr_assert_not_null(o.error);
    cr_assert_neq(strcmp(o.error, "timeout"), 0, "refused, not timed out: %s", o.error);
    out_free(&o);
    mrd_http_client_close(c);
    loop_finish(&loop);
}

Test(http_client, silent_server_times_out)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    int port, ls = silent_listener(&port);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/never", port);
    mrd_http_client_req req = {.url = url, .timeout_ms = 500};
    http_out o = {0};
    uint64_t t0 = uv_hrtime();
    cr_assert_eq(mrd_http_client_request(c, &req, on_http, &o), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 8000), "no callback long after the timeout");
    double waited_ms = (double)(uv_hrtime() - t0) / 1e6;
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.status, 0);
    cr_assert_str_eq(o.error, "timeout");
    cr_assert_geq(waited_ms, 450, "timed out after %.0f ms, before 500", waited_ms);
    cr_assert_geq(o.total_ms, 450);
    out_free(&o);
    close(ls);
    mrd_http_client_close(c);
    loop_finish(&loop);
}

Test(http_client, max_response_bytes_enforced)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    /* A 20 kB value: its range answer is larger than 10 kB. */
    char big[20001];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char *k = b64("meridian/test/big"), *v = b64(big);
    http_out o;
    json_t *put = json_pack("{s:s, s:s}", "key", k, "value", v);
    post_json(&loop, c, "/v3/kv/put", put, 0, &o);
    json_decref(put);
    cr_assert_eq(o.status, 200);
    out_free(&o);

    json_t *range = json_pack("{s:s}", "key", k);
    post_json(&loop, c, "/v3/kv/range", range, 10000, &o);
    cr_assert_eq(o.status, 0);
    cr_assert_str_eq(o.error, "too_large");
    out_free(&o);
    /* The same request fits with the default bound. */
    post_json(&loop, c, "/v3/kv/range", range, 0, &o);
    cr_assert_eq(o.status, 200);
    cr_assert_gt(o.body_len, 20000);
    out_free(&o);
    json_decref(range);
    free(k);
    free(v);
    mrd_http_client_close(c);
    loop_finish(&loop);
}

Test(http_client, close_fails_pending_with_closed)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    int port, ls = silent_listener(&port);
    char url[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/never", port);
    mrd_http_client_req req = {
        .url = url, .timeout_ms = 30000, .body = "{}", .body_len = 2, .method = "PUT"};
    enum { N = 10 };
    http_out outs[N];
    memset(outs, 0, sizeof(outs));
    for (int i = 0; i < N; i++)
        cr_assert_eq(mrd_http_client_request(c, &req, on_http, &outs[i]), 0);
    RUN_UNTIL(&loop, 0, 300); /* connect and send */
    cr_assert_eq(mrd_http_client_pending(c), N);
    mrd_http_client_close(c);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(outs[i].calls, 1);
        cr_assert_eq(outs[i].status, 0);
        cr_assert_str_eq(outs[i].error, "closed");
        out_free(&outs[i]);
    }
    http_out late = {0};
    cr_assert_eq(mrd_http_client_request(c, &req, on_http, &late), MRD_ECLOSED);
    loop_finish(&loop);
    cr_assert_eq(late.calls, 0);
    close(ls);
}

Test(http_client, close_from_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    int port, ls = silent_listener(&port);
    char silent[256], health[256];
    snprintf(silent, sizeof(silent), "http://127.0.0.1:%d/never", port);
    snprintf(health, sizeof(health), "%s/health", etcd_url());
    enum { N = 5 };
    http_out outs[N];
    memset(outs, 0, sizeof(outs));
    for (int i = 1; i < N; i++) {
        mrd_http_client_req req = {.url = silent, .timeout_ms = 30000};
        cr_assert_eq(mrd_http_client_request(c, &req, on_http, &outs[i]), 0);
    }
    outs[0].close_client = c;
    mrd_http_client_req req = {.url = health};
    cr_assert_eq(mrd_http_client_request(c, &req, on_http, &outs[0]), 0);
    cr_assert(RUN_UNTIL(&loop, outs[0].calls > 0, 10000));
    cr_assert_eq(outs[0].status, 200);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(outs[i].calls, 1);
        if (i > 0)
            cr_assert_str_eq(outs[i].error, "closed");
        out_free(&outs[i]);
    }
    loop_finish(&loop);
    close(ls);
}

typedef struct {
    mrd_http_client *c;
    char url[256];
    int done;
    int failed;
} chain;

static void on_chain(const mrd_http_client_result *r, void *data)
{
    chain *ch = data;
    if (r->status != 200) {
        ch->failed++;
        return;
    }
    if (++ch->done < 5) {
        mrd_http_client_req req = {.url = ch->url};
        if (mrd_http_client_request(ch->c, &req, on_chain, ch) != 0)
            ch->failed++;
    }
}

Test(http_client, request_from_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    chain ch = {0};
    cr_assert_eq(mrd_http_client_init(&ch.c, &loop), 0);
    snprintf(ch.url, sizeof(ch.url), "%s/health", etcd_url());
    mrd_http_client_req req = {.url = ch.url};
    cr_assert_eq(mrd_http_client_request(ch.c, &req, on_chain, &ch), 0);
    cr_assert(RUN_UNTIL(&loop, ch.done == 5 || ch.failed, 10000));
    cr_assert_eq(ch.failed, 0);
    cr_assert_eq(ch.done, 5);
    mrd_http_client_close(ch.c);
    loop_finish(&loop);
}

Test(http_client, bad_request_rejected_without_callback)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    http_out o = {0};
    mrd_http_client_req no_url = {.method = "GET"};
    cr_assert_eq(mrd_http_client_request(c, &no_url, on_http, &o), MRD_EINVAL);
    mrd_http_client_req bad_body = {.url = "http://127.0.0.1:1/", .body_len = 3};
    cr_assert_eq(mrd_http_client_request(c, &bad_body, on_http, &o), MRD_EINVAL);
    cr_assert_eq(mrd_http_client_request(c, NULL, on_http, &o), MRD_EINVAL);
    mrd_http_client_req bad_method = {.url = "http://127.0.0.1:1/", .method = "GET / HTTP/1.0\r\n"};
    cr_assert_eq(mrd_http_client_request(c, &bad_method, on_http, &o), MRD_EINVAL);
    const char *const injected[] = {"X-A: 1\r\nX-Injected: 1", NULL};
    mrd_http_client_req bad_header = {.url = "http://127.0.0.1:1/", .headers = injected};
    cr_assert_eq(mrd_http_client_request(c, &bad_header, on_http, &o), MRD_EINVAL);
    const char *const no_colon[] = {"X-A 1", NULL};
    mrd_http_client_req bad_header2 = {.url = "http://127.0.0.1:1/", .headers = no_colon};
    cr_assert_eq(mrd_http_client_request(c, &bad_header2, on_http, &o), MRD_EINVAL);
    cr_assert_eq(mrd_http_client_pending(c), 0);
    /* A scheme other than http(s) fails at run time, with status 0. */
    mrd_http_client_req file = {.url = "file:///etc/passwd"};
    cr_assert_eq(mrd_http_client_request(c, &file, on_http, &o), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
    cr_assert_eq(o.status, 0);
    cr_assert_not_null(o.error);
    cr_assert_eq(o.calls, 1);
    out_free(&o);
    mrd_http_client_close(c);
    loop_finish(&loop);
}

Test(http_client, blocking_fetch)
{
    char url[256], err[256];
    snprintf(url, sizeof(url), "%s/health", etcd_url());
    mrd_http_client_req req = {.url = url};
    int status = -1;
    char *body = NULL;
    size_t len = 0;
    cr_assert_eq(mrd_http_fetch(&req, &status, &body, &len, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(status, 200);
    cr_assert_eq(strlen(body), len);
    cr_assert(strstr(body, "health") != NULL);
    free(body);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", closed_port());
    mrd_http_client_req refused = {.url = url, .timeout_ms = 3000};
    body = NULL;
    cr_assert_eq(mrd_http_fetch(&refused, &status, &body, &len, err, sizeof(err)), MRD_EHTTP);
    cr_assert_eq(status, 0);
    cr_assert_null(body);
    cr_assert_gt(strlen(err), 0);

    snprintf(url, sizeof(url), "%s/health", etcd_url());
    mrd_http_client_req small = {.url = url, .max_response_bytes = 5};
    cr_assert_eq(mrd_http_fetch(&small, &status, &body, &len, err, sizeof(err)), MRD_EHTTP);
    cr_assert_str_eq(err, "too_large");
}

/* ---- a tiny local HTTP/1.1 server: keep-alive, records the last request ---- */

typedef struct {
    uv_tcp_t server;
    int port;
    int accepted;
    int requests;
    char last[8192];
} mini;

typedef struct {
    uv_tcp_t h;
    mini *m;
    char buf[8192];
    size_t len;
} mini_conn;

static const char mini_answer[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                  "Content-Length: 2\r\n\r\nok";

static void mini_on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void mini_on_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void mini_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    mini_conn *c = h->data;
    *buf = uv_buf_init(c->buf + c->len, (unsigned int)(sizeof(c->buf) - c->len - 1));
}

/* Answers every complete request in the buffer (headers, then
 * Content-Length bytes of body). */
static void mini_on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    mini_conn *c = s->data;
    if (n < 0 || c->len + (size_t)n >= sizeof(c->buf) - 1) {
        uv_close((uv_handle_t *)s, mini_on_closed);
        return;
    }
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    for (;;) {
        char *end = strstr(c->buf, "\r\n\r\n");
        if (end == NULL)
            return;
        size_t head = (size_t)(end - c->buf) + 4, body = 0;
        char *cl = strcasestr(c->buf, "\r\ncontent-length:");
        if (cl && cl < end)
            body = strtoul(cl + 17, NULL, 10);
        if (c->len < head + body)
            return;
        snprintf(c->m->last, sizeof(c->m->last), "%.*s", (int)(head + body), c->buf);
        c->m->requests++;
        memmove(c->buf, c->buf + head + body, c->len - head - body + 1);
        c->len -= head + body;
        uv_write_t *w = malloc(sizeof(*w));
        uv_buf_t out = uv_buf_init((char *)mini_answer, sizeof(mini_answer) - 1);
        uv_write(w, s, &out, 1, mini_on_written);
    }
}

static void mini_on_conn(uv_stream_t *server, int status)
{
    mini *m = server->data;
    if (status < 0)
        return;
    mini_conn *c = calloc(1, sizeof(*c));
    c->m = m;
    uv_tcp_init(server->loop, &c->h);
    c->h.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->h) != 0) {
        uv_close((uv_handle_t *)&c->h, mini_on_closed);
        return;
    }
    m->accepted++;
    uv_read_start((uv_stream_t *)&c->h, mini_alloc, mini_on_read);
}

static void mini_start(uv_loop_t *loop, mini *m)
{
    memset(m, 0, sizeof(*m));
    uv_tcp_init(loop, &m->server);
    m->server.data = m;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    cr_assert_eq(uv_tcp_bind(&m->server, (struct sockaddr *)&a, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&m->server, 128, mini_on_conn), 0);
    int len = sizeof(a);
    uv_tcp_getsockname(&m->server, (struct sockaddr *)&a, &len);
    m->port = ntohs(a.sin_port);
}

Test(http_client, keep_alive_reuses_one_connection)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mini m;
    mini_start(&loop, &m);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ping", m.port);
    for (int i = 0; i < 5; i++) {
        http_out o = {0};
        mrd_http_client_req req = {.url = url};
        cr_assert_eq(mrd_http_client_request(c, &req, on_http, &o), 0);
        cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
        cr_assert_eq(o.status, 200, "%s", o.error ? o.error : "");
        cr_assert_str_eq(o.body, "ok");
        out_free(&o);
    }
    cr_assert_eq(m.requests, 5);
    cr_assert_eq(m.accepted, 1, "%d connections for 5 sequential requests", m.accepted);
    mrd_http_client_close(c);
    uv_close((uv_handle_t *)&m.server, NULL);
    loop_finish(&loop);
}

Test(http_client, method_headers_and_body_are_sent_and_copied)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mini m;
    mini_start(&loop, &m);
    mrd_http_client *c;
    cr_assert_eq(mrd_http_client_init(&c, &loop), 0);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/thing", m.port);
    /* Everything the request points to is gone before the loop runs. */
    char *method = strdup("PATCH"), *h1 = strdup("X-Meridian-Test: 42"),
         *h2 = strdup("Content-Type: application/json"), *body = strdup("{\"a\":1}");
    const char **headers = calloc(3, sizeof(char *));
    headers[0] = h1;
    headers[1] = h2;
    mrd_http_client_req req = {
        .method = method, .url = url, .body = body, .body_len = strlen(body), .headers = headers};
    http_out o = {0};
    cr_assert_eq(mrd_http_client_request(c, &req, on_http, &o), 0);
    memset(body, 'z', strlen(body));
    memset(h1, 'z', strlen(h1));
    free(method);
    free(h1);
    free(h2);
    free(body);
    free(headers);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
    cr_assert_eq(o.status, 200);
    cr_assert(strncmp(m.last, "PATCH /v1/thing HTTP/1.1\r\n", 26) == 0, "%s", m.last);
    cr_assert(strstr(m.last, "\r\nX-Meridian-Test: 42\r\n") != NULL, "%s", m.last);
    cr_assert(strstr(m.last, "\r\nContent-Length: 7\r\n") != NULL, "%s", m.last);
    cr_assert(strstr(m.last, "\r\n\r\n{\"a\":1}") != NULL, "%s", m.last);
    cr_assert(strcasestr(m.last, "Expect:") == NULL, "%s", m.last);
    out_free(&o);
    memset(&o, 0, sizeof(o));

    /* DELETE without a body, then POST without a body. */
    mrd_http_client_req del = {.method = "DELETE", .url = url};
    cr_assert_eq(mrd_http_client_request(c, &del, on_http, &o), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
    cr_assert_eq(m.requests, 2);
    cr_assert(strncmp(m.last, "DELETE /v1/thing HTTP/1.1\r\n", 27) == 0, "%s", m.last);
    out_free(&o);
    memset(&o, 0, sizeof(o));
    mrd_http_client_req post = {.method = "POST", .url = url};
    cr_assert_eq(mrd_http_client_request(c, &post, on_http, &o), 0);
    cr_assert(RUN_UNTIL(&loop, o.calls > 0, 5000));
    cr_assert_eq(m.requests, 3);
    cr_assert(strncmp(m.last, "POST /v1/thing HTTP/1.1\r\n", 25) == 0, "%s", m.last);
    cr_assert(strstr(m.last, "\r\nContent-Length: 0\r\n") != NULL, "%s", m.last);
    out_free(&o);
    mrd_http_client_close(c);
    uv_close((uv_handle_t *)&m.server, NULL);
    loop_finish(&loop);
}
