/*
 * Configuration reload on SIGHUP, without a restart.
 *
 * The new file is loaded and validated completely before anything changes;
 * a file that is invalid, or that would be unsafe to apply, is refused
 * with a message naming the key, and the running configuration stays in
 * force. Unsafe: a service whose current primary (as the store says, else
 * as the running configuration says) would no longer be in its members. Keys that only a restart
 * can apply (name, region, listen, advertise_url, store) are reported and keep their running
 * values.
 *
 * What is applied: regions, services (policies, members, drivers), nodes, tokens,
 * log level, lease TTL, tick period, agent token. The run-time state of each
 * service that exists in both (last decision, cutover progress) is carried
 * over by name; the leader writes the new topology to the store on its next
 * tick (guarded by its lease, as at start).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"

/* The member that holds the service's primary: the store's word (the cache
 * every controller refreshes each tick), else the running configuration's
 * initial primary region. */
static const char *current_primary(mrd_ctl *ctl, const char *service, char *buf, size_t len)
{
    json_t *s = json_object_get(ctl->ingest.services, service);
    const char *pm = json_string_value(json_object_get(s, "primary_member"));
    if (pm && pm[0]) {
        snprintf(buf, len, "%s", pm);
        return buf;
    }
    mrd__service *old = mrd__service_find(ctl, service);
    const mrd__member_cfg *m = old ? mrd__member_by_region(old, old->primary_region) : NULL;
    if (m == NULL)
        return NULL;
    snprintf(buf, len, "%s", m->name);
    return buf;
}

static int primary_kept(mrd_ctl *ctl, const mrd__service *nsvc, char *err, size_t errlen)
{
    char buf[MRD_NAME_MAX];
    const char *pm = current_primary(ctl, nsvc->name, buf, sizeof(buf));
    if (pm == NULL)
        return 0; /* a new service */
    for (size_t k = 0; k < nsvc->nmembers; k++)
        if (strcmp(nsvc->members[k].name, pm) == 0)
            return 0;
    snprintf(err, errlen,
             "services.%s.members: the service's primary is %s, which the new configuration "
             "no longer lists",
             nsvc->name, pm);
    return -1;
}

static void note_restart_only(const char *key, const char *running, const char *wanted)
{
    if (strcmp(running, wanted) != 0)
        mrd_log(MRD_LOG_WARN, "configuration change needs a restart; running value kept",
                MRD_S("key", key), MRD_S("running", running), MRD_S("new", wanted));
}

int mrd__reload(mrd_ctl *ctl, const char *path)
{
    mrd_ctl next;
    memset(&next, 0, sizeof(next));
    char err[512];
    if (mrd__ctl_config_load(&next, path, err, sizeof(err)) != 0) {
        mrd_log(MRD_LOG_ERROR, "configuration not reloaded", MRD_S("file", path),
                MRD_S("error", err), MRD_S("hint", "the running configuration stays in force"));
        return -1;
    }
    for (size_t i = 0; i < next.nservices; i++) {
        if (primary_kept(ctl, &next.services[i], err, sizeof(err)) != 0) {
            mrd_log(MRD_LOG_ERROR, "configuration not reloaded: unsafe", MRD_S("file", path),
                    MRD_S("error", err),
                    MRD_S("hint", "move the primary first (switchover), then remove the member"));
            mrd__ctl_config_free(&next);
            return -1;
        }
    }
    note_restart_only("name", ctl->cfg.name, next.cfg.name);
    note_restart_only("region", ctl->cfg.region, next.cfg.region);
    note_restart_only("advertise_url", ctl->cfg.advertise_url, next.cfg.advertise_url);
    note_restart_only("store", ctl->cfg.store, next.cfg.store);
    char lr[96], ln[96];
    snprintf(lr, sizeof(lr), "%s:%d", ctl->cfg.listen_host, ctl->cfg.listen_port);
    snprintf(ln, sizeof(ln), "%s:%d", next.cfg.listen_host, next.cfg.listen_port);
    note_restart_only("listen", lr, ln);

    /* Carry each surviving service's run-time state over. */
    for (size_t i = 0; i < next.nservices; i++) {
        mrd__service *old = mrd__service_find(ctl, next.services[i].name);
        if (old)
            mrd__service_carry(&next.services[i], old);
    }
    /* Swap what reloads; next then holds the old values and frees them. */
    mrd__region *r = ctl->regions;
    size_t nr = ctl->nregions;
    ctl->regions = next.regions;
    ctl->nregions = next.nregions;
    next.regions = r;
    next.nregions = nr;
    mrd__service *s = ctl->services;
    size_t ns = ctl->nservices;
    ctl->services = next.services;
    ctl->nservices = next.nservices;
    next.services = s;
    next.nservices = ns;
    mrd__node_cfg *nd = ctl->nodes;
    size_t nn = ctl->nnodes;
    int ng = ctl->nodes_given;
    ctl->nodes = next.nodes;
    ctl->nnodes = next.nnodes;
    ctl->nodes_given = next.nodes_given;
    next.nodes = nd;
    next.nnodes = nn;
    next.nodes_given = ng;
    json_t *pi = ctl->peer_index;
    ctl->peer_index = next.peer_index;
    next.peer_index = pi;
    json_t *j = ctl->cfg_json;
    ctl->cfg_json = next.cfg_json;
    next.cfg_json = j;
    mrd_auth *a = ctl->auth;
    ctl->auth = next.auth;
    next.auth = a;
    if (ctl->http)
        mrd_http_server_set_auth(ctl->http, ctl->auth);
    ctl->cfg.lease_ttl_ms = next.cfg.lease_ttl_ms;
    ctl->cfg.tick_ms = next.cfg.tick_ms;
    ctl->cfg.log_level = next.cfg.log_level;
    ctl->cfg.debug_endpoints = next.cfg.debug_endpoints;
    snprintf(ctl->cfg.agent_token, sizeof(ctl->cfg.agent_token), "%s", next.cfg.agent_token);
    mrd_log_set_level(ctl->cfg.log_level);
    ctl->heartbeat_ms = 1000;
    for (size_t i = 0; i < ctl->nservices; i++)
        if (i == 0 || ctl->services[i].policy.heartbeat_ms < ctl->heartbeat_ms)
            ctl->heartbeat_ms = ctl->services[i].policy.heartbeat_ms;
    ctl->synced_term = 0; /* the leader writes the new topology on its next tick */
    ctl->tick_wanted = 1;
    mrd__ctl_config_free(&next);
    mrd_log(MRD_LOG_INFO, "configuration reloaded", MRD_S("file", path),
            MRD_I("regions", ctl->nregions), MRD_I("services", ctl->nservices));
    return 0;
}
