/*
 * meridian-controller's context: the one struct that holds every piece of
 * mutable state of the program (configuration, store connection, HTTP
 * server, leader lease, in-memory views). Internal to controller/; every
 * module of the controller takes a mrd_ctl *.
 */
#ifndef MERIDIAN_CONTROLLER_H
#define MERIDIAN_CONTROLLER_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "meridian/auth.h"
#include "meridian/http_server.h"
#include "meridian/log.h"
#include "meridian/pg.h"

typedef struct {
    char name[64];
    char region[64];
    char listen_host[64];
    int listen_port;
    char advertise_url[256];
    char *store; /* libpq conninfo; owned */
    uint64_t lease_ttl_ms;
    uint64_t tick_ms;
    int debug_endpoints;
    mrd_log_level log_level;
} mrd_ctl_config;

/* What this controller knows of the lease (controller/lease.c). */
typedef struct {
    int leader;            /* we believe we hold it ... */
    int64_t term;          /* ... in this term (last term we held, if not leader) */
    uint64_t valid_until;  /* ... until this monotonic ms (TTL minus margin after sending) */
    uint64_t next_attempt; /* monotonic ms of the next take/renew */
    int in_flight;         /* a take/renew query is running */
    /* The lease row as last read from the store. */
    int known;
    char holder[64], holder_region[64], holder_url[256];
    int64_t holder_term;
    uint64_t holder_expires_at; /* monotonic ms estimate */
    uint64_t acquired_count;
} mrd_lease_state;

/* Heartbeat ingest (controller/ingest.c). */
typedef struct mrd__waiter mrd__waiter;
typedef struct {
    json_t *batch;        /* node name -> {node, members, results}: latest per node */
    mrd__waiter *waiters; /* heartbeats waiting for the batch being built */
    size_t batch_rows;
    int flushing;              /* a flush query runs */
    uint64_t first_pending_ms; /* when the oldest unflushed entry arrived */
    uint64_t flush_failures;
    uint64_t heartbeats, heartbeats_recorded, rows_written, rejected;
    /* Cache refreshed from the store every tick: epochs, primaries, pending
     * commands. What every answer is built from. */
    json_t *services; /* name -> {epoch, primary_region, primary_position} */
    json_t *commands; /* node -> [command objects] */
    int cache_in_flight;
    uint64_t cache_next_ms;
    uint64_t cache_refreshed_ms;
} mrd__ingest;

typedef struct mrd_ctl {
    uv_loop_t *loop;
    mrd_ctl_config cfg;
    json_t *cfg_json; /* the loaded file; owned */
    mrd_auth *auth;
    mrd_http_server *http;
    mrd_pg *pg;

    /* Migrations run on the thread pool with a blocking connection. */
    uv_work_t migrate_work;
    int migrate_running;
    int migrated;
    int migrate_rc;
    char migrate_err[256];
    uint64_t migrate_next_attempt;

    mrd_lease_state lease;
    mrd__ingest ingest;
    uint64_t heartbeat_ms; /* what agents are told to use */

    uv_timer_t cron; /* the one periodic timer (serverCron style) */
    uv_signal_t sig_term, sig_int;
    int stopping;
    int exit_code;
} mrd_ctl;

/* Monotonic milliseconds (not the loop's cached time). */
uint64_t mrd__now_ms(void);

/* controller/config_ctl.c: loads and validates the controller config file.
 * Returns 0, or MRD_ECONFIG with a message naming the key in err. */
int mrd__ctl_config_load(mrd_ctl *ctl, const char *path, char *err, size_t errlen);
void mrd__ctl_config_free(mrd_ctl *ctl);

/* controller/store_migrate.c: blocking; applies missing migrations under an
 * advisory lock. Returns 0 and the number applied in *applied, or MRD_ESTORE
 * / MRD_EIO with a message in err. Safe to run concurrently from several
 * processes. */
int mrd__store_migrate(const char *conninfo, int *applied, char *err, size_t errlen);
/* Starts migrations on the thread pool if not migrated yet and none runs. */
void mrd__store_migrate_async(mrd_ctl *ctl);

/* controller/lease.c */
void mrd__lease_cron(mrd_ctl *ctl, uint64_t now);
/* 1 if this controller holds a lease that cannot have expired yet. */
int mrd__lease_is_leader(const mrd_ctl *ctl);
/* Gives the lease up (graceful stop); cb runs when done or failed. */
void mrd__lease_release(mrd_ctl *ctl, void (*cb)(void *), void *arg);

/* controller/ingest.c */
void mrd__ingest_init(mrd_ctl *ctl);
void mrd__ingest_close(mrd_ctl *ctl);
void mrd__ingest_cron(mrd_ctl *ctl, uint64_t now);
void mrd__ingest_heartbeat(mrd_http_request *req, mrd_http_response *res, void *data);
/* Adds a command to the in-memory cache at once (the leader, after it
 * committed it), so its agent gets it without waiting for a refresh. */
void mrd__ingest_cache_command(mrd_ctl *ctl, const char *node, json_t *command);

/* controller/api.c */
int mrd__api_start(mrd_ctl *ctl);

#endif
