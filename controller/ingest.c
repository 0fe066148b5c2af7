/*
 * Heartbeat ingest: any controller, leader or not, accepts agents'
 * heartbeats (POST /v1/agent/heartbeat, role agent), answers from memory and
 * writes what they report to the store in batches.
 *
 * - The batch keeps the latest report per node (a newer heartbeat replaces
 *   the older one), so its size is bounded by the number of nodes, also
 *   while the store is down; a failed flush puts back every entry that no
 *   newer report replaced. Nothing but a newer report of the same node ever
 *   drops a report.
 * - A flush is one statement (multi-row upserts in CTEs over one JSON
 *   parameter) with the store's clock as last_seen; it runs every ~50 ms or
 *   as soon as a few hundred rows wait.
 * - A heartbeat from a node that hosts a primary member waits for the flush
 *   holding it and is answered "recorded": true once it committed (that is
 *   what keeps a primary writable, DESIGN.md); every other heartbeat, and
 *   every heartbeat while the store is unreachable, is answered at once.
 * - The answer (epochs, primaries, pending commands) comes from a cache
 *   refreshed from the store every tick, so followers serve agents as well
 *   as the leader does. Results of commands are acknowledged once the cache
 *   no longer lists the command as pending (the store has the result).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/error.h"
#include "meridian/protocol.h"

#define FLUSH_INTERVAL_MS 50
#define FLUSH_ROWS        300
#define MAX_PENDING_NODES 200000

struct mrd__waiter {
    mrd_http_response *res;
    json_t *answer; /* the answer to send, "recorded" filled at the end */
    mrd__waiter *next;
};

static void flush(mrd_ctl *ctl);

typedef struct {
    mrd_ctl *ctl;
    json_t *batch;
    mrd__waiter *waiters;
    size_t rows;
} flush_req;

void mrd__ingest_init(mrd_ctl *ctl)
{
    mrd__ingest *in = &ctl->ingest;
    memset(in, 0, sizeof(*in));
    in->batch = json_object();
    in->services = json_object();
    in->commands = json_object();
}

static void answer_waiters(mrd__waiter *w, int recorded)
{
    while (w) {
        mrd__waiter *next = w->next;
        json_object_set_new(w->answer, "recorded", json_boolean(recorded));
        mrd_http_respond_json(w->res, 200, w->answer);
        free(w);
        w = next;
    }
}

void mrd__ingest_close(mrd_ctl *ctl)
{
    mrd__ingest *in = &ctl->ingest;
    answer_waiters(in->waiters, 0);
    in->waiters = NULL;
    json_decref(in->batch);
    json_decref(in->services);
    json_decref(in->commands);
    in->batch = in->services = in->commands = NULL;
}

static json_t *member_row(const mrd_hb_request *r, const mrd_hb_member *m)
{
    json_t *row = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:I, s:I, s:I, s:I}", "service", m->service, "name",
        m->name, "node", r->node, "region", r->region, "role", mrd_member_role_name(m->role),
        "fenced", m->fenced, "healthy", m->healthy, "timeline", (json_int_t)m->timeline, "position",
        (json_int_t)m->position, "receive_position", (json_int_t)m->receive_position,
        "replay_position", (json_int_t)m->replay_position);
    if (row == NULL)
        return NULL;
    json_object_set_new(row, "lag_bytes",
                        m->lag_bytes < 0 ? json_null() : json_integer(m->lag_bytes));
    json_object_set_new(row, "lag_ms", m->lag_ms < 0 ? json_null() : json_integer(m->lag_ms));
    json_object_set_new(row, "replay_timestamp_ms",
                        m->replay_timestamp_ms > 0 ? json_integer(m->replay_timestamp_ms)
                                                   : json_null());
    int64_t epoch = 0;
    for (size_t i = 0; i < r->nepochs; i++)
        if (strcmp(r->epochs[i].service, m->service) == 0)
            epoch = r->epochs[i].epoch;
    json_object_set_new(row, "epoch_seen", json_integer(epoch));
    return row;
}

