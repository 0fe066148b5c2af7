/*
 * Data-sync checkpoints, the store side. Called from cron() every few tens
 * of ms (mrd__checkpoint_cron) and by the API (checkpoint_store.h).
 *
 * - Every controller refreshes one state document from the store (services,
 *   members, pending checkpoints, recovery points; one statement) every
 *   tick_ms when leader, every 100 ms while long-polls wait (and after each
 *   of its own heartbeat flushes), else every second; the result feeds the
 *   metrics and re-checks the waiting long-polls, so a follower answers as
 *   soon as the store shows the positions, without waiting for the leader.
 * - The leader additionally: creates automatic checkpoints per service every
 *   checkpoint_interval_ms (not while an operation runs, only from a fresh
 *   report of a writable primary); persists the regions the refresh found
 *   reached (sticky marks), completes checkpoints every region reached, and
 *   marks lost the old-epoch ones the promoted primary never reached; and
 *   deletes checkpoints older than checkpoint_retention_ms in batches of
 *   1000 (one statement at a time, so heartbeat flushes interleave), keeping
 *   each region's recovery point. Every write is guarded by is_leader().
 *   While somebody likely waits for a checkpoint (a local long-poll, or an
 *   on-demand one younger than 60 s), it pokes the agents of the regions
 *   that have not reached it for a fresh report (mrd__poke, rate-limited).
 * - Long-polls wait in memory; a 50 ms timer answers them at their deadline,
 *   drops clients that left, and at stop answers everything (503) and frees
 *   the state. A failed query is retried at the next period; nothing here
 *   decides a failover, so a lost write only delays marks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_store.h"
#include "meridian/error.h"
#include "meridian/json_async.h"
#include "meridian/position.h"

#define WINDOW          200
#define RETENTION_BATCH 1000
#define RETENTION_EVERY 1000
#define LEADER_EVERY    1000
#define FOLLOWER_EVERY  1000
#define WAITING_EVERY   100
#define TIMER_MS        50
#define CREATE_RETRY_MS 100
#define MAX_MEMBERS     256
#define MAX_WAITERS     10000

typedef struct ckpt_waiter {
    mrd_http_response *res;
    char service[MRD_NAME_MAX];
    uint64_t id;
    char regions[MRD__CKPT_MAX_REGIONS][MRD_NAME_MAX];
    size_t nregions;
    uint64_t deadline_ms;
    json_t *last;
    struct ckpt_waiter *next;
} ckpt_waiter;

typedef struct ckpt_create {
    mrd_ctl *ctl;
    mrd_http_response *res;
    char service[MRD_NAME_MAX];
    int has_position;
    uint64_t position;
    char actor[MRD_NAME_MAX];
    int leader_guard;
    uint64_t deadline_ms;
    uint64_t retry_ms;
    int busy; /* a query runs for it */
    struct ckpt_create *next;
} ckpt_create;

typedef struct {
    int known;
    int has_rp;
    uint64_t rp_ms;
    int has_lag;
    uint64_t lag_bytes;
} ckpt_gauge;

typedef struct mrd__ckpt_state {
    mrd_ctl *ctl;
    uv_timer_t timer;
    ckpt_waiter *waiters;
    size_t nwaiters;
    ckpt_create *creates;
    int refresh_busy, refresh_wanted;
    uint64_t next_refresh_ms;
    uint64_t seen_rows;
    int auto_busy, retention_busy;
    uint64_t next_retention_ms;
    uint64_t *next_auto_ms;        /* per service */
    const mrd__service *sized_for; /* ctl->services the arrays match (a reload swaps it) */
    size_t nsized;
    int64_t auto_term; /* term the schedule belongs to */
    /* metrics: per service x region of the configuration */
    ckpt_gauge *gauges;
    uint64_t gauges_now_ms;  /* store clock of the last refresh */
    uint64_t gauges_mono_ms; /* monotonic time of it */
} ckpt_state;

/* ---- small helpers ----------------------------------------------------- */

static uint64_t jnum(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
    if (json_is_string(v))
        return strtoull(json_string_value(v), NULL, 10);
    if (json_is_real(v))
        return json_real_value(v) > 0 ? (uint64_t)json_real_value(v) : 0;
    return 0;
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* ---- the state document's index -------------------------------------------
 * The document lists rows of every service; evaluating one service must not
 * scan the rows of all of them (1,000 services x 10,000 members every tick
 * was quadratic). doc_index() adds, once per document, objects keyed by
 * service: "ix_services" (name -> row), "ix_members", "ix_recovery" and
 * "ix_checkpoints" (service -> array of its rows, in document order). They
 * hold references to the same rows and go with the document. */

static void index_by(json_t *doc, const char *key, const char *by, json_t *ix, int list)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, key), i, e)
    {
        const char *name = jstr(e, by);
        if (!list) {
            json_object_set(ix, name, e);
            continue;
        }
        json_t *arr = json_object_get(ix, name);
        if (arr == NULL) {
            arr = json_array();
            json_object_set_new(ix, name, arr);
        }
        json_array_append(arr, e);
    }
}

static void doc_index(json_t *doc)
{
    json_t *services = json_object(), *members = json_object(), *recovery = json_object(),
           *ckpts = json_object();
    index_by(doc, "services", "name", services, 0);
    index_by(doc, "members", "service", members, 1);
    index_by(doc, "recovery", "service", recovery, 1);
    index_by(doc, "checkpoints", "service", ckpts, 1);
    json_object_set_new(doc, "ix_services", services);
    json_object_set_new(doc, "ix_members", members);
    json_object_set_new(doc, "ix_recovery", recovery);
    json_object_set_new(doc, "ix_checkpoints", ckpts);
}

/* The rows of one service under an index key (an empty array: none). */
static json_t *doc_rows(json_t *doc, const char *ix, const char *service)
{
    return json_object_get(json_object_get(doc, ix), service);
}

static json_t *time_json(uint64_t ms)
{
    char buf[40];
    return ms ? json_string(mrd__ckpt_time_format(ms, buf, sizeof(buf))) : json_null();
}

static json_t *pos_text(uint64_t pos)
{
    char buf[MRD_POS_STRLEN];
    mrd_pos_format(pos, buf, sizeof(buf));
    return json_string(buf);
}

/* The distinct regions of a service's configured members, in config order. */
static size_t service_regions(const mrd__service *s, char (*out)[MRD_NAME_MAX], size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nmembers; i++) {
        size_t k;
        for (k = 0; k < n; k++)
            if (strcmp(out[k], s->members[i].region) == 0)
                break;
        if (k == n && n < max)
            snprintf(out[n++], MRD_NAME_MAX, "%s", s->members[i].region);
    }
    return n;
}

static int service_index(mrd_ctl *ctl, const mrd__service *s)
{
    return (int)(s - ctl->services);
}

/* Service-level keys checkpoint_interval_ms / checkpoint_retention_ms (the
 * config's services[i] is ctl->services[i]). */
static uint64_t service_key(mrd_ctl *ctl, size_t i, const char *key, uint64_t def)
{
    json_t *o = json_array_get(json_object_get(ctl->cfg_json, "services"), i);
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : def;
}

