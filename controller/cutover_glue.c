/*
 * Drives the cutover drivers (include/meridian/cutover.h) for the leader:
 * the registry and dns steps of operations, webhooks, and the state that
 * reconciliation (controller/reconcile.c), the API and metrics read.
 *
 * Callers: controller/tick.c calls mrd__cutover_drive() every tick while an
 * operation sits in its registry or dns step and mrd__cutover_refused() for
 * the step's failure condition; main.c calls mrd__cutover_cron() from its
 * cron timer and mrd__cutover_close() at stop; api_ops.c mrd__cutover_json().
 * Drivers are built lazily on the first cron (the loop exists by then).
 *
 * Per service and driver one call at most is in flight. A failed apply is
 * retried with jittered exponential backoff (200 ms .. 5 s) for as long as
 * the epoch is wanted; MRD_ESTALE (a newer epoch stored) is a fencing event
 * and never retried. A required driver holds the step until its target
 * confirms; a best-effort one lets the step go once its first apply started
 * and keeps retrying in the background. Webhooks fire once per epoch and
 * leader when an operation is in its dns (or rejoin) step or the store shows
 * the primary region moved: the new primary is promoted and the registry
 * step is over; retried by the driver, then in up to 10 rounds here.
 * All state is the leader's memory: losing the lease bumps a generation
 * that makes late callbacks harmless, and a new leader re-verifies and
 * re-applies the current epoch. Callbacks after close() only free memory.
 * A configuration reload (which replaces ctl->services) is noticed by the
 * next cron: the old state is closed and rebuilt from the new configuration.
 */
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cutover_glue.h"
#include "meridian/error.h"
#include "meridian/metrics.h"

#define HOOK_MAX_ROUNDS 10

int64_t mrd__cut_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t mrd__cut_backoff(uint32_t failures)
{
    uint64_t d = 200;
    for (uint32_t i = 1; i < failures && d < 5000; i++)
        d *= 2;
    if (d > 5000)
        d = 5000;
    uint32_t rnd = 0;
    if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1)
        rnd = (uint32_t)mrd__now_ms();
    return d / 2 + rnd % (d / 2 + 1);
}

int mrd__cut_stale(const struct mrd__cutover *cut)
{
    return cut->closed || cut->ctl->services != cut->services;
}

mrd__cut_service *mrd__cut_service_of(mrd_ctl *ctl, const mrd__service *s)
{
    struct mrd__cutover *cut = ctl->cutover;
    if (cut == NULL || mrd__cut_stale(cut) || s < ctl->services || s >= ctl->services + cut->nsvc)
        return NULL;
    return &cut->svc[s - ctl->services];
}

const char *mrd__cut_endpoint(const mrd__service *s, const char *region, char *buf, size_t len)
{
    const char *v = json_string_value(json_object_get(json_object_get(s->dns, "values"), region));
    if (v) {
        snprintf(buf, len, "%s", v);
        return buf;
    }
    /* host:port of the member's conninfo (never anything else of it). */
    const mrd__member_cfg *m = mrd__member_by_region(s, region);
    char host[128] = "", port[16] = "";
    const char *p = m ? m->conninfo : "";
    for (int guard = 0; *p && guard < 64; guard++) {
        while (*p == ' ')
            p++;
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 5 && strncmp(p, "host=", 5) == 0 && n - 5 < sizeof(host))
            snprintf(host, sizeof(host), "%.*s", (int)(n - 5), p + 5);
        else if (n > 5 && strncmp(p, "port=", 5) == 0 && n - 5 < sizeof(port))
            snprintf(port, sizeof(port), "%.*s", (int)(n - 5), p + 5);
        p += n;
    }
    if (host[0] && port[0])
        snprintf(buf, len, "%s:%s", host, port);
    else
        snprintf(buf, len, "%s", host);
    return buf;
}

void mrd__cut_target(const mrd__service *s, const mrd__cut_want *w, mrd_cutover_target *t)
{
    memset(t, 0, sizeof(*t));
    t->service = s->name;
    t->epoch = (int64_t)w->epoch;
    t->primary_region = w->region;
    t->old_region = w->old_region;
    t->endpoint = w->endpoint;
    t->operation_id = w->op_id;
}

/* ---- calls ------------------------------------------------------------- */

mrd__cut_call *mrd__cut_call_new(struct mrd__cutover *cut, size_t index, mrd__cut_driver *d)
{
    mrd__cut_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->cut = cut;
    c->index = index;
    c->d = d;
    c->gen = cut->gen;
    cut->pending++;
    return c;
}

