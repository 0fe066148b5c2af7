/* Unit tests of the llhttp adapter: complete requests, pipelining, byte-by-byte
 * feeding, limits (431, 413), bad method (501), bad version (505), bad
 * header (400), keep-alive. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meridian/http_parser.h"

#define MAXH 1024
#define MAXB 4096

static mrd_http_parser *mk(void)
{
    mrd_http_parser *p = NULL;
    cr_assert_eq(mrd_http_parser_init(&p, MAXH, MAXB), 0);
    return p;
}

/* Feeds everything, taking requests as they come; returns them in out (up to
 * max) and the count, or -1 on a parse error. */
static int feed_all(mrd_http_parser *p, const char *data, size_t len, mrd_http_parsed **out,
                    int max)
{
    int n = 0;
    size_t off = 0;
    for (int guard = 0; guard < 10000; guard++) {
        long r = mrd_http_parser_feed(p, data + off, len - off);
        if (r < 0)
            return -1;
        off += (size_t)r;
        mrd_http_parsed *q;
        while ((q = mrd_http_parser_take(p))) {
            cr_assert_lt(n, max);
            out[n++] = q;
        }
        if (off == len)
            return n;
        cr_assert(r > 0 || n > 0, "parser made no progress");
    }
    cr_assert_fail("feed loop did not end");
    return -1;
}

