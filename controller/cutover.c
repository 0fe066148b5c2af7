/*
 * Cutover drivers, common part: the wrappers of include/meridian/cutover.h,
 * the constructor that dispatches on a config's "driver", the "noop" driver,
 * and the pure helpers the drivers share (base64, epoch padding, full-jitter
 * backoff, HMAC-SHA256, hand-written config checks).
 *
 * Called by the operation state machine (apply/read) and by config loading
 * (mrd_cutover_config_check). The helpers have no I/O and no state.
 *
 * The noop driver remembers the last target per service in memory and
 * answers on the next loop iteration (a 0 ms timer per call), never from
 * inside apply()/read(); like etcd it refuses with MRD_ESTALE an older epoch
 * or the same epoch with another region. close() completes pending calls
 * with MRD_ECLOSED and frees the driver from the last timer's close callback.
 */
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cutover_internal.h"
#include "meridian/error.h"

/* ------------------------------------------------------------------ */
/* wrappers                                                           */

int mrd_cutover_apply(mrd_cutover_driver *d, const mrd_cutover_target *t, mrd_cutover_cb cb,
                      void *data)
{
    if (!d || !t || !cb)
        return MRD_EINVAL;
    return d->apply(d, t, cb, data);
}

int mrd_cutover_read(mrd_cutover_driver *d, const char *service, mrd_cutover_cb cb, void *data)
{
    if (!d || !service || !cb)
        return MRD_EINVAL;
    return d->read(d, service, cb, data);
}

void mrd_cutover_close(mrd_cutover_driver *d)
{
    if (d)
        d->close(d);
}

int mrd__cutover_name_ok(const char *s, size_t max, const char *extra)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (extra && strchr(extra, c))
            continue;
        return 0;
    }
    return 1;
}

int mrd_cutover_target_check(const mrd_cutover_target *t, char *err, size_t errlen)
{
    const char *why = NULL;
    if (!t)
        why = "no target";
    else if (!mrd__cutover_name_ok(t->service, 63, "._-"))
        why = "service: must be 1 to 63 characters of [A-Za-z0-9._-]";
    else if (t->epoch < 0)
        why = "epoch: must be >= 0";
    else if (!mrd__cutover_name_ok(t->primary_region, 63, "_-"))
        why = "primary_region: must be 1 to 63 characters of [A-Za-z0-9_-]";
    else if (t->old_region && t->old_region[0] && !mrd__cutover_name_ok(t->old_region, 63, "_-"))
        why = "old_region: must be 1 to 63 characters of [A-Za-z0-9_-]";
    else if (t->endpoint && strlen(t->endpoint) > 255)
        why = "endpoint: longer than 255 characters";
    else if (t->operation_id && strlen(t->operation_id) > 255)
        why = "operation_id: longer than 255 characters";
    if (!why)
        return 0;
    snprintf(err, errlen, "%s", why);
    return MRD_EINVAL;
}

/* ------------------------------------------------------------------ */
/* pure helpers                                                       */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t mrd__b64_encode(const void *in, size_t len, char *out, size_t outlen)
{
    const unsigned char *p = in;
    size_t need = (len + 2) / 3 * 4;
    if (!out || outlen < need + 1)
        return need;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_alphabet[v & 63] : '=';
    }
    out[o] = '\0';
    return need;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int mrd__b64_decode(const char *in, size_t len, void *out, size_t outlen, size_t *outn)
{
    unsigned char *o = out;
    size_t n = 0;
    if (len % 4 != 0)
        return MRD_EPARSE;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = in[i + k];
            if (c == '=' && last && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad) /* data after padding */
                return MRD_EPARSE;
            v[k] = b64_value(c);
            if (v[k] < 0)
                return MRD_EPARSE;
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t bytes = 3 - (size_t)pad;
        /* Canonical form: the bits dropped by the padding must be zero. */
        if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
            return MRD_EPARSE;
        if (n + bytes > outlen)
            return MRD_ETOOBIG;
        o[n++] = (unsigned char)(w >> 16);
        if (bytes > 1)
            o[n++] = (unsigned char)(w >> 8);
        if (bytes > 2)
            o[n++] = (unsigned char)w;
    }
    *outn = n;
    return 0;
}

