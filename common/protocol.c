/*
 * The agent protocol (include/meridian/protocol.h): heartbeat requests and
 * answers, peer lease requests and answers, to and from jansson values.
 *
 * Called by the agent (encodes requests, decodes answers; serves and asks
 * peer leases) and by the controller's ingest (decodes requests, encodes
 * answers). Pure: no I/O, no global state.
 *
 * Decoding validates every known field before the caller sees any value and
 * stops at the first error, which names the field path ("members[2].
 * lag_bytes: must be a non-negative integer"). On any failure the output
 * struct is freed and left zeroed, so a caller never acts on half a message.
 * Loops are bounded by the array limits, checked before iterating.
 */
#include "meridian/protocol.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/error.h"

/* ---- names ---- */

static const char *const check_status_names[] = {"passing", "warning", "critical", NULL};
static const char *const member_role_names[] = {"unknown", "primary", "replica", "fenced", NULL};
static const char *const cmd_kind_names[] = {"fence", "unfence", "promote", "rejoin", NULL};
static const char *const result_status_names[] = {"done", "failed", "refused", NULL};

static const char *enum_name(const char *const *names, int v)
{
    for (int i = 0; names[i]; i++)
        if (i == v)
            return names[i];
    return "?";
}

static int enum_parse(const char *const *names, const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

const char *mrd_check_status_name(mrd_check_status s)
{
    return enum_name(check_status_names, (int)s);
}

const char *mrd_member_role_name(mrd_member_role r)
{
    return enum_name(member_role_names, (int)r);
}

const char *mrd_cmd_kind_name(mrd_cmd_kind k)
{
    return enum_name(cmd_kind_names, (int)k);
}

const char *mrd_result_status_name(mrd_result_status s)
{
    return enum_name(result_status_names, (int)s);
}

int mrd_check_status_parse(const char *name, mrd_check_status *out)
{
    int v = enum_parse(check_status_names, name);
    if (v < 0)
        return MRD_EINVAL;
    *out = (mrd_check_status)v;
    return 0;
}

int mrd_member_role_parse(const char *name, mrd_member_role *out)
{
    int v = enum_parse(member_role_names, name);
    if (v < 0)
        return MRD_EINVAL;
    *out = (mrd_member_role)v;
    return 0;
}

int mrd_cmd_kind_parse(const char *name, mrd_cmd_kind *out)
{
    int v = enum_parse(cmd_kind_names, name);
    if (v < 0)
        return MRD_EINVAL;
    *out = (mrd_cmd_kind)v;
    return 0;
}

int mrd_result_status_parse(const char *name, mrd_result_status *out)
{
    int v = enum_parse(result_status_names, name);
    if (v < 0)
        return MRD_EINVAL;
    *out = (mrd_result_status)v;
    return 0;
}

/* ---- init / free ---- */

void mrd_hb_request_init(mrd_hb_request *r)
{
    memset(r, 0, sizeof(*r));
}

void mrd_hb_answer_init(mrd_hb_answer *a)
{
    memset(a, 0, sizeof(*a));
}

static void member_free_lists(mrd_hb_member *m)
{
    free(m->leases_required);
    free(m->leases_held);
    m->leases_required = m->leases_held = NULL;
    m->nleases_required = m->nleases_held = 0;
    m->have_leases = 0;
}

static void service_free_peers(mrd_hb_service *s)
{
    free(s->peers);
    s->peers = NULL;
    s->npeers = 0;
    s->have_peers = 0;
}

void mrd_hb_request_free(mrd_hb_request *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->members && i < r->nmembers; i++)
        member_free_lists(&r->members[i]);
    free(r->epochs);
    free(r->checks);
    free(r->members);
    free(r->probes);
    free(r->results);
    mrd_hb_request_init(r);
}

void mrd_hb_answer_free(mrd_hb_answer *a)
{
    if (!a)
        return;
    for (size_t i = 0; a->commands && i < a->ncommands; i++)
        json_decref(a->commands[i].args);
    for (size_t i = 0; a->services && i < a->nservices; i++)
        service_free_peers(&a->services[i]);
    free(a->services);
    free(a->commands);
    free(a->ack);
    mrd_hb_answer_init(a);
}

/* ---- encoding ---- */

/* json_object_set_new that remembers failure: the value reference is always
 * consumed. */
static void put(json_t *obj, const char *key, json_t *v, int *bad)
{
    if (!v || json_object_set_new(obj, key, v) != 0)
        *bad = 1;
}

static void put_in_array(json_t *arr, json_t *v, int *bad)
{
    if (!v || json_array_append_new(arr, v) != 0)
        *bad = 1;
}

static json_t *str_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

static json_t *int_or_null(int64_t v)
{
    return v < 0 ? json_null() : json_integer((json_int_t)v);
}

static json_t *enum_json(const char *const *names, int v)
{
    const char *n = enum_name(names, v);
    return strcmp(n, "?") == 0 ? NULL : json_string(n);
}

/* A member's standbys; NULL when out of memory (put() then fails). */
static json_t *standbys_json(const mrd_hb_member *m)
{
    int bad = 0;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < m->nstandbys && i < MRD_PROTO_MAX_STANDBYS; i++) {
        const mrd_hb_standby *sb = &m->standbys[i];
        json_t *e = json_object();
        if (e) {
            put(e, "name", json_string(sb->name), &bad);
            put(e, "address", str_or_null(sb->address), &bad);
            put(e, "state", json_string(sb->state), &bad);
            put(e, "sync_state", str_or_null(sb->sync_state), &bad);
            put(e, "sent_position", int_or_null(sb->sent_position > 0 ? sb->sent_position : -1),
                &bad);
            put(e, "flush_position", int_or_null(sb->flush_position > 0 ? sb->flush_position : -1),
                &bad);
            put(e, "replay_position",
                int_or_null(sb->replay_position > 0 ? sb->replay_position : -1), &bad);
            put(e, "replay_lag_ms", int_or_null(sb->replay_lag_ms), &bad);
        }
        put_in_array(arr, e, &bad);
    }
    if (bad) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* A list of names as a JSON array; NULL when out of memory. */
