/*
 * Asynchronous HTTP client on libuv through the libcurl multi interface
 * (curl sockets watched with uv_poll, curl timers with a uv_timer). Used by
 * the agent (heartbeats, peer leases, http checks), the cutover drivers and
 * benchmarks. Connections are reused (keep-alive). Every request has a
 * timeout; the callback runs exactly once per accepted request, also when
 * the client is closed (status 0, error "closed").
 */
#ifndef MERIDIAN_HTTP_CLIENT_H
#define MERIDIAN_HTTP_CLIENT_H

#include <stddef.h>
#include <uv.h>

typedef struct mrd_http_client mrd_http_client;

typedef struct {
    const char *method; /* default "GET"; "POST", "PUT", "PATCH", "DELETE" */
    const char *url;
    const char *body; /* copied; may be NULL */
    size_t body_len;
    const char *const *headers; /* NULL-terminated "Name: value" list; copied */
    long timeout_ms;            /* whole request; default 5000 */
    long connect_timeout_ms;    /* default min(timeout, 2000) */
    size_t max_response_bytes;  /* default 4 MiB; beyond: error "too_large" */
} mrd_http_client_req;

typedef struct {
    int status;        /* HTTP status, or 0 on a transport error */
    const char *error; /* NULL on success; short message otherwise */
    const char *body;  /* NUL-terminated; "" when none; valid during the callback */
    size_t body_len;
    double total_ms; /* wall time of the request */
} mrd_http_client_result;

typedef void (*mrd_http_client_cb)(const mrd_http_client_result *res, void *data);

/* Returns 0 and sets *out, or MRD_ENOMEM / MRD_EINTERNAL. */
int mrd_http_client_init(mrd_http_client **out, uv_loop_t *loop);
/* Fails pending requests (callbacks run with error "closed"), closes handles;
 * memory is released once the loop has run the close callbacks. */
void mrd_http_client_close(mrd_http_client *c);
/* Starts a request. Returns 0 (cb will run once), or a negative MRD_E* (cb
 * will not run). */
int mrd_http_client_request(mrd_http_client *c, const mrd_http_client_req *req,
                            mrd_http_client_cb cb, void *data);
/* Caps the connections the client opens (CURLMOPT_MAX_TOTAL_CONNECTIONS;
 * further requests queue until one is free) and keeps up to that many idle
 * for reuse (CURLMOPT_MAXCONNECTS). n = 0 restores libcurl's defaults (no cap;
 * cache of 4 per request in flight). Returns 0, or MRD_EINVAL (n < 0, or
 * libcurl refused; the limits are then unchanged). */
int mrd_http_client_set_max_connections(mrd_http_client *c, long n);
/* Number of requests in flight. */
size_t mrd_http_client_pending(const mrd_http_client *c);

/* Blocking request for the CLI and tools (curl easy). Returns 0 and fills
 * *status and *body (caller frees), or MRD_EHTTP with a message in err. */
int mrd_http_fetch(const mrd_http_client_req *req, int *status, char **body, size_t *body_len,
                   char *err, size_t errlen);

#endif
