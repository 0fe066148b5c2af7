/*
 * PowerDNS cutover driver: points a service's record at the new primary's
 * region through the authoritative HTTP API (X-API-Key; zones under
 * /api/v1/servers/<server_id>/zones/<zone>).
 * apply() sends ONE PATCH with two rrsets, changetype REPLACE: the record
 * (name, A/AAAA/CNAME, ttl, values[region]) and the TXT _meridian.<name> =
 * "epoch=N primary=REGION". PowerDNS applies a PATCH in one backend
 * transaction and purges its caches: DNS answers the new value at once and
 * the record never disagrees with its TXT. Re-running apply() is harmless.
 * PowerDNS has no compare-and-set: fencing comes from the store and the etcd
 * step before the dns step; read() lets reconciliation see the TXT epoch.
 * read() GETs the zone filtered on each name (rrset_name=, two requests).
 * Failures reach the callback as the MRD_E* of mrd__cutover_http_status();
 * nothing is retried here (the operation state machine retries). JSON
 * builders and parsers are pure and unit-tested.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cutover_internal.h"
#include "meridian/error.h"
#include "meridian/log.h"

/* ------------------------------------------------------------------ */
/* pure part                                                          */

int mrd__pdns_value_ok(const char *type, const char *value)
{
    unsigned char buf[16];
    if (!type || !value || !value[0] || strlen(value) > 253)
        return 0;
    if (!strcmp(type, "A"))
        return inet_pton(AF_INET, value, buf) == 1;
    if (!strcmp(type, "AAAA"))
        return inet_pton(AF_INET6, value, buf) == 1;
    if (!strcmp(type, "CNAME")) {
        size_t n = strlen(value);
        return n >= 2 && value[n - 1] == '.' && value[0] != '.' && !strstr(value, "..") &&
               mrd__cutover_name_ok(value, 253, ".-_");
    }
    return 0;
}

size_t mrd__pdns_txt_content(char *out, size_t outlen, int64_t epoch, const char *region)
{
    int n = snprintf(out, outlen, "\"epoch=%" PRId64 " primary=%s\"", epoch, region);
    return n < 0 ? 0 : (size_t)n;
}

int mrd__pdns_txt_parse(const char *content, int64_t *epoch, char *region, size_t regionlen)
{
    char buf[256];
    if (!content)
        return MRD_EPARSE;
    size_t n = strlen(content);
    if (n >= 2 && content[0] == '"' && content[n - 1] == '"') {
        content++;
        n -= 2;
    }
    if (n >= sizeof(buf))
        return MRD_EPARSE;
    memcpy(buf, content, n);
    buf[n] = '\0';
    if (strncmp(buf, "epoch=", 6) != 0)
        return MRD_EPARSE;
    const char *p = buf + 6;
    int64_t v = 0;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits >= 19 || v > (INT64_MAX - (*p - '0')) / 10)
            return MRD_EPARSE;
        v = v * 10 + (*p - '0');
    }
    if (digits == 0 || strncmp(p, " primary=", 9) != 0)
        return MRD_EPARSE;
    p += 9;
    if (!mrd__cutover_name_ok(p, 63, "_-") || strlen(p) >= regionlen)
        return MRD_EPARSE;
    *epoch = v;
    snprintf(region, regionlen, "%s", p);
    return 0;
}

static json_t *pdns_rrset(const char *name, const char *type, long ttl, const char *content)
{
    return json_pack("{sssssIsss[{sssb}]}", "name", name, "type", type, "ttl", (json_int_t)ttl,
                     "changetype", "REPLACE", "records", "content", content, "disabled", 0);
}

