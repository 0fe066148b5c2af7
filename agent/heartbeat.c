/*
 * The heartbeat loop and the self-fencing tick of the agent.
 *
 * Every heartbeat_ms: poll the members' replication state, renew peer
 * leases, and send one heartbeat (protocol.h) to the controller in use. On a
 * transport error or a non-200 answer the next controller of the list is
 * tried at once, each at most once per beat. The answer's epochs are
 * written to the epoch file, its commands handed to commands.c, its acks
 * clear reported results, and "recorded": true renews the contact: the
 * contact counts from the time the beat was SENT (never later than the time
 * the store recorded it), so the agent's view of its contact never outlasts
 * the leader's.
 *
 * Every tick (a quarter of heartbeat_ms, at most 100 ms): each writable
 * primary member is checked against the rule of lease.c; when neither a
 * recorded contact nor every peer lease holds, the member is fenced (loudly)
 * and stays fenced until the controller sends unfence: a self-fenced
 * primary never unfences itself (the leader may already count on it). The
 * fence is reported in a heartbeat at once, so that a leader that hears
 * from the member again unfences it without waiting for the next beat. A
 * tick that runs a heartbeat or more late (the agent was stalled) is
 * logged and fences like any other: on_tick says why it does not renew
 * first.
 * The rule applies from the end of the first heartbeat round after start,
 * and once a status poll and a lease round had time to run (an agent that
 * is down cannot fence anything either; its start must not fence a
 * primary that a store outage leaves without recorded contact).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"
#include "meridian/error.h"
#include "meridian/log.h"

const mrd__service_view *mrd__service_find(const mrd__agent *a, const char *service)
{
    for (size_t i = 0; i < a->nservices; i++)
        if (strcmp(a->services[i].service, service) == 0)
            return &a->services[i];
    return NULL;
}

static void send_beat(mrd__agent *a);

/* ---- request ---- */

static int build_request(mrd__agent *a, mrd_hb_request *r)
{
    mrd_hb_request_init(r);
    snprintf(r->node, sizeof(r->node), "%s", a->cfg.node);
    snprintf(r->region, sizeof(r->region), "%s", a->cfg.region);
    snprintf(r->api_url, sizeof(r->api_url), "%s", a->cfg.api_url);
    r->seq = ++a->seq;
    r->urgent = a->beat_urgent;
    r->epochs = calloc(a->nmembers + 1, sizeof(*r->epochs));
    r->members = calloc(a->nmembers + 1, sizeof(*r->members));
    r->checks = calloc(a->nchecks + 1, sizeof(*r->checks));
    r->probes = calloc(a->nprobes + 1, sizeof(*r->probes));
    r->results = calloc(a->nresults + 1, sizeof(*r->results));
    if (!r->epochs || !r->members || !r->checks || !r->probes || !r->results)
        return MRD_ENOMEM;
    for (size_t i = 0; i < a->nmembers; i++) {
        const mrd__member *m = &a->members[i];
        mrd_hb_epoch *e = &r->epochs[r->nepochs++];
        snprintf(e->service, sizeof(e->service), "%s", m->cfg->service);
        e->epoch = mrd__epoch_store_epoch(a->epochs, m->cfg->service);
        mrd_hb_member *x = &r->members[r->nmembers++];
        snprintf(x->service, sizeof(x->service), "%s", m->cfg->service);
        snprintf(x->name, sizeof(x->name), "%s", m->cfg->name);
        snprintf(x->kind, sizeof(x->kind), "%s", m->cfg->kind);
        x->role = m->role;
        x->fenced = m->fenced;
        x->timeline = m->timeline;
        x->position = m->position;
        x->receive_position = m->receive_position;
        x->replay_position = m->replay_position;
        x->replay_timestamp_ms = m->replay_timestamp_ms;
        x->lag_bytes = m->lag_bytes;
        x->lag_ms = m->lag_ms;
        x->nstandbys = m->nstandbys < MRD_PROTO_MAX_STANDBYS ? m->nstandbys : 0;
        memcpy(x->standbys, m->standbys, x->nstandbys * sizeof(x->standbys[0]));
        x->healthy = m->status_ok && m->role != MRD_MEMBER_UNKNOWN &&
                     mrd__checks_member_healthy(a, m->cfg->name);
        if (mrd__peer_report(a, m, x))
            return MRD_ENOMEM;
    }
    for (size_t i = 0; i < a->nchecks; i++) {
        const mrd__check *c = &a->checks[i];
        if (!c->have_result)
            continue;
        mrd_hb_check *x = &r->checks[r->nchecks++];
        snprintf(x->name, sizeof(x->name), "%s", c->cfg->name);
        x->status = c->status;
        snprintf(x->output, sizeof(x->output), "%s", c->output);
        x->duration_ms = (int64_t)c->duration_ms;
    }
    for (size_t i = 0; i < a->nprobes; i++) {
        const mrd__check *c = &a->probes[i];
        if (!c->have_result)
            continue;
        mrd_hb_probe *x = &r->probes[r->nprobes++];
        snprintf(x->region, sizeof(x->region), "%s", c->cfg->name);
        snprintf(x->target, sizeof(x->target), "%s",
                 c->cfg->kind == MRD__CHECK_HTTP ? c->cfg->url
                 : c->cfg->kind == MRD__CHECK_PG ? c->cfg->shown_target
                                                 : c->cfg->host);
        x->ok = c->ok;
        x->latency_ms = c->latency_ms;
        if (!c->ok)
            mrd__strlcpy(x->error, c->output, sizeof(x->error));
    }
    if (a->nresults)
        memcpy(r->results, a->results, a->nresults * sizeof(*r->results));
    r->nresults = a->nresults;
    return 0;
}

