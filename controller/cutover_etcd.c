/*
 * etcd cutover driver (the service registry), through the v3 JSON gateway.
 * Per service: <prefix>/services/<svc>/primary (JSON: primary_region,
 * endpoint, epoch, changed_at, operation_id?) and .../epoch (20 digits,
 * zero-padded: etcd compares VALUEs bytewise, "10" < "9").
 * apply() is ONE txn: if value(epoch) < pad(N) put both keys; else a nested
 * txn (etcd >= 3.3): if create_revision(epoch) == 0 (absent: a VALUE compare
 * on an absent key always fails) put both keys, else range both. One round
 * trip, atomic, no check-then-put window. Refused with the same epoch and
 * primary/endpoint = our own earlier write (a retry after a lost answer):
 * success. Otherwise MRD_ESTALE with the stored epoch, a fencing event never
 * retried blindly. A failed txn has no "succeeded" field (protobuf omits false).
 * read() is one txn without compare that ranges both keys (one snapshot).
 * A transport error moves a call to the next endpoint (each at most once per
 * call; safe because apply() is idempotent). Builders/parsers are pure.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cutover_internal.h"
#include "meridian/error.h"
#include "meridian/log.h"

/* ------------------------------------------------------------------ */
/* pure part                                                          */

size_t mrd__etcd_key(char *out, size_t outlen, const char *prefix, const char *service,
                     const char *leaf)
{
    int n = snprintf(out, outlen, "%s/services/%s/%s", prefix, service, leaf);
    return n < 0 ? 0 : (size_t)n;
}

char *mrd__etcd_primary_value(const mrd_cutover_target *t, const char *changed_at)
{
    json_t *v = json_pack("{sssssIss}", "primary_region", t->primary_region, "endpoint",
                          t->endpoint ? t->endpoint : "", "epoch", (json_int_t)t->epoch,
                          "changed_at", changed_at);
    if (v && t->operation_id && t->operation_id[0])
        json_object_set_new(v, "operation_id", json_string(t->operation_id));
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(v);
    return s;
}

/* New JSON string holding base64(s[0..len)). */
static json_t *b64_json(const void *s, size_t len)
{
    size_t need = mrd__b64_encode(s, len, NULL, 0);
    char *buf = malloc(need + 1);
    if (!buf)
        return NULL;
    mrd__b64_encode(s, len, buf, need + 1);
    json_t *j = json_string(buf);
    free(buf);
    return j;
}

static json_t *op_put(const char *key, const char *value)
{
    return json_pack("{s{soso}}", "request_put", "key", b64_json(key, strlen(key)), "value",
                     b64_json(value, strlen(value)));
}

static json_t *op_range(const char *key)
{
    return json_pack("{s{so}}", "request_range", "key", b64_json(key, strlen(key)));
}

static char *dumps_free(json_t *doc)
{
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return s;
}

char *mrd__etcd_txn_body(const char *prefix, const mrd_cutover_target *t, const char *changed_at)
{
    char ek[512], pk[512], pad[21];
    if (mrd__epoch_pad(t->epoch, pad) != 0)
        return NULL;
    if (mrd__etcd_key(ek, sizeof(ek), prefix, t->service, "epoch") >= sizeof(ek) ||
        mrd__etcd_key(pk, sizeof(pk), prefix, t->service, "primary") >= sizeof(pk))
        return NULL;
    char *pv = mrd__etcd_primary_value(t, changed_at);
    if (!pv)
        return NULL;
    json_t *doc =
        json_pack("{s[{sssoss so}] s[oo] s[{s{s[{sssoss ss}] s[oo] s[oo]}}]}",
                  /* compare: value(epoch) < pad */
                  "compare", "target", "VALUE", "key", b64_json(ek, strlen(ek)), "result", "LESS",
                  "value", b64_json(pad, 20),
                  /* success */
                  "success", op_put(ek, pad), op_put(pk, pv),
                  /* failure: nested txn for the absent key */
                  "failure", "request_txn", "compare", "target", "CREATE", "key",
                  b64_json(ek, strlen(ek)), "result", "EQUAL", "create_revision", "0", "success",
                  op_put(ek, pad), op_put(pk, pv), "failure", op_range(ek), op_range(pk));
    free(pv);
    return dumps_free(doc);
}

