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
 *   as soon as a few hundred rows wait, on a store connection of its own
 *   (ctl->pg_ingest), so it never queues behind the leader's snapshots.
 * - A heartbeat from a node that hosts a primary member waits for the flush
 *   holding it and is answered "recorded": true once it committed (that is
 *   what keeps a primary writable, docs/design.md); every other heartbeat, and
 *   every heartbeat while the store is unreachable, is answered at once.
 * - The answer (epochs, primaries, pending commands) comes from a cache
 *   refreshed from the store every tick, so followers serve agents as well
 *   as the leader does; each service's peer set comes from the configuration
 *   (peers.c). A primary's reported peer leases are stored with its member
 *   row; the required set is kept from the last report that carried one. Results of commands are
 * acknowledged once the cache no longer lists the command as pending (the store has the result).
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

/* ---- the store rows of one heartbeat, rendered as JSON text ----------
 * A heartbeat's rows are written as compact JSON text at once, from the
 * decoded request, and kept as text until the flush joins them: no JSON
 * tree per pending node, no serialisation of the whole batch at each flush.
 * The input was decoded from valid JSON, so its strings are valid UTF-8. */

typedef struct {
    char *p;
    size_t len, cap;
    int err;
} sbuf;

static void sb_raw(sbuf *b, const char *s, size_t n)
{
    if (b->err)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (q == NULL) {
            b->err = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_lit(sbuf *b, const char *s)
{
    sb_raw(b, s, strlen(s));
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static void sb_str(sbuf *b, const char *s)
{
    sb_raw(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sb_raw(b, run, (size_t)(s - run));
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_raw(b, esc, 2);
        } else {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sb_raw(b, esc, 6);
        }
        run = s + 1;
    }
    sb_raw(b, run, (size_t)(s - run));
    sb_raw(b, "\"", 1);
}

static void sb_key(sbuf *b, const char *key)
{
    int first = b->len == 0 || b->p[b->len - 1] == '{';
    sb_lit(b, first ? "\"" : ",\"");
    sb_lit(b, key);
    sb_raw(b, "\":", 2);
}

static void sb_kstr(sbuf *b, const char *key, const char *v)
{
    sb_key(b, key);
    sb_str(b, v);
}

static void sb_kint(sbuf *b, const char *key, long long v)
{
    char num[32];
    sb_key(b, key);
    sb_raw(b, num, (size_t)snprintf(num, sizeof(num), "%lld", v));
}

static void sb_kbool(sbuf *b, const char *key, int v)
{
    sb_key(b, key);
    sb_lit(b, v ? "true" : "false");
}

/* null when v is "" (none). */
static void sb_kstr_or_null(sbuf *b, const char *key, const char *v)
{
    if (v[0]) {
        sb_kstr(b, key, v);
    } else {
        sb_key(b, key);
        sb_lit(b, "null");
    }
}

/* null when v < 0 (unknown). */
static void sb_kint_or_null(sbuf *b, const char *key, long long v)
{
    if (v < 0) {
        sb_key(b, key);
        sb_lit(b, "null");
    } else {
        sb_kint(b, key, v);
    }
}

static void render_member(sbuf *b, const mrd_hb_request *r, const mrd_hb_member *m)
{
    int64_t epoch = 0;
    for (size_t i = 0; i < r->nepochs; i++)
        if (strcmp(r->epochs[i].service, m->service) == 0)
            epoch = r->epochs[i].epoch;
    sb_lit(b, "{");
    sb_kstr(b, "service", m->service);
    sb_kstr(b, "name", m->name);
    sb_kstr(b, "node", r->node);
    sb_kstr(b, "region", r->region);
    sb_kstr(b, "role", mrd_member_role_name(m->role));
    sb_kbool(b, "fenced", m->fenced);
    sb_kbool(b, "healthy", m->healthy);
    sb_kint(b, "timeline", m->timeline);
    sb_kint(b, "position", m->position);
    sb_kint(b, "receive_position", m->receive_position);
    sb_kint(b, "replay_position", m->replay_position);
    sb_kint_or_null(b, "lag_bytes", m->lag_bytes);
    sb_kint_or_null(b, "lag_ms", m->lag_ms);
    sb_kint_or_null(b, "replay_timestamp_ms",
                    m->replay_timestamp_ms > 0 ? m->replay_timestamp_ms : -1);
    sb_kint(b, "epoch_seen", epoch);
    sb_key(b, "standbys");
    sb_lit(b, "[");
    for (size_t i = 0; i < m->nstandbys && i < MRD_PROTO_MAX_STANDBYS; i++) {
        const mrd_hb_standby *s = &m->standbys[i];
        sb_lit(b, i ? ",{" : "{");
        sb_kstr(b, "name", s->name);
        sb_kstr_or_null(b, "address", s->address);
        sb_kstr(b, "state", s->state);
        sb_kstr_or_null(b, "sync_state", s->sync_state);
        sb_kint_or_null(b, "sent_position", s->sent_position > 0 ? s->sent_position : -1);
        sb_kint_or_null(b, "flush_position", s->flush_position > 0 ? s->flush_position : -1);
        sb_kint_or_null(b, "replay_position", s->replay_position > 0 ? s->replay_position : -1);
        sb_kint_or_null(b, "replay_lag_ms", s->replay_lag_ms);
        sb_lit(b, "}");
    }
    sb_lit(b, "]");
    /* a writable primary's peer leases (null: not reported; the store keeps the
     * last required set reported, see the flush) */
    for (int list = 0; list < 2; list++) {
        const mrd_hb_name *names = list ? m->leases_held : m->leases_required;
        size_t n = list ? m->nleases_held : m->nleases_required;
        sb_key(b, list ? "leases_held" : "leases_required");
        if (!m->have_leases) {
            sb_lit(b, "null");
            continue;
        }
        sb_lit(b, "[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                sb_lit(b, ",");
            sb_str(b, names[i].name);
        }
        sb_lit(b, "]");
    }
    sb_lit(b, "}");
}

/* The pending rows of one node: [rows, "node", "members", "results"], the
 * last three JSON texts (members and results: objects joined by commas). */
static json_t *entry_from_request(const mrd_hb_request *r)
{
    sbuf node = {0}, members = {0}, results = {0};
    char num[48];
    sb_lit(&node, "{");
    sb_kstr(&node, "name", r->node);
    sb_kstr(&node, "region", r->region);
    sb_kint(&node, "seq", r->seq);
    sb_kstr(&node, "api_url", r->api_url);
    sb_key(&node, "checks");
    sb_lit(&node, "[");
    for (size_t i = 0; i < r->nchecks; i++) {
        sb_lit(&node, i ? ",{" : "{");
        sb_kstr(&node, "name", r->checks[i].name);
        sb_kstr(&node, "status", mrd_check_status_name(r->checks[i].status));
        sb_kstr(&node, "output", r->checks[i].output);
        sb_kint(&node, "duration_ms", r->checks[i].duration_ms);
        sb_lit(&node, "}");
    }
    sb_lit(&node, "]");
    sb_key(&node, "probes");
    sb_lit(&node, "[");
    for (size_t i = 0; i < r->nprobes; i++) {
        sb_lit(&node, i ? ",{" : "{");
        sb_kstr(&node, "region", r->probes[i].region);
        sb_kstr(&node, "target", r->probes[i].target);
        sb_kbool(&node, "ok", r->probes[i].ok);
        sb_key(&node, "latency_ms");
        sb_raw(&node, num, (size_t)snprintf(num, sizeof(num), "%.3f", r->probes[i].latency_ms));
        sb_kstr(&node, "error", r->probes[i].error);
        sb_lit(&node, "}");
    }
    sb_lit(&node, "]}");
    for (size_t i = 0; i < r->nmembers; i++) {
        if (i)
            sb_lit(&members, ",");
        render_member(&members, r, &r->members[i]);
    }
    for (size_t i = 0; i < r->nresults; i++) {
        const mrd_hb_result *x = &r->results[i];
        sb_lit(&results, i ? ",{" : "{");
        sb_kstr(&results, "id", x->id);
        sb_kstr(&results, "status", mrd_result_status_name(x->status));
        sb_key(&results, "result");
        sb_lit(&results, "{");
        sb_kstr(&results, "status", mrd_result_status_name(x->status));
        sb_kstr(&results, "error", x->error);
        sb_kint(&results, "epoch", x->epoch);
        sb_kint(&results, "position", x->position);
        sb_lit(&results, "}}");
    }
    json_t *entry = NULL;
    if (!node.err && !members.err && !results.err)
        entry = json_pack("[I, s#, s#, s#]", (json_int_t)(1 + r->nmembers + r->nresults), node.p,
                          (int)node.len, members.p ? members.p : "", (int)members.len,
                          results.p ? results.p : "", (int)results.len);
    free(node.p);
    free(members.p);
    free(results.p);
    return entry;
}

static size_t entry_rows(json_t *entry)
{
    return (size_t)json_integer_value(json_array_get(entry, 0));
}

static const char *flush_sql =
    "WITH b AS (SELECT $1::json AS j),"
    " n AS (INSERT INTO meridian.nodes AS t (name, region, seq, checks, probes, via, api_url,"
    "   last_seen)"
    "  SELECT DISTINCT ON (x.name) x.name, x.region, x.seq, x.checks, x.probes, $2,"
    "   NULLIF(x.api_url, ''), now()"
    "  FROM b, json_to_recordset(b.j->'nodes') AS x(name text, region text, seq bigint,"
    "       checks jsonb, probes jsonb, api_url text)"
    "  ON CONFLICT (name) DO UPDATE SET region = EXCLUDED.region, seq = EXCLUDED.seq,"
    "   checks = EXCLUDED.checks, probes = EXCLUDED.probes, via = EXCLUDED.via,"
    "   api_url = EXCLUDED.api_url, last_seen = now()"
    "  RETURNING 1),"
    " m AS (INSERT INTO meridian.members AS t (service, name, node, region, role, fenced,"
    "   healthy, timeline, position, receive_position, replay_position, lag_bytes, lag_ms,"
    "   replay_timestamp, epoch_seen, standbys, leases_required, leases_held, last_seen)"
    "  SELECT DISTINCT ON (x.service, x.name) x.service, x.name, x.node, x.region, x.role,"
    "   x.fenced, x.healthy, x.timeline, x.position, x.receive_position, x.replay_position,"
    "   x.lag_bytes, x.lag_ms, to_timestamp(x.replay_timestamp_ms / 1000.0), x.epoch_seen,"
    "   coalesce(x.standbys, '[]'), x.leases_required, x.leases_held, now()"
    "  FROM b, json_to_recordset(b.j->'members') AS x(service text, name text, node text,"
    "   region text, role text, fenced boolean, healthy boolean, timeline bigint,"
    "   position numeric, receive_position numeric, replay_position numeric,"
    "   lag_bytes numeric, lag_ms bigint, replay_timestamp_ms bigint, epoch_seen bigint,"
    "   standbys jsonb, leases_required jsonb, leases_held jsonb)"
    "  ON CONFLICT (service, name) DO UPDATE SET node = EXCLUDED.node, region = EXCLUDED.region,"
    "   role = EXCLUDED.role, fenced = EXCLUDED.fenced, healthy = EXCLUDED.healthy,"
    "   timeline = EXCLUDED.timeline, position = EXCLUDED.position,"
    "   receive_position = EXCLUDED.receive_position,"
    "   replay_position = EXCLUDED.replay_position, lag_bytes = EXCLUDED.lag_bytes,"
    "   lag_ms = EXCLUDED.lag_ms, replay_timestamp = EXCLUDED.replay_timestamp,"
    "   epoch_seen = EXCLUDED.epoch_seen, standbys = EXCLUDED.standbys,"
    "   leases_required = coalesce(EXCLUDED.leases_required, t.leases_required),"
    "   leases_held = EXCLUDED.leases_held, last_seen = now()"
    "  RETURNING 1),"
    " r AS (UPDATE meridian.commands c SET status = x.status, result = x.result,"
    "   finished_at = now()"
    "  FROM b, json_to_recordset(b.j->'results') AS x(id text, status text, result jsonb)"
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
    if (!mrd_pg_connected(ctl->pg_ingest) || !ctl->migrated) {
        /* Nobody may wait for a store that is not there. */
        answer_waiters(in->waiters, 0);
        in->waiters = NULL;
        return;
    }
    /* {"nodes": [...], "members": [...], "results": [...]} from the texts */
    sbuf nodes = {0}, members = {0}, results = {0};
    const char *node;
    json_t *entry;
    json_object_foreach(in->batch, node, entry)
    {
        const char *n = json_string_value(json_array_get(entry, 1));
        const char *m = json_string_value(json_array_get(entry, 2));
        const char *r = json_string_value(json_array_get(entry, 3));
        sb_lit(&nodes, nodes.len ? "," : "{\"nodes\":[");
        sb_lit(&nodes, n ? n : "{}");
        if (m && m[0]) {
            sb_lit(&members, members.len ? "," : "");
            sb_lit(&members, m);
        }
        if (r && r[0]) {
            sb_lit(&results, results.len ? "," : "");
            sb_lit(&results, r);
        }
    }
    int notify = in->urgent || results.len > 0;
    sb_lit(&nodes, "],\"members\":[");
    sb_raw(&nodes, members.p ? members.p : "", members.len);
    sb_lit(&nodes, "],\"results\":[");
    sb_raw(&nodes, results.p ? results.p : "", results.len);
    sb_lit(&nodes, "]}");
    free(members.p);
    free(results.p);
    char *text = nodes.err || members.err || results.err ? NULL : nodes.p;
    if (text == NULL)
        free(nodes.p);
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
    int rc = mrd_pg_query(ctl->pg_ingest, flush_sql, 3, params, flush_done, f);
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

/* Whether the node hosts a member that is a primary AND the one the store
 * names primary: only that member's contact is "recorded" (a primary that
 * came back after a failover must not be kept alive by its heartbeats). A
 * service the store does not know yet counts as the agent says. A primary
 * that fenced itself (isolated, e.g. while the store failed over) counts
 * too: the leader unfences the store's primary when it is heard from again,
 * and without a recorded contact its agent would fence it again at once,
 * for ever. Recording it changes nothing the leader decides from (its
 * last_seen is written either way). */
static int hosts_primary(mrd_ctl *ctl, const mrd_hb_request *r)
{
    for (size_t i = 0; i < r->nmembers; i++) {
        const mrd_hb_member *m = &r->members[i];
        if (m->role != MRD_MEMBER_PRIMARY && !(m->role == MRD_MEMBER_FENCED && m->fenced))
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
        if (s == NULL || json_object_get(services, svc) != NULL)
            continue;
        /* the peer set comes from this controller's configuration */
        json_t *peers = mrd__peers_for(ctl, svc, r->node);
        json_t *copy = peers ? json_copy(s) : NULL;
        if (copy) {
            json_object_set(copy, "peers", peers);
            json_object_set_new(services, svc, copy);
        } else {
            json_object_set(services, svc, s);
        }
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
    if (primary && mrd_pg_connected(ctl->pg_ingest) && ctl->migrated && (w = malloc(sizeof(*w)))) {
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
