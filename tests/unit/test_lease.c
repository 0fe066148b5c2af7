/* Unit tests of the peer-lease rules and the self-fencing rule, with
 * explicit monotonic times. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "lease.h"

static mrd_lease_request req(int64_t epoch, int64_t ttl)
{
    mrd_lease_request r = {.epoch = epoch, .ttl_ms = ttl};
    snprintf(r.service, sizeof(r.service), "orders");
    snprintf(r.node, sizeof(r.node), "db-eu-1");
    return r;
}

Test(lease, grant_remembers_latest_until)
{
    mrd__lease_grants g = {0};
    mrd_lease_answer a;
    mrd_lease_request r = req(7, 4000);
    cr_assert_eq(mrd__lease_grant(&g, 7, &r, 1000, 0, &a), 1);
    cr_assert_eq(a.granted, 1);
    cr_assert_eq(a.ttl_ms, 4000);
    cr_assert_eq(a.epoch, 7);
    cr_assert_eq(g.granted_until_ms, 5000);
    /* a shorter later lease never shortens the promise */
    r = req(7, 1000);
    cr_assert_eq(mrd__lease_grant(&g, 7, &r, 2000, 0, &a), 1);
    cr_assert_eq(g.granted_until_ms, 5000);
    r = req(7, 4000);
    cr_assert_eq(mrd__lease_grant(&g, 7, &r, 3000, 0, &a), 1);
    cr_assert_eq(g.granted_until_ms, 7000);
}

Test(lease, ttl_capped)
{
    mrd__lease_grants g = {0};
    mrd_lease_answer a;
    mrd_lease_request r = req(1, 60000);
    cr_assert_eq(mrd__lease_grant(&g, 1, &r, 100, 4000, &a), 1);
    cr_assert_eq(a.ttl_ms, 4000);
    cr_assert_eq(g.granted_until_ms, 4100);
}

Test(lease, refused_after_seeing_higher_epoch)
{
    mrd__lease_grants g = {0};
    mrd_lease_answer a;
    mrd_lease_request r = req(7, 4000);
    cr_assert_eq(mrd__lease_grant(&g, 8, &r, 1000, 0, &a), 0);
    cr_assert_eq(a.granted, 0);
    cr_assert_eq(a.ttl_ms, 0);
    cr_assert_eq(a.epoch, 8);
    cr_assert_str_eq(a.reason, "seen epoch 8 above the lease's 7");
    cr_assert_eq(g.granted_until_ms, 0, "a refusal grants nothing");
    /* a lease of a newer epoch than we know is fine */
    r = req(9, 4000);
    cr_assert_eq(mrd__lease_grant(&g, 8, &r, 1000, 0, &a), 1);
}

Test(lease, promote_waits_for_granted_lease_and_stops_grants)
{
    mrd__lease_grants g = {0};
    mrd_lease_answer a;
    mrd_lease_request r = req(7, 4000);
    cr_assert_eq(mrd__lease_grant(&g, 7, &r, 1000, 0, &a), 1); /* until 5000 */
    /* ordered to promote at epoch 8 at t=2000: wait 3000 ms */
    cr_assert_eq(mrd__lease_promote_wait(&g, 8, 2000), 3000);
    /* meanwhile the old primary asks again at epoch 7, or even 8: refused */
    r = req(7, 4000);
    cr_assert_eq(mrd__lease_grant(&g, 7, &r, 2500, 0, &a), 0);
    cr_assert_str_eq(a.reason, "ordered to promote at epoch 8, not below the lease's 7");
    cr_assert_eq(a.epoch, 8);
    r = req(8, 4000);
    cr_assert_eq(mrd__lease_grant(&g, 8, &r, 2500, 0, &a), 0);
    cr_assert_eq(g.granted_until_ms, 5000, "the wait does not grow");
    cr_assert_eq(mrd__lease_promote_wait(&g, 8, 4999), 1);
    cr_assert_eq(mrd__lease_promote_wait(&g, 8, 5000), 0);
    /* without any lease there is no wait */
    mrd__lease_grants fresh = {0};
    cr_assert_eq(mrd__lease_promote_wait(&fresh, 1, 10), 0);
}

