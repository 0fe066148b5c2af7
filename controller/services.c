/*
 * Regions and services as the configuration describes them, and their
 * synchronisation into the store.
 *
 * The configuration is the source of the topology's shape (which regions,
 * which members, which policy); the store is the source of its state (which
 * region holds the primary, in which epoch). So the sync inserts a service
 * with its initial primary region only when the store has none, and
 * otherwise only refreshes its configuration: a restart never moves a
 * primary. Only the leader syncs, in a statement guarded by its lease, once
 * per term.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/config.h"
#include "meridian/cutover.h"
#include "meridian/error.h"

/* Policy keys: name, offset-free setter through a switch below. */
static const mrd_cfg_field policy_fields[] = {
    {"auto_failover", MRD_CFG_BOOL, 0, 0, 0, NULL, 0, NULL},
    {"heartbeat_ms", MRD_CFG_INT, 0, 50, 60000, NULL, 0, NULL},
    {"node_timeout_ms", MRD_CFG_INT, 0, 100, 600000, NULL, 0, NULL},
    {"failure_grace_ms", MRD_CFG_INT, 0, 0, 600000, NULL, 0, NULL},
    {"isolation_timeout_ms", MRD_CFG_INT, 0, 100, 600000, NULL, 0, NULL},
    {"isolation_margin_ms", MRD_CFG_INT, 0, 0, 600000, NULL, 0, NULL},
    {"max_lag_bytes", MRD_CFG_INT, 0, 0, 0, NULL, 0, NULL},
    {"max_lag_ms", MRD_CFG_INT, 0, 0, 0, NULL, 0, NULL},
    {"min_failover_interval_s", MRD_CFG_INT, 0, 0, 86400 * 7, NULL, 0, NULL},
    {"vantage_quorum", MRD_CFG_INT, 0, 0, 16, NULL, 0, NULL},
    {"fence_timeout_ms", MRD_CFG_INT, 0, 100, 3600000, NULL, 0, NULL},
    {"switchover_catchup_timeout_ms", MRD_CFG_INT, 0, 100, 3600000, NULL, 0, NULL},
    {"failover_catchup_timeout_ms", MRD_CFG_INT, 0, 100, 3600000, NULL, 0, NULL},
    {"promote_timeout_ms", MRD_CFG_INT, 0, 100, 3600000, NULL, 0, NULL},
    {"cutover_timeout_ms", MRD_CFG_INT, 0, 100, 3600000, NULL, 0, NULL},
    {"rejoin_timeout_ms", MRD_CFG_INT, 0, 100, 86400000, NULL, 0, NULL},
};
static const mrd_cfg_schema policy_schema = {policy_fields,
                                             sizeof(policy_fields) / sizeof(policy_fields[0])};

static const mrd_cfg_field member_fields[] = {
    {"name", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"node", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"region", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"conninfo", MRD_CFG_STRING, 0, 0, 511, NULL, 0, NULL},
};
static const mrd_cfg_schema member_schema = {member_fields, 4};

static const char *const profiles[] = {"default", "fast", NULL};

static const mrd_cfg_field service_fields[] = {
    {"name", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"primary_region", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"profile", MRD_CFG_STRING, 0, 0, 0, profiles, 0, NULL},
    {"policy", MRD_CFG_OBJECT, 0, 0, 0, NULL, 0, &policy_schema},
    {"members", MRD_CFG_ARRAY, 1, 1, MRD_VIEW_MAX_MEMBERS, NULL, MRD_CFG_OBJECT, &member_schema},
    {"dns", MRD_CFG_OBJECT, 0, 0, 0, NULL, 0, NULL},
    {"registry", MRD_CFG_OBJECT, 0, 0, 0, NULL, 0, NULL},
    {"webhooks", MRD_CFG_ARRAY, 0, 0, 16, NULL, MRD_CFG_OBJECT, NULL},
    {"reconcile_interval_ms", MRD_CFG_INT, 0, 100, 86400000, NULL, 0, NULL},
    {"repair_drift", MRD_CFG_BOOL, 0, 0, 0, NULL, 0, NULL},
    {"checkpoint_interval_ms", MRD_CFG_INT, 0, 0, 86400000, NULL, 0, NULL},
    {"checkpoint_retention_ms", MRD_CFG_INT, 0, 100, 3650LL * 86400000, NULL, 0, NULL},
};
const mrd_cfg_schema mrd__service_schema = {service_fields,
                                            sizeof(service_fields) / sizeof(service_fields[0])};

