/*
 * Leveled logging in logfmt to stderr:
 *   ts=2026-11-27T17:00:00.123Z level=info msg="lease acquired" term=4 holder=eu-1
 *
 * Use:  mrd_log(MRD_LOG_INFO, "lease acquired", MRD_I("term", term), MRD_S("holder", name));
 * Messages follow the PostgreSQL style: short, lower case, no trailing period.
 * Values are quoted and escaped when they need it (space, '=', '"', control).
 */
#ifndef MERIDIAN_LOG_H
#define MERIDIAN_LOG_H

#include <stddef.h>

typedef enum { MRD_LOG_DEBUG = 0, MRD_LOG_INFO, MRD_LOG_WARN, MRD_LOG_ERROR } mrd_log_level;

typedef struct {
    const char *key;
    char type; /* 's' string, 'i' integer, 'u' unsigned, 'f' double */
    const char *s;
    long long i;
    double f;
} mrd_kv;

#define MRD_S(k, v) ((mrd_kv){(k), 's', (v), 0, 0})
#define MRD_I(k, v) ((mrd_kv){(k), 'i', NULL, (long long)(v), 0})
#define MRD_U(k, v) ((mrd_kv){(k), 'u', NULL, (long long)(v), 0})
#define MRD_F(k, v) ((mrd_kv){(k), 'f', NULL, 0, (double)(v)})

/* Lowest level written; default info. "debug", "info", "warn", "error". */
void mrd_log_set_level(mrd_log_level level);
/* Parses a level name; returns 0 and sets *out, or MRD_EINVAL. */
int mrd_log_level_parse(const char *name, mrd_log_level *out);
/* Program name written as prog=... on every line (NULL: none). */
void mrd_log_set_program(const char *name);

void mrd_log_kv(mrd_log_level level, const char *msg, const mrd_kv *kvs, size_t n);

/* Formats one logfmt line (without newline) into buf; returns the length it
 * needed (like snprintf). Exposed for tests. */
size_t mrd_log_format(char *buf, size_t len, const char *ts, mrd_log_level level, const char *msg,
                      const mrd_kv *kvs, size_t n);

/* Appends value to buf (at *pos, bounded by len) escaped for logfmt. */
void mrd_log_escape(char *buf, size_t len, size_t *pos, const char *value);

#define mrd_log(level, msg, ...)                                                                   \
    do {                                                                                           \
        const mrd_kv mrd__kvs[] = {MRD_S(NULL, NULL), ##__VA_ARGS__};                              \
        mrd_log_kv((level), (msg), mrd__kvs + 1, sizeof(mrd__kvs) / sizeof(mrd__kvs[0]) - 1);      \
    } while (0)

#endif
