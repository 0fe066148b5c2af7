/* Unit tests of the fd budget (common/limits.c): the connection cap derived
 * from RLIMIT_NOFILE, and that start-up raises the soft limit to the hard. */
#include <criterion/criterion.h>
#include <sys/resource.h>

#include "meridian/limits.h"

Test(limits, connections_from_nofile)
{
    unsigned r = 0;
    cr_assert_eq(mrd_fd_budget_connections(4096, 256, 0, &r), 4096 - 512);
    cr_assert_eq(r, 512);
    cr_assert_eq(mrd_fd_budget_connections(1024, 256, 0, &r), 768);
    cr_assert_eq(r, 256);
    cr_assert_eq(mrd_fd_budget_connections(65536, 256, 20000, &r), 20000);
    cr_assert_eq(mrd_fd_budget_connections(100, 256, 0, &r), 16, "never below 16");
    cr_assert_eq(mrd_fd_budget_connections(1024, 128, 1024, &r), 896);
    cr_assert_eq(mrd_fd_budget_connections(1ULL << 40, 256, 0, &r), 0x7fffffffu);
}

Test(limits, init_raises_soft_to_hard)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rlim_t hard = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 8192 ? 8192 : rl.rlim_max;
    struct rlimit low = {hard / 2, hard};
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    mrd_fd_budget b;
    cr_assert_eq(mrd_fd_budget_init(&b, 256, 0), 0);
    cr_assert_eq(b.soft_before, hard / 2);
    cr_assert_eq(b.soft, hard);
    cr_assert_eq(b.hard, hard);
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    cr_assert_eq(rl.rlim_cur, hard);
    cr_assert_eq(b.max_connections, mrd_fd_budget_connections(hard, 256, 0, NULL));
}
