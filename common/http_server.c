/*
 * HTTP/1.1 server on libuv (see include/meridian/http_server.h). The
 * controller serves its API with it; the agent serves its local endpoint.
 *
 * One conn per TCP connection, one mrd_http_parser per conn. Reads go into
 * one server-wide buffer (the loop is single-threaded); bytes the parser
 * cannot take yet (a request is being handled) are copied to the conn and
 * reading stops until that request is answered, so a conn buffers at most
 * one read plus the request being handled. Requests on a conn are handled
 * one at a time: the next is dispatched after the previous response was
 * queued with uv_write, so responses keep the order of requests.
 *
 * Choices: an unknown method is 501 (parser), a known method on a path that
 * has no route for it is 405 with Allow; HEAD runs the GET route and drops
 * the body; OPTIONS on a known path without an OPTIONS route answers 204 with
 * Allow; paths match exactly (a trailing slash is a different path, a {param}
 * never matches an empty segment); path parameters are percent-decoded ("+"
 * stays "+"), query parameters also turn "+" into a space; a %00 in a path
 * parameter is 400; EOF from the client closes the conn at once (an
 * outstanding response is then dropped when the handler answers).
 *
 * Stopping: a conn closes after a response that did not keep it alive
 * (lingering: shutdown, then reads are discarded for up to 2 s so that the
 * client sees the answer rather than a reset), on idle timeout, on read
 * timeout (408), on header timeout (a new conn without a complete request
 * head: closed without an answer if it sent nothing, else 408), on a write
 * error or EOF.
 *
 * Limits against floods: a conn beyond max_connections, or beyond
 * max_connections_per_client from one peer address (a small hash table of
 * addresses with open conns), is closed right after accept. Accept errors
 * (EMFILE...) are counted: the server accepts itself (a uv_poll on the
 * listening socket, at most ACCEPT_BATCH per wakeup) so that it sees them;
 * when out of fds it closes its spare fd, accepts and drops what is pending,
 * reopens the spare, and stops polling the listener for ACCEPT_PAUSE_MS, so
 * it neither spins on a readable listener nor leaves clients hanging. Each
 * kind of refusal or error is logged at most once per LOG_EVERY_MS with the
 * count of the lines it replaced. Handles are freed in their close
 * callbacks; the server is freed when the listener, the stop timer and every
 * conn are closed.
 */
#include "meridian/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "meridian/error.h"
#include "meridian/http_parser.h"
#include "meridian/log.h"

int mrd__http_parser_take_continue(mrd_http_parser *p);

#define MAX_PARAMS    8
#define READ_BUF_SIZE (64 * 1024)
#define LINGER_MS     2000
/* Stop dispatching on a conn whose client does not read its responses. */
#define MAX_WRITE_QUEUE (1024 * 1024)
#define LOG_EVERY_MS    10000
#define ACCEPT_BATCH    256
#define ACCEPT_PAUSE_MS 100
#define CLIENT_BUCKETS  1024

int mrd__http_parser_head_done(const mrd_http_parser *p);

/* At most one log line per LOG_EVERY_MS; the next one says how many it
 * replaced. */
typedef struct {
    uint64_t next_ms;
    uint64_t suppressed;
} ratelim;

/* Open conns of one peer address. */
typedef struct client {
    struct client *next;
    unsigned n;
    int family;
    unsigned char addr[16];
} client;

typedef struct {
    const char *s; /* literal text, or the parameter name */
    size_t len;
    int param;
} route_seg;

typedef struct {
    const mrd_http_route *r;
    route_seg *segs;
    size_t nsegs;
} compiled_route;

typedef struct conn conn;

struct mrd_http_server {
    uv_loop_t *loop;
    uv_poll_t listener; /* on lfd, which the server owns */
    int lfd;
    int spare_fd; /* /dev/null, closed to make room when out of fds */
    uv_timer_t pause_timer;
    uv_timer_t stop_timer;
    mrd_http_server_options opt;
    int port;
    compiled_route *routes;
    route_seg *segs;
    conn *conns;
    unsigned nconns;
    int stopping;
    int handles_open; /* listener, stop timer and pause timer */
    int stop_timer_closing;
    void (*done)(void *);
    void *done_arg;
    mrd_http_server_stats stats;
    ratelim log_max, log_per_client, log_accept;
    client *clients[CLIENT_BUCKETS];
    char rbuf[READ_BUF_SIZE];
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    mrd_http_server *srv;
    conn *prev, *next;
    mrd_http_parser *parser;
    /* unparsed bytes: point into srv->rbuf during a read callback, else
     * into own (malloc'd) */
    const char *pdata;
    size_t plen;
    char *own;
    struct mrd_http_response *inflight;
    uint64_t req_start; /* loop time when the request being received began */
    uint64_t accepted_at;
    client *cl; /* NULL until counted for its address */
    int handles_open;
    unsigned closing : 1, reading : 1, in_process : 1, last_sent : 1, lingering : 1,
        backpressure : 1, shutdown_done : 1, eof : 1, served : 1;
};

struct mrd_http_request {
    mrd_http_parsed *parsed;
    const char *path;
    const char *query;
    const char *param_names[MAX_PARAMS];
    const char *param_values[MAX_PARAMS];
    size_t nparams;
    const char *principal;
    unsigned role;
};

