/*
 * Commands from the controller (fence, unfence, promote, rejoin) and their
 * results. Called by heartbeat.c for every command of every answer.
 *
 * Each command first goes through the epoch file (epoch_store.c), which
 * durably records its id as started before anything runs: a command id is
 * executed at most once, also across restarts, and a command of an epoch
 * below the highest seen for its service is refused. A command seen again
 * (the controller resends until it has the result) is answered from the
 * record. Accepted commands run one at a time per member, in arrival order;
 * a promote first waits until every peer lease this agent granted for the
 * service has ended (lease.c).
 *
 * Results are reported in every heartbeat until the controller acknowledges
 * them (answer "ack"); the list is bounded (the oldest is dropped when
 * full: the controller can still learn it by resending the command).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "meridian/error.h"
#include "meridian/log.h"

void mrd__result_add(mrd__agent *a, const char *id, mrd_result_status status, const char *error,
                     int64_t epoch, int64_t position)
{
    mrd_hb_result *r = NULL;
    for (size_t i = 0; i < a->nresults; i++)
        if (strcmp(a->results[i].id, id) == 0)
            r = &a->results[i];
    if (!r) {
        if (!a->results) {
            a->results = calloc(MRD_PROTO_MAX_RESULTS, sizeof(*a->results));
            if (!a->results)
                return;
        }
        if (a->nresults == MRD_PROTO_MAX_RESULTS) {
            memmove(a->results, a->results + 1, (a->nresults - 1) * sizeof(*a->results));
            a->nresults--;
        }
        r = &a->results[a->nresults++];
    }
    memset(r, 0, sizeof(*r));
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->status = status;
    snprintf(r->error, sizeof(r->error), "%s", error ? error : "");
    r->epoch = epoch;
    r->position = position > 0 ? position : 0;
    mrd__heartbeat_asap(a); /* the controller waits for it */
}

void mrd__results_ack(mrd__agent *a, const mrd_hb_ack *ack, size_t nack)
{
    size_t w = 0;
    for (size_t i = 0; i < a->nresults; i++) {
        int acked = 0;
        for (size_t k = 0; k < nack && !acked; k++)
            acked = strcmp(a->results[i].id, ack[k].id) == 0;
        if (!acked)
            a->results[w++] = a->results[i];
    }
    a->nresults = w;
}

static void run_next(mrd__member *m);

static void on_done(mrd__member *m, int err, const char *message, int64_t position, void *data)
{
    mrd__agent *a = m->agent;
    mrd__pending_cmd *c = data;
    mrd__cmd_state st = err ? MRD__CMD_FAILED : MRD__CMD_DONE;
    int rc = mrd__epoch_store_finish(a->epochs, c->id, st, err ? message : NULL, position);
    if (rc)
        mrd_log(MRD_LOG_ERROR, "cannot record command outcome", MRD_S("id", c->id),
                MRD_S("error", mrd_strerror(rc)));
    mrd_log(err ? MRD_LOG_ERROR : MRD_LOG_INFO, err ? "command failed" : "command done",
            MRD_S("id", c->id), MRD_S("kind", mrd_cmd_kind_name(c->kind)),
            MRD_S("member", m->cfg->name), MRD_I("epoch", c->epoch),
            MRD_S("message", message ? message : ""));
    mrd__result_add(a, c->id, err ? MRD_RESULT_FAILED : MRD_RESULT_DONE, err ? message : NULL,
                    c->epoch, position);
    if (!err && c->kind == MRD_CMD_UNFENCE)
        m->self_fenced = 0;
    if (!err && c->kind == MRD_CMD_FENCE)
        m->fenced = 1;
    if (c->kind == MRD_CMD_PROMOTE) {
        /* The leader persisted this promote after making sure no other
         * member can be writable: that order is as good as a recorded
         * contact, and the isolation clock of the new primary starts when
         * the promote STARTED (it had no recorded contact as a replica).
         * Start, not end: the member is writable from some instant inside
         * pg_promote (which polls every 100 ms), so the self-fencing tick
         * may see it writable before this callback runs; heartbeat.c
         * counts promote_started_ms as the contact while the promote runs,
         * and the same instant is kept here. It is also the safe choice
         * for the leader's isolation wait (never two writable): the
         * leader counts from the node's last heartbeat in the store, and
         * the start is earlier than the end, so the agent's clock runs out
         * no later than with a contact at the end (the urgent beat sent
         * when the command arrived, or the beat whose answer carried it,
         * precedes the start by at most a heartbeat; the isolation margin
         * covers that). A failed promote credits nothing: a member that
         * became writable anyway is fenced by the rule. */
        if (!err) {
            if (!a->have_contact || m->promote_started_ms > a->last_contact_ms)
                a->last_contact_ms = m->promote_started_ms;
            a->have_contact = 1;
            m->promoted_epoch = c->epoch;
        }
        m->promote_started_ms = 0;
    }
    /* pop c (it is the head) */
    m->queue = c->next;
    json_decref(c->args);
    free(c);
    m->busy = 0;
    if (!a->stopping) {
        run_next(m);
        /* report the result (and the state after it) now, not at the next beat */
        mrd__heartbeat_asap(a);
    }
}

static void dispatch(mrd__member *m, mrd__pending_cmd *c);

