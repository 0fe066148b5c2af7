/*
 * Reconciliation of the cutover targets: the leader reads back the DNS
 * record and the registry keys of every service, on an interval (service
 * key "reconcile_interval_ms", default 30 s), half a second after each of
 * its own writes, and at once when it becomes leader. The desired state is
 * the store's (the last tick's snapshot): the service's epoch and primary
 * region. Services with an operation before its rejoin step are skipped
 * (the operation drives their targets).
 *
 * A read-back that differs is drift: an event ("cutover.drift") and a
 * counter; with "repair_drift" (default true) the desired state is written
 * back through the same retrying path as an operation's writes. PowerDNS is
 * repaired by a plain apply (a REPLACE). etcd is repaired by a transaction
 * that writes the current epoch when the stored one is not newer (value <
 * pad(epoch + 1)), so a repair can overwrite a hand edit of the same epoch
 * but never a newer epoch: a target holding a newer epoch than the store is
 * a fencing event, reported and left alone. Called from mrd__cutover_cron()
 * (leader only); results arrive on the loop and are ignored once the
 * drivers are closed or leadership changed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cutover_glue.h"
#include "cutover_internal.h"
#include "meridian/error.h"

/* The running operation of a service in the leader's snapshot (a few rows). */
static json_t *snapshot_operation(mrd_ctl *ctl, const char *service)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ctl->snapshot, "operations"), i, e)
    {
        const char *n = json_string_value(json_object_get(e, "service"));
        if (n && strcmp(n, service) == 0)
            return e;
    }
    return NULL;
}

static json_t *observed_json(const mrd_cutover_result *res)
{
    if (res->observed == NULL)
        return json_pack("{s:s}", "error", res->message);
    const mrd_cutover_observed *o = res->observed;
    return json_pack("{s:b, s:I, s:s, s:s}", "present", o->ok, "epoch", (json_int_t)o->epoch,
                     "primary_region", o->region, "value", o->value);
}

static void read_done(const mrd_cutover_result *res, void *data)
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
    d->busy = 0;
    if (res->status == MRD_ECLOSED)
        return;
    if (d->want.epoch > w.epoch) /* an operation wants a newer epoch meanwhile */
        return;
    if (res->status != 0 && res->status != MRD_EPARSE) {
        snprintf(d->error, sizeof(d->error), "read: %s", res->message);
        uint64_t again = cs->reconcile_interval_ms < 2000 ? cs->reconcile_interval_ms : 2000;
        d->reconcile_next_ms = now + again;
        return;
    }
    if (res->status == 0 && res->observed) {
        d->observed = *res->observed;
        d->has_observed = 1;
        d->observed_unix_ms = mrd__cut_unix_ms();
        const mrd_cutover_observed *o = res->observed;
        if (o->ok && o->epoch == (int64_t)w.epoch && strcmp(o->region, w.region) == 0 &&
            strcmp(o->value, w.endpoint) == 0) {
            d->verified_unix_ms = d->observed_unix_ms;
            d->drift = 0;
            d->applied_epoch = w.epoch;
            snprintf(d->applied_region, sizeof(d->applied_region), "%s", w.region);
            if (strncmp(d->error, "read: ", 6) == 0)
                d->error[0] = '\0';
            return;
        }
        if (o->ok && o->epoch > (int64_t)w.epoch) {
            char msg[300];
            snprintf(msg, sizeof(msg),
                     "%s holds epoch %" PRId64 " (primary %s), newer than the store's %" PRIu64,
                     d->what, o->epoch, o->region, w.epoch);
            snprintf(d->error, sizeof(d->error), "%.250s", msg);
            if (!d->drift) {
                d->fencing_total++;
                mrd__event(ctl, "cutover.fencing", s->name, "meridian", msg,
                           json_pack("{s:s, s:I, s:o}", "driver", d->what, "epoch",
                                     (json_int_t)w.epoch, "observed", observed_json(res)));
                mrd_log(MRD_LOG_ERROR, "cutover target holds a newer epoch",
                        MRD_S("service", s->name), MRD_S("driver", d->what),
                        MRD_I("stored", o->epoch), MRD_U("epoch", w.epoch));
            }
            d->drift = 1;
            return;
        }
    } else {
        snprintf(d->error, sizeof(d->error), "read: %s", res->message);
    }
    /* Drift: absent, unreadable, or another epoch/primary/value. */
    d->drift = 1;
    d->drift_total++;
    d->applied_epoch = 0;
    char msg[400];
    snprintf(msg, sizeof(msg), "%s differs from epoch %" PRIu64 " (primary %s, value %s)%s",
             d->what, w.epoch, w.region, w.endpoint,
             cs->repair_drift ? "; repairing" : "; repair_drift is off");
    mrd_log(MRD_LOG_WARN, "cutover drift", MRD_S("service", s->name), MRD_S("driver", d->what),
            MRD_U("epoch", w.epoch), MRD_S("observed_region", d->observed.region),
            MRD_S("observed_value", d->observed.value));
    mrd__event(ctl, "cutover.drift", s->name, "meridian", msg,
               json_pack("{s:s, s:{s:I, s:s, s:s}, s:o, s:b}", "driver", d->what, "desired",
                         "epoch", (json_int_t)w.epoch, "primary_region", w.region, "value",
                         w.endpoint, "observed", observed_json(res), "repair", cs->repair_drift));
    if (!cs->repair_drift)
        return;
    d->want = w;
    d->want.repair = 1;
    d->attempts = d->failures = 0;
    d->next_ms = 0;
    if (d->refused_epoch == w.epoch)
        d->refused_epoch = 0;
    mrd__cut_pump(cut, c.index, d, now);
}