static const char *hdr(const mrd_http_parsed *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

static int expect_error(const char *req, int status)
{
    mrd_http_parser *p = mk();
    mrd_http_parsed *out[4];
    int n = feed_all(p, req, strlen(req), out, 4);
    for (int i = 0; i < n; i++)
        mrd_http_parsed_free(out[i]);
    mrd_http_parse_error e = mrd_http_parser_error(p);
    cr_assert_eq(n, -1, "expected a parse error for %s", req);
    cr_assert_eq(e.status, status, "status %d, expected %d (%s)", e.status, status,
                 e.reason ? e.reason : "");
    cr_assert_not_null(e.reason);
    /* dead after an error */
    cr_assert_eq(mrd_http_parser_feed(p, "GET / HTTP/1.1\r\n\r\n", 18), -1);
    mrd_http_parser_free(p);
    return 1;
}

Test(http_parser, valid_get)
{
    const char *req = "GET /v1/status?x=1 HTTP/1.1\r\nHost: a\r\nX-Thing:  v  \r\n\r\n";
    mrd_http_parser *p = mk();
    mrd_http_parsed *out[2];
    cr_assert_eq(feed_all(p, req, strlen(req), out, 2), 1);
    mrd_http_parsed *r = out[0];
    cr_assert_str_eq(r->method, "GET");
    cr_assert_str_eq(r->target, "/v1/status?x=1");
    cr_assert_eq(r->http_major, 1);
    cr_assert_eq(r->http_minor, 1);
    cr_assert_eq(r->nheaders, 2);
    cr_assert_str_eq(hdr(r, "host"), "a");
    cr_assert_str_eq(hdr(r, "x-thing"), "v");
    cr_assert_eq(r->body_len, 0);
    cr_assert_str_eq(r->body, "");
    cr_assert(r->keep_alive);
    cr_assert_not(mrd_http_parser_in_request(p));
    cr_assert_null(mrd_http_parser_take(p));
    mrd_http_parsed_free(r);
    mrd_http_parser_free(p);
}

Test(http_parser, post_with_body)
{
    const char *req = "POST /v1/heartbeat HTTP/1.1\r\nContent-Length: 13\r\n"
                      "Content-Type: application/json\r\n\r\n{\"node\":\"a\"}\n";
    mrd_http_parser *p = mk();
    mrd_http_parsed *out[2];
    cr_assert_eq(feed_all(p, req, strlen(req), out, 2), 1);
    cr_assert_str_eq(out[0]->method, "POST");
    cr_assert_eq(out[0]->body_len, 13);
    cr_assert_str_eq(out[0]->body, "{\"node\":\"a\"}\n");
    mrd_http_parsed_free(out[0]);
    mrd_http_parser_free(p);
}

Test(http_parser, large_body_handed_over)
{
    char req[MAXB + 200];
    int n = snprintf(req, sizeof(req), "PUT /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAXB);
    memset(req + n, 'b', MAXB);
    mrd_http_parser *p = mk();
    mrd_http_parsed *out[2];
    cr_assert_eq(feed_all(p, req, (size_t)n + MAXB, out, 2), 1);
    cr_assert_eq(out[0]->body_len, MAXB);
    cr_assert_eq(out[0]->body[MAXB], '\0');
    cr_assert_eq(out[0]->body[MAXB - 1], 'b');
    mrd_http_parsed_free(out[0]);
    mrd_http_parser_free(p);
}

Test(http_parser, pipelined_three_in_one_buffer)
{
    const char *req = "GET /a HTTP/1.1\r\n\r\n"
                      "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz"
                      "DELETE /c HTTP/1.1\r\nConnection: close\r\n\r\n";
    mrd_http_parser *p = mk();
    /* the parser pauses after each request and holds back the rest */
    long first = mrd_http_parser_feed(p, req, strlen(req));
    cr_assert_gt(first, 0);
    cr_assert_lt((size_t)first, strlen(req));
    cr_assert_eq(mrd_http_parser_feed(p, req + first, strlen(req) - (size_t)first), 0,
                 "must not parse on while a request waits");
    mrd_http_parsed *a = mrd_http_parser_take(p);
    cr_assert_str_eq(a->target, "/a");
    mrd_http_parsed *out[4];
    cr_assert_eq(feed_all(p, req + first, strlen(req) - (size_t)first, out, 4), 2);
    cr_assert_str_eq(out[0]->target, "/b");
    cr_assert_str_eq(out[0]->body, "xyz");
    cr_assert(out[0]->keep_alive);
    cr_assert_str_eq(out[1]->method, "DELETE");
    cr_assert_not(out[1]->keep_alive);
    mrd_http_parsed_free(a);
    mrd_http_parsed_free(out[0]);
    mrd_http_parsed_free(out[1]);
    mrd_http_parser_free(p);
}

Test(http_parser, byte_by_byte)
{
    const char *req = "POST /v1/x?y=%20 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                      "GET /next HTTP/1.1\r\n\r\n";
    mrd_http_parser *p = mk();
    mrd_http_parsed *out[4];
    int n = 0;
    size_t len = strlen(req);
    for (size_t i = 0; i < len;) {
        long r = mrd_http_parser_feed(p, req + i, 1);
        cr_assert_geq(r, 0, "error at byte %zu", i);
        i += (size_t)r;
        mrd_http_parsed *q;
        while ((q = mrd_http_parser_take(p)))
            out[n++] = q;
        if (i < len && i > 0 && n == 0)
            cr_assert(mrd_http_parser_in_request(p));
    }
    cr_assert_eq(n, 2);
    cr_assert_str_eq(out[0]->target, "/v1/x?y=%20");
    cr_assert_str_eq(out[0]->body, "hello world");
    cr_assert_str_eq(hdr(out[0], "host"), "h");
    cr_assert_str_eq(out[1]->target, "/next");
    mrd_http_parsed_free(out[0]);
    mrd_http_parsed_free(out[1]);
    mrd_http_parser_free(p);
}

Test(http_parser, truncated_yields_nothing)
{
    const char *req = "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
    mrd_http_parser *p = mk();
    cr_assert_eq(mrd_http_parser_feed(p, req, strlen(req)), (long)strlen(req));
    cr_assert_null(mrd_http_parser_take(p));
    cr_assert(mrd_http_parser_in_request(p));
    cr_assert_eq(mrd_http_parser_error(p).status, 0);
    mrd_http_parser_free(p); /* frees the partial request */
}

Test(http_parser, oversized_header_431)
{
    char req[MAXH * 2 + 100];
    int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'a', MAXH);
    snprintf(req + n + MAXH, sizeof(req) - (size_t)n - MAXH, "\r\n\r\n");
    expect_error(req, 431);
}

Test(http_parser, many_small_headers_431)
{
    char req[MAXH * 4];
    size_t o = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    while (o + 20 < MAXH * 2)
        o += (size_t)snprintf(req + o, sizeof(req) - o, "A: b\r\n");
    snprintf(req + o, sizeof(req) - o, "\r\n");
    expect_error(req, 431);
}

Test(http_parser, long_url_431)
{
    char req[MAXH * 2 + 100];
    int n = snprintf(req, sizeof(req), "GET /");
    memset(req + n, 'u', MAXH);
    snprintf(req + n + MAXH, sizeof(req) - (size_t)n - MAXH, " HTTP/1.1\r\n\r\n");
    expect_error(req, 431);
}

Test(http_parser, oversized_body_content_length_413)
{
    /* refused at the headers: no body byte is sent */
    char req[200];
    snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAXB + 1);
    expect_error(req, 413);
}

