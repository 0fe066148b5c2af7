/*
 * Fence mode "demote" (pg_demote.h): stop a PostgreSQL server for sure, then
 * start it again as a standby (or, to unfence, as a primary). Called by
 * member.c for the fence and unfence of a PostgreSQL member in that mode.
 *
 * Sequence, on one timer of the agent's loop (every 20 ms): the postmaster
 * (line 1 of data_dir/postmaster.pid) gets SIGINT (fast shutdown); its
 * children are listed from /proc while it lives. When it is not gone within
 * stop_timeout_ms (stuck), or at once when /proc shows it stopped (SIGSTOP:
 * it cannot take the SIGINT before somebody continues it, so waiting only
 * delays the failover), it gets SIGSTOP (so it forks no more),
 * its children are listed once more, and every one of them and then the
 * postmaster get SIGKILL, which works on stopped processes too. Processes are
 * tracked by PID and start time (a reused PID is not ours); one counts as
 * gone when /proc has no such process or shows it a zombie (PID 1 here may
 * reap late): a stopped process that has not yet received a signal is NOT
 * gone. Only when every tracked process is gone does the fence hold.
 *
 * Then standby.signal is written (or removed) and pg_ctl start runs as the
 * owner of the data directory (setuid/setgid when the agent is root), with
 * the server's previous log file when /proc showed one. A start that fails
 * leaves nothing running: the fence still holds (reported, logged at error).
 * Failure: processes that survive SIGKILL for 5 s (uninterruptible I/O) fail
 * the fence; nothing here retries.
 */
#include "pg_demote.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "meridian/error.h"
#include "meridian/log.h"
#include "pg_control.h"

#define POLL_MS        20
#define FREEZE_WAIT_MS 200  /* SIGSTOP taking effect before the last listing */
#define STOPPED_POLLS  5    /* 100 ms of a stopped postmaster: it will not stop itself */
#define KILL_WAIT_MS   5000 /* SIGKILL'd processes disappearing */

/* ---- pure ---- */

int mrd__pg_pid_parse(const char *text)
{
    if (!text)
        return 0;
    while (*text == ' ' || *text == '\t')
        text++;
    if (*text < '0' || *text > '9')
        return 0;
    errno = 0;
    char *end;
    long v = strtol(text, &end, 10);
    if (errno || v <= 1 || v > INT_MAX)
        return 0;
    if (*end != '\0' && *end != '\n' && *end != '\r')
        return 0;
    return (int)v;
}

int mrd__pg_pid_socket_lock(const char *text, char *buf, size_t len)
{
    const char *line[6] = {0};
    size_t n = 0;
    for (const char *p = text; p && n < 6; n++) {
        line[n] = p;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (n < 5)
        return MRD_EPARSE;
    char port[16];
    size_t pl = strcspn(line[3], "\n");
    size_t dl = strcspn(line[4], "\n");
    if (pl == 0 || pl >= sizeof(port) || strspn(line[3], "0123456789") != pl)
        return MRD_EPARSE;
    memcpy(port, line[3], pl);
    port[pl] = '\0';
    if (dl == 0)
        return MRD_ENOTFOUND;
    if (line[4][0] != '/')
        return MRD_EPARSE;
    int w = snprintf(buf, len, "%.*s/.s.PGSQL.%s.lock", (int)dl, line[4], port);
    return w > 0 && (size_t)w < len ? 0 : MRD_EPARSE;
}

/* One decimal field (optional '-') at *p; advances past it. */
static int field(const char **p, long long *v)
{
    const char *s = *p;
    if (*s == '-')
        s++;
    if (*s < '0' || *s > '9')
        return MRD_EPARSE;
    errno = 0;
    char *end;
    *v = strtoll(*p, &end, 10);
    if (errno)
        return MRD_EPARSE;
    *p = end;
    return 0;
}

int mrd__proc_stat_parse(const char *text, mrd__proc_stat *out)
{
    memset(out, 0, sizeof(*out));
    if (!text)
        return MRD_EPARSE;
    const char *open = strchr(text, '(');
    const char *close = strrchr(text, ')');
    long long v;
    const char *p = text;
    if (!open || !close || close < open || field(&p, &v) != 0 || v <= 0 || v > INT_MAX ||
        *p != ' ' || p + 1 != open)
        return MRD_EPARSE;
    out->pid = (int)v;
    p = close + 1;
    if (p[0] != ' ' || p[1] == '\0' || p[1] == ' ' || (p[2] != ' '))
        return MRD_EPARSE;
    out->state = p[1];
    p += 2;
    /* fields 4 (ppid) .. 22 (starttime) */
    for (int f = 4; f <= 22; f++) {
        if (*p != ' ')
            return MRD_EPARSE;
        p++;
        if (field(&p, &v) != 0)
            return MRD_EPARSE;
        if (f == 4) {
            if (v < 0 || v > INT_MAX)
                return MRD_EPARSE;
            out->ppid = (int)v;
        } else if (f == 22) {
            if (v < 0)
                return MRD_EPARSE;
            out->starttime = (uint64_t)v;
        }
    }
    return 0;
}

int mrd__proc_state_gone(char state)
{
    return state == 'Z' || state == 'X' || state == 'x';
}

/* ---- /proc ---- */

/* 1: read, 0: no such process, -1: unreadable or unparsable. */
static int proc_read(int pid, mrd__proc_stat *st)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH ? 0 : -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return e == ESRCH ? 0 : -1;
    buf[n] = '\0';
    return mrd__proc_stat_parse(buf, st) == 0 ? 1 : -1;
}

