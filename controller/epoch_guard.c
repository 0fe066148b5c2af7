/*
 * The epoch guard (epoch_guard.h): pure logic of "the store came back with
 * an epoch below one an agent has seen".
 *
 * Epochs are created only in the store (an operation commits its epoch
 * before any command carries it), so in one consistent snapshot no member
 * can report more than the service's epoch. A member that does proves that
 * the store lost committed transactions: an asynchronous standby of the
 * store was promoted without them. controller/tick.c calls this every tick
 * for every service before deciding anything, and refuses to decide while
 * it returns 1. No allocation, no I/O; unit-tested in
 * tests/unit/test_epoch_guard.c.
 */
#include "epoch_guard.h"

#include "meridian/error.h"

int mrd__epoch_guard(uint64_t store_epoch, const mrd__eg_member *m, size_t n, uint64_t since_ms,
                     uint64_t wait_ms, uint64_t now_ms, mrd__eg_result *out)
{
    if (out == NULL || (m == NULL && n > 0))
        return MRD_EINVAL;
    out->reported = 0;
    out->by = 0;
    out->adopt = -1;
    out->ready = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].epoch_seen > out->reported) {
            out->reported = m[i].epoch_seen;
            out->by = i;
        }
    }
    if (out->reported <= store_epoch)
        return 0;
    /* The member promoted in the lost epoch is the one primary that saw it;
     * two claimants (or none) leave the store's primary as it is. */
    int claimants = 0;
    for (size_t i = 0; i < n; i++) {
        if (m[i].epoch_seen == out->reported && m[i].primary && !m[i].fenced) {
            claimants++;
            out->adopt = (long)i;
        }
    }
    if (claimants != 1)
        out->adopt = -1;
    if (since_ms == 0)
        since_ms = now_ms;
    out->ready = now_ms >= since_ms + wait_ms;
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++)
        fresh += m[i].last_seen_ms >= since_ms;
    if (fresh == n)
        out->ready = 1;
    return 1;
}