/* ---- reading the state document ----------------------------------------
 * Members of services the store knows only: agents may report members of
 * services that are not configured (yet); they have no checkpoints, and a
 * large fleet of them must not make every refresh read them all. */

static const char *state_sql =
    "SELECT json_build_object("
    " 'now_ms', (extract(epoch FROM clock_timestamp()) * 1000)::bigint,"
    " 'services', (SELECT coalesce(json_agg(json_build_object('name', s.name,"
    "   'epoch', s.epoch, 'primary_region', s.primary_region,"
    "   'primary_member', s.primary_member)), '[]')"
    "   FROM meridian.services s WHERE $1 = '' OR s.name = $1),"
    " 'members', (SELECT coalesce(json_agg(json_build_object('service', m.service,"
    "   'name', m.name, 'region', m.region, 'role', m.role, 'fenced', m.fenced,"
    "   'timeline', m.timeline, 'epoch_seen', m.epoch_seen,"
    "   'position', m.position::text, 'replay_position', m.replay_position::text,"
    "   'lag_ms', m.lag_ms,"
    "   'seen_ms', (extract(epoch FROM m.last_seen) * 1000)::bigint)), '[]')"
    "   FROM meridian.members m WHERE m.service IN (SELECT name FROM meridian.services)"
    "    AND ($1 = '' OR m.service = $1)),"
    " 'checkpoints', (SELECT coalesce(json_agg(json_build_object('id', c.id,"
    "   'service', c.service, 'epoch', c.epoch, 'timeline', c.timeline,"
    "   'position', c.position::text, 'kind', c.kind, 'actor', c.actor,"
    "   'operation_id', c.operation_id, 'primary_region', c.primary_region,"
    "   'created_ms', (extract(epoch FROM c.created_at) * 1000)::bigint,"
    "   'position_at_ms', (extract(epoch FROM c.position_at) * 1000)::bigint,"
    "   'complete', c.complete, 'lost', c.lost, 'lost_operation_id', c.lost_operation_id,"
    "   'lost_at_ms', (extract(epoch FROM c.lost_at) * 1000)::bigint,"
    "   'reached', (SELECT coalesce(json_object_agg(r.region,"
    "     (extract(epoch FROM r.reached_at) * 1000)::bigint), '{}')"
    "     FROM meridian.checkpoint_reached r WHERE r.checkpoint_id = c.id))"
    "   ORDER BY c.id), '[]')"
    "   FROM meridian.checkpoints c WHERE c.id IN ("
    "    SELECT w.id FROM meridian.services s, LATERAL (SELECT c2.id"
    "     FROM meridian.checkpoints c2 WHERE c2.service = s.name AND NOT c2.complete"
    "     ORDER BY c2.id DESC LIMIT $3::int) w WHERE $1 = '' OR s.name = $1"
    "    UNION SELECT x::bigint FROM jsonb_array_elements_text($2::jsonb) x)),"
    " 'recovery', (SELECT coalesce(json_agg(json_build_object('service', sr.service,"
    "   'region', sr.region, 'id', x.id,"
    "   'position_at_ms', (extract(epoch FROM x.position_at) * 1000)::bigint)), '[]')"
    "   FROM (SELECT DISTINCT m.service, m.region FROM meridian.members m"
    "    WHERE m.service IN (SELECT name FROM meridian.services)"
    "     AND ($1 = '' OR m.service = $1)) sr,"
    "   LATERAL (SELECT c.id, c.position_at FROM meridian.checkpoint_reached r"
    "    JOIN meridian.checkpoints c ON c.id = r.checkpoint_id"
    "    WHERE r.service = sr.service AND r.region = sr.region AND NOT c.lost"
    "     AND c.position_at IS NOT NULL ORDER BY r.checkpoint_id DESC LIMIT 1) x))";

typedef struct {
    mrd_ctl *ctl;
    mrd__ckpt_state_cb cb;
    void *data;
} state_req;

/* The document, parsed and indexed on the thread pool (it lists every
 * member of every service: megabytes for a large fleet). */
static void state_parsed(json_t *doc, void *data)
{
    state_req *q = data;
    q->cb(doc ? 0 : MRD_EPARSE, doc, q->data);
    mrd_json_release_async(q->ctl->loop, doc);
    free(q);
}

static void state_done(int err, PGresult *res, void *data)
{
    state_req *q = data;
    json_t *doc = NULL;
    if (err == 0 && PQntuples(res) == 1) {
        err = mrd_json_parse_async(q->ctl->loop, PQgetvalue(res, 0, 0),
                                   (size_t)PQgetlength(res, 0, 0), doc_index, state_parsed, q);
        if (err == 0)
            return;
    } else if (err == 0) {
        err = MRD_EIO;
    } else if (err == MRD_EIO) {
        mrd_log(MRD_LOG_WARN, "checkpoint state query failed",
                MRD_S("error", PQresultErrorMessage(res)));
    }
    q->cb(err, doc, q->data);
    json_decref(doc);
    free(q);
}

int mrd__ckpt_state_query(mrd_ctl *ctl, const char *service, const char *ids_json, int window,
                          mrd__ckpt_state_cb cb, void *data)
{
    state_req *q = malloc(sizeof(*q));
    if (q == NULL)
        return MRD_ENOMEM;
    q->ctl = ctl;
    q->cb = cb;
    q->data = data;
    char w[16];
    snprintf(w, sizeof(w), "%d", window);
    const char *params[3] = {service, ids_json, w};
    int rc = mrd_pg_query(ctl->pg, state_sql, 3, params, state_done, q);
    if (rc != 0)
        free(q);
    return rc;
}

/* Members of service in doc; *primary_idx: index of primary_member or -1. */
static size_t doc_members(json_t *doc, const char *service, const char *primary_member,
                          mrd__ckpt_member *out, size_t max, int *primary_idx)
{
    size_t n = 0, i;
    json_t *m;
    *primary_idx = -1;
    json_array_foreach(doc_rows(doc, "ix_members", service), i, m)
    {
        if (n >= max)
            continue;
        mrd__ckpt_member *x = &out[n];
        memset(x, 0, sizeof(*x));
        snprintf(x->region, sizeof(x->region), "%s", jstr(m, "region"));
        if (mrd_role_parse(jstr(m, "role"), &x->role) != 0)
            x->role = MRD_ROLE_UNKNOWN;
        x->fenced = json_is_true(json_object_get(m, "fenced"));
        x->timeline = jnum(m, "timeline");
        x->epoch_seen = jnum(m, "epoch_seen");
        x->position = jnum(m, "position");
        x->replay_position = jnum(m, "replay_position");
        x->seen_ms = jnum(m, "seen_ms");
        if (primary_member && strcmp(jstr(m, "name"), primary_member) == 0)
            *primary_idx = (int)n;
        n++;
    }
    return n;
}

static void ckpt_from_json(const json_t *j, mrd__ckpt *c)
{
    memset(c, 0, sizeof(*c));
    c->id = jnum(j, "id");
    c->epoch = jnum(j, "epoch");
    c->timeline = jnum(j, "timeline");
    c->position = jnum(j, "position");
    c->created_ms = jnum(j, "created_ms");
    c->lost = json_is_true(json_object_get(j, "lost"));
}

