/*
 * The agent protocol: heartbeats between meridian-agent and any controller,
 * and the peer leases agents grant each other (docs/design.md, peer leases).
 * Pure encode/decode with jansson into C structs; both directions of both
 * messages are here, so the agent and the controller share one definition.
 *
 * HEARTBEAT  POST /v1/agent/heartbeat   (Authorization: Bearer <agent token>)
 *
 * request
 *   {"node": "db-eu-1", "region": "eu", "seq": 42,
 *    "epochs":  {"orders": 7},                       highest epoch seen per service
 *    "checks":  [{"name": "pg", "status": "passing|warning|critical",
 *                 "output": "...", "duration_ms": 3}],
 *    "members": [{"service": "orders", "name": "orders-eu-1", "kind": "postgresql",
 *                 "role": "primary|replica|fenced|unknown", "fenced": false,
 *                 "timeline": 1,
 *                 "position": 123456,             primary: pg_current_wal_lsn (0: n/a)
 *                 "receive_position": 0,          replica: pg_last_wal_receive_lsn
 *                 "replay_position": 0,           replica: pg_last_wal_replay_lsn
 *                 "replay_timestamp_ms": 0,       last replayed commit, Unix ms (0: none)
 *                 "lag_bytes": 0, "lag_ms": 0,    null: unknown
 *                 "healthy": true,
 *                 "leases_required": ["db-us-1", "db-ap-1"],   writable primary only:
 *                 "leases_held": ["db-us-1"]}],                the peers (node names)
 *                                                  whose leases keep it writable
 *                                                  without a recorded contact, and
 *                                                  those it holds a valid lease from
 *    "probes":  [{"region": "us", "target": "10.0.0.1:5432", "ok": true,
 *                 "latency_ms": 1.5, "error": null}],
 *    "results": [{"id": "c-17", "status": "done|failed|refused", "error": null,
 *                 "epoch": 7, "position": 123456}],   position: optional, fence only
 *    "api_url": "http://10.0.0.5:7002",   optional: where the controller can
 *                                         POST /v1/agent/poke to get a heartbeat now
 *    "urgent": false}                     optional: sent at once after a command
 *                                         or a poke
 *
 * answer (200)
 *   {"recorded": true,                 the store committed this heartbeat
 *    "heartbeat_ms": 1000,             interval the agent should use
 *    "services": {"orders": {"epoch": 7, "primary_region": "eu", "primary_member": "orders-eu-1",
 *                            "primary_position": 123456,
 *                            "peers": [{"member": "orders-us-1", "node": "db-us-1",
 *                                       "agent_url": "http://10.0.2.21:7070"}]}},
 *                                      peers: every other configured member of the
 *                                      service, from the controller's configuration
 *                                      (agent_url null when it configures none); a
 *                                      primary of the service must hold a lease from
 *                                      each (optional: absent = not told)
 *    "commands": [{"id": "c-18", "service": "orders", "member": "orders-eu-1",
 *                  "kind": "fence|unfence|promote|rejoin", "epoch": 8,
 *                  "args": {"primary_conninfo": "..."}}],
 *    "ack": ["c-17"]}                  results the controller has stored: stop
 *                                      reporting them
 *
 * POKE  POST /v1/agent/poke   (agent port; Bearer <controller's agent token>)
 *
 * request  {"commands": [...]}         the node's pending commands, as in an
 *                                      answer; the agent handles them and
 *                                      sends a heartbeat ("urgent") at once
 * answer   {"ok": true, "accepted": 2}
 *
 * PEER LEASE  POST /v1/peer/lease   (agent port; Bearer <peer token>, role agent)
 *
 * request  {"service": "orders", "epoch": 7, "node": "db-eu-1", "ttl_ms": 4000}
 * answer   {"granted": true, "epoch": 7, "ttl_ms": 4000, "reason": null}
 *
 * A lease is a duration, not a wall-clock instant, so that no two clocks need
 * to agree: the granter keeps its promise until its own monotonic time of
 * receipt + ttl_ms; the requester counts it valid until its own monotonic time
 * of sending + ttl_ms, which is never later (an instant such as "until_ms"
 * would need the clocks to agree). "epoch" in the answer is
 * the highest epoch the granter has seen for the service.
 *
 * Decoding is strict: every known field is type- and bound-checked, strings
 * have maximum lengths and no control characters or NUL, arrays have maximum
 * sizes, and the first error names the field: "members[2].lag_bytes: must be
 * a non-negative integer". Unknown keys are ignored, so that a newer agent
 * can talk to an older controller. Positions and epochs are integers in
 * 0 .. 2^63-1 (JSON integers as jansson reads them).
 */
