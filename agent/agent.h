/*
 * meridian-agent: the one context struct of the program and the internal
 * interfaces between its modules (see agent/README.md for how they fit).
 *
 *   agent_config.c  JSON configuration -> mrd__agent_config (validated)
 *   exec.c          child processes with timeout, kill and bounded output
 *   checks.c        scheduled checks and cross-region probes
 *   pg_probe.c      one postgresql probe: new connection + query, one timeout
 *   member.c        PostgreSQL/exec members: replication state and actions
 *   pg_demote.c     fence mode demote: stop/kill, confirm gone, start as standby
 *   commands.c      controller commands: epoch fencing, at-most-once, results
 *   peer.c          peer lease API (server) and lease renewal (client)
 *   heartbeat.c     heartbeat to the controllers, answer processing, and the
 *                   self-fencing tick
 *   main.c          arguments, signals, start and graceful stop
 *
 * Everything runs on one libuv loop; no module blocks except the epoch file's
 * small synchronous fsync'd writes.
 */
#ifndef MERIDIAN_AGENT_AGENT_H
#define MERIDIAN_AGENT_AGENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "epoch_store.h"
#include "lease.h"
#include "meridian/auth.h"
#include "meridian/http_client.h"
#include "meridian/http_server.h"
#include "meridian/pg.h"
#include "meridian/protocol.h"

/* ---- configuration ---- */

/* demote: stop (kill after fence_timeout_ms), start as a standby (pg_demote.h);
 * read_only: default_transaction_read_only (a session can BEGIN READ WRITE);
 * stop/exec: the configured command. */
typedef enum {
    MRD__FENCE_READ_ONLY = 0,
    MRD__FENCE_STOP,
    MRD__FENCE_EXEC,
    MRD__FENCE_DEMOTE
} mrd__fence_mode;

typedef struct {
    const char *service;
    const char *name;
    const char *kind; /* "postgresql" or "exec" */
    const char *conninfo;
    mrd__fence_mode fence_mode;
    const char **fence_cmd;    /* NULL-terminated argv, or NULL */
    const char **unfence_cmd;  /* stop/exec modes; NULL: none */
    const char **promote_cmd;  /* exec members */
    const char **rejoin_cmd;   /* hook; NULL: rejoin fails "no rejoin command" */
    const char **status_cmd;   /* exec members: prints primary|replica|fenced */
    const char *data_dir;      /* passed to hooks as PGDATA; NULL: learnt from the server */
    const char *pg_bindir;     /* demote: pg_ctl's directory; NULL: the postmaster's */
    uint64_t fence_timeout_ms; /* demote: fast shutdown before SIGKILL */
    uint64_t promote_timeout_ms;
    uint64_t command_timeout_ms;
} mrd__member_cfg;

typedef enum {
    MRD__CHECK_PG = 0,
    MRD__CHECK_HTTP,
    MRD__CHECK_TCP,
    MRD__CHECK_EXEC
} mrd__check_kind;

typedef struct {
    const char *name;
    mrd__check_kind kind;
    uint64_t interval_ms;
    uint64_t timeout_ms;
    int critical;                 /* weight: 1 critical, 0 warning */
    const char *member;           /* member whose health it decides; NULL: every member */
    const char *conninfo, *query; /* postgresql */
    const char *url;              /* http */
    int expect_status;            /* http; 0: any 2xx */
    const char *expect_body;      /* http: the body must contain it; NULL: any */
    const char *host;             /* tcp */
    int port;                     /* tcp */
    const char **argv;            /* exec */
    /* probes: the target as reported in heartbeats (a postgresql probe's
     * conninfo without its password and other options) */
    char shown_target[MRD_PROTO_TARGET_MAX];
} mrd__check_cfg;

typedef struct {
    const char *name;
    const char *url;       /* base URL of the peer's agent, e.g. http://127.0.0.1:7071 */
    const char *token;     /* bearer token the peer accepts */
    const char **services; /* NULL-terminated; NULL: every service */
} mrd__peer_cfg;

