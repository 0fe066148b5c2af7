/*
 * Child processes for exec checks, fence/unfence/promote commands of exec
 * members, the rejoin hook and pg_ctl of a demote (run as the data
 * directory's owner: mrd__exec_start_as): uv_spawn in a new process group, stdout and
 * stderr into one buffer, output kept up to max_output bytes: its head and,
 * when it is longer, "..." and its last bytes (the rest is read
 * and dropped so the child never blocks on a full pipe), a timer that kills
 * the whole group with SIGKILL after timeout_ms.
 *
 * The callback runs exactly once, after the child exited and its output
 * reached EOF (or 500 ms after the exit, when a grandchild keeps the pipe
 * open). Handles are then closed and the state freed in the last close
 * callback. A program that cannot be started reports status -2 through the
 * callback (on the next loop iteration), never synchronously.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "meridian/error.h"

extern char **environ;

struct mrd__exec {
    uv_process_t proc;
    uv_pipe_t out, err;
    uv_timer_t timer;
    char rbuf[4096];
    mrd__exec_cb cb;
    void *data;
    char *buf; /* the first max bytes of the output */
    size_t len, max;
    char *ring;        /* the last rmax bytes beyond them */
    size_t rmax, rpos; /* ring size, next write index */
    uint64_t beyond;   /* bytes that did not fit in buf */
    int status;
    int timed_out;
    int exited, eofs, reported, spawned;
    int open; /* handles still to close */
    char **envp;
};

static void free_env(char **envp)
{
    if (!envp)
        return;
    for (size_t i = 0; envp[i]; i++)
        free(envp[i]);
    free(envp);
}

static void on_closed(uv_handle_t *h)
{
    mrd__exec *e = h->data;
    if (--e->open > 0)
        return;
    free(e->buf);
    free(e->ring);
    free_env(e->envp);
    free(e);
}

static void close_all(mrd__exec *e)
{
    uv_handle_t *hs[4] = {(uv_handle_t *)&e->timer, (uv_handle_t *)&e->out, (uv_handle_t *)&e->err,
                          (uv_handle_t *)&e->proc};
    int n = e->spawned ? 4 : 3;
    e->open = n;
    for (int i = 0; i < n; i++)
        uv_close(hs[i], on_closed);
}

/* When the output overflowed, buf becomes its head, "\n...\n", and its last
 * rmax bytes (where errors usually are); always NUL-terminated. */
static void compose(mrd__exec *e)
{
    static const char mark[] = "\n...\n";
    size_t mlen = sizeof(mark) - 1;
    if (e->beyond == 0 || e->rmax == 0 || e->max < e->rmax + mlen) {
        e->buf[e->len] = '\0';
        return;
    }
    /* the stream's last rmax bytes: the end of buf, then the ring in order */
    char *tail = malloc(e->rmax);
    if (!tail) {
        e->buf[e->len] = '\0';
        return;
    }
    size_t from_ring = e->beyond < e->rmax ? (size_t)e->beyond : e->rmax;
    size_t from_buf = e->rmax - from_ring;
    memcpy(tail, e->buf + e->max - from_buf, from_buf);
    size_t start = (e->rpos + e->rmax - from_ring) % e->rmax;
    for (size_t i = 0; i < from_ring; i++)
        tail[from_buf + i] = e->ring[(start + i) % e->rmax];
    size_t keep = e->max - e->rmax - mlen;
    memcpy(e->buf + keep, mark, mlen);
    memcpy(e->buf + keep + mlen, tail, e->rmax);
    e->len = e->max;
    e->buf[e->len] = '\0';
    free(tail);
}

