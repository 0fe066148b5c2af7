/* Unit tests of the HTTP server: a server on 127.0.0.1 (port 0) runs its own
 * uv loop in a thread; the tests talk to it over raw sockets (and libcurl
 * once), covering routing, params, auth, JSON errors, pipelining, keep-alive,
 * limits and timeouts, deferred answers, disconnects and graceful stop. */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "meridian/auth.h"
#include "meridian/error.h"
#include "meridian/http_server.h"

/* ------------------------------------------------------------ fixture */

typedef struct {
    uv_loop_t loop;
    uv_async_t stop_async;
    mrd_http_server *srv;
    mrd_auth *auth;
    pthread_t th;
    int port;
    atomic_int done_called;
    atomic_int dropped;  /* deferred answers given after the client left */
    atomic_int answered; /* deferred answers given to a connected client */
    atomic_int slow_started;
    atomic_int handled;
} fixture;

static fixture F;

static void h_status(mrd_http_request *req, mrd_http_response *res, void *data)
{
    fixture *f = data;
    atomic_fetch_add(&f->handled, 1);
    (void)req;
    mrd_http_response_header(res, "X-Test", "yes");
    mrd_http_respond_json(res, 200, json_pack("{s:b}", "ok", 1));
}

static void h_checkpoint(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)data;
    mrd_http_respond_json(res, 200,
                          json_pack("{s:s,s:s,s:s,s:s}", "svc", mrd_http_request_param(req, "svc"),
                                    "id", mrd_http_request_param(req, "id"), "path",
                                    mrd_http_request_path(req), "query",
                                    mrd_http_request_query(req)));
}

static void h_query(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)data;
    char a[64], b[64], small[4];
    json_t *j = json_object();
    if (mrd_http_request_query_param(req, "a", a, sizeof(a)))
        json_object_set_new(j, "a", json_string(a));
    if (mrd_http_request_query_param(req, "b c", b, sizeof(b)))
        json_object_set_new(j, "b c", json_string(b));
    json_object_set_new(j, "missing", json_boolean(mrd_http_request_query_param(req, "zz", a, 64)));
    json_object_set_new(j, "toolong",
                        json_boolean(mrd_http_request_query_param(req, "a", small, sizeof(small))));
    mrd_http_respond_json(res, 200, j);
}

static void h_echo(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)data;
    json_t *j = mrd_http_request_json(req, res);
    if (!j)
        return;
    json_object_set_new(j, "principal", json_string(mrd_http_request_principal(req)));
    json_object_set_new(j, "role", json_integer(mrd_http_request_role(req)));
    mrd_http_respond_json(res, 201, j);
}

static void h_who(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)data;
    mrd_http_respond_json(res, 200,
                          json_pack("{s:s,s:i}", "principal", mrd_http_request_principal(req),
                                    "role", (int)mrd_http_request_role(req)));
}

typedef struct {
    uv_timer_t t;
    mrd_http_response *res;
    fixture *f;
    char id[32];
} deferred;

static void deferred_closed(uv_handle_t *h)
{
    free(h->data);
}

static void deferred_fire(uv_timer_t *t)
{
    deferred *d = t->data;
    if (mrd_http_response_connected(d->res))
        atomic_fetch_add(&d->f->answered, 1);
    else
        atomic_fetch_add(&d->f->dropped, 1);
    mrd_http_respond_json(d->res, 200, json_pack("{s:s}", "id", d->id));
    uv_close((uv_handle_t *)t, deferred_closed);
}

/* GET /v1/slow/{ms}?id=X answers {"id": X} after ms milliseconds. */
static void h_slow(mrd_http_request *req, mrd_http_response *res, void *data)
{
    fixture *f = data;
    deferred *d = calloc(1, sizeof(*d));
    d->res = res;
    d->f = f;
    if (!mrd_http_request_query_param(req, "id", d->id, sizeof(d->id)))
        snprintf(d->id, sizeof(d->id), "-");
    long ms = strtol(mrd_http_request_param(req, "ms"), NULL, 10);
    uv_timer_init(&f->loop, &d->t);
    d->t.data = d;
    uv_timer_start(&d->t, deferred_fire, (uint64_t)ms, 0);
    atomic_fetch_add(&f->slow_started, 1);
}

/* GET /v1/big/{kb}: kb KiB of text, the last byte the request's ?n= digit. */
static void h_big(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)data;
    size_t len = (size_t)strtoul(mrd_http_request_param(req, "kb"), NULL, 10) * 1024;
    char n[8] = "0";
    mrd_http_request_query_param(req, "n", n, sizeof(n));
    char *b = malloc(len + 1);
    memset(b, 'b', len);
    b[len - 1] = n[0];
    mrd_http_respond(res, 200, "text/plain", b, len);
    free(b);
}

