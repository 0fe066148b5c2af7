/*
 * Configuration of meridian-agent: a JSON file validated against the schema
 * tables below with mrd_cfg_validate (config.h), then checked for what a
 * schema cannot express (kind-specific fields, references between sections,
 * duplicate names), then turned into mrd__agent_config whose strings point
 * into the kept JSON document.
 *
 * Called once by main.c at start (and by the unit tests). On any error the
 * agent does not start: the message names the key path and says why. Every
 * loop runs over arrays whose sizes the schema bounds.
 *
 * Example: deploy/agent.example.json.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "meridian/config.h"
#include "meridian/error.h"

static const char *const member_kinds[] = {"postgresql", "exec", NULL};
static const char *const fence_modes[] = {"demote", "read_only", "stop", "exec", NULL};
static const char *const check_kinds[] = {"postgresql", "http", "tcp", "exec", NULL};
static const char *const probe_kinds[] = {"tcp", "http", "postgresql", NULL};
static const char *const weights[] = {"critical", "warning", NULL};
static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

#define STR(k, req)                                                                                \
    {                                                                                              \
        k, MRD_CFG_STRING, req, 1, 1023, NULL, 0, NULL                                             \
    }
#define NAME(k, req)                                                                               \
    {                                                                                              \
        k, MRD_CFG_STRING, req, 1, MRD_PROTO_NAME_MAX - 1, NULL, 0, NULL                           \
    }
#define CHOICE(k, req, c)                                                                          \
    {                                                                                              \
        k, MRD_CFG_STRING, req, 0, 0, c, 0, NULL                                                   \
    }
#define INT(k, req, lo, hi)                                                                        \
    {                                                                                              \
        k, MRD_CFG_INT, req, lo, hi, NULL, 0, NULL                                                 \
    }
#define ARGV(k, req)                                                                               \
    {                                                                                              \
        k, MRD_CFG_ARRAY, req, 1, 64, NULL, MRD_CFG_STRING, NULL                                   \
    }

static const mrd_cfg_field fence_fields[] = {
    CHOICE("mode", 1, fence_modes),
    ARGV("command", 0),
    ARGV("unfence_command", 0),
    INT("timeout_ms", 0, 100, 600000),
};
static const mrd_cfg_schema fence_schema = {fence_fields,
                                            sizeof(fence_fields) / sizeof(fence_fields[0])};

static const mrd_cfg_field member_fields[] = {
    NAME("service", 1),
    NAME("name", 1),
    CHOICE("kind", 1, member_kinds),
    STR("conninfo", 0),
    {"fence", MRD_CFG_OBJECT, 0, 0, 0, NULL, 0, &fence_schema},
    INT("promote_timeout_ms", 0, 1000, 3600000),
    INT("command_timeout_ms", 0, 1000, 3600000),
    ARGV("promote_command", 0),
    ARGV("rejoin_command", 0),
    ARGV("status_command", 0),
    STR("data_dir", 0),
    STR("pg_bindir", 0),
};
static const mrd_cfg_schema member_schema = {member_fields,
                                             sizeof(member_fields) / sizeof(member_fields[0])};

static const mrd_cfg_field check_fields[] = {
    NAME("name", 1),
    CHOICE("kind", 1, check_kinds),
    INT("interval_ms", 0, 100, 3600000),
    INT("timeout_ms", 0, 10, 600000),
    CHOICE("weight", 0, weights),
    NAME("member", 0),
    STR("conninfo", 0),
    STR("query", 0),
    STR("url", 0),
    INT("expect_status", 0, 100, 599),
    STR("expect_body", 0),
    STR("target", 0),
    ARGV("command", 0),
};
static const mrd_cfg_schema check_schema = {check_fields,
                                            sizeof(check_fields) / sizeof(check_fields[0])};

static const mrd_cfg_field probe_fields[] = {
    NAME("region", 1),
    CHOICE("kind", 1, probe_kinds),
    STR("target", 1),
    INT("interval_ms", 0, 100, 3600000),
    INT("timeout_ms", 0, 10, 600000),
    STR("query", 0),
};
static const mrd_cfg_schema probe_schema = {probe_fields,
                                            sizeof(probe_fields) / sizeof(probe_fields[0])};

static const mrd_cfg_field peer_fields[] = {
    NAME("name", 1),
    STR("url", 1),
    STR("token", 1),
    {"services", MRD_CFG_ARRAY, 0, 1, 1024, NULL, MRD_CFG_STRING, NULL},
};
static const mrd_cfg_schema peer_schema = {peer_fields,
                                           sizeof(peer_fields) / sizeof(peer_fields[0])};

static const mrd_cfg_field token_fields[] = {
    NAME("name", 1),
    STR("token", 1),
    STR("role", 1),
};
static const mrd_cfg_schema token_schema = {token_fields,
                                            sizeof(token_fields) / sizeof(token_fields[0])};

static const mrd_cfg_field root_fields[] = {
    NAME("node", 1),
    NAME("region", 1),
    {"controllers", MRD_CFG_ARRAY, 1, 1, 16, NULL, MRD_CFG_STRING, NULL},
    STR("token", 1),
    INT("heartbeat_ms", 0, 50, 600000),
    INT("isolation_timeout_ms", 0, 200, 600000),
    INT("request_timeout_ms", 0, 50, 600000),
    STR("listen", 0),
    STR("api_url", 0),
    {"peer_tokens", MRD_CFG_ARRAY, 0, 0, 256, NULL, MRD_CFG_OBJECT, &token_schema},
    {"peers", MRD_CFG_ARRAY, 0, 0, 64, NULL, MRD_CFG_OBJECT, &peer_schema},
    STR("peer_token", 0),
    STR("state_dir", 1),
    CHOICE("log_level", 0, levels),
    {"members", MRD_CFG_ARRAY, 0, 0, MRD_PROTO_MAX_MEMBERS, NULL, MRD_CFG_OBJECT, &member_schema},
    {"checks", MRD_CFG_ARRAY, 0, 0, MRD_PROTO_MAX_CHECKS, NULL, MRD_CFG_OBJECT, &check_schema},
    {"probes", MRD_CFG_ARRAY, 0, 0, MRD_PROTO_MAX_PROBES, NULL, MRD_CFG_OBJECT, &probe_schema},
};
static const mrd_cfg_schema root_schema = {root_fields,
                                           sizeof(root_fields) / sizeof(root_fields[0])};

static int cfg_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cfg_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return MRD_ECONFIG;
}

/* NULL-terminated argv of the strings of a JSON array (borrowed), or NULL
 * when absent. *oom set on allocation failure. */