static void on_wait(uv_timer_t *t)
{
    mrd__member *m = t->data;
    if (m->queue && !m->agent->stopping)
        dispatch(m, m->queue);
}

static void dispatch(mrd__member *m, mrd__pending_cmd *c)
{
    switch (c->kind) {
    case MRD_CMD_FENCE:
        mrd__member_fence(m, on_done, c);
        break;
    case MRD_CMD_UNFENCE:
        mrd__member_unfence(m, on_done, c);
        break;
    case MRD_CMD_PROMOTE: {
        /* A lease granted to the old primary protects against it staying
         * writable; when the controller says the old primary confirmed its
         * fence at this epoch (switchover), there is nothing to wait for. */
        int fenced = json_is_true(json_object_get(c->args, "old_primary_fenced"));
        uint64_t wait =
            fenced ? 0 : mrd__lease_promote_wait(&m->grants, c->epoch, mrd__now_ms(m->agent));
        if (wait > 0) {
            mrd_log(MRD_LOG_WARN, "promote waits for a granted peer lease to end",
                    MRD_S("id", c->id), MRD_S("member", m->cfg->name), MRD_U("wait_ms", wait));
            uv_timer_start(&m->wait_timer, on_wait, wait, 0);
            return;
        }
        m->promote_started_ms = mrd__now_ms(m->agent);
        mrd__member_promote(m, on_done, c);
        break;
    }
    case MRD_CMD_REJOIN:
        mrd__member_rejoin(m, c->args, c->epoch, on_done, c);
        break;
    }
}

static void run_next(mrd__member *m)
{
    if (m->busy || !m->queue)
        return;
    m->busy = 1;
    mrd__pending_cmd *c = m->queue;
    mrd_log(MRD_LOG_INFO, "command started", MRD_S("id", c->id),
            MRD_S("kind", mrd_cmd_kind_name(c->kind)), MRD_S("member", m->cfg->name),
            MRD_I("epoch", c->epoch));
    dispatch(m, c);
}

void mrd__commands_handle(mrd__agent *a, const mrd_hb_command *cmd)
{
    mrd__cmd_record rec;
    int rc = mrd__epoch_store_begin(a->epochs, cmd->id, cmd->service, cmd->epoch, &rec);
    switch (rc) {
    case 0:
        break;
    case MRD_EEXISTS:
        /* seen before: never run again; report the outcome once more unless
         * it is still running here */
        if (rec.state == MRD__CMD_STARTED)
            return;
        for (size_t i = 0; i < a->nresults; i++)
            if (strcmp(a->results[i].id, cmd->id) == 0)
                return;
        mrd_log(MRD_LOG_INFO, "command already executed", MRD_S("id", cmd->id));
        mrd__result_add(a, cmd->id,
                        rec.state == MRD__CMD_DONE      ? MRD_RESULT_DONE
                        : rec.state == MRD__CMD_REFUSED ? MRD_RESULT_REFUSED
                                                        : MRD_RESULT_FAILED,
                        rec.error, rec.epoch, rec.position);
        return;
    case MRD_ESTALE:
        mrd_log(MRD_LOG_WARN, "command refused", MRD_S("id", cmd->id),
                MRD_S("kind", mrd_cmd_kind_name(cmd->kind)), MRD_S("service", cmd->service),
                MRD_S("error", rec.error));
        mrd__result_add(a, cmd->id, MRD_RESULT_REFUSED, rec.error, cmd->epoch, 0);
        return;
    default:
        mrd_log(MRD_LOG_ERROR, "cannot record command, not executing it", MRD_S("id", cmd->id),
                MRD_S("error", mrd_strerror(rc)));
        return;
    }

    mrd__member *m = mrd__member_find(a, cmd->service, cmd->member);
    if (!m) {
        char msg[MRD_PROTO_ERROR_MAX];
        snprintf(msg, sizeof(msg), "no member %s of service %s on this node", cmd->member,
                 cmd->service);
        mrd__epoch_store_finish(a->epochs, cmd->id, MRD__CMD_FAILED, msg, 0);
        mrd__result_add(a, cmd->id, MRD_RESULT_FAILED, msg, cmd->epoch, 0);
        return;
    }
    mrd__pending_cmd *c = calloc(1, sizeof(*c));
    if (!c) {
        mrd__epoch_store_finish(a->epochs, cmd->id, MRD__CMD_FAILED, "out of memory", 0);
        mrd__result_add(a, cmd->id, MRD_RESULT_FAILED, "out of memory", cmd->epoch, 0);
        return;
    }
    snprintf(c->id, sizeof(c->id), "%s", cmd->id);
    c->kind = cmd->kind;
    c->epoch = cmd->epoch;
    c->args = json_incref(cmd->args);
    mrd__pending_cmd **tail = &m->queue;
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    run_next(m);
}

void mrd__commands_stop(mrd__agent *a)
{
    /* Commands still queued stay "started" in the epoch file: after a
     * restart they read "failed" and are never run. */
    for (size_t i = 0; i < a->nmembers; i++) {
        mrd__member *m = &a->members[i];
        mrd__pending_cmd *c = m->busy ? (m->queue ? m->queue->next : NULL) : m->queue;
        if (m->busy && m->queue)
            m->queue->next = NULL;
        else
            m->queue = NULL;
        while (c) {
            mrd__pending_cmd *n = c->next;
            json_decref(c->args);
            free(c);
            c = n;
        }
    }
}