static json_t *names_json(const mrd_hb_name *names, size_t n)
{
    int bad = 0;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        put_in_array(arr, json_string(names[i].name), &bad);
    if (bad) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

/* A service's peer set; NULL when out of memory. */
static json_t *peers_json(const mrd_hb_service *s)
{
    int bad = 0;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < s->npeers; i++) {
        const mrd_hb_peer *p = &s->peers[i];
        json_t *e = json_object();
        if (e) {
            put(e, "member", json_string(p->member), &bad);
            put(e, "node", json_string(p->node), &bad);
            put(e, "agent_url", str_or_null(p->agent_url), &bad);
        }
        put_in_array(arr, e, &bad);
    }
    if (bad) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

json_t *mrd_hb_request_to_json(const mrd_hb_request *r)
{
    int bad = 0;
    json_t *o = json_object();
    if (!o)
        return NULL;
    put(o, "node", json_string(r->node), &bad);
    put(o, "region", json_string(r->region), &bad);
    put(o, "seq", json_integer((json_int_t)r->seq), &bad);
    if (r->api_url[0])
        put(o, "api_url", json_string(r->api_url), &bad);
    if (r->urgent)
        put(o, "urgent", json_true(), &bad);

    json_t *ep = json_object();
    for (size_t i = 0; ep && i < r->nepochs; i++)
        put(ep, r->epochs[i].service, json_integer((json_int_t)r->epochs[i].epoch), &bad);
    put(o, "epochs", ep, &bad);

    json_t *arr = json_array();
    for (size_t i = 0; arr && i < r->nchecks; i++) {
        const mrd_hb_check *c = &r->checks[i];
        json_t *e = json_object();
        if (e) {
            put(e, "name", json_string(c->name), &bad);
            put(e, "status", enum_json(check_status_names, (int)c->status), &bad);
            put(e, "output", json_string(c->output), &bad);
            put(e, "duration_ms", json_integer((json_int_t)c->duration_ms), &bad);
        }
        put_in_array(arr, e, &bad);
    }
    put(o, "checks", arr, &bad);

    arr = json_array();
    for (size_t i = 0; arr && i < r->nmembers; i++) {
        const mrd_hb_member *m = &r->members[i];
        json_t *e = json_object();
        if (e) {
            put(e, "service", json_string(m->service), &bad);
            put(e, "name", json_string(m->name), &bad);
            put(e, "kind", json_string(m->kind), &bad);
            put(e, "role", enum_json(member_role_names, (int)m->role), &bad);
            put(e, "fenced", json_boolean(m->fenced), &bad);
            put(e, "timeline", json_integer((json_int_t)m->timeline), &bad);
            put(e, "position", json_integer((json_int_t)m->position), &bad);
            put(e, "receive_position", json_integer((json_int_t)m->receive_position), &bad);
            put(e, "replay_position", json_integer((json_int_t)m->replay_position), &bad);
            put(e, "replay_timestamp_ms", json_integer((json_int_t)m->replay_timestamp_ms), &bad);
            put(e, "lag_bytes", int_or_null(m->lag_bytes), &bad);
            put(e, "lag_ms", int_or_null(m->lag_ms), &bad);
            put(e, "healthy", json_boolean(m->healthy), &bad);
            if (m->nstandbys > 0)
                put(e, "standbys", standbys_json(m), &bad);
            if (m->have_leases) {
                put(e, "leases_required", names_json(m->leases_required, m->nleases_required),
                    &bad);
                put(e, "leases_held", names_json(m->leases_held, m->nleases_held), &bad);
            }
        }
        put_in_array(arr, e, &bad);
    }
    put(o, "members", arr, &bad);

    arr = json_array();
    for (size_t i = 0; arr && i < r->nprobes; i++) {
        const mrd_hb_probe *p = &r->probes[i];
        json_t *e = json_object();
        if (e) {
            put(e, "region", json_string(p->region), &bad);
            put(e, "target", json_string(p->target), &bad);
            put(e, "ok", json_boolean(p->ok), &bad);
            put(e, "latency_ms", json_real(p->latency_ms), &bad);
            put(e, "error", str_or_null(p->error), &bad);
        }
        put_in_array(arr, e, &bad);
    }
    put(o, "probes", arr, &bad);

    arr = json_array();
    for (size_t i = 0; arr && i < r->nresults; i++) {
        const mrd_hb_result *x = &r->results[i];
        json_t *e = json_object();
        if (e) {
            put(e, "id", json_string(x->id), &bad);
            put(e, "status", enum_json(result_status_names, (int)x->status), &bad);
            put(e, "error", str_or_null(x->error), &bad);
            put(e, "epoch", json_integer((json_int_t)x->epoch), &bad);
            if (x->position > 0)
                put(e, "position", json_integer((json_int_t)x->position), &bad);
        }
        put_in_array(arr, e, &bad);
    }
    put(o, "results", arr, &bad);

    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *mrd_hb_answer_to_json(const mrd_hb_answer *a)
{
    int bad = 0;
    json_t *o = json_object();
    if (!o)
        return NULL;
    put(o, "recorded", json_boolean(a->recorded), &bad);
    put(o, "heartbeat_ms", json_integer((json_int_t)a->heartbeat_ms), &bad);

    json_t *sv = json_object();
    for (size_t i = 0; sv && i < a->nservices; i++) {
        const mrd_hb_service *s = &a->services[i];
        json_t *e = json_object();
        if (e) {
            put(e, "epoch", json_integer((json_int_t)s->epoch), &bad);
            put(e, "primary_region", str_or_null(s->primary_region), &bad);
            put(e, "primary_position", json_integer((json_int_t)s->primary_position), &bad);
            if (s->primary_member[0])
                put(e, "primary_member", json_string(s->primary_member), &bad);
            if (s->have_peers)
                put(e, "peers", peers_json(s), &bad);
        }
        put(sv, s->service, e, &bad);
    }
    put(o, "services", sv, &bad);

    json_t *arr = json_array();
    for (size_t i = 0; arr && i < a->ncommands; i++) {
        const mrd_hb_command *c = &a->commands[i];
        json_t *e = json_object();
        if (e) {
            put(e, "id", json_string(c->id), &bad);
            put(e, "service", json_string(c->service), &bad);
            put(e, "member", json_string(c->member), &bad);
            put(e, "kind", enum_json(cmd_kind_names, (int)c->kind), &bad);
            put(e, "epoch", json_integer((json_int_t)c->epoch), &bad);
            put(e, "args", c->args ? json_deep_copy(c->args) : json_object(), &bad);
        }
        put_in_array(arr, e, &bad);
    }
    put(o, "commands", arr, &bad);

    arr = json_array();
    for (size_t i = 0; arr && i < a->nack; i++)
        put_in_array(arr, json_string(a->ack[i].id), &bad);
    put(o, "ack", arr, &bad);

    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- decoding ---- */

typedef struct {
    char *err;
    size_t errlen;
} ectx;

/* Writes "prefix.key: why" (or "key: why" without prefix); returns MRD_EPARSE. */
static int fail(ectx *e, const char *prefix, const char *key, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (e->err && e->errlen) {
        if (prefix && prefix[0] && key)
            snprintf(e->err, e->errlen, "%s.%s: %s", prefix, key, why);
        else if (prefix && prefix[0])
            snprintf(e->err, e->errlen, "%s: %s", prefix, why);
        else
            snprintf(e->err, e->errlen, "%s: %s", key ? key : "message", why);
    }
    return MRD_EPARSE;
}

enum { STR_ANY = 0, STR_NONEMPTY = 1, STR_NULLABLE = 2, STR_OPTIONAL = 4 };

/* Copies a string field into buf (size bufsize). A string must fit, contain
 * no NUL and (except free text) no control characters. */
static int get_str(ectx *e, const json_t *obj, const char *prefix, const char *key, char *buf,
                   size_t bufsize, int flags, int free_text)
{
    const json_t *v = json_object_get(obj, key);
    buf[0] = '\0';
    if (!v) {
        if (flags & (STR_OPTIONAL | STR_NULLABLE))
            return 0;
        return fail(e, prefix, key, "is required");
    }
    if (json_is_null(v) && (flags & STR_NULLABLE))
        return 0;
    if (!json_is_string(v))
        return fail(e, prefix, key, "must be a string");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len)
        return fail(e, prefix, key, "must not contain NUL");
    if (len >= bufsize)
        return fail(e, prefix, key, "must be at most %zu bytes", bufsize - 1);
    if ((flags & STR_NONEMPTY) && len == 0)
        return fail(e, prefix, key, "must not be empty");
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            if (free_text && (ch == '\n' || ch == '\t' || ch == '\r'))
                continue;
            return fail(e, prefix, key, "must not contain control characters");
        }
    }
    memcpy(buf, s, len + 1);
    return 0;
}