/* ---- answer ---- */

static void on_self_fenced(mrd__member *m, int err, const char *message, int64_t position,
                           void *data);

/* A writable primary that the store no longer names primary (it came back
 * after a failover moved the service elsewhere) fences itself at once:
 * waiting for the isolation timeout would let it take writes that the new
 * timeline never sees. A member this process promoted in the current epoch
 * is the new primary the store has not named yet, and is left alone. */
static void fence_if_superseded(mrd__agent *a)
{
    for (size_t i = 0; i < a->nmembers; i++) {
        mrd__member *m = &a->members[i];
        /* writable, or only soft-fenced by the isolation rule (made hard
         * here); a promote in execution: the store names the new primary
         * later */
        int writable = m->role == MRD_MEMBER_PRIMARY && !m->fenced;
        int soft = m->soft_fenced && !m->demoted && m->cfg->fence_mode != MRD__FENCE_READ_ONLY;
        if ((!writable && !soft) || m->self_fencing || m->promote_started_ms)
            continue;
        const mrd__service_view *sv = NULL;
        for (size_t k = 0; k < a->nservices; k++)
            if (strcmp(a->services[k].service, m->cfg->service) == 0)
                sv = &a->services[k];
        if (!sv || sv->primary_member[0] == '\0' || strcmp(sv->primary_member, m->cfg->name) == 0 ||
            m->promoted_epoch >= sv->epoch)
            continue;
        /* An answer below the epoch this agent has seen comes from a store
         * that lost transactions (its standby was promoted without them):
         * it names a primary of the past, not a successor. */
        if ((int64_t)sv->epoch < mrd__epoch_store_epoch(a->epochs, m->cfg->service))
            continue;
        mrd_log(MRD_LOG_ERROR, "superseded: fencing the primary", MRD_S("member", m->cfg->name),
                MRD_S("service", m->cfg->service), MRD_S("primary", sv->primary_member),
                MRD_I("epoch", sv->epoch));
        m->self_fencing = 1;
        mrd__member_fence(m, on_self_fenced, NULL);
    }
}

