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
    uint64_t epoch_seen; /* highest epoch its agent reported for the service */
    int primary;         /* reported role primary */
    int fenced;          /* reported fenced */
} mrd__eg_member;

typedef struct {
    uint64_t reported; /* highest epoch_seen of any member */
    size_t by;         /* index of the first member that reported it */
    /* index of the member to name primary with the catch-up: the only
     * member that reports primary, unfenced, at `reported`; -1 for none
     * (no such member, or more than one) */
    long adopt;
} mrd__eg_result;

/* Returns 1 when some member reported an epoch above store_epoch (the
 * leader must not decide; out says what to catch up to), 0 otherwise
 * (out->reported is still the highest reported epoch), MRD_EINVAL on a NULL
 * argument. */
int mrd__epoch_guard(uint64_t store_epoch, const mrd__eg_member *m, size_t n, mrd__eg_result *out);

#endif