static void cut_free(struct mrd__cutover *cut)
{
    free(cut->svc);
    free(cut);
}

int mrd__cut_call_end(mrd__cut_call *c)
{
    struct mrd__cutover *cut = c->cut;
    int ignore = mrd__cut_stale(cut) || c->gen != cut->gen;
    cut->pending--;
    free(c->etcd_body);
    c->etcd_body = NULL;
    if (cut->closed && cut->pending == 0)
        cut_free(cut);
    return ignore;
}

int mrd__cut_call_take(void *data, mrd__cut_call *out)
{
    mrd__cut_call *c = data;
    int ignore = mrd__cut_call_end(c);
    *out = *c;
    free(c);
    return ignore;
}

/* ---- reporting ---------------------------------------------------------- */

static void report_done(int err, PGresult *res, void *data)
{
    (void)data;
    if (err == MRD_EIO)
        mrd_log(MRD_LOG_WARN, "driver step report not written",
                MRD_S("error", PQresultErrorMessage(res)));
}

/* Writes the driver's attempts and last outcome into the running step of
 * the operation (guarded by the lease; a finished step is left alone). */
static void report_step(mrd_ctl *ctl, const mrd__cut_driver *d, const char *detail)
{
    if (d->want.op_id[0] == '\0' || ctl->pg == NULL)
        return;
    char term[32], attempts[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    snprintf(attempts, sizeof(attempts), "%u", d->attempts);
    const char *params[6] = {d->want.op_id, d->what, attempts, detail, ctl->cfg.name, term};
    mrd_pg_query(ctl->pg,
                 "UPDATE meridian.operation_steps SET attempts = $3::int, detail = $4"
                 " WHERE operation_id = $1::bigint AND step = $2 AND finished_at IS NULL"
                 " AND meridian.is_leader($5, $6::bigint)",
                 6, params, report_done, NULL);
}

static void service_fields(mrd__service *s, mrd__cut_service *cs)
{
    s->registry_busy = cs->reg.busy;
    s->dns_busy = cs->dns.busy;
    s->registry_attempts = cs->reg.attempts;
    s->dns_attempts = cs->dns.attempts;
    snprintf(s->registry_error, sizeof(s->registry_error), "%s", cs->reg.error);
    snprintf(s->dns_error, sizeof(s->dns_error), "%s", cs->dns.error);
}

/* The epoch the operation may count as applied for this driver. */
static uint64_t step_input(const mrd__cut_driver *d, const mrd_op *op)
{
    if (d->drv == NULL)
        return op->epoch;
    if (d->applied_epoch >= op->epoch && strcmp(d->applied_region, op->to_region) == 0)
        return d->applied_epoch;
    if (!d->required && d->started_epoch >= op->epoch)
        return op->epoch;
    return d->applied_epoch < op->epoch ? d->applied_epoch : op->epoch - 1;
}

/* ---- apply -------------------------------------------------------------- */

void mrd__cut_apply_done(const mrd_cutover_result *res, void *data)
{
    mrd__cut_call c;
    if (mrd__cut_call_take(data, &c))
        return;
    struct mrd__cutover *cut = c.cut;
    mrd__cut_driver *d = c.d;
    mrd__cut_want w = c.want;
    mrd_ctl *ctl = cut->ctl;
    mrd__service *s = &ctl->services[c.index];
    mrd__cut_service *cs = &cut->svc[c.index];
    uint64_t now = mrd__now_ms();
    char detail[400];
    d->busy = 0;
    if (res->observed) {
        d->observed = *res->observed;
        d->has_observed = 1;
        d->observed_unix_ms = mrd__cut_unix_ms();
    }
    int current = d->want.epoch == w.epoch && strcmp(d->want.region, w.region) == 0;
    if (res->status == 0) {
        d->applied_epoch = w.epoch;
        snprintf(d->applied_region, sizeof(d->applied_region), "%s", w.region);
        d->error[0] = '\0';
        d->failures = 0;
        d->drift = 0;
        d->reconcile_next_ms = now + 500; /* read back after every write */
        if (current)
            d->want.repair = 0;
        snprintf(detail, sizeof(detail), "%s: epoch %" PRIu64 " applied after %u attempt(s)%s%s",
                 d->what, w.epoch, d->attempts, res->message[0] ? ": " : "", res->message);
        mrd_log(MRD_LOG_INFO, "cutover driver applied", MRD_S("service", s->name),
                MRD_S("driver", d->what), MRD_U("epoch", w.epoch), MRD_S("primary", w.region),
                MRD_I("attempts", d->attempts), MRD_I("repair", w.repair));
        if (w.repair) {
            d->repairs_total++;
            mrd__event(ctl, "cutover.repaired", s->name, "meridian", detail,
                       json_pack("{s:s, s:I, s:s}", "driver", d->what, "epoch", (json_int_t)w.epoch,
                                 "primary_region", w.region));
        } else if (w.op_id[0]) {
            mrd__event(ctl, "cutover.applied", s->name, "meridian", detail,
                       json_pack("{s:s, s:I, s:s, s:s, s:i}", "driver", d->what, "epoch",
                                 (json_int_t)w.epoch, "primary_region", w.region, "operation",
                                 w.op_id, "attempts", (int)d->attempts));
        }
        report_step(ctl, d, detail);
        ctl->tick_wanted = 1;
    } else if (res->status == MRD_ESTALE) {
        d->refused_epoch = w.epoch;
        d->fencing_total++;
        snprintf(d->error, sizeof(d->error), "%s", res->message);
        snprintf(detail, sizeof(detail), "%s: epoch %" PRIu64 " refused (fencing): %s", d->what,
                 w.epoch, res->message);
        mrd__event(ctl, "cutover.fencing", s->name, "meridian", detail,
                   json_pack("{s:s, s:I, s:I, s:s}", "driver", d->what, "epoch",
                             (json_int_t)w.epoch, "stored_epoch",
                             (json_int_t)(res->observed ? res->observed->epoch : -1),
                             "stored_primary", res->observed ? res->observed->region : ""));
        report_step(ctl, d, detail);
        ctl->tick_wanted = 1;
    } else if (res->status != MRD_ECLOSED) {
        d->failures++;
        d->apply_errors_total++;
        d->next_ms = now + mrd__cut_backoff(d->failures);
        int changed = strcmp(d->error, res->message) != 0;
        snprintf(d->error, sizeof(d->error), "%s", res->message);
        snprintf(detail, sizeof(detail), "%s: attempt %u failed (%s): %s; retrying", d->what,
                 d->attempts, mrd_err_name(res->status), res->message);
        if (d->failures == 1 || changed)
            mrd__event(ctl, "cutover.retry", s->name, "meridian", detail,
                       json_pack("{s:s, s:I, s:i, s:s, s:s}", "driver", d->what, "epoch",
                                 (json_int_t)w.epoch, "attempts", (int)d->attempts, "error",
                                 mrd_err_name(res->status), "message", res->message));
        report_step(ctl, d, detail);
    }
    service_fields(s, cs);
}

void mrd__cut_pump(struct mrd__cutover *cut, size_t index, mrd__cut_driver *d, uint64_t now)
{
    mrd_ctl *ctl = cut->ctl;
    mrd__service *s = &ctl->services[index];
    if (d->drv == NULL || d->busy || cut->closed || !cut->leader || d->want.epoch == 0)
        return;
    if (!d->want.repair && d->applied_epoch == d->want.epoch &&
        strcmp(d->applied_region, d->want.region) == 0)
        return;
    if (d->refused_epoch == d->want.epoch || now < d->next_ms)
        return;
    int rc;
    if (d->want.repair && strcmp(d->drv->name, "etcd") == 0) {
        rc = mrd__reconcile_etcd_repair(cut, index, d);
    } else {
        mrd__cut_call *c = mrd__cut_call_new(cut, index, d);
        if (c == NULL)
            return;
        c->want = d->want;
        mrd_cutover_target t;
        mrd__cut_target(s, &c->want, &t);
        rc = mrd_cutover_apply(d->drv, &t, mrd__cut_apply_done, c);
        if (rc != 0) {
            (void)mrd__cut_call_end(c);
            free(c);
        }
    }
    if (rc != 0) {
        d->failures++;
        d->next_ms = now + mrd__cut_backoff(d->failures);
        snprintf(d->error, sizeof(d->error), "%s: cannot start: %s", d->what, mrd_strerror(rc));
        return;
    }
    d->busy = 1;
    d->attempts++;
    if (d->want.epoch > d->started_epoch)
        d->started_epoch = d->want.epoch;
    service_fields(s, &cut->svc[index]);
}

/* ---- webhooks ------------------------------------------------------------ */

static void hooks_done(const mrd_cutover_result *res, void *data)
{
    mrd__cut_call c;
    if (mrd__cut_call_take(data, &c))
        return;
    struct mrd__cutover *cut = c.cut;
    size_t index = c.index;
    uint64_t epoch = c.want.epoch;
    mrd_ctl *ctl = cut->ctl;
    mrd__service *s = &ctl->services[index];
    mrd__cut_hooks *h = &cut->svc[index].hooks;
    h->busy = 0;
    h->attempts += (uint32_t)res->attempts;
    if (res->status == MRD_ECLOSED)
        return;
    char msg[400];
    if (res->status == 0) {
        h->delivered_epoch = epoch;
        h->delivered_total++;
        h->error[0] = '\0';
        snprintf(msg, sizeof(msg), "webhooks delivered for epoch %" PRIu64 " (%d request(s))",
                 epoch, res->attempts);
        mrd__event(ctl, "webhook.delivered", s->name, "meridian", msg,
                   json_pack("{s:I, s:i}", "epoch", (json_int_t)epoch, "requests", res->attempts));
        return;
    }
    h->failed_total++;
    snprintf(h->error, sizeof(h->error), "%s", res->message);
    h->next_ms = mrd__now_ms() + 5000ULL * h->rounds;
    snprintf(msg, sizeof(msg), "webhooks for epoch %" PRIu64 " failed (round %u of %d): %s", epoch,
             h->rounds, HOOK_MAX_ROUNDS, res->message);
    mrd__event(ctl, h->rounds >= HOOK_MAX_ROUNDS ? "webhook.failed" : "webhook.retry", s->name,
               "meridian", msg,
               json_pack("{s:I, s:i, s:s}", "epoch", (json_int_t)epoch, "round", (int)h->rounds,
                         "error", mrd_err_name(res->status)));
}

static void hooks_pump(struct mrd__cutover *cut, size_t index, uint64_t now)
{
    mrd__cut_hooks *h = &cut->svc[index].hooks;
    if (h->drv == NULL || h->busy || !cut->leader || h->want_epoch == 0 ||
        h->delivered_epoch >= h->want_epoch || h->rounds >= HOOK_MAX_ROUNDS || now < h->next_ms)
        return;
    mrd__cut_call *c = mrd__cut_call_new(cut, index, NULL);
    if (c == NULL)
        return;
    c->want.epoch = h->want_epoch;
    h->t.service = cut->ctl->services[index].name;
    h->t.epoch = (int64_t)h->want_epoch;
    h->t.primary_region = h->region;
    h->t.old_region = h->old_region;
    h->t.endpoint = h->endpoint;
    h->t.operation_id = h->op_id;
    int rc = mrd_cutover_apply(h->drv, &h->t, hooks_done, c);
    h->rounds++;
    if (rc != 0) {
        (void)mrd__cut_call_end(c);
        free(c);
        h->next_ms = now + 5000;
        snprintf(h->error, sizeof(h->error), "cannot start: %s", mrd_strerror(rc));
        return;
    }
    h->busy = 1;
    h->fired_epoch = h->want_epoch;
}

static void hooks_want(mrd__cut_hooks *h, const mrd__service *s, const mrd_op *op)
{
    if (h->drv == NULL || h->want_epoch >= op->epoch)
        return;
    h->want_epoch = op->epoch;
    snprintf(h->region, sizeof(h->region), "%s", op->to_region);
    snprintf(h->old_region, sizeof(h->old_region), "%s", op->from_region);
    mrd__cut_endpoint(s, op->to_region, h->endpoint, sizeof(h->endpoint));
    snprintf(h->op_id, sizeof(h->op_id), "%s", op->id);
    h->rounds = 0;
    h->next_ms = 0;
}

/* ---- life cycle ---------------------------------------------------------- */

static void driver_reset(mrd__cut_driver *d)
{
    memset(&d->want, 0, sizeof(d->want));
    d->applied_epoch = d->started_epoch = d->refused_epoch = 0;
    d->applied_region[0] = '\0';
    d->attempts = d->failures = 0;
    d->next_ms = d->reconcile_next_ms = 0;
    d->busy = 0;
    d->drift = 0;
}

static void state_reset(struct mrd__cutover *cut)
{
    cut->gen++;
    for (size_t i = 0; i < cut->nsvc; i++) {
        mrd__cut_service *cs = &cut->svc[i];
        driver_reset(&cs->reg);
        driver_reset(&cs->dns);
        cs->hooks.busy = 0;
        cs->hooks.want_epoch = cs->hooks.fired_epoch = cs->hooks.delivered_epoch = 0;
        cs->hooks.rounds = 0;
        cs->hooks.baseline = 0;
        if (i < cut->ctl->nservices)
            service_fields(&cut->ctl->services[i], cs);
    }
}

static int driver_build(mrd_ctl *ctl, mrd__cut_service *cs, mrd__cut_driver *d, const char *what,
                        const json_t *cfg)
{
    d->what = what;
    d->cfg = cfg;
    if (cfg == NULL)
        return 0;
    d->required = !json_is_false(json_object_get(cfg, "required"));
    char err[256];
    int rc = mrd_cutover_driver_init(&d->drv, ctl->loop, cfg, err, sizeof(err));
    if (rc != 0) {
        d->drv = NULL;
        snprintf(cs->init_error, sizeof(cs->init_error), "%s: %.200s", what, err);
        snprintf(d->error, sizeof(d->error), "driver not available: %.200s", err);
        mrd_log(MRD_LOG_ERROR, "cutover driver not available", MRD_S("driver", what),
                MRD_S("error", err));
    }
    return rc;
}

static struct mrd__cutover *cut_init(mrd_ctl *ctl)
{
    struct mrd__cutover *cut = calloc(1, sizeof(*cut));
    if (cut == NULL)
        return NULL;
    cut->svc = calloc(ctl->nservices ? ctl->nservices : 1, sizeof(*cut->svc));
    if (cut->svc == NULL || mrd_http_client_init(&cut->http, ctl->loop) != 0) {
        free(cut->svc);
        free(cut);
        return NULL;
    }
    cut->ctl = ctl;
    cut->services = ctl->services;
    cut->nsvc = ctl->nservices;
    cut->gen = 1;
    for (size_t i = 0; i < ctl->nservices; i++) {
        mrd__service *s = &ctl->services[i];
        mrd__cut_service *cs = &cut->svc[i];
        cs->reconcile_interval_ms = s->reconcile_interval_ms ? s->reconcile_interval_ms : 30000;
        cs->repair_drift = s->repair_drift;
        driver_build(ctl, cs, &cs->reg, "registry", s->registry);
        driver_build(ctl, cs, &cs->dns, "dns", s->dns);
        if (s->webhooks && json_array_size(s->webhooks) > 0) {
            char err[256];
            if (mrd_cutover_webhook_init(&cs->hooks.drv, ctl->loop, s->webhooks, err,
                                         sizeof(err)) != 0) {
                cs->hooks.drv = NULL;
                snprintf(cs->hooks.error, sizeof(cs->hooks.error), "not available: %.200s", err);
            }
        }
    }
    return cut;
}

int mrd__cut_snapshot_fresh(const struct mrd__cutover *cut)
{
    return cut->ctl->snapshot != NULL && cut->ctl->snapshot_ms > cut->lead_snapshot_ms;
}

/* Webhooks of operations past their registry step, from the last snapshot:
 * an op without a dns driver leaves the dns step in the tick that enters
 * it, so the drive() calls alone could miss it. */
static void hooks_from_snapshot(struct mrd__cutover *cut)
{
    mrd_ctl *ctl = cut->ctl;
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(ctl->snapshot, "operations"), i, row)
    {
        const char *step = json_string_value(json_object_get(row, "step"));
        const char *name = json_string_value(json_object_get(row, "service"));
        if (step == NULL || name == NULL || (strcmp(step, "dns") && strcmp(step, "rejoin")))
            continue;
        mrd__service *s = mrd__service_find(ctl, name);
        mrd__cut_service *cs = s ? mrd__cut_service_of(ctl, s) : NULL;
        if (cs == NULL || cs->hooks.drv == NULL)
            continue;
        mrd_op op;
        if (mrd__op_from_json(json_object_get(row, "state"), &op) != 0)
            continue;
        json_t *id = json_object_get(row, "id");
        snprintf(op.id, sizeof(op.id), "%lld", (long long)json_integer_value(id));
        hooks_want(&cs->hooks, s, &op);
    }
}