char *mrd__etcd_read_body(const char *prefix, const char *service)
{
    char ek[512], pk[512];
    if (mrd__etcd_key(ek, sizeof(ek), prefix, service, "epoch") >= sizeof(ek) ||
        mrd__etcd_key(pk, sizeof(pk), prefix, service, "primary") >= sizeof(pk))
        return NULL;
    return dumps_free(json_pack("{s[oo]}", "success", op_range(ek), op_range(pk)));
}

static int fail(char *err, size_t errlen, const char *why)
{
    snprintf(err, errlen, "etcd: %s", why);
    return MRD_EPARSE;
}

/* Decodes the value of the first kv of a response_range into a new malloc'd
 * NUL-terminated buffer. Returns 1 (found), 0 (no kv), MRD_EPARSE. */
static int range_value(const json_t *resp, char **out, size_t *outlen)
{
    json_t *rr = json_object_get(resp, "response_range");
    if (!json_is_object(rr))
        return MRD_EPARSE;
    json_t *kvs = json_object_get(rr, "kvs");
    if (!kvs || json_array_size(kvs) == 0)
        return kvs && !json_is_array(kvs) ? MRD_EPARSE : 0;
    json_t *v = json_object_get(json_array_get(kvs, 0), "value");
    const char *b = v ? json_string_value(v) : ""; /* protobuf omits an empty value */
    if (!b)
        return MRD_EPARSE;
    size_t blen = strlen(b);
    char *buf = malloc(blen / 4 * 3 + 1);
    if (!buf)
        return MRD_ENOMEM;
    size_t n = 0;
    if (mrd__b64_decode(b, blen, buf, blen / 4 * 3, &n) != 0) {
        free(buf);
        return MRD_EPARSE;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 1;
}

/* Fills obs from the two response_range entries (epoch, primary). */
static int fill_observed(const json_t *responses, mrd_cutover_observed *obs, char *err,
                         size_t errlen)
{
    memset(obs, 0, sizeof(*obs));
    obs->epoch = -1;
    if (!json_is_array(responses) || json_array_size(responses) != 2)
        return fail(err, errlen, "unexpected range responses");
    char *ev = NULL, *pv = NULL;
    size_t el = 0, pl = 0;
    int rc = 0;
    int he = range_value(json_array_get(responses, 0), &ev, &el);
    int hp = range_value(json_array_get(responses, 1), &pv, &pl);
    if (he < 0 || hp < 0) {
        rc = fail(err, errlen, "malformed range response");
        goto out;
    }
    if (he == 1 && mrd__epoch_unpad(ev, el, &obs->epoch) != 0) {
        rc = fail(err, errlen, "epoch key does not hold 20 digits");
        goto out;
    }
    if (hp == 1) {
        json_t *p = json_loadb(pv, pl, 0, NULL);
        const char *region = json_string_value(json_object_get(p, "primary_region"));
        const char *endpoint = json_string_value(json_object_get(p, "endpoint"));
        const char *changed = json_string_value(json_object_get(p, "changed_at"));
        json_t *pe = json_object_get(p, "epoch");
        if (!region || !json_is_integer(pe)) {
            json_decref(p);
            rc = fail(err, errlen, "primary key does not hold the expected json");
            goto out;
        }
        snprintf(obs->region, sizeof(obs->region), "%s", region);
        snprintf(obs->value, sizeof(obs->value), "%s", endpoint ? endpoint : "");
        snprintf(obs->detail, sizeof(obs->detail), "changed_at=%s primary_epoch=%" PRId64,
                 changed ? changed : "", (int64_t)json_integer_value(pe));
        if (he == 1 && json_integer_value(pe) != obs->epoch) {
            json_decref(p);
            rc = fail(err, errlen, "primary and epoch keys disagree");
            goto out;
        }
        json_decref(p);
    }
    obs->ok = he == 1 && hp == 1;
out:
    free(ev);
    free(pv);
    return rc;
}

int mrd__etcd_txn_parse(const char *body, size_t len, mrd_cutover_observed *obs, char *err,
                        size_t errlen)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    int rc;
    if (!json_is_object(doc)) {
        rc = fail(err, errlen, "answer is not a json object");
        goto out;
    }
    if (json_is_true(json_object_get(doc, "succeeded"))) {
        rc = 1;
        goto out;
    }
    json_t *inner =
        json_object_get(json_array_get(json_object_get(doc, "responses"), 0), "response_txn");
    if (!json_is_object(inner)) {
        rc = fail(err, errlen, "refused txn without the nested answer");
        goto out;
    }
    if (json_is_true(json_object_get(inner, "succeeded"))) {
        rc = 1;
        goto out;
    }
    rc = fill_observed(json_object_get(inner, "responses"), obs, err, errlen);
    if (rc == 0 && obs->epoch < 0) /* refused although the epoch key is absent */
        rc = fail(err, errlen, "refused txn but no epoch key");
out:
    json_decref(doc);
    return rc;
}