static const mrd_cfg_field region_fields[] = {
    {"name", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"priority", MRD_CFG_INT, 1, 0, 1000000, NULL, 0, NULL},
};
const mrd_cfg_schema mrd__region_schema = {region_fields, 2};

static void policy_override(mrd_policy *p, const json_t *o)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v)
    {
        long long n = json_integer_value(v);
        if (strcmp(key, "auto_failover") == 0)
            p->auto_failover = json_is_true(v);
        else if (strcmp(key, "heartbeat_ms") == 0)
            p->heartbeat_ms = (uint32_t)n;
        else if (strcmp(key, "node_timeout_ms") == 0)
            p->node_timeout_ms = (uint32_t)n;
        else if (strcmp(key, "failure_grace_ms") == 0)
            p->failure_grace_ms = (uint32_t)n;
        else if (strcmp(key, "isolation_timeout_ms") == 0)
            p->isolation_timeout_ms = (uint32_t)n;
        else if (strcmp(key, "isolation_margin_ms") == 0)
            p->isolation_margin_ms = (uint32_t)n;
        else if (strcmp(key, "max_lag_bytes") == 0)
            p->max_lag_bytes = (uint64_t)n;
        else if (strcmp(key, "max_lag_ms") == 0)
            p->max_lag_ms = (uint64_t)n;
        else if (strcmp(key, "min_failover_interval_s") == 0)
            p->min_failover_interval_s = (uint32_t)n;
        else if (strcmp(key, "vantage_quorum") == 0)
            p->vantage_quorum = (uint32_t)n;
        else if (strcmp(key, "fence_timeout_ms") == 0)
            p->fence_timeout_ms = (uint32_t)n;
        else if (strcmp(key, "switchover_catchup_timeout_ms") == 0)
            p->switchover_catchup_timeout_ms = (uint32_t)n;
        else if (strcmp(key, "failover_catchup_timeout_ms") == 0)
            p->failover_catchup_timeout_ms = (uint32_t)n;
        else if (strcmp(key, "promote_timeout_ms") == 0)
            p->promote_timeout_ms = (uint32_t)n;
        else if (strcmp(key, "cutover_timeout_ms") == 0)
            p->cutover_timeout_ms = (uint32_t)n;
        else if (strcmp(key, "rejoin_timeout_ms") == 0)
            p->rejoin_timeout_ms = (uint32_t)n;
    }
}

int mrd__region_priority(const mrd_ctl *ctl, const char *region)
{
    for (size_t i = 0; i < ctl->nregions; i++)
        if (strcmp(ctl->regions[i].name, region) == 0)
            return ctl->regions[i].priority;
    return -1;
}

