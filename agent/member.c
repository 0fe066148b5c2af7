/*
 * Members of services hosted on this node: their replication state and the
 * actions the controller (or the self-fencing rule) orders on them.
 *
 * PostgreSQL members use two connections (pg.h): one for the status query
 * run every heartbeat (short timeout), one for actions (long timeout, so a
 * pg_promote that waits does not stall the status). The status query reads
 * pg_is_in_recovery, the current/receive/replay LSNs, the last replayed
 * commit time, the timeline and default_transaction_read_only in one
 * statement. Lag: bytes = max(primary position from the controller, own
 * receive position) - replay position; time = 0 when replay == receive,
 * else the database clock minus the last replayed commit time.
 *
 * Fence demote (the default) and its unfence are pg_demote.c: the server
 * stopped or killed, every process confirmed gone, started again as a
 * standby; the member then reports "fenced" until unfence or rejoin (the
 * state survives a restart in state_dir/demoted.<service>).
 * Other actions on PostgreSQL (fence read_only, unfence, promote) are constant
 * SQL statements; stop/exec fencing, exec members and the rejoin hook run
 * child processes (exec.c). Fence read_only: ALTER SYSTEM SET
 * default_transaction_read_only, reload, wait 50 ms for backends to take the
 * reload, then terminate every other client backend that holds a
 * transaction id or whose transaction began before the fence (it may have
 * begun read-write). It guards against ordinary clients; a client may still
 * SET the parameter off in its session, and against a frozen server its
 * reload and terminations are signals not yet received: the hard fence is
 * mode "demote".
 *
 * Every action calls its done callback exactly once. Nothing here decides
 * whether an action may run: commands.c (epochs, at-most-once) does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "agent.h"
#include "pg_control.h"
#include "pg_demote.h"
#include "meridian/error.h"
#include "meridian/log.h"
#include "meridian/position.h"

/* "16/B374D848" -> 0x16B374D848; 0 (unknown) for NULL or malformed. */
static int64_t lsn_parse(const char *s)
{
    uint64_t v = 0;
    if (!s || mrd_pos_parse(s, &v) != 0 || v > INT64_MAX)
        return 0;
    return (int64_t)v;
}

mrd__member *mrd__member_find(mrd__agent *a, const char *service, const char *name)
{
    for (size_t i = 0; i < a->nmembers; i++)
        if (strcmp(a->members[i].cfg->service, service) == 0 &&
            strcmp(a->members[i].cfg->name, name) == 0)
            return &a->members[i];
    return NULL;
}

mrd__member *mrd__member_of_service(mrd__agent *a, const char *service)
{
    for (size_t i = 0; i < a->nmembers; i++)
        if (strcmp(a->members[i].cfg->service, service) == 0)
            return &a->members[i];
    return NULL;
}

static int is_pg(const mrd__member *m)
{
    return strcmp(m->cfg->kind, "postgresql") == 0;
}

/* ---- status ---- */

static const char *status_sql =
    "SELECT pg_is_in_recovery(),"
    " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,"
    " pg_last_wal_receive_lsn()::text,"
    " pg_last_wal_replay_lsn()::text,"
    " (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000)::bigint,"
    " CASE WHEN pg_is_in_recovery()"
    "  THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),"
    "                (SELECT timeline_id FROM pg_control_checkpoint()))::bigint"
    "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,"
    " current_setting('default_transaction_read_only'),"
    " (extract(epoch FROM clock_timestamp()) * 1000)::bigint,"
    /* the standbys streaming from it (LSNs are NULL without pg_monitor) */
    " (SELECT coalesce(json_agg(json_build_object('name', application_name,"
    "   'address', host(client_addr), 'state', state, 'sync_state', sync_state,"
    "   'sent', sent_lsn::text, 'flush', flush_lsn::text, 'replay', replay_lsn::text,"
    "   'replay_lag_ms', (extract(epoch FROM replay_lag) * 1000)::bigint)"
    "   ORDER BY application_name, pid), '[]') FROM pg_stat_replication)";