/* An identifier: required, non-empty, no control characters. */
static int get_name(ectx *e, const json_t *obj, const char *prefix, const char *key, char *buf,
                    size_t bufsize)
{
    return get_str(e, obj, prefix, key, buf, bufsize, STR_NONEMPTY, 0);
}

/* Validates a standalone name (a map key). */
static int check_key(ectx *e, const char *prefix, const char *key, size_t bufsize)
{
    size_t len = strlen(key);
    if (len == 0)
        return fail(e, prefix, NULL, "keys must not be empty");
    if (len >= bufsize) /* the key itself is not repeated: it may be huge */
        return fail(e, prefix, NULL, "keys must be at most %zu bytes", bufsize - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (ch < 0x20 || ch == 0x7f)
            return fail(e, prefix, NULL, "keys must not contain control characters");
    }
    return 0;
}

enum { INT_REQUIRED = 0, INT_OPTIONAL = 1, INT_NULLABLE = 2 };

/* Integer field in [min, max]. OPTIONAL: missing -> def. NULLABLE: missing
 * or null -> def. */
static int get_int(ectx *e, const json_t *obj, const char *prefix, const char *key, int64_t *out,
                   int64_t min, int64_t max, int flags, int64_t def)
{
    const json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v) {
        if (flags & (INT_OPTIONAL | INT_NULLABLE))
            return 0;
        return fail(e, prefix, key, "is required");
    }
    if (json_is_null(v) && (flags & INT_NULLABLE))
        return 0;
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
    if (!json_is_integer(v) || n < min || n > max) {
        if (min == 0 && max == INT64_MAX)
            return fail(e, prefix, key, "must be a non-negative integer");
        if (min == 1 && max == INT64_MAX)
            return fail(e, prefix, key, "must be a positive integer");
        return fail(e, prefix, key, "must be an integer between %lld and %lld", (long long)min,
                    (long long)max);
    }
    *out = (int64_t)n;
    return 0;
}