typedef struct {
    json_t *root; /* owns every string below */
    const char *node, *region, *token, *state_dir, *log_level;
    const char **controllers; /* NULL-terminated */
    size_t ncontrollers;
    uint64_t heartbeat_ms, isolation_timeout_ms, request_timeout_ms;
    char listen_host[64];
    int listen_port;                    /* -1: no peer API */
    char api_url[MRD_PROTO_TARGET_MAX]; /* where controllers poke us ("": nowhere) */
    json_t *peer_tokens;                /* borrowed from root; for mrd_auth_init */
    const char *peer_token; /* token for a peer the controller names and no entry of peers
                               configures; NULL: none (no lease requested from it) */
    mrd__peer_cfg *peers;
    size_t npeers;
    mrd__member_cfg *members;
    size_t nmembers;
    mrd__check_cfg *checks;
    size_t nchecks;
    mrd__check_cfg *probes; /* probes reuse tcp/http/postgresql checks; name = region */
    size_t nprobes;
} mrd__agent_config;

/* Validates and loads the configuration from a parsed JSON object (a new
 * reference is taken). Returns 0, or MRD_ECONFIG / MRD_ENOMEM with "path:
 * why" in err; nothing allocated on failure. */
int mrd__agent_config_from_json(mrd__agent_config *cfg, json_t *root, char *err, size_t errlen);
/* Same from a file. */
int mrd__agent_config_load(mrd__agent_config *cfg, const char *path, char *err, size_t errlen);
void mrd__agent_config_free(mrd__agent_config *cfg);

/* ---- exec ---- */

typedef struct mrd__exec mrd__exec;
/* status: exit code (>= 0), or -1 when killed (signal or timeout), -2 when
 * the program could not be started. output: stdout+stderr, at most
 * max_output bytes (a longer output keeps its head, "\n...\n" and its last
 * max_output/2 bytes), NUL-terminated, valid during the callback. */
typedef void (*mrd__exec_cb)(int status, int timed_out, const char *output, void *data);

/* Starts argv[0] (a path) with the agent's environment plus env (NULL-
 * terminated "K=V" list, may be NULL), in its own process group. After
 * timeout_ms the whole group is killed (SIGKILL). Returns 0 (cb runs once,
 * later), or a negative MRD_E* when argv is empty or out of memory (cb does
 * not run). A program that does not exist is reported through cb with -2.
 * *out (may be NULL) receives the child for mrd__exec_kill. */
int mrd__exec_start(uv_loop_t *loop, const char *const *argv, const char *const *env,
                    uint64_t timeout_ms, size_t max_output, mrd__exec_cb cb, void *data,
                    mrd__exec **out);
/* Same, run in cwd (NULL: the agent's) as uid/gid (-1: unchanged; libuv
 * drops the supplementary groups when either is set). */
int mrd__exec_start_as(uv_loop_t *loop, const char *const *argv, const char *const *env,
                       const char *cwd, int64_t uid, int64_t gid, uint64_t timeout_ms,
                       size_t max_output, mrd__exec_cb cb, void *data, mrd__exec **out);
/* Kills the process group of a running child at once (stop); its callback
 * still runs (status -1). e is the *out of mrd__exec_start, valid until the
 * callback has run. */
void mrd__exec_kill(mrd__exec *e);

/* ---- runtime state ---- */

typedef struct mrd__agent mrd__agent;
typedef struct mrd__member mrd__member;

/* The peers a primary member must hold leases from: the controller's peer set
 * of its service (last answer that carried one) plus every configured peer
 * serving the service (peer.c). */