/* The store row of one heartbeat: {node: {...}, members: [...], results: [...]}. */
static json_t *entry_from_request(const mrd_hb_request *r)
{
    json_t *checks = json_array(), *probes = json_array(), *members = json_array(),
           *results = json_array();
    for (size_t i = 0; i < r->nchecks; i++)
        json_array_append_new(checks,
                              json_pack("{s:s, s:s, s:s, s:I}", "name", r->checks[i].name, "status",
                                        mrd_check_status_name(r->checks[i].status), "output",
                                        r->checks[i].output, "duration_ms",
                                        (json_int_t)r->checks[i].duration_ms));
    for (size_t i = 0; i < r->nprobes; i++)
        json_array_append_new(
            probes, json_pack("{s:s, s:s, s:b, s:f, s:s}", "region", r->probes[i].region, "target",
                              r->probes[i].target, "ok", r->probes[i].ok, "latency_ms",
                              r->probes[i].latency_ms, "error", r->probes[i].error));
    for (size_t i = 0; i < r->nmembers; i++)
        json_array_append_new(members, member_row(r, &r->members[i]));
    for (size_t i = 0; i < r->nresults; i++) {
        const mrd_hb_result *res = &r->results[i];
        json_array_append_new(
            results, json_pack("{s:s, s:s, s:{s:s, s:s, s:I, s:I}}", "id", res->id, "status",
                               mrd_result_status_name(res->status), "result", "status",
                               mrd_result_status_name(res->status), "error", res->error, "epoch",
                               (json_int_t)res->epoch, "position", (json_int_t)res->position));
    }
    return json_pack("{s:{s:s, s:s, s:I, s:o, s:o, s:s}, s:o, s:o}", "node", "name", r->node,
                     "region", r->region, "seq", (json_int_t)r->seq, "checks", checks, "probes",
                     probes, "api_url", r->api_url, "members", members, "results", results);
}

static size_t entry_rows(json_t *entry)
{
    return 1 + json_array_size(json_object_get(entry, "members")) +
           json_array_size(json_object_get(entry, "results"));
}

static const char *flush_sql =
    "WITH b AS (SELECT $1::jsonb AS j),"
    " n AS (INSERT INTO meridian.nodes AS t (name, region, seq, checks, probes, via, api_url,"
    "   last_seen)"
    "  SELECT DISTINCT ON (x.name) x.name, x.region, x.seq, x.checks, x.probes, $2,"
    "   NULLIF(x.api_url, ''), now()"
    "  FROM b, jsonb_to_recordset(b.j->'nodes') AS x(name text, region text, seq bigint,"
    "       checks jsonb, probes jsonb, api_url text)"
    "  ON CONFLICT (name) DO UPDATE SET region = EXCLUDED.region, seq = EXCLUDED.seq,"
    "   checks = EXCLUDED.checks, probes = EXCLUDED.probes, via = EXCLUDED.via,"
    "   api_url = EXCLUDED.api_url, last_seen = now()"
    "  RETURNING 1),"
    " m AS (INSERT INTO meridian.members AS t (service, name, node, region, role, fenced,"
    "   healthy, timeline, position, receive_position, replay_position, lag_bytes, lag_ms,"
    "   replay_timestamp, epoch_seen, last_seen)"
    "  SELECT DISTINCT ON (x.service, x.name) x.service, x.name, x.node, x.region, x.role,"
    "   x.fenced, x.healthy, x.timeline, x.position, x.receive_position, x.replay_position,"
    "   x.lag_bytes, x.lag_ms, to_timestamp(x.replay_timestamp_ms / 1000.0), x.epoch_seen, now()"
    "  FROM b, jsonb_to_recordset(b.j->'members') AS x(service text, name text, node text,"
    "   region text, role text, fenced boolean, healthy boolean, timeline bigint,"
    "   position numeric, receive_position numeric, replay_position numeric,"
    "   lag_bytes numeric, lag_ms bigint, replay_timestamp_ms bigint, epoch_seen bigint)"
    "  ON CONFLICT (service, name) DO UPDATE SET node = EXCLUDED.node, region = EXCLUDED.region,"
    "   role = EXCLUDED.role, fenced = EXCLUDED.fenced, healthy = EXCLUDED.healthy,"
    "   timeline = EXCLUDED.timeline, position = EXCLUDED.position,"
    "   receive_position = EXCLUDED.receive_position,"
    "   replay_position = EXCLUDED.replay_position, lag_bytes = EXCLUDED.lag_bytes,"
    "   lag_ms = EXCLUDED.lag_ms, replay_timestamp = EXCLUDED.replay_timestamp,"
    "   epoch_seen = EXCLUDED.epoch_seen, last_seen = now()"
    "  RETURNING 1),"
    " r AS (UPDATE meridian.commands c SET status = x.status, result = x.result,"
    "   finished_at = now()"
    "  FROM b, jsonb_to_recordset(b.j->'results') AS x(id text, status text, result jsonb)"
    "  WHERE c.id = x.id AND c.status = 'pending' RETURNING 1),"
    /* Tell the leader at once (it LISTENs) when something it waits for came in. */
    " t AS (SELECT pg_notify('meridian_ingest', $2) WHERE $3::boolean)"
    " SELECT (SELECT count(*) FROM n), (SELECT count(*) FROM m), (SELECT count(*) FROM r),"
    "  (SELECT count(*) FROM t)";