struct mrd_http_response {
    mrd_http_request req; /* first */
    conn *c;              /* NULL once the client went away */
    char *extra;          /* extra header lines, "Name: value\r\n"... */
    size_t extra_len, extra_cap;
    int keep_alive;
    int head;
    int http_minor;
    char storage[];
};

typedef struct {
    uv_write_t w;
    char data[];
} wreq;

static void conn_process(conn *c);
static void conn_close(conn *c);
static void conn_update(conn *c);
static void server_maybe_done(mrd_http_server *srv);

/* ---------------------------------------------------------------- helpers */

static const char *status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 300   ? "OK"
               : status < 400 ? "Redirect"
               : status < 500 ? "Error"
                              : "Server Error";
    }
}

static const char *status_code_name(int status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 408:
        return "request_timeout";
    case 413:
        return "body_too_large";
    case 431:
        return "headers_too_large";
    case 501:
        return "not_implemented";
    case 505:
        return "http_version_not_supported";
    default:
        return "internal";
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes src[0..len) into dst (room for cap bytes incl. NUL).
 * Returns the decoded length, or -1 on a bad escape, a %00 or no room. */
static long url_decode(const char *src, size_t len, char *dst, size_t cap, int plus_space)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        if (ch == '%') {
            if (i + 2 >= len)
                return -1;
            int h = hexval(src[i + 1]), l = hexval(src[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0))
                return -1;
            ch = (char)(h * 16 + l);
            i += 2;
        } else if (ch == '+' && plus_space) {
            ch = ' ';
        } else if (ch == '\0') {
            return -1;
        }
        if (o + 1 >= cap)
            return -1;
        dst[o++] = ch;
    }
    if (o >= cap)
        return -1;
    dst[o] = '\0';
    return (long)o;
}

static int ratelim_take(ratelim *r, uint64_t now, uint64_t *suppressed)
{
    if (now < r->next_ms) {
        r->suppressed++;
        return 0;
    }
    *suppressed = r->suppressed;
    r->suppressed = 0;
    r->next_ms = now + LOG_EVERY_MS;
    return 1;
}

/* ---------------------------------------------------------------- clients */

static unsigned client_hash(int family, const unsigned char *a, size_t len)
{
    uint32_t h = 2166136261u ^ (uint32_t)family;
    for (size_t i = 0; i < len; i++)
        h = (h ^ a[i]) * 16777619u;
    return h % CLIENT_BUCKETS;
}

/* The conn's peer address in a[16], its length, or 0 if unknown. */
static size_t peer_addr(conn *c, int *family, unsigned char *a)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    *family = ss.ss_family;
    if (ss.ss_family == AF_INET) {
        memcpy(a, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return 4;
    }
    if (ss.ss_family == AF_INET6) {
        memcpy(a, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

/* Counts c for its peer address. Returns 0, MRD_ETOOBIG when the address has
 * max_connections_per_client conns already (c is not counted then), or
 * MRD_ENOMEM. An address that cannot be read is not limited. */
static int client_add(conn *c, char *name, size_t namelen)
{
    mrd_http_server *srv = c->srv;
    unsigned char a[16];
    int family = 0;
    size_t len = peer_addr(c, &family, a);
    name[0] = '\0';
    if (len == 0)
        return 0;
    unsigned h = client_hash(family, a, len);
    client *e = srv->clients[h];
    while (e && (e->family != family || memcmp(e->addr, a, len) != 0))
        e = e->next;
    if (e && e->n >= srv->opt.max_connections_per_client) {
        uv_inet_ntop(family, a, name, namelen);
        return MRD_ETOOBIG;
    }
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e)
            return MRD_ENOMEM;
        e->family = family;
        memcpy(e->addr, a, len);
        e->next = srv->clients[h];
        srv->clients[h] = e;
    }
    e->n++;
    c->cl = e;
    return 0;
}

static void client_remove(conn *c)
{
    client *e = c->cl;
    c->cl = NULL;
    if (!e || --e->n > 0)
        return;
    size_t len = e->family == AF_INET ? 4 : 16;
    client **pp = &c->srv->clients[client_hash(e->family, e->addr, len)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    free(e);
}

/* ------------------------------------------------------------------ writes */

static void on_write(uv_write_t *w, int status)
{
    wreq *wr = (wreq *)w;
    conn *c = w->handle->data;
    free(wr);
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->backpressure &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < MAX_WRITE_QUEUE / 2) {
        c->backpressure = 0;
        conn_process(c);
        conn_update(c);
    } else if (c->srv->stopping) {
        conn_update(c); /* an idle conn closes once its last answer is out */
    }
}

/* Queues one response; keep_alive 0 makes it the last one of the conn. */
static void conn_send(conn *c, int status, const char *ctype, const char *body, size_t len,
                      const char *extra, size_t extra_len, int head, int keep_alive, int http_minor)
{
    if (c->closing || c->last_sent)
        return;
    if (!ctype)
        ctype = "application/json";
    int nobody = status == 204 || status == 304 || (status >= 100 && status < 200);
    size_t hcap = 256 + strlen(ctype) + extra_len;
    size_t blen = (head || nobody) ? 0 : len;
    wreq *wr = malloc(sizeof(*wr) + hcap + blen);
    if (!wr) {
        conn_close(c);
        return;
    }
    char clen[48] = "";
    if (status != 204 && !(status >= 100 && status < 200))
        snprintf(clen, sizeof(clen), "Content-Length: %zu\r\n", nobody ? (size_t)0 : len);
    const char *conn_hdr = !keep_alive       ? "Connection: close\r\n"
                           : http_minor == 0 ? "Connection: keep-alive\r\n"
                                             : "";
    int ct = !nobody || head; /* no Content-Type on answers that never have a body */
    int n = snprintf(wr->data, hcap, "HTTP/1.1 %d %s\r\n%s%s%s%s%.*s%s\r\n", status,
                     status_reason(status), ct ? "Content-Type: " : "", ct ? ctype : "",
                     ct ? "\r\n" : "", clen, (int)extra_len, extra ? extra : "", conn_hdr);
    if (n < 0 || (size_t)n >= hcap) {
        free(wr);
        conn_close(c);
        return;
    }
    if (blen)
        memcpy(wr->data + n, body, blen);
    if (!keep_alive)
        c->last_sent = 1;
    uv_buf_t buf = uv_buf_init(wr->data, (unsigned)(n + blen));
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        free(wr);
        conn_close(c);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > MAX_WRITE_QUEUE)
        c->backpressure = 1;
}

