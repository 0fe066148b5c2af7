/*
 * HTTP/1.x request parser: an adapter over llhttp 8.1 that turns bytes into
 * complete mrd_http_parsed requests. Called by http_server.c (one parser per
 * connection), by the unit tests and by the fuzz target; it does no I/O.
 *
 * Invariants:
 * - buffering is bounded: the request line and headers may take at most
 *   max_header_bytes (431), the body at most max_body_bytes (413; refused at
 *   the headers when Content-Length is too large, while reading for chunked
 *   bodies); the parser pauses after each complete request and refuses to
 *   parse further until that request is taken, so at most one complete
 *   request waits in the queue;
 * - methods GET, POST, PUT, DELETE, PATCH, HEAD and OPTIONS only: any other
 *   method, known to llhttp or not, is 501 (not implemented: RFC 9110 15.6.2);
 *   versions 1.0 and 1.1 only (505); anything else malformed is 400;
 * - after a parse error the parser is dead: every feed returns -1 and the
 *   server answers mrd_http_parser_error() and closes;
 * - after a request that does not keep the connection alive (Connection:
 *   close, HTTP/1.0 without keep-alive, Upgrade) later bytes are discarded;
 * - one allocation per request: url, headers and a small body share one
 *   block; the scratch buffers are reused across requests, a large body is
 *   handed over instead of copied.
 */
#include "meridian/http_parser.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meridian/error.h"

/* Bodies up to this size are copied into the request block; larger ones are
 * handed over (the scratch body buffer is then released). */
#define SMALL_BODY 4096
/* Accounted per request line and per header for the separators. */
#define LINE_OVERHEAD 4

typedef struct parsed_impl {
    mrd_http_parsed pub; /* first: mrd_http_parsed_free casts back */
    struct parsed_impl *next;
    char *body_heap; /* owned body when it was handed over, else NULL */
} parsed_impl;

typedef struct {
    size_t noff, nlen, voff, vlen;
} hspan;

enum { ST_NONE, ST_URL, ST_FIELD, ST_VALUE };

struct mrd_http_parser {
    llhttp_t ll;
    size_t max_header, max_body;
    size_t header_bytes;
    int state;
    int in_request;
    int head_done; /* the request being received has its whole head */
    int failed;
    int done; /* a request without keep-alive was completed */
    int expect_continue;
    mrd_http_parse_error err;
    /* scratch, reused across requests */
    char *sb;
    size_t sb_len, sb_cap;
    size_t url_off, url_len;
    hspan *hs;
    size_t nh, hcap;
    char *body;
    size_t body_len, body_cap;
    /* complete requests waiting to be taken */
    parsed_impl *qhead, *qtail;
    size_t nqueued;
};

static int fail(mrd_http_parser *p, int status, const char *reason)
{
    if (!p->failed) {
        p->failed = 1;
        p->err.status = status;
        p->err.reason = reason;
    }
    return -1;
}

static int sb_append(mrd_http_parser *p, const char *at, size_t len)
{
    if (p->sb_len + len + 1 > p->sb_cap) {
        size_t cap = p->sb_cap ? p->sb_cap : 512;
        while (cap < p->sb_len + len + 1)
            cap *= 2;
        char *n = realloc(p->sb, cap);
        if (!n)
            return fail(p, 500, "out of memory");
        p->sb = n;
        p->sb_cap = cap;
    }
    memcpy(p->sb + p->sb_len, at, len);
    p->sb_len += len;
    return 0;
}

static int count_header_bytes(mrd_http_parser *p, size_t len)
{
    p->header_bytes += len;
    if (p->header_bytes > p->max_header)
        return fail(p, 431, "request header fields too large");
    return 0;
}

static int method_allowed(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
    case HTTP_POST:
    case HTTP_PUT:
    case HTTP_DELETE:
    case HTTP_PATCH:
    case HTTP_HEAD:
    case HTTP_OPTIONS:
        return 1;
    default:
        return 0;
    }
}

static int on_message_begin(llhttp_t *ll)
{
    mrd_http_parser *p = ll->data;
    p->sb_len = 0;
    p->url_off = p->url_len = 0;
    p->nh = 0;
    p->body_len = 0;
    p->header_bytes = 0;
    p->state = ST_NONE;
    p->in_request = 1;
    p->head_done = 0;
    p->expect_continue = 0;
    return count_header_bytes(p, 16 + LINE_OVERHEAD); /* method and version */
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    mrd_http_parser *p = ll->data;
    if (p->state != ST_URL) {
        if (!method_allowed(ll->method))
            return fail(p, 501, "method not implemented");
        p->state = ST_URL;
        p->url_off = p->sb_len;
    }
    if (count_header_bytes(p, len) || sb_append(p, at, len))
        return -1;
    p->url_len += len;
    return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    mrd_http_parser *p = ll->data;
    if (p->state != ST_FIELD) {
        if (p->nh == p->hcap) {
            size_t cap = p->hcap ? p->hcap * 2 : 16;
            hspan *n = realloc(p->hs, cap * sizeof(*n));
            if (!n)
                return fail(p, 500, "out of memory");
            p->hs = n;
            p->hcap = cap;
        }
        p->hs[p->nh++] = (hspan){p->sb_len, 0, p->sb_len, 0};
        p->state = ST_FIELD;
        if (count_header_bytes(p, LINE_OVERHEAD))
            return -1;
    }
    if (count_header_bytes(p, len) || sb_append(p, at, len))
        return -1;
    p->hs[p->nh - 1].nlen += len;
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    mrd_http_parser *p = ll->data;
    if (p->nh == 0)
        return fail(p, 400, "header value without a name");
    if (p->state != ST_VALUE) {
        p->state = ST_VALUE;
        p->hs[p->nh - 1].voff = p->sb_len;
    }
    if (count_header_bytes(p, len) || sb_append(p, at, len))
        return -1;
    p->hs[p->nh - 1].vlen += len;
    return 0;
}