int mrd__etcd_read_parse(const char *body, size_t len, mrd_cutover_observed *obs, char *err,
                         size_t errlen)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    int rc;
    if (!json_is_object(doc))
        rc = fail(err, errlen, "answer is not a json object");
    else if (!json_is_true(json_object_get(doc, "succeeded")))
        rc = fail(err, errlen, "read txn did not succeed");
    else
        rc = fill_observed(json_object_get(doc, "responses"), obs, err, errlen);
    json_decref(doc);
    return rc;
}

void mrd__etcd_error_message(const char *body, size_t len, char *out, size_t outlen)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    const char *m = json_string_value(json_object_get(doc, "message"));
    if (!m)
        m = json_string_value(json_object_get(doc, "error"));
    snprintf(out, outlen, "%s", m ? m : "");
    json_decref(doc);
}

/* ------------------------------------------------------------------ */
/* config                                                             */

static const char *const etcd_driver_names[] = {"etcd", NULL};
static const mrd_cfg_field etcd_fields[] = {
    {"driver", MRD_CFG_STRING, 1, 0, 0, etcd_driver_names, 0, NULL},
    {"endpoints", MRD_CFG_ARRAY, 1, 1, 16, NULL, MRD_CFG_STRING, NULL},
    {"prefix", MRD_CFG_STRING, 1, 1, 200, NULL, 0, NULL},
    {"timeout_ms", MRD_CFG_INT, 0, 100, 600000, NULL, 0, NULL},
    {"required", MRD_CFG_BOOL, 0, 0, 0, NULL, 0, NULL},
};
static const mrd_cfg_schema etcd_schema = {etcd_fields,
                                           sizeof(etcd_fields) / sizeof(etcd_fields[0])};