static void conn_send_error(conn *c, int status, const char *code, const char *message,
                            const char *extra, int head, int keep_alive, int http_minor)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        conn_close(c);
        return;
    }
    conn_send(c, status, "application/json", s, strlen(s), extra, extra ? strlen(extra) : 0, head,
              keep_alive, http_minor);
    free(s);
}

static void send_continue(conn *c)
{
    static const char msg[] = "HTTP/1.1 100 Continue\r\n\r\n";
    wreq *wr = malloc(sizeof(*wr));
    if (!wr) {
        conn_close(c);
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)msg, sizeof(msg) - 1);
    if (uv_write(&wr->w, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
        free(wr);
        conn_close(c);
    }
}

/* ------------------------------------------------------------ connection */

static void on_conn_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles_open > 0)
        return;
    mrd_http_server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    client_remove(c);
    mrd_http_parser_free(c->parser);
    free(c->own);
    free(c);
    server_maybe_done(srv);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->inflight) {
        c->inflight->c = NULL; /* the handler's answer will be dropped */
        c->inflight = NULL;
    }
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_timer_close(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    if (c->closing)
        return;
    c->shutdown_done = 1;
    if (status < 0 || c->eof) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer_close, LINGER_MS, 0);
}

static void on_header_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->closing)
        return;
    c->srv->stats.header_timeouts++;
    conn_close(c); /* nothing was sent: there is nobody to answer */
}

static void on_read_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->closing || c->inflight || c->last_sent)
        return;
    if (mrd__http_parser_head_done(c->parser)) {
        c->srv->stats.request_timeouts++;
    } else {
        c->srv->stats.header_timeouts++;
        c->srv->stats.request_timeouts++;
    }
    mrd_log(MRD_LOG_DEBUG, "http request timed out", MRD_I("port", c->srv->port));
    conn_send_error(c, 408, "request_timeout", "request not received in time", NULL, 0, 0, 1);
    conn_update(c);
}