static int get_bool(ectx *e, const json_t *obj, const char *prefix, const char *key, int *out,
                    int required, int def)
{
    const json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v) {
        if (!required)
            return 0;
        return fail(e, prefix, key, "is required");
    }
    if (!json_is_boolean(v))
        return fail(e, prefix, key, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

static int get_enum(ectx *e, const json_t *obj, const char *prefix, const char *key,
                    const char *const *names, int *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return fail(e, prefix, key, "is required");
    int idx = json_is_string(v) ? enum_parse(names, json_string_value(v)) : -1;
    if (idx < 0) {
        char list[128];
        size_t pos = 0;
        list[0] = '\0';
        for (int i = 0; names[i]; i++) {
            int n = snprintf(list + pos, sizeof(list) - pos, "%s%s", i ? ", " : "", names[i]);
            if (n < 0 || (size_t)n >= sizeof(list) - pos)
                break;
            pos += (size_t)n;
        }
        return fail(e, prefix, key, "must be one of %s", list);
    }
    *out = idx;
    return 0;
}

/* Fetches an optional array field (missing or null: size 0) and checks its
 * size. */
static int get_array(ectx *e, const json_t *obj, const char *key, size_t max, const json_t **out)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return fail(e, NULL, key, "must be an array");
    if (json_array_size(v) > max)
        return fail(e, NULL, key, "at most %zu entries", max);
    *out = v;
    return 0;
}

static int get_object_map(ectx *e, const json_t *obj, const char *key, size_t max,
                          const json_t **out)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return fail(e, NULL, key, "must be an object");
    if (json_object_size(v) > max)
        return fail(e, NULL, key, "at most %zu entries", max);
    *out = v;
    return 0;
}

static void *alloc_array(size_t n, size_t size)
{
    return calloc(n ? n : 1, size);
}

#define P(fmt, ...) (snprintf(path, sizeof(path), fmt, __VA_ARGS__), path)

/* An optional array of distinct names (at most MRD_PROTO_MAX_PEERS) into a
 * new heap array. *present: the key was there (not null). */
static int get_name_list(ectx *e, const json_t *obj, const char *prefix, const char *key,
                         mrd_hb_name **out, size_t *n, int *present)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    *n = 0;
    *present = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return fail(e, prefix, key, "must be an array");
    if (json_array_size(v) > MRD_PROTO_MAX_PEERS)
        return fail(e, prefix, key, "at most %d entries", MRD_PROTO_MAX_PEERS);
    if (!(*out = alloc_array(json_array_size(v), sizeof(**out))))
        return MRD_ENOMEM;
    *present = 1;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *x = json_array_get(v, i);
        char sub[300];
        snprintf(sub, sizeof(sub), "%s%s%s[%zu]", prefix ? prefix : "", prefix ? "." : "", key, i);
        if (!json_is_string(x))
            return fail(e, sub, NULL, "must be a string");
        const char *s = json_string_value(x);
        size_t len = json_string_length(x);
        if (len == 0 || len >= MRD_PROTO_NAME_MAX || strlen(s) != len)
            return fail(e, sub, NULL, "must be a name of 1 to %d bytes", MRD_PROTO_NAME_MAX - 1);
        for (size_t k = 0; k < len; k++)
            if ((unsigned char)s[k] < 0x20 || s[k] == 0x7f)
                return fail(e, sub, NULL, "must not contain control characters");
        for (size_t k = 0; k < i; k++)
            if (strcmp((*out)[k].name, s) == 0)
                return fail(e, sub, NULL, "duplicate name %s", s);
        memcpy((*out)[i].name, s, len + 1);
        (*n)++;
    }
    return 0;
}

static int url_ok(const char *u)
{
    return (strncmp(u, "http://", 7) == 0 && u[7]) || (strncmp(u, "https://", 8) == 0 && u[8]);
}

/* A service's "peers" (optional) into s->peers. */
static int decode_peers(ectx *e, const json_t *v, const char *path, mrd_hb_service *s)
{
    const json_t *arr = json_object_get(v, "peers");
    int rc;
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return fail(e, path, "peers", "must be an array");
    if (json_array_size(arr) > MRD_PROTO_MAX_PEERS)
        return fail(e, path, "peers", "at most %d entries", MRD_PROTO_MAX_PEERS);
    if (!(s->peers = alloc_array(json_array_size(arr), sizeof(*s->peers))))
        return MRD_ENOMEM;
    s->have_peers = 1;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *x = json_array_get(arr, i);
        mrd_hb_peer *p = &s->peers[i];
        char sub[300];
        snprintf(sub, sizeof(sub), "%s.peers[%zu]", path, i);
        if (!json_is_object(x))
            return fail(e, sub, NULL, "must be an object");
        if ((rc = get_name(e, x, sub, "member", p->member, sizeof(p->member))) ||
            (rc = get_name(e, x, sub, "node", p->node, sizeof(p->node))) ||
            (rc = get_str(e, x, sub, "agent_url", p->agent_url, sizeof(p->agent_url),
                          STR_NULLABLE | STR_OPTIONAL, 0)))
            return rc;
        if (p->agent_url[0] && !url_ok(p->agent_url))
            return fail(e, sub, "agent_url", "must be an http:// or https:// URL");
        for (size_t k = 0; k < i; k++)
            if (strcmp(s->peers[k].node, p->node) == 0)
                return fail(e, sub, "node", "duplicate peer node %s", p->node);
        s->npeers++;
    }
    return 0;
}