/* Rows of pg_stat_replication (column 8 of status_sql) into m->standbys;
 * at most MRD_PROTO_MAX_STANDBYS, longer texts cut. */
static void standbys_parse(mrd__member *m, const char *text)
{
    json_error_t jerr;
    json_t *arr = json_loads(text, 0, &jerr);
    size_t i;
    json_t *r;
    m->nstandbys = 0;
    json_array_foreach(arr, i, r)
    {
        if (m->nstandbys >= MRD_PROTO_MAX_STANDBYS)
            break;
        mrd_hb_standby *s = &m->standbys[m->nstandbys++];
        const char *v;
        memset(s, 0, sizeof(*s));
        v = json_string_value(json_object_get(r, "name"));
        snprintf(s->name, sizeof(s->name), "%s", v ? v : "");
        v = json_string_value(json_object_get(r, "address"));
        snprintf(s->address, sizeof(s->address), "%s", v ? v : "");
        v = json_string_value(json_object_get(r, "state"));
        snprintf(s->state, sizeof(s->state), "%s", v && v[0] ? v : "unknown");
        v = json_string_value(json_object_get(r, "sync_state"));
        snprintf(s->sync_state, sizeof(s->sync_state), "%s", v ? v : "");
        s->sent_position = lsn_parse(json_string_value(json_object_get(r, "sent")));
        s->flush_position = lsn_parse(json_string_value(json_object_get(r, "flush")));
        s->replay_position = lsn_parse(json_string_value(json_object_get(r, "replay")));
        json_t *lag = json_object_get(r, "replay_lag_ms");
        s->replay_lag_ms = json_is_integer(lag) && json_integer_value(lag) >= 0
                               ? (int64_t)json_integer_value(lag)
                               : -1;
    }
    json_decref(arr);
}

static void compute_lag(mrd__member *m, int64_t db_now_ms)
{
    if (m->role == MRD_MEMBER_PRIMARY || m->role == MRD_MEMBER_FENCED) {
        m->lag_bytes = 0;
        m->lag_ms = 0;
        return;
    }
    const mrd__service_view *sv = mrd__service_find(m->agent, m->cfg->service);
    int64_t ref = sv ? sv->primary_position : 0;
    if (m->receive_position > ref)
        ref = m->receive_position;
    if (ref == 0 || m->replay_position == 0)
        m->lag_bytes = -1;
    else
        m->lag_bytes = ref > m->replay_position ? ref - m->replay_position : 0;
    if (m->replay_position != 0 && m->replay_position == m->receive_position)
        m->lag_ms = 0;
    else if (m->replay_timestamp_ms > 0 && db_now_ms > 0)
        m->lag_ms = db_now_ms > m->replay_timestamp_ms ? db_now_ms - m->replay_timestamp_ms : 0;
    else
        m->lag_ms = -1;
}

static void status_failed(mrd__member *m)
{
    m->status_ok = 0;
    m->nstandbys = 0;
    m->role = MRD_MEMBER_UNKNOWN;
    m->lag_bytes = m->lag_ms = -1;
    mrd__heartbeat_asap_check(m->agent);
}

static int64_t int_of(PGresult *res, int col)
{
    if (PQgetisnull(res, 0, col))
        return 0;
    return strtoll(PQgetvalue(res, 0, col), NULL, 10);
}

/* ---- demote state ---- */

/* The demoted state outlives an agent restart: a file in state_dir. */
static void demoted_path(const mrd__member *m, char *buf, size_t len)
{
    snprintf(buf, len, "%s/demoted.%s", m->agent->cfg.state_dir, m->cfg->service);
}

static void demoted_mark(mrd__member *m, int on)
{
    char path[1200];
    demoted_path(m, path, sizeof(path));
    m->demoted = on;
    if (on) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (write(fd, m->cfg->name, strlen(m->cfg->name)) < 0 || fsync(fd) != 0)
                mrd_log(MRD_LOG_WARN, "cannot record the demote", MRD_S("path", path));
            close(fd);
            return;
        }
    } else if (unlink(path) == 0 || errno == ENOENT) {
        return;
    }
    mrd_log(MRD_LOG_WARN, "cannot record the demote state", MRD_S("path", path),
            MRD_S("error", strerror(errno)));
}