static const mrd_http_route routes[] = {
    {"GET", "/v1/big/{kb}", 0, h_big},
    {"GET", "/v1/status", 0, h_status},
    {"GET", "/v1/services/{svc}/checkpoints/{id}", 0, h_checkpoint},
    {"DELETE", "/v1/services/{svc}/checkpoints/{id}", MRD_ROLES_WRITE, h_checkpoint},
    {"GET", "/v1/query", 0, h_query},
    {"POST", "/v1/echo", 0, h_echo},
    {"GET", "/v1/who", MRD_ROLES_READ, h_who},
    {"POST", "/v1/admin", MRD_ROLES_WRITE, h_echo},
    {"GET", "/v1/slow/{ms}", 0, h_slow},
    {"GET", "/", 0, h_status},
};

static void on_done(void *arg)
{
    fixture *f = arg;
    atomic_fetch_add(&f->done_called, 1);
}

static void on_stop_async(uv_async_t *a)
{
    fixture *f = a->data;
    mrd_http_server_stop(f->srv, on_done, f);
    uv_close((uv_handle_t *)a, NULL);
}

static void *loop_thread(void *arg)
{
    fixture *f = arg;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void start_with(mrd_http_server_options *o)
{
    memset(&F, 0, sizeof(F));
    cr_assert_eq(uv_loop_init(&F.loop), 0);
    json_t *tokens = json_loads("[{\"name\":\"ops\",\"token\":\"op-tok\",\"role\":\"operator\"},"
                                "{\"name\":\"grafana\",\"token\":\"view-tok\",\"role\":\"viewer\"},"
                                "{\"name\":\"eu-agent\",\"token\":\"ag-tok\",\"role\":\"agent\"}]",
                                0, NULL);
    char err[128];
    cr_assert_eq(mrd_auth_init(&F.auth, tokens, err, sizeof(err)), 0, "%s", err);
    json_decref(tokens);
    o->host = "127.0.0.1";
    o->port = 0;
    o->routes = routes;
    o->nroutes = sizeof(routes) / sizeof(routes[0]);
    o->auth = F.auth;
    o->data = &F;
    cr_assert_eq(mrd_http_server_start(&F.srv, &F.loop, o), 0);
    F.port = mrd_http_server_port(F.srv);
    cr_assert_gt(F.port, 0);
    uv_async_init(&F.loop, &F.stop_async, on_stop_async);
    F.stop_async.data = &F;
    cr_assert_eq(pthread_create(&F.th, NULL, loop_thread, &F), 0);
}

static void start_default(void)
{
    mrd_http_server_options o = {0};
    o.max_body_bytes = 64 * 1024;
    o.max_header_bytes = 4096;
    start_with(&o);
}

/* Stops the server and waits (bounded by the test timeout) for the loop to
 * end; every handle must be closed by then. */
static void stop_server(void)
{
    uv_async_send(&F.stop_async);
    pthread_join(F.th, NULL);
    cr_assert_eq(atomic_load(&F.done_called), 1);
    cr_assert_eq(uv_loop_close(&F.loop), 0, "handles left open");
    mrd_auth_free(F.auth);
}

/* ------------------------------------------------------------- client */

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} client;

typedef struct {
    int status;
    char headers[8192];
    char *body;
    size_t body_len;
} resp;

static client *cl_open(void)
{
    client *c = calloc(1, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(c->fd, 0);
    struct timeval tv = {10, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
    c->cap = 1 << 20;
    c->buf = malloc(c->cap);
    return c;
}

static void cl_close(client *c)
{
    close(c->fd);
    free(c->buf);
    free(c);
}

static void cl_send(client *c, const char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, data + off, len - off, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "send: %s", strerror(errno));
        off += (size_t)n;
    }
}

static void cl_sends(client *c, const char *s)
{
    cl_send(c, s, strlen(s));
}

/* Reads more bytes; 0 on EOF, -1 on timeout or error. */
static int cl_fill(client *c)
{
    if (c->len == c->cap)
        return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n > 0)
        c->len += (size_t)n;
    return n > 0 ? 1 : (int)n;
}

static const char *resp_header(const resp *r, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = r->headers;
    while ((p = strstr(p, "\r\n"))) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t l = (size_t)(e - v);
            if (l >= outlen)
                l = outlen - 1;
            memcpy(out, v, l);
            out[l] = '\0';
            return out;
        }
    }
    return NULL;
}