int mrd__epoch_pad(int64_t epoch, char out[21])
{
    if (epoch < 0) {
        out[0] = '\0';
        return MRD_EINVAL;
    }
    snprintf(out, 21, "%020" PRId64, epoch);
    return 0;
}

int mrd__epoch_unpad(const char *s, size_t len, int64_t *out)
{
    if (!s || len != 20)
        return MRD_EPARSE;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return MRD_EPARSE;
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > (uint64_t)INT64_MAX)
            return MRD_EPARSE;
    }
    *out = (int64_t)v;
    return 0;
}

uint64_t mrd__backoff_full_jitter(unsigned attempt, uint64_t base_ms, uint64_t cap_ms, uint64_t rnd)
{
    uint64_t ceiling = base_ms;
    for (unsigned i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling = ceiling > UINT64_MAX / 2 ? UINT64_MAX : ceiling * 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    if (ceiling == UINT64_MAX)
        return rnd;
    return rnd % (ceiling + 1);
}

int mrd__hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
                         char out[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    static const unsigned char empty = 0;
    if (keylen > INT32_MAX)
        return MRD_EINVAL;
    if (!HMAC(EVP_sha256(), key ? key : &empty, (int)keylen, msg ? msg : &empty, msglen, mac,
              &maclen) ||
        maclen != 32) {
        out[0] = '\0';
        return MRD_EINTERNAL;
    }
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

void mrd__cutover_now_rfc3339(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char base[32];
    if (strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        base[0] = '\0';
    snprintf(out, 32, "%.19s.%03dZ", base, (int)(ts.tv_nsec / 1000000L));
}

/* ------------------------------------------------------------------ */
/* config checks                                                      */

int mrd__cutover_validate(const json_t *obj, const mrd_cfg_schema *schema, const char *path,
                          char *err, size_t errlen)
{
    char why[256];
    int rc = mrd_cfg_validate(obj, schema, why, sizeof(why));
    if (rc == 0)
        return 0;
    if (strncmp(why, "top level: ", 11) == 0)
        snprintf(err, errlen, "%s: %s", path, why + 11);
    else if (why[0] == '[')
        snprintf(err, errlen, "%s%s", path, why);
    else
        snprintf(err, errlen, "%s.%s", path, why);
    return MRD_ECONFIG;
}

int mrd__cutover_url_ok(const char *s)
{
    size_t skip = strncmp(s, "http://", 7) == 0 ? 7 : strncmp(s, "https://", 8) == 0 ? 8 : 0;
    return skip && strlen(s) > skip && s[skip] != '/' && !strpbrk(s, " \t\r\n");
}

static const char *const driver_names[] = {"noop", "pdns", "etcd", NULL};
static const mrd_cfg_field noop_fields[] = {
    {"driver", MRD_CFG_STRING, 1, 0, 0, driver_names, 0, NULL},
    {"required", MRD_CFG_BOOL, 0, 0, 0, NULL, 0, NULL},
};
static const mrd_cfg_schema noop_schema = {noop_fields, 2};
/* Only the dispatch key: each driver checks the rest. */
static const mrd_cfg_field kind_fields[] = {
    {"driver", MRD_CFG_STRING, 1, 0, 0, driver_names, 0, NULL},
};

static int noop_check(const json_t *cfg, char *err, size_t errlen)
{
    return cfg ? mrd__cutover_validate(cfg, &noop_schema, "noop", err, errlen) : 0;
}

static int driver_kind(const json_t *cfg, const char **kind, char *err, size_t errlen)
{
    if (json_is_array(cfg)) {
        *kind = "webhook";
        return 0;
    }
    if (!json_is_object(cfg)) {
        snprintf(err, errlen, "driver configuration must be an object (webhooks: an array)");
        return MRD_ECONFIG;
    }
    json_t *only = json_object();
    json_t *drv = json_object_get(cfg, "driver");
    if (!only || (drv && json_object_set(only, "driver", drv) != 0)) {
        json_decref(only);
        return MRD_ENOMEM;
    }
    const mrd_cfg_schema schema = {kind_fields, 1};
    char why[200];
    int rc = mrd_cfg_validate(only, &schema, why, sizeof(why));
    json_decref(only);
    if (rc) {
        snprintf(err, errlen, "%s", why);
        return rc;
    }
    *kind = json_string_value(json_object_get(cfg, "driver"));
    return 0;
}

int mrd_cutover_config_check(const json_t *cfg, char *err, size_t errlen)
{
    const char *kind;
    int rc = driver_kind(cfg, &kind, err, errlen);
    if (rc)
        return rc;
    if (!strcmp(kind, "webhook"))
        return mrd__cutover_webhook_check(cfg, err, errlen);
    if (!strcmp(kind, "pdns"))
        return mrd__cutover_pdns_check(cfg, err, errlen);
    if (!strcmp(kind, "etcd"))
        return mrd__cutover_etcd_check(cfg, err, errlen);
    return noop_check(cfg, err, errlen);
}

int mrd_cutover_driver_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                            size_t errlen)
{
    const char *kind;
    int rc = driver_kind(cfg, &kind, err, errlen);
    if (rc)
        return rc;
    if (!strcmp(kind, "webhook"))
        return mrd_cutover_webhook_init(out, loop, cfg, err, errlen);
    if (!strcmp(kind, "pdns"))
        return mrd_cutover_pdns_init(out, loop, cfg, err, errlen);
    if (!strcmp(kind, "etcd"))
        return mrd_cutover_etcd_init(out, loop, cfg, err, errlen);
    return mrd_cutover_noop_init(out, loop, cfg, err, errlen);
}

/* ------------------------------------------------------------------ */
/* noop driver                                                        */

typedef struct noop_driver noop_driver;

typedef struct noop_call {
    struct noop_call *prev, *next;
    noop_driver *d;
    uv_timer_t timer;
    mrd_cutover_cb cb;
    void *data;
    int status;
    int has_obs;
    char message[128];
    mrd_cutover_observed obs;
} noop_call;

struct noop_driver {
    mrd_cutover_driver base;
    uv_loop_t *loop;
    json_t *state;    /* service -> {"epoch", "region", "endpoint"} */
    noop_call *calls; /* pending (timer running) */
    size_t live;      /* calls whose timer handle is not closed yet */
    int closing;
};

static void noop_free_if_done(noop_driver *d)
{
    if (d->closing && d->live == 0) {
        json_decref(d->state);
        free(d);
    }
}

static void noop_call_closed(uv_handle_t *h)
{
    noop_call *c = h->data;
    noop_driver *d = c->d;
    free(c);
    d->live--;
    noop_free_if_done(d);
}

static void noop_unlink(noop_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->d->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void noop_deliver(noop_call *c)
{
    mrd_cutover_result res = {c->status, c->message, c->has_obs ? &c->obs : NULL, 0};
    noop_unlink(c);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, noop_call_closed);
    c->cb(&res, c->data);
}

static void noop_timer_cb(uv_timer_t *t)
{
    noop_deliver(t->data);
}

static void noop_fill(const json_t *st, mrd_cutover_observed *obs)
{
    memset(obs, 0, sizeof(*obs));
    obs->epoch = -1;
    if (!st)
        return;
    obs->ok = 1;
    obs->epoch = json_integer_value(json_object_get(st, "epoch"));
    snprintf(obs->region, sizeof(obs->region), "%s",
             json_string_value(json_object_get(st, "region")));
    snprintf(obs->value, sizeof(obs->value), "%s",
             json_string_value(json_object_get(st, "endpoint")));
}

static noop_call *noop_call_new(noop_driver *d, mrd_cutover_cb cb, void *data)
{
    noop_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->d = d;
    c->cb = cb;
    c->data = data;
    if (uv_timer_init(d->loop, &c->timer) != 0) {
        free(c);
        return NULL;
    }
    c->timer.data = c;
    d->live++;
    c->next = d->calls;
    if (d->calls)
        d->calls->prev = c;
    d->calls = c;
    uv_timer_start(&c->timer, noop_timer_cb, 0, 0);
    return c;
}

static int noop_apply(mrd_cutover_driver *self, const mrd_cutover_target *t, mrd_cutover_cb cb,
                      void *data)
{
    noop_driver *d = (noop_driver *)self;
    char why[160];
    if (d->closing)
        return MRD_ECLOSED;
    if (mrd_cutover_target_check(t, why, sizeof(why)))
        return MRD_EINVAL;
    json_t *st = json_object_get(d->state, t->service);
    int status = 0;
    char message[128] = "";
    json_int_t held = st ? json_integer_value(json_object_get(st, "epoch")) : -1;
    const char *held_region = st ? json_string_value(json_object_get(st, "region")) : NULL;
    /* Like etcd: an older epoch, or the same epoch with another primary. */
    if (st && (held > t->epoch ||
               (held == t->epoch && held_region && strcmp(held_region, t->primary_region)))) {
        status = MRD_ESTALE;
        snprintf(message, sizeof(message), "target holds epoch %" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(st, "epoch")));
    } else {
        json_t *nst = json_pack("{sIssss}", "epoch", (json_int_t)t->epoch, "region",
                                t->primary_region, "endpoint", t->endpoint ? t->endpoint : "");
        if (!nst || json_object_set_new(d->state, t->service, nst) != 0)
            return MRD_ENOMEM;
        st = nst;
    }
    noop_call *c = noop_call_new(d, cb, data);
    if (!c)
        return MRD_ENOMEM; /* the state may hold t already: apply is idempotent */
    c->status = status;
    snprintf(c->message, sizeof(c->message), "%s", message);
    c->has_obs = 1;
    noop_fill(st, &c->obs);
    return 0;
}

static int noop_read(mrd_cutover_driver *self, const char *service, mrd_cutover_cb cb, void *data)
{
    noop_driver *d = (noop_driver *)self;
    if (d->closing)
        return MRD_ECLOSED;
    if (!mrd__cutover_name_ok(service, 63, "._-"))
        return MRD_EINVAL;
    noop_call *c = noop_call_new(d, cb, data);
    if (!c)
        return MRD_ENOMEM;
    c->has_obs = 1;
    noop_fill(json_object_get(d->state, service), &c->obs);
    return 0;
}

static void noop_close(mrd_cutover_driver *self)
{
    noop_driver *d = (noop_driver *)self;
    if (d->closing)
        return;
    d->closing = 1;
    /* Each delivery unlinks its call; bounded by the calls pending now,
     * since apply/read refuse new ones once closing. */
    while (d->calls) {
        noop_call *c = d->calls;
        c->status = MRD_ECLOSED;
        snprintf(c->message, sizeof(c->message), "driver closed");
        c->has_obs = 0;
        noop_deliver(c);
    }
    noop_free_if_done(d);
}

int mrd_cutover_noop_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                          size_t errlen)
{
    int rc = noop_check(cfg, err, errlen);
    if (rc)
        return rc;
    noop_driver *d = calloc(1, sizeof(*d));
    if (!d)
        return MRD_ENOMEM;
    d->state = json_object();
    if (!d->state) {
        free(d);
        return MRD_ENOMEM;
    }
    d->loop = loop;
    d->base.name = "noop";
    d->base.apply = noop_apply;
    d->base.read = noop_read;
    d->base.close = noop_close;
    *out = &d->base;
    return 0;
}