/* Webhooks of primary moves seen in the store: a service's primary region
 * changes when its operation leaves the promote step; the first snapshot
 * of a leadership is the baseline (a move before it was the previous
 * leader's to announce, unless its operation is still running: above). */
static void hooks_from_services(struct mrd__cutover *cut)
{
    mrd_ctl *ctl = cut->ctl;
    size_t i;
    json_t *row, *op;
    json_array_foreach(json_object_get(ctl->snapshot, "services"), i, row)
    {
        const char *name = json_string_value(json_object_get(row, "name"));
        const char *region = json_string_value(json_object_get(row, "primary_region"));
        json_int_t epoch = json_integer_value(json_object_get(row, "epoch"));
        mrd__service *s = name ? mrd__service_find(ctl, name) : NULL;
        mrd__cut_service *cs = s ? mrd__cut_service_of(ctl, s) : NULL;
        if (cs == NULL || cs->hooks.drv == NULL || region == NULL || epoch <= 0)
            continue;
        mrd__cut_hooks *h = &cs->hooks;
        if (h->baseline && strcmp(h->seen_region, region) != 0 && (uint64_t)epoch > h->want_epoch) {
            mrd_op o;
            memset(&o, 0, sizeof(o));
            o.epoch = (uint64_t)epoch;
            snprintf(o.to_region, sizeof(o.to_region), "%s", region);
            snprintf(o.from_region, sizeof(o.from_region), "%s", h->seen_region);
            size_t k;
            json_array_foreach(json_object_get(ctl->snapshot, "operations"), k, op)
            {
                const char *svc = json_string_value(json_object_get(op, "service"));
                if (svc && strcmp(svc, name) == 0)
                    snprintf(o.id, sizeof(o.id), "%lld",
                             (long long)json_integer_value(json_object_get(op, "id")));
            }
            hooks_want(h, s, &o);
        }
        h->baseline = 1;
        h->seen_epoch = (uint64_t)epoch;
        snprintf(h->seen_region, sizeof(h->seen_region), "%s", region);
    }
}

