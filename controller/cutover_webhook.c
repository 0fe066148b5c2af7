/*
 * Webhook cutover driver: tells outside systems that a service's primary
 * moved. apply() POSTs one JSON event
 *   {"service", "epoch", "old_region", "new_region", "endpoint", "operation_id"}
 * to every configured URL in parallel, with the headers
 *   Idempotency-Key: <service>:<epoch>      (the same on every retry)
 *   X-Meridian-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>
 * Each URL gets up to max_attempts tries: transport errors, 408, 429 and 5xx
 * are retried after a full-jitter exponential backoff (a uniform delay in
 * [0, min(backoff_max_ms, backoff_base_ms * 2^n)]); any other status fails
 * at once. The callback runs once every URL has succeeded or given up:
 * status 0 when all succeeded, else the first failure's code with its
 * message (URL, attempts, last error); attempts counts every request made.
 *
 * Receivers must deduplicate on Idempotency-Key: a retry after a lost answer
 * delivers the same event twice. Webhooks hold no state: read() is
 * MRD_EUNSUPPORTED. close() stops pending retries and completes pending
 * calls with MRD_ECLOSED; the driver is freed after its timers are closed.
 */
#include <inttypes.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cutover_internal.h"
#include "meridian/error.h"
#include "meridian/log.h"

/* ------------------------------------------------------------------ */
/* pure part                                                          */

static json_t *str_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

char *mrd__webhook_body(const mrd_cutover_target *t)
{
    json_t *doc = json_pack("{sssIsosososo}", "service", t->service, "epoch", (json_int_t)t->epoch,
                            "old_region", str_or_null(t->old_region), "new_region",
                            str_or_null(t->primary_region), "endpoint", str_or_null(t->endpoint),
                            "operation_id", str_or_null(t->operation_id));
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return s;
}

int mrd__webhook_retryable(int status)
{
    return status == 0 || status == 408 || status == 429 || (status >= 500 && status <= 599);
}

/* ------------------------------------------------------------------ */
/* config                                                             */

static const mrd_cfg_field hook_fields[] = {
    {"url", MRD_CFG_STRING, 1, 1, 2048, NULL, 0, NULL},
    {"secret", MRD_CFG_STRING, 1, 1, 1024, NULL, 0, NULL},
    {"timeout_ms", MRD_CFG_INT, 0, 100, 600000, NULL, 0, NULL},
    {"max_attempts", MRD_CFG_INT, 0, 1, 20, NULL, 0, NULL},
    {"backoff_base_ms", MRD_CFG_INT, 0, 1, 60000, NULL, 0, NULL},
    {"backoff_max_ms", MRD_CFG_INT, 0, 1, 600000, NULL, 0, NULL},
};
static const mrd_cfg_schema hook_schema = {hook_fields,
                                           sizeof(hook_fields) / sizeof(hook_fields[0])};

