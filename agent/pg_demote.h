/*
 * The hard fence of a PostgreSQL member (fence mode "demote") and its undo:
 * stop the server (fast shutdown; SIGKILL of the postmaster and every child
 * when it does not stop in time), confirm that every one of those processes
 * is gone, then start the server again as a standby (standby.signal) or, to
 * unfence, as a primary. A fence is confirmed only when no process of that
 * server is left, so no session can commit any more.
 *
 * The parsing of postmaster.pid and /proc/<pid>/stat is pure (unit-tested);
 * mrd__pg_demote_start does the I/O on the agent's loop.
 */
#ifndef MERIDIAN_AGENT_PG_DEMOTE_H
#define MERIDIAN_AGENT_PG_DEMOTE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- pure ---- */

/* The postmaster's PID: line 1 of postmaster.pid (text, NUL-terminated).
 * Returns the PID (> 1), or 0 when the line is empty or not a PID. */
int mrd__pg_pid_parse(const char *text);

/* The lock file of the server's first unix socket, from postmaster.pid
 * (line 4: port, line 5: the first socket directory; empty when it listens
 * on TCP only): "<dir>/.s.PGSQL.<port>.lock" into buf. Returns 0, or
 * MRD_ENOTFOUND when there is no socket, MRD_EPARSE when malformed. */
int mrd__pg_pid_socket_lock(const char *text, char *buf, size_t len);

typedef struct {
    int pid;
    char state; /* R S D T t Z X ... */
    int ppid;
    uint64_t starttime; /* field 22: start time in clock ticks since boot */
} mrd__proc_stat;

/* Parses the text of /proc/<pid>/stat ("pid (comm) state ppid ... starttime
 * ..."); comm may hold spaces and parentheses (the last ')' ends it).
 * Returns 0, or MRD_EPARSE. */
int mrd__proc_stat_parse(const char *text, mrd__proc_stat *out);

/* Whether a process in this state can run no code any more: a zombie (Z) or
 * dead (X, x). A stopped process (T) is not gone: it runs on SIGCONT. */
int mrd__proc_state_gone(char state);

/* ---- I/O ---- */

typedef struct {
    const char *member;       /* for messages */
    const char *data_dir;     /* required */
    const char *bindir;       /* pg_ctl's directory; NULL: from /proc/<postmaster>/exe */
    uint64_t stop_timeout_ms; /* fast shutdown, then SIGKILL */
    uint64_t start_timeout_ms;
    int to_primary; /* 0: demote (standby.signal), 1: unfence (signal removed) */
} mrd__pg_demote_opts;

/* err: 0 when every process of the server is gone (the fence holds; for
 * to_primary: and the server started again), else a negative MRD_E* with
 * a message. killed: the server did not stop in time and was killed.
 * position: after a clean stop the shutdown checkpoint from pg_control,
 * else 0 (unknown). start_err: the restart failed (message in msg too). */
typedef void (*mrd__pg_demote_cb)(int err, const char *msg, int killed, int start_failed,
                                  int64_t position, void *data);

/* Starts the sequence; cb runs exactly once, later (never inside this call).
 * Returns 0, or MRD_ENOMEM / MRD_EINVAL (cb does not run). */
int mrd__pg_demote_start(uv_loop_t *loop, const mrd__pg_demote_opts *opts, mrd__pg_demote_cb cb,
                         void *data);

#endif
