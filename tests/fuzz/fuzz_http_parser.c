/*
 * libFuzzer target for the HTTP request parser (common/http_parser.c).
 * The first byte picks the limits, the next ones a seed for chunk sizes; the
 * rest is fed in chunks of varying size, as a socket would deliver it, taking
 * and checking every complete request. Any crash, leak, sanitizer report or
 * broken invariant (consumed more than given, no progress, strings not
 * NUL-terminated, limits exceeded) is a finding.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/http_parser.h"

static void check(const mrd_http_parsed *r, size_t max_body)
{
    if (!r->target || !r->body || r->body[r->body_len] != '\0' || r->body_len > max_body)
        abort();
    if (strlen(r->method) == 0 || (r->http_major != 1 || r->http_minor > 1))
        abort();
    for (size_t i = 0; i < r->nheaders; i++)
        if (!r->headers[i].name || !r->headers[i].value)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max_header = (data[0] & 0x0f) ? 64u * (data[0] & 0x0f) : 16384;
    size_t max_body = (data[0] >> 4) ? 32u * (data[0] >> 4) : 1 << 20;
    uint32_t rng = data[1] * 2654435761u + 1;
    data += 2;
    size -= 2;

    mrd_http_parser *p = NULL;
    if (mrd_http_parser_init(&p, max_header, max_body))
        return 0;
    size_t off = 0;
    int requests = 0;
    for (size_t guard = 0; guard < size + 16; guard++) {
        mrd_http_parsed *r;
        while ((r = mrd_http_parser_take(p))) {
            check(r, max_body);
            requests++;
            mrd_http_parsed_free(r);
        }
        if (off == size)
            break;
        rng = rng * 1103515245u + 12345u;
        size_t chunk = 1 + (rng >> 16) % 64;
        if (chunk > size - off)
            chunk = size - off;
        long n = mrd_http_parser_feed(p, (const char *)data + off, chunk);
        if (n < 0) {
            mrd_http_parse_error e = mrd_http_parser_error(p);
            if (e.status < 400 || e.status > 505 || !e.reason)
                abort();
            break;
        }
        if ((size_t)n > chunk)
            abort();
        /* no progress is only allowed while a request waits to be taken */
        if (n == 0) {
            r = mrd_http_parser_take(p);
            if (!r)
                abort();
            check(r, max_body);
            mrd_http_parsed_free(r);
        }
        off += (size_t)n;
        (void)mrd_http_parser_in_request(p);
    }
    mrd_http_parser_free(p);
    (void)requests;
    return 0;
}