static int header_is(const mrd_http_parser *p, const hspan *h, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    return h->nlen == nl && strncasecmp(p->sb + h->noff, name, nl) == 0 && h->vlen == vl &&
           strncasecmp(p->sb + h->voff, value, vl) == 0;
}

/* Trailing whitespace is not part of a header value (RFC 9110 5.5). */
static void trim_values(mrd_http_parser *p)
{
    for (size_t i = 0; i < p->nh; i++) {
        hspan *h = &p->hs[i];
        while (h->vlen &&
               (p->sb[h->voff + h->vlen - 1] == ' ' || p->sb[h->voff + h->vlen - 1] == '\t'))
            h->vlen--;
    }
}

static int on_headers_complete(llhttp_t *ll)
{
    mrd_http_parser *p = ll->data;
    p->state = ST_NONE;
    p->head_done = 1;
    trim_values(p);
    if (ll->http_major != 1 || ll->http_minor > 1)
        return fail(p, 505, "http version not supported");
    if (!method_allowed(ll->method))
        return fail(p, 501, "method not implemented");
    int has_body =
        (ll->flags & F_CHUNKED) || ((ll->flags & F_CONTENT_LENGTH) && ll->content_length);
    if ((ll->flags & F_CONTENT_LENGTH) && ll->content_length > p->max_body)
        return fail(p, 413, "request body too large");
    if ((ll->flags & F_CONTENT_LENGTH) && ll->content_length + 1 > p->body_cap) {
        char *n = realloc(p->body, ll->content_length + 1);
        if (!n)
            return fail(p, 500, "out of memory");
        p->body = n;
        p->body_cap = ll->content_length + 1;
    }
    if (has_body && ll->http_minor == 1) {
        for (size_t i = 0; i < p->nh; i++)
            if (header_is(p, &p->hs[i], "expect", "100-continue"))
                p->expect_continue = 1;
    }
    return 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    mrd_http_parser *p = ll->data;
    if (len > p->max_body - p->body_len)
        return fail(p, 413, "request body too large");
    if (p->body_len + len + 1 > p->body_cap) {
        size_t cap = p->body_cap ? p->body_cap : 1024;
        while (cap < p->body_len + len + 1)
            cap *= 2;
        if (cap > p->max_body + 1)
            cap = p->max_body + 1;
        char *n = realloc(p->body, cap);
        if (!n)
            return fail(p, 500, "out of memory");
        p->body = n;
        p->body_cap = cap;
    }
    memcpy(p->body + p->body_len, at, len);
    p->body_len += len;
    return 0;
}

static char *copy_str(char **dst, const char *src, size_t len)
{
    char *s = *dst;
    memcpy(s, src, len);
    s[len] = '\0';
    *dst += len + 1;
    return s;
}