typedef struct {
    int pid;
    uint64_t starttime;
} proc_id;

/* Whether the process still exists and can run (not a zombie, same start). */
static int proc_alive(const proc_id *p)
{
    mrd__proc_stat st;
    int rc = proc_read(p->pid, &st);
    if (rc == 0)
        return 0;
    if (rc < 0)
        return 1; /* cannot tell: count it as alive */
    return st.starttime == p->starttime && !mrd__proc_state_gone(st.state);
}

/* ---- the sequence ---- */

typedef enum { ST_STOPPING, ST_FREEZING, ST_KILLING, ST_STARTING, ST_FINISHED } demote_state;

typedef struct {
    uv_loop_t *loop;
    uv_timer_t timer;
    mrd__pg_demote_cb cb;
    void *data;
    char *member, *data_dir;
    char bindir[PATH_MAX];
    char logfile[PATH_MAX];
    uint64_t stop_timeout_ms, start_timeout_ms;
    int to_primary;
    int64_t uid, gid; /* -1: as is */
    demote_state state;
    uint64_t deadline;
    char pidfile[2048]; /* postmaster.pid as read at the start */
    proc_id *procs;     /* [0]: the postmaster */
    size_t nprocs, cap;
    int killed;
    int stopped_polls; /* polls in a row that found the postmaster stopped */
    int64_t position;
    char msg[MRD_PROTO_ERROR_MAX];
} demote;

static int procs_add(demote *d, int pid, uint64_t starttime)
{
    for (size_t i = 0; i < d->nprocs; i++)
        if (d->procs[i].pid == pid && d->procs[i].starttime == starttime)
            return 0;
    if (d->nprocs == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        proc_id *n = realloc(d->procs, cap * sizeof(*n));
        if (!n)
            return MRD_ENOMEM;
        d->procs = n;
        d->cap = cap;
    }
    d->procs[d->nprocs].pid = pid;
    d->procs[d->nprocs].starttime = starttime;
    d->nprocs++;
    return 0;
}

/* Adds every living child of the postmaster to the tracked set. */
static void scan_children(demote *d)
{
    DIR *dir = opendir("/proc");
    if (!dir)
        return;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        int pid = mrd__pg_pid_parse(e->d_name);
        mrd__proc_stat st;
        if (pid <= 1 || proc_read(pid, &st) != 1)
            continue;
        if (st.ppid == d->procs[0].pid && !mrd__proc_state_gone(st.state))
            procs_add(d, pid, st.starttime);
    }
    closedir(dir);
}

static int all_gone(demote *d)
{
    for (size_t i = 0; i < d->nprocs; i++)
        if (proc_alive(&d->procs[i]))
            return 0;
    return 1;
}

