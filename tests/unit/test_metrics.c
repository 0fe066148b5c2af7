/* Unit tests of common/metrics.c: exact Prometheus text output, escaping of
 * label values and help text, one # HELP / # TYPE per family, number
 * formatting, and refusal (with nothing written) of invalid names, split
 * families and negative counters. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/metrics.h"

Test(metrics, empty_buffer)
{
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    cr_assert_str_eq(b.data, "");
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.err, 0);
    mrd_metrics_buf_close(&b);
    mrd_metrics_buf_close(&b); /* closing twice is harmless */
}

Test(metrics, counter_and_gauge_exact_output)
{
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    mrd_metric_label eu[] = {{"region", "eu"}, {"service", "pg"}};
    mrd_metric_label us[] = {{"region", "us"}, {"service", "pg"}};
    cr_assert_eq(mrd_metrics_family(&b, "meridian_heartbeats_total", MRD_METRIC_COUNTER,
                                    "Heartbeats received."),
                 0);
    cr_assert_eq(mrd_metrics_sample_int(&b, eu, 2, 42), 0);
    cr_assert_eq(mrd_metrics_sample_int(&b, us, 2, 0), 0);
    cr_assert_eq(
        mrd_metrics_family(&b, "meridian_lag_bytes", MRD_METRIC_GAUGE, "Replication lag in bytes."),
        0);
    cr_assert_eq(mrd_metrics_sample_int(&b, eu, 2, INT64_MAX), 0);
    cr_assert_eq(mrd_metrics_sample_int(&b, us, 2, INT64_MIN), 0);
    cr_assert_eq(mrd_metrics_family(&b, "meridian_up", MRD_METRIC_GAUGE, NULL), 0);
    cr_assert_eq(mrd_metrics_sample_double(&b, NULL, 0, 1), 0);
    cr_assert_eq(mrd_metrics_family(&b, "meridian_ratio", MRD_METRIC_UNTYPED, "x"), 0);
    cr_assert_eq(mrd_metrics_sample_double(&b, NULL, 0, 0.1), 0);
    cr_assert_str_eq(b.data, "# HELP meridian_heartbeats_total Heartbeats received.\n"
                             "# TYPE meridian_heartbeats_total counter\n"
                             "meridian_heartbeats_total{region=\"eu\",service=\"pg\"} 42\n"
                             "meridian_heartbeats_total{region=\"us\",service=\"pg\"} 0\n"
                             "# HELP meridian_lag_bytes Replication lag in bytes.\n"
                             "# TYPE meridian_lag_bytes gauge\n"
                             "meridian_lag_bytes{region=\"eu\",service=\"pg\"} "
                             "9223372036854775807\n"
                             "meridian_lag_bytes{region=\"us\",service=\"pg\"} "
                             "-9223372036854775808\n"
                             "# TYPE meridian_up gauge\n"
                             "meridian_up 1\n"
                             "# HELP meridian_ratio x\n"
                             "# TYPE meridian_ratio untyped\n"
                             "meridian_ratio 0.1\n");
    cr_assert_eq(b.len, strlen(b.data));
    cr_assert_eq(b.err, 0);
    mrd_metrics_buf_close(&b);
    cr_assert_str_eq(b.data, "");
}

Test(metrics, label_values_and_help_escaped)
{
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    cr_assert_eq(
        mrd_metrics_family(&b, "m", MRD_METRIC_GAUGE, "a \"quoted\" back\\slash\nand newline"), 0);
    mrd_metric_label l[] = {{"path", "C:\\dir\\"},
                            {"msg", "say \"hi\"\nbye"},
                            {"empty", ""},
                            {"utf8", "r\xc3\xa9gion"}};
    cr_assert_eq(mrd_metrics_sample_int(&b, l, 4, 1), 0);
    cr_assert_str_eq(b.data, "# HELP m a \"quoted\" back\\\\slash\\nand newline\n"
                             "# TYPE m gauge\n"
                             "m{path=\"C:\\\\dir\\\\\",msg=\"say \\\"hi\\\"\\nbye\",empty=\"\","
                             "utf8=\"r\xc3\xa9gion\"} 1\n");
    mrd_metrics_buf_close(&b);
}

Test(metrics, help_and_type_once_per_family)
{
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    cr_assert_eq(mrd_metrics_family(&b, "a_total", MRD_METRIC_COUNTER, "A."), 0);
    cr_assert_eq(mrd_metrics_sample_int(&b, NULL, 0, 1), 0);
    cr_assert_eq(mrd_metrics_family(&b, "a_total", MRD_METRIC_COUNTER, "A."), 0);
    cr_assert_eq(mrd_metrics_sample_int(&b, NULL, 0, 2), 0);
    cr_assert_str_eq(b.data, "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n");
    /* Same name with another type: refused. */
    cr_assert_eq(mrd_metrics_family(&b, "a_total", MRD_METRIC_GAUGE, "A."), MRD_EINVAL);
    cr_assert_eq(b.err, MRD_EINVAL);
    /* Going back to a closed family would split its group: refused. */
    b.err = 0;
    cr_assert_eq(mrd_metrics_family(&b, "b", MRD_METRIC_GAUGE, "B."), 0);
    size_t len = b.len;
    cr_assert_eq(mrd_metrics_family(&b, "a_total", MRD_METRIC_COUNTER, "A."), MRD_EINVAL);
    cr_assert_eq(b.len, len);
    cr_assert_eq(b.err, MRD_EINVAL);
    mrd_metrics_buf_close(&b);
}