void mrd__reconcile_service(struct mrd__cutover *cut, size_t index, uint64_t now)
{
    mrd_ctl *ctl = cut->ctl;
    mrd__service *s = &ctl->services[index];
    mrd__cut_service *cs = &cut->svc[index];
    if (!mrd__cut_snapshot_fresh(cut))
        return;
    json_t *row = mrd__snapshot_service(ctl, s->name);
    if (row == NULL)
        return;
    json_t *op = snapshot_operation(ctl, s->name);
    const char *step = op ? json_string_value(json_object_get(op, "step")) : NULL;
    if (op && (step == NULL || strcmp(step, "rejoin") != 0))
        return;
    json_int_t epoch = json_integer_value(json_object_get(row, "epoch"));
    const char *region = json_string_value(json_object_get(row, "primary_region"));
    if (epoch <= 0 || region == NULL)
        return;
    mrd__cut_driver *ds[2] = {&cs->reg, &cs->dns};
    for (int k = 0; k < 2; k++) {
        mrd__cut_driver *d = ds[k];
        if (d->drv == NULL || d->busy || now < d->reconcile_next_ms)
            continue;
        mrd__cut_call *c = mrd__cut_call_new(cut, index, d);
        if (c == NULL)
            return;
        c->is_read = 1;
        c->want.epoch = (uint64_t)epoch;
        snprintf(c->want.region, sizeof(c->want.region), "%s", region);
        mrd__cut_endpoint(s, region, c->want.endpoint, sizeof(c->want.endpoint));
        d->reconcile_next_ms = now + cs->reconcile_interval_ms;
        int rc = mrd_cutover_read(d->drv, s->name, read_done, c);
        if (rc != 0) {
            (void)mrd__cut_call_end(c);
            free(c);
            snprintf(d->error, sizeof(d->error), "read: cannot start: %s", mrd_strerror(rc));
            continue;
        }
        d->busy = 1;
    }
}

/* ---- etcd repair transaction -------------------------------------------- */

static void repair_http_cb(const mrd_http_client_result *r, void *data);

static int repair_send(mrd__cut_call *c)
{
    json_t *eps = json_object_get(c->d->cfg, "endpoints");
    size_t n = json_array_size(eps);
    if (c->cut->closed || c->cut->http == NULL || n == 0)
        return MRD_ECLOSED;
    const char *base = json_string_value(json_array_get(eps, c->endpoint % n));
    char url[2100];
    size_t bl = strlen(base ? base : "");
    while (bl > 0 && base[bl - 1] == '/') /* bounded by the length */
        bl--;
    snprintf(url, sizeof(url), "%.*s/v3/kv/txn", (int)bl, base ? base : "");
    const char *headers[] = {"Content-Type: application/json", NULL};
    mrd_http_client_req req = {0};
    req.method = "POST";
    req.url = url;
    req.body = c->etcd_body;
    req.body_len = strlen(c->etcd_body);
    req.headers = headers;
    json_t *to = json_object_get(c->d->cfg, "timeout_ms");
    req.timeout_ms = to ? (long)json_integer_value(to) : 5000;
    int rc = mrd_http_client_request(c->cut->http, &req, repair_http_cb, c);
    if (rc == 0)
        c->tried++;
    return rc;
}