static void on_data_dir(int err, PGresult *res, void *data)
{
    mrd__member *m = data;
    m->data_dir_in_flight = 0;
    if (!err && res && PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0))
        mrd__strlcpy(m->learnt_data_dir, PQgetvalue(res, 0, 0), sizeof(m->learnt_data_dir));
}

/* Demote needs the data directory: the configured one, else the server's
 * own answer, asked once while it answers (cached: a frozen server cannot
 * be asked when the fence needs it). */
static void learn_data_dir(mrd__member *m)
{
    if (m->cfg->fence_mode != MRD__FENCE_DEMOTE || m->cfg->data_dir || m->learnt_data_dir[0] ||
        m->data_dir_in_flight)
        return;
    m->data_dir_in_flight = 1;
    if (mrd_pg_query(m->pg, "SELECT current_setting('data_directory')", 0, NULL, on_data_dir, m))
        m->data_dir_in_flight = 0;
}

static void on_status(int err, PGresult *res, void *data)
{
    mrd__member *m = data;
    m->status_in_flight = 0;
    if (err || !res || PQntuples(res) != 1 || PQnfields(res) != 9) {
        if (m->status_ok)
            mrd_log(MRD_LOG_WARN, "member status unavailable", MRD_S("member", m->cfg->name),
                    MRD_S("error",
                          err == MRD_EIO && res ? PQresultErrorMessage(res) : mrd_strerror(err)));
        status_failed(m);
        return;
    }
    int recovery = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    int read_only = strcmp(PQgetvalue(res, 0, 6), "on") == 0;
    m->status_ok = 1;
    m->position = recovery ? 0 : lsn_parse(PQgetvalue(res, 0, 1));
    m->receive_position = lsn_parse(PQgetvalue(res, 0, 2));
    m->replay_position = lsn_parse(PQgetvalue(res, 0, 3));
    m->replay_timestamp_ms = int_of(res, 4);
    m->timeline = int_of(res, 5);
    if (m->timeline < 0 || m->timeline > MRD_PROTO_MAX_TIMELINE)
        m->timeline = 0;
    mrd__fence_mode mode = m->cfg->fence_mode;
    if (recovery && m->demoted) {
        /* the old primary, demoted by its fence: not a replica anyone may
         * promote or count on until the controller rejoins or unfences it */
        m->role = MRD_MEMBER_FENCED;
        m->fenced = 1;
    } else if (recovery) {
        m->role = MRD_MEMBER_REPLICA;
        if (mode == MRD__FENCE_READ_ONLY)
            m->fenced = read_only;
        else if (mode == MRD__FENCE_DEMOTE)
            m->fenced = 0;
    } else if (read_only) {
        m->role = MRD_MEMBER_FENCED;
        m->fenced = 1;
    } else if (mode == MRD__FENCE_EXEC && m->fenced) {
        m->role = MRD_MEMBER_FENCED; /* fenced from outside (firewall, proxy) */
    } else {
        /* running and writable: whatever fenced it does not hold any more */
        m->role = MRD_MEMBER_PRIMARY;
        m->fenced = 0;
        if (m->demoted)
            demoted_mark(m, 0);
    }
    learn_data_dir(m);
    compute_lag(m, int_of(res, 7));
    standbys_parse(m, PQgetvalue(res, 0, 8));
    mrd__heartbeat_asap_check(m->agent);
}