static int decode_check(ectx *e, const json_t *v, const char *path, mrd_hb_check *c)
{
    int rc, st = 0;
    if (!json_is_object(v))
        return fail(e, path, NULL, "must be an object");
    if ((rc = get_name(e, v, path, "name", c->name, sizeof(c->name))) ||
        (rc = get_enum(e, v, path, "status", check_status_names, &st)) ||
        (rc = get_str(e, v, path, "output", c->output, sizeof(c->output),
                      STR_OPTIONAL | STR_NULLABLE, 1)) ||
        (rc = get_int(e, v, path, "duration_ms", &c->duration_ms, 0, MRD_PROTO_MAX_DURATION_MS,
                      INT_OPTIONAL, 0)))
        return rc;
    c->status = (mrd_check_status)st;
    return 0;
}

static int decode_standby(ectx *e, const json_t *v, const char *path, mrd_hb_standby *s)
{
    int rc;
    if (!json_is_object(v))
        return fail(e, path, NULL, "must be an object");
    if ((rc = get_str(e, v, path, "name", s->name, sizeof(s->name), STR_OPTIONAL | STR_NULLABLE,
                      0)) ||
        (rc = get_str(e, v, path, "address", s->address, sizeof(s->address),
                      STR_OPTIONAL | STR_NULLABLE, 0)) ||
        (rc = get_name(e, v, path, "state", s->state, sizeof(s->state))) ||
        (rc = get_str(e, v, path, "sync_state", s->sync_state, sizeof(s->sync_state),
                      STR_OPTIONAL | STR_NULLABLE, 0)) ||
        (rc = get_int(e, v, path, "sent_position", &s->sent_position, 0, INT64_MAX, INT_NULLABLE,
                      0)) ||
        (rc = get_int(e, v, path, "flush_position", &s->flush_position, 0, INT64_MAX, INT_NULLABLE,
                      0)) ||
        (rc = get_int(e, v, path, "replay_position", &s->replay_position, 0, INT64_MAX,
                      INT_NULLABLE, 0)) ||
        (rc = get_int(e, v, path, "replay_lag_ms", &s->replay_lag_ms, 0, INT64_MAX, INT_NULLABLE,
                      -1)))
        return rc;
    return 0;
}

static int decode_member(ectx *e, const json_t *v, const char *path, mrd_hb_member *m)
{
    int rc, role = 0;
    if (!json_is_object(v))
        return fail(e, path, NULL, "must be an object");
    if ((rc = get_name(e, v, path, "service", m->service, sizeof(m->service))) ||
        (rc = get_name(e, v, path, "name", m->name, sizeof(m->name))) ||
        (rc = get_name(e, v, path, "kind", m->kind, sizeof(m->kind))) ||
        (rc = get_enum(e, v, path, "role", member_role_names, &role)) ||
        (rc = get_bool(e, v, path, "fenced", &m->fenced, 0, 0)) ||
        (rc = get_int(e, v, path, "timeline", &m->timeline, 0, MRD_PROTO_MAX_TIMELINE, INT_OPTIONAL,
                      0)) ||
        (rc = get_int(e, v, path, "position", &m->position, 0, INT64_MAX, INT_NULLABLE, 0)) ||
        (rc = get_int(e, v, path, "receive_position", &m->receive_position, 0, INT64_MAX,
                      INT_NULLABLE, 0)) ||
        (rc = get_int(e, v, path, "replay_position", &m->replay_position, 0, INT64_MAX,
                      INT_NULLABLE, 0)) ||
        (rc = get_int(e, v, path, "replay_timestamp_ms", &m->replay_timestamp_ms, 0, INT64_MAX,
                      INT_NULLABLE, 0)) ||
        (rc = get_int(e, v, path, "lag_bytes", &m->lag_bytes, 0, INT64_MAX, INT_NULLABLE, -1)) ||
        (rc = get_int(e, v, path, "lag_ms", &m->lag_ms, 0, INT64_MAX, INT_NULLABLE, -1)) ||
        (rc = get_bool(e, v, path, "healthy", &m->healthy, 1, 0)))
        return rc;
    m->role = (mrd_member_role)role;
    const json_t *sb = json_object_get(v, "standbys");
    if (sb && !json_is_null(sb)) {
        if (!json_is_array(sb))
            return fail(e, path, "standbys", "must be an array");
        if (json_array_size(sb) > MRD_PROTO_MAX_STANDBYS)
            return fail(e, path, "standbys", "at most %d entries", MRD_PROTO_MAX_STANDBYS);
        for (size_t i = 0; i < json_array_size(sb); i++, m->nstandbys++) {
            char p[300];
            snprintf(p, sizeof(p), "%s.standbys[%zu]", path, i);
            if ((rc = decode_standby(e, json_array_get(sb, i), p, &m->standbys[i])))
                return rc;
        }
    }
    int held = 0;
    if ((rc = get_name_list(e, v, path, "leases_required", &m->leases_required,
                            &m->nleases_required, &m->have_leases)) ||
        (rc = get_name_list(e, v, path, "leases_held", &m->leases_held, &m->nleases_held, &held)))
        return rc;
    if (held && !m->have_leases)
        return fail(e, path, "leases_held", "needs leases_required");
    return 0;
}

