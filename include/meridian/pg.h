/*
 * PostgreSQL on libuv: one libpq connection in non-blocking mode, watched
 * with uv_poll on PQsocket(). Queries are queued and run one at a time, in
 * order, with parameters only (PQsendQueryParams; no string building of
 * SQL). When the server goes away every query in flight or queued fails
 * with MRD_ESTORE, and the connection is re-established with exponential
 * backoff (reconnect_min_ms .. reconnect_max_ms); on_state reports each
 * change. A query that runs longer than query_timeout_ms is cancelled and
 * the connection is reset (a hung store must not hang the caller).
 *
 * One statement per query: where several writes must be atomic, the SQL
 * calls a function from sql/ or uses a CTE, so each call is one implicit
 * transaction.
 */
#ifndef MERIDIAN_PG_H
#define MERIDIAN_PG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mrd_pg mrd_pg;

/* err == 0: res is PGRES_TUPLES_OK or PGRES_COMMAND_OK.
 * err == MRD_EIO: the server answered with an error; res holds it
 *   (PQresultErrorField(res, PG_DIAG_SQLSTATE), PQresultErrorMessage).
 * err == MRD_ESTORE: connection lost or unavailable; res is NULL.
 * err == MRD_ETIMEOUT: query_timeout_ms passed; res is NULL.
 * err == MRD_ECLOSED: mrd_pg_stop was called; res is NULL.
 * res is freed by mrd_pg when the callback returns. */
typedef void (*mrd_pg_result_cb)(int err, PGresult *res, void *data);
typedef void (*mrd_pg_state_cb)(mrd_pg *pg, int connected, void *data);
/* A NOTIFY on a channel this connection LISTENs to (send "LISTEN name" as a
 * query after each on_state(1): a new connection listens to nothing). */
typedef void (*mrd_pg_notify_cb)(mrd_pg *pg, const char *channel, const char *payload, void *data);

typedef struct {
    const char *conninfo;
    uint64_t reconnect_min_ms;   /* default 100 */
    uint64_t reconnect_max_ms;   /* default 2000 */
    uint64_t connect_timeout_ms; /* default 3000 */
    uint64_t query_timeout_ms;   /* default 5000 */
    size_t max_queue;            /* default 10000; beyond, mrd_pg_query fails MRD_ETOOBIG */
    mrd_pg_state_cb on_state;
    mrd_pg_notify_cb on_notify; /* may be NULL: notifications are dropped */
    void *data;
} mrd_pg_options;

/* Starts connecting at once (asynchronously). Returns 0 and sets *out, or
 * MRD_ENOMEM/MRD_EINVAL. */
int mrd_pg_start(mrd_pg **out, uv_loop_t *loop, const mrd_pg_options *opt);
/* Queues a query; sql and params are copied. Returns 0 (cb will run exactly
 * once), MRD_ESTORE when not connected (cb will not run), MRD_ETOOBIG when
 * the queue is full. params may contain NULL for SQL NULL. */
int mrd_pg_query(mrd_pg *pg, const char *sql, int nparams, const char *const *params,
                 mrd_pg_result_cb cb, void *data);
int mrd_pg_connected(const mrd_pg *pg);
/* Queries queued or in flight. */
size_t mrd_pg_pending(const mrd_pg *pg);
/* Fails everything queued with MRD_ECLOSED, closes the connection and the
 * handles; closed(arg) runs when memory is released. */
void mrd_pg_stop(mrd_pg *pg, void (*closed)(void *arg), void *arg);

#endif
