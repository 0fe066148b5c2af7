/*
 * Replication positions (PostgreSQL LSNs) as uint64_t: strict parsing of the
 * "X/Y" text form, formatting as PostgreSQL prints it, lag arithmetic that
 * cannot underflow, and reading a position from JSON (heartbeats, API
 * bodies). Called by the agent (replication sources), the controller (view,
 * decision, checkpoints) and the CLI.
 *
 * Pure: no state, no allocation, no I/O. Parsing is by hand, not strtoul,
 * so that spaces, signs, "0x" and over-long parts are refused rather than
 * silently accepted; on failure the output is left untouched.
 */
#include "meridian/position.h"
#include "meridian/error.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses 1 to 8 hex digits at s[*i] up to (not including) stop or the end. */
static int parse_part(const char *s, size_t n, size_t *i, char stop, uint32_t *out)
{
    uint32_t v = 0;
    size_t digits = 0;
    while (*i < n && s[*i] != stop) {
        int d = hex_digit(s[*i]);
        if (d < 0 || ++digits > 8)
            return MRD_EPARSE;
        v = (v << 4) | (uint32_t)d;
        (*i)++;
    }
    if (digits == 0)
        return MRD_EPARSE;
    *out = v;
    return 0;
}

static int parse_n(const char *s, size_t n, uint64_t *out)
{
    uint32_t hi, lo;
    size_t i = 0;
    if (s == NULL || parse_part(s, n, &i, '/', &hi) < 0)
        return MRD_EPARSE;
    if (i >= n || s[i] != '/')
        return MRD_EPARSE;
    i++;
    if (parse_part(s, n, &i, '/', &lo) < 0 || i != n)
        return MRD_EPARSE;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

int mrd_pos_parse(const char *text, uint64_t *out)
{
    if (text == NULL)
        return MRD_EPARSE;
    return parse_n(text, strlen(text), out);
}

int mrd_pos_format(uint64_t pos, char *buf, size_t len)
{
    char tmp[MRD_POS_STRLEN];
    int n =
        snprintf(tmp, sizeof(tmp), "%" PRIX32 "/%" PRIX32, (uint32_t)(pos >> 32), (uint32_t)pos);
    if (buf == NULL || n < 0 || (size_t)n >= len) {
        if (buf && len > 0)
            buf[0] = '\0';
        return MRD_ETOOBIG;
    }
    memcpy(buf, tmp, (size_t)n + 1);
    return n;
}

uint64_t mrd_pos_lag_bytes(uint64_t primary, uint64_t replay)
{
    return replay >= primary ? 0 : primary - replay;
}

int mrd_pos_from_json(const json_t *v, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            return MRD_EPARSE;
        *out = (uint64_t)i;
        return 0;
    }
    if (json_is_string(v))
        return parse_n(json_string_value(v), json_string_length(v), out);
    return MRD_EPARSE;
}