/* What evaluating one checkpoint needs from the document. */
typedef struct {
    mrd__ckpt_service svc;
    mrd__ckpt_member ms[MAX_MEMBERS];
    size_t nms;
    int primary_idx;
    int found;
} doc_service;

static void doc_service_load(json_t *doc, const char *service, doc_service *d)
{
    json_t *row = doc_rows(doc, "ix_services", service);
    memset(&d->svc, 0, sizeof(d->svc));
    d->found = row != NULL;
    d->svc.epoch = jnum(row, "epoch");
    snprintf(d->svc.primary_region, sizeof(d->svc.primary_region), "%s",
             jstr(row, "primary_region"));
    d->nms = doc_members(doc, service, row ? jstr(row, "primary_member") : NULL, d->ms, MAX_MEMBERS,
                         &d->primary_idx);
}

/* Fills marks (one per region) from the checkpoint's stored marks and
 * evaluates it. Returns the number reached. */
static size_t evaluate(const doc_service *d, json_t *cj, const mrd__ckpt *c,
                       char (*regions)[MRD_NAME_MAX], size_t nregions, mrd__ckpt_mark *marks)
{
    json_t *reached = json_object_get(cj, "reached");
    for (size_t i = 0; i < nregions; i++) {
        memset(&marks[i], 0, sizeof(marks[i]));
        snprintf(marks[i].region, sizeof(marks[i].region), "%s", regions[i]);
        json_t *at = json_object_get(reached, regions[i]);
        if (at) {
            marks[i].marked = 1;
            marks[i].at_ms = jnum(reached, regions[i]);
        }
    }
    return mrd__ckpt_evaluate(c, &d->svc, d->ms, d->nms, marks, nregions);
}

static json_t *find_ckpt(json_t *doc, uint64_t id)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(doc, "checkpoints"), i, c)
    {
        if (jnum(c, "id") == id)
            return c;
    }
    return NULL;
}

json_t *mrd__ckpt_answer(mrd_ctl *ctl, json_t *doc, const char *service, uint64_t id,
                         char (*regions)[MRD_NAME_MAX], size_t nregions, int *status, int *done)
{
    *done = 0;
    *status = 404;
    json_t *cj = find_ckpt(doc, id);
    mrd__service *s = mrd__service_find(ctl, service);
    if (cj == NULL || s == NULL || strcmp(jstr(cj, "service"), service) != 0)
        return NULL;
    doc_service *d = malloc(sizeof(*d));
    if (d == NULL)
        return NULL;
    doc_service_load(doc, service, d);
    char all[MRD__CKPT_MAX_REGIONS][MRD_NAME_MAX];
    size_t nall = service_regions(s, all, MRD__CKPT_MAX_REGIONS);
    mrd__ckpt c;
    ckpt_from_json(cj, &c);
    mrd__ckpt_mark marks[MRD__CKPT_MAX_REGIONS];
    evaluate(d, cj, &c, all, nall, marks);
    free(d);
    json_t *reached = json_object(), *pending = json_array();
    for (size_t i = 0; i < nall; i++)
        if (marks[i].reached)
            json_object_set_new(reached, marks[i].region, time_json(marks[i].at_ms));
    if (nregions == 0) {
        regions = all;
        nregions = nall;
    }
    for (size_t i = 0; i < nregions; i++)
        if (json_object_get(reached, regions[i]) == NULL)
            json_array_append_new(pending, json_string(regions[i]));
    int complete = json_array_size(pending) == 0 && !c.lost;
    *done = complete || c.lost;
    *status = 200;
    json_t *o = json_pack(
        "{s:I, s:s, s:s, s:I, s:o, s:I, s:I, s:o, s:o, s:s, s:o, s:o, s:b, s:b}", "id",
        (json_int_t)c.id, "service", service, "kind", jstr(cj, "kind"), "position",
        (json_int_t)c.position, "position_text", pos_text(c.position), "epoch", (json_int_t)c.epoch,
        "timeline", (json_int_t)c.timeline, "created_at", time_json(c.created_ms), "position_at",
        time_json(jnum(cj, "position_at_ms")), "actor", jstr(cj, "actor"), "reached", reached,
        "pending", pending, "complete", complete, "lost", c.lost);
    if (o == NULL)
        return NULL;
    json_t *op = json_object_get(cj, "operation_id");
    json_object_set(o, "operation_id", op ? op : json_null());
    if (c.lost) {
        json_t *lop = json_object_get(cj, "lost_operation_id");
        json_object_set(o, "lost_operation_id", lop ? lop : json_null());
        json_object_set_new(o, "lost_at", time_json(jnum(cj, "lost_at_ms")));
    }
    return o;
}

/* ---- recovery points ----------------------------------------------------- */

typedef struct {
    char region[MRD_NAME_MAX];
    int primary;
    int has_rp;
    uint64_t rp_ms, rp_id;
    int has_lag;
    uint64_t lag_bytes;
    int has_lag_ms;
    uint64_t lag_ms;
} rec_region;

static size_t recovery_compute(mrd_ctl *ctl, json_t *doc, const mrd__service *s, rec_region *out)
{
    char regions[MRD__CKPT_MAX_REGIONS][MRD_NAME_MAX];
    size_t nr = service_regions(s, regions, MRD__CKPT_MAX_REGIONS);
    doc_service *d = malloc(sizeof(*d));
    (void)ctl;
    if (d == NULL)
        return 0;
    doc_service_load(doc, s->name, d);
    uint64_t ppos = 0;
    if (d->primary_idx >= 0 && d->ms[d->primary_idx].role == MRD_ROLE_PRIMARY)
        ppos = d->ms[d->primary_idx].position;
    for (size_t i = 0; i < nr; i++) {
        rec_region *r = &out[i];
        memset(r, 0, sizeof(*r));
        snprintf(r->region, sizeof(r->region), "%s", regions[i]);
        r->primary = strcmp(regions[i], d->svc.primary_region) == 0;
        size_t k;
        json_t *e;
        json_array_foreach(doc_rows(doc, "ix_recovery", s->name), k, e)
        {
            if (strcmp(jstr(e, "region"), regions[i]) == 0) {
                r->has_rp = 1;
                r->rp_ms = jnum(e, "position_at_ms");
                r->rp_id = jnum(e, "id");
            }
        }
        uint64_t held = 0;
        int any = 0;
        json_t *members = doc_rows(doc, "ix_members", s->name);
        for (size_t m = 0; m < d->nms; m++) {
            if (strcmp(d->ms[m].region, regions[i]) != 0)
                continue;
            uint64_t h = mrd__ckpt_member_held(&d->ms[m]);
            if (h > held)
                held = h;
            any = 1;
        }
        json_array_foreach(members, k, e)
        {
            json_t *lm = json_object_get(e, "lag_ms");
            if (strcmp(jstr(e, "region"), regions[i]) != 0 || !json_is_integer(lm))
                continue;
            if (!r->has_lag_ms || (uint64_t)json_integer_value(lm) < r->lag_ms)
                r->lag_ms = (uint64_t)json_integer_value(lm);
            r->has_lag_ms = 1;
        }
        if (r->primary) {
            r->has_lag = any;
            r->lag_bytes = 0;
            r->has_lag_ms = any;
            r->lag_ms = 0;
        } else if (ppos != 0 && any) {
            r->has_lag = 1;
            r->lag_bytes = mrd_pos_lag_bytes(ppos, held);
        }
    }
    /* Pending checkpoints the store has no mark of yet. */
    size_t k;
    json_t *cj;
    json_array_foreach(doc_rows(doc, "ix_checkpoints", s->name), k, cj)
    {
        uint64_t pat = jnum(cj, "position_at_ms");
        if (pat == 0)
            continue;
        mrd__ckpt c;
        ckpt_from_json(cj, &c);
        if (c.lost)
            continue;
        mrd__ckpt_mark marks[MRD__CKPT_MAX_REGIONS];
        evaluate(d, cj, &c, regions, nr, marks);
        for (size_t i = 0; i < nr; i++)
            if (marks[i].reached && (!out[i].has_rp || pat > out[i].rp_ms)) {
                out[i].has_rp = 1;
                out[i].rp_ms = pat;
                out[i].rp_id = c.id;
            }
    }
    free(d);
    return nr;
}