static void report(mrd__exec *e)
{
    if (e->reported)
        return;
    e->reported = 1;
    uv_timer_stop(&e->timer);
    uv_read_stop((uv_stream_t *)&e->out);
    uv_read_stop((uv_stream_t *)&e->err);
    compose(e);
    e->cb(e->status, e->timed_out, e->buf, e->data);
    close_all(e);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mrd__exec *e = h->data;
    (void)suggested;
    *buf = uv_buf_init(e->rbuf, sizeof(e->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    mrd__exec *e = s->data;
    if (n > 0) {
        size_t room = e->max - e->len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(e->buf + e->len, buf->base, take);
        e->len += take;
        for (size_t i = take; i < (size_t)n && e->rmax > 0; i++) {
            e->ring[e->rpos] = buf->base[i];
            e->rpos = (e->rpos + 1) % e->rmax;
        }
        e->beyond += (size_t)n - take;
        return;
    }
    if (n < 0) {
        e->eofs++;
        uv_read_stop(s);
        if (e->exited && e->eofs == 2)
            report(e);
    }
}

/* Timer: the timeout while the child runs, the grace period after it exited. */
static void on_timer(uv_timer_t *t)
{
    mrd__exec *e = t->data;
    if (e->exited) {
        report(e);
        return;
    }
    /* the timeout: kill the whole process group */
    e->timed_out = 1;
    if (e->proc.pid > 0)
        kill(-e->proc.pid, SIGKILL);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
    mrd__exec *e = p->data;
    e->exited = 1;
    e->status = term_signal ? -1 : (int)status;
    if (e->eofs == 2) {
        report(e);
    } else {
        /* a grandchild may keep the pipe open: wait a little, then report */
        uv_timer_stop(&e->timer);
        uv_timer_start(&e->timer, on_timer, 500, 0);
    }
}

static void on_spawn_failed(uv_timer_t *t)
{
    mrd__exec *e = t->data;
    e->status = -2;
    report(e);
}

static char **build_env(const char *const *extra)
{
    size_t n = 0, m = 0;
    while (environ && environ[n])
        n++;
    while (extra && extra[m])
        m++;
    char **envp = calloc(n + m + 1, sizeof(*envp));
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (!(envp[k++] = strdup(extra[i])))
            goto fail;
    for (size_t i = 0; i < n; i++) {
        /* the extra list overrides inherited variables of the same name */
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
        int dup = 0;
        for (size_t j = 0; j < m && !dup; j++)
            dup = strncmp(extra[j], environ[i], klen) == 0;
        if (!dup && !(envp[k++] = strdup(environ[i])))
            goto fail;
    }
    return envp;
fail:
    free_env(envp);
    return NULL;
}

int mrd__exec_start(uv_loop_t *loop, const char *const *argv, const char *const *env,
                    uint64_t timeout_ms, size_t max_output, mrd__exec_cb cb, void *data,
                    mrd__exec **out)
{
    return mrd__exec_start_as(loop, argv, env, NULL, -1, -1, timeout_ms, max_output, cb, data, out);
}

int mrd__exec_start_as(uv_loop_t *loop, const char *const *argv, const char *const *env,
                       const char *cwd, int64_t uid, int64_t gid, uint64_t timeout_ms,
                       size_t max_output, mrd__exec_cb cb, void *data, mrd__exec **out)
{
    if (out)
        *out = NULL;
    if (!argv || !argv[0] || !argv[0][0])
        return MRD_EINVAL;
    mrd__exec *e = calloc(1, sizeof(*e));
    if (!e)
        return MRD_ENOMEM;
    e->max = max_output ? max_output : 4096;
    e->buf = malloc(e->max + 1);
    e->rmax = e->max / 2;
    e->ring = malloc(e->rmax + 1);
    e->envp = build_env(env);
    if (!e->buf || !e->ring || !e->envp) {
        free(e->buf);
        free(e->ring);
        free_env(e->envp);
        free(e);
        return MRD_ENOMEM;
    }
    e->cb = cb;
    e->data = data;
    uv_timer_init(loop, &e->timer);
    uv_pipe_init(loop, &e->out, 0);
    uv_pipe_init(loop, &e->err, 0);
    e->timer.data = e->out.data = e->err.data = e->proc.data = e;

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&e->out;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&e->err;
    uv_process_options_t opt;
    memset(&opt, 0, sizeof(opt));
    opt.file = argv[0];
    opt.args = (char **)argv;
    opt.env = e->envp;
    opt.exit_cb = on_exit_cb;
    opt.stdio = stdio;
    opt.stdio_count = 3;
    opt.flags = UV_PROCESS_DETACHED; /* own process group: kill(-pid) reaches children */
    opt.cwd = cwd;
    if (uid >= 0) {
        opt.uid = (uv_uid_t)uid;
        opt.flags |= UV_PROCESS_SETUID;
    }
    if (gid >= 0) {
        opt.gid = (uv_gid_t)gid;
        opt.flags |= UV_PROCESS_SETGID;
    }
    int rc = uv_spawn(loop, &e->proc, &opt);
    if (rc != 0) {
        snprintf(e->buf, e->max + 1, "cannot start %s: %s", argv[0], uv_strerror(rc));
        e->len = strlen(e->buf);
        /* uv_spawn failure still requires closing the process handle */
        e->spawned = 1;
        uv_timer_start(&e->timer, on_spawn_failed, 0, 0);
        if (out)
            *out = e;
        return 0;
    }
    e->spawned = 1;
    uv_read_start((uv_stream_t *)&e->out, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&e->err, on_alloc, on_read);
    uv_timer_start(&e->timer, on_timer, timeout_ms ? timeout_ms : 60000, 0);
    if (out)
        *out = e;
    return 0;
}

void mrd__exec_kill(mrd__exec *e)
{
    if (e && e->spawned && !e->exited && e->proc.pid > 0)
        kill(-e->proc.pid, SIGKILL);
}