#ifndef MERIDIAN_PROTOCOL_H
#define MERIDIAN_PROTOCOL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Buffer sizes (the longest accepted string is one byte less). */
#define MRD_PROTO_NAME_MAX   128  /* node, region, service, member, check names */
#define MRD_PROTO_ID_MAX     64   /* command ids */
#define MRD_PROTO_KIND_MAX   32   /* member kind ("postgresql", "exec") */
#define MRD_PROTO_OUTPUT_MAX 1024 /* check output (agents truncate) */
#define MRD_PROTO_TARGET_MAX 256  /* probe target */
#define MRD_PROTO_ERROR_MAX  512  /* probe / result / lease error text */

/* Array limits; a longer array is refused ("members: at most 256 entries"). */
#define MRD_PROTO_MAX_EPOCHS      256
#define MRD_PROTO_MAX_CHECKS      256
#define MRD_PROTO_MAX_MEMBERS     256
#define MRD_PROTO_MAX_PROBES      64
#define MRD_PROTO_MAX_STANDBYS    8  /* per member: rows of pg_stat_replication */
#define MRD_PROTO_MAX_PEERS       64 /* per service (answer) / per member (leases) */
#define MRD_PROTO_ADDR_MAX        64
#define MRD_PROTO_STATE_MAX       32
#define MRD_PROTO_MAX_RESULTS     1024
#define MRD_PROTO_MAX_SERVICES    1024
#define MRD_PROTO_MAX_COMMANDS    256
#define MRD_PROTO_MAX_ACK         1024
#define MRD_PROTO_MAX_ARGS        32         /* keys in a command's args */
#define MRD_PROTO_ARG_STRING_MAX  4096       /* longest string value in args */
#define MRD_PROTO_MAX_DURATION_MS 86400000LL /* check duration, probe latency */
#define MRD_PROTO_MAX_TIMELINE    4294967295LL

typedef enum {
    MRD_CHECK_PASSING = 0,
    MRD_CHECK_WARNING,
    MRD_CHECK_CRITICAL,
} mrd_check_status;

typedef enum {
    MRD_MEMBER_UNKNOWN = 0,
    MRD_MEMBER_PRIMARY,
    MRD_MEMBER_REPLICA,
    MRD_MEMBER_FENCED,
} mrd_member_role;

typedef enum {
    MRD_CMD_FENCE = 0,
    MRD_CMD_UNFENCE,
    MRD_CMD_PROMOTE,
    MRD_CMD_REJOIN,
} mrd_cmd_kind;

typedef enum {
    MRD_RESULT_DONE = 0,
    MRD_RESULT_FAILED,
    MRD_RESULT_REFUSED,
} mrd_result_status;

/* Wire names ("passing", "primary", "fence", "done"); "?" when out of range. */
const char *mrd_check_status_name(mrd_check_status s);
const char *mrd_member_role_name(mrd_member_role r);
const char *mrd_cmd_kind_name(mrd_cmd_kind k);
const char *mrd_result_status_name(mrd_result_status s);
/* Parse a wire name; return 0 and set *out, or MRD_EINVAL (out untouched). */
int mrd_check_status_parse(const char *name, mrd_check_status *out);
int mrd_member_role_parse(const char *name, mrd_member_role *out);
int mrd_cmd_kind_parse(const char *name, mrd_cmd_kind *out);
int mrd_result_status_parse(const char *name, mrd_result_status *out);

typedef struct {
    char service[MRD_PROTO_NAME_MAX];
    int64_t epoch;
} mrd_hb_epoch;

typedef struct {
    char name[MRD_PROTO_NAME_MAX];
    mrd_check_status status;
    char output[MRD_PROTO_OUTPUT_MAX];
    int64_t duration_ms;
} mrd_hb_check;

/* A standby streaming from a member (one row of its pg_stat_replication):
 * "standbys" of a member on the wire, omitted when there is none. */