static const char **argv_of(const json_t *arr, int *oom)
{
    if (!json_is_array(arr))
        return NULL;
    size_t n = json_array_size(arr);
    const char **v = calloc(n + 1, sizeof(*v));
    if (!v) {
        *oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = json_string_value(json_array_get(arr, i));
    return v;
}

/* "host:port" -> parts; returns 0 or -1. */
static int split_host_port(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == '\0' || p < 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

static int url_ok(const char *u)
{
    return u && (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0) && strlen(u) > 8;
}

static int load_members(mrd__agent_config *cfg, const json_t *arr, char *err, size_t errlen,
                        int *oom)
{
    size_t n = json_array_size(arr);
    cfg->members = calloc(n ? n : 1, sizeof(*cfg->members));
    if (!cfg->members)
        return MRD_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(arr, i);
        mrd__member_cfg *m = &cfg->members[i];
        cfg->nmembers++;
        m->service = mrd_cfg_str(o, "service", NULL);
        m->name = mrd_cfg_str(o, "name", NULL);
        m->kind = mrd_cfg_str(o, "kind", NULL);
        m->conninfo = mrd_cfg_str(o, "conninfo", NULL);
        m->data_dir = mrd_cfg_str(o, "data_dir", NULL);
        m->promote_timeout_ms = (uint64_t)mrd_cfg_int(o, "promote_timeout_ms", 30000);
        m->command_timeout_ms = (uint64_t)mrd_cfg_int(o, "command_timeout_ms", 120000);
        m->promote_cmd = argv_of(json_object_get(o, "promote_command"), oom);
        m->rejoin_cmd = argv_of(json_object_get(o, "rejoin_command"), oom);
        m->status_cmd = argv_of(json_object_get(o, "status_command"), oom);
        const json_t *fence = json_object_get(o, "fence");
        int pg = strcmp(m->kind, "postgresql") == 0;
        const char *mode = fence ? mrd_cfg_str(fence, "mode", NULL) : NULL;
        if (!mode)
            mode = pg ? "demote" : "exec";
        m->fence_mode = strcmp(mode, "stop") == 0        ? MRD__FENCE_STOP
                        : strcmp(mode, "exec") == 0      ? MRD__FENCE_EXEC
                        : strcmp(mode, "read_only") == 0 ? MRD__FENCE_READ_ONLY
                                                         : MRD__FENCE_DEMOTE;
        m->fence_timeout_ms = fence ? (uint64_t)mrd_cfg_int(fence, "timeout_ms", 5000) : 5000;
        m->pg_bindir = mrd_cfg_str(o, "pg_bindir", NULL);
        if (fence) {
            m->fence_cmd = argv_of(json_object_get(fence, "command"), oom);
            m->unfence_cmd = argv_of(json_object_get(fence, "unfence_command"), oom);
        }
        if (*oom)
            return MRD_ENOMEM;
        if (pg && !m->conninfo)
            return cfg_fail(err, errlen, "members[%zu].conninfo: is required for postgresql", i);
        if (!pg && m->fence_mode == MRD__FENCE_READ_ONLY)
            return cfg_fail(err, errlen,
                            "members[%zu].fence.mode: read_only needs a postgresql member", i);
        if (!pg && m->fence_mode == MRD__FENCE_DEMOTE)
            return cfg_fail(err, errlen,
                            "members[%zu].fence.mode: demote needs a postgresql member", i);
        if ((m->fence_mode == MRD__FENCE_STOP || m->fence_mode == MRD__FENCE_EXEC) && !m->fence_cmd)
            return cfg_fail(err, errlen, "members[%zu].fence.command: is required for mode %s", i,
                            mode);
        if (!pg && !m->status_cmd)
            return cfg_fail(err, errlen, "members[%zu].status_command: is required for exec", i);
        if (!pg && !m->promote_cmd)
            return cfg_fail(err, errlen, "members[%zu].promote_command: is required for exec", i);
        for (size_t k = 0; k < i; k++) {
            if (strcmp(cfg->members[k].name, m->name) == 0)
                return cfg_fail(err, errlen, "members[%zu].name: duplicate member %s", i, m->name);
            if (strcmp(cfg->members[k].service, m->service) == 0)
                return cfg_fail(err, errlen,
                                "members[%zu].service: a node hosts one member of service %s", i,
                                m->service);
        }
    }
    return 0;
}

/* What a postgresql probe reports as its target: host, hostaddr, port,
 * dbname and user of the conninfo (never its password), e.g. "host=10.0.0.2
 * port=5432 user=meridian"; cut to size. Returns 0, or -1 when libpq cannot
 * parse the conninfo. */
static int shown_conninfo(const char *conninfo, char *out, size_t size)
{
    static const char *const keys[] = {"host", "hostaddr", "port", "dbname", "user"};
    PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
    size_t n = 0;
    if (!opts)
        return -1;
    out[0] = '\0';
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (strcmp(o->keyword, keys[k]) != 0 || !o->val || !o->val[0] || n + 1 >= size)
                continue;
            int w = snprintf(out + n, size - n, "%s%s=%s", n ? " " : "", o->keyword, o->val);
            n = w < 0 ? n : (size_t)w >= size - n ? size - 1 : n + (size_t)w;
        }
    PQconninfoFree(opts);
    if (n == 0) /* a heartbeat's target is never empty */
        snprintf(out, size, "libpq defaults");
    return 0;
}