json_t *mrd__ckpt_recovery_json(mrd_ctl *ctl, json_t *doc, const mrd__service *s)
{
    rec_region r[MRD__CKPT_MAX_REGIONS];
    size_t n = recovery_compute(ctl, doc, s, r);
    uint64_t now = jnum(doc, "now_ms");
    json_t *regions = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s, s:b}", "region", r[i].region, "primary", r[i].primary);
        json_object_set_new(o, "recovery_point", r[i].has_rp ? time_json(r[i].rp_ms) : json_null());
        json_object_set_new(o, "checkpoint_id",
                            r[i].has_rp ? json_integer((json_int_t)r[i].rp_id) : json_null());
        json_object_set_new(o, "rpo_seconds",
                            r[i].has_rp
                                ? json_real(now > r[i].rp_ms ? (now - r[i].rp_ms) / 1000.0 : 0.0)
                                : json_null());
        json_object_set_new(o, "lag_bytes",
                            r[i].has_lag ? json_integer((json_int_t)r[i].lag_bytes) : json_null());
        json_object_set_new(o, "lag_seconds",
                            r[i].has_lag_ms ? json_real(r[i].lag_ms / 1000.0) : json_null());
        json_array_append_new(regions, o);
    }
    json_t *row = doc_rows(doc, "ix_services", s->name);
    return json_pack("{s:s, s:I, s:s, s:o, s:I, s:o}", "service", s->name, "epoch",
                     (json_int_t)jnum(row, "epoch"), "primary_region", jstr(row, "primary_region"),
                     "now", time_json(now), "checkpoint_interval_ms",
                     (json_int_t)service_key(ctl, (size_t)service_index(ctl, s),
                                             "checkpoint_interval_ms",
                                             MRD__CKPT_DEFAULT_INTERVAL_MS),
                     "regions", regions);
}

/* ---- state, timer, waiters ------------------------------------------------ */

static void answer_waiter(ckpt_waiter *w, int status)
{
    if (status == 200 && w->last) {
        mrd_http_respond_json(w->res, 200, w->last);
        w->last = NULL;
    } else if (status == 404) {
        mrd_http_respond_error(w->res, 404, "not_found", "no such checkpoint (removed meanwhile)");
    } else {
        mrd_http_respond_error(w->res, 503, "shutting_down", "the controller is stopping");
    }
    json_decref(w->last);
    free(w);
}

static void state_closed(uv_handle_t *h)
{
    ckpt_state *st = h->data;
    free(st->next_auto_ms);
    free(st->gauges);
    free(st);
}

static void stop_all(ckpt_state *st)
{
    mrd_ctl *ctl = st->ctl;
    while (st->waiters) {
        ckpt_waiter *w = st->waiters;
        st->waiters = w->next;
        answer_waiter(w, 503);
    }
    st->nwaiters = 0;
    while (st->creates) {
        ckpt_create *c = st->creates;
        st->creates = c->next;
        if (c->busy) {
            c->ctl = NULL; /* its query callback frees it */
            continue;
        }
        mrd_http_respond_error(c->res, 503, "shutting_down", "the controller is stopping");
        free(c);
    }
    ctl->ckpt = NULL;
    uv_timer_stop(&st->timer);
    uv_close((uv_handle_t *)&st->timer, state_closed);
}

static void create_run(ckpt_create *c);

static void on_timer(uv_timer_t *t)
{
    ckpt_state *st = t->data;
    mrd_ctl *ctl = st->ctl;
    if (ctl->stopping) {
        stop_all(st);
        return;
    }
    uint64_t now = mrd__now_ms();
    ckpt_waiter **pp = &st->waiters;
    while (*pp) {
        ckpt_waiter *w = *pp;
        int gone = !mrd_http_response_connected(w->res);
        if (gone || now >= w->deadline_ms) {
            *pp = w->next;
            st->nwaiters--;
            answer_waiter(w, 200); /* dropped by the server if the client left */
            continue;
        }
        pp = &w->next;
    }
    for (ckpt_create *c = st->creates; c; c = c->next)
        if (!c->busy && now >= c->retry_ms)
            create_run(c);
}

/* (Re)sizes the per-service arrays to ctl->services, which a configuration
 * reload may replace; their content starts over. Returns 0 or MRD_ENOMEM
 * (the old arrays are kept). */
static int resize(ckpt_state *st)
{
    mrd_ctl *ctl = st->ctl;
    if (st->next_auto_ms && st->sized_for == ctl->services && st->nsized == ctl->nservices)
        return 0;
    size_t n = ctl->nservices ? ctl->nservices : 1;
    uint64_t *next_auto = calloc(n, sizeof(*next_auto));
    ckpt_gauge *gauges = calloc(n * MRD__CKPT_MAX_REGIONS, sizeof(*gauges));
    if (next_auto == NULL || gauges == NULL) {
        free(next_auto);
        free(gauges);
        return MRD_ENOMEM;
    }
    free(st->next_auto_ms);
    free(st->gauges);
    st->next_auto_ms = next_auto;
    st->gauges = gauges;
    st->gauges_mono_ms = 0;
    st->sized_for = ctl->services;
    st->nsized = ctl->nservices;
    return 0;
}

static ckpt_state *state_get(mrd_ctl *ctl)
{
    if (ctl->ckpt || ctl->stopping)
        return ctl->ckpt;
    ckpt_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return NULL;
    st->ctl = ctl;
    if (resize(st) != 0) {
        free(st);
        return NULL;
    }
    st->auto_term = -1;
    uv_timer_init(ctl->loop, &st->timer);
    st->timer.data = st;
    uv_timer_start(&st->timer, on_timer, TIMER_MS, TIMER_MS);
    ctl->ckpt = st;
    return st;
}

