/*
 * Thin adapter over llhttp 8.1: feeds bytes, yields complete requests. It
 * knows nothing of sockets, so it is what unit tests and the fuzz target
 * exercise. It enforces the header and body limits while parsing (the
 * server never buffers more than the limits allow).
 */
#ifndef MERIDIAN_HTTP_PARSER_H
#define MERIDIAN_HTTP_PARSER_H

#include <stddef.h>

typedef struct mrd_http_header {
    char *name;
    char *value;
} mrd_http_header;

/* One parsed request; every string is owned by the parsed request. */
typedef struct mrd_http_parsed {
    char method[16];
    char *target; /* raw request target, e.g. "/v1/status?x=1" */
    int http_major, http_minor;
    mrd_http_header *headers;
    size_t nheaders;
    char *body;
    size_t body_len;
    int keep_alive;
} mrd_http_parsed;

typedef struct mrd_http_parser mrd_http_parser;

/* HTTP status the server should answer when parsing fails (400, 413, 431,
 * 501 for an unknown method, 505 for a bad version). */
typedef struct {
    int status;
    const char *reason; /* static string, lower case */
} mrd_http_parse_error;

int mrd_http_parser_init(mrd_http_parser **out, size_t max_header_bytes, size_t max_body_bytes);
void mrd_http_parser_free(mrd_http_parser *p);

/* Feeds len bytes. Complete requests are appended to an internal queue; the
 * parser pauses after each one so that no more than one complete request
 * beyond the one being handled is buffered. Returns the number of bytes
 * consumed (less than len when paused: feed the rest after taking the
 * request), or -1 on a parse error (see mrd_http_parser_error). */
long mrd_http_parser_feed(mrd_http_parser *p, const char *data, size_t len);
/* Takes the next complete request, or NULL. The caller frees it with
 * mrd_http_parsed_free. */
mrd_http_parsed *mrd_http_parser_take(mrd_http_parser *p);
/* Whether a request has begun but is not complete (for the read timeout). */
int mrd_http_parser_in_request(const mrd_http_parser *p);
mrd_http_parse_error mrd_http_parser_error(const mrd_http_parser *p);
void mrd_http_parsed_free(mrd_http_parsed *r);

#endif