#define MRD__MAX_PEERS (2 * MRD_PROTO_MAX_PEERS)
typedef struct {
    char name[MRD_PROTO_NAME_MAX];   /* the peer's node (controller) or configured name */
    char member[MRD_PROTO_NAME_MAX]; /* its member of the service ("": configured only) */
    char url[MRD_PROTO_TARGET_MAX];  /* its agent's base URL ("": none known) */
    const char *token;               /* bearer token it accepts (borrowed); NULL: none */
    int from_controller, from_config;
    int listed;     /* in the current set; else kept only while a request is in flight */
    uint64_t until; /* lease end (requester clock); 0: none */
    int busy;       /* a lease request is in flight */
    int logged;     /* a warning about this entry was logged (once per entry) */
} mrd__peer_state;

typedef struct {
    mrd__agent *agent;
    const mrd__check_cfg *cfg;
    int is_probe;
    uv_timer_t timer;
    int in_flight;
    uint64_t started_ms;
    int have_result;
    int ok;
    mrd_check_status status;
    char output[MRD_PROTO_OUTPUT_MAX];
    uint64_t duration_ms;
    double latency_ms;
    mrd_pg *pg; /* postgresql checks (not probes): a persistent reconnecting connection */
} mrd__check;

/* A command waiting for or in execution on one member. */
typedef struct mrd__pending_cmd {
    struct mrd__pending_cmd *next;
    char id[MRD_PROTO_ID_MAX];
    mrd_cmd_kind kind;
    int64_t epoch;
    json_t *args;
} mrd__pending_cmd;

struct mrd__member {
    mrd__agent *agent;
    const mrd__member_cfg *cfg;
    mrd_pg *pg;        /* status queries (short timeout) */
    mrd_pg *action_pg; /* fence/unfence/promote (long timeout) */
    /* last observed state */
    int status_ok; /* last status query succeeded */
    int status_in_flight;
    mrd_member_role role;
    int fenced; /* read-only, stopped or fenced by exec */
    int64_t timeline, position, receive_position, replay_position, replay_timestamp_ms;
    int64_t lag_bytes, lag_ms;
    mrd_hb_standby standbys[MRD_PROTO_MAX_STANDBYS]; /* its pg_stat_replication */
    size_t nstandbys;
    /* commands */
    mrd__pending_cmd *queue; /* FIFO */
    int busy;                /* a command executes */
    uv_timer_t wait_timer;   /* promote waiting for granted leases */
    /* failsafe */
    mrd__lease_grants grants; /* as granter (we are a replica) */
    mrd__peer_state *peers;   /* as requester: the peer set (MRD__MAX_PEERS entries) */
    size_t npeers;
    uint64_t lease_logged_ms;    /* last lease refusal logged at warn (rate limit) */
    int self_fenced;             /* this process fenced it for isolation */
    int self_fencing;            /* fence in progress */
    int64_t promoted_epoch;      /* epoch of the last promote this process carried out */
    uint64_t promote_started_ms; /* a promote executes since (0: none executes) */
    int demoted;                 /* fence mode demote held: reported fenced until unfence/rejoin */
    int soft_fenced;             /* fenced read_only by the isolation rule (undone the same way) */
    char learnt_data_dir[1024];  /* SHOW data_directory, while the server answered */
    int data_dir_in_flight;
};

typedef struct {
    char service[MRD_PROTO_NAME_MAX];
    int64_t epoch;
    char primary_region[MRD_PROTO_NAME_MAX];
    int64_t primary_position;
    char primary_member[MRD_PROTO_NAME_MAX];
    int have_peers;     /* the answer carried the service's peer set */
    mrd_hb_peer *peers; /* owned (heap); npeers entries */
    size_t npeers;
} mrd__service_view;

