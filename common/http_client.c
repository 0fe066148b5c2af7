/*
 * Asynchronous HTTP client: the libcurl multi interface on libuv. curl names
 * the sockets to watch (CURLMOPT_SOCKETFUNCTION: one uv_poll each, attached
 * with curl_multi_assign) and when to wake it (CURLMOPT_TIMERFUNCTION: one
 * uv_timer); both call curl_multi_socket_action, then finished transfers are
 * collected with curl_multi_info_read. Used by the agent, the cutover drivers
 * and the benchmarks; mrd_http_fetch is the blocking variant for the CLI.
 *
 * Invariants: each accepted request runs its callback exactly once (done,
 * failed, "timeout", "too_large", or "closed" at close); user callbacks run
 * only from libuv callbacks, never inside curl's, so they may start requests
 * or close the client, whose memory is freed in the close callback of its
 * last uv handle. Connections are kept alive and reused by the multi handle.
 * Environment proxies are ignored: endpoints come from the configuration.
 * curl_global_init/cleanup are reference counted by libcurl (thread-safe
 * since 7.84): each client and each mrd_http_fetch takes and drops one
 * reference, so no process-wide state of ours is needed.
 */
#include "meridian/http_client.h"
#include "meridian/error.h"
#include "meridian/log.h"

#include <curl/curl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_DEFAULT_TIMEOUT_MS         5000L
#define HTTP_DEFAULT_CONNECT_TIMEOUT_MS 2000L
#define HTTP_DEFAULT_MAX_RESPONSE       ((size_t)4 << 20)
/* Finished easy handles kept for the next requests (curl_easy_init and
 * cleanup cost more than the rest of a small request). */
#define SPARE_EASY 64

typedef struct http_xfer http_xfer;

typedef struct http_sock http_sock;
struct http_sock {
    uv_poll_t poll;
    mrd_http_client *c;
    curl_socket_t fd;
    http_sock *prev, *next; /* watched sockets, doubly linked */
};

struct http_xfer {
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t len, cap, max;
    int too_large;
    mrd_http_client_cb cb;
    void *data;
    uint64_t start_ns;
    http_xfer *prev, *next;
    char errbuf[CURL_ERROR_SIZE];
};

struct mrd_http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    http_xfer *xfers; /* in flight, doubly linked */
    http_sock *socks; /* sockets curl asked us to watch */
    size_t pending;
    size_t open_handles; /* uv handles not yet through their close callback */
    int closing;
    CURL *spare[SPARE_EASY]; /* reset, ready for reuse; owned */
    size_t nspare;
};

/* ---- request setup shared by the multi and the easy paths ---- */

static size_t xfer_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_xfer *x = userdata;
    size_t n = size * nmemb;
    if (n > x->max - x->len) {
        x->too_large = 1;
        return 0; /* makes curl abort with CURLE_WRITE_ERROR */
    }
    if (x->len + n + 1 > x->cap) {
        size_t cap = x->cap ? x->cap : 1024;
        while (cap < x->len + n + 1)
            cap *= 2;
        char *b = realloc(x->body, cap);
        if (b == NULL)
            return 0;
        x->body = b;
        x->cap = cap;
    }
    memcpy(x->body + x->len, ptr, n);
    x->len += n;
    x->body[x->len] = '\0';
    return n;
}

/* A method is 1-16 upper-case letters: nothing that could end the request
 * line. */
static int method_valid(const char *m)
{
    size_t n = 0;
    for (; m[n]; n++)
        if (m[n] < 'A' || m[n] > 'Z' || n >= 16)
            return 0;
    return n > 0;
}

/* A header line is "Name: value" without CR or LF (no header injection). */
static int header_valid(const char *h)
{
    const char *colon = strchr(h, ':');
    return colon != NULL && colon != h && strpbrk(h, "\r\n") == NULL;
}

/* Fills x from req (easy handle, headers, limits). Returns 0 or MRD_E*;
 * on failure the caller frees x with xfer_free. */