static void apply_answer(mrd__agent *a, const mrd_hb_answer *ans, uint64_t sent_ms)
{
    if (ans->recorded) {
        if (!a->have_contact || sent_ms > a->last_contact_ms)
            a->last_contact_ms = sent_ms;
        a->have_contact = 1;
    }
    /* the controller's view of the services */
    mrd__service_view *sv = calloc(ans->nservices + 1, sizeof(*sv));
    if (sv) {
        for (size_t i = 0; i < ans->nservices; i++) {
            const mrd_hb_service *s = &ans->services[i];
            snprintf(sv[i].service, sizeof(sv[i].service), "%s", s->service);
            sv[i].epoch = s->epoch;
            snprintf(sv[i].primary_region, sizeof(sv[i].primary_region), "%s", s->primary_region);
            sv[i].primary_position = s->primary_position;
            snprintf(sv[i].primary_member, sizeof(sv[i].primary_member), "%s", s->primary_member);
            sv[i].have_peers = s->have_peers;
            if (s->npeers && (sv[i].peers = calloc(s->npeers, sizeof(*s->peers)))) {
                memcpy(sv[i].peers, s->peers, s->npeers * sizeof(*s->peers));
                sv[i].npeers = s->npeers;
            } else {
                sv[i].have_peers = s->have_peers && s->npeers == 0;
            }
            int rc = mrd__epoch_store_observe(a->epochs, s->service, s->epoch);
            if (rc == 1)
                mrd_log(MRD_LOG_INFO, "new epoch", MRD_S("service", s->service),
                        MRD_I("epoch", s->epoch));
            else if (rc < 0)
                mrd_log(MRD_LOG_ERROR, "cannot persist epoch", MRD_S("service", s->service),
                        MRD_I("epoch", s->epoch), MRD_S("error", mrd_strerror(rc)));
        }
        for (size_t i = 0; a->services && i < a->nservices; i++)
            free(a->services[i].peers);
        free(a->services);
        a->services = sv;
        a->nservices = ans->nservices;
        mrd__peer_set_refresh(a);
    }
    fence_if_superseded(a);
    /* acks first: a command resent below may then report again */
    mrd__results_ack(a, ans->ack, ans->nack);
    for (size_t i = 0; i < ans->ncommands; i++)
        mrd__commands_handle(a, &ans->commands[i]);
    /* the controller may change the interval; keep two beats within the
     * isolation timeout */
    uint64_t want = (uint64_t)ans->heartbeat_ms;
    if (want < 50)
        want = 50;
    if (want > a->cfg.isolation_timeout_ms / 2)
        want = a->cfg.isolation_timeout_ms / 2;
    if (want != a->heartbeat_ms && !a->stopping) {
        mrd_log(MRD_LOG_INFO, "heartbeat interval changed", MRD_U("from_ms", a->heartbeat_ms),
                MRD_U("to_ms", want));
        a->heartbeat_ms = want;
        uv_timer_set_repeat(&a->hb_timer, want);
    }
}

static void on_beat(const mrd_http_client_result *res, void *data)
{
    mrd__agent *a = data;
    char err[256];
    a->hb_in_flight = 0;
    const char *ctl = a->cfg.controllers[a->controller];
    int ok = 0;
    if (!res->error && res->status == 200) {
        mrd_hb_answer ans;
        int rc = mrd_hb_answer_parse(res->body, res->body_len, &ans, err, sizeof(err));
        if (rc == 0) {
            apply_answer(a, &ans, a->hb_sent_ms);
            mrd_hb_answer_free(&ans);
            ok = 1;
        } else {
            mrd_log(MRD_LOG_WARN, "bad heartbeat answer", MRD_S("controller", ctl),
                    MRD_S("error", err));
        }
    } else if (!a->stopping) {
        mrd_log(MRD_LOG_WARN, "heartbeat failed", MRD_S("controller", ctl),
                MRD_I("status", res->status), MRD_S("error", res->error ? res->error : ""),
                MRD_S("body", res->error ? "" : res->body));
    }
    if (a->stopping)
        return;
    if (ok) {
        a->first_round_done = 1;
        mrd__heartbeat_asap_check(a);
        return;
    }
    /* try the next controller at once, each at most once per beat */
    a->controller = (a->controller + 1) % a->cfg.ncontrollers;
    if (++a->hb_attempts < a->cfg.ncontrollers)
        send_beat(a);
    else
        a->first_round_done = 1;
}