int mrd__cutover_http_status(const mrd_http_client_result *r, const char *what, char *msg,
                             size_t msglen)
{
    if (r->status >= 200 && r->status < 300) {
        snprintf(msg, msglen, "%s", "");
        return 0;
    }
    if (r->status == 0) {
        const char *e = r->error ? r->error : "transport error";
        if (strcmp(e, "closed") == 0) {
            snprintf(msg, msglen, "%s: request cancelled", what);
            return MRD_ECLOSED;
        }
        snprintf(msg, msglen, "%s: %s", what, e);
        return strstr(e, "time") ? MRD_ETIMEOUT : MRD_EHTTP;
    }
    /* First line of the body, bounded, as a hint. */
    char hint[120];
    size_t n = 0;
    for (; r->body && n < r->body_len && n < sizeof(hint) - 1; n++) {
        if (r->body[n] == '\n' || r->body[n] == '\r')
            break;
        hint[n] = (unsigned char)r->body[n] < 0x20 ? ' ' : r->body[n];
    }
    hint[n] = '\0';
    snprintf(msg, msglen, "%s: http status %d%s%s", what, r->status, n ? ": " : "", hint);
    switch (r->status) {
    case 401:
    case 403:
        return MRD_EUNAUTHORIZED;
    case 404:
        return MRD_ENOTFOUND;
    case 400:
    case 409:
    case 422:
        return MRD_EINVAL;
    default:
        return MRD_EHTTP;
    }
}

const char *mrd__cfg_str_or(const json_t *obj, const char *key, const char *def)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : def;
}

long long mrd__cfg_int_or(const json_t *obj, const char *key, long long def)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : def;
}