/* Reads one response (head: no body expected). Returns 0, or -1 on EOF or
 * timeout before a whole response. */
static int cl_read(client *c, resp *r, int head)
{
    memset(r, 0, sizeof(*r));
    char *end;
    while (!(c->len >= 4 && (end = memmem(c->buf, c->len, "\r\n\r\n", 4))))
        if (cl_fill(c) <= 0)
            return -1;
    size_t hlen = (size_t)(end - c->buf) + 4;
    cr_assert_lt(hlen, sizeof(r->headers));
    memcpy(r->headers, c->buf, hlen);
    r->headers[hlen] = '\0';
    cr_assert_eq(sscanf(r->headers, "HTTP/1.1 %d", &r->status), 1, "%s", r->headers);
    char v[64];
    size_t cl = 0;
    if (resp_header(r, "Content-Length", v, sizeof(v)))
        cl = strtoul(v, NULL, 10);
    else
        cr_assert(r->status == 204 || r->status < 200, "no Content-Length: %s", r->headers);
    if (head || r->status == 204)
        cl = 0;
    while (c->len < hlen + cl)
        if (cl_fill(c) <= 0)
            return -1;
    r->body = malloc(cl + 1);
    memcpy(r->body, c->buf + hlen, cl);
    r->body[cl] = '\0';
    r->body_len = cl;
    memmove(c->buf, c->buf + hlen + cl, c->len - hlen - cl);
    c->len -= hlen + cl;
    return 0;
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* 1 when the server closed the connection (EOF or reset) within the socket
 * timeout, with no further bytes. */
static int cl_sees_close(client *c)
{
    int n = cl_fill(c);
    if (n == 0)
        return 1;
    return n < 0 && (errno == ECONNRESET || errno == EPIPE);
}

/* One request on a fresh connection. */
static void request(const char *raw, resp *r)
{
    client *c = cl_open();
    cl_sends(c, raw);
    cr_assert_eq(cl_read(c, r, strncmp(raw, "HEAD ", 5) == 0), 0, "no response to %s", raw);
    cl_close(c);
}

static json_t *body_json(const resp *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body, r->body_len, 0, &e);
    cr_assert_not_null(j, "body is not JSON: %s", r->body);
    return j;
}

static void assert_error(const resp *r, int status, const char *code)
{
    cr_assert_eq(r->status, status, "status %d, expected %d: %s%s", r->status, status, r->headers,
                 r->body);
    char v[128];
    cr_assert_not_null(resp_header(r, "Content-Type", v, sizeof(v)));
    cr_assert_str_eq(v, "application/json");
    json_t *j = body_json(r);
    const char *c = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    cr_assert_not_null(c, "%s", r->body);
    cr_assert_not_null(m, "%s", r->body);
    cr_assert_gt(strlen(m), 0);
    if (code)
        cr_assert_str_eq(c, code);
    json_decref(j);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to 10 s for *v to reach want. */
static int wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 1000; i++) {
        if (atomic_load(v) >= want)
            return 1;
        sleep_ms(10);
    }
    return 0;
}

/* -------------------------------------------------------------- tests */