static void send_beat(mrd__agent *a)
{
    mrd_hb_request r;
    if (build_request(a, &r) != 0) {
        mrd_hb_request_free(&r);
        mrd_log(MRD_LOG_ERROR, "cannot build heartbeat", MRD_S("error", "out of memory"));
        return;
    }
    json_t *j = mrd_hb_request_to_json(&r);
    mrd_hb_request_free(&r);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body) {
        mrd_log(MRD_LOG_ERROR, "cannot encode heartbeat", MRD_S("error", "out of memory"));
        return;
    }
    char url[1100], auth[1100];
    snprintf(url, sizeof(url), "%s/v1/agent/heartbeat", a->cfg.controllers[a->controller]);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", a->cfg.token);
    const char *headers[] = {auth, "Content-Type: application/json", NULL};
    mrd_http_client_req req;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.url = url;
    req.body = body;
    req.body_len = strlen(body);
    req.headers = headers;
    req.timeout_ms = (long)a->cfg.request_timeout_ms;
    req.max_response_bytes = 4 * 1024 * 1024;
    a->hb_sent_ms = mrd__now_ms(a);
    a->beat_urgent = 0;
    int rc = mrd_http_client_request(a->http, &req, on_beat, a);
    free(body);
    if (rc == 0)
        a->hb_in_flight = 1;
    else
        mrd_log(MRD_LOG_ERROR, "cannot send heartbeat", MRD_S("error", mrd_strerror(rc)));
}

/* Sends the heartbeat asked for by mrd__heartbeat_asap() once no status
 * query runs and no other beat is in flight. */
void mrd__heartbeat_asap_check(mrd__agent *a)
{
    if (!a->beat_asap || a->stopping || a->hb_in_flight)
        return;
    for (size_t i = 0; i < a->nmembers; i++)
        if (a->members[i].status_in_flight)
            return;
    a->beat_asap = 0;
    a->beat_urgent = 1;
    a->hb_attempts = 0;
    send_beat(a);
}

void mrd__heartbeat_asap(mrd__agent *a)
{
    if (a->stopping)
        return;
    a->beat_asap = 1;
    mrd__members_poll(a);
    mrd__heartbeat_asap_check(a);
}

static void on_hb_timer(uv_timer_t *t)
{
    mrd__agent *a = t->data;
    if (a->stopping)
        return;
    mrd__members_poll(a);
    mrd__peer_renew(a);
    if (a->hb_in_flight)
        return; /* the previous beat is still waiting for its timeout */
    a->hb_attempts = 0;
    send_beat(a);
}

/* ---- self-fencing ---- */

static void on_self_fenced(mrd__member *m, int err, const char *message, int64_t position,
                           void *data)
{
    (void)data;
    (void)position;
    m->self_fencing = 0;
    if (err) {
        mrd_log(MRD_LOG_ERROR, "self-fence failed, retrying", MRD_S("member", m->cfg->name),
                MRD_S("error", message));
        return;
    }
    m->self_fenced = 1;
    m->fenced = 1;
    mrd_log(MRD_LOG_ERROR, "primary fenced itself: isolated from the controllers and its peers",
            MRD_S("member", m->cfg->name), MRD_S("service", m->cfg->service));
    /* Report the fence now, not at the next beat: a leader that hears from
     * the fenced primary again unfences it at once (a stalled agent whose
     * leader did not fail over, or a partition that healed). */
    mrd__heartbeat_asap(m->agent);
}

/*
 * After a stall (the agent stopped, swapped out or paused while its
 * PostgreSQL kept serving) this tick runs before any answer to a beat or a
 * lease request sent after the stall, and fences a primary whose contact
 * and leases are stale. That order is deliberate. The leader never promotes
 * another member before this one's last recorded contact +
 * isolation_timeout + isolation_margin unless it confirmed a fence, and a
 * peer never promotes before a lease it granted ends; once a stall outlasted
 * both, the leader may have failed over during it (say the region was cut
 * off as well), and nothing this agent holds without a round trip tells
 * that stall from one in which nothing happened. A frozen agent fences
 * nothing while frozen, but once running it must not keep the member
 * writable past the leader's deadline, not even for the round trip that
 * would tell (nor for a request timeout when the region is still cut off):
 * that would lengthen the time two members accept writes. The price is a
 * short outage when nothing happened: the fence is reported at once
 * (on_self_fenced) and the leader, hearing from a self-fenced primary that
 * it still names primary, unfences it at once.
 */