static int conn_idle(const conn *c)
{
    return !c->inflight && !c->last_sent && c->plen == 0 && !mrd_http_parser_in_request(c->parser);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init(c->srv->rbuf, sizeof(c->srv->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    (void)buf;
    if (c->closing)
        return;
    if (nread < 0) {
        if (c->lingering && !c->shutdown_done) {
            /* the last response is still being written: close after it */
            c->eof = 1;
            uv_read_stop(s);
            c->reading = 0;
            return;
        }
        conn_close(c); /* EOF or error: a pending answer is dropped */
        return;
    }
    if (nread == 0 || c->lingering)
        return;
    if (c->last_sent)
        return; /* discard: the conn ends after the queued response */
    if (c->plen) {
        /* Not expected (reading stops while bytes wait); keep them anyway. */
        char *n = malloc(c->plen + (size_t)nread);
        if (!n) {
            conn_close(c);
            return;
        }
        memcpy(n, c->pdata, c->plen);
        memcpy(n + c->plen, c->srv->rbuf, (size_t)nread);
        free(c->own);
        c->own = n;
        c->pdata = n;
        c->plen += (size_t)nread;
    } else {
        c->pdata = c->srv->rbuf;
        c->plen = (size_t)nread;
    }
    conn_process(c);
    if (!c->closing && c->plen && c->pdata != c->own) {
        char *n = malloc(c->plen);
        if (!n) {
            conn_close(c);
            return;
        }
        memcpy(n, c->pdata, c->plen);
        free(c->own);
        c->own = n;
        c->pdata = n;
    }
    if (!c->closing)
        conn_update(c);
}

/* Starts or stops reading and arms the one timer to what the conn waits
 * for: a lingering close, the rest of a request (408), or the next request
 * (idle). */
static void conn_update(conn *c)
{
    if (c->closing)
        return;
    mrd_http_server *srv = c->srv;
    if (c->last_sent) {
        if (!c->lingering) {
            /* half-close once the last response is written (libuv runs the
             * shutdown after pending writes), and drain what the client
             * still sends so that it sees the answer, not a reset */
            c->lingering = 1;
            uv_timer_stop(&c->timer);
            c->shutdown.data = c;
            if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
                conn_close(c);
                return;
            }
            if (!c->reading && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
                c->reading = 1;
        }
        return;
    }
    if (c->lingering)
        return;
    int want_read = !c->backpressure && c->plen == 0;
    if (want_read && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            conn_close(c);
            return;
        }
        c->reading = 1;
    } else if (!want_read && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    uint64_t now = uv_now(srv->loop);
    if (c->inflight) {
        uv_timer_stop(&c->timer);
    } else if (c->req_start) {
        uint64_t due = c->req_start + srv->opt.read_timeout_ms;
        if (!mrd__http_parser_head_done(c->parser) &&
            c->req_start + srv->opt.header_timeout_ms < due)
            due = c->req_start + srv->opt.header_timeout_ms;
        if (!c->served && c->accepted_at + srv->opt.header_timeout_ms < due &&
            !mrd__http_parser_head_done(c->parser))
            due = c->accepted_at + srv->opt.header_timeout_ms;
        uv_timer_start(&c->timer, on_read_timeout, due > now ? due - now : 0, 0);
    } else if (!c->served && !srv->stopping) {
        uint64_t due = c->accepted_at + srv->opt.header_timeout_ms;
        uv_timer_start(&c->timer, on_header_timeout, due > now ? due - now : 0, 0);
    } else if (srv->stopping && conn_idle(c) &&
               uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        conn_close(c);
    } else {
        uv_timer_start(&c->timer, on_timer_close, srv->opt.idle_timeout_ms, 0);
    }
}

/* -------------------------------------------------------------- dispatch */

static size_t split_next(const char *path, size_t len, size_t *pos, const char **seg)
{
    /* path starts with '/'; *pos is the index of a '/' */
    size_t start = *pos + 1, end = start;
    while (end < len && path[end] != '/')
        end++;
    *seg = path + start;
    *pos = end;
    return end - start;
}

static int route_match(const compiled_route *cr, const char *path, size_t len, const char **pv,
                       size_t *pl)
{
    size_t pos = 0, np = 0;
    for (size_t i = 0; i < cr->nsegs; i++) {
        if (pos >= len)
            return 0;
        const char *seg;
        size_t sl = split_next(path, len, &pos, &seg);
        const route_seg *rs = &cr->segs[i];
        if (rs->param) {
            if (sl == 0)
                return 0;
            pv[np] = seg;
            pl[np++] = sl;
        } else if (sl != rs->len || memcmp(seg, rs->s, sl) != 0) {
            return 0;
        }
    }
    return pos >= len;
}

static void allow_list(char *buf, size_t cap, unsigned mask, const char **methods, size_t nm)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < nm; i++) {
        if (!(mask & (1u << i)))
            continue;
        int n = snprintf(buf + o, cap - o, "%s%s", o ? ", " : "", methods[i]);
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
}

static void exchange_free(struct mrd_http_response *res)
{
    mrd_http_parsed_free(res->req.parsed);
    free(res->extra);
    free(res);
}

static void conn_dispatch(conn *c, mrd_http_parsed *r)
{
    mrd_http_server *srv = c->srv;
    int keep_alive = r->keep_alive && !srv->stopping;
    int head = strcmp(r->method, "HEAD") == 0;
    int minor = r->http_minor;
    const char *target = r->target;
    /* absolute-form: skip scheme and authority */
    if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
        const char *p = strchr(strstr(target, "://") + 3, '/');
        target = p ? p : "/";
    }
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    const char *query = q ? q + 1 : "";
    if (plen == 0 || target[0] != '/') {
        if (strcmp(r->method, "OPTIONS") == 0 && strcmp(target, "*") == 0)
            conn_send(c, 204, NULL, NULL, 0, NULL, 0, 0, keep_alive, minor);
        else
            conn_send_error(c, 400, "bad_request", "request target must be a path", NULL, head,
                            keep_alive, minor);
        mrd_http_parsed_free(r);
        return;
    }

    static const char *methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    const size_t nm = sizeof(methods) / sizeof(methods[0]);
    const compiled_route *found = NULL, *found_get = NULL;
    unsigned allow = 0;
    const char *pv[MAX_PARAMS], *gpv[MAX_PARAMS];
    size_t pl[MAX_PARAMS], gpl[MAX_PARAMS];
    for (size_t i = 0; i < srv->opt.nroutes && !found; i++) {
        const compiled_route *cr = &srv->routes[i];
        if (!route_match(cr, target, plen, pv, pl))
            continue;
        for (size_t m = 0; m < nm; m++)
            if (strcmp(cr->r->method, methods[m]) == 0)
                allow |= 1u << m;
        if (strcmp(cr->r->method, r->method) == 0) {
            found = cr;
        } else if (head && !found_get && strcmp(cr->r->method, "GET") == 0) {
            found_get = cr;
            memcpy(gpv, pv, sizeof(pv));
            memcpy(gpl, pl, sizeof(pl));
        }
    }
    if (!found && found_get) {
        found = found_get;
        memcpy(pv, gpv, sizeof(pv));
        memcpy(pl, gpl, sizeof(pl));
    }
    if (!found) {
        if (!allow) {
            conn_send_error(c, 404, "not_found", "no such path", NULL, head, keep_alive, minor);
        } else {
            if (allow & 1u) /* GET implies HEAD */
                allow |= 2u;
            char list[96], hdr[128];
            allow_list(list, sizeof(list), allow, methods, nm);
            snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", list);
            if (strcmp(r->method, "OPTIONS") == 0) {
                allow |= 1u << 6;
                allow_list(list, sizeof(list), allow, methods, nm);
                snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", list);
                conn_send(c, 204, NULL, NULL, 0, hdr, strlen(hdr), 0, keep_alive, minor);
            } else {
                conn_send_error(c, 405, "method_not_allowed", "method not allowed on this path",
                                hdr, head, keep_alive, minor);
            }
        }
        mrd_http_parsed_free(r);
        return;
    }

    const char *principal = "anonymous";
    unsigned role = 0;
    if (found->r->roles) {
        const char *authz = NULL;
        for (size_t i = 0; i < r->nheaders; i++)
            if (strcasecmp(r->headers[i].name, "authorization") == 0)
                authz = r->headers[i].value;
        int rc = mrd_auth_check(srv->opt.auth, authz, found->r->roles, &principal, &role);
        if (rc == MRD_EUNAUTHORIZED) {
            static const char www[] = "WWW-Authenticate: Bearer\r\n";
            conn_send_error(c, 401, "unauthorized", authz ? "unknown token" : "missing token", www,
                            head, keep_alive, minor);
            mrd_http_parsed_free(r);
            return;
        }
        if (rc != 0) {
            conn_send_error(c, 403, "forbidden", "token not allowed here", NULL, head, keep_alive,
                            minor);
            mrd_http_parsed_free(r);
            return;
        }
    }

    /* One block: the exchange, the path, the decoded parameters, the names
     * and the principal. */
    size_t names_len = 0;
    for (size_t i = 0; i < found->nsegs; i++)
        if (found->segs[i].param)
            names_len += found->segs[i].len + 1;
    size_t prl = strlen(principal) + 1;
    size_t store = (plen + 1) + (plen + MAX_PARAMS) + names_len + prl;
    struct mrd_http_response *res = malloc(sizeof(*res) + store);
    if (!res) {
        conn_send_error(c, 500, "internal", "out of memory", NULL, head, 0, minor);
        mrd_http_parsed_free(r);
        return;
    }
    memset(res, 0, sizeof(*res));
    res->c = c;
    res->keep_alive = keep_alive;
    res->head = head;
    res->http_minor = minor;
    res->req.parsed = r;
    res->req.query = query;
    char *s = res->storage, *end = res->storage + store;
    memcpy(s, target, plen);
    s[plen] = '\0';
    res->req.path = s;
    s += plen + 1;
    size_t np = 0;
    for (size_t i = 0; i < found->nsegs; i++) {
        if (!found->segs[i].param)
            continue;
        long n = url_decode(pv[np], pl[np], s, (size_t)(end - s), 0);
        if (n < 0) {
            conn_send_error(c, 400, "bad_request", "bad percent-encoding in path", NULL, head,
                            keep_alive, minor);
            exchange_free(res);
            return;
        }
        res->req.param_values[np++] = s;
        s += n + 1;
    }
    np = 0;
    for (size_t i = 0; i < found->nsegs; i++) {
        if (!found->segs[i].param)
            continue;
        memcpy(s, found->segs[i].s, found->segs[i].len);
        s[found->segs[i].len] = '\0';
        res->req.param_names[np++] = s;
        s += found->segs[i].len + 1;
    }
    res->req.nparams = np;
    memcpy(s, principal, prl);
    res->req.principal = s;
    res->req.role = role;
    c->inflight = res;
    found->r->handler(&res->req, res, srv->opt.data);
}

