/*
 * Prometheus text exposition format writer (include/meridian/metrics.h). The
 * controller's and agent's /metrics handlers build one mrd_metrics_buf per
 * scrape from their own state and send it; there is no registry and no
 * global state.
 *
 * Invariants: the buffer always holds complete lines and a NUL terminator; a
 * call that fails (bad name, out of memory) writes nothing, so the text stays
 * valid, and records its code in b->err (first error wins) for the caller to
 * check once at the end. Each family gets # HELP / # TYPE exactly once and
 * its samples form one group, as the format requires. Label values and help
 * text are escaped, so no input can break a line.
 */
#include "meridian/metrics.h"
#include "meridian/error.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What data points to before the first write; never written to. */
static const char empty_text[1] = "";

void mrd_metrics_buf_init(mrd_metrics_buf *b)
{
    memset(b, 0, sizeof(*b));
    b->data = (char *)empty_text;
}

void mrd_metrics_buf_close(mrd_metrics_buf *b)
{
    if (b->data != empty_text)
        free(b->data);
    for (size_t i = 0; i < b->nfamilies; i++)
        free(b->families[i]);
    free(b->families);
    mrd_metrics_buf_init(b);
}

static int set_err(mrd_metrics_buf *b, int err)
{
    if (b->err == 0)
        b->err = err;
    return err;
}

/* Makes room for extra more bytes plus the NUL. */
static int reserve(mrd_metrics_buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len)
        return MRD_ENOMEM;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    char *data = realloc(b->data == empty_text ? NULL : b->data, cap);
    if (data == NULL)
        return MRD_ENOMEM;
    if (b->data == empty_text)
        data[0] = '\0';
    b->data = data;
    b->cap = cap;
    return 0;
}

/* Appends without checking room: callers reserve first. */
static void put(mrd_metrics_buf *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void puts_(mrd_metrics_buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Escaped length and text: label values escape \ " and newline; help text
 * escapes \ and newline only. */
static size_t escaped_len(const char *s, int quote)
{
    size_t n = 0;
    for (; *s; s++)
        n += (*s == '\\' || *s == '\n' || (quote && *s == '"')) ? 2 : 1;
    return n;
}

static void put_escaped(mrd_metrics_buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(b, "\\\\", 2);
        else if (*s == '\n')
            put(b, "\\n", 2);
        else if (quote && *s == '"')
            put(b, "\\\"", 2);
        else
            put(b, s, 1);
    }
}

static int name_ok(const char *s, int colon)
{
    if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || (colon && c == ':')))
            return 0;
    }
    return 1;
}

static const char *type_name(mrd_metric_type t)
{
    switch (t) {
    case MRD_METRIC_COUNTER:
        return "counter";
    case MRD_METRIC_GAUGE:
        return "gauge";
    case MRD_METRIC_UNTYPED:
        return "untyped";
    }
    return NULL;
}

int mrd_metrics_family(mrd_metrics_buf *b, const char *name, mrd_metric_type type, const char *help)
{
    const char *tname = type_name(type);
    if (!name_ok(name, 1) || tname == NULL)
        return set_err(b, MRD_EINVAL);
    if (b->nfamilies > 0 && strcmp(b->families[b->nfamilies - 1], name) == 0)
        return b->type == type ? 0 : set_err(b, MRD_EINVAL);
    for (size_t i = 0; i < b->nfamilies; i++) {
        if (strcmp(b->families[i], name) == 0)
            return set_err(b, MRD_EINVAL);
    }
    if (b->nfamilies == b->capfamilies) {
        size_t cap = b->capfamilies ? b->capfamilies * 2 : 16;
        char **f = realloc(b->families, cap * sizeof(*f));
        if (f == NULL)
            return set_err(b, MRD_ENOMEM);
        b->families = f;
        b->capfamilies = cap;
    }
    size_t nlen = strlen(name);
    size_t need = 8 + nlen + 1 + strlen(tname) + 1;
    if (help)
        need += 8 + nlen + 1 + escaped_len(help, 0) + 1;
    char *copy = strdup(name);
    if (copy == NULL || reserve(b, need) < 0) {
        free(copy);
        return set_err(b, MRD_ENOMEM);
    }
    b->families[b->nfamilies++] = copy;
    b->type = type;
    if (help) {
        puts_(b, "# HELP ");
        put(b, name, nlen);
        puts_(b, " ");
        put_escaped(b, help, 0);
        puts_(b, "\n");
    }
    puts_(b, "# TYPE ");
    put(b, name, nlen);
    puts_(b, " ");
    puts_(b, tname);
    puts_(b, "\n");
    return 0;
}