static void on_tick(uv_timer_t *t)
{
    mrd__agent *a = t->data;
    uint64_t now = mrd__now_ms(a);
    uint64_t stalled = mrd__lease_stall_ms(now, a->tick_last_ms, uv_timer_get_repeat(t));
    a->tick_last_ms = now;
    if (stalled >= a->heartbeat_ms && !a->stopping)
        mrd_log(MRD_LOG_WARN, "agent loop stalled", MRD_U("stalled_ms", stalled),
                MRD_I("since_contact_ms",
                      a->have_contact ? (long long)(now - a->last_contact_ms) : -1));
    if (a->stopping || !a->first_round_done ||
        now < a->started_ms + 2 * a->heartbeat_ms + a->cfg.request_timeout_ms)
        return;
    uint64_t untils[MRD__MAX_PEERS];
    for (size_t i = 0; i < a->nmembers; i++) {
        mrd__member *m = &a->members[i];
        if (m->role != MRD_MEMBER_PRIMARY || m->fenced || m->self_fencing)
            continue;
        size_t n = mrd__peer_untils(a, m, untils);
        const char *why = "";
        /* A promote in execution counts from its start as a recorded contact
         * (commands.c says why that is safe): the status poll may see the
         * member writable before the promote's result arrives. */
        int have = a->have_contact;
        uint64_t last = a->last_contact_ms;
        if (m->promote_started_ms && (!have || m->promote_started_ms > last)) {
            have = 1;
            last = m->promote_started_ms;
        }
        mrd__writable w = mrd__lease_primary_writable(now, have, last, a->cfg.isolation_timeout_ms,
                                                      untils, n, &why);
        if (w != MRD__MUST_FENCE)
            continue;
        mrd_log(MRD_LOG_ERROR, "isolated: fencing the primary", MRD_S("member", m->cfg->name),
                MRD_S("service", m->cfg->service), MRD_S("reason", why),
                MRD_I("since_contact_ms", have ? (long long)(now - last) : -1),
                MRD_U("isolation_timeout_ms", a->cfg.isolation_timeout_ms),
                MRD_U("stalled_ms", stalled));
        /* Soft (read_only) whatever the configured mode: the leader may
         * still count on this primary (a stall, a store outage), and its
         * unfence must be quick; a primary the answer shows superseded is
         * fenced hard by fence_if_superseded, and a failover's own fence
         * command is the configured (hard) mode too. */
        m->self_fencing = 1;
        mrd__member_fence_soft(m, on_self_fenced, NULL);
    }
}

/* ---- start / stop ---- */

int mrd__heartbeat_start(mrd__agent *a)
{
    a->heartbeat_ms = a->cfg.heartbeat_ms;
    a->started_ms = mrd__now_ms(a);
    uv_timer_init(a->loop, &a->hb_timer);
    uv_timer_init(a->loop, &a->tick_timer);
    a->hb_timer.data = a->tick_timer.data = a;
    uint64_t tick = a->cfg.heartbeat_ms / 4;
    if (tick > 100)
        tick = 100;
    if (tick < 10)
        tick = 10;
    /* the first beat at once: a restarted agent reports quickly */
    uv_timer_start(&a->hb_timer, on_hb_timer, 0, a->heartbeat_ms);
    uv_timer_start(&a->tick_timer, on_tick, tick, tick);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    mrd__agent_handle_closed(h->data);
}

void mrd__heartbeat_stop(mrd__agent *a)
{
    a->open_handles += 2;
    uv_close((uv_handle_t *)&a->hb_timer, timer_closed);
    uv_close((uv_handle_t *)&a->tick_timer, timer_closed);
}
