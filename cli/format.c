/*
 * meridianctl's pure formatting: byte counts and durations for people,
 * timestamps as PostgreSQL writes them in JSON, sanitising of text that came
 * from the server, and aligned tables. Called by commands.c; unit-tested by
 * tests/unit/test_cli_format.c.
 *
 * Nothing here does I/O except mrd__cli_table_print. Every function bounds
 * its output by the buffer it is given (always NUL-terminated when len > 0);
 * a table that cannot grow reports MRD_ENOMEM and renders what it has. Text
 * from the server never reaches the terminal with control characters in it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "meridian/error.h"

char *mrd__cli_fmt_bytes(double bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (len == 0)
        return buf;
    const char *sign = "";
    if (bytes < 0) {
        sign = "-";
        bytes = -bytes;
    }
    size_t u = 0;
    /* 1023.95 KiB would print as "1024.0 KiB": move up a unit instead */
    while (u + 1 < sizeof(units) / sizeof(units[0]) && bytes >= 1024.0 - (u ? 0.05 : 0.5)) {
        bytes /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%s%.0f B", sign, bytes);
    else
        snprintf(buf, len, "%s%.1f %s", sign, bytes, units[u]);
    return buf;
}

char *mrd__cli_fmt_ms(int64_t ms, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    const char *sign = "";
    uint64_t v;
    if (ms < 0) {
        sign = "-";
        v = (uint64_t)(-(ms + 1)) + 1;
    } else {
        v = (uint64_t)ms;
    }
    if (v < 1000)
        snprintf(buf, len, "%s%llu ms", sign, (unsigned long long)v);
    else if (v < 9995)
        snprintf(buf, len, "%s%.2f s", sign, (double)v / 1000.0);
    else if (v < 59950)
        snprintf(buf, len, "%s%.1f s", sign, (double)v / 1000.0);
    else if (v < 3600000ULL) {
        uint64_t s = (v + 500) / 1000;
        snprintf(buf, len, "%s%llum%02llus", sign, (unsigned long long)(s / 60),
                 (unsigned long long)(s % 60));
    } else if (v < 86400000ULL) {
        uint64_t m = v / 60000;
        snprintf(buf, len, "%s%lluh%02llum", sign, (unsigned long long)(m / 60),
                 (unsigned long long)(m % 60));
    } else {
        uint64_t h = v / 3600000ULL;
        snprintf(buf, len, "%s%llud%02lluh", sign, (unsigned long long)(h / 24),
                 (unsigned long long)(h % 24));
    }
    return buf;
}

char *mrd__cli_fmt_seconds(const json_t *v, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    if (!json_is_number(v)) {
        snprintf(buf, len, "-");
        return buf;
    }
    double s = json_number_value(v);
    if (s > 9.2e15 || s < -9.2e15) /* beyond int64 milliseconds */
        s = s > 0 ? 9.2e15 : -9.2e15;
    double ms = s * 1000.0;
    return mrd__cli_fmt_ms((int64_t)(ms < 0 ? ms - 0.5 : ms + 0.5), buf, len);
}

char *mrd__cli_fmt_rpo(const json_t *recovery, const char *region, char *buf, size_t len)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(recovery, "regions"), i, r)
    {
        const char *name = json_string_value(json_object_get(r, "region"));
        if (name && region && strcmp(name, region) == 0)
            return mrd__cli_fmt_seconds(json_object_get(r, "rpo_seconds"), buf, len);
    }
    if (len)
        snprintf(buf, len, "-");
    return buf;
}

int64_t mrd__cli_wait_slice_ms(int64_t left_ms)
{
    if (left_ms <= 0)
        return 0;
    return left_ms > 60000 ? 60000 : left_ms;
}