static void flush_done(int err, PGresult *res, void *data)
{
    flush_req *f = data;
    mrd_ctl *ctl = f->ctl;
    mrd__ingest *in = &ctl->ingest;
    (void)res;
    in->flushing = 0;
    if (err == 0) {
        in->rows_written += f->rows;
        answer_waiters(f->waiters, 1);
    } else {
        in->flush_failures++;
        if (err == MRD_EIO)
            mrd_log(MRD_LOG_WARN, "heartbeat flush failed",
                    MRD_S("error", PQresultErrorMessage(res)));
        answer_waiters(f->waiters, 0);
        /* Put back every report that no newer one replaced. */
        const char *node;
        json_t *entry;
        if (in->batch) {
            json_object_foreach(f->batch, node, entry)
            {
                if (json_object_get(in->batch, node) == NULL) {
                    json_object_set(in->batch, node, entry);
                    in->batch_rows += entry_rows(entry);
                }
            }
            if (in->first_pending_ms == 0 && json_object_size(in->batch) > 0)
                in->first_pending_ms = mrd__now_ms();
        }
    }
    json_decref(f->batch);
    free(f);
    /* Heartbeats that wait for a commit should not wait for the cron. */
    if (ctl->ingest.waiters != NULL || ctl->ingest.urgent)
        flush(ctl);
}

static void flush(mrd_ctl *ctl)
{
    mrd__ingest *in = &ctl->ingest;
    if (in->flushing)
        return;
    if (json_object_size(in->batch) == 0) {
        /* Never leave a heartbeat waiting for a batch that will not come. */
        answer_waiters(in->waiters, 0);
        in->waiters = NULL;
        return;
    }
    if (!mrd_pg_connected(ctl->pg) || !ctl->migrated) {
        /* Nobody may wait for a store that is not there. */
        answer_waiters(in->waiters, 0);
        in->waiters = NULL;
        return;
    }
    json_t *nodes = json_array(), *members = json_array(), *results = json_array();
    const char *node;
    json_t *entry;
    json_object_foreach(in->batch, node, entry)
    {
        json_array_append(nodes, json_object_get(entry, "node"));
        json_array_extend(members, json_object_get(entry, "members"));
        json_array_extend(results, json_object_get(entry, "results"));
    }
    int notify = in->urgent || json_array_size(results) > 0;
    json_t *doc =
        json_pack("{s:o, s:o, s:o}", "nodes", nodes, "members", members, "results", results);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    flush_req *f = calloc(1, sizeof(*f));
    if (text == NULL || f == NULL) {
        free(text);
        free(f);
        return;
    }
    f->ctl = ctl;
    f->batch = in->batch;
    f->waiters = in->waiters;
    f->rows = in->batch_rows;
    in->urgent = 0;
    in->batch = json_object();
    in->waiters = NULL;
    in->batch_rows = 0;
    in->first_pending_ms = 0;
    const char *params[3] = {text, ctl->cfg.name, notify ? "true" : "false"};
    int rc = mrd_pg_query(ctl->pg, flush_sql, 3, params, flush_done, f);
    free(text);
    if (rc != 0) {
        flush_done(rc, NULL, f);
        return;
    }
    in->flushing = 1;
}

