/*
 * The controller's configuration file: schema, validation and the typed
 * copy in mrd_ctl_config. Validation happens before any value is used, so a
 * bad file never half-applies; every error names the key.
 *
 *   {"name": "ctl-eu-1", "region": "eu", "listen": "127.0.0.1:7001",
 *    "advertise_url": "http://127.0.0.1:7001", "store": "host=... dbname=...",
 *    "lease_ttl_ms": 5000, "tick_ms": 250, "log_level": "info",
 *    "http": {"max_connections": 20000, "max_connections_per_client": 1024,
 *             "header_timeout_ms": 5000},
 *    "tokens": [{"name": "ops", "token": "...", "role": "operator"}],
 *    "nodes": [{"name": "node-eu", "region": "eu", "agent_url": "http://127.0.0.1:7071"}]}
 * (regions, services: services.c; nodes: peers.c)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/config.h"
#include "meridian/error.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

static const mrd_cfg_field token_fields[] = {
    {"name", MRD_CFG_STRING, 1, 1, 64, NULL, 0, NULL},
    {"token", MRD_CFG_STRING, 1, 16, 512, NULL, 0, NULL},
    {"role", MRD_CFG_STRING, 1, 0, 0,
     (const char *const[]){"viewer", "operator", "agent", "app", NULL}, 0, NULL},
};
static const mrd_cfg_schema token_schema = {token_fields, 3};

/* The API server's limits; the connection cap defaults to what the fd limit
 * allows (controller/api.c). */
static const mrd_cfg_field http_fields[] = {
    {"max_connections", MRD_CFG_INT, 0, 16, 1000000, NULL, 0, NULL},
    {"max_connections_per_client", MRD_CFG_INT, 0, 1, 1000000, NULL, 0, NULL},
    {"header_timeout_ms", MRD_CFG_INT, 0, 100, 600000, NULL, 0, NULL},
};
static const mrd_cfg_schema http_schema = {http_fields, 3};

static const mrd_cfg_field ctl_fields[] = {
    {"name", MRD_CFG_STRING, 1, 1, 63, NULL, 0, NULL},
    {"region", MRD_CFG_STRING, 1, 1, 63, NULL, 0, NULL},
    {"listen", MRD_CFG_STRING, 1, 3, 63, NULL, 0, NULL},
    {"advertise_url", MRD_CFG_STRING, 0, 1, 255, NULL, 0, NULL},
    {"store", MRD_CFG_STRING, 1, 1, 4096, NULL, 0, NULL},
    {"lease_ttl_ms", MRD_CFG_INT, 0, 500, 600000, NULL, 0, NULL},
    {"tick_ms", MRD_CFG_INT, 0, 10, 10000, NULL, 0, NULL},
    {"log_level", MRD_CFG_STRING, 0, 0, 0, log_levels, 0, NULL},
    {"debug_endpoints", MRD_CFG_BOOL, 0, 0, 0, NULL, 0, NULL},
    {"http", MRD_CFG_OBJECT, 0, 0, 0, NULL, 0, &http_schema},
    {"tokens", MRD_CFG_ARRAY, 1, 1, 1000, NULL, MRD_CFG_OBJECT, &token_schema},
    {"agent_token", MRD_CFG_STRING, 0, 16, 511, NULL, 0, NULL},
    {"regions", MRD_CFG_ARRAY, 0, 0, MRD_VIEW_MAX_REGIONS, NULL, MRD_CFG_OBJECT,
     &mrd__region_schema},
    {"services", MRD_CFG_ARRAY, 0, 0, 1000, NULL, MRD_CFG_OBJECT, &mrd__service_schema},
    {"nodes", MRD_CFG_ARRAY, 0, 0, 100000, NULL, MRD_CFG_OBJECT, &mrd__node_schema},
};
static const mrd_cfg_schema ctl_schema = {ctl_fields, sizeof(ctl_fields) / sizeof(ctl_fields[0])};

static int parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= hostlen)
        return MRD_EINVAL;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || p < 0 || p > 65535 || end == colon + 1)
        return MRD_EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (int)p;
    return 0;
}

int mrd__ctl_config_load(mrd_ctl *ctl, const char *path, char *err, size_t errlen)
{
    json_t *root = NULL;
    int rc = mrd_cfg_load_file(path, &root, err, errlen);
    if (rc != 0)
        return rc;
    rc = mrd_cfg_validate(root, &ctl_schema, err, errlen);
    if (rc != 0) {
        json_decref(root);
        return rc;
    }
    mrd_ctl_config *c = &ctl->cfg;
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", mrd_cfg_str(root, "name", ""));
    snprintf(c->region, sizeof(c->region), "%s", mrd_cfg_str(root, "region", ""));
    if (parse_listen(mrd_cfg_str(root, "listen", ""), c->listen_host, sizeof(c->listen_host),
                     &c->listen_port) != 0) {
        snprintf(err, errlen, "listen: must be host:port, e.g. 127.0.0.1:7001");
        json_decref(root);
        return MRD_ECONFIG;
    }
    const char *adv = mrd_cfg_str(root, "advertise_url", NULL);
    if (adv)
        snprintf(c->advertise_url, sizeof(c->advertise_url), "%s", adv);
    else
        snprintf(c->advertise_url, sizeof(c->advertise_url), "http://%s:%d", c->listen_host,
                 c->listen_port);
    c->store = strdup(mrd_cfg_str(root, "store", ""));
    c->lease_ttl_ms = (uint64_t)mrd_cfg_int(root, "lease_ttl_ms", 5000);
    c->tick_ms = (uint64_t)mrd_cfg_int(root, "tick_ms", 250);
    c->debug_endpoints = mrd_cfg_bool(root, "debug_endpoints", 0);
    json_t *http = json_object_get(root, "http");
    c->http_max_connections = (unsigned)mrd_cfg_int(http, "max_connections", 0);
    c->http_max_per_client = (unsigned)mrd_cfg_int(http, "max_connections_per_client", 1024);
    c->http_header_timeout_ms = (uint64_t)mrd_cfg_int(http, "header_timeout_ms", 5000);
    snprintf(c->agent_token, sizeof(c->agent_token), "%s", mrd_cfg_str(root, "agent_token", ""));
    if (mrd_log_level_parse(mrd_cfg_str(root, "log_level", "info"), &c->log_level) != 0)
        c->log_level = MRD_LOG_INFO;
    rc = mrd_auth_init(&ctl->auth, json_object_get(root, "tokens"), err, errlen);
    if (rc == 0)
        rc = mrd__services_load(ctl, root, err, errlen);
    if (rc == 0)
        rc = mrd__nodes_load(ctl, root, err, errlen);
    if (rc != 0 || c->store == NULL) {
        mrd__nodes_free(ctl);
        mrd__services_free(ctl);
        mrd_auth_free(ctl->auth);
        ctl->auth = NULL;
        free(c->store);
        c->store = NULL;
        json_decref(root);
        return rc ? rc : MRD_ENOMEM;
    }
    ctl->cfg_json = root;
    return 0;
}

void mrd__ctl_config_free(mrd_ctl *ctl)
{
    free(ctl->cfg.store);
    ctl->cfg.store = NULL;
    mrd_auth_free(ctl->auth);
    ctl->auth = NULL;
    mrd__services_free(ctl);
    mrd__nodes_free(ctl);
    json_decref(ctl->cfg_json);
    ctl->cfg_json = NULL;
}