/* Reads exactly n decimal digits. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int mrd__cli_time_parse(const char *text, int64_t *us)
{
    if (text == NULL)
        return MRD_EPARSE;
    const char *p = text;
    int y, mo, d, h, mi, s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        return MRD_EPARSE;
    if (*p != 'T' && *p != ' ')
        return MRD_EPARSE;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &s))
        return MRD_EPARSE;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || s > 60)
        return MRD_EPARSE;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 6) {
                frac = frac * 10 + (*p - '0');
                n++;
            }
            p++;
        }
        if (n == 0)
            return MRD_EPARSE;
        while (n++ < 6)
            frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
        if (digits(&p, 2, &oh))
            return MRD_EPARSE;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &om))
                return MRD_EPARSE;
        } else if (*p >= '0' && *p <= '9') {
            if (digits(&p, 2, &om))
                return MRD_EPARSE;
        }
        if (oh > 15 || om > 59)
            return MRD_EPARSE;
        off = sign * (int64_t)(oh * 3600 + om * 60);
    } else {
        return MRD_EPARSE;
    }
    if (*p != '\0')
        return MRD_EPARSE;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - off;
    *us = secs * 1000000 + frac;
    return 0;
}

char *mrd__cli_fmt_time(const char *text, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    int64_t us;
    if (text == NULL) {
        snprintf(buf, len, "-");
    } else if (mrd__cli_time_parse(text, &us) == 0) {
        snprintf(buf, len, "%.10s %.8s", text, text + 11);
    } else {
        char clean[64];
        snprintf(buf, len, "%.19s", mrd__cli_sanitize(text, clean, sizeof(clean)));
    }
    return buf;
}

char *mrd__cli_sanitize(const char *src, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)(src ? src : ""); *p && o + 1 < len; p++) {
        unsigned char c = *p;
        if (c == '\n' || c == '\t' || c == '\r')
            buf[o++] = ' ';
        else if (c < 0x20 || c == 0x7f)
            buf[o++] = '?';
        else if (c == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            buf[o++] = '?'; /* C1 control characters (U+0080..U+009F) */
            p++;
        } else
            buf[o++] = (char)c;
    }
    /* do not leave half a UTF-8 sequence at a cut */
    if (o + 1 >= len && o > 0) {
        size_t k = o;
        while (k > 0 && ((unsigned char)buf[k - 1] & 0xc0) == 0x80)
            k--;
        if (k > 0 && ((unsigned char)buf[k - 1] & 0xc0) == 0xc0) {
            unsigned char lead = (unsigned char)buf[k - 1];
            size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
            if (o - (k - 1) < need)
                o = k - 1;
        }
    }
    buf[o] = '\0';
    return buf;
}

size_t mrd__cli_text_width(const char *s)
{
    size_t w = 0;
    for (; s && *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

/* ---- tables ------------------------------------------------------------- */

#define TABLE_MAX_COLS 16

typedef struct {
    char *text;
    mrd__cli_color color;
} table_cell;

struct mrd__cli_table {
    size_t ncols;
    char *headers[TABLE_MAX_COLS];
    int right[TABLE_MAX_COLS];
    table_cell *cells;         /* nrows * ncols */
    size_t nrows, cap, filled; /* filled: cells of the last row */
};

mrd__cli_table *mrd__cli_table_new(size_t ncols, const char *const *headers)
{
    if (ncols == 0 || ncols > TABLE_MAX_COLS)
        return NULL;
    mrd__cli_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->ncols = ncols;
    for (size_t i = 0; i < ncols; i++) {
        t->headers[i] = strdup(headers && headers[i] ? headers[i] : "");
        if (t->headers[i] == NULL) {
            mrd__cli_table_free(t);
            return NULL;
        }
    }
    return t;
}

void mrd__cli_table_align_right(mrd__cli_table *t, size_t col)
{
    if (t && col < t->ncols)
        t->right[col] = 1;
}

int mrd__cli_table_row(mrd__cli_table *t)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        table_cell *c = realloc(t->cells, cap * t->ncols * sizeof(*c));
        if (c == NULL)
            return MRD_ENOMEM;
        t->cells = c;
        t->cap = cap;
    }
    memset(&t->cells[t->nrows * t->ncols], 0, t->ncols * sizeof(table_cell));
    t->nrows++;
    t->filled = 0;
    return 0;
}