typedef struct {
    char name[MRD_PROTO_NAME_MAX];         /* application_name; may be "" */
    char address[MRD_PROTO_ADDR_MAX];      /* client_addr; "" for a unix socket */
    char state[MRD_PROTO_STATE_MAX];       /* startup, catchup, streaming, ... */
    char sync_state[MRD_PROTO_STATE_MAX];  /* async, potential, sync, quorum */
    int64_t sent_position, flush_position; /* 0: unknown (null on the wire) */
    int64_t replay_position;               /* 0: unknown */
    int64_t replay_lag_ms;                 /* -1: unknown (null on the wire) */
} mrd_hb_standby;

/* A name in a list (peer node names of a member's leases). */
typedef struct {
    char name[MRD_PROTO_NAME_MAX];
} mrd_hb_name;

typedef struct {
    char service[MRD_PROTO_NAME_MAX];
    char name[MRD_PROTO_NAME_MAX];
    char kind[MRD_PROTO_KIND_MAX];
    mrd_member_role role;
    int fenced;
    int64_t timeline;            /* 0: unknown */
    int64_t position;            /* primary's current position; 0: n/a */
    int64_t receive_position;    /* 0: n/a */
    int64_t replay_position;     /* 0: n/a */
    int64_t replay_timestamp_ms; /* Unix ms of the last replayed commit; 0: none */
    int64_t lag_bytes;           /* -1: unknown (null on the wire) */
    int64_t lag_ms;              /* -1: unknown (null on the wire) */
    int healthy;
    mrd_hb_standby standbys[MRD_PROTO_MAX_STANDBYS];
    size_t nstandbys;
    /* Peer leases of a writable primary (both lists heap-allocated, owned by
     * the request: mrd_hb_request_free). have_leases: "leases_required" was
     * sent (an empty list is a reported empty set); held only with it. */
    int have_leases;
    mrd_hb_name *leases_required; /* node names of the peers it must hold leases from */
    size_t nleases_required;
    mrd_hb_name *leases_held; /* node names of the peers whose lease is valid now */
    size_t nleases_held;
} mrd_hb_member;

typedef struct {
    char region[MRD_PROTO_NAME_MAX];
    char target[MRD_PROTO_TARGET_MAX];
    int ok;
    double latency_ms;
    char error[MRD_PROTO_ERROR_MAX]; /* "": none (null on the wire) */
} mrd_hb_probe;

typedef struct {
    char id[MRD_PROTO_ID_MAX];
    mrd_result_status status;
    char error[MRD_PROTO_ERROR_MAX]; /* "": none (null on the wire) */
    int64_t epoch;                   /* the command's epoch */
    int64_t position;                /* fence: the member's position after the fence
                                        (pg_current_wal_lsn); 0: n/a */
} mrd_hb_result;

/* A heartbeat request. Arrays are heap-allocated and owned by the struct
 * (mrd_hb_request_free); n* count the entries. */
typedef struct {
    char node[MRD_PROTO_NAME_MAX];
    char region[MRD_PROTO_NAME_MAX];
    int64_t seq;
    char api_url[MRD_PROTO_TARGET_MAX]; /* the agent's own API ("" unknown): where the
                                           controller pokes it */
    int urgent; /* sent at once after a command or a poke: the controller should
                   record it and tell the leader without waiting */
    mrd_hb_epoch *epochs;
    size_t nepochs;
    mrd_hb_check *checks;
    size_t nchecks;
    mrd_hb_member *members;
    size_t nmembers;
    mrd_hb_probe *probes;
    size_t nprobes;
    mrd_hb_result *results;
    size_t nresults;
} mrd_hb_request;

/* One member of a service's peer set, as the controller configures it. */
typedef struct mrd_hb_peer {
    char member[MRD_PROTO_NAME_MAX];
    char node[MRD_PROTO_NAME_MAX];
    char agent_url[MRD_PROTO_TARGET_MAX]; /* http(s) URL; "": none configured (null) */
} mrd_hb_peer;

