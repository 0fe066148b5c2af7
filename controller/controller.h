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
#include "meridian/config.h"
#include "meridian/decide.h"
#include "meridian/opfsm.h"
#include "meridian/http_server.h"
#include "meridian/log.h"
#include "meridian/metrics.h"
#include "meridian/http_client.h"
#include "meridian/metrics.h"
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
    unsigned http_max_connections; /* 0: from the fd limit */
    unsigned http_max_per_client;
    uint64_t http_header_timeout_ms;
    char agent_token[512]; /* to wake agents up (POST /v1/agent/poke) */
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
    /* Highest term held or read: a new tenure starts above it, even if the
     * store came back with less (its standby lacked the last transactions). */
    int64_t max_term_seen;
    int term_back_logged; /* "lower term" logged once */
} mrd_lease_state;

/* Regions and services from the configuration (controller/services.c). */
typedef struct {
    char name[MRD_NAME_MAX];
    int priority;
} mrd__region;

typedef struct {
    char name[MRD_NAME_MAX];
    char node[MRD_NAME_MAX];
    char region[MRD_NAME_MAX];
    char conninfo[512]; /* how a replica reaches it when it is primary */
} mrd__member_cfg;

/* A node of the optional "nodes" section (controller/peers.c). */
#define MRD__URL_MAX 256
typedef struct {
    char name[MRD_NAME_MAX];
    char region[MRD_NAME_MAX];
    char agent_url[MRD__URL_MAX]; /* where its agent listens; "": not configured */
} mrd__node_cfg;

typedef struct {
    char name[MRD_NAME_MAX];
    char primary_region[MRD_NAME_MAX]; /* initial, when the store has none */
    char profile[16];
    mrd_policy policy;
    mrd__member_cfg *members;
    size_t nmembers;
    json_t *dns, *registry, *webhooks; /* borrowed from the config */
    /* run-time state of the leader (rebuilt by a new leader) */
    mrd_decision last; /* last automatic decision */
    int has_last;
    char last_alert[64];     /* reason of the last alert logged, to log changes only */
    uint64_t registry_epoch; /* epoch the registry driver confirmed */
    uint64_t dns_epoch;      /* epoch the DNS driver confirmed */
    int registry_busy, dns_busy;
    uint32_t registry_attempts, dns_attempts;
    char registry_error[256], dns_error[256];
    uint64_t driver_retry_ms;
    uint64_t reconcile_interval_ms; /* read-back of dns/registry; 0: default 30 s */
    int repair_drift;               /* write the desired state back on drift */
    uint64_t unfence_sent_ms; /* last recovery unfence of a self-fenced primary (store clock) */
    /* peer sets (controller/peers.c): JSON arrays for answers, owned */
    json_t *peers_all;     /* every member */
    json_t *peers_by_node; /* node -> every member but the one on that node */
    /* the current primary's reported set against the configuration (leader) */
    int peer_known;         /* the primary reported the set it requires */
    int peer_missing;       /* configured members it does not require */
    int peer_unknown;       /* peers it requires that the configuration does not know */
    char peer_alerted[256]; /* signature of the mismatch last alerted ("": none) */
    uint64_t peer_alert_ms; /* when (store clock) */
    /* The store's epoch below one an agent reported (controller/tick.c): the
     * leader decides nothing for the service until it caught the store up. */
    uint64_t epoch_reported;              /* highest reported while above the store's; 0: none */
    uint64_t epoch_store;                 /* the store's epoch then */
    uint64_t epoch_behind_since_ms;       /* store clock of the detection */
    char epoch_reported_by[MRD_NAME_MAX]; /* node that reported it */
    int epoch_catchup_busy;               /* the catch-up statement runs */
    uint64_t epoch_behind_total;          /* detections */
    uint64_t epoch_catchups_total;        /* catch-ups the store committed */
    /* divergence detected by this controller as leader (diverge.c; metrics) */
    uint64_t diverged_ops, diverged_bytes;
} mrd__service;