static void on_exec_status(int status, int timed_out, const char *output, void *data)
{
    mrd__member *m = data;
    m->status_in_flight = 0;
    if (status != 0 || timed_out) {
        status_failed(m);
        return;
    }
    char word[16] = {0};
    size_t n = 0;
    while (*output == ' ' || *output == '\n' || *output == '\t')
        output++;
    while (output[n] && output[n] != ' ' && output[n] != '\n' && n + 1 < sizeof(word)) {
        word[n] = output[n];
        n++;
    }
    mrd_member_role role;
    if (mrd_member_role_parse(word, &role) != 0) {
        status_failed(m);
        return;
    }
    m->status_ok = 1;
    m->role = role;
    if (role == MRD_MEMBER_FENCED)
        m->fenced = 1;
    else if (role == MRD_MEMBER_REPLICA)
        m->fenced = 0;
    else if (role == MRD_MEMBER_PRIMARY && m->fenced)
        m->role = MRD_MEMBER_FENCED;
    m->lag_bytes = m->lag_ms = role == MRD_MEMBER_PRIMARY ? 0 : -1;
    mrd__heartbeat_asap_check(m->agent);
}

void mrd__members_poll(mrd__agent *a)
{
    for (size_t i = 0; i < a->nmembers; i++) {
        mrd__member *m = &a->members[i];
        if (m->status_in_flight || a->stopping)
            continue;
        if (is_pg(m)) {
            m->status_in_flight = 1;
            if (mrd_pg_query(m->pg, status_sql, 0, NULL, on_status, m) != 0) {
                m->status_in_flight = 0;
                status_failed(m);
            }
        } else if (m->cfg->status_cmd) {
            m->status_in_flight = 1;
            if (mrd__exec_start(a->loop, m->cfg->status_cmd, NULL, a->cfg.request_timeout_ms, 256,
                                on_exec_status, m, NULL) != 0) {
                m->status_in_flight = 0;
                status_failed(m);
            }
        }
    }
}

/* ---- actions ---- */

typedef struct {
    mrd__member *m;
    mrd__action_cb done;
    void *data;
    int remaining;
    int err;
    int already; /* promote: recovery was not in progress */
    int promote_false;
    int64_t position; /* fence: pg_current_wal_lsn once fenced */
    char msg[MRD_PROTO_ERROR_MAX];
    const char *what;
} action;

static action *action_new(mrd__member *m, mrd__action_cb done, void *data, const char *what)
{
    action *x = calloc(1, sizeof(*x));
    if (!x) {
        done(m, MRD_ENOMEM, "out of memory", 0, data);
        return NULL;
    }
    x->m = m;
    x->done = done;
    x->data = data;
    x->what = what;
    return x;
}

static void action_end(action *x)
{
    if (x->err == 0 && x->promote_false) {
        x->err = MRD_ETIMEOUT;
        snprintf(x->msg, sizeof(x->msg), "promotion did not finish within %llu ms",
                 (unsigned long long)x->m->cfg->promote_timeout_ms);
    }
    mrd_log(x->err ? MRD_LOG_ERROR : MRD_LOG_INFO, x->err ? "action failed" : "action done",
            MRD_S("action", x->what), MRD_S("member", x->m->cfg->name),
            MRD_S("error", x->err ? x->msg : ""));
    x->done(x->m, x->err, x->err ? x->msg : (x->already ? "already primary" : ""), x->position,
            x->data);
    mrd__members_poll(x->m->agent); /* report the new state soon */
    free(x);
}

static void on_step(int err, PGresult *res, void *data)
{
    action *x = data;
    if (err && res && strcmp(x->what, "promote") == 0) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, "55000") == 0) {
            x->already = 1; /* "recovery is not in progress": promoted before */
            err = 0;
        }
    }
    if (err && !x->err) {
        x->err = err;
        if (err == MRD_EIO && res)
            snprintf(x->msg, sizeof(x->msg), "%s", PQresultErrorMessage(res));
        else
            snprintf(x->msg, sizeof(x->msg), "%s", mrd_strerror(err));
        size_t n = strlen(x->msg);
        while (n > 0 && (x->msg[n - 1] == '\n' || x->msg[n - 1] == ' '))
            x->msg[--n] = '\0';
    }
    if (!err && res && strcmp(x->what, "promote") == 0 && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 0), "f") == 0)
        x->promote_false = 1;
    if (!err && res && PQntuples(res) == 1 && PQnfields(res) == 1 &&
        strcmp(PQfname(res, 0), "final_position") == 0)
        x->position = lsn_parse(PQgetvalue(res, 0, 0));
    if (--x->remaining == 0)
        action_end(x);
}