void mrd__cutover_cron(mrd_ctl *ctl, uint64_t now)
{
    if (ctl->stopping)
        return;
    if (ctl->cutover != NULL && mrd__cut_stale(ctl->cutover)) {
        /* Reloaded configuration: drivers and state are rebuilt from it, as
         * for a new leader (re-verify, re-apply; idempotent). */
        mrd__cutover_close(ctl);
        mrd_log(MRD_LOG_INFO, "cutover drivers rebuilt from the reloaded configuration");
    }
    if (ctl->cutover == NULL && ctl->loop != NULL)
        ctl->cutover = cut_init(ctl);
    struct mrd__cutover *cut = ctl->cutover;
    if (cut == NULL || cut->closed)
        return;
    int leader = mrd__lease_is_leader(ctl);
    if (leader != cut->leader) {
        state_reset(cut);
        cut->leader = leader;
        cut->lead_snapshot_ms = ctl->snapshot_ms;
        if (leader)
            mrd_log(MRD_LOG_INFO, "cutover drivers: leader, re-verifying every service");
    }
    if (!leader)
        return;
    if (mrd__cut_snapshot_fresh(cut)) {
        hooks_from_snapshot(cut);
        hooks_from_services(cut);
    }
    for (size_t i = 0; i < cut->nsvc; i++) {
        mrd__cut_service *cs = &cut->svc[i];
        mrd__cut_pump(cut, i, &cs->reg, now);
        mrd__cut_pump(cut, i, &cs->dns, now);
        hooks_pump(cut, i, now);
        mrd__reconcile_service(cut, i, now);
    }
}