char *mrd__pdns_patch_body(const char *name, const char *type, long ttl, const char *value,
                           int64_t epoch, const char *region)
{
    char txt_name[300], txt[128];
    if (snprintf(txt_name, sizeof(txt_name), "_meridian.%s", name) >= (int)sizeof(txt_name))
        return NULL;
    if (mrd__pdns_txt_content(txt, sizeof(txt), epoch, region) >= sizeof(txt))
        return NULL;
    json_t *rec = pdns_rrset(name, type, ttl, value);
    json_t *tx = pdns_rrset(txt_name, "TXT", ttl, txt);
    json_t *doc = rec && tx ? json_pack("{s[oo]}", "rrsets", rec, tx) : NULL;
    if (!doc) {
        json_decref(rec);
        json_decref(tx);
        return NULL;
    }
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

int mrd__pdns_zone_find(const json_t *zone, const char *name, const char *type, char *content,
                        size_t contentlen)
{
    json_t *rrsets = json_object_get(zone, "rrsets");
    if (!json_is_object(zone) || !json_is_array(rrsets))
        return MRD_EPARSE;
    size_t i, j;
    json_t *rr, *rec;
    json_array_foreach(rrsets, i, rr)
    {
        const char *n = json_string_value(json_object_get(rr, "name"));
        const char *t = json_string_value(json_object_get(rr, "type"));
        if (!n || !t || strcasecmp(n, name) != 0 || strcmp(t, type) != 0)
            continue;
        json_t *records = json_object_get(rr, "records");
        if (!json_is_array(records))
            return MRD_EPARSE;
        json_array_foreach(records, j, rec)
        {
            const char *c = json_string_value(json_object_get(rec, "content"));
            if (!c)
                return MRD_EPARSE;
            if (json_is_true(json_object_get(rec, "disabled")))
                continue;
            snprintf(content, contentlen, "%s", c);
            return 1;
        }
        return 0;
    }
    return 0;
}

int mrd__pdns_observed(const json_t *record_zone, const json_t *txt_zone, const char *name,
                       const char *type, mrd_cutover_observed *obs)
{
    char txt_name[300], txt[256];
    memset(obs, 0, sizeof(*obs));
    obs->epoch = -1;
    if (snprintf(txt_name, sizeof(txt_name), "_meridian.%s", name) >= (int)sizeof(txt_name))
        return MRD_EPARSE;
    int has_rec = mrd__pdns_zone_find(record_zone, name, type, obs->value, sizeof(obs->value));
    if (has_rec < 0)
        return has_rec;
    int has_txt = mrd__pdns_zone_find(txt_zone, txt_name, "TXT", txt, sizeof(txt));
    if (has_txt < 0)
        return has_txt;
    int txt_ok = 0;
    if (has_txt) {
        txt_ok = mrd__pdns_txt_parse(txt, &obs->epoch, obs->region, sizeof(obs->region)) == 0;
        if (!txt_ok)
            obs->epoch = -1;
    }
    snprintf(obs->detail, sizeof(obs->detail), "type=%s record=%s txt=%s", type,
             has_rec ? "present" : "absent",
             !has_txt ? "absent"
             : txt_ok ? "present"
                      : "malformed");
    obs->ok = has_rec && txt_ok;
    return 0;
}

/* ------------------------------------------------------------------ */
/* config                                                             */

static const char *const pdns_driver_names[] = {"pdns", NULL};
static const char *const pdns_types[] = {"A", "AAAA", "CNAME", NULL};
static const mrd_cfg_field pdns_fields[] = {
    {"driver", MRD_CFG_STRING, 1, 0, 0, pdns_driver_names, 0, NULL},
    {"api_url", MRD_CFG_STRING, 1, 1, 2048, NULL, 0, NULL},
    {"api_key", MRD_CFG_STRING, 1, 1, 1024, NULL, 0, NULL},
    {"server_id", MRD_CFG_STRING, 0, 1, 63, NULL, 0, NULL},
    {"zone", MRD_CFG_STRING, 1, 1, 253, NULL, 0, NULL},
    {"name", MRD_CFG_STRING, 1, 1, 240, NULL, 0, NULL},
    {"type", MRD_CFG_STRING, 1, 0, 0, pdns_types, 0, NULL},
    {"ttl", MRD_CFG_INT, 1, 1, 86400, NULL, 0, NULL},
    {"values", MRD_CFG_MAP, 0, 0, 0, NULL, MRD_CFG_STRING, NULL},
    {"required", MRD_CFG_BOOL, 0, 0, 0, NULL, 0, NULL},
    {"timeout_ms", MRD_CFG_INT, 0, 100, 600000, NULL, 0, NULL},
};
static const mrd_cfg_schema pdns_schema = {pdns_fields,
                                           sizeof(pdns_fields) / sizeof(pdns_fields[0])};

static int dns_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 2 && s[n - 1] == '.' && s[0] != '.' && !strstr(s, "..") &&
           mrd__cutover_name_ok(s, 253, ".-_");
}