Test(http_parser, oversized_body_chunked_413)
{
    char req[MAXB * 2 + 200];
    size_t o = (size_t)snprintf(req, sizeof(req),
                                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked"
                                "\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        o += (size_t)snprintf(req + o, sizeof(req) - o, "400\r\n");
        memset(req + o, 'c', 1024);
        o += 1024;
        o += (size_t)snprintf(req + o, sizeof(req) - o, "\r\n");
    }
    snprintf(req + o, sizeof(req) - o, "0\r\n\r\n");
    expect_error(req, 413);
}

Test(http_parser, body_exactly_at_limit_ok)
{
    char req[MAXB + 200];
    int n = snprintf(req, sizeof(req), "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAXB);
    memset(req + n, 'z', MAXB);
    mrd_http_parser *p = mk();
    mrd_http_parsed *out[1];
    cr_assert_eq(feed_all(p, req, (size_t)n + MAXB, out, 1), 1);
    mrd_http_parsed_free(out[0]);
    mrd_http_parser_free(p);
}

Test(http_parser, bad_method_501)
{
    expect_error("FOO / HTTP/1.1\r\n\r\n", 501);
    expect_error("TRACE / HTTP/1.1\r\n\r\n", 501);
    expect_error("CONNECT host:443 HTTP/1.1\r\n\r\n", 501);
    expect_error("PROPFIND / HTTP/1.1\r\n\r\n", 501);
}

Test(http_parser, allowed_methods)
{
    const char *m[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        char req[64];
        snprintf(req, sizeof(req), "%s / HTTP/1.1\r\n\r\n", m[i]);
        mrd_http_parser *p = mk();
        mrd_http_parsed *out[1];
        cr_assert_eq(feed_all(p, req, strlen(req), out, 1), 1, "%s", m[i]);
        cr_assert_str_eq(out[0]->method, m[i]);
        mrd_http_parsed_free(out[0]);
        mrd_http_parser_free(p);
    }
}

Test(http_parser, bad_version_505)
{
    expect_error("GET / HTTP/2.0\r\n\r\n", 505);
    expect_error("GET / HTTP/1.2\r\n\r\n", 505);
    expect_error("GET / HTTP/0.9\r\n\r\n", 505);
    expect_error("GET / HTTP/3.1\r\n\r\n", 505);
}

Test(http_parser, bad_header_400)
{
    expect_error("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400);
    expect_error("GET / HTTP/1.1\r\nBad\x01Name: x\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400);
    expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
}

Test(http_parser, keep_alive_and_close)
{
    struct {
        const char *req;
        int keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", 1},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0},
        {"GET / HTTP/1.0\r\n\r\n", 0},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mrd_http_parser *p = mk();
        mrd_http_parsed *out[1];
        cr_assert_eq(feed_all(p, cases[i].req, strlen(cases[i].req), out, 1), 1);
        cr_assert_eq(out[0]->keep_alive, cases[i].keep_alive, "case %zu", i);
        mrd_http_parsed_free(out[0]);
        mrd_http_parser_free(p);
    }
}

Test(http_parser, bytes_after_close_are_discarded)
{
    const char *req = "GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    mrd_http_parser *p = mk();
    mrd_http_parsed *out[2];
    cr_assert_eq(feed_all(p, req, strlen(req), out, 2), 1);
    cr_assert_str_eq(out[0]->target, "/a");
    mrd_http_parsed_free(out[0]);
    mrd_http_parser_free(p);
}