/* Feeds waiting bytes and dispatches complete requests while nothing is in
 * flight. Each turn dispatches a request or consumes bytes, so it ends. */
static void conn_process(conn *c)
{
    if (c->in_process || c->closing)
        return;
    c->in_process = 1;
    mrd_http_server *srv = c->srv;
    while (!c->closing && !c->last_sent && !c->inflight && !c->backpressure) {
        mrd_http_parsed *r = mrd_http_parser_take(c->parser);
        if (r) {
            c->req_start = 0;
            c->served = 1;
            conn_dispatch(c, r);
            continue;
        }
        if (c->plen == 0)
            break;
        long n = mrd_http_parser_feed(c->parser, c->pdata, c->plen);
        if (n < 0) {
            mrd_http_parse_error e = mrd_http_parser_error(c->parser);
            mrd_log(MRD_LOG_DEBUG, "http request rejected", MRD_I("status", e.status),
                    MRD_S("reason", e.reason));
            conn_send_error(c, e.status, status_code_name(e.status), e.reason, NULL, 0, 0, 1);
            c->plen = 0;
            break;
        }
        c->pdata += n;
        c->plen -= (size_t)n;
        if (c->req_start == 0 && mrd_http_parser_in_request(c->parser))
            c->req_start = uv_now(srv->loop);
        if (n == 0 && !c->plen)
            break;
        if (n == 0)
            break; /* nothing consumed and nothing queued: wait for more */
    }
    if (!c->closing && !c->inflight && !c->last_sent && mrd__http_parser_take_continue(c->parser))
        send_continue(c);
    if (c->plen == 0 && c->own) {
        free(c->own);
        c->own = NULL;
        c->pdata = NULL;
    }
    c->in_process = 0;
}