struct mrd__agent {
    uv_loop_t *loop;
    mrd__agent_config cfg;
    mrd__epoch_store *epochs;
    mrd_http_client *http;
    mrd_http_server *server;
    unsigned http_max_connections; /* the peer API's cap, from the fd limit */
    mrd_auth *auth;
    uv_timer_t hb_timer;
    uv_timer_t tick_timer;
    uv_signal_t sigterm, sigint;
    mrd__member *members;
    size_t nmembers;
    mrd__check *checks;
    size_t nchecks;
    mrd__check *probes;
    size_t nprobes;
    /* results to report until acknowledged */
    mrd_hb_result *results;
    size_t nresults;
    /* controller view from the last answer */
    mrd__service_view *services;
    size_t nservices;
    /* heartbeat */
    uint64_t heartbeat_ms;
    int64_t seq;
    size_t controller; /* index of the controller in use */
    int hb_in_flight;
    int beat_asap;      /* send a heartbeat as soon as the members' state is fresh */
    int beat_urgent;    /* the next heartbeat is urgent (after a command or a poke) */
    size_t hb_attempts; /* controllers tried for the current beat */
    uint64_t hb_sent_ms;
    int have_contact;
    uint64_t last_contact_ms; /* monotonic send time of the last recorded beat */
    int first_round_done;     /* self-fencing starts after the first beat */
    uint64_t started_ms;      /* ... and a poll and a lease round after start */
    uint64_t tick_last_ms;    /* when the self-fencing tick last ran (stall detection) */
    int stopping;
    int exit_code;
    size_t open_handles; /* closed asynchronously during stop */
};

/* Copies src into dst (size bytes), truncating; always NUL-terminates. */
static inline void mrd__strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Monotonic ms of the loop (updated) and wall-clock Unix ms. */
uint64_t mrd__now_ms(mrd__agent *a);
int64_t mrd__wall_ms(void);

/* checks.c: start the timers of every check and probe (returns 0, or
 * MRD_ENOMEM / an error of mrd_pg_start; what started is in a->checks and
 * a->probes, for _stop) / stop them (handles closed asynchronously;
 * a->open_handles counts them down). */
int mrd__checks_start(mrd__agent *a);
void mrd__checks_stop(mrd__agent *a);
/* Whether a member is healthy by its checks (every critical check that
 * applies to it passing; a check not run yet counts as passing). */
int mrd__checks_member_healthy(const mrd__agent *a, const char *member);

/* pg_probe.c: one postgresql probe run: a new connection, the query (NULL
 * or "": SELECT 1), closed again, all within timeout_ms. cb runs exactly
 * once with ok and a one-line message (valid during the call): before this
 * returns on an immediate failure (bad conninfo, out of memory), else from
 * the loop, at the latest when timeout_ms has passed. conninfo and query
 * must stay valid until cb has run. */
typedef void (*mrd__pg_probe_cb)(int ok, const char *message, void *data);
void mrd__pg_probe_run(uv_loop_t *loop, const char *conninfo, const char *query,
                       uint64_t timeout_ms, mrd__pg_probe_cb cb, void *data);

/* member.c: start the members' connections (returns 0, or MRD_ENOMEM / an
 * error of mrd_pg_start; a->nmembers counts what started, for _stop) / close
 * them (asynchronously, counted in a->open_handles). */
int mrd__members_start(mrd__agent *a);
void mrd__members_stop(mrd__agent *a);
/* Queries the replication state of every member (async, at most one query
 * in flight per member). */
void mrd__members_poll(mrd__agent *a);
/* Actions: each calls done exactly once, later or (on an immediate failure
 * such as no connection) before returning. err: 0 on success, else a
 * negative MRD_E* with a message. position: for the fence of a PostgreSQL
 * member, pg_current_wal_lsn once fenced (0: unknown). */
typedef void (*mrd__action_cb)(mrd__member *m, int err, const char *message, int64_t position,
                               void *data);
void mrd__member_fence(mrd__member *m, mrd__action_cb done, void *data);
/* The isolation rule's fence of a PostgreSQL member: read_only whatever the
 * configured mode (exec members: their fence_cmd). Reversible at once by
 * the leader's unfence when the member is heard again and still primary;
 * a primary that learns it was superseded gets the configured, hard fence. */