static int load_check(mrd__check_cfg *c, const json_t *o, const char *path, int probe, char *err,
                      size_t errlen, int *oom)
{
    const char *kind = mrd_cfg_str(o, "kind", "tcp");
    c->name = mrd_cfg_str(o, probe ? "region" : "name", NULL);
    c->kind = strcmp(kind, "postgresql") == 0 ? MRD__CHECK_PG
              : strcmp(kind, "http") == 0     ? MRD__CHECK_HTTP
              : strcmp(kind, "exec") == 0     ? MRD__CHECK_EXEC
                                              : MRD__CHECK_TCP;
    c->interval_ms = (uint64_t)mrd_cfg_int(o, "interval_ms", probe ? 1000 : 2000);
    c->timeout_ms = (uint64_t)mrd_cfg_int(o, "timeout_ms", 1000);
    c->critical = strcmp(mrd_cfg_str(o, "weight", "critical"), "critical") == 0;
    c->member = mrd_cfg_str(o, "member", NULL);
    c->conninfo = mrd_cfg_str(o, "conninfo", NULL);
    c->query = mrd_cfg_str(o, "query", "SELECT 1");
    c->expect_status = (int)mrd_cfg_int(o, "expect_status", 0);
    c->expect_body = mrd_cfg_str(o, "expect_body", NULL);
    c->argv = argv_of(json_object_get(o, "command"), oom);
    const char *target = mrd_cfg_str(o, "target", NULL);
    c->url = mrd_cfg_str(o, "url", NULL);
    if (*oom)
        return MRD_ENOMEM;
    switch (c->kind) {
    case MRD__CHECK_PG:
        if (probe)
            c->conninfo = target;
        if (!c->conninfo)
            return cfg_fail(err, errlen, "%s.conninfo: is required for postgresql", path);
        if (probe && shown_conninfo(c->conninfo, c->shown_target, sizeof(c->shown_target)))
            return cfg_fail(err, errlen, "%s.target: must be a libpq conninfo or URI", path);
        break;
    case MRD__CHECK_HTTP:
        if (c->expect_body && (c->expect_body[0] == '\0' || strlen(c->expect_body) > 1024))
            return cfg_fail(err, errlen, "%s.expect_body: must be 1 to 1024 bytes", path);
        if (probe)
            c->url = target;
        if (!url_ok(c->url))
            return cfg_fail(err, errlen, "%s.%s: must be an http:// or https:// URL", path,
                            probe ? "target" : "url");
        break;
    case MRD__CHECK_TCP: {
        char host[256];
        int port;
        if (!target || split_host_port(target, host, sizeof(host), &port) || port == 0)
            return cfg_fail(err, errlen, "%s.target: must be host:port", path);
        c->host = target; /* split again when connecting */
        c->port = port;
        break;
    }
    case MRD__CHECK_EXEC:
        if (!c->argv)
            return cfg_fail(err, errlen, "%s.command: is required for exec", path);
        break;
    }
    if (c->timeout_ms > c->interval_ms && !probe)
        return cfg_fail(err, errlen, "%s.timeout_ms: must not exceed interval_ms", path);
    return 0;
}