static int on_message_complete(llhttp_t *ll)
{
    mrd_http_parser *p = ll->data;
    int small = p->body_len <= SMALL_BODY;
    size_t strings = p->url_len + 1 + (small ? p->body_len + 1 : 0);
    trim_values(p); /* again: chunked trailers come after the headers */
    for (size_t i = 0; i < p->nh; i++)
        strings += p->hs[i].nlen + p->hs[i].vlen + 2;
    size_t size = sizeof(parsed_impl) + p->nh * sizeof(mrd_http_header) + strings;
    parsed_impl *r = malloc(size);
    if (!r)
        return fail(p, 500, "out of memory");
    memset(r, 0, sizeof(*r));
    r->pub.headers = (mrd_http_header *)(r + 1);
    r->pub.nheaders = p->nh;
    char *s = (char *)(r->pub.headers + p->nh);
    const char *name = llhttp_method_name(ll->method);
    size_t ml = strlen(name);
    if (ml >= sizeof(r->pub.method))
        ml = sizeof(r->pub.method) - 1;
    memcpy(r->pub.method, name, ml);
    r->pub.method[ml] = '\0';
    r->pub.target = copy_str(&s, p->sb + p->url_off, p->url_len);
    for (size_t i = 0; i < p->nh; i++) {
        r->pub.headers[i].name = copy_str(&s, p->sb + p->hs[i].noff, p->hs[i].nlen);
        r->pub.headers[i].value = copy_str(&s, p->sb + p->hs[i].voff, p->hs[i].vlen);
    }
    if (small) {
        r->pub.body = copy_str(&s, p->body ? p->body : "", p->body_len);
    } else {
        p->body[p->body_len] = '\0'; /* body_cap > body_len always */
        r->pub.body = r->body_heap = p->body;
        p->body = NULL;
        p->body_cap = 0;
    }
    r->pub.body_len = p->body_len;
    r->pub.http_major = ll->http_major;
    r->pub.http_minor = ll->http_minor;
    r->pub.keep_alive = llhttp_should_keep_alive(ll) && !ll->upgrade;
    if (!r->pub.keep_alive)
        p->done = 1;
    if (p->qtail)
        p->qtail->next = r;
    else
        p->qhead = r;
    p->qtail = r;
    p->nqueued++;
    p->in_request = 0;
    p->expect_continue = 0;
    /* Release an oversized scratch so an idle connection stays small. */
    if (p->sb_cap > 64 * 1024) {
        free(p->sb);
        p->sb = NULL;
        p->sb_cap = 0;
    }
    if (p->body_cap > 64 * 1024) {
        free(p->body);
        p->body = NULL;
        p->body_cap = 0;
    }
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int mrd_http_parser_init(mrd_http_parser **out, size_t max_header_bytes, size_t max_body_bytes)
{
    mrd_http_parser *p = calloc(1, sizeof(*p));
    if (!p)
        return MRD_ENOMEM;
    p->max_header = max_header_bytes;
    p->max_body = max_body_bytes;
    llhttp_init(&p->ll, HTTP_REQUEST, &settings);
    p->ll.data = p;
    *out = p;
    return 0;
}

void mrd_http_parser_free(mrd_http_parser *p)
{
    if (!p)
        return;
    while (p->qhead) {
        parsed_impl *n = p->qhead->next;
        mrd_http_parsed_free(&p->qhead->pub);
        p->qhead = n;
    }
    free(p->sb);
    free(p->hs);
    free(p->body);
    free(p);
}

static void map_llhttp_error(mrd_http_parser *p, llhttp_errno_t e)
{
    switch (e) {
    case HPE_INVALID_METHOD:
        fail(p, 501, "method not implemented");
        break;
    case HPE_INVALID_VERSION:
        fail(p, 505, "http version not supported");
        break;
    case HPE_INVALID_HEADER_TOKEN:
        fail(p, 400, "invalid header");
        break;
    case HPE_INVALID_URL:
        fail(p, 400, "invalid request target");
        break;
    case HPE_INVALID_CONTENT_LENGTH:
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        fail(p, 400, "invalid content-length");
        break;
    case HPE_INVALID_CHUNK_SIZE:
    case HPE_INVALID_TRANSFER_ENCODING:
        fail(p, 400, "invalid chunked body");
        break;
    default:
        fail(p, 400, "malformed request");
        break;
    }
}

long mrd_http_parser_feed(mrd_http_parser *p, const char *data, size_t len)
{
    if (p->failed)
        return -1;
    if (p->nqueued > 0 || len == 0)
        return 0;
    if (p->done)
        return (long)len; /* the connection ends after the last request */
    llhttp_errno_t e = llhttp_execute(&p->ll, data, len);
    if (e == HPE_OK)
        return (long)len;
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&p->ll);
        llhttp_resume(&p->ll);
        if (!pos || pos < data || pos > data + len)
            return fail(p, 500, "parser position lost");
        return (long)(pos - data);
    }
    if (e == HPE_PAUSED_UPGRADE) {
        p->done = 1;
        return (long)len;
    }
    if (!p->failed)
        map_llhttp_error(p, e);
    return -1;
}

mrd_http_parsed *mrd_http_parser_take(mrd_http_parser *p)
{
    parsed_impl *r = p->qhead;
    if (!r)
        return NULL;
    p->qhead = r->next;
    if (!p->qhead)
        p->qtail = NULL;
    p->nqueued--;
    r->next = NULL;
    return &r->pub;
}

int mrd_http_parser_in_request(const mrd_http_parser *p)
{
    return p->in_request;
}

mrd_http_parse_error mrd_http_parser_error(const mrd_http_parser *p)
{
    if (!p->failed)
        return (mrd_http_parse_error){0, NULL};
    return p->err;
}

/* Internal to http_server.c: 1 once when the request being received asked
 * for "Expect: 100-continue" and its body has not arrived yet. */
/* 1 while the request being received has its whole head (its body may
 * still be coming); the server's header timeout stops there. */
int mrd__http_parser_head_done(const mrd_http_parser *p);
int mrd__http_parser_head_done(const mrd_http_parser *p)
{
    return p->in_request && p->head_done;
}

int mrd__http_parser_take_continue(mrd_http_parser *p);
int mrd__http_parser_take_continue(mrd_http_parser *p)
{
    int e = p->expect_continue && p->in_request && p->body_len == 0;
    p->expect_continue = 0;
    return e;
}

void mrd_http_parsed_free(mrd_http_parsed *r)
{
    if (!r)
        return;
    parsed_impl *impl = (parsed_impl *)r;
    free(impl->body_heap);
    free(impl);
}