static int xfer_setup(http_xfer *x, const mrd_http_client_req *req)
{
    if (req == NULL || req->url == NULL || (req->body == NULL && req->body_len > 0))
        return MRD_EINVAL;
    const char *method = req->method ? req->method : "GET";
    if (!method_valid(method))
        return MRD_EINVAL;
    for (size_t i = 0; req->headers && req->headers[i]; i++)
        if (!header_valid(req->headers[i]))
            return MRD_EINVAL;
    long timeout = req->timeout_ms > 0 ? req->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
    long ctimeout = req->connect_timeout_ms > 0 ? req->connect_timeout_ms
                                                : (timeout < HTTP_DEFAULT_CONNECT_TIMEOUT_MS
                                                       ? timeout
                                                       : HTTP_DEFAULT_CONNECT_TIMEOUT_MS);
    x->max = req->max_response_bytes > 0 ? req->max_response_bytes : HTTP_DEFAULT_MAX_RESPONSE;
    if (x->easy == NULL) /* the caller may hand in a reset one */
        x->easy = curl_easy_init();
    if (x->easy == NULL)
        return MRD_ENOMEM;
    /* "Expect:" turns off curl's 100-continue round trip on large bodies. */
    x->headers = curl_slist_append(NULL, "Expect:");
    if (x->headers == NULL)
        return MRD_ENOMEM;
    for (size_t i = 0; req->headers && req->headers[i]; i++) {
        struct curl_slist *h = curl_slist_append(x->headers, req->headers[i]);
        if (h == NULL)
            return MRD_ENOMEM;
        x->headers = h;
    }
    CURL *e = x->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PROXY, "") != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, ctimeout) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, xfer_write) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, x) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, x) != CURLE_OK;
    bad |= curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->max) != CURLE_OK;
    if (req->body != NULL || strcmp(method, "POST") == 0) {
        bad |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) != CURLE_OK;
        bad |= curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "") != CURLE_OK;
    }
    if (strcmp(method, "HEAD") == 0)
        bad |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L) != CURLE_OK;
    else if (strcmp(method, "GET") != 0 || req->body != NULL)
        bad |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
    return bad ? MRD_EINVAL : 0;
}

static void xfer_free(http_xfer *x)
{
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->body);
    free(x);
}

/* Short error text of a finished transfer, NULL on success. */
static const char *xfer_error(const http_xfer *x, CURLcode rc)
{
    if (x->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        return "too_large";
    if (rc == CURLE_OK)
        return NULL;
    if (rc == CURLE_OPERATION_TIMEDOUT)
        return "timeout";
    return x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
}

/* ---- multi interface on libuv ---- */

static void client_maybe_free(mrd_http_client *c)
{
    if (c->closing && c->open_handles == 0) {
        free(c);
        curl_global_cleanup();
    }
}

static void client_handle_closed(uv_handle_t *h)
{
    mrd_http_client *c;
    if (h->type == UV_POLL) {
        http_sock *s = h->data;
        c = s->c;
        free(s);
    } else {
        c = h->data;
    }
    c->open_handles--;
    client_maybe_free(c);
}

static void xfer_unlink(mrd_http_client *c, http_xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        c->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    c->pending--;
}

/* Detaches x from the multi handle, runs its callback, frees it. */
static void xfer_finish(mrd_http_client *c, http_xfer *x, CURLcode rc, const char *forced_error)
{
    xfer_unlink(c, x);
    curl_multi_remove_handle(c->multi, x->easy);
    mrd_http_client_result res = {0};
    res.error = forced_error ? forced_error : xfer_error(x, rc);
    if (res.error == NULL) {
        long code = 0;
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
        res.status = (int)code;
    }
    res.body = x->body ? x->body : "";
    res.body_len = x->len;
    res.total_ms = (double)(uv_hrtime() - x->start_ns) / 1e6;
    x->cb(&res, x->data);
    if (!c->closing && c->nspare < SPARE_EASY) {
        curl_easy_reset(x->easy);
        c->spare[c->nspare++] = x->easy;
        x->easy = NULL;
    }
    xfer_free(x);
}

static void client_check_done(mrd_http_client *c)
{
    CURLMsg *msg;
    int left;
    while (!c->closing && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        http_xfer *x = NULL;
        CURLcode rc = msg->data.result;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        if (x != NULL)
            xfer_finish(c, x, rc, NULL);
    }
}

static void client_on_poll(uv_poll_t *h, int status, int events)
{
    http_sock *s = h->data;
    mrd_http_client *c = s->c;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(c->multi, s->fd, flags, &running);
    client_check_done(c);
}

static void client_on_timer(uv_timer_t *t)
{
    mrd_http_client *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    client_check_done(c);
}

static void sock_close(mrd_http_client *c, http_sock *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, client_handle_closed);
}