int mrd__ckpt_wait_add(mrd_ctl *ctl, mrd_http_response *res, const char *service, uint64_t id,
                       char (*regions)[MRD_NAME_MAX], size_t nregions, uint64_t deadline_ms,
                       json_t *last)
{
    ckpt_state *st = state_get(ctl);
    if (st == NULL) {
        mrd_http_respond_error(res, 503, "shutting_down", "the controller is stopping");
        json_decref(last);
        return MRD_ECLOSED;
    }
    ckpt_waiter *w = st->nwaiters < MAX_WAITERS ? calloc(1, sizeof(*w)) : NULL;
    if (w == NULL) { /* too many waiting: answer with what is known now */
        mrd_http_respond_json(res, 200, last);
        return MRD_ENOMEM;
    }
    w->res = res;
    snprintf(w->service, sizeof(w->service), "%s", service);
    w->id = id;
    for (size_t i = 0; i < nregions && i < MRD__CKPT_MAX_REGIONS; i++)
        snprintf(w->regions[i], MRD_NAME_MAX, "%s", regions[i]);
    w->nregions = nregions < MRD__CKPT_MAX_REGIONS ? nregions : MRD__CKPT_MAX_REGIONS;
    w->deadline_ms = deadline_ms;
    w->last = last;
    w->next = st->waiters;
    st->waiters = w;
    st->nwaiters++;
    /* The next refresh may have been planned at the idle pace. */
    uint64_t soon = mrd__now_ms() + WAITING_EVERY;
    if (st->next_refresh_ms > soon)
        st->next_refresh_ms = soon;
    return 0;
}

/* ---- refresh: metrics, waiters, and the leader's marks ------------------- */

static void marks_done(int err, PGresult *res, void *data)
{
    mrd_ctl *ctl = data;
    if (err == MRD_EIO) {
        mrd_log(MRD_LOG_WARN, "checkpoint marks not written",
                MRD_S("error", PQresultErrorMessage(res)));
        return;
    }
    if (err != 0 || PQntuples(res) != 1)
        return;
    json_error_t jerr;
    json_t *lost = json_loads(PQgetvalue(res, 0, 2), 0, &jerr);
    size_t i;
    json_t *l;
    json_array_foreach(lost, i, l)
    {
        mrd_log(MRD_LOG_WARN, "checkpoint lost", MRD_S("service", jstr(l, "service")),
                MRD_I("checkpoint", (int64_t)jnum(l, "id")),
                MRD_I("epoch", (int64_t)jnum(l, "epoch")));
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "checkpoint %llu of epoch %llu lost: the new primary never "
                 "reached it",
                 (unsigned long long)jnum(l, "id"), (unsigned long long)jnum(l, "epoch"));
        json_t *op = json_object_get(l, "operation_id");
        mrd__event(ctl, "checkpoint.lost", jstr(l, "service"), "meridian", msg,
                   json_pack("{s:I, s:I, s:O}", "checkpoint", (json_int_t)jnum(l, "id"), "epoch",
                             (json_int_t)jnum(l, "epoch"), "operation", op ? op : json_null()));
    }
    json_decref(lost);
}

static const char *marks_sql =
    "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok),"
    " ins AS (INSERT INTO meridian.checkpoint_reached (checkpoint_id, service, region, reached_at)"
    "  SELECT x.id, x.service, x.region, to_timestamp(x.at_ms / 1000.0)"
    "  FROM g, jsonb_to_recordset($3::jsonb) AS x(id bigint, service text, region text,"
    "   at_ms bigint) JOIN meridian.checkpoints c ON c.id = x.id"
    "  WHERE g.ok ON CONFLICT DO NOTHING RETURNING 1),"
    " done AS (UPDATE meridian.checkpoints c SET complete = true FROM g"
    "  WHERE g.ok AND NOT c.complete"
    "   AND c.id IN (SELECT v::bigint FROM jsonb_array_elements_text($4::jsonb) v) RETURNING 1),"
    " lost AS (UPDATE meridian.checkpoints c SET lost = true, complete = true, lost_at = now(),"
    "   lost_operation_id = (SELECT o.id FROM meridian.operations o WHERE o.service = c.service"
    "    AND o.epoch > c.epoch ORDER BY o.epoch, o.id LIMIT 1)"
    "  FROM g WHERE g.ok AND NOT c.lost"
    "   AND c.id IN (SELECT v::bigint FROM jsonb_array_elements_text($5::jsonb) v)"
    "  RETURNING c.id, c.service, c.epoch, c.lost_operation_id)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM done),"
    "  (SELECT coalesce(json_agg(json_build_object('id', id, 'service', service, 'epoch', epoch,"
    "   'operation_id', lost_operation_id)), '[]') FROM lost)";

/* Somebody probably waits for c: a local long-poll, or an on-demand
 * checkpoint younger than the longest wait. */
static int wanted_soon(mrd_ctl *ctl, json_t *doc, json_t *cj, uint64_t id)
{
    for (ckpt_waiter *w = ctl->ckpt ? ctl->ckpt->waiters : NULL; w; w = w->next)
        if (w->id == id)
            return 1;
    return strcmp(jstr(cj, "kind"), "manual") == 0 &&
           jnum(doc, "now_ms") < jnum(cj, "created_ms") + MRD__CKPT_MAX_WAIT_MS;
}

/* Asks the agents of the regions that have not reached it for a fresh
 * report now (mrd__poke: leader only, rate-limited per node), instead of
 * waiting for their next heartbeat. */
static void poke_pending(mrd_ctl *ctl, const mrd__service *s, const mrd__ckpt_mark *m, size_t nr)
{
    for (size_t i = 0; i < nr; i++) {
        if (m[i].reached)
            continue;
        for (size_t k = 0; k < s->nmembers; k++)
            if (strcmp(s->members[k].region, m[i].region) == 0)
                mrd__poke(ctl, s->members[k].node, 0);
    }
}