/* Queues statements in order on the action connection; the action ends
 * when every accepted statement has answered. */
static void run_sql(action *x, const char *const *sqls, size_t n, const char *param)
{
    x->remaining = 1; /* held while queueing */
    for (size_t i = 0; i < n; i++) {
        const char *params[1] = {param};
        int np = param && strstr(sqls[i], "$1") ? 1 : 0;
        x->remaining++;
        int rc = mrd_pg_query(x->m->action_pg, sqls[i], np, params, on_step, x);
        if (rc) {
            x->remaining--;
            if (!x->err) {
                x->err = rc;
                snprintf(x->msg, sizeof(x->msg), "postgresql: %s",
                         rc == MRD_ESTORE ? "not connected" : mrd_strerror(rc));
            }
            break;
        }
    }
    if (--x->remaining == 0)
        action_end(x);
}

/* A member stopped by its fence: the shutdown checkpoint in its control
 * file is past every commit it made, the exact catch-up barrier of a
 * switchover (without it the controller falls back to the position of the
 * last heartbeat, which may miss the last writes). */
static void stop_fence_position(action *x)
{
    uint64_t pos = mrd_pg_control_final_position(x->m->cfg->data_dir);
    if (pos > 0 && pos <= INT64_MAX) {
        x->position = (int64_t)pos;
        return;
    }
    mrd_log(MRD_LOG_WARN, "fence position unknown", MRD_S("member", x->m->cfg->name),
            MRD_S("why", x->m->cfg->data_dir ? "the control file shows no clean shutdown"
                                             : "no data_dir configured"));
}

static void on_exec_action(int status, int timed_out, const char *output, void *data)
{
    action *x = data;
    if (status != 0) {
        x->err = timed_out ? MRD_ETIMEOUT : MRD_EIO;
        if (timed_out)
            snprintf(x->msg, sizeof(x->msg), "timed out: %s", output);
        else if (status == -2)
            snprintf(x->msg, sizeof(x->msg), "%s", output);
        else
            snprintf(x->msg, sizeof(x->msg), "exit %d: %s", status, output);
        action_end(x);
        return;
    }
    if (output[0])
        mrd_log(MRD_LOG_INFO, "command output", MRD_S("action", x->what),
                MRD_S("member", x->m->cfg->name), MRD_S("output", output));
    if (strcmp(x->what, "fence") == 0) {
        x->m->fenced = 1;
        if (is_pg(x->m) && x->m->cfg->fence_mode == MRD__FENCE_STOP)
            stop_fence_position(x);
    } else if (strcmp(x->what, "unfence") == 0) {
        x->m->fenced = 0;
    } else if (strcmp(x->what, "rejoin") == 0 && x->m->demoted) {
        demoted_mark(x->m, 0); /* a replica of the new primary now */
    }
    action_end(x);
}

static void run_exec(action *x, const char **argv, const char *const *env)
{
    if (!argv) {
        x->err = MRD_EUNSUPPORTED;
        snprintf(x->msg, sizeof(x->msg), "no %s command configured", x->what);
        action_end(x);
        return;
    }
    int rc = mrd__exec_start(x->m->agent->loop, argv, env, x->m->cfg->command_timeout_ms,
                             MRD_PROTO_ERROR_MAX - 64, on_exec_action, x, NULL);
    if (rc) {
        x->err = rc;
        snprintf(x->msg, sizeof(x->msg), "%s", mrd_strerror(rc));
        action_end(x);
    }
}