/* --------------------------------------------------------------- server */

/* Takes an accepted socket in (or closes it over a limit). */
static void conn_accept(mrd_http_server *srv, int fd)
{
    uint64_t now = uv_now(srv->loop), suppressed = 0;
    conn *c = calloc(1, sizeof(*c));
    if (!c) {
        srv->stats.accept_errors++;
        close(fd);
        return;
    }
    c->srv = srv;
    c->accepted_at = now;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (uv_tcp_open(&c->tcp, fd) < 0) {
        close(fd);
        srv->stats.accept_errors++;
        conn_close(c);
        return;
    }
    srv->stats.accepted++;
    if (srv->nconns > srv->opt.max_connections) {
        srv->stats.refused_max++;
        if (ratelim_take(&srv->log_max, now, &suppressed))
            mrd_log(MRD_LOG_WARN, "http connection refused", MRD_S("reason", "max connections"),
                    MRD_U("max", srv->opt.max_connections), MRD_U("suppressed", suppressed));
        conn_close(c);
        return;
    }
    char name[INET6_ADDRSTRLEN];
    int rc = client_add(c, name, sizeof(name));
    if (rc == MRD_ETOOBIG) {
        srv->stats.refused_per_client++;
        if (ratelim_take(&srv->log_per_client, now, &suppressed))
            mrd_log(MRD_LOG_WARN, "http connection refused",
                    MRD_S("reason", "max connections per client"), MRD_S("client", name),
                    MRD_U("max", srv->opt.max_connections_per_client),
                    MRD_U("suppressed", suppressed));
        conn_close(c);
        return;
    }
    if (rc != 0 ||
        mrd_http_parser_init(&c->parser, srv->opt.max_header_bytes, srv->opt.max_body_bytes)) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_update(c);
}

static void on_listen_ready(uv_poll_t *h, int status, int events);

static void on_pause_end(uv_timer_t *t)
{
    mrd_http_server *srv = t->data;
    if (!srv->stopping)
        uv_poll_start(&srv->listener, UV_READABLE, on_listen_ready);
}

/* Out of fds: drop what is pending with the spare fd's room, then stop
 * polling the listener for a while (it stays readable: polling it now
 * would spin). */
static void accept_starved(mrd_http_server *srv, int err)
{
    uint64_t now = uv_now(srv->loop), suppressed = 0;
    srv->stats.accept_errors++;
    if (ratelim_take(&srv->log_accept, now, &suppressed))
        mrd_log(MRD_LOG_WARN, "http accept failed", MRD_S("error", strerror(err)),
                MRD_U("connections", srv->nconns), MRD_U("suppressed", suppressed));
    if (srv->spare_fd >= 0) {
        close(srv->spare_fd);
        srv->spare_fd = -1;
        for (int i = 0; i < ACCEPT_BATCH; i++) {
            int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            close(fd);
            srv->stats.accept_errors++;
        }
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    uv_poll_stop(&srv->listener);
    uv_timer_start(&srv->pause_timer, on_pause_end, ACCEPT_PAUSE_MS, 0);
}

static void on_listen_ready(uv_poll_t *h, int status, int events)
{
    mrd_http_server *srv = h->data;
    (void)events;
    if (srv->stopping)
        return;
    if (status < 0) {
        accept_starved(srv, -status);
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH && !srv->stopping; i++) {
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_accept(srv, fd);
            continue;
        }
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK)
            return;
        if (e == EINTR || e == ECONNABORTED || e == EPROTO)
            continue;
        accept_starved(srv, e); /* EMFILE, ENFILE, ENOBUFS, ENOMEM */
        return;
    }
}

static void server_free(mrd_http_server *srv)
{
    if (srv->lfd >= 0)
        close(srv->lfd);
    if (srv->spare_fd >= 0)
        close(srv->spare_fd);
    free(srv->routes);
    free(srv->segs);
    free(srv);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    mrd_http_server *srv = h->data;
    srv->handles_open--;
    server_maybe_done(srv);
}

static void server_maybe_done(mrd_http_server *srv)
{
    if (!srv->stopping || srv->nconns > 0)
        return;
    if (!srv->stop_timer_closing) {
        srv->stop_timer_closing = 1;
        uv_close((uv_handle_t *)&srv->stop_timer, on_server_handle_closed);
        return;
    }
    if (srv->handles_open > 0)
        return;
    void (*done)(void *) = srv->done;
    void *arg = srv->done_arg;
    server_free(srv);
    if (done)
        done(arg);
}

