/*
 * GET /metrics: the controller's state in the Prometheus text format. Open
 * (no token), like /v1/health, so that a scraper needs no secret; it shows
 * nothing a viewer could not see.
 *
 * Every controller exports its own counters (heartbeats, flushes, store
 * connection, lease); the leader also exports per service and member what
 * its last snapshot of the store says (epoch, primary region, lag, age of
 * the last heartbeat, running operation). Built from memory: no store
 * query, so a scrape cannot load the store.
 */
#include <stdio.h>
#include <string.h>

#include "controller.h"
#include "meridian/metrics.h"

static void gauge(mrd_metrics_buf *b, const char *name, const char *help, double v)
{
    mrd_metrics_family(b, name, MRD_METRIC_GAUGE, help);
    mrd_metrics_sample_double(b, NULL, 0, v);
}

static void counter(mrd_metrics_buf *b, const char *name, const char *help, uint64_t v)
{
    mrd_metrics_family(b, name, MRD_METRIC_COUNTER, help);
    mrd_metrics_sample_int(b, NULL, 0, (int64_t)v);
}

static double num(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static void service_metrics(mrd_ctl *ctl, mrd_metrics_buf *b)
{
    json_t *snap = ctl->snapshot;
    if (snap == NULL || !mrd__lease_is_leader(ctl))
        return;
    double now = num(snap, "now_ms");
    size_t i;
    json_t *s, *m, *o;
    mrd_metrics_family(b, "meridian_service_epoch", MRD_METRIC_GAUGE,
                       "Topology generation of the service (grows at every cutover).");
    json_array_foreach(json_object_get(snap, "services"), i, s)
    {
        mrd_metric_label l[] = {{"service", json_string_value(json_object_get(s, "name"))}};
        mrd_metrics_sample_double(b, l, 1, num(s, "epoch"));
    }
    mrd_metrics_family(b, "meridian_service_primary", MRD_METRIC_GAUGE,
                       "1 for the region that holds the service's primary.");
    json_array_foreach(json_object_get(snap, "services"), i, s)
    {
        mrd_metric_label l[] = {
            {"service", json_string_value(json_object_get(s, "name"))},
            {"region", json_string_value(json_object_get(s, "primary_region"))}};
        mrd_metrics_sample_int(b, l, 2, 1);
    }
    mrd_metrics_family(b, "meridian_service_maintenance", MRD_METRIC_GAUGE,
                       "1 while automatic decisions are suspended for the service.");
    json_array_foreach(json_object_get(snap, "services"), i, s)
    {
        mrd_metric_label l[] = {{"service", json_string_value(json_object_get(s, "name"))}};
        mrd_metrics_sample_int(b, l, 1, json_is_true(json_object_get(s, "maintenance")));
    }
    static const struct {
        const char *name, *key, *help;
    } member_gauges[] = {
        {"meridian_member_lag_bytes", "lag_bytes",
         "Bytes the member's replay is behind the primary (as its agent reported)."},
        {"meridian_member_lag_seconds", "lag_ms",
         "Seconds the member's replay is behind (as its agent reported)."},
        {"meridian_member_replay_position", "replay_position", "Replayed position (LSN)."},
        {"meridian_member_position", "position", "Primary's current write position (LSN)."},
    };
    for (size_t g = 0; g < sizeof(member_gauges) / sizeof(member_gauges[0]); g++) {
        mrd_metrics_family(b, member_gauges[g].name, MRD_METRIC_GAUGE, member_gauges[g].help);
        json_array_foreach(json_object_get(snap, "members"), i, m)
        {
            json_t *v = json_object_get(m, member_gauges[g].key);
            if (!json_is_number(v))
                continue;
            mrd_metric_label l[] = {{"service", json_string_value(json_object_get(m, "service"))},
                                    {"member", json_string_value(json_object_get(m, "name"))},
                                    {"region", json_string_value(json_object_get(m, "region"))}};
            double x = json_number_value(v);
            if (strcmp(member_gauges[g].key, "lag_ms") == 0)
                x /= 1000.0;
            mrd_metrics_sample_double(b, l, 3, x);
        }
    }
    mrd_metrics_family(b, "meridian_member_heartbeat_age_seconds", MRD_METRIC_GAUGE,
                       "Seconds since the member's agent was last recorded (store clock).");
    json_array_foreach(json_object_get(snap, "members"), i, m)
    {
        mrd_metric_label l[] = {{"service", json_string_value(json_object_get(m, "service"))},
                                {"member", json_string_value(json_object_get(m, "name"))},
                                {"region", json_string_value(json_object_get(m, "region"))}};
        mrd_metrics_sample_double(b, l, 3, (now - num(m, "last_seen_ms")) / 1000.0);
    }
    mrd_metrics_family(b, "meridian_member_up", MRD_METRIC_GAUGE,
                       "1 when the member reports itself healthy and unfenced.");
    json_array_foreach(json_object_get(snap, "members"), i, m)
    {
        mrd_metric_label l[] = {{"service", json_string_value(json_object_get(m, "service"))},
                                {"member", json_string_value(json_object_get(m, "name"))},
                                {"role", json_string_value(json_object_get(m, "role"))}};
        mrd_metrics_sample_int(b, l, 3,
                               json_is_true(json_object_get(m, "healthy")) &&
                                   !json_is_true(json_object_get(m, "fenced")));
    }
    mrd_metrics_family(b, "meridian_operation_running", MRD_METRIC_GAUGE,
                       "1 per running operation, labelled by its kind and current step.");
    json_array_foreach(json_object_get(snap, "operations"), i, o)
    {
        json_t *st = json_object_get(o, "state");
        mrd_metric_label l[] = {{"service", json_string_value(json_object_get(o, "service"))},
                                {"kind", json_string_value(json_object_get(st, "kind"))},
                                {"step", json_string_value(json_object_get(o, "step"))}};
        mrd_metrics_sample_int(b, l, 3, 1);
    }
}

/* What diverge.c counted while this controller led (docs/diverged.md). */
static void diverge_metrics(mrd_ctl *ctl, mrd_metrics_buf *b)
{
    mrd_metrics_family(b, "meridian_diverged_operations_total", MRD_METRIC_COUNTER,
                       "Operations whose old primary was seen to write after the promotion.");
    for (size_t i = 0; i < ctl->nservices; i++) {
        mrd_metric_label l[] = {{"service", ctl->services[i].name}};
        mrd_metrics_sample_int(b, l, 1, (int64_t)ctl->services[i].diverged_ops);
    }
    mrd_metrics_family(b, "meridian_diverged_bytes_total", MRD_METRIC_COUNTER,
                       "Bytes of WAL old primaries wrote beyond what their failover counted.");
    for (size_t i = 0; i < ctl->nservices; i++) {
        mrd_metric_label l[] = {{"service", ctl->services[i].name}};
        mrd_metrics_sample_int(b, l, 1, (int64_t)ctl->services[i].diverged_bytes);
    }
}

static void h_metrics(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    (void)req;
    mrd_metrics_buf b;
    mrd_metrics_buf_init(&b);
    const mrd__ingest *in = &ctl->ingest;
    gauge(&b, "meridian_up", "1 while the controller runs.", 1);
    gauge(&b, "meridian_is_leader", "1 while this controller holds the leader lease.",
          mrd__lease_is_leader(ctl));
    gauge(&b, "meridian_lease_term", "Term of the lease this controller last held or saw.",
          (double)(ctl->lease.leader ? ctl->lease.term : ctl->lease.holder_term));
    counter(&b, "meridian_lease_acquired_total", "Times this controller became leader.",
            ctl->lease.acquired_count);
    gauge(&b, "meridian_store_connected", "1 while the store connection is up.",
          mrd_pg_connected(ctl->pg));
    gauge(&b, "meridian_store_migrated", "1 once the store schema is current.", ctl->migrated);
    gauge(&b, "meridian_store_queue", "Store queries queued or in flight.",
          (double)mrd_pg_pending(ctl->pg));
    counter(&b, "meridian_heartbeats_total", "Heartbeats accepted.", in->heartbeats);
    counter(&b, "meridian_heartbeats_rejected_total", "Heartbeats refused as invalid.",
            in->rejected);
    counter(&b, "meridian_heartbeats_recorded_total",
            "Heartbeats answered only after their batch committed (primaries).",
            in->heartbeats_recorded);
    counter(&b, "meridian_store_rows_written_total", "Rows written by heartbeat flushes.",
            in->rows_written);
    counter(&b, "meridian_store_flush_failures_total", "Heartbeat flushes that failed.",
            in->flush_failures);
    gauge(&b, "meridian_tick_snapshot_seconds",
          "How long the leader's last snapshot query took (ticks space out beyond "
          "tick_ms when it exceeds a quarter of it).",
          (double)ctl->tick_query_ms / 1000.0);
    gauge(&b, "meridian_loop_lag_max_seconds",
          "Longest the event loop kept the periodic timer waiting since start.",
          (double)ctl->loop_lag_max_ns / 1e9);
    {
        static const char *const over[] = {"0.02", "0.1", "1"};
        mrd_metrics_family(&b, "meridian_loop_stalls_total", MRD_METRIC_COUNTER,
                           "Times the periodic timer fired later than `over` seconds.");
        for (int i = 0; i < 3; i++) {
            mrd_metric_label l = {"over", over[i]};
            mrd_metrics_sample_int(&b, &l, 1, (int64_t)ctl->loop_stalls[i]);
        }
    }
    gauge(&b, "meridian_heartbeat_batch_nodes", "Nodes whose latest report awaits a flush.",
          (double)json_object_size(in->batch));
    mrd_http_server_stats hs;
    mrd_http_server_stats_get(ctl->http, &hs);
    mrd_metrics_http_server(&b, &hs);
    service_metrics(ctl, &b);
    mrd__peers_metrics(ctl, &b); /* peer set against the configuration (leader) */
    {
        /* the epoch guard (controller/tick.c): leader's view, per service */
        mrd_metrics_family(&b, "meridian_store_epoch_behind", MRD_METRIC_GAUGE,
                           "1 while the leader refuses to decide for a service because the "
                           "store's epoch is below one an agent reported (the store lost "
                           "transactions).");
        for (size_t i = 0; i < ctl->nservices; i++) {
            mrd_metric_label l = {"service", ctl->services[i].name};
            mrd_metrics_sample_int(&b, &l, 1,
                                   mrd__lease_is_leader(ctl) && ctl->services[i].epoch_reported);
        }
        mrd_metrics_family(&b, "meridian_store_epoch_behind_total", MRD_METRIC_COUNTER,
                           "Times this controller, as leader, found the store's epoch below an "
                           "agent's.");
        for (size_t i = 0; i < ctl->nservices; i++) {
            mrd_metric_label l = {"service", ctl->services[i].name};
            mrd_metrics_sample_int(&b, &l, 1, (int64_t)ctl->services[i].epoch_behind_total);
        }
        mrd_metrics_family(&b, "meridian_store_epoch_catchups_total", MRD_METRIC_COUNTER,
                           "Times this controller moved a service's epoch in the store past the "
                           "highest an agent reported.");
        for (size_t i = 0; i < ctl->nservices; i++) {
            mrd_metric_label l = {"service", ctl->services[i].name};
            mrd_metrics_sample_int(&b, &l, 1, (int64_t)ctl->services[i].epoch_catchups_total);
        }
    }
    diverge_metrics(ctl, &b);
    mrd__cutover_metrics(ctl, &b); /* drift, repairs, fencing (leader) */
    mrd__checkpoint_metrics(ctl, &b);
    if (b.err != 0) {
        mrd_metrics_buf_close(&b);
        mrd_http_respond_error(res, 500, "internal", "cannot format metrics");
        return;
    }
    mrd_http_respond(res, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    mrd_metrics_buf_close(&b);
}

static const mrd_http_route metric_routes[] = {
    {"GET", "/metrics", 0, h_metrics},
};

const mrd_http_route *mrd__metrics_routes(size_t *n)
{
    *n = sizeof(metric_routes) / sizeof(metric_routes[0]);
    return metric_routes;
}
