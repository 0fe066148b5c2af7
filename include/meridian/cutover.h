/*
 * Cutover drivers: the external systems that must follow a primary move
 * (service registry, DNS, webhooks). The operation state machine calls
 * apply() from its registry and dns steps (retrying with backoff on
 * transient errors, never on MRD_ESTALE) and read() to reconcile what a
 * target really holds with what the store says.
 *
 * Every driver is asynchronous on one libuv loop and speaks HTTP through
 * include/meridian/http_client.h. Contract of every driver:
 *   - apply()/read() return 0 and then call cb exactly once, never from
 *     inside apply()/read() itself; or return a negative MRD_E* and never
 *     call cb.
 *   - apply() is idempotent: applying the same target twice is harmless, and
 *     a repeated apply of the epoch already stored with the same primary
 *     succeeds ("already applied").
 *   - MRD_ESTALE means the target holds a newer epoch (or the same epoch with
 *     another primary): a fencing event. res->observed says what it holds.
 *     Never retry it blindly.
 *   - Other codes in the callback: MRD_EHTTP (5xx, transport error) and
 *     MRD_ETIMEOUT are transient, worth a retry with backoff; MRD_EINVAL
 *     (400/409/422), MRD_ENOTFOUND (404: zone missing), MRD_EUNAUTHORIZED
 *     (401/403) and MRD_EPARSE (a target holding garbage) need an operator.
 *   - "required" in a config is accepted and not interpreted: whether a
 *     failed target blocks the operation is the state machine's choice.
 *   - close() completes pending calls with MRD_ECLOSED (their callbacks may
 *     run during close() or on a later loop iteration) and frees the driver
 *     once the loop has run its close callbacks. No call after close().
 *
 * Drivers (config objects as in a service's configuration):
 *   "noop"    remembers the last target per service (tests, dry runs).
 *   "pdns"    PowerDNS authoritative HTTP API: the service record plus a TXT
 *             _meridian.<name> = "epoch=N primary=REGION", in one PATCH.
 *   "etcd"    etcd v3 JSON gateway: <prefix>/services/<svc>/primary (JSON)
 *             and <prefix>/services/<svc>/epoch (20-digit zero-padded),
 *             written by one transaction that compares the stored epoch.
 *   webhooks  POST of a signed JSON event to each URL, with bounded retries.
 */
#ifndef MERIDIAN_CUTOVER_H
#define MERIDIAN_CUTOVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* What a cutover must make a target say. Strings are borrowed: they only
 * need to live until apply() returns (drivers copy what they keep). */
typedef struct {
    const char *service;        /* [A-Za-z0-9._-], 1..63 characters */
    int64_t epoch;              /* epoch of this cutover, >= 0 */
    const char *primary_region; /* region of the new primary, [A-Za-z0-9_-] 1..63 */
    const char *old_region;     /* region of the old primary; NULL or "" if none */
    const char *endpoint;       /* address of the new primary; NULL or "" if none */
    const char *operation_id;   /* operation carrying the cutover; NULL or "" */
} mrd_cutover_target;

/* What a target holds for a service. */
typedef struct {
    int ok;           /* 1: the target holds a complete value for the service */
    int64_t epoch;    /* stored epoch; -1 when unknown */
    char region[64];  /* stored primary region; "" when unknown */
    char value[256];  /* stored record content (pdns) or endpoint (etcd) */
    char detail[256]; /* free text: changed_at, record type, ... */
} mrd_cutover_observed;

/* Outcome of one apply() or read(); valid during the callback only. */
typedef struct {
    int status;          /* 0, or a negative MRD_E* (MRD_ESTALE: refused by an epoch compare) */
    const char *message; /* "" on success; short lower-case reason otherwise */
    const mrd_cutover_observed *observed; /* read: what is stored; apply: what the target
                                             holds after the call when known (always on
                                             MRD_ESTALE); NULL when unknown */
    int attempts; /* HTTP requests made (webhooks: summed over URLs and retries) */
} mrd_cutover_result;