static void repair_http_cb(const mrd_http_client_result *r, void *data)
{
    mrd__cut_call *c = data;
    char msg[256] = "", why[200] = "";
    mrd_cutover_observed obs;
    memset(&obs, 0, sizeof(obs));
    obs.epoch = -1;
    mrd_cutover_result res = {MRD_ECLOSED, "closed", NULL, (int)c->tried};
    if (mrd__cut_stale(c->cut)) { /* the config c->d->cfg points into may be gone */
        mrd__cut_apply_done(&res, c);
        return;
    }
    int rc = mrd__cutover_http_status(r, "etcd", msg, sizeof(msg));
    size_t n = json_array_size(json_object_get(c->d->cfg, "endpoints"));
    if ((rc == MRD_EHTTP || rc == MRD_ETIMEOUT) && r->status == 0 && c->tried < n &&
        !c->cut->closed) {
        c->endpoint++;
        if (repair_send(c) == 0)
            return;
    }
    if (rc == 0) {
        rc = mrd__etcd_txn_parse(r->body, r->body_len, &obs, why, sizeof(why));
        if (rc == 1) { /* written */
            rc = 0;
            obs.ok = 1;
            obs.epoch = (int64_t)c->want.epoch;
            snprintf(obs.region, sizeof(obs.region), "%s", c->want.region);
            snprintf(obs.value, sizeof(obs.value), "%s", c->want.endpoint);
            res.observed = &obs;
        } else if (rc == 0) {
            res.observed = &obs;
            if (obs.epoch == (int64_t)c->want.epoch && strcmp(obs.region, c->want.region) == 0 &&
                strcmp(obs.value, c->want.endpoint) == 0) {
                snprintf(msg, sizeof(msg), "already applied");
            } else {
                rc = MRD_ESTALE;
                snprintf(msg, sizeof(msg),
                         "registry holds epoch %" PRId64 " (primary %s), repair of epoch %" PRIu64
                         " refused",
                         obs.epoch, obs.region, c->want.epoch);
            }
        } else {
            snprintf(msg, sizeof(msg), "%s", why);
        }
    }
    res.status = rc;
    res.message = msg;
    mrd__cut_apply_done(&res, c);
}

int mrd__reconcile_etcd_repair(struct mrd__cutover *cut, size_t index, mrd__cut_driver *d)
{
    mrd__service *s = &cut->ctl->services[index];
    const char *prefix = json_string_value(json_object_get(d->cfg, "prefix"));
    if (prefix == NULL || cut->http == NULL)
        return MRD_EINVAL;
    mrd_cutover_target t;
    mrd__cut_target(s, &d->want, &t);
    char now[32], pad[21];
    mrd__cutover_now_rfc3339(now);
    char *text = mrd__etcd_txn_body(prefix, &t, now);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    /* The driver's transaction writes when stored < epoch; a repair writes
     * when stored <= epoch: compare with epoch + 1. */
    json_t *cmp = json_array_get(json_object_get(doc, "compare"), 0);
    char b64[64];
    if (cmp == NULL || mrd__epoch_pad(t.epoch + 1, pad) != 0 ||
        mrd__b64_encode(pad, 20, b64, sizeof(b64)) >= sizeof(b64) ||
        json_object_set_new(cmp, "value", json_string(b64)) != 0) {
        json_decref(doc);
        return MRD_ENOMEM;
    }
    mrd__cut_call *c = mrd__cut_call_new(cut, index, d);
    if (c == NULL) {
        json_decref(doc);
        return MRD_ENOMEM;
    }
    c->want = d->want;
    c->etcd_body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    int rc = c->etcd_body ? repair_send(c) : MRD_ENOMEM;
    if (rc != 0) {
        (void)mrd__cut_call_end(c);
        free(c);
    }
    return rc;
}