int mrd__agent_config_from_json(mrd__agent_config *cfg, json_t *root, char *err, size_t errlen)
{
    int rc, oom = 0;
    char path[64];
    memset(cfg, 0, sizeof(*cfg));
    rc = mrd_cfg_validate(root, &root_schema, err, errlen);
    if (rc)
        return rc;
    cfg->root = json_incref(root);
    cfg->node = mrd_cfg_str(root, "node", NULL);
    cfg->region = mrd_cfg_str(root, "region", NULL);
    cfg->token = mrd_cfg_str(root, "token", NULL);
    cfg->state_dir = mrd_cfg_str(root, "state_dir", NULL);
    cfg->log_level = mrd_cfg_str(root, "log_level", "info");
    cfg->heartbeat_ms = (uint64_t)mrd_cfg_int(root, "heartbeat_ms", 1000);
    cfg->isolation_timeout_ms = (uint64_t)mrd_cfg_int(root, "isolation_timeout_ms", 4000);
    uint64_t def_timeout = cfg->isolation_timeout_ms / 2;
    if (def_timeout > cfg->heartbeat_ms * 2)
        def_timeout = cfg->heartbeat_ms * 2;
    cfg->request_timeout_ms =
        (uint64_t)mrd_cfg_int(root, "request_timeout_ms", (long long)def_timeout);
    if (cfg->heartbeat_ms * 2 > cfg->isolation_timeout_ms) {
        rc = cfg_fail(err, errlen,
                      "isolation_timeout_ms: must be at least twice heartbeat_ms (%llu)",
                      (unsigned long long)cfg->heartbeat_ms);
        goto fail;
    }
    if (cfg->request_timeout_ms >= cfg->isolation_timeout_ms) {
        rc = cfg_fail(err, errlen, "request_timeout_ms: must be below isolation_timeout_ms");
        goto fail;
    }

    const json_t *ctl = json_object_get(root, "controllers");
    cfg->controllers = argv_of(ctl, &oom);
    cfg->ncontrollers = json_array_size(ctl);
    if (oom)
        goto nomem;
    for (size_t i = 0; i < cfg->ncontrollers; i++)
        if (!url_ok(cfg->controllers[i])) {
            rc = cfg_fail(err, errlen, "controllers[%zu]: must be an http:// or https:// URL", i);
            goto fail;
        }

    const char *listen = mrd_cfg_str(root, "listen", NULL);
    cfg->listen_port = -1;
    if (listen &&
        split_host_port(listen, cfg->listen_host, sizeof(cfg->listen_host), &cfg->listen_port)) {
        rc = cfg_fail(err, errlen, "listen: must be host:port");
        goto fail;
    }
    const char *api_url = mrd_cfg_str(root, "api_url", NULL);
    if (api_url) {
        if (!url_ok(api_url) || strlen(api_url) >= sizeof(cfg->api_url)) {
            rc = cfg_fail(err, errlen, "api_url: must be an http:// or https:// URL");
            goto fail;
        }
        snprintf(cfg->api_url, sizeof(cfg->api_url), "%s", api_url);
    } else if (listen) {
        snprintf(cfg->api_url, sizeof(cfg->api_url), "http://%s:%d", cfg->listen_host,
                 cfg->listen_port);
    }
    cfg->peer_tokens = json_object_get(root, "peer_tokens");
    if (listen && json_array_size(cfg->peer_tokens) == 0) {
        rc = cfg_fail(err, errlen, "peer_tokens: at least one is required with listen");
        goto fail;
    }

    cfg->peer_token = mrd_cfg_str(root, "peer_token", NULL);
    const json_t *peers = json_object_get(root, "peers");
    cfg->peers = calloc(json_array_size(peers) + 1, sizeof(*cfg->peers));
    if (!cfg->peers)
        goto nomem;
    for (size_t i = 0; i < json_array_size(peers); i++) {
        const json_t *o = json_array_get(peers, i);
        mrd__peer_cfg *p = &cfg->peers[cfg->npeers++];
        p->name = mrd_cfg_str(o, "name", NULL);
        p->url = mrd_cfg_str(o, "url", NULL);
        p->token = mrd_cfg_str(o, "token", NULL);
        p->services = argv_of(json_object_get(o, "services"), &oom);
        if (oom)
            goto nomem;
        if (!url_ok(p->url)) {
            rc = cfg_fail(err, errlen, "peers[%zu].url: must be an http:// or https:// URL", i);
            goto fail;
        }
    }

    if ((rc = load_members(cfg, json_object_get(root, "members"), err, errlen, &oom))) {
        if (rc == MRD_ENOMEM)
            goto nomem;
        goto fail;
    }

    const json_t *checks = json_object_get(root, "checks");
    cfg->checks = calloc(json_array_size(checks) + 1, sizeof(*cfg->checks));
    if (!cfg->checks)
        goto nomem;
    for (size_t i = 0; i < json_array_size(checks); i++) {
        snprintf(path, sizeof(path), "checks[%zu]", i);
        mrd__check_cfg *c = &cfg->checks[cfg->nchecks++];
        if ((rc = load_check(c, json_array_get(checks, i), path, 0, err, errlen, &oom)))
            goto fail;
        int found = !c->member;
        for (size_t k = 0; !found && k < cfg->nmembers; k++)
            found = strcmp(cfg->members[k].name, c->member) == 0;
        if (!found) {
            rc = cfg_fail(err, errlen, "%s.member: no member named %s", path, c->member);
            goto fail;
        }
        for (size_t k = 0; k + 1 < cfg->nchecks; k++)
            if (strcmp(cfg->checks[k].name, c->name) == 0) {
                rc = cfg_fail(err, errlen, "%s.name: duplicate check %s", path, c->name);
                goto fail;
            }
    }

    const json_t *probes = json_object_get(root, "probes");
    cfg->probes = calloc(json_array_size(probes) + 1, sizeof(*cfg->probes));
    if (!cfg->probes)
        goto nomem;
    for (size_t i = 0; i < json_array_size(probes); i++) {
        snprintf(path, sizeof(path), "probes[%zu]", i);
        mrd__check_cfg *c = &cfg->probes[cfg->nprobes++];
        if ((rc = load_check(c, json_array_get(probes, i), path, 1, err, errlen, &oom)))
            goto fail;
    }
    return 0;

nomem:
    rc = MRD_ENOMEM;
fail:
    if (rc == MRD_ENOMEM && err && errlen)
        snprintf(err, errlen, "out of memory");
    mrd__agent_config_free(cfg);
    return rc;
}