void mrd__cutover_close(mrd_ctl *ctl)
{
    struct mrd__cutover *cut = ctl->cutover;
    if (cut == NULL)
        return;
    ctl->cutover = NULL;
    cut->closed = 1;
    cut->pending++; /* keeps cut alive while callbacks run inside the closes */
    for (size_t i = 0; i < cut->nsvc; i++) {
        mrd__cut_service *cs = &cut->svc[i];
        mrd_cutover_close(cs->reg.drv);
        mrd_cutover_close(cs->dns.drv);
        mrd_cutover_close(cs->hooks.drv);
        cs->reg.drv = cs->dns.drv = cs->hooks.drv = NULL;
    }
    mrd_http_client_close(cut->http);
    cut->http = NULL;
    if (--cut->pending == 0)
        cut_free(cut);
}

/* ---- the operation's side ------------------------------------------------ */

static void want_from_op(mrd__cut_driver *d, const mrd__service *s, const mrd_op *op)
{
    if (d->drv == NULL)
        return;
    if (d->want.epoch == op->epoch && strcmp(d->want.region, op->to_region) == 0) {
        if (d->want.op_id[0] == '\0')
            snprintf(d->want.op_id, sizeof(d->want.op_id), "%s", op->id);
        return;
    }
    memset(&d->want, 0, sizeof(d->want));
    d->want.epoch = op->epoch;
    snprintf(d->want.region, sizeof(d->want.region), "%s", op->to_region);
    snprintf(d->want.old_region, sizeof(d->want.old_region), "%s", op->from_region);
    mrd__cut_endpoint(s, op->to_region, d->want.endpoint, sizeof(d->want.endpoint));
    snprintf(d->want.op_id, sizeof(d->want.op_id), "%s", op->id);
    d->attempts = d->failures = 0;
    d->next_ms = 0;
}