int mrd__services_load(mrd_ctl *ctl, const json_t *root, char *err, size_t errlen)
{
    json_t *regions = json_object_get(root, "regions");
    json_t *services = json_object_get(root, "services");
    size_t nr = json_array_size(regions), ns = json_array_size(services);
    mrd__region *r = calloc(nr ? nr : 1, sizeof(*r));
    mrd__service *s = calloc(ns ? ns : 1, sizeof(*s));
    if (r == NULL || s == NULL) {
        free(r);
        free(s);
        snprintf(err, errlen, "out of memory");
        return MRD_ENOMEM;
    }
    ctl->regions = r;
    ctl->nregions = nr;
    ctl->services = s;
    ctl->nservices = 0;
    for (size_t i = 0; i < nr; i++) {
        json_t *o = json_array_get(regions, i);
        snprintf(r[i].name, sizeof(r[i].name), "%s", mrd_cfg_str(o, "name", ""));
        r[i].priority = (int)mrd_cfg_int(o, "priority", 0);
        for (size_t k = 0; k < i; k++)
            if (strcmp(r[k].name, r[i].name) == 0) {
                snprintf(err, errlen, "regions[%zu].name: duplicate region \"%s\"", i, r[i].name);
                return MRD_ECONFIG;
            }
    }
    for (size_t i = 0; i < ns; i++) {
        json_t *o = json_array_get(services, i);
        mrd__service *sv = &s[i];
        ctl->nservices = i + 1;
        snprintf(sv->name, sizeof(sv->name), "%s", mrd_cfg_str(o, "name", ""));
        snprintf(sv->primary_region, sizeof(sv->primary_region), "%s",
                 mrd_cfg_str(o, "primary_region", ""));
        snprintf(sv->profile, sizeof(sv->profile), "%s", mrd_cfg_str(o, "profile", "default"));
        for (size_t k = 0; k < i; k++)
            if (strcmp(s[k].name, sv->name) == 0) {
                snprintf(err, errlen, "services[%zu].name: duplicate service \"%s\"", i, sv->name);
                return MRD_ECONFIG;
            }
        mrd_policy_defaults(&sv->policy, sv->profile);
        json_t *pol = json_object_get(o, "policy");
        if (pol)
            policy_override(&sv->policy, pol);
        char perr[200];
        if (mrd_policy_validate(&sv->policy, perr, sizeof(perr)) != 0) {
            snprintf(err, errlen, "services[%zu].policy.%s", i, perr);
            return MRD_ECONFIG;
        }
        if (mrd__region_priority(ctl, sv->primary_region) < 0) {
            snprintf(err, errlen,
                     "services[%zu].primary_region: \"%s\" is not one of the configured regions", i,
                     sv->primary_region);
            return MRD_ECONFIG;
        }
        json_t *members = json_object_get(o, "members");
        sv->nmembers = json_array_size(members);
        sv->members = calloc(sv->nmembers, sizeof(*sv->members));
        if (sv->members == NULL) {
            snprintf(err, errlen, "out of memory");
            return MRD_ENOMEM;
        }
        int primary_has_member = 0;
        for (size_t k = 0; k < sv->nmembers; k++) {
            json_t *m = json_array_get(members, k);
            mrd__member_cfg *mc = &sv->members[k];
            snprintf(mc->name, sizeof(mc->name), "%s", mrd_cfg_str(m, "name", ""));
            snprintf(mc->node, sizeof(mc->node), "%s", mrd_cfg_str(m, "node", ""));
            snprintf(mc->region, sizeof(mc->region), "%s", mrd_cfg_str(m, "region", ""));
            snprintf(mc->conninfo, sizeof(mc->conninfo), "%s", mrd_cfg_str(m, "conninfo", ""));
            if (mrd__region_priority(ctl, mc->region) < 0) {
                snprintf(err, errlen,
                         "services[%zu].members[%zu].region: \"%s\" is not one of the configured "
                         "regions",
                         i, k, mc->region);
                return MRD_ECONFIG;
            }
            for (size_t q = 0; q < k; q++)
                if (strcmp(sv->members[q].node, mc->node) == 0 ||
                    strcmp(sv->members[q].name, mc->name) == 0) {
                    snprintf(err, errlen,
                             "services[%zu].members[%zu]: name and node must be unique in a "
                             "service",
                             i, k);
                    return MRD_ECONFIG;
                }
            if (strcmp(mc->region, sv->primary_region) == 0)
                primary_has_member = 1;
        }
        if (!primary_has_member) {
            snprintf(err, errlen,
                     "services[%zu].primary_region: no member of the service is in region \"%s\"",
                     i, sv->primary_region);
            return MRD_ECONFIG;
        }
        sv->dns = json_object_get(o, "dns");
        sv->registry = json_object_get(o, "registry");
        sv->webhooks = json_object_get(o, "webhooks");
        /* Cutover drivers: the same checks as their constructors, key named. */
        const char *keys[3] = {"dns", "registry", "webhooks"};
        json_t *objs[3] = {sv->dns, sv->registry, sv->webhooks};
        for (int k = 0; k < 3; k++) {
            char cerr[256];
            if (objs[k] && mrd_cutover_config_check(objs[k], cerr, sizeof(cerr)) != 0) {
                snprintf(err, errlen, "services[%zu].%s: %s", i, keys[k], cerr);
                return MRD_ECONFIG;
            }
        }
        sv->reconcile_interval_ms = (uint64_t)mrd_cfg_int(o, "reconcile_interval_ms", 30000);
        sv->repair_drift = !json_is_false(json_object_get(o, "repair_drift"));
    }
    return 0;
}

void mrd__services_free(mrd_ctl *ctl)
{
    for (size_t i = 0; i < ctl->nservices; i++) {
        free(ctl->services[i].members);
        json_decref(ctl->services[i].peers_all);
        json_decref(ctl->services[i].peers_by_node);
    }
    free(ctl->services);
    free(ctl->regions);
    ctl->services = NULL;
    ctl->regions = NULL;
    ctl->nservices = ctl->nregions = 0;
}