static void on_closed(uv_handle_t *h)
{
    demote *d = h->data;
    free(d->procs);
    free(d->member);
    free(d->data_dir);
    free(d);
}

static void finish(demote *d, int err, int start_failed)
{
    d->state = ST_FINISHED;
    uv_timer_stop(&d->timer);
    d->cb(err, d->msg, d->killed, start_failed, d->position, d->data);
    uv_close((uv_handle_t *)&d->timer, on_closed);
}

static void on_started(int status, int timed_out, const char *output, void *data)
{
    demote *d = data;
    if (status == 0) {
        mrd_log(MRD_LOG_INFO,
                d->to_primary ? "postgresql started as primary" : "postgresql started as a standby",
                MRD_S("member", d->member));
        d->msg[0] = '\0';
        finish(d, 0, 0);
        return;
    }
    snprintf(d->msg, sizeof(d->msg), "pg_ctl start %s: %s", timed_out ? "timed out" : "failed",
             output);
    mrd_log(MRD_LOG_ERROR,
            d->to_primary ? "unfence: cannot start postgresql"
                          : "fenced, but postgresql did not start again as a standby",
            MRD_S("member", d->member), MRD_S("error", d->msg));
    finish(d, d->to_primary ? MRD_EIO : 0, 1);
}

/* After a kill the lock files still name the dead postmaster, and a
 * zombie answers kill(pid, 0): PostgreSQL would refuse to start ("another
 * server might be running"). Every process is confirmed gone: remove the
 * lock files that name it (and only those). */