void mrd__cutover_drive(mrd_ctl *ctl, mrd__service *s, const mrd_op *op, mrd_op_action action,
                        uint64_t now)
{
    (void)now; /* store clock; backoff runs on the monotonic clock */
    struct mrd__cutover *cut = ctl->cutover;
    mrd__cut_service *cs = mrd__cut_service_of(ctl, s);
    if (cs == NULL || !cut->leader)
        return;
    size_t index = (size_t)(s - ctl->services);
    uint64_t mono = mrd__now_ms();
    if (action == MRD_ACT_REGISTRY) {
        want_from_op(&cs->reg, s, op);
        mrd__cut_pump(cut, index, &cs->reg, mono);
        s->registry_epoch = step_input(&cs->reg, op);
    } else if (action == MRD_ACT_DNS) {
        hooks_want(&cs->hooks, s, op);
        hooks_pump(cut, index, mono);
        want_from_op(&cs->dns, s, op);
        mrd__cut_pump(cut, index, &cs->dns, mono);
        s->dns_epoch = step_input(&cs->dns, op);
        /* A best-effort registry may still be retrying: keep it wanted. */
        mrd__cut_pump(cut, index, &cs->reg, mono);
    }
}

int mrd__cutover_refused(mrd_ctl *ctl, mrd__service *s, const mrd_op *op)
{
    mrd__cut_service *cs = mrd__cut_service_of(ctl, s);
    if (cs == NULL)
        return 0;
    const mrd__cut_driver *d = op->step == MRD_STEP_REGISTRY ? &cs->reg
                               : op->step == MRD_STEP_DNS    ? &cs->dns
                                                             : NULL;
    return d && d->drv && d->required && d->refused_epoch == op->epoch &&
           strcmp(d->want.region, op->to_region) == 0;
}

