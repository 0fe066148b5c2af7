/*
 * The epoch guard: is the store's epoch of a service below one an agent
 * reported, and which member, if any, the store should name primary when the
 * leader moves the epoch past it. Pure (no I/O); controller/tick.c feeds it
 * the leader's snapshot. Internal to controller/.
 */
#ifndef MERIDIAN_EPOCH_GUARD_H
#define MERIDIAN_EPOCH_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* One member as the store's members table shows it (its agent's report). */
typedef struct {
    uint64_t epoch_seen;   /* highest epoch its agent reported for the service */
    int primary;           /* reported role primary */
    int fenced;            /* reported fenced */
    uint64_t last_seen_ms; /* store clock of its agent's last report */
} mrd__eg_member;

typedef struct {
    uint64_t reported; /* highest epoch_seen of any member */
    size_t by;         /* index of the first member that reported it */
    /* index of the member to name primary with the catch-up: the only
     * member that reports primary, unfenced, at `reported`; -1 for none
     * (no such member, or more than one) */
    long adopt;
    /* 1 when the catch-up may be written now: every member reported at or
     * after since_ms (rows the store kept from before it failed over are
     * stale: a member promoted in the lost epoch may still show replica
     * there), or wait_ms passed since since_ms (a member that stays silent
     * cannot hold the others back for ever) */
    int ready;
} mrd__eg_result;

/* Returns 1 when some member reported an epoch above store_epoch (the
 * leader must not decide; out says what to catch up to and whether now),
 * 0 otherwise (out->reported is still the highest reported epoch),
 * MRD_EINVAL on a NULL argument. since_ms: when the leader first saw the
 * store behind (store clock; 0: now), now_ms: the snapshot's time. */
int mrd__epoch_guard(uint64_t store_epoch, const mrd__eg_member *m, size_t n, uint64_t since_ms,
                     uint64_t wait_ms, uint64_t now_ms, mrd__eg_result *out);

#endif