Test(http_server, routing_200_404_405)
{
    start_default();
    resp r;
    request("GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    json_t *j = body_json(&r);
    cr_assert(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    char v[64];
    cr_assert_str_eq(resp_header(&r, "X-Test", v, sizeof(v)), "yes");
    cr_assert_str_eq(resp_header(&r, "Content-Type", v, sizeof(v)), "application/json");
    resp_free(&r);

    request("GET / HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    resp_free(&r);

    request("GET /v1/nope HTTP/1.1\r\n\r\n", &r);
    assert_error(&r, 404, "not_found");
    resp_free(&r);

    request("GET /v1/status/ HTTP/1.1\r\n\r\n", &r); /* trailing slash: another path */
    assert_error(&r, 404, "not_found");
    resp_free(&r);

    request("POST /v1/status HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r);
    assert_error(&r, 405, "method_not_allowed");
    cr_assert_str_eq(resp_header(&r, "Allow", v, sizeof(v)), "GET, HEAD");
    resp_free(&r);

    request("PUT /v1/services/a/checkpoints/1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r);
    assert_error(&r, 405, NULL);
    cr_assert_str_eq(resp_header(&r, "Allow", v, sizeof(v)), "GET, HEAD, DELETE");
    resp_free(&r);

    request("OPTIONS /v1/status HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 204);
    cr_assert_str_eq(resp_header(&r, "Allow", v, sizeof(v)), "GET, HEAD, OPTIONS");
    resp_free(&r);

    request("BREW /v1/status HTTP/1.1\r\n\r\n", &r);
    assert_error(&r, 501, "not_implemented");
    resp_free(&r);

    request("GET /v1/status HTTP/2.0\r\n\r\n", &r);
    assert_error(&r, 505, NULL);
    resp_free(&r);

    request("GET /v1/status HTTP/1.1\r\nBad Header\r\n\r\n", &r);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
    stop_server();
}

Test(http_server, path_and_query_params)
{
    start_default();
    resp r;
    request("GET /v1/services/pay%2Fments/checkpoints/a%20b?x=1 HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "svc")), "pay/ments");
    cr_assert_str_eq(json_string_value(json_object_get(j, "id")), "a b");
    cr_assert_str_eq(json_string_value(json_object_get(j, "path")),
                     "/v1/services/pay%2Fments/checkpoints/a%20b");
    cr_assert_str_eq(json_string_value(json_object_get(j, "query")), "x=1");
    json_decref(j);
    resp_free(&r);

    /* empty segment never matches a parameter; bad escapes are 400 */
    request("GET /v1/services//checkpoints/1 HTTP/1.1\r\n\r\n", &r);
    assert_error(&r, 404, NULL);
    resp_free(&r);
    request("GET /v1/services/a%zz/checkpoints/1 HTTP/1.1\r\n\r\n", &r);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
    request("GET /v1/services/a%00/checkpoints/1 HTTP/1.1\r\n\r\n", &r);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);

    request("GET /v1/query?z=0&a=h%C3%A9llo+w&b%20c=x%26y HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "a")), "h\xc3\xa9llo w");
    cr_assert_str_eq(json_string_value(json_object_get(j, "b c")), "x&y");
    cr_assert(json_is_false(json_object_get(j, "missing")));
    cr_assert(json_is_false(json_object_get(j, "toolong")));
    json_decref(j);
    resp_free(&r);

    /* absolute-form target */
    request("GET http://127.0.0.1/v1/query?a=1 HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "a")), "1");
    json_decref(j);
    resp_free(&r);
    stop_server();
}

Test(http_server, auth_401_403_200)
{
    start_default();
    resp r;
    char v[64];
    request("GET /v1/who HTTP/1.1\r\n\r\n", &r);
    assert_error(&r, 401, "unauthorized");
    cr_assert_str_eq(resp_header(&r, "WWW-Authenticate", v, sizeof(v)), "Bearer");
    resp_free(&r);

    request("GET /v1/who HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n", &r);
    assert_error(&r, 401, "unauthorized");
    cr_assert_not_null(resp_header(&r, "WWW-Authenticate", v, sizeof(v)));
    resp_free(&r);

    request("GET /v1/who HTTP/1.1\r\nAuthorization: Bearer ag-tok\r\n\r\n", &r);
    assert_error(&r, 403, "forbidden");
    resp_free(&r);

    request("POST /v1/admin HTTP/1.1\r\nAuthorization: Bearer view-tok\r\n"
            "Content-Length: 2\r\n\r\n{}",
            &r);
    assert_error(&r, 403, "forbidden");
    resp_free(&r);

    request("GET /v1/who HTTP/1.1\r\nAuthorization: Bearer view-tok\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    json_t *j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "principal")), "grafana");
    cr_assert_eq(json_integer_value(json_object_get(j, "role")), MRD_ROLE_VIEWER);
    json_decref(j);
    resp_free(&r);

    request("POST /v1/admin HTTP/1.1\r\nauthorization: bearer op-tok\r\n"
            "Content-Length: 9\r\n\r\n{\"x\": 1}\n",
            &r);
    cr_assert_eq(r.status, 201, "%s", r.body);
    j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "principal")), "ops");
    cr_assert_eq(json_integer_value(json_object_get(j, "x")), 1);
    json_decref(j);
    resp_free(&r);

    /* open route: anonymous */
    request("POST /v1/echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", &r);
    cr_assert_eq(r.status, 201);
    j = body_json(&r);
    cr_assert_str_eq(json_string_value(json_object_get(j, "principal")), "anonymous");
    json_decref(j);
    resp_free(&r);

    /* bad JSON body: 400 from mrd_http_request_json */
    request("POST /v1/echo HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope", &r);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
    request("POST /v1/echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", &r);
    assert_error(&r, 400, "bad_request");
    resp_free(&r);
    stop_server();
}

Test(http_server, pipelined_in_order_with_async)
{
    start_default();
    client *c = cl_open();
    /* the first is answered last in time, yet must come first */
    cl_sends(c, "GET /v1/slow/300?id=one HTTP/1.1\r\n\r\n"
                "GET /v1/status HTTP/1.1\r\n\r\n"
                "POST /v1/echo HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"n\":\"two\"}"
                "GET /v1/slow/10?id=three HTTP/1.1\r\n\r\n"
                "GET /v1/nope HTTP/1.1\r\n\r\n");
    resp r;
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "{\"id\":\"one\"}");
    resp_free(&r);
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_str_eq(r.body, "{\"ok\":true}");
    resp_free(&r);
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 201);
    cr_assert_not_null(strstr(r.body, "\"two\""));
    resp_free(&r);
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_str_eq(r.body, "{\"id\":\"three\"}");
    resp_free(&r);
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 404);
    resp_free(&r);
    cl_close(c);
    stop_server();
}

Test(http_server, many_pipelined_requests)
{
    start_default();
    client *c = cl_open();
    enum { N = 500 };
    static char req[N * 32];
    size_t o = 0;
    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(req + o, sizeof(req) - o, "GET /v1/status HTTP/1.1\r\n\r\n");
    cl_send(c, req, o);
    for (int i = 0; i < N; i++) {
        resp r;
        cr_assert_eq(cl_read(c, &r, 0), 0, "response %d", i);
        cr_assert_eq(r.status, 200);
        resp_free(&r);
    }
    cr_assert_eq(atomic_load(&F.handled), N);
    cl_close(c);
    stop_server();
}

Test(http_server, keep_alive_reuse_and_close)
{
    start_default();
    client *c = cl_open();
    resp r;
    for (int i = 0; i < 3; i++) {
        cl_sends(c, "GET /v1/status HTTP/1.1\r\n\r\n");
        cr_assert_eq(cl_read(c, &r, 0), 0, "request %d on the same connection", i);
        cr_assert_eq(r.status, 200);
        char v[32];
        cr_assert_null(resp_header(&r, "Connection", v, sizeof(v)));
        resp_free(&r);
    }
    /* HEAD: the GET route, Content-Length of the body, no body bytes */
    cl_sends(c, "HEAD /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 1), 0);
    cr_assert_eq(r.status, 200);
    char v[32];
    cr_assert_str_eq(resp_header(&r, "Content-Length", v, sizeof(v)), "11");
    resp_free(&r);
    cl_sends(c, "GET /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 200, "HEAD must not have sent body bytes");
    cr_assert_str_eq(resp_header(&r, "Connection", v, sizeof(v)), "close");
    resp_free(&r);
    cr_assert(cl_sees_close(c));
    cl_close(c);

    /* HTTP/1.0 keep-alive is acknowledged */
    c = cl_open();
    cl_sends(c, "GET /v1/status HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_str_eq(resp_header(&r, "Connection", v, sizeof(v)), "keep-alive");
    resp_free(&r);
    cl_sends(c, "GET /v1/status HTTP/1.0\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_str_eq(resp_header(&r, "Connection", v, sizeof(v)), "close");
    resp_free(&r);
    cr_assert(cl_sees_close(c));
    cl_close(c);
    stop_server();
}

static size_t curl_sink(char *p, size_t s, size_t n, void *ud)
{
    size_t *total = ud;
    (void)p;
    *total += s * n;
    return s * n;
}

Test(http_server, libcurl_reuses_connection)
{
    start_default();
    CURL *h = curl_easy_init();
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/echo", F.port);
    size_t total = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "{\"k\":\"v\"}");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &total);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(curl_easy_perform(h), CURLE_OK);
        long code = 0, connects = -1;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
        cr_assert_eq(code, 201);
        cr_assert_eq(connects, i == 0 ? 1 : 0, "request %d opened a new connection", i);
    }
    cr_assert_gt(total, 0);
    curl_easy_cleanup(h);
    stop_server();
}

Test(http_server, slow_client_408)
{
    mrd_http_server_options o = {0};
    o.read_timeout_ms = 300;
    start_with(&o);
    client *c = cl_open();
    cl_sends(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n"); /* never finishes */
    resp r;
    cr_assert_eq(cl_read(c, &r, 0), 0);
    assert_error(&r, 408, "request_timeout");
    char v[32];
    cr_assert_str_eq(resp_header(&r, "Connection", v, sizeof(v)), "close");
    resp_free(&r);
    cr_assert(cl_sees_close(c));
    cl_close(c);

    /* trickling bytes does not extend the time: measured from the first byte */
    c = cl_open();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *slow = "GET /v1/status HTTP/1.1\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\n\r\n";
    int got = 0;
    for (size_t i = 0; slow[i]; i++) {
        if (send(c->fd, slow + i, 1, MSG_NOSIGNAL) != 1)
            break;
        sleep_ms(50);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 20)
            break;
        struct timeval tv = {0, 1000};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (recv(c->fd, c->buf + c->len, 1, MSG_PEEK) > 0) {
            got = 1;
            break;
        }
    }
    cr_assert(got, "no answer while trickling a request over ~3 s");
    struct timeval tv = {10, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cr_assert_eq(cl_read(c, &r, 0), 0);
    assert_error(&r, 408, NULL);
    resp_free(&r);
    cl_close(c);

    /* a request that arrives in time after an idle pause is fine */
    c = cl_open();
    sleep_ms(400);
    cl_sends(c, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    cl_close(c);
    stop_server();
}

Test(http_server, idle_keep_alive_closed)
{
    mrd_http_server_options o = {0};
    o.idle_timeout_ms = 200;
    start_with(&o);
    client *c = cl_open();
    resp r;
    cl_sends(c, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    resp_free(&r);
    cr_assert(cl_sees_close(c), "idle connection was not closed");
    cl_close(c);
    stop_server();
}

Test(http_server, oversized_413_and_431)
{
    start_default(); /* body 64 KiB, headers 4 KiB */
    client *c = cl_open();
    cl_sends(c, "POST /v1/echo HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n");
    static char chunk[16384];
    memset(chunk, 'x', sizeof(chunk));
    cl_send(c, chunk, sizeof(chunk)); /* the client keeps sending a bit */
    resp r;
    cr_assert_eq(cl_read(c, &r, 0), 0);
    assert_error(&r, 413, "body_too_large");
    char v[32];
    cr_assert_str_eq(resp_header(&r, "Connection", v, sizeof(v)), "close");
    resp_free(&r);
    cl_close(c);

    /* chunked, over the limit while reading */
    c = cl_open();
    cl_sends(c, "POST /v1/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    char line[32];
    for (int i = 0; i < 5; i++) {
        snprintf(line, sizeof(line), "%zx\r\n", sizeof(chunk));
        cl_sends(c, line);
        cl_send(c, chunk, sizeof(chunk));
        cl_sends(c, "\r\n");
    }
    cr_assert_eq(cl_read(c, &r, 0), 0);
    assert_error(&r, 413, NULL);
    resp_free(&r);
    cl_close(c);

    c = cl_open();
    cl_sends(c, "GET /v1/status HTTP/1.1\r\nX-Big: ");
    static char big[8192];
    memset(big, 'h', sizeof(big));
    cl_send(c, big, sizeof(big));
    cl_sends(c, "\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    assert_error(&r, 431, "headers_too_large");
    resp_free(&r);
    cl_close(c);

    /* a body just under the limit is accepted */
    static char ok[60000];
    int n = snprintf(ok, sizeof(ok),
                     "POST /v1/echo HTTP/1.1\r\nContent-Length: 50000\r\n\r\n"
                     "{\"pad\":\"");
    memset(ok + n, 'p', 50000 - 10);
    memcpy(ok + n + 50000 - 10, "\"}", 2);
    c = cl_open();
    cl_send(c, ok, (size_t)n + 50000 - 8);
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 201, "%s", r.headers);
    resp_free(&r);
    cl_close(c);
    stop_server();
}

Test(http_server, disconnect_before_async_answer)
{
    start_default();
    client *c = cl_open();
    cl_sends(c, "GET /v1/slow/300?id=gone HTTP/1.1\r\n\r\n");
    cr_assert(wait_for(&F.slow_started, 1));
    cl_close(c);
    cr_assert(wait_for(&F.dropped, 1), "the answer was not dropped");
    cr_assert_eq(atomic_load(&F.answered), 0);
    /* the server still serves */
    resp r;
    request("GET /v1/status HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    stop_server(); /* LeakSanitizer checks the dropped exchange was freed */
}

Test(http_server, graceful_stop_finishes_in_flight)
{
    start_default();
    client *busy = cl_open();
    client *idle = cl_open();
    resp r;
    cl_sends(idle, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(idle, &r, 0), 0);
    resp_free(&r);
    cl_sends(busy, "GET /v1/slow/400?id=late HTTP/1.1\r\n\r\n");
    cr_assert(wait_for(&F.slow_started, 1));
    uv_async_send(&F.stop_async);
    /* the idle connection is closed at once, the busy one gets its answer */
    cr_assert(cl_sees_close(idle));
    cr_assert_eq(cl_read(busy, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "{\"id\":\"late\"}");
    char v[32];
    cr_assert_str_eq(resp_header(&r, "Connection", v, sizeof(v)), "close");
    resp_free(&r);
    cr_assert(cl_sees_close(busy));
    pthread_join(F.th, NULL);
    cr_assert_eq(atomic_load(&F.done_called), 1);
    cr_assert_eq(atomic_load(&F.answered), 1);
    cr_assert_eq(uv_loop_close(&F.loop), 0);
    mrd_auth_free(F.auth);
    cl_close(busy);
    cl_close(idle);
    /* new connections are refused */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_neq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
}

Test(http_server, stop_is_bounded_when_a_handler_never_answers)
{
    mrd_http_server_options o = {0};
    o.read_timeout_ms = 200;
    start_with(&o);
    client *c = cl_open();
    cl_sends(c, "GET /v1/slow/3000?id=never HTTP/1.1\r\n\r\n");
    cr_assert(wait_for(&F.slow_started, 1));
    uv_async_send(&F.stop_async);
    cr_assert(wait_for(&F.done_called, 1), "stop did not finish");
    cr_assert(cl_sees_close(c));
    pthread_join(F.th, NULL); /* the deferred timer still fires, then drops */
    cr_assert_eq(atomic_load(&F.dropped), 1);
    cr_assert_eq(uv_loop_close(&F.loop), 0);
    mrd_auth_free(F.auth);
    cl_close(c);
}

Test(http_server, max_connections)
{
    mrd_http_server_options o = {0};
    o.max_connections = 2;
    start_with(&o);
    client *a = cl_open(), *b = cl_open();
    resp r;
    cl_sends(a, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(a, &r, 0), 0);
    resp_free(&r);
    cl_sends(b, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(b, &r, 0), 0);
    resp_free(&r);
    client *c = cl_open(); /* the kernel accepts; the server closes it */
    cr_assert(cl_sees_close(c));
    cl_close(c);
    cl_close(b);
    /* once a slot is free, a new connection works (server notices b's close) */
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        c = cl_open();
        send(c->fd, "GET /v1/status HTTP/1.1\r\n\r\n", 27, MSG_NOSIGNAL);
        ok = cl_read(c, &r, 0) == 0;
        if (ok)
            resp_free(&r);
        cl_close(c);
        if (!ok)
            sleep_ms(50);
    }
    cr_assert(ok);
    cl_close(a);
    stop_server();
}

Test(http_server, expect_100_continue)
{
    start_default();
    client *c = cl_open();
    cl_sends(c, "POST /v1/echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    resp r;
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 100);
    resp_free(&r);
    cl_sends(c, "{}");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 201);
    resp_free(&r);
    cl_close(c);
    stop_server();
}

Test(http_server, start_errors)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_http_server *srv = (mrd_http_server *)0x1;
    mrd_http_route bad[] = {{"GET", "no-slash", 0, h_status}};
    mrd_http_server_options o = {.routes = bad, .nroutes = 1};
    cr_assert_eq(mrd_http_server_start(&srv, &loop, &o), MRD_EINVAL);
    cr_assert_null(srv);
    mrd_http_route authed[] = {{"GET", "/x", MRD_ROLES_READ, h_status}};
    o.routes = authed; /* a protected route needs an auth table */
    cr_assert_eq(mrd_http_server_start(&srv, &loop, &o), MRD_EINVAL);
    mrd_http_route ok[] = {{"GET", "/x", 0, h_status}};
    o.routes = ok;
    o.host = "not an address";
    cr_assert_eq(mrd_http_server_start(&srv, &loop, &o), MRD_EINVAL);
    /* port in use */
    o.host = "127.0.0.1";
    mrd_http_server *a = NULL;
    cr_assert_eq(mrd_http_server_start(&a, &loop, &o), 0);
    o.port = mrd_http_server_port(a);
    cr_assert_lt(mrd_http_server_start(&srv, &loop, &o), 0);
    mrd_http_server_stop(a, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(http_server, client_reading_slowly_gets_everything_in_order)
{
    /* 20 pipelined requests for 512 KiB each: the server stops dispatching
     * while its write queue is full and resumes as the client reads */
    start_default();
    client *c = cl_open();
    char req[2048];
    size_t o = 0;
    for (int i = 0; i < 20; i++)
        o += (size_t)snprintf(req + o, sizeof(req) - o, "GET /v1/big/512?n=%d HTTP/1.1\r\n\r\n",
                              i % 10);
    cl_send(c, req, o);
    sleep_ms(300); /* let the server fill its queue */
    for (int i = 0; i < 20; i++) {
        resp r;
        cr_assert_eq(cl_read(c, &r, 0), 0, "response %d", i);
        cr_assert_eq(r.status, 200);
        cr_assert_eq(r.body_len, 512 * 1024);
        cr_assert_eq(r.body[r.body_len - 1], '0' + i % 10, "response %d out of order", i);
        char v[32];
        cr_assert_str_eq(resp_header(&r, "Content-Type", v, sizeof(v)), "text/plain");
        resp_free(&r);
    }
    cl_close(c);
    stop_server();
}

Test(http_server, options_star_and_bad_target)
{
    start_default();
    resp r;
    request("OPTIONS * HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 204);
    char v[32];
    cr_assert_null(resp_header(&r, "Content-Length", v, sizeof(v)));
    resp_free(&r);
    request("HEAD /v1/nope HTTP/1.1\r\n\r\n", &r);
    cr_assert_eq(r.status, 404);
    cr_assert_eq(r.body_len, 0);
    resp_free(&r);
    stop_server();
}

static client *cl_open_from(const char *src)
{
    client *c = calloc(1, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(c->fd, 0);
    struct timeval tv = {10, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in me = {.sin_family = AF_INET};
    cr_assert_eq(inet_pton(AF_INET, src, &me.sin_addr), 1);
    cr_assert_eq(bind(c->fd, (struct sockaddr *)&me, sizeof(me)), 0, "%s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)F.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s", strerror(errno));
    c->cap = 1 << 20;
    c->buf = malloc(c->cap);
    return c;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1000.0 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

Test(http_server, header_timeout)
{
    mrd_http_server_options o = {0};
    o.header_timeout_ms = 300;
    start_with(&o);
    resp r;

    /* a connection that sends nothing is closed without an answer */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    client *c = cl_open();
    cr_assert(cl_sees_close(c), "silent connection was not closed");
    cr_assert_eq(c->len, 0, "a silent connection got bytes");
    cr_assert_geq(ms_since(&t0), 250);
    cl_close(c);

    /* part of a head: 408 after the header timeout (the read timeout is 10 s) */
    c = cl_open();
    cl_sends(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    assert_error(&r, 408, "request_timeout");
    resp_free(&r);
    cr_assert(cl_sees_close(c));
    cl_close(c);

    /* a served keep-alive connection may idle longer than the header timeout
     * (idle_timeout_ms applies), but its next head must come in time too */
    c = cl_open();
    cl_sends(c, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    sleep_ms(600);
    cl_sends(c, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    cl_sends(c, "GET /v1/status HTTP/1.1\r\n");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    assert_error(&r, 408, NULL);
    resp_free(&r);
    cl_close(c);

    /* a body may take the read timeout once the head is in */
    c = cl_open();
    cl_sends(c, "POST /v1/echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{");
    sleep_ms(600);
    cl_sends(c, "}");
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 201);
    resp_free(&r);
    cl_close(c);

    mrd_http_server_stats st;
    mrd_http_server_stats_get(F.srv, &st);
    cr_assert_eq(st.header_timeouts, 3);
    cr_assert_eq(st.request_timeouts, 2);
    stop_server();
}

Test(http_server, max_connections_per_client)
{
    mrd_http_server_options o = {0};
    o.max_connections_per_client = 2;
    start_with(&o);
    resp r;
    client *a = cl_open_from("127.0.0.1"), *b = cl_open_from("127.0.0.1");
    cl_sends(a, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(a, &r, 0), 0);
    resp_free(&r);
    cl_sends(b, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(b, &r, 0), 0);
    resp_free(&r);
    client *c = cl_open_from("127.0.0.1"); /* a third from the same address */
    cr_assert(cl_sees_close(c));
    cl_close(c);
    client *d = cl_open_from("127.0.0.2"); /* another address is not affected */
    cl_sends(d, "GET /v1/status HTTP/1.1\r\n\r\n");
    cr_assert_eq(cl_read(d, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    resp_free(&r);
    mrd_http_server_stats st;
    mrd_http_server_stats_get(F.srv, &st);
    cr_assert_eq(st.refused_per_client, 1);
    cr_assert_eq(st.refused_max, 0);
    cr_assert_eq(st.max_connections_per_client, 2);
    /* the slot comes back once a connection of that address closes */
    cl_close(b);
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        c = cl_open_from("127.0.0.1");
        send(c->fd, "GET /v1/status HTTP/1.1\r\n\r\n", 27, MSG_NOSIGNAL);
        ok = cl_read(c, &r, 0) == 0;
        if (ok)
            resp_free(&r);
        cl_close(c);
        if (!ok)
            sleep_ms(50);
    }
    cr_assert(ok);
    cl_close(a);
    cl_close(d);
    stop_server();
}