Test(lease, requester_counts_from_send_time)
{
    uint64_t until = 0;
    mrd_lease_answer a = {.granted = 1, .epoch = 7, .ttl_ms = 4000};
    mrd__lease_record(&until, 1000, &a);
    cr_assert_eq(until, 5000);
    /* an older answer arriving late does not shorten it */
    mrd__lease_record(&until, 500, &a);
    cr_assert_eq(until, 5000);
    mrd_lease_answer no = {.granted = 0, .epoch = 8};
    mrd__lease_record(&until, 2000, &no);
    cr_assert_eq(until, 0, "a refusal ends the lease at once");
}

Test(lease, primary_rule)
{
    const char *why;
    uint64_t peers[2] = {10000, 10000};
    /* fresh recorded contact */
    cr_assert_eq(mrd__lease_primary_writable(5000, 1, 2000, 4000, NULL, 0, &why),
                 MRD__WRITABLE_CONTACT);
    /* contact exactly isolation_timeout old: expired */
    cr_assert_eq(mrd__lease_primary_writable(6000, 1, 2000, 4000, NULL, 0, &why), MRD__MUST_FENCE);
    cr_assert_str_eq(why, "no recorded contact and no peers to hold leases from");
    cr_assert_eq(mrd__lease_primary_writable(5999, 1, 2000, 4000, NULL, 0, &why),
                 MRD__WRITABLE_CONTACT);
    /* contact expired, every peer lease valid: failsafe */
    cr_assert_eq(mrd__lease_primary_writable(6000, 1, 2000, 4000, peers, 2, &why),
                 MRD__WRITABLE_LEASES);
    /* one peer lease missing */
    peers[1] = 6000;
    cr_assert_eq(mrd__lease_primary_writable(6000, 1, 2000, 4000, peers, 2, &why), MRD__MUST_FENCE);
    cr_assert_str_eq(why, "no recorded contact and a peer lease is missing");
    /* never any contact: only leases count */
    peers[1] = 7000;
    cr_assert_eq(mrd__lease_primary_writable(100, 0, 0, 4000, peers, 2, NULL),
                 MRD__WRITABLE_LEASES);
    cr_assert_eq(mrd__lease_primary_writable(100, 0, 0, 4000, NULL, 0, NULL), MRD__MUST_FENCE);
}

Test(lease, request_ttl_bounds)
{
    cr_assert_eq(mrd__lease_request_ttl(4000), 4000);
    cr_assert_eq(mrd__lease_request_ttl(0), 1);
    cr_assert_eq(mrd__lease_request_ttl(10000000), MRD_PROTO_MAX_LEASE_TTL_MS);
}

Test(lease, stall_is_lateness_past_the_interval)
{
    cr_assert_eq(mrd__lease_stall_ms(1000, 0, 100), 0, "first run");
    cr_assert_eq(mrd__lease_stall_ms(1100, 1000, 100), 0, "on time");
    cr_assert_eq(mrd__lease_stall_ms(1050, 1000, 100), 0, "early");
    cr_assert_eq(mrd__lease_stall_ms(1000, 1000, 100), 0);
    cr_assert_eq(mrd__lease_stall_ms(900, 1000, 100), 0, "a clock that went back");
    cr_assert_eq(mrd__lease_stall_ms(11150, 1000, 100), 10050, "stopped for ~10 s");
}

/* An agent stopped for 10 s (SIGSTOP) with a primary whose last recorded
 * contact was sent at t=1000 and whose leases ended at 5000 (isolation
 * 4000, margin 1000 on the leader's side): when it resumes at t=11100, the
 * leader's deadline (1000 + 4000 + 1000) is long past, so the rule fences
 * before any renewal: the leader may have promoted another member. A stall
 * that ends while the contact is still fresh changes nothing. */
Test(lease, resume_after_stall)
{
    const char *why;
    uint64_t peers[2] = {5000, 5000};
    cr_assert_eq(mrd__lease_primary_writable(11100, 1, 1000, 4000, peers, 2, &why),
                 MRD__MUST_FENCE);
    cr_assert_str_eq(why, "no recorded contact and a peer lease is missing");
    /* stopped from 1500 to 4500: contact sent at 1000 still counts */
    cr_assert_eq(mrd__lease_primary_writable(4500, 1, 1000, 4000, peers, 2, &why),
                 MRD__WRITABLE_CONTACT);
    /* a renewal sent after the stall counts from its sending time */
    cr_assert_eq(mrd__lease_primary_writable(11200, 1, 11100, 4000, peers, 2, &why),
                 MRD__WRITABLE_CONTACT);
}
