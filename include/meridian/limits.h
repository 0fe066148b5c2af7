/*
 * File descriptor budget: how many connections a server may hold given the
 * process's RLIMIT_NOFILE. The controller and the agent call
 * mrd_fd_budget_init once at start, before opening anything that lasts.
 */
#ifndef MERIDIAN_LIMITS_H
#define MERIDIAN_LIMITS_H

#include <stdint.h>

typedef struct {
    uint64_t soft_before;     /* soft RLIMIT_NOFILE found at start */
    uint64_t soft, hard;      /* after raising the soft limit */
    unsigned reserve;         /* fds kept for the store, libcurl, files, logs */
    unsigned max_connections; /* what the HTTP server may hold */
} mrd_fd_budget;

/* Pure: connections for a soft limit of `soft` fds, keeping a reserve of
 * max(min_reserve, soft / 8); at least 16, at most cap (0: no cap). Sets
 * *reserve to the reserve used. */
unsigned mrd_fd_budget_connections(uint64_t soft, unsigned min_reserve, unsigned cap,
                                   unsigned *reserve);

/* Raises the soft RLIMIT_NOFILE to the hard limit (or to the kernel's
 * fs.nr_open when the hard limit is unlimited) and fills *out with
 * mrd_fd_budget_connections of the result. Returns 0, or a negative MRD_E*
 * when the limit cannot be read (*out then assumes 1024 fds); a refused
 * raise is not an error (the old soft limit is used). */
int mrd_fd_budget_init(mrd_fd_budget *out, unsigned min_reserve, unsigned cap);

#endif
