/*
 * HTTP/1.1 server on libuv, parsing with llhttp (see http_parser.h).
 *
 * - keep-alive and pipelining: requests on one connection are handled one at
 *   a time, in order; the next is dispatched once the previous response has
 *   been queued for writing, so responses keep the order of requests;
 * - a routing table: "METHOD /v1/services/{svc}/checkpoints/{id}" patterns,
 *   path parameters by index; 404 for an unknown path, 405 for a known path
 *   with another method;
 * - auth per route (auth.h): 401 without/with an unknown token, 403 with a
 *   token whose role the route does not allow;
 * - limits: header bytes (431), body bytes (413), time to receive a whole
 *   request once its first byte arrived (408, slow clients), time to receive
 *   a request's head (a new connection that sends nothing in time is closed,
 *   one that sent part of a head gets 408), idle keep-alive time (connection
 *   closed), maximum connections in all and per client address (new ones
 *   closed at once); refusals, timeouts and accept errors are counted
 *   (mrd_http_server_stats) and logged at most once per 10 s per kind;
 * - errors are JSON: {"error": {"code": "...", "message": "..."}};
 * - handlers may answer later (long-poll, answer after a store commit): the
 *   mrd_http_response stays valid until mrd_http_respond*() is called once,
 *   even if the client went away meanwhile (the answer is then dropped);
 * - graceful stop: stop accepting, close idle connections, let in-flight
 *   requests finish, then call the done callback.
 */
#ifndef MERIDIAN_HTTP_SERVER_H
#define MERIDIAN_HTTP_SERVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "meridian/auth.h"

typedef struct mrd_http_server mrd_http_server;
typedef struct mrd_http_request mrd_http_request;
/* The answer to one request; a handler must call exactly one mrd_http_respond*
 * on it, now or later. The server frees it after that call. */
typedef struct mrd_http_response mrd_http_response;

typedef void (*mrd_http_handler)(mrd_http_request *req, mrd_http_response *res, void *data);

typedef struct {
    const char *method;  /* "GET", "POST", "PUT", "DELETE" */
    const char *pattern; /* "/v1/services/{svc}"; a {name} matches one segment */
    unsigned roles;      /* MRD_ROLE_* mask allowed; 0 = open, no token needed */
    mrd_http_handler handler;
} mrd_http_route;

typedef struct {
    const char *host;         /* default "127.0.0.1" */
    int port;                 /* 0: any free port, see mrd_http_server_port() */
    size_t max_header_bytes;  /* default 16 KiB */
    size_t max_body_bytes;    /* default 1 MiB */
    uint64_t read_timeout_ms; /* whole request once started; default 10000 */
    /* request head: from accept (first request) or from the first byte of a
     * later one; default 5000 */
    uint64_t header_timeout_ms;
    uint64_t idle_timeout_ms;            /* keep-alive idle; default 60000 */
    unsigned max_connections;            /* default 20000 */
    unsigned max_connections_per_client; /* per peer address; default max_connections */
    const mrd_http_route *routes;
    size_t nroutes;
    const mrd_auth *auth; /* may be NULL only if every route is open */
    void *data;           /* passed to every handler */
} mrd_http_server_options;

/* Binds and listens. Returns 0 and sets *out, or a negative MRD_E* / UV error;
 * nothing is left allocated on failure. */
int mrd_http_server_start(mrd_http_server **out, uv_loop_t *loop,
                          const mrd_http_server_options *opt);
/* Replaces the token table (configuration reload); requests already being
 * handled keep the principal they were authenticated with. The caller keeps
 * ownership of both tables and frees the old one after this call. */
void mrd_http_server_set_auth(mrd_http_server *srv, const mrd_auth *auth);
/* The port actually bound (useful with port 0). */
int mrd_http_server_port(const mrd_http_server *srv);

/* Counters since start (for /metrics). */
typedef struct {
    uint64_t accepted;           /* connections taken in */
    uint64_t refused_max;        /* closed at once: max_connections reached */
    uint64_t refused_per_client; /* closed at once: that address has too many */
    uint64_t accept_errors;      /* accept() failed (EMFILE, ENFILE, ENOMEM...) */
    uint64_t header_timeouts;    /* closed: no complete request head in time */
    uint64_t request_timeouts;   /* 408: head or body not complete in time */
    unsigned open;               /* connections open now */
    unsigned max_connections, max_connections_per_client;
} mrd_http_server_stats;
void mrd_http_server_stats_get(const mrd_http_server *srv, mrd_http_server_stats *out);
/* Graceful stop; done(arg) runs once every handle is closed and the server
 * freed. In-flight requests are answered first (bounded by read_timeout_ms). */
void mrd_http_server_stop(mrd_http_server *srv, void (*done)(void *arg), void *arg);

/* Request accessors. Strings are NUL-terminated and live until the response
 * is sent. */
const char *mrd_http_request_method(const mrd_http_request *req);
const char *mrd_http_request_path(const mrd_http_request *req);              /* no query */
const char *mrd_http_request_query(const mrd_http_request *req);             /* after '?', or "" */
const char *mrd_http_request_body(const mrd_http_request *req, size_t *len); /* NUL-terminated */
/* Header value by case-insensitive name, or NULL. */
const char *mrd_http_request_header(const mrd_http_request *req, const char *name);
/* Path parameter by name as in the pattern ("svc"), URL-decoded, or NULL. */
const char *mrd_http_request_param(const mrd_http_request *req, const char *name);
/* Query parameter by name, URL-decoded, copied into buf; returns 1 if present
 * (and fits), else 0. */
int mrd_http_request_query_param(const mrd_http_request *req, const char *name, char *buf,
                                 size_t len);
/* Name of the token that authenticated the request ("anonymous" on open
 * routes) and its role. */
const char *mrd_http_request_principal(const mrd_http_request *req);
unsigned mrd_http_request_role(const mrd_http_request *req);
/* Parses the body as a JSON object; on failure answers 400 itself and returns
 * NULL (the caller must then simply return). Caller owns the result. */
json_t *mrd_http_request_json(mrd_http_request *req, mrd_http_response *res);

/* Adds a response header (copied). Call before mrd_http_respond*. */
void mrd_http_response_header(mrd_http_response *res, const char *name, const char *value);
/* Sends the answer; content_type NULL means application/json. */
void mrd_http_respond(mrd_http_response *res, int status, const char *content_type,
                      const char *body, size_t len);
/* Sends json (the reference is stolen) with the status. */
void mrd_http_respond_json(mrd_http_response *res, int status, json_t *body);
/* Sends {"error": {"code": code, "message": message}}. */
void mrd_http_respond_error(mrd_http_response *res, int status, const char *code,
                            const char *message);
/* Whether the client is still connected (long-polls may stop early). */
int mrd_http_response_connected(const mrd_http_response *res);

#endif