/* Cache refresh: services' epochs and primaries, and pending commands. */
static const char *cache_sql =
    "SELECT json_build_object("
    " 'services', (SELECT coalesce(json_object_agg(s.name, json_build_object("
    "   'epoch', s.epoch, 'primary_region', s.primary_region,"
    "   'primary_member', s.primary_member,"
    "   'primary_position', coalesce((SELECT max(m.position) FROM meridian.members m"
    "     WHERE m.service = s.name AND m.region = s.primary_region AND m.role = 'primary'), 0)"
    "   )), '{}') FROM meridian.services s),"
    " 'commands', (SELECT coalesce(json_agg(json_build_object('id', c.id, 'service', c.service,"
    "   'member', c.member, 'node', c.node, 'kind', c.kind, 'epoch', c.epoch, 'args', c.args)"
    "   ORDER BY c.created_at), '[]') FROM meridian.commands c WHERE c.status = 'pending'))";

static void cache_done(int err, PGresult *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__ingest *in = &ctl->ingest;
    in->cache_in_flight = 0;
    if (err != 0 || PQntuples(res) != 1 || in->services == NULL)
        return;
    json_error_t jerr;
    json_t *doc = json_loads(PQgetvalue(res, 0, 0), 0, &jerr);
    if (doc == NULL)
        return;
    json_t *services = json_object_get(doc, "services");
    json_t *cmds = json_object_get(doc, "commands");
    json_t *by_node = json_object();
    size_t i;
    json_t *c;
    json_array_foreach(cmds, i, c)
    {
        const char *node = json_string_value(json_object_get(c, "node"));
        if (node == NULL)
            continue;
        json_t *list = json_object_get(by_node, node);
        if (list == NULL) {
            list = json_array();
            json_object_set_new(by_node, node, list);
        }
        json_object_del(c, "node");
        json_array_append(list, c);
    }
    json_decref(in->services);
    json_decref(in->commands);
    in->services = json_incref(services);
    in->commands = by_node;
    in->cache_refreshed_ms = mrd__now_ms();
    json_decref(doc);
}

void mrd__ingest_cache_command(mrd_ctl *ctl, const char *node, json_t *command)
{
    mrd__ingest *in = &ctl->ingest;
    json_t *list = json_object_get(in->commands, node);
    if (list == NULL) {
        list = json_array();
        json_object_set_new(in->commands, node, list);
    }
    const char *id = json_string_value(json_object_get(command, "id"));
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c)
    {
        if (id && json_equal(json_object_get(c, "id"), json_object_get(command, "id")))
            return;
    }
    json_array_append(list, command);
}

void mrd__ingest_cron(mrd_ctl *ctl, uint64_t now)
{
    mrd__ingest *in = &ctl->ingest;
    if (json_object_size(in->batch) > 0 &&
        (in->batch_rows >= FLUSH_ROWS || now >= in->first_pending_ms + FLUSH_INTERVAL_MS ||
         in->waiters != NULL || in->urgent))
        flush(ctl);
    if (!in->cache_in_flight && now >= in->cache_next_ms && mrd_pg_connected(ctl->pg) &&
        ctl->migrated) {
        if (mrd_pg_query(ctl->pg, cache_sql, 0, NULL, cache_done, ctl) == 0)
            in->cache_in_flight = 1;
        in->cache_next_ms = now + ctl->cfg.tick_ms;
    }
}

void mrd__ingest_refresh_now(mrd_ctl *ctl)
{
    ctl->ingest.cache_next_ms = 0;
    mrd__ingest_cron(ctl, mrd__now_ms());
}

/* Whether the node hosts a member that is a writable primary AND the one the
 * store names primary: only that member's contact is "recorded" (a primary
 * that came back after a failover must not be kept alive by its heartbeats).
 * A service the store does not know yet counts as the agent says. */
static int hosts_primary(mrd_ctl *ctl, const mrd_hb_request *r)
{
    for (size_t i = 0; i < r->nmembers; i++) {
        const mrd_hb_member *m = &r->members[i];
        if (m->role != MRD_MEMBER_PRIMARY || m->fenced)
            continue;
        json_t *s = json_object_get(ctl->ingest.services, m->service);
        const char *pm = json_string_value(json_object_get(s, "primary_member"));
        if (s == NULL || pm == NULL || strcmp(pm, m->name) == 0)
            return 1;
    }
    return 0;
}

