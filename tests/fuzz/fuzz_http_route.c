/*
 * libFuzzer target for common/http_server.c request handling after the
 * parser: routing (literal segments, {params}, methods, 404/405/OPTIONS,
 * absolute-form and "*" targets), percent-decoding of path parameters and
 * query parameters, auth on protected routes, the request accessors and
 * JSON bodies. One server listens on 127.0.0.1 (port 0) on a loop this
 * target runs itself; each input is written on a fresh TCP connection,
 * half-closed, and the loop runs until the server has closed it, so every
 * pipelined request in the input is dispatched. Handlers check what they
 * are given (NUL-terminated, decoded parameters never empty, path without
 * query) and abort otherwise. Seeds: tests/fuzz/corpus/http_route/.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "meridian/auth.h"
#include "meridian/http_server.h"

static void h_any(mrd_http_request *req, mrd_http_response *res, void *data)
{
    (void)data;
    const char *path = mrd_http_request_path(req), *query = mrd_http_request_query(req);
    if (!path || path[0] != '/' || strchr(path, '?') || !query)
        abort();
    static const char *const params[] = {"svc", "id", "x", "y", "z", "nope"};
    json_t *j = json_object();
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        const char *v = mrd_http_request_param(req, params[i]);
        if (v && v[0] == '\0')
            abort(); /* {param} never matches an empty segment */
        if (v)
            json_object_set_new(j, params[i], json_string(v));
    }
    static const char *const names[] = {"a", "b c", "id", "", "wait", "%", "x&y"};
    char small[4], big[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (mrd_http_request_query_param(req, names[i], big, sizeof(big)) && strlen(big) >= 512)
            abort();
        if (mrd_http_request_query_param(req, names[i], small, sizeof(small)) &&
            strlen(small) >= sizeof(small))
            abort();
        (void)mrd_http_request_query_param(req, names[i], NULL, 0);
    }
    (void)mrd_http_request_header(req, "authorization");
    (void)mrd_http_request_header(req, "content-type");
    if (strcmp(mrd_http_request_principal(req), "") == 0)
        abort();
    size_t blen;
    const char *body = mrd_http_request_body(req, &blen);
    if (blen && (!body || body[blen] != '\0'))
        abort();
    if (strcmp(mrd_http_request_method(req), "POST") == 0 && blen) {
        json_t *b = mrd_http_request_json(req, res);
        if (!b) {
            json_decref(j);
            return; /* answered 400 */
        }
        json_object_set_new(j, "body", b);
    }
    mrd_http_response_header(res, "X-Path", path);
    mrd_http_respond_json(res, 200, j);
}

static const mrd_http_route routes[] = {
    {"GET", "/v1/health", 0, h_any},
    {"GET", "/v1/status", MRD_ROLES_READ, h_any},
    {"GET", "/v1/services/{svc}", MRD_ROLES_READ, h_any},
    {"PUT", "/v1/services/{svc}", MRD_ROLE_OPERATOR, h_any},
    {"GET", "/v1/services/{svc}/checkpoints/{id}", 0, h_any},
    {"POST", "/v1/services/{svc}/checkpoints", 0, h_any},
    {"DELETE", "/v1/services/{svc}/checkpoints/{id}", MRD_ROLE_OPERATOR, h_any},
    {"POST", "/v1/agent/heartbeat", MRD_ROLE_AGENT, h_any},
    {"GET", "/a/{x}/b/{y}/c/{z}", 0, h_any},
    {"PATCH", "/a/{x}", 0, h_any},
    {"OPTIONS", "/v1/options", 0, h_any},
    {"GET", "/metrics", 0, h_any},
};

static uv_loop_t loop;
static mrd_http_server *srv;
static mrd_auth *auth;
static int port;

static int setup(void)
{
    if (srv)
        return 0;
    if (uv_loop_init(&loop) != 0)
        return -1;
    json_t *t = json_pack("[{s:s,s:s,s:s},{s:s,s:s,s:s}]", "name", "ops", "token",
                          "operator-token-0123456789", "role", "operator", "name", "agents",
                          "token", "agent-token-0123456789ab", "role", "agent");
    char err[128];
    if (!t || mrd_auth_init(&auth, t, err, sizeof(err)) != 0)
        return -1;
    json_decref(t);
    mrd_http_server_options o;
    memset(&o, 0, sizeof(o));
    o.host = "127.0.0.1";
    o.port = 0;
    o.max_header_bytes = 8192;
    o.max_body_bytes = 65536;
    o.routes = routes;
    o.nroutes = sizeof(routes) / sizeof(routes[0]);
    o.auth = auth;
    if (mrd_http_server_start(&srv, &loop, &o) != 0)
        return -1;
    port = mrd_http_server_port(srv);
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (setup() != 0)
        abort();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        abort();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS)
        abort();
    size_t off = 0;
    int wr_closed = 0, eof = 0;
    char buf[65536];
    /* bounded: the server answers or closes well within this on loopback */
    uint64_t deadline = now_ms() + 10000;
    while (!eof && now_ms() < deadline) {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (off < size) {
            ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != ENOTCONN)
                off = size; /* the server closed early: fine */
        }
        if (off >= size && !wr_closed) {
            shutdown(fd, SHUT_WR);
            wr_closed = 1;
        }
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != ENOTCONN))
            eof = 1;
        else if (r < 0) {
            struct pollfd p = {fd, POLLIN, 0};
            poll(&p, 1, 0);
        }
    }
    if (!eof)
        abort(); /* the server never closed the conn after the client's EOF */
    close(fd);
    /* let the server run the close callbacks of this conn */
    for (int i = 0; i < 4; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
