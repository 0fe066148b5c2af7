/*
 * Nodes and peer sets: the controller owns which peers a primary must hold
 * leases from (agent/README.md, "Self-fencing and peer leases").
 *
 * - The optional top-level "nodes" section names each node with its region
 *   and the URL of its agent ("agent_url"). When it is given, every member's
 *   node must be one of them and in the same region; the leader pokes an
 *   agent at its configured URL rather than at the api_url its heartbeats
 *   claim. (Room is left for per-node keys such as a token.)
 * - The peer set of a member of a service is every other configured member of
 *   the service: built once per configuration load as JSON (one array per
 *   node of the service), and copied into each heartbeat answer by ingest.c.
 * - The leader's tick compares what the current primary's agent reports it
 *   requires (leases_required) with that set: a member missing from it, or a
 *   peer the configuration does not know, is a mismatch; it becomes an audit
 *   event (peer_set.mismatch, again at most every PEER_ALERT_REPEAT_MS while
 *   it lasts, peer_set.ok when it clears) and the gauges of mrd__peers_metrics.
 *   The view marks members outside the reported set (decide.c refuses them).
 *
 * Called by config_ctl.c (load), ingest.c (answers), poke.c (URLs), tick.c
 * (view, check) and metrics_ctl.c. Loading fails with MRD_ECONFIG naming the
 * key; everything else only reads memory and cannot fail.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/error.h"

#define PEER_ALERT_REPEAT_MS (10 * 60 * 1000)

static const mrd_cfg_field node_fields[] = {
    {"name", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"region", MRD_CFG_STRING, 1, 1, MRD_NAME_MAX - 1, NULL, 0, NULL},
    {"agent_url", MRD_CFG_STRING, 0, 1, MRD__URL_MAX - 1, NULL, 0, NULL},
};
const mrd_cfg_schema mrd__node_schema = {node_fields, sizeof(node_fields) / sizeof(node_fields[0])};

static int agent_url_ok(const char *u)
{
    if (!((strncmp(u, "http://", 7) == 0 && u[7]) || (strncmp(u, "https://", 8) == 0 && u[8])))
        return 0;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return 0;
    return 1;
}

const mrd__node_cfg *mrd__node_find(const mrd_ctl *ctl, const char *name)
{
    for (size_t i = 0; i < ctl->nnodes; i++)
        if (strcmp(ctl->nodes[i].name, name) == 0)
            return &ctl->nodes[i];
    return NULL;
}

const char *mrd__node_agent_url(const mrd_ctl *ctl, const char *node)
{
    const mrd__node_cfg *n = mrd__node_find(ctl, node);
    return n && n->agent_url[0] ? n->agent_url : NULL;
}

/* The peer set of the member on node (every other member of s), as the
 * answer's JSON array; node NULL: every member. */
static json_t *peers_json(const mrd_ctl *ctl, const mrd__service *s, const char *node)
{
    json_t *arr = json_array();
    for (size_t k = 0; arr && k < s->nmembers; k++) {
        const mrd__member_cfg *m = &s->members[k];
        if (node && strcmp(m->node, node) == 0)
            continue;
        const char *url = mrd__node_agent_url(ctl, m->node);
        json_array_append_new(arr, json_pack("{s:s, s:s, s:o}", "member", m->name, "node", m->node,
                                             "agent_url", url ? json_string(url) : json_null()));
    }
    return arr;
}