/* The answer to a heartbeat, without "recorded" (added when sent). */
static json_t *build_answer(mrd_ctl *ctl, const mrd_hb_request *r)
{
    mrd__ingest *in = &ctl->ingest;
    json_t *services = json_object();
    for (size_t i = 0; i < r->nmembers; i++) {
        const char *svc = r->members[i].service;
        json_t *s = json_object_get(in->services, svc);
        if (s && json_object_get(services, svc) == NULL)
            json_object_set(services, svc, s);
    }
    json_t *commands = json_array();
    json_t *pending = json_object_get(in->commands, r->node);
    size_t i;
    json_t *c;
    json_array_foreach(pending, i, c) json_array_append(commands, c);
    json_t *ack = json_array();
    for (size_t k = 0; k < r->nresults; k++) {
        int still_pending = 0;
        json_array_foreach(pending, i, c)
        {
            if (strcmp(json_string_value(json_object_get(c, "id")), r->results[k].id) == 0)
                still_pending = 1;
        }
        /* Acknowledge only what the store has (the cache no longer lists it),
         * and only once the cache was refreshed at least once. */
        if (!still_pending && in->cache_refreshed_ms != 0)
            json_array_append_new(ack, json_string(r->results[k].id));
    }
    return json_pack("{s:I, s:o, s:o, s:o}", "heartbeat_ms", (json_int_t)ctl->heartbeat_ms,
                     "services", services, "commands", commands, "ack", ack);
}

void mrd__ingest_heartbeat(mrd_http_request *req, mrd_http_response *res, void *data)
{
    mrd_ctl *ctl = data;
    mrd__ingest *in = &ctl->ingest;
    size_t len;
    const char *body = mrd_http_request_body(req, &len);
    mrd_hb_request hb;
    char err[256];
    int rc = mrd_hb_request_parse(body, len, &hb, err, sizeof(err));
    if (rc != 0) {
        in->rejected++;
        mrd_http_respond_error(res, 400, "invalid_heartbeat", err);
        return;
    }
    in->heartbeats++;
    json_t *answer = build_answer(ctl, &hb);
    json_t *entry = entry_from_request(&hb);
    int primary = hosts_primary(ctl, &hb);
    if (entry == NULL || answer == NULL) {
        json_decref(entry);
        json_decref(answer);
        mrd_hb_request_free(&hb);
        mrd_http_respond_error(res, 500, "out_of_memory", "out of memory");
        return;
    }
    json_t *old = json_object_get(in->batch, hb.node);
    if (old == NULL && json_object_size(in->batch) >= MAX_PENDING_NODES) {
        json_decref(entry);
        json_decref(answer);
        mrd_hb_request_free(&hb);
        mrd_http_respond_error(res, 503, "overloaded", "too many unflushed heartbeats");
        return;
    }
    if (old)
        in->batch_rows -= entry_rows(old) <= in->batch_rows ? entry_rows(old) : in->batch_rows;
    in->batch_rows += entry_rows(entry);
    if (in->first_pending_ms == 0)
        in->first_pending_ms = mrd__now_ms();
    json_object_set_new(in->batch, hb.node, entry);
    int urgent = hb.urgent || hb.nresults > 0;
    mrd_hb_request_free(&hb);

    /* The waiter joins the batch that holds its report, before any flush. */
    mrd__waiter *w = NULL;
    if (primary && mrd_pg_connected(ctl->pg) && ctl->migrated && (w = malloc(sizeof(*w)))) {
        in->heartbeats_recorded++;
        w->res = res;
        w->answer = answer;
        w->next = in->waiters;
        in->waiters = w;
    }
    if (urgent || w) {
        /* A command result, an answer to a poke, or a primary waiting for its
         * record: flush now (a running flush is followed by another at once). */
        in->urgent = in->urgent || urgent;
        flush(ctl);
    }
    if (w == NULL) {
        json_object_set_new(answer, "recorded", json_false());
        mrd_http_respond_json(res, 200, answer);
    }
}
