/*
 * Peer-lease rules and the primary's self-fencing rule (lease.h). Pure: every
 * function takes the monotonic time as an argument, so the unit tests state
 * the exact times at which a lease starts, ends and stops counting.
 *
 * Called by the agent's peer API handler (grant), its command executor
 * (promote waits) and its heartbeat tick (record answers, decide whether the
 * primary may stay writable). No allocation, no failure modes.
 *
 * Invariants: a granter never grants a lease of an epoch below one it has
 * seen or has been ordered to promote at; granted_until_ms never decreases;
 * a requester's view of a lease never outlasts the granter's promise.
 */
#include "lease.h"

#include <stdio.h>
#include <string.h>

int mrd__lease_grant(mrd__lease_grants *g, int64_t highest_seen, const mrd_lease_request *req,
                     uint64_t now_ms, uint64_t max_ttl_ms, mrd_lease_answer *ans)
{
    memset(ans, 0, sizeof(*ans));
    int64_t known = highest_seen > g->promote_epoch ? highest_seen : g->promote_epoch;
    ans->epoch = known;
    if (req->epoch < highest_seen) {
        snprintf(ans->reason, sizeof(ans->reason), "seen epoch %lld above the lease's %lld",
                 (long long)highest_seen, (long long)req->epoch);
        return 0;
    }
    if (g->promote_epoch > 0 && req->epoch <= g->promote_epoch) {
        snprintf(ans->reason, sizeof(ans->reason),
                 "ordered to promote at epoch %lld, not below the lease's %lld",
                 (long long)g->promote_epoch, (long long)req->epoch);
        return 0;
    }
    uint64_t ttl = req->ttl_ms > 0 ? (uint64_t)req->ttl_ms : 0;
    if (max_ttl_ms && ttl > max_ttl_ms)
        ttl = max_ttl_ms;
    if (ttl == 0) {
        snprintf(ans->reason, sizeof(ans->reason), "ttl_ms must be positive");
        return 0;
    }
    uint64_t until = now_ms + ttl;
    if (until > g->granted_until_ms)
        g->granted_until_ms = until;
    g->granted_epoch = req->epoch;
    ans->granted = 1;
    ans->ttl_ms = (int64_t)ttl;
    return 1;
}

uint64_t mrd__lease_promote_wait(mrd__lease_grants *g, int64_t epoch, uint64_t now_ms)
{
    if (epoch > g->promote_epoch)
        g->promote_epoch = epoch;
    return g->granted_until_ms > now_ms ? g->granted_until_ms - now_ms : 0;
}

void mrd__lease_record(uint64_t *valid_until_ms, uint64_t sent_ms, const mrd_lease_answer *ans)
{
    if (!ans->granted || ans->ttl_ms <= 0) {
        *valid_until_ms = 0;
        return;
    }
    uint64_t until = sent_ms + (uint64_t)ans->ttl_ms;
    if (until > *valid_until_ms)
        *valid_until_ms = until;
}

mrd__writable mrd__lease_primary_writable(uint64_t now_ms, int have_contact,
                                          uint64_t last_contact_ms, uint64_t isolation_timeout_ms,
                                          const uint64_t *peer_until, size_t npeers,
                                          const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (have_contact && now_ms >= last_contact_ms &&
        now_ms - last_contact_ms < isolation_timeout_ms) {
        *why = "recorded contact";
        return MRD__WRITABLE_CONTACT;
    }
    if (npeers == 0) {
        *why = "no recorded contact and no peers to hold leases from";
        return MRD__MUST_FENCE;
    }
    for (size_t i = 0; i < npeers; i++) {
        if (peer_until[i] <= now_ms) {
            *why = "no recorded contact and a peer lease is missing";
            return MRD__MUST_FENCE;
        }
    }
    *why = "every peer lease valid";
    return MRD__WRITABLE_LEASES;
}

uint64_t mrd__lease_stall_ms(uint64_t now_ms, uint64_t last_ms, uint64_t interval_ms)
{
    if (last_ms == 0 || now_ms <= last_ms || now_ms - last_ms <= interval_ms)
        return 0;
    return now_ms - last_ms - interval_ms;
}

uint64_t mrd__lease_request_ttl(uint64_t isolation_timeout_ms)
{
    if (isolation_timeout_ms < 1)
        return 1;
    if (isolation_timeout_ms > MRD_PROTO_MAX_LEASE_TTL_MS)
        return MRD_PROTO_MAX_LEASE_TTL_MS;
    return isolation_timeout_ms;
}