static int decode_probe(ectx *e, const json_t *v, const char *path, mrd_hb_probe *p)
{
    int rc;
    if (!json_is_object(v))
        return fail(e, path, NULL, "must be an object");
    if ((rc = get_name(e, v, path, "region", p->region, sizeof(p->region))) ||
        (rc = get_name(e, v, path, "target", p->target, sizeof(p->target))) ||
        (rc = get_bool(e, v, path, "ok", &p->ok, 1, 0)) ||
        (rc = get_str(e, v, path, "error", p->error, sizeof(p->error), STR_OPTIONAL | STR_NULLABLE,
                      1)))
        return rc;
    const json_t *lat = json_object_get(v, "latency_ms");
    p->latency_ms = 0;
    if (lat && !json_is_null(lat)) {
        double d = json_is_number(lat) ? json_number_value(lat) : -1;
        if (!json_is_number(lat) || !(d >= 0 && d <= (double)MRD_PROTO_MAX_DURATION_MS))
            return fail(e, path, "latency_ms", "must be a number between 0 and %lld",
                        (long long)MRD_PROTO_MAX_DURATION_MS);
        p->latency_ms = d;
    }
    return 0;
}

static int decode_result(ectx *e, const json_t *v, const char *path, mrd_hb_result *x)
{
    int rc, st = 0;
    if (!json_is_object(v))
        return fail(e, path, NULL, "must be an object");
    if ((rc = get_name(e, v, path, "id", x->id, sizeof(x->id))) ||
        (rc = get_enum(e, v, path, "status", result_status_names, &st)) ||
        (rc = get_str(e, v, path, "error", x->error, sizeof(x->error), STR_OPTIONAL | STR_NULLABLE,
                      1)) ||
        (rc = get_int(e, v, path, "epoch", &x->epoch, 0, INT64_MAX, INT_REQUIRED, 0)) ||
        (rc = get_int(e, v, path, "position", &x->position, 0, INT64_MAX, INT_OPTIONAL, 0)))
        return rc;
    x->status = (mrd_result_status)st;
    return 0;
}

static int decode_request(ectx *e, const json_t *j, mrd_hb_request *r)
{
    char path[160];
    int rc;
    const json_t *arr, *map;
    if (!json_is_object(j))
        return fail(e, NULL, "message", "must be a JSON object");
    if ((rc = get_name(e, j, NULL, "node", r->node, sizeof(r->node))) ||
        (rc = get_name(e, j, NULL, "region", r->region, sizeof(r->region))) ||
        (rc = get_int(e, j, NULL, "seq", &r->seq, 0, INT64_MAX, INT_REQUIRED, 0)) ||
        (rc = get_str(e, j, NULL, "api_url", r->api_url, sizeof(r->api_url),
                      STR_OPTIONAL | STR_NULLABLE, 1)) ||
        (rc = get_bool(e, j, NULL, "urgent", &r->urgent, 0, 0)))
        return rc;

    if ((rc = get_object_map(e, j, "epochs", MRD_PROTO_MAX_EPOCHS, &map)))
        return rc;
    if (map) {
        if (!(r->epochs = alloc_array(json_object_size(map), sizeof(*r->epochs))))
            return MRD_ENOMEM;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)map, k, v)
        {
            if ((rc = check_key(e, "epochs", k, MRD_PROTO_NAME_MAX)))
                return rc;
            mrd_hb_epoch *ep = &r->epochs[r->nepochs];
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return fail(e, "epochs", k, "must be a non-negative integer");
            memcpy(ep->service, k, strlen(k) + 1);
            ep->epoch = (int64_t)json_integer_value(v);
            r->nepochs++;
        }
    }

    if ((rc = get_array(e, j, "checks", MRD_PROTO_MAX_CHECKS, &arr)))
        return rc;
    if (arr) {
        if (!(r->checks = alloc_array(json_array_size(arr), sizeof(*r->checks))))
            return MRD_ENOMEM;
        for (size_t i = 0; i < json_array_size(arr); i++, r->nchecks++)
            if ((rc = decode_check(e, json_array_get(arr, i), P("checks[%zu]", i), &r->checks[i])))
                return rc;
    }

    if ((rc = get_array(e, j, "members", MRD_PROTO_MAX_MEMBERS, &arr)))
        return rc;
    if (arr) {
        if (!(r->members = alloc_array(json_array_size(arr), sizeof(*r->members))))
            return MRD_ENOMEM;
        for (size_t i = 0; i < json_array_size(arr); i++, r->nmembers++) {
            mrd_hb_member *m = &r->members[i];
            if ((rc = decode_member(e, json_array_get(arr, i), P("members[%zu]", i), m))) {
                member_free_lists(m);
                return rc;
            }
            for (size_t k = 0; k < i; k++)
                if (strcmp(r->members[k].service, m->service) == 0 &&
                    strcmp(r->members[k].name, m->name) == 0) {
                    member_free_lists(m);
                    return fail(e, path, NULL, "duplicate member %s of service %s", m->name,
                                m->service);
                }
        }
    }

    if ((rc = get_array(e, j, "probes", MRD_PROTO_MAX_PROBES, &arr)))
        return rc;
    if (arr) {
        if (!(r->probes = alloc_array(json_array_size(arr), sizeof(*r->probes))))
            return MRD_ENOMEM;
        for (size_t i = 0; i < json_array_size(arr); i++, r->nprobes++)
            if ((rc = decode_probe(e, json_array_get(arr, i), P("probes[%zu]", i), &r->probes[i])))
                return rc;
    }

    if ((rc = get_array(e, j, "results", MRD_PROTO_MAX_RESULTS, &arr)))
        return rc;
    if (arr) {
        if (!(r->results = alloc_array(json_array_size(arr), sizeof(*r->results))))
            return MRD_ENOMEM;
        for (size_t i = 0; i < json_array_size(arr); i++, r->nresults++)
            if ((rc = decode_result(e, json_array_get(arr, i), P("results[%zu]", i),
                                    &r->results[i])))
                return rc;
    }
    return 0;
}