/* The leader: persist what the refresh found. */
static void leader_marks(mrd_ctl *ctl, json_t *doc)
{
    json_t *marks = json_array(), *complete = json_array(), *lost = json_array();
    doc_service *d = malloc(sizeof(*d));
    if (d == NULL)
        goto out;
    for (size_t si = 0; si < ctl->nservices; si++) {
        const mrd__service *s = &ctl->services[si];
        char regions[MRD__CKPT_MAX_REGIONS][MRD_NAME_MAX];
        size_t nr = service_regions(s, regions, MRD__CKPT_MAX_REGIONS);
        doc_service_load(doc, s->name, d);
        if (!d->found)
            continue;
        const mrd__ckpt_member *primary = d->primary_idx >= 0 ? &d->ms[d->primary_idx] : NULL;
        size_t k;
        json_t *cj;
        json_array_foreach(doc_rows(doc, "ix_checkpoints", s->name), k, cj)
        {
            if (json_is_true(json_object_get(cj, "complete")))
                continue;
            mrd__ckpt c;
            ckpt_from_json(cj, &c);
            mrd__ckpt_mark m[MRD__CKPT_MAX_REGIONS];
            size_t n = evaluate(d, cj, &c, regions, nr, m);
            int primary_reached = 0;
            for (size_t i = 0; i < nr; i++) {
                if (m[i].fresh)
                    json_array_append_new(marks,
                                          json_pack("{s:I, s:s, s:s, s:I}", "id", (json_int_t)c.id,
                                                    "service", s->name, "region", m[i].region,
                                                    "at_ms", (json_int_t)m[i].at_ms));
                if (m[i].reached && strcmp(m[i].region, d->svc.primary_region) == 0)
                    primary_reached = 1;
            }
            if (n < nr && wanted_soon(ctl, doc, cj, c.id))
                poke_pending(ctl, s, m, nr);
            if (n == nr && nr > 0)
                json_array_append_new(complete, json_integer((json_int_t)c.id));
            else if (mrd__ckpt_is_lost(&c, &d->svc, primary, primary_reached))
                json_array_append_new(lost, json_integer((json_int_t)c.id));
        }
    }
    if (json_array_size(marks) || json_array_size(complete) || json_array_size(lost)) {
        char *t1 = json_dumps(marks, JSON_COMPACT), *t2 = json_dumps(complete, JSON_COMPACT),
             *t3 = json_dumps(lost, JSON_COMPACT);
        char term[32];
        snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
        const char *params[5] = {ctl->cfg.name, term, t1 ? t1 : "[]", t2 ? t2 : "[]",
                                 t3 ? t3 : "[]"};
        mrd_pg_query(ctl->pg, marks_sql, 5, params, marks_done, ctl);
        free(t1);
        free(t2);
        free(t3);
    }
out:
    free(d);
    json_decref(marks);
    json_decref(complete);
    json_decref(lost);
}

static void update_gauges(ckpt_state *st, json_t *doc)
{
    mrd_ctl *ctl = st->ctl;
    if (resize(st) != 0)
        return;
    for (size_t si = 0; si < ctl->nservices; si++) {
        rec_region r[MRD__CKPT_MAX_REGIONS];
        size_t n = recovery_compute(ctl, doc, &ctl->services[si], r);
        ckpt_gauge *g = &st->gauges[si * MRD__CKPT_MAX_REGIONS];
        for (size_t i = 0; i < MRD__CKPT_MAX_REGIONS; i++) {
            memset(&g[i], 0, sizeof(g[i]));
            if (i >= n)
                continue;
            g[i].known = 1;
            g[i].has_rp = r[i].has_rp;
            g[i].rp_ms = r[i].rp_ms;
            g[i].has_lag = r[i].has_lag;
            g[i].lag_bytes = r[i].lag_bytes;
        }
    }
    st->gauges_now_ms = jnum(doc, "now_ms");
    st->gauges_mono_ms = mrd__now_ms();
}

static void recheck_waiters(ckpt_state *st, json_t *doc)
{
    ckpt_waiter **pp = &st->waiters;
    while (*pp) {
        ckpt_waiter *w = *pp;
        int status, done;
        json_t *a = mrd__ckpt_answer(st->ctl, doc, w->service, w->id, w->regions, w->nregions,
                                     &status, &done);
        if (status == 200 && a) {
            json_decref(w->last);
            w->last = a;
        }
        if (status == 404 || done) {
            *pp = w->next;
            st->nwaiters--;
            answer_waiter(w, status);
            continue;
        }
        pp = &w->next;
    }
}

static void refresh_done(int err, json_t *doc, void *data)
{
    mrd_ctl *ctl = data;
    ckpt_state *st = ctl->ckpt;
    if (st == NULL)
        return;
    st->refresh_busy = 0;
    if (err != 0)
        return;
    update_gauges(st, doc);
    recheck_waiters(st, doc);
    if (mrd__lease_is_leader(ctl) && ctl->synced_term == ctl->lease.term && !ctl->stopping)
        leader_marks(ctl, doc);
}

static void refresh(mrd_ctl *ctl, ckpt_state *st, uint64_t now, int leader)
{
    json_t *ids = json_array();
    for (ckpt_waiter *w = st->waiters; w; w = w->next)
        json_array_append_new(ids, json_integer((json_int_t)w->id));
    char *text = json_dumps(ids, JSON_COMPACT);
    json_decref(ids);
    if (text == NULL)
        return;
    if (mrd__ckpt_state_query(ctl, "", text, WINDOW, refresh_done, ctl) == 0) {
        st->refresh_busy = 1;
        st->refresh_wanted = 0;
        /* the leader at least once a second (a mark's time comes from the
         * members' reports, not from when the refresh ran; a document of
         * every member of every service at each tick cost the store as
         * much as the tick itself), faster while someone waits */
        uint64_t period = leader
                              ? (ctl->cfg.tick_ms > LEADER_EVERY ? ctl->cfg.tick_ms : LEADER_EVERY)
                              : FOLLOWER_EVERY;
        if (st->waiters && period > WAITING_EVERY)
            period = WAITING_EVERY;
        st->next_refresh_ms = now + (period < 20 ? 20 : period);
    }
    free(text);
}

/* ---- the leader's automatic checkpoints and retention -------------------- */

static void auto_done(int err, PGresult *res, void *data)
{
    mrd_ctl *ctl = data;
    ckpt_state *st = ctl->ckpt;
    if (err == MRD_EIO)
        mrd_log(MRD_LOG_WARN, "automatic checkpoint failed",
                MRD_S("error", PQresultErrorMessage(res)));
    if (st == NULL)
        return;
    st->auto_busy = 0;
    if (err == 0 && PQntuples(res) > 0)
        st->refresh_wanted = 1;
}

static void auto_create(mrd_ctl *ctl, ckpt_state *st, uint64_t now)
{
    if (st->auto_busy)
        return;
    if (st->auto_term != ctl->lease.term) {
        memset(st->next_auto_ms, 0, ctl->nservices * sizeof(*st->next_auto_ms));
        st->auto_term = ctl->lease.term;
    }
    json_t *due = json_array();
    for (size_t i = 0; i < ctl->nservices; i++) {
        uint64_t every =
            service_key(ctl, i, "checkpoint_interval_ms", MRD__CKPT_DEFAULT_INTERVAL_MS);
        if (every == 0 || now < st->next_auto_ms[i])
            continue;
        st->next_auto_ms[i] = now + every;
        json_array_append_new(due,
                              json_pack("{s:s, s:I}", "service", ctl->services[i].name, "fresh_ms",
                                        (json_int_t)ctl->services[i].policy.node_timeout_ms));
    }
    if (json_array_size(due) > 0) {
        char *text = json_dumps(due, JSON_COMPACT);
        char term[32];
        snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
        const char *params[3] = {ctl->cfg.name, term, text ? text : "[]"};
        if (mrd_pg_query(
                ctl->pg,
                "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok)"
                " INSERT INTO meridian.checkpoints (service, epoch, timeline, position,"
                "  position_at, kind, actor, primary_region)"
                " SELECT s.name, s.epoch, p.timeline, p.position, p.last_seen, 'auto', 'meridian',"
                "  s.primary_region"
                " FROM g, jsonb_to_recordset($3::jsonb) AS x(service text, fresh_ms bigint)"
                " JOIN meridian.services s ON s.name = x.service"
                " JOIN meridian.members p ON p.service = s.name AND p.name = s.primary_member"
                " WHERE g.ok AND p.role = 'primary' AND NOT p.fenced AND p.position > 0"
                "  AND p.last_seen > now() - x.fresh_ms * interval '1 millisecond'"
                "  AND NOT EXISTS (SELECT 1 FROM meridian.operations o WHERE o.service = s.name"
                "   AND o.finished_at IS NULL)"
                " RETURNING id",
                3, params, auto_done, ctl) == 0)
            st->auto_busy = 1;
        free(text);
    }
    json_decref(due);
}