/* Writes the current family's name, the labels and the value text. */
static int sample(mrd_metrics_buf *b, const mrd_metric_label *labels, size_t nlabels,
                  const char *value)
{
    if (b->nfamilies == 0 || (nlabels > 0 && labels == NULL))
        return set_err(b, MRD_EINVAL);
    const char *name = b->families[b->nfamilies - 1];
    size_t need = strlen(name) + 2 + strlen(value) + 1;
    for (size_t i = 0; i < nlabels; i++) {
        const char *ln = labels[i].name;
        if (!name_ok(ln, 0) || strncmp(ln, "__", 2) == 0 || labels[i].value == NULL)
            return set_err(b, MRD_EINVAL);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[j].name, ln) == 0)
                return set_err(b, MRD_EINVAL);
        }
        need += strlen(ln) + 4 + escaped_len(labels[i].value, 1);
    }
    if (reserve(b, need) < 0)
        return set_err(b, MRD_ENOMEM);
    puts_(b, name);
    if (nlabels > 0) {
        puts_(b, "{");
        for (size_t i = 0; i < nlabels; i++) {
            if (i > 0)
                puts_(b, ",");
            puts_(b, labels[i].name);
            puts_(b, "=\"");
            put_escaped(b, labels[i].value, 1);
            puts_(b, "\"");
        }
        puts_(b, "}");
    }
    puts_(b, " ");
    puts_(b, value);
    puts_(b, "\n");
    return 0;
}

int mrd_metrics_sample_double(mrd_metrics_buf *b, const mrd_metric_label *labels, size_t nlabels,
                              double value)
{
    char num[40];
    if (b->nfamilies > 0 && b->type == MRD_METRIC_COUNTER && !(value >= 0))
        return set_err(b, MRD_EINVAL);
    if (isnan(value)) {
        snprintf(num, sizeof(num), "NaN");
    } else if (isinf(value)) {
        snprintf(num, sizeof(num), "%s", value > 0 ? "+Inf" : "-Inf");
    } else {
        /* Shortest of %.15g..%.17g that reads back exactly. */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(num, sizeof(num), "%.*g", prec, value);
            if (strtod(num, NULL) == value)
                break;
        }
    }
    return sample(b, labels, nlabels, num);
}

int mrd_metrics_sample_int(mrd_metrics_buf *b, const mrd_metric_label *labels, size_t nlabels,
                           int64_t value)
{
    char num[32];
    if (b->nfamilies > 0 && b->type == MRD_METRIC_COUNTER && value < 0)
        return set_err(b, MRD_EINVAL);
    snprintf(num, sizeof(num), "%" PRId64, value);
    return sample(b, labels, nlabels, num);
}

static void stat_family(mrd_metrics_buf *b, const char *name, mrd_metric_type t, const char *help,
                        uint64_t v)
{
    mrd_metrics_family(b, name, t, help);
    mrd_metrics_sample_int(b, NULL, 0, (int64_t)v);
}

int mrd_metrics_http_server(mrd_metrics_buf *b, const mrd_http_server_stats *st)
{
    stat_family(b, "meridian_http_connections", MRD_METRIC_GAUGE, "HTTP connections open now.",
                st->open);
    stat_family(b, "meridian_http_connections_max", MRD_METRIC_GAUGE,
                "HTTP connection cap (from the fd limit unless configured).", st->max_connections);
    stat_family(b, "meridian_http_connections_per_client_max", MRD_METRIC_GAUGE,
                "HTTP connection cap per client address.", st->max_connections_per_client);
    stat_family(b, "meridian_http_connections_accepted_total", MRD_METRIC_COUNTER,
                "HTTP connections accepted.", st->accepted);
    mrd_metrics_family(b, "meridian_http_connections_refused_total", MRD_METRIC_COUNTER,
                       "HTTP connections closed right after accept, by reason.");
    mrd_metric_label l = {"reason", "max_connections"};
    mrd_metrics_sample_int(b, &l, 1, (int64_t)st->refused_max);
    l.value = "per_client";
    mrd_metrics_sample_int(b, &l, 1, (int64_t)st->refused_per_client);
    stat_family(b, "meridian_http_accept_errors_total", MRD_METRIC_COUNTER,
                "accept() failures (EMFILE, ENFILE, ENOMEM...).", st->accept_errors);
    stat_family(b, "meridian_http_header_timeouts_total", MRD_METRIC_COUNTER,
                "HTTP connections closed for not sending a complete request head in time.",
                st->header_timeouts);
    stat_family(b, "meridian_http_request_timeouts_total", MRD_METRIC_COUNTER,
                "HTTP requests answered 408 (head or body not complete in time).",
                st->request_timeouts);
    return b->err;
}