static void on_demoted(int err, const char *msg, int killed, int start_failed, int64_t position,
                       void *data)
{
    action *x = data;
    mrd__member *m = x->m;
    int unfence = strcmp(x->what, "unfence") == 0;
    if (err) {
        x->err = err;
        snprintf(x->msg, sizeof(x->msg), "%s", msg);
    } else if (unfence) {
        m->fenced = 0;
        demoted_mark(m, 0);
    } else {
        /* every process of the server is gone: no session can commit */
        m->fenced = 1;
        demoted_mark(m, 1);
        x->position = position;
        mrd_log(start_failed ? MRD_LOG_ERROR : MRD_LOG_INFO, "demoted",
                MRD_S("member", m->cfg->name), MRD_I("killed", killed), MRD_I("position", position),
                MRD_S("start", start_failed ? msg : "standby"));
    }
    action_end(x);
}

/* Fence or unfence in mode demote (pg_demote.h). */
static void run_demote(action *x, int to_primary)
{
    mrd__member *m = x->m;
    const char *dir = m->cfg->data_dir        ? m->cfg->data_dir
                      : m->learnt_data_dir[0] ? m->learnt_data_dir
                                              : NULL;
    if (!dir) {
        x->err = MRD_EUNSUPPORTED;
        snprintf(x->msg, sizeof(x->msg), "data directory unknown: set data_dir");
        action_end(x);
        return;
    }
    mrd__pg_demote_opts o = {0};
    o.member = m->cfg->name;
    o.data_dir = dir;
    o.bindir = m->cfg->pg_bindir;
    o.stop_timeout_ms = m->cfg->fence_timeout_ms;
    o.start_timeout_ms = to_primary ? m->cfg->command_timeout_ms : m->cfg->fence_timeout_ms;
    o.to_primary = to_primary;
    int rc = mrd__pg_demote_start(m->agent->loop, &o, on_demoted, x);
    if (rc) {
        x->err = rc;
        snprintf(x->msg, sizeof(x->msg), "%s", mrd_strerror(rc));
        action_end(x);
    }
}

static void fence_with(mrd__member *m, int soft, mrd__action_cb done, void *data)
{
    action *x = action_new(m, done, data, "fence");
    if (!x)
        return;
    m->soft_fenced = soft && is_pg(m); /* a hard fence replaces a soft one */
    if (m->cfg->fence_mode == MRD__FENCE_DEMOTE && !(soft && is_pg(m))) {
        run_demote(x, 0);
    } else if (m->cfg->fence_mode == MRD__FENCE_READ_ONLY || (soft && is_pg(m))) {
        static const char *const sqls[] = {
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
            "SELECT pg_sleep(0.05)",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
            " AND (backend_xid IS NOT NULL"
            "      OR xact_start < statement_timestamp() - interval '50 milliseconds')",
            /* reported with the result: the switchover's catch-up barrier */
            "SELECT pg_current_wal_lsn()::text AS final_position",
        };
        run_sql(x, sqls, sizeof(sqls) / sizeof(sqls[0]), NULL);
    } else {
        run_exec(x, m->cfg->fence_cmd, NULL);
    }
}

void mrd__member_fence(mrd__member *m, mrd__action_cb done, void *data)
{
    fence_with(m, 0, done, data);
}

void mrd__member_fence_soft(mrd__member *m, mrd__action_cb done, void *data)
{
    fence_with(m, 1, done, data);
}

void mrd__member_unfence(mrd__member *m, mrd__action_cb done, void *data)
{
    action *x = action_new(m, done, data, "unfence");
    if (!x)
        return;
    /* undo what fenced it: a demote (even in another mode's config: never,
     * but the file says so), else the soft fence of isolation, else the
     * configured mode */
    int soft = m->soft_fenced && !m->demoted;
    m->soft_fenced = 0;
    if (m->demoted) {
        run_demote(x, 1);
    } else if (m->cfg->fence_mode == MRD__FENCE_READ_ONLY || soft ||
               (m->cfg->fence_mode == MRD__FENCE_DEMOTE && is_pg(m))) {
        static const char *const sqls[] = {
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        };
        run_sql(x, sqls, 2, NULL);
    } else {
        run_exec(x, m->cfg->unfence_cmd, NULL);
    }
}

