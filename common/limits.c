/*
 * File descriptor budget (include/meridian/limits.h). The controller's and
 * the agent's main() call mrd_fd_budget_init once before they open their
 * listener, store connections or libcurl handles; the HTTP server's
 * connection cap comes from it, so that a flood of connections meets the
 * server's own limit (counted, logged, closed at once) well before accept()
 * fails with EMFILE and starves the store and libcurl of fds.
 *
 * Raising the soft limit to the hard one is what systemd's LimitNOFILE and
 * most daemons expect; a refused setrlimit leaves the old soft limit in
 * force and is not an error. mrd_fd_budget_connections is pure (unit tested).
 */
#include "meridian/limits.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "meridian/error.h"

#define MIN_CONNECTIONS 16
#define NR_OPEN_DEFAULT (1024 * 1024)

unsigned mrd_fd_budget_connections(uint64_t soft, unsigned min_reserve, unsigned cap,
                                   unsigned *reserve)
{
    uint64_t r = soft / 8;
    if (r < min_reserve)
        r = min_reserve;
    uint64_t n = soft > r ? soft - r : 0;
    if (n < MIN_CONNECTIONS)
        n = MIN_CONNECTIONS;
    if (cap && n > cap)
        n = cap;
    if (n > 0x7fffffffu)
        n = 0x7fffffffu;
    if (reserve)
        *reserve = r > 0x7fffffffu ? 0x7fffffffu : (unsigned)r;
    return (unsigned)n;
}

static uint64_t nr_open(void)
{
    FILE *f = fopen("/proc/sys/fs/nr_open", "re");
    unsigned long long v = 0;
    if (f) {
        if (fscanf(f, "%llu", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v ? (uint64_t)v : NR_OPEN_DEFAULT;
}

int mrd_fd_budget_init(mrd_fd_budget *out, unsigned min_reserve, unsigned cap)
{
    memset(out, 0, sizeof(*out));
    struct rlimit rl;
    int rc = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        rl.rlim_cur = rl.rlim_max = 1024;
        rc = MRD_EIO;
    }
    out->soft_before = rl.rlim_cur;
    if (rc == 0 && rl.rlim_cur != rl.rlim_max) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max == RLIM_INFINITY ? nr_open() : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl.rlim_cur = want.rlim_cur;
    }
    out->soft = rl.rlim_cur == RLIM_INFINITY ? nr_open() : rl.rlim_cur;
    out->hard = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max;
    out->max_connections = mrd_fd_budget_connections(out->soft, min_reserve, cap, &out->reserve);
    return rc;
}