typedef void (*mrd_cutover_cb)(const mrd_cutover_result *res, void *data);

typedef struct mrd_cutover_driver mrd_cutover_driver;

/* A driver: the first member of each implementation. */
struct mrd_cutover_driver {
    const char *name; /* "noop", "pdns", "etcd", "webhook" */
    /* Starts making the target hold t. Returns 0 (cb runs once, later) or
     * MRD_EINVAL (bad target), MRD_ECLOSED, MRD_ENOMEM (cb does not run). */
    int (*apply)(mrd_cutover_driver *self, const mrd_cutover_target *t, mrd_cutover_cb cb,
                 void *data);
    /* Starts reading what the target holds for service. Returns as apply();
     * MRD_EUNSUPPORTED for targets without state (webhooks). */
    int (*read)(mrd_cutover_driver *self, const char *service, mrd_cutover_cb cb, void *data);
    /* See the contract above. */
    void (*close)(mrd_cutover_driver *self);
};

/* Convenience wrappers over the function pointers (same returns). */
int mrd_cutover_apply(mrd_cutover_driver *d, const mrd_cutover_target *t, mrd_cutover_cb cb,
                      void *data);
int mrd_cutover_read(mrd_cutover_driver *d, const char *service, mrd_cutover_cb cb, void *data);
void mrd_cutover_close(mrd_cutover_driver *d);

/* Checks a target's fields (service, epoch, regions). Returns 0 or
 * MRD_EINVAL with the reason in err. */
int mrd_cutover_target_check(const mrd_cutover_target *t, char *err, size_t errlen);

/*
 * Constructors. cfg is borrowed (values are copied). Each returns 0 and sets
 * *out, or MRD_ECONFIG with "key: why" in err (nothing allocated), MRD_ENOMEM
 * or MRD_EINTERNAL.
 */
/* "noop": {"driver": "noop"} (cfg may be NULL). Remembers the last target
 * per service in memory and, like etcd, refuses with MRD_ESTALE an older
 * epoch or the same epoch with another primary region. */
int mrd_cutover_noop_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                          size_t errlen);
/* "pdns": {"driver": "pdns", "api_url", "api_key", "server_id"?: "localhost",
 * "zone", "name", "type": "A"|"AAAA"|"CNAME", "ttl", "values": {region: value},
 * "timeout_ms"?: 5000, "required"?}. The record value for a target is
 * values[primary_region], else the target's endpoint when it is a valid
 * value for the type; otherwise apply() refuses with MRD_EINVAL. */
int mrd_cutover_pdns_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                          size_t errlen);
/* "etcd": {"driver": "etcd", "endpoints": [url, ...], "prefix", "timeout_ms"?: 5000,
 * "required"?}. On a transport error a call tries the next endpoint (each at
 * most once per call). */
int mrd_cutover_etcd_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                          size_t errlen);
/* webhooks: the array [{"url", "secret", "timeout_ms"?: 2000, "max_attempts"?: 5,
 * "backoff_base_ms"?: 200, "backoff_max_ms"?: 5000}, ...]. apply() posts to
 * every URL in parallel and succeeds when all answered 2xx; it retries
 * transport errors, 408, 429 and 5xx with full-jitter exponential backoff
 * up to max_attempts per URL; other statuses fail at once. */
int mrd_cutover_webhook_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg,
                             char *err, size_t errlen);
/* Dispatches on cfg's "driver" ("noop", "pdns", "etcd"), or builds the
 * webhook driver when cfg is an array. Returns as the constructors. */
int mrd_cutover_driver_init(mrd_cutover_driver **out, uv_loop_t *loop, const json_t *cfg, char *err,
                            size_t errlen);

/* Validation only, without a loop (config loading). Same rules and messages
 * as the constructors. Returns 0 or MRD_ECONFIG with "key: why" in err. */
int mrd_cutover_config_check(const json_t *cfg, char *err, size_t errlen);

#endif