int mrd_hb_request_from_json(const json_t *j, mrd_hb_request *out, char *err, size_t errlen)
{
    ectx e = {err, errlen};
    mrd_hb_request_init(out);
    if (err && errlen)
        err[0] = '\0';
    int rc = decode_request(&e, j, out);
    if (rc) {
        if (rc == MRD_ENOMEM && err && errlen)
            snprintf(err, errlen, "out of memory");
        mrd_hb_request_free(out);
    }
    return rc;
}

/* Command args: an object of at most MRD_PROTO_MAX_ARGS keys whose values are
 * scalars (strings bounded in length). */
static int check_args(ectx *e, const json_t *v, const char *path)
{
    char sub[192];
    snprintf(sub, sizeof(sub), "%s.args", path);
    if (!json_is_object(v))
        return fail(e, path, "args", "must be an object");
    if (json_object_size(v) > MRD_PROTO_MAX_ARGS)
        return fail(e, path, "args", "at most %d keys", MRD_PROTO_MAX_ARGS);
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x)
    {
        int rc = check_key(e, sub, k, MRD_PROTO_NAME_MAX);
        if (rc)
            return rc;
        if (json_is_string(x)) {
            if (json_string_length(x) > MRD_PROTO_ARG_STRING_MAX)
                return fail(e, sub, k, "must be at most %d bytes", MRD_PROTO_ARG_STRING_MAX);
            if (strlen(json_string_value(x)) != json_string_length(x))
                return fail(e, sub, k, "must not contain NUL");
        } else if (!json_is_integer(x) && !json_is_real(x) && !json_is_boolean(x) &&
                   !json_is_null(x)) {
            return fail(e, sub, k, "must be a string, number, boolean or null");
        }
    }
    return 0;
}

static int decode_command(ectx *e, const json_t *v, const char *path, mrd_hb_command *c)
{
    int rc, kind = 0;
    if (!json_is_object(v))
        return fail(e, path, NULL, "must be an object");
    if ((rc = get_name(e, v, path, "id", c->id, sizeof(c->id))) ||
        (rc = get_name(e, v, path, "service", c->service, sizeof(c->service))) ||
        (rc = get_name(e, v, path, "member", c->member, sizeof(c->member))) ||
        (rc = get_enum(e, v, path, "kind", cmd_kind_names, &kind)) ||
        (rc = get_int(e, v, path, "epoch", &c->epoch, 0, INT64_MAX, INT_REQUIRED, 0)))
        return rc;
    c->kind = (mrd_cmd_kind)kind;
    const json_t *args = json_object_get(v, "args");
    if (!args || json_is_null(args)) {
        c->args = json_object();
    } else {
        if ((rc = check_args(e, args, path)))
            return rc;
        c->args = json_deep_copy(args);
    }
    return c->args ? 0 : MRD_ENOMEM;
}

/* The "commands" array of an answer or a poke. */
static int decode_commands(ectx *e, const json_t *j, mrd_hb_answer *a)
{
    char path[160];
    const json_t *arr;
    int rc;
    if ((rc = get_array(e, j, "commands", MRD_PROTO_MAX_COMMANDS, &arr)))
        return rc;
    if (!arr)
        return 0;
    if (!(a->commands = alloc_array(json_array_size(arr), sizeof(*a->commands))))
        return MRD_ENOMEM;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        mrd_hb_command *c = &a->commands[i];
        rc = decode_command(e, json_array_get(arr, i), P("commands[%zu]", i), c);
        if (c->args)
            a->ncommands++; /* so that _free releases args */
        if (rc)
            return rc;
        for (size_t k = 0; k < i; k++)
            if (strcmp(a->commands[k].id, c->id) == 0)
                return fail(e, path, "id", "duplicate command id %s", c->id);
    }
    return 0;
}

static int decode_answer(ectx *e, const json_t *j, mrd_hb_answer *a)
{
    char path[160];
    int rc;
    const json_t *arr, *map;
    if (!json_is_object(j))
        return fail(e, NULL, "message", "must be a JSON object");
    if ((rc = get_bool(e, j, NULL, "recorded", &a->recorded, 1, 0)) ||
        (rc = get_int(e, j, NULL, "heartbeat_ms", &a->heartbeat_ms, 10, 600000, INT_REQUIRED, 0)))
        return rc;

    if ((rc = get_object_map(e, j, "services", MRD_PROTO_MAX_SERVICES, &map)))
        return rc;
    if (map) {
        if (!(a->services = alloc_array(json_object_size(map), sizeof(*a->services))))
            return MRD_ENOMEM;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)map, k, v)
        {
            if ((rc = check_key(e, "services", k, MRD_PROTO_NAME_MAX)))
                return rc;
            mrd_hb_service *s = &a->services[a->nservices];
            snprintf(path, sizeof(path), "services.%s", k);
            if (!json_is_object(v))
                return fail(e, path, NULL, "must be an object");
            memcpy(s->service, k, strlen(k) + 1);
            if ((rc = get_int(e, v, path, "epoch", &s->epoch, 0, INT64_MAX, INT_REQUIRED, 0)) ||
                (rc = get_str(e, v, path, "primary_region", s->primary_region,
                              sizeof(s->primary_region), STR_NULLABLE | STR_OPTIONAL, 0)) ||
                (rc = get_int(e, v, path, "primary_position", &s->primary_position, 0, INT64_MAX,
                              INT_NULLABLE, 0)) ||
                (rc = get_str(e, v, path, "primary_member", s->primary_member,
                              sizeof(s->primary_member), STR_NULLABLE | STR_OPTIONAL, 0)))
                return rc;
            if ((rc = decode_peers(e, v, path, s))) {
                service_free_peers(s);
                return rc;
            }
            a->nservices++;
        }
    }

    if ((rc = decode_commands(e, j, a)))
        return rc;

    if ((rc = get_array(e, j, "ack", MRD_PROTO_MAX_ACK, &arr)))
        return rc;
    if (arr) {
        if (!(a->ack = alloc_array(json_array_size(arr), sizeof(*a->ack))))
            return MRD_ENOMEM;
        for (size_t i = 0; i < json_array_size(arr); i++, a->nack++) {
            const json_t *v = json_array_get(arr, i);
            P("ack[%zu]", i);
            if (!json_is_string(v) || json_string_length(v) == 0 ||
                json_string_length(v) >= MRD_PROTO_ID_MAX ||
                strlen(json_string_value(v)) != json_string_length(v))
                return fail(e, path, NULL, "must be a command id (1 to %d bytes)",
                            MRD_PROTO_ID_MAX - 1);
            memcpy(a->ack[i].id, json_string_value(v), json_string_length(v) + 1);
        }
    }
    return 0;
}