static int client_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    mrd_http_client *c = userp;
    http_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            sock_close(c, s);
        }
        return 0;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->c = c;
        s->fd = fd;
        s->poll.data = s;
        c->open_handles++;
        s->next = c->socks;
        if (c->socks)
            c->socks->prev = s;
        c->socks = s;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    return uv_poll_start(&s->poll, events, client_on_poll) == 0 ? 0 : -1;
}

static int client_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    mrd_http_client *c = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else /* never call curl_multi_socket_action from here: curl forbids recursion */
        uv_timer_start(&c->timer, client_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

int mrd_http_client_init(mrd_http_client **out, uv_loop_t *loop)
{
    if (out == NULL || loop == NULL)
        return MRD_EINVAL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return MRD_EINTERNAL;
    mrd_http_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        curl_global_cleanup();
        return MRD_ENOMEM;
    }
    c->loop = loop;
    c->multi = curl_multi_init();
    if (c->multi == NULL) {
        free(c);
        curl_global_cleanup();
        return MRD_ENOMEM;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, client_socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, client_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 1;
    *out = c;
    return 0;
}

void mrd_http_client_close(mrd_http_client *c)
{
    if (c == NULL || c->closing)
        return;
    c->closing = 1;
    /* One at a time from the head: a callback may not start new requests
     * (closing), but it may be anything else. */
    while (c->xfers != NULL)
        xfer_finish(c, c->xfers, CURLE_OK, "closed");
    /* Cleanup closes cached connections, which calls client_socket_cb with
     * CURL_POLL_REMOVE for each socket still watched. */
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    while (c->socks != NULL) /* in case cleanup did not report some */
        sock_close(c, c->socks);
    while (c->nspare > 0)
        curl_easy_cleanup(c->spare[--c->nspare]);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, client_handle_closed);
}

int mrd_http_client_request(mrd_http_client *c, const mrd_http_client_req *req,
                            mrd_http_client_cb cb, void *data)
{
    if (c == NULL || cb == NULL)
        return MRD_EINVAL;
    if (c->closing)
        return MRD_ECLOSED;
    http_xfer *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return MRD_ENOMEM;
    if (c->nspare > 0)
        x->easy = c->spare[--c->nspare];
    int rc = xfer_setup(x, req);
    if (rc != 0) {
        xfer_free(x);
        return rc;
    }
    x->cb = cb;
    x->data = data;
    x->start_ns = uv_hrtime();
    if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK) {
        xfer_free(x);
        return MRD_EINTERNAL;
    }
    x->next = c->xfers;
    if (c->xfers)
        c->xfers->prev = x;
    c->xfers = x;
    c->pending++;
    return 0;
}

int mrd_http_client_set_max_connections(mrd_http_client *c, long n)
{
    if (c == NULL || c->closing || n < 0)
        return MRD_EINVAL;
    if (curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n) != CURLM_OK ||
        curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, n) != CURLM_OK)
        return MRD_EINVAL;
    return 0;
}

size_t mrd_http_client_pending(const mrd_http_client *c)
{
    return c ? c->pending : 0;
}

int mrd_http_fetch(const mrd_http_client_req *req, int *status, char **body, size_t *body_len,
                   char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (status)
        *status = 0;
    if (body)
        *body = NULL;
    if (body_len)
        *body_len = 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        if (err && errlen)
            snprintf(err, errlen, "curl initialisation failed");
        return MRD_EHTTP;
    }
    http_xfer *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        curl_global_cleanup();
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return MRD_EHTTP;
    }
    int rc = xfer_setup(x, req);
    const char *msg = NULL;
    if (rc != 0) {
        msg = rc == MRD_ENOMEM ? "out of memory" : "invalid request";
    } else {
        CURLcode cc = curl_easy_perform(x->easy);
        msg = xfer_error(x, cc);
    }
    if (msg != NULL) {
        if (err && errlen)
            snprintf(err, errlen, "%s", msg);
        xfer_free(x);
        curl_global_cleanup();
        return MRD_EHTTP;
    }
    long code = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (status)
        *status = (int)code;
    if (x->body == NULL) {
        x->body = calloc(1, 1);
        if (x->body == NULL) {
            if (err && errlen)
                snprintf(err, errlen, "out of memory");
            xfer_free(x);
            curl_global_cleanup();
            return MRD_EHTTP;
        }
    }
    if (body_len)
        *body_len = x->len;
    if (body) {
        *body = x->body;
        x->body = NULL;
    }
    xfer_free(x);
    curl_global_cleanup();
    return 0;
}