static void remove_lock_files(demote *d)
{
    char path[PATH_MAX + 32], lock[PATH_MAX + 32], buf[64];
    snprintf(path, sizeof(path), "%s/postmaster.pid", d->data_dir);
    int have_lock = mrd__pg_pid_socket_lock(d->pidfile, lock, sizeof(lock)) == 0;
    const char *files[2] = {path, have_lock ? lock : NULL};
    for (int i = 0; i < 2 && files[i]; i++) {
        int fd = open(files[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        if (mrd__pg_pid_parse(buf) == d->procs[0].pid && unlink(files[i]) != 0)
            mrd_log(MRD_LOG_WARN, "cannot remove a stale lock file", MRD_S("path", files[i]),
                    MRD_S("error", strerror(errno)));
    }
}

/* Every process is gone: the fence holds. Position, signal file, start. */
static void stopped(demote *d)
{
    uv_timer_stop(&d->timer);
    if (d->killed)
        remove_lock_files(d);
    if (!d->to_primary) {
        uint64_t pos = d->killed ? 0 : mrd_pg_control_final_position(d->data_dir);
        d->position = pos <= INT64_MAX ? (int64_t)pos : 0;
        mrd_log(d->killed ? MRD_LOG_WARN : MRD_LOG_INFO,
                d->killed ? "postgresql killed: fence holds, position unknown"
                          : "postgresql stopped: fence holds",
                MRD_S("member", d->member), MRD_I("position", d->position));
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/standby.signal", d->data_dir);
    if (d->to_primary) {
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(d->msg, sizeof(d->msg), "cannot remove %.300s: %s", path, strerror(errno));
            finish(d, MRD_EIO, 1);
            return;
        }
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || (d->uid >= 0 && fchown(fd, (uid_t)d->uid, (gid_t)d->gid) != 0)) {
            /* never start without it: that would start a primary */
            snprintf(d->msg, sizeof(d->msg), "cannot write %.300s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            mrd_log(MRD_LOG_ERROR, "fenced, but postgresql is not started again",
                    MRD_S("member", d->member), MRD_S("error", d->msg));
            finish(d, 0, 1);
            return;
        }
        close(fd);
    }
    if (!d->bindir[0]) {
        snprintf(d->msg, sizeof(d->msg), "pg_ctl not found: set pg_bindir");
        mrd_log(MRD_LOG_ERROR, "postgresql is not started again", MRD_S("member", d->member),
                MRD_S("error", d->msg));
        finish(d, d->to_primary ? MRD_EUNSUPPORTED : 0, 1);
        return;
    }
    char pg_ctl[PATH_MAX + 16], secs[32];
    snprintf(pg_ctl, sizeof(pg_ctl), "%s/pg_ctl", d->bindir);
    snprintf(secs, sizeof(secs), "%llu", (unsigned long long)(d->start_timeout_ms + 999) / 1000);
    const char *argv[] = {pg_ctl,     "start", "-w",        "-t",
                          secs,       "-D",    d->data_dir, d->logfile[0] ? "-l" : NULL,
                          d->logfile, NULL};
    d->state = ST_STARTING;
    int rc = mrd__exec_start_as(d->loop, argv, NULL, d->data_dir, d->uid, d->gid,
                                d->start_timeout_ms + 5000, 1024, on_started, d, NULL);
    if (rc) {
        snprintf(d->msg, sizeof(d->msg), "cannot run pg_ctl: %s", mrd_strerror(rc));
        finish(d, d->to_primary ? rc : 0, 1);
    }
}

static void kill_all(demote *d)
{
    /* children first: the stopped postmaster cannot react to their death */
    for (size_t i = d->nprocs; i-- > 0;)
        if (proc_alive(&d->procs[i]))
            kill(d->procs[i].pid, SIGKILL);
}

static void on_tick(uv_timer_t *t)
{
    demote *d = t->data;
    uint64_t now = uv_now(d->loop);
    switch (d->state) {
    case ST_STOPPING:
        if (proc_alive(&d->procs[0]))
            scan_children(d);
        if (all_gone(d)) {
            stopped(d);
            return;
        }
        mrd__proc_stat pm;
        if (proc_alive(&d->procs[0]) && proc_read(d->procs[0].pid, &pm) == 1 &&
            (pm.state == 'T' || pm.state == 't'))
            d->stopped_polls++;
        else
            d->stopped_polls = 0;
        if (d->stopped_polls >= STOPPED_POLLS) {
            mrd_log(MRD_LOG_WARN, "postgresql is stopped (SIGSTOP): killing it",
                    MRD_S("member", d->member), MRD_I("postmaster", d->procs[0].pid));
        } else if (now >= d->deadline) {
            mrd_log(MRD_LOG_WARN, "postgresql did not stop in time: killing it",
                    MRD_S("member", d->member), MRD_U("timeout_ms", d->stop_timeout_ms));
        }
        if (d->stopped_polls >= STOPPED_POLLS || now >= d->deadline) {
            kill(d->procs[0].pid, SIGSTOP);
            d->state = ST_FREEZING;
            d->deadline = now + FREEZE_WAIT_MS;
        }
        return;
    case ST_FREEZING: {
        mrd__proc_stat st;
        int rc = proc_read(d->procs[0].pid, &st);
        int frozen = rc == 1 && (st.state == 'T' || st.state == 't');
        if (!frozen && rc != 0 && now < d->deadline && proc_alive(&d->procs[0]))
            return;
        if (proc_alive(&d->procs[0]))
            scan_children(d);
        d->killed = 1;
        kill_all(d);
        d->state = ST_KILLING;
        d->deadline = now + KILL_WAIT_MS;
        return;
    }
    case ST_KILLING:
        if (all_gone(d)) {
            stopped(d);
            return;
        }
        if (now >= d->deadline) {
            snprintf(d->msg, sizeof(d->msg), "postgresql processes survived SIGKILL for %d ms",
                     KILL_WAIT_MS);
            finish(d, MRD_ETIMEOUT, 0);
            return;
        }
        kill_all(d);
        return;
    default:
        return;
    }
}

/* The directory of a link's target ("/usr/lib/postgresql/15/bin/postgres"). */
static void link_dir(const char *link, char *out, size_t len)
{
    char buf[PATH_MAX];
    ssize_t n = readlink(link, buf, sizeof(buf) - 1);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return;
    *slash = '\0';
    snprintf(out, len, "%s", buf);
}

/* The server's stderr when it is a regular file (its log): kept for the
 * restart. */
static void log_file_of(int pid, char *out, size_t len)
{
    char link[64], buf[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/%d/fd/2", pid);
    ssize_t n = readlink(link, buf, sizeof(buf) - 1);
    if (n <= 0)
        return;
    buf[n] = '\0';
    struct stat st;
    if (buf[0] != '/' || strstr(buf, " (deleted)") || stat(buf, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    snprintf(out, len, "%s", buf);
}

/* A stale postmaster.pid may name a PID reused by anything: only a process
 * whose working directory is the data directory (the postmaster chdirs
 * there at start) is signalled. Unreadable: not ours. */
static int is_postmaster_of(int pid, const char *data_dir)
{
    char link[64], cwd[PATH_MAX], want[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/%d/cwd", pid);
    ssize_t n = readlink(link, cwd, sizeof(cwd) - 1);
    if (n <= 0 || !realpath(data_dir, want))
        return 0;
    cwd[n] = '\0';
    return strcmp(cwd, want) == 0;
}

int mrd__pg_demote_start(uv_loop_t *loop, const mrd__pg_demote_opts *o, mrd__pg_demote_cb cb,
                         void *data)
{
    if (!o || !o->data_dir || !o->data_dir[0] || !cb)
        return MRD_EINVAL;
    demote *d = calloc(1, sizeof(*d));
    if (!d)
        return MRD_ENOMEM;
    d->member = strdup(o->member ? o->member : "");
    d->data_dir = strdup(o->data_dir);
    if (!d->member || !d->data_dir || procs_add(d, 0, 0) != 0) {
        free(d->member);
        free(d->data_dir);
        free(d->procs);
        free(d);
        return MRD_ENOMEM;
    }
    d->loop = loop;
    d->cb = cb;
    d->data = data;
    d->stop_timeout_ms = o->stop_timeout_ms;
    d->start_timeout_ms = o->start_timeout_ms ? o->start_timeout_ms : 30000;
    d->to_primary = o->to_primary;
    d->uid = d->gid = -1;
    if (o->bindir)
        snprintf(d->bindir, sizeof(d->bindir), "%s", o->bindir);
    struct stat st;
    if (stat(d->data_dir, &st) == 0 && geteuid() == 0 && st.st_uid != 0) {
        d->uid = st.st_uid;
        d->gid = st.st_gid;
    }
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;

    /* the postmaster, read before anything is signalled */
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/postmaster.pid", d->data_dir);
    int pid = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, d->pidfile, sizeof(d->pidfile) - 1);
        close(fd);
        if (n > 0) {
            d->pidfile[n] = '\0';
            pid = mrd__pg_pid_parse(d->pidfile);
        }
    }
    mrd__proc_stat ps;
    if (pid > 1 && proc_read(pid, &ps) == 1 && !mrd__proc_state_gone(ps.state) &&
        !is_postmaster_of(pid, d->data_dir)) {
        mrd_log(MRD_LOG_WARN, "postmaster.pid names another process: not signalled",
                MRD_S("member", d->member), MRD_I("pid", pid));
        pid = 0;
    }
    if (pid > 1 && proc_read(pid, &ps) == 1 && !mrd__proc_state_gone(ps.state)) {
        d->procs[0].pid = pid;
        d->procs[0].starttime = ps.starttime;
        char link[64];
        snprintf(link, sizeof(link), "/proc/%d/exe", pid);
        if (!d->bindir[0])
            link_dir(link, d->bindir, sizeof(d->bindir));
        log_file_of(pid, d->logfile, sizeof(d->logfile));
        scan_children(d);
        mrd_log(MRD_LOG_INFO, "stopping postgresql (fast)", MRD_S("member", d->member),
                MRD_I("postmaster", pid), MRD_U("children", (uint64_t)(d->nprocs - 1)),
                MRD_S("to", d->to_primary ? "primary" : "standby"));
        kill(pid, SIGINT);
    } else {
        d->nprocs = 0; /* nothing runs */
        mrd_log(MRD_LOG_INFO, "postgresql is not running", MRD_S("member", d->member));
    }
    d->state = ST_STOPPING;
    d->deadline = uv_now(loop) + d->stop_timeout_ms;
    uv_timer_start(&d->timer, on_tick, d->nprocs ? POLL_MS : 0, POLL_MS);
    return 0;
}