int mrd__agent_config_load(mrd__agent_config *cfg, const char *path, char *err, size_t errlen)
{
    json_t *root = NULL;
    memset(cfg, 0, sizeof(*cfg));
    int rc = mrd_cfg_load_file(path, &root, err, errlen);
    if (rc)
        return rc;
    rc = mrd__agent_config_from_json(cfg, root, err, errlen);
    json_decref(root);
    return rc;
}

void mrd__agent_config_free(mrd__agent_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->controllers);
    for (size_t i = 0; cfg->peers && i < cfg->npeers; i++)
        free(cfg->peers[i].services);
    free(cfg->peers);
    for (size_t i = 0; cfg->members && i < cfg->nmembers; i++) {
        mrd__member_cfg *m = &cfg->members[i];
        free(m->fence_cmd);
        free(m->unfence_cmd);
        free(m->promote_cmd);
        free(m->rejoin_cmd);
        free(m->status_cmd);
    }
    free(cfg->members);
    for (size_t i = 0; cfg->checks && i < cfg->nchecks; i++)
        free(cfg->checks[i].argv);
    free(cfg->checks);
    for (size_t i = 0; cfg->probes && i < cfg->nprobes; i++)
        free(cfg->probes[i].argv);
    free(cfg->probes);
    json_decref(cfg->root);
    memset(cfg, 0, sizeof(*cfg));
}
