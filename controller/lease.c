/*
 * Leader election through the lease row of the store (sql/001_init.sql).
 *
 * Every controller calls meridian.lease_acquire() on a schedule: the holder
 * renews every TTL/3; the others try again when the holder's lease can have
 * run out (at the latest TTL/3 later). The store's clock decides expiry, so
 * the controllers' clocks never have to agree.
 *
 * Safety does not depend on the store being reachable: a leader believes in
 * its lease only until (monotonic time at which it SENT the successful
 * request) + TTL - margin. The store computed expiry from a later instant
 * (its now() at the start of the transaction), so the local deadline always
 * comes first; the margin absorbs a difference in clock rate. Once the
 * deadline passes the controller steps down on its own, whatever the store
 * says later, and every deciding write re-checks meridian.is_leader(holder,
 * term) inside its own transaction.
 *
 * Terms never go back, even when the store does: a store whose asynchronous
 * standby was promoted without the last transactions can show a term below
 * one already held. Every request passes the highest term this controller
 * has held or read (max_term_seen), and a new tenure starts above it
 * (sql/007_store_failover.sql). A controller that restarted knows only what
 * the store says; the other controllers' floors still count.
 *
 * Called from the controller's cron; never blocks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/error.h"

typedef struct {
    mrd_ctl *ctl;
    uint64_t sent_at;
} acquire_req;

static uint64_t lease_margin(const mrd_ctl *ctl)
{
    return ctl->cfg.lease_ttl_ms / 10 + 100;
}

int mrd__lease_is_leader(const mrd_ctl *ctl)
{
    return ctl->lease.leader && mrd__now_ms() < ctl->lease.valid_until;
}

static void step_down(mrd_ctl *ctl, const char *why)
{
    if (!ctl->lease.leader)
        return;
    ctl->lease.leader = 0;
    mrd_log(MRD_LOG_WARN, "leadership lost", MRD_I("term", ctl->lease.term), MRD_S("reason", why));
}

static void copy_field(char *dst, size_t len, PGresult *res, int col)
{
    snprintf(dst, len, "%s", PQgetisnull(res, 0, col) ? "" : PQgetvalue(res, 0, col));
}

static void acquire_done(int err, PGresult *res, void *data)
{
    acquire_req *req = data;
    mrd_ctl *ctl = req->ctl;
    uint64_t sent_at = req->sent_at;
    free(req);
    mrd_lease_state *l = &ctl->lease;
    uint64_t now = mrd__now_ms();
    uint64_t ttl = ctl->cfg.lease_ttl_ms;
    l->in_flight = 0;

    if (err != 0 || PQntuples(res) != 1) {
        /* Keep believing only until the local deadline; retry soon. */
        l->next_attempt = now + ttl / 6;
        if (err == MRD_EIO)
            mrd_log(MRD_LOG_WARN, "lease query failed", MRD_S("error", PQresultErrorMessage(res)));
        return;
    }
    int held = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    int64_t term = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    uint64_t expires_in = strtoull(PQgetvalue(res, 0, 5), NULL, 10);
    l->known = 1;
    copy_field(l->holder, sizeof(l->holder), res, 2);
    copy_field(l->holder_region, sizeof(l->holder_region), res, 3);
    copy_field(l->holder_url, sizeof(l->holder_url), res, 4);
    l->holder_term = term;
    l->holder_expires_at = now + expires_in;
    if (term > l->max_term_seen)
        l->max_term_seen = term;
    else if (term < l->max_term_seen && !l->term_back_logged) {
        /* the store went back (a standby promoted without the last
         * transactions): the next tenure starts above what we saw */
        l->term_back_logged = 1;
        mrd_log(MRD_LOG_WARN, "store shows a lower leader term than seen before",
                MRD_I("term", term), MRD_I("seen", l->max_term_seen));
    }

    if (held && !ctl->stopping) {
        if (!l->leader || l->term != term) {
            if (l->leader)
                step_down(ctl, "term changed");
            l->acquired_count++;
            mrd_log(MRD_LOG_INFO, "leadership acquired", MRD_I("term", term),
                    MRD_S("region", ctl->cfg.region));
        }
        l->leader = 1;
        l->term = term;
        l->valid_until = sent_at + ttl - lease_margin(ctl);
        if (l->valid_until <= now) {
            /* The answer came too late to be of use. */
            step_down(ctl, "lease answer arrived after the local deadline");
        }
        l->next_attempt = sent_at + ttl / 3;
    } else {
        step_down(ctl, "another controller holds the lease");
        uint64_t retry = ttl / 3;
        if (expires_in + 10 < retry)
            retry = expires_in + 10;
        l->next_attempt = now + retry;
    }
}

void mrd__lease_cron(mrd_ctl *ctl, uint64_t now)
{
    mrd_lease_state *l = &ctl->lease;
    if (l->leader && now >= l->valid_until)
        step_down(ctl, "lease not renewed in time");
    if (l->in_flight || now < l->next_attempt || ctl->stopping || !ctl->migrated)
        return;
    if (!mrd_pg_connected(ctl->pg))
        return;
    acquire_req *req = malloc(sizeof(*req));
    if (req == NULL)
        return;
    req->ctl = ctl;
    req->sent_at = now;
    char ttl[32], myterm[32], minterm[32];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ctl->cfg.lease_ttl_ms);
    snprintf(myterm, sizeof(myterm), "%lld", (long long)(l->leader ? l->term : -1));
    snprintf(minterm, sizeof(minterm), "%lld", (long long)l->max_term_seen);
    const char *params[6] = {ctl->cfg.name, ctl->cfg.region, ctl->cfg.advertise_url,
                             ttl,           myterm,          minterm};
    int rc =
        mrd_pg_query(ctl->pg,
                     "SELECT held, term, holder, holder_region, holder_url, expires_in_ms "
                     "FROM meridian.lease_acquire($1, $2, $3, $4::int, $5::bigint, $6::bigint)",
                     6, params, acquire_done, req);
    if (rc != 0) {
        free(req);
        l->next_attempt = now + ctl->cfg.lease_ttl_ms / 6;
        return;
    }
    l->in_flight = 1;
}

typedef struct {
    mrd_ctl *ctl;
    void (*cb)(void *);
    void *arg;
} release_req;

static void release_done(int err, PGresult *res, void *data)
{
    release_req *r = data;
    (void)res;
    if (err == 0)
        mrd_log(MRD_LOG_INFO, "lease released", MRD_I("term", r->ctl->lease.term));
    r->cb(r->arg);
    free(r);
}

void mrd__lease_release(mrd_ctl *ctl, void (*cb)(void *), void *arg)
{
    int was = mrd__lease_is_leader(ctl);
    ctl->lease.leader = 0;
    if (!was || !mrd_pg_connected(ctl->pg)) {
        cb(arg);
        return;
    }
    release_req *r = malloc(sizeof(*r));
    if (r == NULL) {
        cb(arg);
        return;
    }
    r->ctl = ctl;
    r->cb = cb;
    r->arg = arg;
    char term[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    const char *params[2] = {ctl->cfg.name, term};
    if (mrd_pg_query(ctl->pg, "SELECT meridian.lease_release($1, $2::bigint)", 2, params,
                     release_done, r) != 0) {
        free(r);
        cb(arg);
    }
}
