/*
 * Schema migrations of the store. The migrations are embedded in the binary
 * (include/meridian/migrations.h); each runs in its own transaction together
 * with the row that records it in meridian.schema_migrations, so a crash
 * leaves either all of a migration or none of it. A session advisory lock
 * serialises controllers that start at the same time: the second waits,
 * then finds nothing left to do. Re-running is harmless.
 *
 * mrd__store_migrate() blocks (plain libpq); the controller calls it on the
 * libuv thread pool through mrd__store_migrate_async() and retries with the
 * cron until it succeeds, so a store that is down at start only delays
 * readiness.
 */
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "controller.h"
#include "meridian/error.h"
#include "meridian/migrations.h"

#define MIGRATE_LOCK_KEY "7244031001"

static int exec_ok(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : MRD_EIO;
}

int mrd__store_migrate(const char *conninfo, int *applied, char *err, size_t errlen)
{
    *applied = 0;
    err[0] = '\0';
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "cannot connect to the store: %s", PQerrorMessage(c));
        PQfinish(c);
        return MRD_ESTORE;
    }
    int rc = exec_ok(c, "SET client_min_messages = warning", err, errlen);
    if (rc == 0)
        rc = exec_ok(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", err, errlen);
    if (rc == 0)
        rc = exec_ok(c,
                     "CREATE SCHEMA IF NOT EXISTS meridian;"
                     "CREATE TABLE IF NOT EXISTS meridian.schema_migrations ("
                     " version int PRIMARY KEY, name text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())",
                     err, errlen);
    for (int i = 0; rc == 0 && i < mrd_migrations_count; i++) {
        const mrd_migration *m = &mrd_migrations[i];
        char version[16];
        snprintf(version, sizeof(version), "%d", m->version);
        const char *params[2] = {version, m->name};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM meridian.schema_migrations WHERE version = $1",
                                   1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "%s", PQresultErrorMessage(r));
            PQclear(r);
            rc = MRD_EIO;
            break;
        }
        int done = PQntuples(r) > 0;
        PQclear(r);
        if (done)
            continue;
        rc = exec_ok(c, "BEGIN", err, errlen);
        if (rc == 0) {
            rc = exec_ok(c, m->sql, err, errlen);
            if (rc != 0) {
                char detail[200];
                snprintf(detail, sizeof(detail), "%s", err);
                snprintf(err, errlen, "migration %s failed: %s", m->name, detail);
            }
        }
        if (rc == 0) {
            r = PQexecParams(c,
                             "INSERT INTO meridian.schema_migrations (version, name) "
                             "VALUES ($1, $2)",
                             2, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                snprintf(err, errlen, "%s", PQresultErrorMessage(r));
                rc = MRD_EIO;
            }
            PQclear(r);
        }
        if (rc == 0) {
            rc = exec_ok(c, "COMMIT", err, errlen);
            if (rc == 0) {
                (*applied)++;
                mrd_log(MRD_LOG_INFO, "migration applied", MRD_S("name", m->name));
            }
        } else {
            char ignore[8];
            exec_ok(c, "ROLLBACK", ignore, sizeof(ignore));
        }
    }
    char ignore[8];
    exec_ok(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", ignore, sizeof(ignore));
    PQfinish(c);
    return rc;
}

static void migrate_work(uv_work_t *w)
{
    mrd_ctl *ctl = w->data;
    int applied = 0;
    ctl->migrate_rc =
        mrd__store_migrate(ctl->cfg.store, &applied, ctl->migrate_err, sizeof(ctl->migrate_err));
}

static void migrate_after(uv_work_t *w, int status)
{
    mrd_ctl *ctl = w->data;
    ctl->migrate_running = 0;
    if (status == 0 && ctl->migrate_rc == 0) {
        ctl->migrated = 1;
        mrd_log(MRD_LOG_INFO, "store schema is current");
        return;
    }
    ctl->migrate_next_attempt = mrd__now_ms() + 1000;
    mrd_log(MRD_LOG_WARN, "store migration failed", MRD_S("error", ctl->migrate_err),
            MRD_S("hint", "retrying in 1 s"));
}

void mrd__store_migrate_async(mrd_ctl *ctl)
{
    if (ctl->migrated || ctl->migrate_running || ctl->stopping)
        return;
    if (mrd__now_ms() < ctl->migrate_next_attempt)
        return;
    ctl->migrate_running = 1;
    ctl->migrate_work.data = ctl;
    if (uv_queue_work(ctl->loop, &ctl->migrate_work, migrate_work, migrate_after) != 0) {
        ctl->migrate_running = 0;
        ctl->migrate_next_attempt = mrd__now_ms() + 1000;
    }
}
