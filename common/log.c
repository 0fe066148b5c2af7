/*
 * logfmt logging to stderr. One line per call, written with a single write(2)
 * so that lines of concurrent processes sharing a terminal do not interleave.
 * The level and program name are process-wide settings made once at start by
 * main() (the one exception to "no global mutable state": they are
 * configuration, never changed by the event loop). Never fails: a line that
 * does not fit the buffer is cut.
 */
#include "meridian/log.h"
#include "meridian/error.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static mrd_log_level log_min_level = MRD_LOG_INFO;
static const char *log_program = NULL;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void mrd_log_set_level(mrd_log_level level)
{
    log_min_level = level;
}

void mrd_log_set_program(const char *name)
{
    log_program = name;
}

int mrd_log_level_parse(const char *name, mrd_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (name && strcmp(name, level_names[i]) == 0) {
            *out = (mrd_log_level)i;
            return 0;
        }
    }
    return MRD_EINVAL;
}

static void put(char *buf, size_t len, size_t *pos, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (*pos + 1 < len)
            buf[*pos] = s[i];
        (*pos)++;
    }
    if (len > 0)
        buf[*pos < len ? *pos : len - 1] = '\0';
}

void mrd_log_escape(char *buf, size_t len, size_t *pos, const char *value)
{
    if (value == NULL)
        value = "";
    int quote = value[0] == '\0';
    for (const char *p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f)
            quote = 1;
    }
    if (!quote) {
        put(buf, len, pos, value, strlen(value));
        return;
    }
    put(buf, len, pos, "\"", 1);
    for (const char *p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(buf, len, pos, esc, 2);
        } else if (c == '\n') {
            put(buf, len, pos, "\\n", 2);
        } else if (c == '\t') {
            put(buf, len, pos, "\\t", 2);
        } else if (c == '\r') {
            put(buf, len, pos, "\\r", 2);
        } else if (c < ' ' || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            put(buf, len, pos, esc, 4);
        } else {
            put(buf, len, pos, (const char *)p, 1);
        }
    }
    put(buf, len, pos, "\"", 1);
}

size_t mrd_log_format(char *buf, size_t len, const char *ts, mrd_log_level level, const char *msg,
                      const mrd_kv *kvs, size_t n)
{
    size_t pos = 0;
    char num[64];
    if (len > 0)
        buf[0] = '\0';
    put(buf, len, &pos, "ts=", 3);
    put(buf, len, &pos, ts, strlen(ts));
    put(buf, len, &pos, " level=", 7);
    const char *lv = level_names[level <= MRD_LOG_ERROR ? level : MRD_LOG_ERROR];
    put(buf, len, &pos, lv, strlen(lv));
    if (log_program) {
        put(buf, len, &pos, " prog=", 6);
        mrd_log_escape(buf, len, &pos, log_program);
    }
    put(buf, len, &pos, " msg=", 5);
    mrd_log_escape(buf, len, &pos, msg);
    for (size_t i = 0; i < n; i++) {
        if (kvs[i].key == NULL)
            continue;
        put(buf, len, &pos, " ", 1);
        put(buf, len, &pos, kvs[i].key, strlen(kvs[i].key));
        put(buf, len, &pos, "=", 1);
        switch (kvs[i].type) {
        case 'i':
            snprintf(num, sizeof(num), "%lld", kvs[i].i);
            put(buf, len, &pos, num, strlen(num));
            break;
        case 'u':
            snprintf(num, sizeof(num), "%llu", (unsigned long long)kvs[i].i);
            put(buf, len, &pos, num, strlen(num));
            break;
        case 'f':
            snprintf(num, sizeof(num), "%.3f", kvs[i].f);
            put(buf, len, &pos, num, strlen(num));
            break;
        default:
            mrd_log_escape(buf, len, &pos, kvs[i].s);
        }
    }
    return pos;
}

void mrd_log_kv(mrd_log_level level, const char *msg, const mrd_kv *kvs, size_t n)
{
    if (level < log_min_level)
        return;
    struct timeval tv;
    struct tm tm;
    char ts[96];
    char line[4096];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    size_t need = mrd_log_format(line, sizeof(line) - 1, ts, level, msg, kvs, n);
    size_t used = need < sizeof(line) - 2 ? need : sizeof(line) - 2;
    line[used] = '\n';
    ssize_t w = write(2, line, used + 1);
    (void)w;
}