void mrd__service_carry(mrd__service *to, const mrd__service *from)
{
    to->last = from->last;
    to->has_last = from->has_last;
    memcpy(to->last_alert, from->last_alert, sizeof(to->last_alert));
    to->registry_epoch = from->registry_epoch;
    to->dns_epoch = from->dns_epoch;
    to->registry_attempts = from->registry_attempts;
    to->dns_attempts = from->dns_attempts;
    memcpy(to->registry_error, from->registry_error, sizeof(to->registry_error));
    memcpy(to->dns_error, from->dns_error, sizeof(to->dns_error));
    to->driver_retry_ms = from->driver_retry_ms;
    memcpy(to->peer_alerted, from->peer_alerted, sizeof(to->peer_alerted));
    to->peer_alert_ms = from->peer_alert_ms;
    to->diverged_ops = from->diverged_ops;
    to->diverged_bytes = from->diverged_bytes;
}

mrd__service *mrd__service_find(mrd_ctl *ctl, const char *name)
{
    for (size_t i = 0; i < ctl->nservices; i++)
        if (strcmp(ctl->services[i].name, name) == 0)
            return &ctl->services[i];
    return NULL;
}

const mrd__member_cfg *mrd__member_by_node(const mrd__service *s, const char *node)
{
    for (size_t i = 0; i < s->nmembers; i++)
        if (strcmp(s->members[i].node, node) == 0)
            return &s->members[i];
    return NULL;
}

const mrd__member_cfg *mrd__member_by_region(const mrd__service *s, const char *region)
{
    for (size_t i = 0; i < s->nmembers; i++)
        if (strcmp(s->members[i].region, region) == 0)
            return &s->members[i];
    return NULL;
}

static void sync_done(int err, PGresult *res, void *data)
{
    mrd_ctl *ctl = data;
    ctl->synced_busy = 0;
    if (err == 0 && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        ctl->synced_term = ctl->lease.term;
        ctl->tick_wanted = 1;
        mrd_log(MRD_LOG_INFO, "topology synced to the store", MRD_I("term", ctl->lease.term),
                MRD_I("services", ctl->nservices), MRD_I("regions", ctl->nregions));
    } else if (err == MRD_EIO) {
        mrd_log(MRD_LOG_WARN, "topology sync failed", MRD_S("error", PQresultErrorMessage(res)));
    }
}

void mrd__services_sync(mrd_ctl *ctl)
{
    if (ctl->synced_busy || ctl->synced_term == ctl->lease.term || !mrd__lease_is_leader(ctl))
        return;
    json_t *regions = json_array(), *services = json_array();
    for (size_t i = 0; i < ctl->nregions; i++)
        json_array_append_new(regions, json_pack("{s:s, s:i}", "name", ctl->regions[i].name,
                                                 "priority", ctl->regions[i].priority));
    json_t *cfg_services = json_object_get(ctl->cfg_json, "services");
    for (size_t i = 0; i < ctl->nservices; i++) {
        const mrd__service *s = &ctl->services[i];
        const mrd__member_cfg *pm = mrd__member_by_region(s, s->primary_region);
        json_array_append_new(services,
                              json_pack("{s:s, s:s, s:s, s:O}", "name", s->name, "primary_region",
                                        s->primary_region, "primary_member", pm ? pm->name : "",
                                        "config", json_array_get(cfg_services, i)));
    }
    char *rtext = json_dumps(regions, JSON_COMPACT);
    char *stext = json_dumps(services, JSON_COMPACT);
    json_decref(regions);
    json_decref(services);
    char term[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    const char *params[4] = {ctl->cfg.name, term, rtext, stext};
    int rc = mrd_pg_query(
        ctl->pg,
        "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok),"
        " r AS (INSERT INTO meridian.regions (name, priority)"
        "  SELECT x.name, x.priority FROM g, jsonb_to_recordset($3::jsonb) AS x(name text,"
        "   priority int) WHERE g.ok"
        "  ON CONFLICT (name) DO UPDATE SET priority = EXCLUDED.priority RETURNING 1),"
        " s AS (INSERT INTO meridian.services (name, primary_region, primary_member, config)"
        "  SELECT x.name, x.primary_region, x.primary_member, x.config FROM g,"
        "   jsonb_to_recordset($4::jsonb) AS x(name text, primary_region text,"
        "   primary_member text, config jsonb) WHERE g.ok"
        "  ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, updated_at = now()"
        "  RETURNING 1)"
        " SELECT g.ok, (SELECT count(*) FROM r), (SELECT count(*) FROM s) FROM g",
        4, params, sync_done, ctl);
    free(rtext);
    free(stext);
    if (rc == 0)
        ctl->synced_busy = 1;
}