/* ---- API and metrics ------------------------------------------------------ */

static const char *cfg_str(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "";
}

static json_t *rfc3339_or_null(int64_t unix_ms)
{
    if (unix_ms <= 0)
        return json_null();
    time_t secs = (time_t)(unix_ms / 1000);
    struct tm tm;
    char base[32], out[40];
    gmtime_r(&secs, &tm);
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof(out), "%s.%03dZ", base, (int)(unix_ms % 1000));
    return json_string(out);
}

static json_t *driver_json(const mrd__cut_driver *d, int leader, int repair)
{
    json_t *o = json_pack("{s:b, s:b}", "configured", d->cfg != NULL, "required", d->required);
    if (d->cfg == NULL)
        return o;
    json_object_set_new(o, "driver", json_string(cfg_str(d->cfg, "driver")));
    json_object_set_new(o, "known", json_boolean(leader));
    json_object_set_new(o, "repair_drift", json_boolean(repair));
    if (d->want.epoch)
        json_object_set_new(o, "desired",
                            json_pack("{s:I, s:s, s:s}", "epoch", (json_int_t)d->want.epoch,
                                      "primary_region", d->want.region, "value", d->want.endpoint));
    else
        json_object_set_new(o, "desired", json_null());
    if (d->has_observed)
        json_object_set_new(o, "observed",
                            json_pack("{s:b, s:I, s:s, s:s, s:s, s:o}", "present", d->observed.ok,
                                      "epoch", (json_int_t)d->observed.epoch, "primary_region",
                                      d->observed.region, "value", d->observed.value, "detail",
                                      d->observed.detail, "at",
                                      rfc3339_or_null(d->observed_unix_ms)));
    else
        json_object_set_new(o, "observed", json_null());
    int in_sync = d->has_observed && d->want.epoch && !d->drift && d->observed.ok &&
                  (uint64_t)d->observed.epoch == d->want.epoch &&
                  strcmp(d->observed.region, d->want.region) == 0;
    json_object_set_new(o, "in_sync", json_boolean(in_sync));
    json_object_set_new(o, "drift", json_boolean(d->drift));
    json_object_set_new(o, "last_verified_at", rfc3339_or_null(d->verified_unix_ms));
    json_object_set_new(o, "epoch", json_integer((json_int_t)d->applied_epoch));
    json_object_set_new(o, "attempts", json_integer(d->attempts));
    json_object_set_new(o, "busy", json_boolean(d->busy));
    json_object_set_new(o, "last_error", json_string(d->error));
    json_object_set_new(o, "fenced",
                        json_boolean(d->want.epoch && d->refused_epoch == d->want.epoch));
    json_object_set_new(o, "drift_total", json_integer((json_int_t)d->drift_total));
    json_object_set_new(o, "repairs_total", json_integer((json_int_t)d->repairs_total));
    json_object_set_new(o, "fencing_total", json_integer((json_int_t)d->fencing_total));
    return o;
}