int mrd__cutover_webhook_check(const json_t *cfg, char *err, size_t errlen)
{
    if (!json_is_array(cfg) || json_array_size(cfg) < 1 || json_array_size(cfg) > 16) {
        snprintf(err, errlen, "webhooks: must be an array of 1 to 16 objects");
        return MRD_ECONFIG;
    }
    for (size_t i = 0; i < json_array_size(cfg); i++) {
        json_t *h = json_array_get(cfg, i);
        char path[32];
        snprintf(path, sizeof(path), "webhooks[%zu]", i);
        int rc = mrd__cutover_validate(h, &hook_schema, path, err, errlen);
        if (rc)
            return rc;
        if (!mrd__cutover_url_ok(mrd__cfg_str_or(h, "url", ""))) {
            snprintf(err, errlen, "%s.url: must be an http:// or https:// URL", path);
            return MRD_ECONFIG;
        }
        if (strpbrk(mrd__cfg_str_or(h, "secret", ""), "\r\n") ||
            strlen(mrd__cfg_str_or(h, "url", "")) !=
                json_string_length(json_object_get(h, "url"))) {
            snprintf(err, errlen, "%s: url and secret must be one line without NUL", path);
            return MRD_ECONFIG;
        }
        if (mrd__cfg_int_or(h, "backoff_max_ms", 5000) <
            mrd__cfg_int_or(h, "backoff_base_ms", 200)) {
            snprintf(err, errlen, "%s.backoff_max_ms: must be >= backoff_base_ms", path);
            return MRD_ECONFIG;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* driver                                                             */

typedef struct hook {
    char *url, *secret;
    long timeout_ms;
    int max_attempts;
    uint64_t base_ms, max_ms;
} hook;

typedef struct wh_driver wh_driver;
typedef struct wh_op wh_op;

typedef struct wh_delivery {
    wh_op *op;
    const hook *h;
    uv_timer_t timer;
    int attempts;
    int in_flight;  /* an HTTP request is pending */
    int waiting;    /* the timer is armed */
    int finish_due; /* the timer finishes the delivery instead of retrying */
    int done;
    int status;
    char last_error[200];
    char sig_header[100]; /* X-Meridian-Signature: sha256=<64 hex> */
} wh_delivery;

struct wh_op {
    wh_op *prev, *next;
    wh_driver *d;
    mrd_cutover_cb cb;
    void *data;
    char *body;
    char idem_header[128];
    size_t n, remaining, open_timers;
    int reported;
    wh_delivery *dl;
};

struct wh_driver {
    mrd_cutover_driver base;
    uv_loop_t *loop;
    mrd_http_client *http;
    hook *hooks;
    size_t nhooks;
    wh_op *ops; /* live (not yet freed) */
    int closing, in_close;
};

static void wh_maybe_free(wh_driver *d)
{
    if (!d->closing || d->in_close || d->ops)
        return;
    for (size_t i = 0; i < d->nhooks; i++) {
        free(d->hooks[i].url);
        free(d->hooks[i].secret);
    }
    free(d->hooks);
    free(d);
}

static void op_free(wh_op *op)
{
    wh_driver *d = op->d;
    if (op->prev)
        op->prev->next = op->next;
    else
        d->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    free(op->body);
    free(op->dl);
    free(op);
    wh_maybe_free(d);
}

static void timer_closed(uv_handle_t *h)
{
    wh_delivery *w = h->data;
    wh_op *op = w->op;
    if (--op->open_timers == 0)
        op_free(op);
}

/* All deliveries are done: report once, then close the timers. */
static void op_report(wh_op *op)
{
    int status = 0, attempts = 0;
    char message[400] = "";
    for (size_t i = 0; i < op->n; i++) {
        attempts += op->dl[i].attempts;
        if (op->dl[i].status && !status) {
            status = op->dl[i].status;
            snprintf(message, sizeof(message), "webhook %s: %s after %d attempt%s",
                     op->dl[i].h->url, op->dl[i].last_error, op->dl[i].attempts,
                     op->dl[i].attempts == 1 ? "" : "s");
        }
    }
    op->reported = 1;
    mrd_cutover_result res = {status, message, NULL, attempts};
    op->cb(&res, op->data);
    for (size_t i = 0; i < op->n; i++)
        uv_close((uv_handle_t *)&op->dl[i].timer, timer_closed);
}

static void delivery_done(wh_delivery *w, int status)
{
    if (w->done)
        return;
    w->done = 1;
    w->status = status;
    if (--w->op->remaining == 0)
        op_report(w->op);
}

static void http_cb(const mrd_http_client_result *r, void *data);
static void timer_cb(uv_timer_t *t);

static uint64_t random_u64(void)
{
    uint64_t v;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = uv_hrtime() * 0x9e3779b97f4a7c15ull;
    return v;
}

/* After a failed attempt: arm the timer for a retry, or to finish (so that
 * the callback never runs from inside apply()). */
static void delivery_after_failure(wh_delivery *w, int retryable, int code, int may_finish_now)
{
    wh_driver *d = w->op->d;
    if (d->closing) {
        snprintf(w->last_error, sizeof(w->last_error), "driver closed");
        delivery_done(w, MRD_ECLOSED);
        return;
    }
    if (retryable && w->attempts < w->h->max_attempts) {
        uint64_t delay = mrd__backoff_full_jitter((unsigned)(w->attempts - 1), w->h->base_ms,
                                                  w->h->max_ms, random_u64());
        mrd_log(MRD_LOG_WARN, "webhook attempt failed, retrying", MRD_S("url", w->h->url),
                MRD_I("attempt", w->attempts), MRD_U("delay_ms", delay),
                MRD_S("error", w->last_error));
        w->waiting = 1;
        uv_timer_start(&w->timer, timer_cb, delay, 0);
        return;
    }
    mrd_log(MRD_LOG_ERROR, "webhook delivery failed", MRD_S("url", w->h->url),
            MRD_I("attempts", w->attempts), MRD_S("error", w->last_error));
    if (may_finish_now) {
        delivery_done(w, code);
        return;
    }
    w->finish_due = code;
    w->waiting = 1;
    uv_timer_start(&w->timer, timer_cb, 0, 0);
}

static void delivery_attempt(wh_delivery *w, int from_apply)
{
    wh_op *op = w->op;
    wh_driver *d = op->d;
    const char *headers[] = {"Content-Type: application/json", op->idem_header, w->sig_header,
                             NULL};
    mrd_http_client_req req = {0};
    req.method = "POST";
    req.url = w->h->url;
    req.body = op->body;
    req.body_len = strlen(op->body);
    req.headers = headers;
    req.timeout_ms = w->h->timeout_ms;
    w->attempts++;
    int rc = mrd_http_client_request(d->http, &req, http_cb, w);
    if (rc == 0) {
        w->in_flight = 1;
        return;
    }
    snprintf(w->last_error, sizeof(w->last_error), "cannot start request: %s", mrd_strerror(rc));
    delivery_after_failure(w, rc != MRD_EINVAL, rc, !from_apply);
}

static void http_cb(const mrd_http_client_result *r, void *data)
{
    wh_delivery *w = data;
    char msg[200];
    w->in_flight = 0;
    int rc = mrd__cutover_http_status(r, "", msg, sizeof(msg));
    if (rc == 0) {
        delivery_done(w, 0);
        return;
    }
    snprintf(w->last_error, sizeof(w->last_error), "%s", msg + 2); /* drop ": " */
    delivery_after_failure(w, mrd__webhook_retryable(r->status),
                           rc == MRD_ECLOSED ? rc
                           : r->status       ? MRD_EHTTP
                                             : rc,
                           1);
}

static void timer_cb(uv_timer_t *t)
{
    wh_delivery *w = t->data;
    w->waiting = 0;
    if (w->finish_due) {
        delivery_done(w, w->finish_due);
        return;
    }
    if (w->op->d->closing) {
        delivery_done(w, MRD_ECLOSED);
        return;
    }
    delivery_attempt(w, 0);
}

static int wh_apply(mrd_cutover_driver *self, const mrd_cutover_target *t, mrd_cutover_cb cb,
                    void *data)
{
    wh_driver *d = (wh_driver *)self;
    char why[160];
    if (d->closing)
        return MRD_ECLOSED;
    if (mrd_cutover_target_check(t, why, sizeof(why)))
        return MRD_EINVAL;
    wh_op *op = calloc(1, sizeof(*op));
    if (!op)
        return MRD_ENOMEM;
    op->d = d;
    op->cb = cb;
    op->data = data;
    op->n = op->remaining = d->nhooks;
    op->body = mrd__webhook_body(t);
    op->dl = calloc(d->nhooks, sizeof(*op->dl));
    snprintf(op->idem_header, sizeof(op->idem_header), "Idempotency-Key: %s:%" PRId64, t->service,
             t->epoch);
    if (!op->body || !op->dl) {
        free(op->body);
        free(op->dl);
        free(op);
        return MRD_ENOMEM;
    }
    /* Link first: from here op_free() is the only way out. */
    op->next = d->ops;
    if (d->ops)
        d->ops->prev = op;
    d->ops = op;
    for (size_t i = 0; i < op->n; i++) {
        wh_delivery *w = &op->dl[i];
        w->op = op;
        w->h = &d->hooks[i];
        uv_timer_init(d->loop, &w->timer); /* cannot fail for a timer */
        w->timer.data = w;
        op->open_timers++;
    }
    /* The signature covers the exact body bytes; one secret per URL. */
    for (size_t i = 0; i < op->n; i++) {
        wh_delivery *w = &op->dl[i];
        char hex[65];
        if (mrd__hmac_sha256_hex(w->h->secret, strlen(w->h->secret), op->body, strlen(op->body),
                                 hex) != 0)
            hex[0] = '\0'; /* the receiver refuses it; never happens with OpenSSL */
        snprintf(w->sig_header, sizeof(w->sig_header), "X-Meridian-Signature: sha256=%s", hex);
    }
    for (size_t i = 0; i < op->n; i++)
        delivery_attempt(&op->dl[i], 1);
    return 0;
}

static int wh_read(mrd_cutover_driver *self, const char *service, mrd_cutover_cb cb, void *data)
{
    (void)self;
    (void)service;
    (void)cb;
    (void)data;
    return MRD_EUNSUPPORTED;
}

static void wh_close(mrd_cutover_driver *self)
{
    wh_driver *d = (wh_driver *)self;
    if (d->closing)
        return;
    d->closing = 1;
    d->in_close = 1;
    /* Pending requests fail with "closed" through http_cb (now or later). */
    mrd_http_client_close(d->http);
    /* Deliveries waiting for a retry end now. Bounded: each op is visited
     * once; op_report() only closes timers, the ops stay linked until their
     * close callbacks run on the loop. */
    for (wh_op *op = d->ops; op; op = op->next) {
        for (size_t i = 0; i < op->n && !op->reported; i++) {
            wh_delivery *w = &op->dl[i];
            if (w->waiting && !w->done) {
                uv_timer_stop(&w->timer);
                w->waiting = 0;
                if (w->finish_due) { /* it had failed already: keep its error */
                    delivery_done(w, w->finish_due);
                    continue;
                }
                snprintf(w->last_error, sizeof(w->last_error), "driver closed");
                delivery_done(w, MRD_ECLOSED);
            }
        }
    }
    d->in_close = 0;
    wh_maybe_free(d);
}

int mrd_cutover_webhook_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg,
                             char *err, size_t errlen)
{
    int rc = mrd__cutover_webhook_check(cfg, err, errlen);
    if (rc)
        return rc;
    wh_driver *d = calloc(1, sizeof(*d));
    if (!d)
        return MRD_ENOMEM;
    d->closing = 1; /* until fully built */
    d->loop = loop;
    d->hooks = calloc(json_array_size(cfg), sizeof(hook));
    if (!d->hooks) {
        wh_maybe_free(d);
        return MRD_ENOMEM;
    }
    for (size_t i = 0; i < json_array_size(cfg); i++) {
        json_t *h = json_array_get(cfg, i);
        hook *k = &d->hooks[d->nhooks++];
        k->url = strdup(json_string_value(json_object_get(h, "url")));
        k->secret = strdup(json_string_value(json_object_get(h, "secret")));
        k->timeout_ms = (long)mrd__cfg_int_or(h, "timeout_ms", 2000);
        k->max_attempts = (int)mrd__cfg_int_or(h, "max_attempts", 5);
        k->base_ms = (uint64_t)mrd__cfg_int_or(h, "backoff_base_ms", 200);
        k->max_ms = (uint64_t)mrd__cfg_int_or(h, "backoff_max_ms", 5000);
        if (!k->url || !k->secret) {
            wh_maybe_free(d);
            return MRD_ENOMEM;
        }
    }
    rc = mrd_http_client_init(&d->http, loop);
    if (rc) {
        snprintf(err, errlen, "webhooks: cannot start the http client");
        wh_maybe_free(d);
        return rc;
    }
    d->closing = 0;
    d->base.name = "webhook";
    d->base.apply = wh_apply;
    d->base.read = wh_read;
    d->base.close = wh_close;
    *out = &d->base;
    return 0;
}