void mrd__member_promote(mrd__member *m, mrd__action_cb done, void *data)
{
    action *x = action_new(m, done, data, "promote");
    if (!x)
        return;
    if (is_pg(m)) {
        char secs[32];
        uint64_t s = (m->cfg->promote_timeout_ms + 999) / 1000;
        snprintf(secs, sizeof(secs), "%llu", (unsigned long long)s);
        static const char *const sqls[] = {"SELECT pg_promote(true, $1::int)"};
        run_sql(x, sqls, 1, secs);
    } else {
        run_exec(x, m->cfg->promote_cmd, NULL);
    }
}

/* Builds "K=V" strings for the rejoin hook. */
static int env_add(char **env, size_t *n, size_t max, const char *k, const char *v)
{
    if (*n + 1 >= max || !v)
        return 0;
    size_t len = strlen(k) + strlen(v) + 2;
    char *s = malloc(len);
    if (!s)
        return MRD_ENOMEM;
    snprintf(s, len, "%s=%s", k, v);
    env[(*n)++] = s;
    return 0;
}

/* ALTER SYSTEM takes no parameters: the conninfo is written as a standard
 * SQL literal (standard_conforming_strings: quotes doubled, backslashes
 * literal); control characters are refused. Returns 0 or MRD_EINVAL. */
static int follow_sql(char *buf, size_t len, const char *conninfo)
{
    size_t pos = 0;
    const char *head = "ALTER SYSTEM SET primary_conninfo = '";
    if (strlen(head) + 3 > len)
        return MRD_EINVAL;
    memcpy(buf, head, strlen(head));
    pos = strlen(head);
    for (const char *p = conninfo; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f || pos + 4 >= len)
            return MRD_EINVAL;
        if (*p == '\'')
            buf[pos++] = '\'';
        buf[pos++] = *p;
    }
    buf[pos++] = '\'';
    buf[pos] = '\0';
    return 0;
}

void mrd__member_rejoin(mrd__member *m, const json_t *args, int64_t epoch, mrd__action_cb done,
                        void *data)
{
    action *x = action_new(m, done, data, "rejoin");
    if (!x)
        return;
    /* A replica that only has to follow the new primary: no hook, no restart
     * (primary_conninfo is reloadable since PostgreSQL 13; the new timeline
     * is followed with recovery_target_timeline = latest, the default). */
    const char *follow_to = json_string_value(json_object_get(args, "primary_conninfo"));
    if (json_is_true(json_object_get(args, "follow")) && is_pg(m) && follow_to) {
        char sql[1200];
        if (m->role != MRD_MEMBER_REPLICA || follow_sql(sql, sizeof(sql), follow_to) != 0) {
            x->err = MRD_EINVAL;
            snprintf(x->msg, sizeof(x->msg), "%s",
                     m->role != MRD_MEMBER_REPLICA ? "not a replica: cannot just follow"
                                                   : "primary_conninfo cannot be written");
            action_end(x);
            return;
        }
        const char *const sqls[] = {sql, "SELECT pg_reload_conf()"};
        run_sql(x, sqls, 2, NULL);
        return;
    }
    enum { MAXENV = MRD_PROTO_MAX_ARGS + 12 };
    char *env[MAXENV] = {0};
    size_t n = 0;
    char num[32];
    snprintf(num, sizeof(num), "%lld", (long long)epoch);
    const char *conninfo = json_string_value(json_object_get(args, "primary_conninfo"));
    int rc = env_add(env, &n, MAXENV, "NEW_PRIMARY_CONNINFO", conninfo ? conninfo : "");
    rc = rc ? rc : env_add(env, &n, MAXENV, "MERIDIAN_SERVICE", m->cfg->service);
    rc = rc ? rc : env_add(env, &n, MAXENV, "MERIDIAN_MEMBER", m->cfg->name);
    rc = rc ? rc : env_add(env, &n, MAXENV, "MERIDIAN_EPOCH", num);
    if (m->cfg->conninfo)
        rc = rc ? rc : env_add(env, &n, MAXENV, "MERIDIAN_CONNINFO", m->cfg->conninfo);
    if (m->cfg->data_dir)
        rc = rc ? rc : env_add(env, &n, MAXENV, "PGDATA", m->cfg->data_dir);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)args, k, v)
    {
        char key[MRD_PROTO_NAME_MAX + 16], val[64];
        const char *sval = NULL;
        size_t kl = (size_t)snprintf(key, sizeof(key), "MERIDIAN_ARG_%s", k);
        for (size_t i = 13; i < kl && i < sizeof(key); i++) {
            char c = key[i];
            key[i] = (c >= 'a' && c <= 'z')                               ? (char)(c - 32)
                     : ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) ? c
                                                                          : '_';
        }
        if (json_is_string(v)) {
            sval = json_string_value(v);
        } else if (json_is_integer(v)) {
            snprintf(val, sizeof(val), "%lld", (long long)json_integer_value(v));
            sval = val;
        } else if (json_is_boolean(v)) {
            sval = json_is_true(v) ? "true" : "false";
        }
        if (sval && !rc)
            rc = env_add(env, &n, MAXENV, key, sval);
    }
    if (rc) {
        x->err = rc;
        snprintf(x->msg, sizeof(x->msg), "out of memory");
        action_end(x);
    } else {
        run_exec(x, m->cfg->rejoin_cmd, (const char *const *)env);
    }
    for (size_t i = 0; i < n; i++)
        free(env[i]);
}

