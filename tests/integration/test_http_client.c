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