int mrd__cli_table_cell(mrd__cli_table *t, mrd__cli_color color, const char *text)
{
    if (t->nrows == 0 && mrd__cli_table_row(t) != 0)
        return MRD_ENOMEM;
    if (t->filled >= t->ncols)
        return 0;
    char clean[512];
    char *copy = strdup(mrd__cli_sanitize(text ? text : "-", clean, sizeof(clean)));
    if (copy == NULL)
        return MRD_ENOMEM;
    table_cell *c = &t->cells[(t->nrows - 1) * t->ncols + t->filled++];
    c->text = copy;
    c->color = color;
    return 0;
}

int mrd__cli_table_cellf(mrd__cli_table *t, mrd__cli_color color, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return mrd__cli_table_cell(t, color, buf);
}

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_pad(strbuf *b, size_t n)
{
    static const char spaces[] = "                                ";
    while (n > 0) {
        size_t k = n < sizeof(spaces) - 1 ? n : sizeof(spaces) - 1;
        sb_add(b, spaces, k);
        n -= k;
    }
}

static const char *color_code(mrd__cli_color c)
{
    switch (c) {
    case MRD__CLI_GREEN:
        return "\033[32m";
    case MRD__CLI_YELLOW:
        return "\033[33m";
    case MRD__CLI_RED:
        return "\033[31m";
    case MRD__CLI_BOLD:
        return "\033[1m";
    case MRD__CLI_DIM:
        return "\033[2m";
    default:
        return "";
    }
}

/* One line: cells (texts and colours), widths; the last column unpadded. */
static void render_line(strbuf *b, const mrd__cli_table *t, const char *const *texts,
                        const mrd__cli_color *colors, const size_t *width, const char *indent,
                        int color)
{
    sb_add(b, indent, strlen(indent));
    size_t pending = 0; /* spaces owed before the next non-empty text */
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = texts[i] ? texts[i] : "";
        size_t w = mrd__cli_text_width(s);
        size_t pad = width[i] > w ? width[i] - w : 0;
        if (i > 0)
            pending += 2;
        if (t->right[i])
            pending += pad;
        if (*s) {
            sb_pad(b, pending);
            pending = 0;
            const char *code = color ? color_code(colors[i]) : "";
            sb_add(b, code, strlen(code));
            sb_add(b, s, strlen(s));
            if (*code)
                sb_add(b, "\033[0m", 4);
        }
        if (!t->right[i])
            pending += pad;
    }
    sb_add(b, "\n", 1);
}

char *mrd__cli_table_render(const mrd__cli_table *t, const char *indent, int color)
{
    size_t width[TABLE_MAX_COLS] = {0};
    indent = indent ? indent : "";
    for (size_t i = 0; i < t->ncols; i++)
        width[i] = mrd__cli_text_width(t->headers[i]);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i].text;
            size_t w = mrd__cli_text_width(s ? s : "");
            if (w > width[i])
                width[i] = w;
        }
    strbuf b = {0};
    sb_add(&b, "", 0);
    const char *texts[TABLE_MAX_COLS];
    mrd__cli_color colors[TABLE_MAX_COLS];
    for (size_t i = 0; i < t->ncols; i++) {
        texts[i] = t->headers[i];
        colors[i] = MRD__CLI_BOLD;
    }
    render_line(&b, t, texts, colors, width, indent, color);
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            texts[i] = t->cells[r * t->ncols + i].text;
            colors[i] = t->cells[r * t->ncols + i].color;
        }
        render_line(&b, t, texts, colors, width, indent, color);
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

void mrd__cli_table_print(const mrd__cli_table *t, FILE *out, const char *indent, int color)
{
    char *s = mrd__cli_table_render(t, indent, color);
    if (s) {
        fputs(s, out);
        free(s);
    } else {
        fputs("(out of memory)\n", out);
    }
}

void mrd__cli_table_free(mrd__cli_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->ncols; i++)
        free(t->headers[i]);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++)
            free(t->cells[r * t->ncols + i].text);
    free(t->cells);
    free(t);
}
