/* Unit tests of the epoch guard (controller/epoch_guard.c): a store whose
 * epoch is below one an agent reported is detected, and the catch-up names
 * the one member promoted in that epoch, never a guess. */
#include <criterion/criterion.h>

#include "epoch_guard.h"
#include "meridian/error.h"

Test(epoch_guard, store_at_or_above_reported_is_fine)
{
    mrd__eg_member m[3] = {{3, 1, 0, 0}, {3, 0, 0, 0}, {2, 0, 0, 0}};
    mrd__eg_result r;
    cr_assert_eq(mrd__epoch_guard(3, m, 3, 0, 0, 100, &r), 0);
    cr_assert_eq(r.reported, 3);
    cr_assert_eq(mrd__epoch_guard(4, m, 3, 0, 0, 100, &r), 0);
    cr_assert_eq(mrd__epoch_guard(1, NULL, 0, 0, 0, 100, &r), 0);
    cr_assert_eq(r.reported, 0);
}

Test(epoch_guard, behind_names_the_primary_of_the_lost_epoch)
{
    /* a switchover to member 1 at epoch 3 that the store lost */
    mrd__eg_member m[3] = {{3, 0, 0, 0}, {3, 1, 0, 0}, {2, 0, 0, 0}};
    mrd__eg_result r;
    cr_assert_eq(mrd__epoch_guard(2, m, 3, 0, 0, 100, &r), 1);
    cr_assert_eq(r.reported, 3);
    cr_assert_eq(r.by, 0);
    cr_assert_eq(r.adopt, 1);
}

Test(epoch_guard, behind_without_one_primary_adopts_nobody)
{
    mrd__eg_result r;
    /* the lost op fenced the old primary but promoted nobody yet */
    mrd__eg_member fenced_only[2] = {{3, 1, 1, 0}, {2, 0, 0, 0}};
    cr_assert_eq(mrd__epoch_guard(2, fenced_only, 2, 0, 0, 100, &r), 1);
    cr_assert_eq(r.adopt, -1);
    /* a primary of an older epoch is not the lost epoch's primary */
    mrd__eg_member old_primary[2] = {{2, 1, 0, 0}, {4, 0, 0, 0}};
    cr_assert_eq(mrd__epoch_guard(2, old_primary, 2, 0, 0, 100, &r), 1);
    cr_assert_eq(r.reported, 4);
    cr_assert_eq(r.by, 1);
    cr_assert_eq(r.adopt, -1);
    /* two claimants: no guess */
    mrd__eg_member two[2] = {{5, 1, 0, 0}, {5, 1, 0, 0}};
    cr_assert_eq(mrd__epoch_guard(3, two, 2, 0, 0, 100, &r), 1);
    cr_assert_eq(r.adopt, -1);
}

/* Rows the store kept from before it failed over are stale: the catch-up
 * waits until every member reported since the detection, or wait_ms. */
Test(epoch_guard, catch_up_waits_for_fresh_reports)
{
    mrd__eg_result r;
    /* us's row is from before the failover: still replica at epoch 1 */
    mrd__eg_member m[3] = {{2, 0, 1, 1000}, {1, 0, 0, 400}, {2, 0, 0, 1000}};
    cr_assert_eq(mrd__epoch_guard(1, m, 3, 900, 3000, 1000, &r), 1);
    cr_assert_eq(r.ready, 0);
    cr_assert_eq(r.adopt, -1);
    /* us reports: primary at 2 */
    m[1] = (mrd__eg_member){2, 1, 0, 1100};
    cr_assert_eq(mrd__epoch_guard(1, m, 3, 900, 3000, 1100, &r), 1);
    cr_assert_eq(r.ready, 1);
    cr_assert_eq(r.adopt, 1);
    /* a member that stays silent holds the catch-up back only wait_ms */
    m[1] = (mrd__eg_member){1, 0, 0, 400};
    cr_assert_eq(mrd__epoch_guard(1, m, 3, 900, 3000, 3899, &r), 1);
    cr_assert_eq(r.ready, 0);
    cr_assert_eq(mrd__epoch_guard(1, m, 3, 900, 3000, 3900, &r), 1);
    cr_assert_eq(r.ready, 1);
}

Test(epoch_guard, bad_arguments)
{
    mrd__eg_result r;
    cr_assert_eq(mrd__epoch_guard(1, NULL, 2, 0, 0, 1, &r), MRD_EINVAL);
    mrd__eg_member m[1] = {{1, 1, 0, 0}};
    cr_assert_eq(mrd__epoch_guard(1, m, 1, 0, 0, 1, NULL), MRD_EINVAL);
}