static int compile_routes(mrd_http_server *srv)
{
    size_t total = 0;
    for (size_t i = 0; i < srv->opt.nroutes; i++) {
        const mrd_http_route *r = &srv->opt.routes[i];
        if (!r->method || !r->pattern || r->pattern[0] != '/' || !r->handler)
            return MRD_EINVAL;
        if (r->roles && !srv->opt.auth)
            return MRD_EINVAL;
        for (const char *p = r->pattern; *p; p++)
            total += *p == '/';
    }
    srv->routes = calloc(srv->opt.nroutes ? srv->opt.nroutes : 1, sizeof(compiled_route));
    srv->segs = calloc(total ? total : 1, sizeof(route_seg));
    if (!srv->routes || !srv->segs)
        return MRD_ENOMEM;
    route_seg *seg = srv->segs;
    for (size_t i = 0; i < srv->opt.nroutes; i++) {
        const char *pat = srv->opt.routes[i].pattern;
        size_t len = strlen(pat), pos = 0, np = 0;
        compiled_route *cr = &srv->routes[i];
        cr->r = &srv->opt.routes[i];
        cr->segs = seg;
        while (pos < len) {
            const char *s;
            size_t sl = split_next(pat, len, &pos, &s);
            if (sl >= 2 && s[0] == '{' && s[sl - 1] == '}') {
                if (sl == 2 || ++np > MAX_PARAMS)
                    return MRD_EINVAL;
                *seg = (route_seg){s + 1, sl - 2, 1};
            } else {
                if (memchr(s, '{', sl) || memchr(s, '}', sl))
                    return MRD_EINVAL;
                *seg = (route_seg){s, sl, 0};
            }
            seg++;
            cr->nsegs++;
        }
    }
    return 0;
}

static int listen_socket(const char *host, int port, int *fd_out, int *bound_port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t sl;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*s6);
    } else {
        return MRD_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 1024) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    *bound_port = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
    *fd_out = fd;
    return 0;
}

int mrd_http_server_start(mrd_http_server **out, uv_loop_t *loop,
                          const mrd_http_server_options *opt)
{
    *out = NULL;
    if (!loop || !opt || (opt->nroutes && !opt->routes) || opt->port < 0 || opt->port > 65535)
        return MRD_EINVAL;
    mrd_http_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return MRD_ENOMEM;
    srv->lfd = srv->spare_fd = -1;
    srv->loop = loop;
    srv->opt = *opt;
    if (!srv->opt.host)
        srv->opt.host = "127.0.0.1";
    if (!srv->opt.max_header_bytes)
        srv->opt.max_header_bytes = 16 * 1024;
    if (!srv->opt.max_body_bytes)
        srv->opt.max_body_bytes = 1024 * 1024;
    if (!srv->opt.read_timeout_ms)
        srv->opt.read_timeout_ms = 10000;
    if (!srv->opt.idle_timeout_ms)
        srv->opt.idle_timeout_ms = 60000;
    if (!srv->opt.header_timeout_ms)
        srv->opt.header_timeout_ms = 5000;
    if (!srv->opt.max_connections)
        srv->opt.max_connections = 20000;
    if (!srv->opt.max_connections_per_client)
        srv->opt.max_connections_per_client = srv->opt.max_connections;
    int rc = compile_routes(srv);
    if (rc) {
        server_free(srv);
        return rc;
    }
    int fd = -1;
    rc = listen_socket(srv->opt.host, opt->port, &fd, &srv->port);
    if (rc) {
        server_free(srv);
        return rc;
    }
    srv->opt.host = NULL; /* not kept: the caller's string may go */
    srv->lfd = fd;
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    rc = uv_poll_init(loop, &srv->listener, fd);
    if (rc) {
        server_free(srv);
        return rc;
    }
    srv->listener.data = srv;
    uv_poll_start(&srv->listener, UV_READABLE, on_listen_ready);
    uv_timer_init(loop, &srv->stop_timer);
    srv->stop_timer.data = srv;
    uv_timer_init(loop, &srv->pause_timer);
    srv->pause_timer.data = srv;
    srv->handles_open = 3;
    *out = srv;
    return 0;
}

int mrd_http_server_port(const mrd_http_server *srv)
{
    return srv ? srv->port : -1;
}

void mrd_http_server_stats_get(const mrd_http_server *srv, mrd_http_server_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!srv)
        return;
    *out = srv->stats;
    out->open = srv->nconns;
    out->max_connections = srv->opt.max_connections;
    out->max_connections_per_client = srv->opt.max_connections_per_client;
}

static void on_stop_timeout(uv_timer_t *t)
{
    mrd_http_server *srv = t->data;
    mrd_log(MRD_LOG_WARN, "http server stop timed out", MRD_U("connections", srv->nconns));
    for (conn *c = srv->conns; c; c = c->next)
        conn_close(c);
}