json_t *mrd__cutover_json(mrd_ctl *ctl, const mrd__service *s)
{
    struct mrd__cutover *cut = ctl->cutover;
    mrd__cut_service *cs = mrd__cut_service_of(ctl, s);
    json_t *o = json_object();
    if (cs == NULL) {
        json_object_set_new(o, "registry", json_pack("{s:b}", "configured", s->registry != NULL));
        json_object_set_new(o, "dns", json_pack("{s:b}", "configured", s->dns != NULL));
        json_object_set_new(o, "webhooks", json_pack("{s:b}", "configured", s->webhooks != NULL));
        return o;
    }
    int leader = cut->leader;
    json_object_set_new(o, "registry", driver_json(&cs->reg, leader, cs->repair_drift));
    json_object_set_new(o, "dns", driver_json(&cs->dns, leader, cs->repair_drift));
    const mrd__cut_hooks *h = &cs->hooks;
    json_object_set_new(
        o, "webhooks",
        json_pack("{s:b, s:b, s:I, s:I, s:i, s:i, s:s, s:I, s:I}", "configured",
                  s->webhooks != NULL, "known", leader, "desired_epoch", (json_int_t)h->want_epoch,
                  "delivered_epoch", (json_int_t)h->delivered_epoch, "rounds", (int)h->rounds,
                  "requests", (int)h->attempts, "last_error", h->error, "delivered_total",
                  (json_int_t)h->delivered_total, "failed_total", (json_int_t)h->failed_total));
    json_object_set_new(o, "reconcile_interval_ms",
                        json_integer((json_int_t)cs->reconcile_interval_ms));
    if (cs->init_error[0])
        json_object_set_new(o, "error", json_string(cs->init_error));
    return o;
}

void mrd__cutover_metrics(mrd_ctl *ctl, mrd_metrics_buf *b)
{
    struct mrd__cutover *cut = ctl->cutover;
    if (cut == NULL || mrd__cut_stale(cut) || !cut->leader)
        return;
    static const struct {
        const char *name, *help;
        mrd_metric_type type;
        int which;
    } fams[] = {
        {"meridian_cutover_drift_total",
         "Read-backs that found a target differing from the "
         "current epoch's desired state.",
         MRD_METRIC_COUNTER, 0},
        {"meridian_cutover_repairs_total", "Drifted targets written back.", MRD_METRIC_COUNTER, 1},
        {"meridian_cutover_fencing_total",
         "Writes refused because the target holds a newer "
         "epoch.",
         MRD_METRIC_COUNTER, 2},
        {"meridian_cutover_apply_errors_total", "Failed driver writes (retried).",
         MRD_METRIC_COUNTER, 3},
        {"meridian_cutover_in_sync", "1 when the last read-back matched the desired state.",
         MRD_METRIC_GAUGE, 4},
    };
    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        mrd_metrics_family(b, fams[f].name, fams[f].type, fams[f].help);
        for (size_t i = 0; i < cut->nsvc; i++) {
            const mrd__cut_driver *ds[2] = {&cut->svc[i].reg, &cut->svc[i].dns};
            for (int k = 0; k < 2; k++) {
                const mrd__cut_driver *d = ds[k];
                if (d->drv == NULL)
                    continue;
                mrd_metric_label l[2] = {{"service", ctl->services[i].name}, {"driver", d->what}};
                uint64_t v[5] = {d->drift_total, d->repairs_total, d->fencing_total,
                                 d->apply_errors_total,
                                 d->verified_unix_ms > 0 && !d->drift ? 1u : 0u};
                mrd_metrics_sample_int(b, l, 2, (int64_t)v[fams[f].which]);
            }
        }
    }
}