int mrd__cutover_etcd_check(const json_t *cfg, char *err, size_t errlen)
{
    int rc = mrd__cutover_validate(cfg, &etcd_schema, "registry", err, errlen);
    if (rc)
        return rc;
    json_t *eps = json_object_get(cfg, "endpoints");
    for (size_t i = 0; i < json_array_size(eps); i++) {
        if (!mrd__cutover_url_ok(json_string_value(json_array_get(eps, i)))) {
            snprintf(err, errlen, "registry.endpoints[%zu]: must be an http:// or https:// URL", i);
            return MRD_ECONFIG;
        }
    }
    const char *prefix = mrd__cfg_str_or(cfg, "prefix", "");
    if (prefix[0] != '/' || prefix[strlen(prefix) - 1] == '/' || strstr(prefix, "//") ||
        !mrd__cutover_name_ok(prefix, 200, "/._-")) {
        snprintf(err, errlen,
                 "registry.prefix: must start with '/', not end with '/', and hold "
                 "only [A-Za-z0-9/._-]");
        return MRD_ECONFIG;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* driver                                                             */

typedef struct etcd_driver etcd_driver;

typedef struct etcd_call {
    etcd_driver *d;
    mrd_cutover_cb cb;
    void *data;
    int is_read;
    int attempts;
    size_t tried; /* endpoints tried by this call */
    char *body;
    mrd_cutover_target t; /* apply: strings point into the buffers below */
    char service[64], region[64], endpoint[256];
    mrd_cutover_observed obs;
} etcd_call;

struct etcd_driver {
    mrd_cutover_driver base;
    mrd_http_client *http;
    char **endpoints; /* without trailing '/' */
    size_t nendpoints, cur;
    char *prefix;
    long timeout_ms;
    size_t pending;
    int closing, in_close;
};

static void etcd_maybe_free(etcd_driver *d)
{
    if (!d->closing || d->in_close || d->pending)
        return;
    for (size_t i = 0; i < d->nendpoints; i++)
        free(d->endpoints[i]);
    free(d->endpoints);
    free(d->prefix);
    free(d);
}

static void etcd_finish(etcd_call *c, int status, const char *message, int with_obs)
{
    etcd_driver *d = c->d;
    mrd_cutover_result res = {status, message ? message : "", with_obs ? &c->obs : NULL,
                              c->attempts};
    if (status && status != MRD_ECLOSED)
        mrd_log(status == MRD_ESTALE ? MRD_LOG_ERROR : MRD_LOG_WARN,
                status == MRD_ESTALE ? "registry refused a stale epoch"
                                     : "registry cutover call failed",
                MRD_S("driver", "etcd"), MRD_S("service", c->service),
                MRD_S("error", mrd_err_name(status)), MRD_S("detail", res.message));
    c->cb(&res, c->data);
    free(c->body);
    free(c);
    d->pending--;
    etcd_maybe_free(d);
}

static void etcd_http_cb(const mrd_http_client_result *r, void *data);

static int etcd_send(etcd_call *c)
{
    etcd_driver *d = c->d;
    char url[2100];
    snprintf(url, sizeof(url), "%s/v3/kv/txn", d->endpoints[d->cur]);
    const char *headers[] = {"Content-Type: application/json", NULL};
    mrd_http_client_req req = {0};
    req.method = "POST";
    req.url = url;
    req.body = c->body;
    req.body_len = strlen(c->body);
    req.headers = headers;
    req.timeout_ms = d->timeout_ms;
    int rc = mrd_http_client_request(d->http, &req, etcd_http_cb, c);
    if (rc == 0) {
        c->attempts++;
        c->tried++;
    }
    return rc;
}

static void etcd_http_cb(const mrd_http_client_result *r, void *data)
{
    etcd_call *c = data;
    etcd_driver *d = c->d;
    char msg[256], why[200];
    if (d->closing) {
        etcd_finish(c, MRD_ECLOSED, "driver closed", 0);
        return;
    }
    int rc = mrd__cutover_http_status(r, "etcd", msg, sizeof(msg));
    if ((rc == MRD_EHTTP || rc == MRD_ETIMEOUT) && r->status == 0 && c->tried < d->nendpoints) {
        mrd_log(MRD_LOG_WARN, "etcd endpoint unreachable, trying the next",
                MRD_S("endpoint", d->endpoints[d->cur]), MRD_S("detail", msg));
        d->cur = (d->cur + 1) % d->nendpoints;
        if (etcd_send(c) == 0)
            return;
    }
    if (rc) {
        if (r->status) {
            mrd__etcd_error_message(r->body, r->body_len, why, sizeof(why));
            if (why[0])
                snprintf(msg, sizeof(msg), "etcd: http status %d: %s", r->status, why);
        }
        etcd_finish(c, rc, msg, 0);
        return;
    }
    if (c->is_read) {
        rc = mrd__etcd_read_parse(r->body, r->body_len, &c->obs, why, sizeof(why));
        etcd_finish(c, rc, rc ? why : "", rc == 0);
        return;
    }
    mrd_cutover_observed stored;
    rc = mrd__etcd_txn_parse(r->body, r->body_len, &stored, why, sizeof(why));
    if (rc < 0) {
        etcd_finish(c, rc, why, 0);
        return;
    }
    if (rc == 1) { /* written: the registry holds the target */
        etcd_finish(c, 0, "", 1);
        return;
    }
    if (stored.epoch == c->t.epoch && !strcmp(stored.region, c->t.primary_region) &&
        !strcmp(stored.value, c->endpoint)) {
        c->obs = stored;
        etcd_finish(c, 0, "already applied", 1);
        return;
    }
    c->obs = stored;
    snprintf(msg, sizeof(msg),
             "registry holds epoch %" PRId64 " (primary %s), refused epoch %" PRId64, stored.epoch,
             stored.region, c->t.epoch);
    etcd_finish(c, MRD_ESTALE, msg, 1);
}

static etcd_call *etcd_call_new(etcd_driver *d, mrd_cutover_cb cb, void *data, const char *svc)
{
    etcd_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->d = d;
    c->cb = cb;
    c->data = data;
    c->obs.epoch = -1;
    snprintf(c->service, sizeof(c->service), "%s", svc);
    return c;
}

static int etcd_start(etcd_call *c)
{
    int rc = c->body ? etcd_send(c) : MRD_ENOMEM;
    if (rc) {
        free(c->body);
        free(c);
        return rc;
    }
    c->d->pending++;
    return 0;
}

static int etcd_apply(mrd_cutover_driver *self, const mrd_cutover_target *t, mrd_cutover_cb cb,
                      void *data)
{
    etcd_driver *d = (etcd_driver *)self;
    char why[160], now[32];
    if (d->closing)
        return MRD_ECLOSED;
    if (mrd_cutover_target_check(t, why, sizeof(why)))
        return MRD_EINVAL;
    etcd_call *c = etcd_call_new(d, cb, data, t->service);
    if (!c)
        return MRD_ENOMEM;
    snprintf(c->region, sizeof(c->region), "%s", t->primary_region);
    snprintf(c->endpoint, sizeof(c->endpoint), "%s", t->endpoint ? t->endpoint : "");
    c->t.service = c->service;
    c->t.epoch = t->epoch;
    c->t.primary_region = c->region;
    c->t.endpoint = c->endpoint;
    mrd__cutover_now_rfc3339(now);
    c->body = mrd__etcd_txn_body(d->prefix, t, now);
    /* What the registry holds once the txn succeeds. */
    c->obs.ok = 1;
    c->obs.epoch = t->epoch;
    snprintf(c->obs.region, sizeof(c->obs.region), "%s", t->primary_region);
    snprintf(c->obs.value, sizeof(c->obs.value), "%s", c->endpoint);
    snprintf(c->obs.detail, sizeof(c->obs.detail), "changed_at=%s", now);
    return etcd_start(c);
}

static int etcd_read(mrd_cutover_driver *self, const char *service, mrd_cutover_cb cb, void *data)
{
    etcd_driver *d = (etcd_driver *)self;
    if (d->closing)
        return MRD_ECLOSED;
    if (!mrd__cutover_name_ok(service, 63, "._-"))
        return MRD_EINVAL;
    etcd_call *c = etcd_call_new(d, cb, data, service);
    if (!c)
        return MRD_ENOMEM;
    c->is_read = 1;
    c->body = mrd__etcd_read_body(d->prefix, service);
    return etcd_start(c);
}

static void etcd_close(mrd_cutover_driver *self)
{
    etcd_driver *d = (etcd_driver *)self;
    if (d->closing)
        return;
    d->closing = 1;
    d->in_close = 1;
    mrd_http_client_close(d->http);
    d->in_close = 0;
    etcd_maybe_free(d);
}

int mrd_cutover_etcd_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                          size_t errlen)
{
    int rc = mrd__cutover_etcd_check(cfg, err, errlen);
    if (rc)
        return rc;
    etcd_driver *d = calloc(1, sizeof(*d));
    if (!d)
        return MRD_ENOMEM;
    d->closing = 1; /* until fully built: etcd_maybe_free releases it */
    json_t *eps = json_object_get(cfg, "endpoints");
    d->endpoints = calloc(json_array_size(eps), sizeof(char *));
    if (!d->endpoints) {
        etcd_maybe_free(d);
        return MRD_ENOMEM;
    }
    for (size_t i = 0; i < json_array_size(eps); i++) {
        char *u = strdup(json_string_value(json_array_get(eps, i)));
        if (!u) {
            etcd_maybe_free(d);
            return MRD_ENOMEM;
        }
        size_t n = strlen(u);
        while (n > 0 && u[n - 1] == '/') /* bounded by the length */
            u[--n] = '\0';
        d->endpoints[d->nendpoints++] = u;
    }
    d->prefix = strdup(json_string_value(json_object_get(cfg, "prefix")));
    json_t *to = json_object_get(cfg, "timeout_ms");
    d->timeout_ms = to ? (long)json_integer_value(to) : 5000;
    if (!d->prefix) {
        etcd_maybe_free(d);
        return MRD_ENOMEM;
    }
    rc = mrd_http_client_init(&d->http, loop);
    if (rc) {
        snprintf(err, errlen, "registry: cannot start the http client");
        etcd_maybe_free(d);
        return rc;
    }
    d->closing = 0;
    d->base.name = "etcd";
    d->base.apply = etcd_apply;
    d->base.read = etcd_read;
    d->base.close = etcd_close;
    *out = &d->base;
    return 0;
}