int mrd__nodes_load(mrd_ctl *ctl, const json_t *root, char *err, size_t errlen)
{
    const json_t *nodes = json_object_get(root, "nodes");
    size_t n = json_array_size(nodes);
    ctl->nodes = calloc(n ? n : 1, sizeof(*ctl->nodes));
    if (ctl->nodes == NULL) {
        snprintf(err, errlen, "out of memory");
        return MRD_ENOMEM;
    }
    ctl->nnodes = n;
    ctl->nodes_given = nodes != NULL;
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(nodes, i);
        mrd__node_cfg *x = &ctl->nodes[i];
        snprintf(x->name, sizeof(x->name), "%s", mrd_cfg_str(o, "name", ""));
        snprintf(x->region, sizeof(x->region), "%s", mrd_cfg_str(o, "region", ""));
        snprintf(x->agent_url, sizeof(x->agent_url), "%s", mrd_cfg_str(o, "agent_url", ""));
        for (size_t k = 0; k < i; k++)
            if (strcmp(ctl->nodes[k].name, x->name) == 0) {
                snprintf(err, errlen, "nodes[%zu].name: duplicate node \"%s\"", i, x->name);
                return MRD_ECONFIG;
            }
        if (x->agent_url[0] && !agent_url_ok(x->agent_url)) {
            snprintf(err, errlen,
                     "nodes[%zu].agent_url: must be an http:// or https:// URL without control "
                     "characters (CR, LF)",
                     i);
            return MRD_ECONFIG;
        }
    }
    if ((ctl->peer_index = json_object()) == NULL) {
        snprintf(err, errlen, "out of memory");
        return MRD_ENOMEM;
    }
    for (size_t i = 0; i < ctl->nservices; i++) {
        mrd__service *s = &ctl->services[i];
        for (size_t k = 0; ctl->nodes_given && k < s->nmembers; k++) {
            const mrd__member_cfg *m = &s->members[k];
            const mrd__node_cfg *x = mrd__node_find(ctl, m->node);
            if (x == NULL) {
                snprintf(err, errlen, "services[%zu].members[%zu].node: \"%s\" is not one of nodes",
                         i, k, m->node);
                return MRD_ECONFIG;
            }
            if (strcmp(x->region, m->region) != 0) {
                snprintf(err, errlen,
                         "services[%zu].members[%zu].region: \"%s\" differs from the region \"%s\" "
                         "of node \"%s\"",
                         i, k, m->region, x->region, x->name);
                return MRD_ECONFIG;
            }
        }
        s->peers_all = peers_json(ctl, s, NULL);
        s->peers_by_node = json_object();
        for (size_t k = 0; s->peers_by_node && k < s->nmembers; k++)
            json_object_set_new(s->peers_by_node, s->members[k].node,
                                peers_json(ctl, s, s->members[k].node));
        if (s->peers_all == NULL || s->peers_by_node == NULL ||
            json_object_set_new(ctl->peer_index, s->name,
                                json_pack("[O, O]", s->peers_all, s->peers_by_node)) != 0) {
            snprintf(err, errlen, "out of memory");
            return MRD_ENOMEM;
        }
    }
    return 0;
}

void mrd__nodes_free(mrd_ctl *ctl)
{
    free(ctl->nodes);
    json_decref(ctl->peer_index);
    ctl->peer_index = NULL;
    ctl->nodes = NULL;
    ctl->nnodes = 0;
    ctl->nodes_given = 0;
}

/* A hash lookup: answers are built for every heartbeat. */
json_t *mrd__peers_for(mrd_ctl *ctl, const char *service, const char *node)
{
    json_t *e = json_object_get(ctl->peer_index, service);
    if (e == NULL)
        return NULL;
    json_t *p = json_object_get(json_array_get(e, 1), node);
    return p ? p : json_array_get(e, 0);
}

/* ---- the primary's reported set against the configuration ---------------- */

static int in_list(const json_t *arr, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e)
    {
        const char *x = json_string_value(e);
        if (x && strcmp(x, name) == 0)
            return 1;
    }
    return 0;
}

/* The current primary's last reported leases_required (a JSON array), or
 * NULL when it reported none (an older agent, or not yet primary). */
static json_t *primary_required(mrd_ctl *ctl, const mrd__service *s, const mrd_view *v,
                                const mrd__member_cfg **pm)
{
    *pm = v->primary_node[0] ? mrd__member_by_node(s, v->primary_node) : NULL;
    if (*pm == NULL)
        return NULL;
    json_t *row = mrd__snapshot_member(ctl, s->name, (*pm)->name);
    json_t *req = json_object_get(row, "leases_required");
    return json_is_array(req) ? req : NULL;
}

void mrd__peers_view(mrd_ctl *ctl, const mrd__service *s, mrd_view *v)
{
    const mrd__member_cfg *pm;
    json_t *req = primary_required(ctl, s, v, &pm);
    if (req == NULL || json_array_size(req) == 0)
        return; /* unknown, or no lease can keep it writable: every member is safe */
    for (size_t i = 0; i < v->nmembers; i++) {
        mrd_view_member *m = &v->members[i];
        m->outside_leases = strcmp(m->node, pm->node) != 0 && !in_list(req, m->node);
    }
}