Test(metrics, doubles_formatted_exactly)
{
    struct {
        double v;
        const char *text;
    } cases[] = {{0, "0"},
                 {-0.0, "-0"},
                 {1.5, "1.5"},
                 {0.1, "0.1"},
                 {1e21, "1e+21"},
                 {123456789012, "123456789012"},
                 {1.0 / 3.0, "0.3333333333333333"},
                 {5e-324, "4.94065645841247e-324"},
                 {-2.25, "-2.25"},
                 {INFINITY, "+Inf"},
                 {-INFINITY, "-Inf"},
                 {NAN, "NaN"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mrd_metrics_buf b;
        char want[128];
        mrd_metrics_buf_init(&b);
        cr_assert_eq(mrd_metrics_family(&b, "g", MRD_METRIC_GAUGE, NULL), 0);
        cr_assert_eq(mrd_metrics_sample_double(&b, NULL, 0, cases[i].v), 0);
        snprintf(want, sizeof(want), "# TYPE g gauge\ng %s\n", cases[i].text);
        cr_assert_str_eq(b.data, want);
        if (!isnan(cases[i].v) && !isinf(cases[i].v))
            cr_assert_eq(strtod(cases[i].text, NULL), cases[i].v);
        mrd_metrics_buf_close(&b);
    }
}

Test(metrics, invalid_input_refused_and_nothing_written)
{
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    /* No family yet. */
    cr_assert_eq(mrd_metrics_sample_int(&b, NULL, 0, 1), MRD_EINVAL);
    cr_assert_eq(b.err, MRD_EINVAL);
    const char *bad_names[] = {"", "1abc", "a-b", "a b", "a\nb", "é", NULL};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
        cr_assert_eq(mrd_metrics_family(&b, bad_names[i], MRD_METRIC_GAUGE, "h"), MRD_EINVAL,
                     "accepted name %zu", i);
    cr_assert_eq(mrd_metrics_family(&b, "ok", (mrd_metric_type)99, "h"), MRD_EINVAL);
    cr_assert_str_eq(b.data, "");
    /* Colons are allowed in metric names (recording rules), not in labels. */
    cr_assert_eq(mrd_metrics_family(&b, "job:rate_5m", MRD_METRIC_GAUGE, NULL), 0);
    size_t len = b.len;
    mrd_metric_label bad_labels[][2] = {{{"a:b", "v"}, {"x", "y"}}, {{"__name__", "v"}, {"x", "y"}},
                                        {{"1a", "v"}, {"x", "y"}},  {{"", "v"}, {"x", "y"}},
                                        {{NULL, "v"}, {"x", "y"}},  {{"a", NULL}, {"x", "y"}},
                                        {{"a", "v"}, {"a", "w"}}};
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++)
        cr_assert_eq(mrd_metrics_sample_int(&b, bad_labels[i], 2, 1), MRD_EINVAL, "labels %zu", i);
    cr_assert_eq(mrd_metrics_sample_int(&b, NULL, 2, 1), MRD_EINVAL);
    cr_assert_eq(b.len, len);
    cr_assert_str_eq(b.data, "# TYPE job:rate_5m gauge\n");
    mrd_metric_label good[] = {{"_x9", "v"}};
    cr_assert_eq(mrd_metrics_sample_int(&b, good, 1, 1), 0);
    cr_assert_str_eq(b.data, "# TYPE job:rate_5m gauge\njob:rate_5m{_x9=\"v\"} 1\n");
    mrd_metrics_buf_close(&b);
}

Test(metrics, counters_cannot_be_negative_or_nan)
{
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    cr_assert_eq(mrd_metrics_family(&b, "c_total", MRD_METRIC_COUNTER, NULL), 0);
    cr_assert_eq(mrd_metrics_sample_int(&b, NULL, 0, -1), MRD_EINVAL);
    cr_assert_eq(mrd_metrics_sample_double(&b, NULL, 0, -0.5), MRD_EINVAL);
    cr_assert_eq(mrd_metrics_sample_double(&b, NULL, 0, NAN), MRD_EINVAL);
    cr_assert_eq(mrd_metrics_sample_double(&b, NULL, 0, INFINITY), 0);
    cr_assert_eq(mrd_metrics_sample_double(&b, NULL, 0, 2.5), 0);
    cr_assert_str_eq(b.data, "# TYPE c_total counter\nc_total +Inf\nc_total 2.5\n");
    cr_assert_eq(b.err, MRD_EINVAL); /* the first error is kept */
    mrd_metrics_buf_close(&b);
}

Test(metrics, grows_for_many_families_and_long_values)
{
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    char name[32];
    char *big = malloc(100001);
    memset(big, '"', 100000);
    big[100000] = '\0';
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof(name), "fam_%d", i);
        cr_assert_eq(mrd_metrics_family(&b, name, MRD_METRIC_GAUGE, "help"), 0);
        cr_assert_eq(mrd_metrics_sample_int(&b, NULL, 0, i), 0);
    }
    mrd_metric_label l[] = {{"v", big}};
    cr_assert_eq(mrd_metrics_sample_int(&b, l, 1, 7), 0);
    cr_assert_eq(b.len, strlen(b.data));
    cr_assert_not_null(strstr(b.data, "fam_499 499\nfam_499{v=\"\\\"\\\""));
    const char *tail = "\\\"\\\"\"} 7\n";
    cr_assert_str_eq(b.data + b.len - strlen(tail), tail);
    /* 500 families of 3 lines, then the label: 100000 quotes escaped to 200000 bytes. */
    cr_assert_gt(b.len, 200000);
    cr_assert_eq(b.err, 0);
    free(big);
    mrd_metrics_buf_close(&b);
}