static void retention_done(int err, PGresult *res, void *data)
{
    mrd_ctl *ctl = data;
    ckpt_state *st = ctl->ckpt;
    if (err == MRD_EIO)
        mrd_log(MRD_LOG_WARN, "checkpoint retention failed",
                MRD_S("error", PQresultErrorMessage(res)));
    if (st == NULL)
        return;
    st->retention_busy = 0;
    if (err == 0 && PQntuples(res) == 1) {
        long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        if (n > 0)
            mrd_log(MRD_LOG_DEBUG, "old checkpoints removed", MRD_I("count", n));
        if (n >= RETENTION_BATCH)
            st->next_retention_ms = 0; /* more to do: next cron, after what queued meanwhile */
    }
}

static void retention(mrd_ctl *ctl, ckpt_state *st, uint64_t now)
{
    if (st->retention_busy || now < st->next_retention_ms)
        return;
    st->next_retention_ms = now + RETENTION_EVERY;
    json_t *x = json_array();
    for (size_t i = 0; i < ctl->nservices; i++)
        json_array_append_new(
            x, json_pack("{s:s, s:I}", "service", ctl->services[i].name, "retention_ms",
                         (json_int_t)service_key(ctl, i, "checkpoint_retention_ms",
                                                 MRD__CKPT_DEFAULT_RETENTION_MS)));
    char *text = json_dumps(x, JSON_COMPACT);
    json_decref(x);
    char term[32], batch[16];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    snprintf(batch, sizeof(batch), "%d", RETENTION_BATCH);
    const char *params[4] = {ctl->cfg.name, term, text ? text : "[]", batch};
    if (mrd_pg_query(
            ctl->pg,
            "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok),"
            " x AS (SELECT * FROM jsonb_to_recordset($3::jsonb) AS x(service text,"
            "  retention_ms bigint)),"
            " keep AS (SELECT k.id FROM (SELECT DISTINCT m.service, m.region"
            "   FROM meridian.members m JOIN x ON x.service = m.service) sr,"
            "  LATERAL (SELECT c.id FROM meridian.checkpoint_reached r"
            "   JOIN meridian.checkpoints c ON c.id = r.checkpoint_id"
            "   WHERE r.service = sr.service AND r.region = sr.region AND NOT c.lost"
            "    AND c.position_at IS NOT NULL ORDER BY r.checkpoint_id DESC LIMIT 1) k),"
            " d AS (DELETE FROM meridian.checkpoints WHERE id IN (SELECT c.id"
            "   FROM g, meridian.checkpoints c JOIN x ON x.service = c.service"
            "   WHERE g.ok AND c.created_at < now() - x.retention_ms * interval '1 millisecond'"
            "    AND c.id NOT IN (SELECT id FROM keep) ORDER BY c.id LIMIT $4::int)"
            "  RETURNING 1)"
            " SELECT count(*) FROM d",
            4, params, retention_done, ctl) == 0)
        st->retention_busy = 1;
    free(text);
}

void mrd__checkpoint_cron(mrd_ctl *ctl, uint64_t now)
{
    ckpt_state *st = state_get(ctl);
    if (st == NULL || resize(st) != 0 || !mrd_pg_connected(ctl->pg) || !ctl->migrated)
        return;
    int leader = mrd__lease_is_leader(ctl) && ctl->synced_term == ctl->lease.term;
    int flushed = ctl->ingest.rows_written != st->seen_rows;
    st->seen_rows = ctl->ingest.rows_written;
    if (!st->refresh_busy &&
        (now >= st->next_refresh_ms || st->refresh_wanted || (st->waiters && flushed)))
        refresh(ctl, st, now, leader);
    if (leader) {
        auto_create(ctl, st, now);
        retention(ctl, st, now);
    }
}

/* ---- on-demand creation ---------------------------------------------------- */

static void create_free(ckpt_state *st, ckpt_create *c)
{
    if (st) {
        for (ckpt_create **pp = &st->creates; *pp; pp = &(*pp)->next)
            if (*pp == c) {
                *pp = c->next;
                break;
            }
    }
    free(c);
}

static void create_done(int err, PGresult *res, void *data)
{
    ckpt_create *c = data;
    mrd_ctl *ctl = c->ctl;
    c->busy = 0;
    if (ctl == NULL) { /* the controller stopped meanwhile */
        mrd_http_respond_error(c->res, 503, "shutting_down", "the controller is stopping");
        free(c);
        return;
    }
    ckpt_state *st = ctl->ckpt;
    if (err != 0 || PQntuples(res) != 1) {
        if (err == MRD_EIO)
            mrd_http_respond_error(c->res, 500, "store_error", PQresultErrorMessage(res));
        else
            mrd_http_respond_error(c->res, 503, "store_unavailable", "store is not reachable");
        create_free(st, c);
        return;
    }
    if (!PQgetisnull(res, 0, 0)) {
        uint64_t pos = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        json_t *o =
            json_pack("{s:I, s:s, s:I, s:o, s:I, s:o, s:s}", "id",
                      (json_int_t)strtoll(PQgetvalue(res, 0, 0), NULL, 10), "service", c->service,
                      "position", (json_int_t)pos, "position_text", pos_text(pos), "epoch",
                      (json_int_t)strtoll(PQgetvalue(res, 0, 2), NULL, 10), "created_at",
                      time_json(strtoull(PQgetvalue(res, 0, 3), NULL, 10)), "kind", "manual");
        mrd_log(MRD_LOG_INFO, "checkpoint created", MRD_S("service", c->service),
                MRD_S("id", PQgetvalue(res, 0, 0)), MRD_S("actor", c->actor));
        mrd_http_respond_json(c->res, 201, o);
        if (st)
            st->refresh_wanted = 1;
        create_free(st, c);
        return;
    }
    int exists = strcmp(PQgetvalue(res, 0, 7), "0") != 0;
    int ok = strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    int writable = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
    uint64_t ppos = PQgetisnull(res, 0, 4) ? 0 : strtoull(PQgetvalue(res, 0, 4), NULL, 10);
    if (!exists) {
        mrd_http_respond_error(c->res, 404, "not_found", "no such service in the store yet");
    } else if (!ok) {
        mrd_http_respond_error(c->res, 503, "not_leader", "this controller lost the lease");
    } else if (!writable || ppos == 0) {
        mrd_http_respond_error(c->res, 503, "primary_position_unknown",
                               "no report of a writable primary: its position is not known");
    } else if (st && mrd__now_ms() < c->deadline_ms) {
        c->retry_ms = mrd__now_ms() + CREATE_RETRY_MS; /* the primary's report may lag */
        return;
    } else {
        char msg[200], a[MRD_POS_STRLEN], b[MRD_POS_STRLEN];
        mrd_pos_format(c->position, a, sizeof(a));
        mrd_pos_format(ppos, b, sizeof(b));
        snprintf(msg, sizeof(msg), "position %s is beyond the primary's known position %s", a, b);
        mrd_http_respond_error(c->res, 422, "position_beyond_primary", msg);
    }
    create_free(st, c);
}

