/*
 * Prometheus text exposition format (version 0.0.4) written into a growable
 * buffer: no registry, no globals. A /metrics handler builds one buffer per
 * scrape from its own state, family by family:
 *
 *   mrd_metrics_buf b;
 *   mrd_metrics_buf_init(&b);
 *   mrd_metrics_family(&b, "meridian_heartbeats_total", MRD_METRIC_COUNTER, "Heartbeats
 * received."); mrd_metric_label l[] = {{"region", "eu"}}; mrd_metrics_sample_int(&b, l, 1, 42); if
 * (b.err == 0) send(b.data, b.len); mrd_metrics_buf_close(&b);
 *
 * Output:
 *   # HELP meridian_heartbeats_total Heartbeats received.
 *   # TYPE meridian_heartbeats_total counter
 *   meridian_heartbeats_total{region="eu"} 42
 */
#ifndef MERIDIAN_METRICS_H
#define MERIDIAN_METRICS_H

#include "meridian/http_server.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    MRD_METRIC_COUNTER = 1,
    MRD_METRIC_GAUGE,
    MRD_METRIC_UNTYPED,
} mrd_metric_type;

typedef struct {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" */
    const char *value; /* any UTF-8; escaped on output (\\, \", \n) */
} mrd_metric_label;

typedef struct {
    char *data; /* NUL-terminated text, len bytes; "" after init; owned by the buffer */
    size_t len;
    size_t cap;
    int err; /* first error of any call (sticky), 0 if none */
    /* Families already written, so each gets its # HELP / # TYPE once and its
     * samples stay in one group. Private. */
    char **families;
    size_t nfamilies;
    size_t capfamilies;
    mrd_metric_type type; /* of the current (last) family */
} mrd_metrics_buf;

/* Makes an empty buffer; allocates nothing (data points to a static ""). */
void mrd_metrics_buf_init(mrd_metrics_buf *b);
/* Frees everything the buffer owns; b is then empty as after init. */
void mrd_metrics_buf_close(mrd_metrics_buf *b);

/* Starts family name (the sample name: counters conventionally end in
 * _total): writes "# HELP" (if help is not NULL; '\' and newline escaped) and
 * "# TYPE" and makes it the current family. Calling it again for the current
 * family writes nothing and returns 0. Returns MRD_EINVAL for an invalid name
 * or type, or for a family that was already written and closed by another
 * (its samples would be split), MRD_ENOMEM; on error nothing is written and
 * b->err keeps the first error. */
int mrd_metrics_family(mrd_metrics_buf *b, const char *name, mrd_metric_type type,
                       const char *help);

/* Writes one sample of the current family: name{labels} value. Label values
 * are escaped; NaN and +Inf/-Inf are written as Prometheus spells them; doubles
 * with the shortest text that reads back to the same value. Returns 0, or
 * MRD_EINVAL (no current family, invalid or repeated label name, a negative
 * or NaN counter value), MRD_ENOMEM; on error nothing is written and b->err
 * keeps the first error. */
int mrd_metrics_sample_double(mrd_metrics_buf *b, const mrd_metric_label *labels, size_t nlabels,
                              double value);
int mrd_metrics_sample_int(mrd_metrics_buf *b, const mrd_metric_label *labels, size_t nlabels,
                           int64_t value);

/* The HTTP server's connection counters (mrd_http_server_stats) as the
 * meridian_http_* families. Returns b->err. */
int mrd_metrics_http_server(mrd_metrics_buf *b, const mrd_http_server_stats *st);

#endif