void mrd_http_server_stop(mrd_http_server *srv, void (*done)(void *arg), void *arg)
{
    if (!srv || srv->stopping)
        return;
    srv->stopping = 1;
    srv->done = done;
    srv->done_arg = arg;
    uv_close((uv_handle_t *)&srv->listener, on_server_handle_closed);
    close(srv->lfd); /* the poll stopped in uv_close: no new conns queue */
    srv->lfd = -1;
    uv_close((uv_handle_t *)&srv->pause_timer, on_server_handle_closed);
    for (conn *c = srv->conns; c; c = c->next)
        conn_update(c); /* closes idle conns; others close after answering */
    uv_timer_start(&srv->stop_timer, on_stop_timeout, srv->opt.read_timeout_ms, 0);
    server_maybe_done(srv);
}

/* ------------------------------------------------------------- requests */

const char *mrd_http_request_method(const mrd_http_request *req)
{
    return req->parsed->method;
}

const char *mrd_http_request_path(const mrd_http_request *req)
{
    return req->path;
}

const char *mrd_http_request_query(const mrd_http_request *req)
{
    return req->query;
}

const char *mrd_http_request_body(const mrd_http_request *req, size_t *len)
{
    if (len)
        *len = req->parsed->body_len;
    return req->parsed->body;
}

const char *mrd_http_request_header(const mrd_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->parsed->nheaders; i++)
        if (strcasecmp(req->parsed->headers[i].name, name) == 0)
            return req->parsed->headers[i].value;
    return NULL;
}

const char *mrd_http_request_param(const mrd_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nparams; i++)
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    return NULL;
}

int mrd_http_request_query_param(const mrd_http_request *req, const char *name, char *buf,
                                 size_t len)
{
    const char *q = req->query;
    size_t nl = strlen(name);
    char key[256];
    while (*q) {
        const char *amp = strchr(q, '&');
        size_t plen = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', plen);
        size_t kl = eq ? (size_t)(eq - q) : plen;
        long k = url_decode(q, kl, key, sizeof(key), 1);
        if (k >= 0 && (size_t)k == nl && memcmp(key, name, nl) == 0) {
            if (!buf || len == 0)
                return 0;
            if (!eq) {
                buf[0] = '\0';
                return 1;
            }
            return url_decode(eq + 1, plen - kl - 1, buf, len, 1) >= 0;
        }
        if (!amp)
            break;
        q = amp + 1;
    }
    return 0;
}

const char *mrd_http_request_principal(const mrd_http_request *req)
{
    return req->principal;
}

unsigned mrd_http_request_role(const mrd_http_request *req)
{
    return req->role;
}

json_t *mrd_http_request_json(mrd_http_request *req, mrd_http_response *res)
{
    json_error_t err;
    json_t *j = json_loadb(req->parsed->body, req->parsed->body_len, JSON_REJECT_DUPLICATES, &err);
    if (!j || !json_is_object(j)) {
        char msg[256];
        if (!j)
            snprintf(msg, sizeof(msg), "body is not valid JSON: %s (line %d, column %d)", err.text,
                     err.line, err.column);
        else
            snprintf(msg, sizeof(msg), "body must be a JSON object");
        json_decref(j);
        mrd_http_respond_error(res, 400, "bad_request", msg);
        return NULL;
    }
    return j;
}

/* ------------------------------------------------------------ responses */

void mrd_http_response_header(mrd_http_response *res, const char *name, const char *value)
{
    if (!res || !name || !value || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return;
    size_t need = strlen(name) + strlen(value) + 4;
    if (res->extra_len + need + 1 > res->extra_cap) {
        size_t cap = res->extra_cap ? res->extra_cap * 2 : 128;
        while (cap < res->extra_len + need + 1)
            cap *= 2;
        char *n = realloc(res->extra, cap);
        if (!n)
            return;
        res->extra = n;
        res->extra_cap = cap;
    }
    int n = snprintf(res->extra + res->extra_len, res->extra_cap - res->extra_len, "%s: %s\r\n",
                     name, value);
    if (n > 0)
        res->extra_len += (size_t)n;
}

void mrd_http_respond(mrd_http_response *res, int status, const char *content_type,
                      const char *body, size_t len)
{
    if (!res)
        return;
    conn *c = res->c;
    if (c) {
        c->inflight = NULL;
        int keep_alive = res->keep_alive && !c->srv->stopping;
        conn_send(c, status, content_type, body, len, res->extra, res->extra_len, res->head,
                  keep_alive, res->http_minor);
    }
    exchange_free(res);
    if (c && !c->closing) {
        conn_process(c);
        if (!c->in_process)
            conn_update(c);
    }
}

void mrd_http_respond_json(mrd_http_response *res, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!s) {
        mrd_http_respond_error(res, 500, "internal", "response could not be encoded");
        return;
    }
    mrd_http_respond(res, status, "application/json", s, strlen(s));
    free(s);
}

void mrd_http_respond_error(mrd_http_response *res, int status, const char *code,
                            const char *message)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code ? code : "internal", "message",
                          message ? message : "");
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    static const char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":\"\"}}";
    mrd_http_respond(res, status, "application/json", s ? s : fallback,
                     s ? strlen(s) : sizeof(fallback) - 1);
    free(s);
}

int mrd_http_response_connected(const mrd_http_response *res)
{
    return res && res->c && !res->c->closing;
}

void mrd_http_server_set_auth(mrd_http_server *srv, const mrd_auth *auth)
{
    if (srv && auth)
        srv->opt.auth = auth;
}
