/*
 * Pokes: the leader pushes an agent its pending commands and asks for a
 * heartbeat now (POST {api_url}/v1/agent/poke {"commands": [...]} with the
 * agents' token) instead of waiting for its next heartbeat, when an
 * operation waits on that agent: a command to run, or a fresh position to
 * report. The commands are the ones already persisted in the store and
 * served in heartbeat answers (same ids and epochs, so the agent's
 * at-most-once and epoch checks apply as ever): a lost poke costs at most
 * one heartbeat interval.
 *
 * The agent's URL is the node's agent_url of the configuration ("nodes");
 * only for a node it does not configure, the api_url of its own heartbeats
 * (nodes.api_url, read in the leader's snapshot). A poke that only asks for a fresh report is sent
 * at most once per node per POKE_MIN_INTERVAL_MS; one with new commands always.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"

#define POKE_MIN_INTERVAL_MS 50

static void poke_done(const mrd_http_client_result *res, void *data)
{
    (void)data;
    if (res->error || res->status != 200)
        mrd_log(MRD_LOG_DEBUG, "poke failed", MRD_S("error", res->error ? res->error : "status"),
                MRD_I("status", res->status));
}

void mrd__poke(mrd_ctl *ctl, const char *node, int with_commands)
{
    if (ctl->http_client == NULL || ctl->cfg.agent_token[0] == '\0')
        return;
    const char *url = mrd__node_agent_url(ctl, node);
    if (url == NULL && ctl->snapshot != NULL)
        url = mrd__snapshot_node_url(ctl, node);
    if (url == NULL || url[0] == '\0')
        return;
    uint64_t now = mrd__now_ms();
    json_t *last = json_object_get(ctl->poked, node);
    if (!with_commands && last && (uint64_t)json_integer_value(last) + POKE_MIN_INTERVAL_MS > now)
        return;
    json_object_set_new(ctl->poked, node, json_integer((json_int_t)now));
    char full[512], auth[600];
    snprintf(full, sizeof(full), "%s/v1/agent/poke", url);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", ctl->cfg.agent_token);
    const char *headers[] = {auth, "Content-Type: application/json", NULL};
    json_t *cmds = json_object_get(ctl->ingest.commands, node);
    json_t *body = cmds ? json_pack("{s:O}", "commands", cmds) : json_pack("{s:[]}", "commands");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        return;
    mrd_http_client_req req;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = full;
    req.body = text;
    req.body_len = strlen(text);
    req.headers = headers;
    req.timeout_ms = 1000;
    mrd_http_client_request(ctl->http_client, &req, poke_done, NULL);
    free(text);
}