static void create_run(ckpt_create *c)
{
    mrd_ctl *ctl = c->ctl;
    char pos[32], term[32];
    snprintf(pos, sizeof(pos), "%llu", (unsigned long long)c->position);
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    const char *params[5] = {c->service, c->has_position ? pos : NULL, c->actor,
                             c->leader_guard ? ctl->cfg.name : "", term};
    int rc = mrd_pg_query(
        ctl->pg,
        "WITH s AS (SELECT s.name, s.epoch, s.primary_region, p.position AS ppos,"
        "   p.timeline AS ptl, p.last_seen AS pseen,"
        "   coalesce(p.role = 'primary' AND NOT p.fenced, false) AS writable"
        "  FROM meridian.services s LEFT JOIN meridian.members p ON p.service = s.name"
        "   AND p.name = s.primary_member WHERE s.name = $1),"
        " g AS (SELECT CASE WHEN $4 = '' THEN true"
        "   ELSE meridian.is_leader($4, $5::bigint) END AS ok),"
        " ins AS (INSERT INTO meridian.checkpoints (service, epoch, timeline, position,"
        "   position_at, kind, actor, primary_region)"
        "  SELECT s.name, s.epoch, coalesce(s.ptl, 0), coalesce($2::numeric, s.ppos),"
        "   CASE WHEN $2 IS NULL THEN s.pseen END, 'manual', $3, s.primary_region"
        "  FROM s, g WHERE g.ok AND s.writable AND s.ppos > 0"
        "   AND coalesce($2::numeric, s.ppos) <= s.ppos"
        "  RETURNING id, position, epoch, created_at)"
        " SELECT (SELECT id FROM ins), (SELECT position::text FROM ins),"
        "  (SELECT epoch FROM ins),"
        "  (SELECT (extract(epoch FROM created_at) * 1000)::bigint FROM ins),"
        "  (SELECT ppos::text FROM s), (SELECT writable FROM s), (SELECT ok FROM g),"
        "  (SELECT count(*) FROM s)",
        5, params, create_done, c);
    if (rc == 0) {
        c->busy = 1;
        return;
    }
    mrd_http_respond_error(c->res, 503, "store_unavailable", "store is not reachable");
    create_free(ctl->ckpt, c);
}

void mrd__ckpt_create(mrd_ctl *ctl, mrd_http_response *res, const char *service, int has_position,
                      uint64_t position, const char *actor, int leader_guard)
{
    ckpt_state *st = state_get(ctl);
    ckpt_create *c = st ? calloc(1, sizeof(*c)) : NULL;
    if (c == NULL) {
        mrd_http_respond_error(res, 503, "shutting_down", "the controller is stopping");
        return;
    }
    c->ctl = ctl;
    c->res = res;
    snprintf(c->service, sizeof(c->service), "%s", service);
    c->has_position = has_position;
    c->position = position;
    snprintf(c->actor, sizeof(c->actor), "%s", actor);
    c->leader_guard = leader_guard;
    c->deadline_ms = mrd__now_ms() + 2 * ctl->heartbeat_ms + 500;
    c->next = st->creates;
    st->creates = c;
    create_run(c);
}

/* ---- barrier and metrics ------------------------------------------------ */

static void barrier_done(int err, PGresult *res, void *data)
{
    mrd_ctl *ctl = data;
    if (err == MRD_EIO)
        mrd_log(MRD_LOG_WARN, "barrier checkpoint not written",
                MRD_S("error", PQresultErrorMessage(res)));
    else if (err == 0 && ctl->ckpt)
        ctl->ckpt->refresh_wanted = 1;
}

int mrd__checkpoint_record_barrier(mrd_ctl *ctl, const char *service, uint64_t epoch,
                                   uint64_t position, const char *operation_id)
{
    if (ctl == NULL || service == NULL || service[0] == '\0' || position == 0)
        return MRD_EINVAL;
    char e[32], p[32];
    snprintf(e, sizeof(e), "%llu", (unsigned long long)epoch);
    snprintf(p, sizeof(p), "%llu", (unsigned long long)position);
    const char *params[4] = {service, e, p, operation_id ? operation_id : ""};
    int rc = mrd_pg_query(
        ctl->pg,
        "INSERT INTO meridian.checkpoints (service, epoch, timeline, position, position_at, kind,"
        "  actor, primary_region, operation_id)"
        " SELECT s.name, $2::bigint, coalesce((SELECT m.timeline FROM meridian.members m"
        "   WHERE m.service = s.name AND m.name = s.primary_member), 0), $3::numeric, now(),"
        "  'barrier', 'meridian', s.primary_region, NULLIF($4, '')::bigint"
        " FROM meridian.services s WHERE s.name = $1"
        " ON CONFLICT (operation_id) WHERE kind = 'barrier' DO NOTHING",
        4, params, barrier_done, ctl);
    return rc == 0 ? 0 : MRD_ESTORE;
}

void mrd__checkpoint_metrics(mrd_ctl *ctl, mrd_metrics_buf *b)
{
    ckpt_state *st = ctl->ckpt;
    if (st == NULL || st->gauges_mono_ms == 0 || st->sized_for != ctl->services ||
        st->nsized != ctl->nservices)
        return; /* nothing yet, or a reload since the last refresh */
    uint64_t now = st->gauges_now_ms + (mrd__now_ms() - st->gauges_mono_ms);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            mrd_metrics_family(b, "meridian_recovery_point_age_seconds", MRD_METRIC_GAUGE,
                               "Seconds since the newest checkpoint a region has reached "
                               "was taken (its RPO).");
        else
            mrd_metrics_family(b, "meridian_replication_lag_bytes", MRD_METRIC_GAUGE,
                               "Bytes the region's most advanced member is behind the "
                               "primary's last known position.");
        for (size_t si = 0; si < ctl->nservices; si++) {
            char regions[MRD__CKPT_MAX_REGIONS][MRD_NAME_MAX];
            size_t nr = service_regions(&ctl->services[si], regions, MRD__CKPT_MAX_REGIONS);
            for (size_t i = 0; i < nr; i++) {
                ckpt_gauge *g = &st->gauges[si * MRD__CKPT_MAX_REGIONS + i];
                mrd_metric_label l[2] = {{"service", ctl->services[si].name},
                                         {"region", regions[i]}};
                if (pass == 0 && g->known && g->has_rp)
                    mrd_metrics_sample_double(b, l, 2,
                                              now > g->rp_ms ? (now - g->rp_ms) / 1000.0 : 0.0);
                else if (pass == 1 && g->known && g->has_lag)
                    mrd_metrics_sample_int(b, l, 2, (int64_t)g->lag_bytes);
            }
        }
    }
}