/* Heartbeat ingest (controller/ingest.c). */
typedef struct mrd__waiter mrd__waiter;
typedef struct {
    json_t *batch;        /* node name -> {node, members, results}: latest per node */
    mrd__waiter *waiters; /* heartbeats waiting for the batch being built */
    size_t batch_rows;
    int flushing;              /* a flush query runs */
    int urgent;                /* the batch holds an urgent heartbeat: flush and notify now */
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
    mrd_http_route *routes;       /* the API's routing table; owned */
    mrd_http_client *http_client; /* pokes, cutover drivers */
    json_t *poked;                /* node -> monotonic ms of the last poke */
    mrd_pg *pg;
    /* Heartbeat flushes only: a primary's heartbeat waits for its flush to
     * commit, and must not queue behind the leader's snapshot queries. */
    mrd_pg *pg_ingest;

    /* Migrations run on the thread pool with a blocking connection. */
    uv_work_t migrate_work;
    int migrate_running;
    int migrated;
    int migrate_rc;
    char migrate_err[256];
    uint64_t migrate_next_attempt;

    mrd_lease_state lease;
    mrd__ingest ingest;
    mrd__region *regions;
    size_t nregions;
    mrd__service *services;
    size_t nservices;
    mrd__node_cfg *nodes; /* the "nodes" section (controller/peers.c) */
    size_t nnodes;
    int nodes_given;    /* the section is present: members' nodes must be in it */
    json_t *peer_index; /* service -> [peers_all, peers_by_node] of its mrd__service (owned) */
    /* Leader tick (controller/tick.c). */
    int tick_running;
    uint64_t tick_next_ms;
    uint64_t tick_started_ms; /* monotonic, of the snapshot query in flight */
    uint64_t tick_query_ms;   /* how long the last snapshot query took */
    int64_t synced_term;      /* term in which regions/services were written */
    int synced_busy;
    json_t *snapshot;      /* last store snapshot the leader read */
    uint64_t snapshot_ms;  /* store clock of it */
    int tick_wanted;       /* something happened: tick as soon as possible */
    uint64_t heartbeat_ms; /* what agents are told to use */

    struct mrd__cutover *cutover; /* cutover drivers (controller/cutover_glue.c) */
    /* Data-sync checkpoints (controller/checkpoint_store.c): owned, created
     * by the first mrd__checkpoint_cron, freed when the controller stops. */
    struct mrd__ckpt_state *ckpt;

    uv_timer_t cron; /* the one periodic timer (serverCron style) */
    /* How late the cron fired: a late timer means the loop was busy (a long
     * callback delays every heartbeat answer by as much). */
    uint64_t cron_period_ms;
    uint64_t cron_last_ns;
    uint64_t loop_lag_max_ns;
    uint64_t loop_stalls[3]; /* fired over 20 ms, 100 ms, 1 s late */
    uv_signal_t sig_term, sig_int, sig_hup;
    const char *config_path; /* for reloads */
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
/* Refreshes the cache of epochs and commands now (after a NOTIFY). */
void mrd__ingest_refresh_now(mrd_ctl *ctl);
void mrd__ingest_heartbeat(mrd_http_request *req, mrd_http_response *res, void *data);
/* Adds a command to the in-memory cache at once (the leader, after it
 * committed it), so its agent gets it without waiting for a refresh. */
void mrd__ingest_cache_command(mrd_ctl *ctl, const char *node, json_t *command);

/* controller/services.c */
extern const mrd_cfg_schema mrd__region_schema;
extern const mrd_cfg_schema mrd__service_schema;
int mrd__services_load(mrd_ctl *ctl, const json_t *root, char *err, size_t errlen);
void mrd__services_free(mrd_ctl *ctl);
mrd__service *mrd__service_find(mrd_ctl *ctl, const char *name);
const mrd__member_cfg *mrd__member_by_node(const mrd__service *s, const char *node);
const mrd__member_cfg *mrd__member_by_region(const mrd__service *s, const char *region);
int mrd__region_priority(const mrd_ctl *ctl, const char *region);
/* Writes regions and services into the store (guarded by the lease). */
void mrd__services_sync(mrd_ctl *ctl);

/* Copies the run-time state of a service (last decision, cutover progress)
 * into its counterpart of a reloaded configuration. */
void mrd__service_carry(mrd__service *to, const mrd__service *from);

/* controller/reload.c: SIGHUP. Returns 0 when the new file was applied, -1
 * when it was refused (logged; the running configuration stays). */
int mrd__reload(mrd_ctl *ctl, const char *path);

/* controller/tick.c */
void mrd__tick_cron(mrd_ctl *ctl, uint64_t now);
/* Builds the view of one service from the last snapshot. Returns 0, or
 * MRD_ENOTFOUND when the leader has no snapshot of it yet. */
int mrd__view_build(mrd_ctl *ctl, const mrd__service *s, mrd_view *v, uint64_t *now_ms);
/* The API URL the node's agent last reported (leader's snapshot), or NULL. */
const char *mrd__snapshot_node_url(mrd_ctl *ctl, const char *node);
/* The service's row in the leader's last snapshot, or NULL. */
json_t *mrd__snapshot_service(mrd_ctl *ctl, const char *name);
/* A member's row in the leader's last snapshot, or NULL. */
json_t *mrd__snapshot_member(mrd_ctl *ctl, const char *service, const char *member);
/* The leader's epoch guard of a service as the API shows it ({"state":
 * "refusing_to_decide", "store_epoch", "reported_epoch", "reported_by",
 * "since_ms", "catching_up"}), or NULL when the store's epoch is not below an
 * agent's or this controller is not the leader. New reference. */
json_t *mrd__epoch_guard_json(mrd_ctl *ctl, const mrd__service *s);
/* Starts an operation (persisted, guarded). cb gets 0 and the new op id, or
 * an error (MRD_ECONFLICT: one runs already / the epoch moved; MRD_ENOTLEADER). */
typedef void (*mrd__op_created_cb)(int err, const char *op_id, const char *detail, void *data);
void mrd__op_create(mrd_ctl *ctl, mrd__service *s, mrd_op_kind kind, const char *to_region,
                    const char *to_node, int force, uint64_t expect_epoch, const char *actor,
                    const char *reason, const char *idempotency_key, mrd__op_created_cb cb,
                    void *data);
/* JSON form of an op (state column, API). */
json_t *mrd__op_to_json(const mrd_op *op);
int mrd__op_from_json(const json_t *j, mrd_op *op);

/* controller/diverge.c: did the old primary write after the promotion?
 * observe: for a running op, with the old member's snapshot row and the
 * op's commands; new figures are applied to *op (so a step persisted in the
 * same tick keeps them) and recorded in the store with an event on the
 * first detection. watch: the same for the finished ops the snapshot lists
 * in "diverge_watch" (rejoin still pending). */
void mrd__diverge_observe(mrd_ctl *ctl, const mrd__service *s, mrd_op *op, const json_t *old,
                          const json_t *cmds, uint64_t now);
void mrd__diverge_watch(mrd_ctl *ctl, json_t *snap, uint64_t now);

/* Appends an event to the audit log (fire and forget; detail is stolen). */
void mrd__event(mrd_ctl *ctl, const char *kind, const char *service, const char *actor,
                const char *message, json_t *detail);

/* controller/cutover_glue.c: drives the registry / DNS step of an operation
 * (called every tick while the op is in that step; idempotent). */
void mrd__cutover_drive(mrd_ctl *ctl, mrd__service *s, const mrd_op *op, mrd_op_action action,
                        uint64_t now);

/* 1 when the driver of the op's current step (registry or dns) is required
 * and refused the op's epoch with MRD_ESTALE (a fencing event): the step's
 * failure condition. */
int mrd__cutover_refused(mrd_ctl *ctl, mrd__service *s, const mrd_op *op);
/* Builds drivers on first use, pumps retries, webhooks and reconciliation
 * (leader only; state is reset when leadership changes). */
void mrd__cutover_cron(mrd_ctl *ctl, uint64_t now);
/* Closes every driver (pending callbacks then only free memory). */
void mrd__cutover_close(mrd_ctl *ctl);
/* The "drivers" object of GET /v1/services/{svc}: per driver the desired
 * and observed state, last verification, attempts, last error. New reference. */
json_t *mrd__cutover_json(mrd_ctl *ctl, const mrd__service *s);
/* Appends the cutover families (drift, repairs, fencing, errors, in_sync). */
void mrd__cutover_metrics(mrd_ctl *ctl, mrd_metrics_buf *b);

/* controller/peers.c: the "nodes" section and the peer sets. _load (after
 * mrd__services_load) validates nodes against the members and builds each
 * service's peer sets; returns 0, or MRD_ECONFIG / MRD_ENOMEM with "key:
 * why" in err. _node_agent_url: the configured URL of a node's agent, or
 * NULL. _peers_for: the peer set of the member of service on node (borrowed
 * JSON array; every member when the node has none), NULL for an unknown
 * service. _peers_view marks the members outside the current primary's
 * reported lease set; _peers_check compares that set with the configuration
 * (event when it differs, rate-limited); _peers_metrics: the gauges. */
extern const mrd_cfg_schema mrd__node_schema;
int mrd__nodes_load(mrd_ctl *ctl, const json_t *root, char *err, size_t errlen);
void mrd__nodes_free(mrd_ctl *ctl);
const mrd__node_cfg *mrd__node_find(const mrd_ctl *ctl, const char *name);
const char *mrd__node_agent_url(const mrd_ctl *ctl, const char *node);
json_t *mrd__peers_for(mrd_ctl *ctl, const char *service, const char *node);
void mrd__peers_view(mrd_ctl *ctl, const mrd__service *s, mrd_view *v);
void mrd__peers_check(mrd_ctl *ctl, mrd__service *s, const mrd_view *v, uint64_t now);
void mrd__peers_metrics(mrd_ctl *ctl, mrd_metrics_buf *b);

/* controller/poke.c: asks a node's agent for a heartbeat now. */
void mrd__poke(mrd_ctl *ctl, const char *node, int with_commands);
/* controller/checkpoint_store.c: data-sync checkpoints (see controller/README.md).
 * Called by cron(): creates the state on first call; the leader creates
 * automatic checkpoints, marks reached regions and lost checkpoints, applies
 * retention; every controller re-checks waiting long-polls. */
void mrd__checkpoint_cron(mrd_ctl *ctl, uint64_t now);
/* Records the barrier of an operation's catchup step as a checkpoint of kind
 * 'barrier' (fire and forget; idempotent per operation_id, so it may be
 * called at every tick of the step). epoch: the operation's epoch. Returns 0
 * when the insert was queued, MRD_EINVAL (bad arguments) or MRD_ESTORE (not
 * queued; call again). */
int mrd__checkpoint_record_barrier(mrd_ctl *ctl, const char *service, uint64_t epoch,
                                   uint64_t position, const char *operation_id);
/* Writes the gauges meridian_recovery_point_age_seconds and
 * meridian_replication_lag_bytes {service, region} from the last refresh
 * (nothing before the first one). Errors are left in b->err. */
void mrd__checkpoint_metrics(mrd_ctl *ctl, mrd_metrics_buf *b);
/* controller/api_checkpoints.c: the checkpoint routes, merged by api.c. */
const mrd_http_route *mrd__api_checkpoints_routes(size_t *n);

/* controller/api.c, controller/api_ops.c */
int mrd__api_start(mrd_ctl *ctl);
const mrd_http_route *mrd__api_ops_routes(size_t *n);
/* Runs a query whose single value is the JSON answer and sends it: 200, 404
 * (not_found message, or "not found") when it yields no row or NULL, 500 on
 * an SQL error, 503 without a store. */
void mrd__api_respond_query(mrd_ctl *ctl, mrd_http_response *res, const char *sql, int n,
                            const char *const *params, const char *not_found);
/* The configured service named by the {svc} path parameter, or NULL after
 * answering 404. */
mrd__service *mrd__api_service_or_404(mrd_ctl *ctl, mrd_http_request *req, mrd_http_response *res);
/* Adds "services" (primary, epoch, members with health and lag, running
 * operation) to body from the store and answers 200 with it; without a
 * store, answers body with "services": null. Steals body. */
void mrd__api_status_services(mrd_ctl *ctl, mrd_http_response *res, json_t *body);
/* controller/metrics_ctl.c */
const mrd_http_route *mrd__metrics_routes(size_t *n);

#endif