void mrd__peers_check(mrd_ctl *ctl, mrd__service *s, const mrd_view *v, uint64_t now)
{
    const mrd__member_cfg *pm;
    json_t *req = primary_required(ctl, s, v, &pm);
    s->peer_known = req != NULL;
    s->peer_missing = s->peer_unknown = 0;
    if (req == NULL)
        return;
    json_t *missing = json_array(), *unknown = json_array();
    char sig[sizeof(s->peer_alerted)];
    size_t pos = (size_t)snprintf(sig, sizeof(sig), "%s:", pm->name);
    for (size_t k = 0; k < s->nmembers; k++) {
        const mrd__member_cfg *m = &s->members[k];
        if (m == pm || in_list(req, m->node))
            continue;
        s->peer_missing++;
        json_array_append_new(missing, json_string(m->node));
        if (pos < sizeof(sig))
            pos += (size_t)snprintf(sig + pos, sizeof(sig) - pos, "-%s", m->node);
    }
    size_t i;
    json_t *e;
    json_array_foreach(req, i, e)
    {
        const char *name = json_string_value(e);
        if (name == NULL || mrd__member_by_node(s, name) != NULL)
            continue;
        s->peer_unknown++;
        json_array_append_new(unknown, json_string(name));
        if (pos < sizeof(sig))
            pos += (size_t)snprintf(sig + pos, sizeof(sig) - pos, "+%s", name);
    }
    if (s->peer_missing == 0 && s->peer_unknown == 0) {
        if (s->peer_alerted[0]) {
            mrd__event(ctl, "peer_set.ok", s->name, "meridian",
                       "the primary's peer set matches the configuration again",
                       json_pack("{s:s, s:s}", "member", pm->name, "previous", s->peer_alerted));
            s->peer_alerted[0] = '\0';
        }
        json_decref(missing);
        json_decref(unknown);
        return;
    }
    if (strcmp(s->peer_alerted, sig) == 0 && now < s->peer_alert_ms + PEER_ALERT_REPEAT_MS) {
        json_decref(missing);
        json_decref(unknown);
        return;
    }
    snprintf(s->peer_alerted, sizeof(s->peer_alerted), "%s", sig);
    s->peer_alert_ms = now;
    char msg[MRD_TEXT_MAX];
    snprintf(msg, sizeof(msg),
             "primary %s requires peer leases that differ from the configuration: %d member(s) "
             "missing, %d peer(s) unknown",
             pm->name, s->peer_missing, s->peer_unknown);
    mrd_log(MRD_LOG_WARN, "peer set mismatch", MRD_S("service", s->name), MRD_S("member", pm->name),
            MRD_I("missing", s->peer_missing), MRD_I("unknown", s->peer_unknown),
            MRD_S("hint", "members missing from the set are never promoted automatically"));
    mrd__event(ctl, "peer_set.mismatch", s->name, "meridian", msg,
               json_pack("{s:s, s:s, s:o, s:o, s:O}", "member", pm->name, "node", pm->node,
                         "missing", missing, "unknown", unknown, "required", req));
}

void mrd__peers_metrics(mrd_ctl *ctl, mrd_metrics_buf *b)
{
    if (ctl->snapshot == NULL || !mrd__lease_is_leader(ctl))
        return;
    static const struct {
        const char *name, *help;
        int which;
    } fam[] = {
        {"meridian_peer_set_mismatch",
         "1 while the primary's reported peer lease set differs from the configuration.", 0},
        {"meridian_peer_set_missing_members",
         "Configured members the primary does not require a peer lease from.", 1},
        {"meridian_peer_set_unknown_peers",
         "Peers the primary requires a lease from that the configuration does not know.", 2},
    };
    for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
        mrd_metrics_family(b, fam[f].name, MRD_METRIC_GAUGE, fam[f].help);
        for (size_t i = 0; i < ctl->nservices; i++) {
            const mrd__service *s = &ctl->services[i];
            if (!s->peer_known)
                continue;
            int v = fam[f].which == 1   ? s->peer_missing
                    : fam[f].which == 2 ? s->peer_unknown
                                        : (s->peer_missing || s->peer_unknown);
            mrd_metric_label l[] = {{"service", s->name}};
            mrd_metrics_sample_int(b, l, 1, v);
        }
    }
}