int mrd_hb_answer_from_json(const json_t *j, mrd_hb_answer *out, char *err, size_t errlen)
{
    ectx e = {err, errlen};
    mrd_hb_answer_init(out);
    if (err && errlen)
        err[0] = '\0';
    int rc = decode_answer(&e, j, out);
    if (rc) {
        if (rc == MRD_ENOMEM && err && errlen)
            snprintf(err, errlen, "out of memory");
        mrd_hb_answer_free(out);
    }
    return rc;
}

int mrd_hb_poke_from_json(const json_t *j, mrd_hb_answer *out, char *err, size_t errlen)
{
    ectx e = {err, errlen};
    mrd_hb_answer_init(out);
    if (err && errlen)
        err[0] = '\0';
    int rc = json_is_object(j) ? decode_commands(&e, j, out)
                               : fail(&e, NULL, "message", "must be a JSON object");
    if (rc) {
        if (rc == MRD_ENOMEM && err && errlen)
            snprintf(err, errlen, "out of memory");
        mrd_hb_answer_free(out);
    }
    return rc;
}

static json_t *load_text(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j && err && errlen)
        snprintf(err, errlen, "json: %s at line %d column %d", jerr.text, jerr.line, jerr.column);
    return j;
}

int mrd_hb_request_parse(const char *text, size_t len, mrd_hb_request *out, char *err,
                         size_t errlen)
{
    mrd_hb_request_init(out);
    json_t *j = load_text(text, len, err, errlen);
    if (!j)
        return MRD_EPARSE;
    int rc = mrd_hb_request_from_json(j, out, err, errlen);
    json_decref(j);
    return rc;
}

int mrd_hb_answer_parse(const char *text, size_t len, mrd_hb_answer *out, char *err, size_t errlen)
{
    mrd_hb_answer_init(out);
    json_t *j = load_text(text, len, err, errlen);
    if (!j)
        return MRD_EPARSE;
    int rc = mrd_hb_answer_from_json(j, out, err, errlen);
    json_decref(j);
    return rc;
}

/* ---- peer leases ---- */

json_t *mrd_lease_request_to_json(const mrd_lease_request *r)
{
    return json_pack("{s:s, s:I, s:s, s:I}", "service", r->service, "epoch", (json_int_t)r->epoch,
                     "node", r->node, "ttl_ms", (json_int_t)r->ttl_ms);
}

json_t *mrd_lease_answer_to_json(const mrd_lease_answer *a)
{
    return json_pack("{s:b, s:I, s:I, s:o}", "granted", a->granted, "epoch", (json_int_t)a->epoch,
                     "ttl_ms", (json_int_t)a->ttl_ms, "reason", str_or_null(a->reason));
}

int mrd_lease_request_from_json(const json_t *j, mrd_lease_request *out, char *err, size_t errlen)
{
    ectx e = {err, errlen};
    int rc;
    memset(out, 0, sizeof(*out));
    if (!json_is_object(j))
        rc = fail(&e, NULL, "message", "must be a JSON object");
    else if ((rc = get_name(&e, j, NULL, "service", out->service, sizeof(out->service))) ||
             (rc = get_int(&e, j, NULL, "epoch", &out->epoch, 0, INT64_MAX, INT_REQUIRED, 0)) ||
             (rc = get_name(&e, j, NULL, "node", out->node, sizeof(out->node))) ||
             (rc = get_int(&e, j, NULL, "ttl_ms", &out->ttl_ms, 1, MRD_PROTO_MAX_LEASE_TTL_MS,
                           INT_REQUIRED, 0))) {
    }
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}

int mrd_lease_answer_from_json(const json_t *j, mrd_lease_answer *out, char *err, size_t errlen)
{
    ectx e = {err, errlen};
    int rc;
    memset(out, 0, sizeof(*out));
    if (!json_is_object(j))
        rc = fail(&e, NULL, "message", "must be a JSON object");
    else if ((rc = get_bool(&e, j, NULL, "granted", &out->granted, 1, 0)) ||
             (rc = get_int(&e, j, NULL, "epoch", &out->epoch, 0, INT64_MAX, INT_REQUIRED, 0)) ||
             (rc = get_int(&e, j, NULL, "ttl_ms", &out->ttl_ms, 0, MRD_PROTO_MAX_LEASE_TTL_MS,
                           INT_REQUIRED, 0)) ||
             (rc = get_str(&e, j, NULL, "reason", out->reason, sizeof(out->reason),
                           STR_NULLABLE | STR_OPTIONAL, 1))) {
    }
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}