typedef struct {
    char service[MRD_PROTO_NAME_MAX];
    int64_t epoch;
    char primary_region[MRD_PROTO_NAME_MAX]; /* "": none (null on the wire) */
    int64_t primary_position;                /* 0: unknown */
    char primary_member[MRD_PROTO_NAME_MAX]; /* "": unknown (optional on the wire): the member
                                                the store names primary; any other member that
                                                finds itself a writable primary, and was not
                                                promoted in this epoch, fences itself */
    /* The peer set (heap-allocated, owned by the answer). have_peers: "peers"
     * was sent (an empty list is an empty set). */
    int have_peers;
    struct mrd_hb_peer *peers;
    size_t npeers;
} mrd_hb_service;

typedef struct {
    char id[MRD_PROTO_ID_MAX];
    char service[MRD_PROTO_NAME_MAX];
    char member[MRD_PROTO_NAME_MAX];
    mrd_cmd_kind kind;
    int64_t epoch;
    json_t *args; /* an object, owned (one reference); never NULL after decode */
} mrd_hb_command;

typedef struct {
    char id[MRD_PROTO_ID_MAX];
} mrd_hb_ack;

/* A heartbeat answer. Arrays (and each command's args) owned by the struct. */
typedef struct {
    int recorded;
    int64_t heartbeat_ms;
    mrd_hb_service *services;
    size_t nservices;
    mrd_hb_command *commands;
    size_t ncommands;
    mrd_hb_ack *ack;
    size_t nack;
} mrd_hb_answer;

/* Zero the struct (empty arrays). */
void mrd_hb_request_init(mrd_hb_request *r);
void mrd_hb_answer_init(mrd_hb_answer *a);
/* Free the arrays (and args) and leave the struct as after _init. */
void mrd_hb_request_free(mrd_hb_request *r);
void mrd_hb_answer_free(mrd_hb_answer *a);

/* Encode. Return a new JSON object, or NULL when out of memory or when a
 * value cannot be represented (an enum out of range). The input is only
 * read; encoding does not validate lengths (decode does). */
json_t *mrd_hb_request_to_json(const mrd_hb_request *r);
json_t *mrd_hb_answer_to_json(const mrd_hb_answer *a);

/* Decode and validate. Return 0 and fill *out (which the caller then owns
 * and frees with _free); or MRD_EPARSE with "field: why" in err, or
 * MRD_ENOMEM; on failure *out is left as after _init. */
int mrd_hb_request_from_json(const json_t *j, mrd_hb_request *out, char *err, size_t errlen);
int mrd_hb_answer_from_json(const json_t *j, mrd_hb_answer *out, char *err, size_t errlen);
/* Same from text: also MRD_EPARSE for malformed JSON ("json: ..."). */
int mrd_hb_request_parse(const char *text, size_t len, mrd_hb_request *out, char *err,
                         size_t errlen);
int mrd_hb_answer_parse(const char *text, size_t len, mrd_hb_answer *out, char *err, size_t errlen);

/* Decodes a poke body {"commands": [...]} into out->commands (the other
 * fields of out stay zero). Same validation and results as
 * mrd_hb_answer_from_json. */
int mrd_hb_poke_from_json(const json_t *j, mrd_hb_answer *out, char *err, size_t errlen);

/* Peer lease request (requester -> granter). */
typedef struct {
    char service[MRD_PROTO_NAME_MAX];
    int64_t epoch;
    char node[MRD_PROTO_NAME_MAX];
    int64_t ttl_ms; /* 1 .. 600000 */
} mrd_lease_request;

/* Peer lease answer. */
typedef struct {
    int granted;
    int64_t epoch;                    /* highest epoch the granter has seen for the service */
    int64_t ttl_ms;                   /* granted duration (0 when refused) */
    char reason[MRD_PROTO_ERROR_MAX]; /* "" when granted (null on the wire) */
} mrd_lease_answer;

#define MRD_PROTO_MAX_LEASE_TTL_MS 600000

/* As for heartbeats: to_json returns a new object or NULL (out of memory);
 * from_json returns 0, MRD_EPARSE ("field: why" in err) or MRD_ENOMEM and
 * leaves *out zeroed on failure. */
json_t *mrd_lease_request_to_json(const mrd_lease_request *r);
json_t *mrd_lease_answer_to_json(const mrd_lease_answer *a);
int mrd_lease_request_from_json(const json_t *j, mrd_lease_request *out, char *err, size_t errlen);
int mrd_lease_answer_from_json(const json_t *j, mrd_lease_answer *out, char *err, size_t errlen);

#endif