/* ---- start / stop ---- */

int mrd__members_start(mrd__agent *a)
{
    a->members = calloc(a->cfg.nmembers + 1, sizeof(*a->members));
    if (!a->members)
        return MRD_ENOMEM;
    for (size_t i = 0; i < a->cfg.nmembers; i++) {
        mrd__member *m = &a->members[i];
        m->agent = a;
        m->cfg = &a->cfg.members[i];
        m->lag_bytes = m->lag_ms = -1;
        if (mrd__peer_set_init(a, m))
            return MRD_ENOMEM;
        a->nmembers++;
        char path[1200];
        demoted_path(m, path, sizeof(path));
        m->demoted = access(path, F_OK) == 0;
        if (m->demoted) {
            m->fenced = 1;
            mrd_log(MRD_LOG_WARN, "member was demoted by its fence: reported fenced",
                    MRD_S("member", m->cfg->name));
        }
        /* Leases granted before a restart are forgotten with it: promise
         * them anyway by refusing to promote for one lease length. */
        m->grants.granted_until_ms = mrd__now_ms(a) + a->cfg.isolation_timeout_ms;
        uv_timer_init(a->loop, &m->wait_timer);
        m->wait_timer.data = m;
        if (is_pg(m)) {
            mrd_pg_options o = {0};
            o.conninfo = m->cfg->conninfo;
            o.query_timeout_ms = a->cfg.request_timeout_ms;
            o.connect_timeout_ms = a->cfg.request_timeout_ms;
            o.reconnect_max_ms = a->cfg.heartbeat_ms;
            int rc = mrd_pg_start(&m->pg, a->loop, &o);
            if (rc)
                return rc;
            o.query_timeout_ms = m->cfg->promote_timeout_ms + 10000;
            if (o.query_timeout_ms < m->cfg->command_timeout_ms)
                o.query_timeout_ms = m->cfg->command_timeout_ms;
            rc = mrd_pg_start(&m->action_pg, a->loop, &o);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static void member_closed(void *arg)
{
    mrd__agent_handle_closed(arg);
}

static void timer_closed(uv_handle_t *h)
{
    mrd__member *m = h->data;
    mrd__agent_handle_closed(m->agent);
}

void mrd__members_stop(mrd__agent *a)
{
    for (size_t i = 0; i < a->nmembers; i++) {
        mrd__member *m = &a->members[i];
        a->open_handles++;
        uv_close((uv_handle_t *)&m->wait_timer, timer_closed);
        if (m->pg) {
            a->open_handles++;
            mrd_pg_stop(m->pg, member_closed, a);
            m->pg = NULL;
        }
        if (m->action_pg) {
            a->open_handles++;
            mrd_pg_stop(m->action_pg, member_closed, a);
            m->action_pg = NULL;
        }
    }
}