void mrd__member_fence_soft(mrd__member *m, mrd__action_cb done, void *data);
void mrd__member_unfence(mrd__member *m, mrd__action_cb done, void *data);
void mrd__member_promote(mrd__member *m, mrd__action_cb done, void *data);
void mrd__member_rejoin(mrd__member *m, const json_t *args, int64_t epoch, mrd__action_cb done,
                        void *data);
/* The member by service and name / this node's member of a service; NULL
 * when none. */
mrd__member *mrd__member_find(mrd__agent *a, const char *service, const char *name);
mrd__member *mrd__member_of_service(mrd__agent *a, const char *service);

/* commands.c. _handle: a command from an answer or a poke: recorded in the
 * epoch file, then queued on its member, refused (stale epoch), answered
 * from the file (seen before) or dropped when the file cannot be written
 * (the controller resends); cannot fail otherwise. _ack: forget the results
 * the controller has stored. _add: (re)place a result to report and ask for
 * a heartbeat now. _stop: drop the commands not started yet (they read
 * "failed" after a restart). */
void mrd__commands_handle(mrd__agent *a, const mrd_hb_command *cmd);
void mrd__results_ack(mrd__agent *a, const mrd_hb_ack *ack, size_t nack);
void mrd__result_add(mrd__agent *a, const char *id, mrd_result_status status, const char *error,
                     int64_t epoch, int64_t position);
void mrd__commands_stop(mrd__agent *a);

/* peer.c: the agent's HTTP API (peer leases, controller pokes). _start
 * returns 0 (also without "listen": no API) or the error of mrd_auth_init /
 * mrd_http_server_start (nothing listens then); _stop is graceful. */
/* The peer API's connection caps: in all (lowered to what the fd limit
 * allows) and per client address (controllers and peers hold a few each). */
#define PEER_MAX_CONNECTIONS 1024
#define PEER_MAX_PER_CLIENT  64
int mrd__peer_server_start(mrd__agent *a);
void mrd__peer_server_stop(mrd__agent *a);
/* Requests leases from the peers for every primary member. */
void mrd__peer_renew(mrd__agent *a);
/* The lease ends (requester clock) of m's peer set, into untils (room for
 * MRD__MAX_PEERS); returns how many. */
size_t mrd__peer_untils(const mrd__agent *a, const mrd__member *m, uint64_t *untils);
/* _init: allocates m's peer set and fills it from the configuration (returns
 * 0 or MRD_ENOMEM). _refresh: rebuilds every member's set after an answer
 * (the controller's set plus the configured peers; lease state kept by
 * name). _report: fills x's leases_required / leases_held for a writable
 * primary (returns 0 or MRD_ENOMEM; x owns the lists). */
int mrd__peer_set_init(mrd__agent *a, mrd__member *m);
void mrd__peer_set_refresh(mrd__agent *a);
int mrd__peer_report(mrd__agent *a, const mrd__member *m, mrd_hb_member *x);

/* heartbeat.c: _start the heartbeat and self-fencing timers (returns 0);
 * _stop closes them. _service_find: the controller's view of a service
 * from the last answer, or NULL. */
int mrd__heartbeat_start(mrd__agent *a);
/* Refreshes the members' state and sends an urgent heartbeat as soon as it
 * is fresh (after a command, or when the leader pokes). */
void mrd__heartbeat_asap(mrd__agent *a);
/* Called when a status query ends: sends the beat asked for, if due. */
void mrd__heartbeat_asap_check(mrd__agent *a);
void mrd__heartbeat_stop(mrd__agent *a);
const mrd__service_view *mrd__service_find(const mrd__agent *a, const char *service);

/* Logs and marks the agent to stop with code; main.c's stop sequence. */
void mrd__agent_stop(mrd__agent *a, int code);
/* Called by modules when a handle they own has been closed during stop. */
void mrd__agent_handle_closed(mrd__agent *a);

#endif