static int bad(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return MRD_ECONFIG;
}

int mrd__cutover_pdns_check(const json_t *cfg, char *err, size_t errlen)
{
    int rc = mrd__cutover_validate(cfg, &pdns_schema, "dns", err, errlen);
    if (rc)
        return rc;
    const char *zone = mrd__cfg_str_or(cfg, "zone", ""), *name = mrd__cfg_str_or(cfg, "name", "");
    const char *type = mrd__cfg_str_or(cfg, "type", "");
    const char *server_id = mrd__cfg_str_or(cfg, "server_id", NULL);
    if (!mrd__cutover_url_ok(mrd__cfg_str_or(cfg, "api_url", "")))
        return bad(err, errlen, "dns.api_url: must be an http:// or https:// URL");
    if (strpbrk(mrd__cfg_str_or(cfg, "api_key", ""), "\r\n"))
        return bad(err, errlen, "dns.api_key: must be one line");
    if (server_id && !mrd__cutover_name_ok(server_id, 63, "._-"))
        return bad(err, errlen, "dns.server_id: must be [A-Za-z0-9._-]");
    if (!dns_name_ok(zone))
        return bad(err, errlen, "dns.zone: must be a domain name with the trailing dot");
    if (!dns_name_ok(name))
        return bad(err, errlen, "dns.name: must be a domain name with the trailing dot");
    size_t nl = strlen(name), zl = strlen(zone);
    if (!(nl == zl && !strcasecmp(name, zone)) &&
        !(nl > zl && !strcasecmp(name + nl - zl, zone) && name[nl - zl - 1] == '.'))
        return bad(err, errlen, "dns.name: must be inside dns.zone");
    const char *region;
    json_t *v;
    json_object_foreach(json_object_get(cfg, "values"), region, v)
    {
        if (!mrd__cutover_name_ok(region, 63, "_-")) {
            snprintf(err, errlen, "dns.values.%.63s: region names are [A-Za-z0-9_-]", region);
            return MRD_ECONFIG;
        }
        if (!mrd__pdns_value_ok(type, json_string_value(v))) {
            snprintf(err, errlen, "dns.values.%s: must be a valid %s value%s", region, type,
                     !strcmp(type, "CNAME") ? " (a name with the trailing dot)" : "");
            return MRD_ECONFIG;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* driver                                                             */

typedef struct pdns_driver pdns_driver;

typedef struct pdns_call {
    pdns_driver *d;
    mrd_cutover_cb cb;
    void *data;
    int is_read;
    int attempts;
    json_t *record_zone; /* read: answer of the first GET */
    mrd_cutover_observed obs;
} pdns_call;

struct pdns_driver {
    mrd_cutover_driver base;
    uv_loop_t *loop;
    mrd_http_client *http;
    char *zone_url; /* <api_url>/api/v1/servers/<id>/zones/<zone> */
    char *key_header;
    char *name, *txt_name, *type;
    long ttl, timeout_ms;
    json_t *values; /* region -> value (own reference) */
    size_t pending; /* calls whose callback has not run */
    int closing, in_close;
};

static void pdns_maybe_free(pdns_driver *d)
{
    if (!d->closing || d->in_close || d->pending)
        return;
    free(d->zone_url);
    free(d->key_header);
    free(d->name);
    free(d->txt_name);
    free(d->type);
    json_decref(d->values);
    free(d);
}

static void pdns_finish(pdns_call *c, int status, const char *message, int with_obs)
{
    pdns_driver *d = c->d;
    mrd_cutover_result res = {status, message ? message : "", with_obs ? &c->obs : NULL,
                              c->attempts};
    if (status && status != MRD_ECLOSED)
        mrd_log(MRD_LOG_WARN, "dns cutover call failed", MRD_S("driver", "pdns"),
                MRD_S("name", d->name), MRD_S("error", mrd_err_name(status)),
                MRD_S("detail", res.message));
    c->cb(&res, c->data);
    json_decref(c->record_zone);
    free(c);
    d->pending--;
    pdns_maybe_free(d);
}

static void pdns_http_cb(const mrd_http_client_result *r, void *data);

static int pdns_send(pdns_call *c, const char *method, const char *url, const char *body)
{
    pdns_driver *d = c->d;
    const char *headers[] = {d->key_header, "Content-Type: application/json",
                             "Accept: application/json", NULL};
    mrd_http_client_req req = {0};
    req.method = method;
    req.url = url;
    req.body = body;
    req.body_len = body ? strlen(body) : 0;
    req.headers = headers;
    req.timeout_ms = d->timeout_ms;
    int rc = mrd_http_client_request(d->http, &req, pdns_http_cb, c);
    if (rc == 0)
        c->attempts++;
    return rc;
}

static int pdns_get(pdns_call *c, const char *rrset_name)
{
    char url[2048];
    if (snprintf(url, sizeof(url), "%s?rrset_name=%s", c->d->zone_url, rrset_name) >=
        (int)sizeof(url))
        return MRD_EINVAL;
    return pdns_send(c, "GET", url, NULL);
}

static void pdns_http_cb(const mrd_http_client_result *r, void *data)
{
    pdns_call *c = data;
    pdns_driver *d = c->d;
    char msg[256];
    int rc = mrd__cutover_http_status(r, "powerdns", msg, sizeof(msg));
    if (d->closing) { /* the client is failing what was pending */
        pdns_finish(c, MRD_ECLOSED, "driver closed", 0);
        return;
    }
    if (rc) {
        pdns_finish(c, rc, msg, 0);
        return;
    }
    if (!c->is_read) { /* PATCH done: the target holds what we wrote */
        pdns_finish(c, 0, "", 1);
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(r->body, r->body_len, 0, &jerr);
    if (!doc) {
        pdns_finish(c, MRD_EPARSE, "powerdns: answer is not json", 0);
        return;
    }
    if (!c->record_zone) {
        c->record_zone = doc;
        rc = pdns_get(c, d->txt_name);
        if (rc)
            pdns_finish(c, rc, "powerdns: cannot start request", 0);
        return;
    }
    rc = mrd__pdns_observed(c->record_zone, doc, d->name, d->type, &c->obs);
    json_decref(doc);
    if (rc)
        pdns_finish(c, rc, "powerdns: malformed zone document", 0);
    else
        pdns_finish(c, 0, "", 1);
}

static pdns_call *pdns_call_new(pdns_driver *d, mrd_cutover_cb cb, void *data, int is_read)
{
    pdns_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->d = d;
    c->cb = cb;
    c->data = data;
    c->is_read = is_read;
    c->obs.epoch = -1;
    return c;
}

static int pdns_apply(mrd_cutover_driver *self, const mrd_cutover_target *t, mrd_cutover_cb cb,
                      void *data)
{
    pdns_driver *d = (pdns_driver *)self;
    char why[160];
    if (d->closing)
        return MRD_ECLOSED;
    if (mrd_cutover_target_check(t, why, sizeof(why)))
        return MRD_EINVAL;
    const char *value = json_string_value(json_object_get(d->values, t->primary_region));
    if (!value && t->endpoint && mrd__pdns_value_ok(d->type, t->endpoint))
        value = t->endpoint;
    if (!value) {
        mrd_log(MRD_LOG_ERROR, "no dns value for region", MRD_S("name", d->name),
                MRD_S("region", t->primary_region));
        return MRD_EINVAL;
    }
    char *body = mrd__pdns_patch_body(d->name, d->type, d->ttl, value, t->epoch, t->primary_region);
    if (!body)
        return MRD_ENOMEM;
    pdns_call *c = pdns_call_new(d, cb, data, 0);
    if (!c) {
        free(body);
        return MRD_ENOMEM;
    }
    c->obs.ok = 1;
    c->obs.epoch = t->epoch;
    snprintf(c->obs.region, sizeof(c->obs.region), "%s", t->primary_region);
    snprintf(c->obs.value, sizeof(c->obs.value), "%s", value);
    snprintf(c->obs.detail, sizeof(c->obs.detail), "type=%s ttl=%ld", d->type, d->ttl);
    int rc = pdns_send(c, "PATCH", d->zone_url, body);
    free(body);
    if (rc) {
        free(c);
        return rc;
    }
    d->pending++;
    return 0;
}

static int pdns_read(mrd_cutover_driver *self, const char *service, mrd_cutover_cb cb, void *data)
{
    pdns_driver *d = (pdns_driver *)self;
    if (d->closing)
        return MRD_ECLOSED;
    if (!mrd__cutover_name_ok(service, 63, "._-"))
        return MRD_EINVAL;
    pdns_call *c = pdns_call_new(d, cb, data, 1);
    if (!c)
        return MRD_ENOMEM;
    int rc = pdns_get(c, d->name);
    if (rc) {
        free(c);
        return rc;
    }
    d->pending++;
    return 0;
}

static void pdns_close(mrd_cutover_driver *self)
{
    pdns_driver *d = (pdns_driver *)self;
    if (d->closing)
        return;
    d->closing = 1;
    d->in_close = 1;
    mrd_http_client_close(d->http); /* fails pending requests: pdns_http_cb */
    d->in_close = 0;
    pdns_maybe_free(d);
}

static char *dup_printf(const char *fmt, const char *a, const char *b, const char *c)
{
    int n = snprintf(NULL, 0, fmt, a, b, c);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        snprintf(s, (size_t)n + 1, fmt, a, b, c);
    return s;
}

int mrd_cutover_pdns_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                          size_t errlen)
{
    int rc = mrd__cutover_pdns_check(cfg, err, errlen);
    if (rc)
        return rc;
    pdns_driver *d = calloc(1, sizeof(*d));
    if (!d)
        return MRD_ENOMEM;
    char api[2048];
    snprintf(api, sizeof(api), "%s", mrd__cfg_str_or(cfg, "api_url", ""));
    size_t al = strlen(api);
    while (al > 0 && api[al - 1] == '/') /* bounded by the length */
        api[--al] = '\0';
    d->loop = loop;
    d->zone_url = dup_printf("%s/api/v1/servers/%s/zones/%s", api,
                             mrd__cfg_str_or(cfg, "server_id", "localhost"),
                             mrd__cfg_str_or(cfg, "zone", ""));
    d->key_header = dup_printf("X-API-Key: %s%s%s", mrd__cfg_str_or(cfg, "api_key", ""), "", "");
    d->name = strdup(mrd__cfg_str_or(cfg, "name", ""));
    d->txt_name = dup_printf("_meridian.%s%s%s", d->name ? d->name : "", "", "");
    d->type = strdup(mrd__cfg_str_or(cfg, "type", "A"));
    d->ttl = (long)json_integer_value(json_object_get(cfg, "ttl"));
    json_t *to = json_object_get(cfg, "timeout_ms");
    d->timeout_ms = to ? (long)json_integer_value(to) : 5000;
    json_t *values = json_object_get(cfg, "values");
    d->values = values ? json_deep_copy(values) : json_object();
    d->base.name = "pdns";
    d->base.apply = pdns_apply;
    d->base.read = pdns_read;
    d->base.close = pdns_close;
    if (!d->zone_url || !d->key_header || !d->name || !d->txt_name || !d->type || !d->values) {
        d->closing = 1;
        pdns_maybe_free(d);
        return MRD_ENOMEM;
    }
    rc = mrd_http_client_init(&d->http, loop);
    if (rc) {
        snprintf(err, errlen, "dns: cannot start the http client");
        d->closing = 1;
        pdns_maybe_free(d);
        return rc;
    }
    *out = &d->base;
    return 0;
}
