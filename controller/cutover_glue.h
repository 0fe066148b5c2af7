/*
 * Run-time state of the cutover drivers in the controller, shared by
 * controller/cutover_glue.c (driving operation steps, webhooks, API and
 * metrics) and controller/reconcile.c (read-back, drift, repair). Private
 * to those two files; the rest of the controller uses the mrd__cutover_*
 * functions of controller.h.
 */
#ifndef MERIDIAN_CUTOVER_GLUE_H
#define MERIDIAN_CUTOVER_GLUE_H

#include <stdint.h>

#include "controller.h"
#include "meridian/cutover.h"

/* What a driver must make its target hold (the desired state). */
typedef struct {
    uint64_t epoch; /* 0: nothing wanted yet */
    char region[MRD_NAME_MAX];
    char old_region[MRD_NAME_MAX];
    char endpoint[256];
    char op_id[MRD_OP_ID_MAX]; /* "" when the want comes from reconciliation */
    int repair;                /* etcd: write over the same epoch (drift repair) */
} mrd__cut_want;

/* One stateful driver (registry or dns) of one service. */
typedef struct {
    const char *what; /* "registry" or "dns" */
    mrd_cutover_driver *drv;
    const json_t *cfg;
    int required;
    mrd__cut_want want;
    uint64_t applied_epoch; /* last epoch this leader wrote or verified */
    char applied_region[MRD_NAME_MAX];
    uint64_t started_epoch; /* epoch of the last apply started (best-effort input) */
    uint64_t refused_epoch; /* want.epoch refused with MRD_ESTALE (fencing) */
    uint32_t attempts;      /* apply calls for want.epoch */
    uint32_t failures;      /* consecutive failures (backoff) */
    uint64_t next_ms;       /* monotonic: no new call before */
    int busy;               /* an apply or read is in flight */
    char error[256];        /* last error, "" after a success */
    int has_observed;
    mrd_cutover_observed observed;
    int64_t verified_unix_ms; /* last read-back that matched the desired state */
    int64_t observed_unix_ms; /* last read-back, matching or not */
    uint64_t reconcile_next_ms;
    int drift; /* the last read-back differed */
    uint64_t drift_total, repairs_total, fencing_total, apply_errors_total;
} mrd__cut_driver;

typedef struct {
    mrd_cutover_driver *drv;
    uint64_t want_epoch, fired_epoch, delivered_epoch;
    mrd_cutover_target t; /* strings below */
    char region[MRD_NAME_MAX], old_region[MRD_NAME_MAX], endpoint[256], op_id[MRD_OP_ID_MAX];
    int busy;
    uint32_t rounds; /* apply rounds for want_epoch */
    uint32_t attempts;
    uint64_t next_ms;
    char error[256];
    uint64_t delivered_total, failed_total;
    int baseline; /* seen_* hold the service's primary as this leader first saw it */
    uint64_t seen_epoch;
    char seen_region[MRD_NAME_MAX];
} mrd__cut_hooks;

typedef struct {
    mrd__cut_driver reg, dns;
    mrd__cut_hooks hooks;
    uint64_t reconcile_interval_ms;
    int repair_drift;
    char init_error[256]; /* a driver could not be built */
} mrd__cut_service;

struct mrd__cutover {
    mrd_ctl *ctl;
    mrd__cut_service *svc;  /* ctl->nservices entries */
    mrd__service *services; /* ctl->services when built: a reload swaps it (then stale) */
    size_t nsvc;
    mrd_http_client *http;     /* etcd repair transactions */
    uint64_t gen;              /* grows when leadership is lost: stale callbacks are ignored */
    int leader;                /* leadership seen by the last cron */
    uint64_t lead_snapshot_ms; /* ctl->snapshot_ms when leadership began: older is stale */
    int closed;
    size_t pending; /* calls whose callback has not run yet */
};

/* Per-call context of every asynchronous call (freed by its callback). */
typedef struct {
    struct mrd__cutover *cut;
    size_t index; /* service */
    mrd__cut_driver *d;
    uint64_t gen;
    mrd__cut_want want;
    int is_read;
    char *etcd_body; /* repair transactions: the request, for the next endpoint */
    size_t endpoint; /* repair: index of the endpoint tried */
    size_t tried;
} mrd__cut_call;

/* cutover_glue.c */
/* 1 when ctl->snapshot was read during this leadership (not a leftover of
 * an earlier one, which could name an old epoch). */
int mrd__cut_snapshot_fresh(const struct mrd__cutover *cut);
mrd__cut_service *mrd__cut_service_of(mrd_ctl *ctl, const mrd__service *s);
/* Fills a target from a want (strings borrowed from w). */
void mrd__cut_target(const mrd__service *s, const mrd__cut_want *w, mrd_cutover_target *t);
/* The value a DNS record must hold for a region ("" when unknown). */
const char *mrd__cut_endpoint(const mrd__service *s, const char *region, char *buf, size_t len);
/* Starts an apply of d->want if due. */
void mrd__cut_pump(struct mrd__cutover *cut, size_t index, mrd__cut_driver *d, uint64_t now);
mrd__cut_call *mrd__cut_call_new(struct mrd__cutover *cut, size_t index, mrd__cut_driver *d);
/* 1 when the state no longer matches the controller: closed, or the
 * configuration was reloaded (ctl->services replaced). */
int mrd__cut_stale(const struct mrd__cutover *cut);
/* Releases a call; returns 1 when its result must be ignored (closed,
 * reloaded, or from an earlier leadership). */
int mrd__cut_call_end(mrd__cut_call *c);
/* For a callback: ends and frees the call passed as data, leaving a copy of
 * its fields (etcd_body NULL) in *out. Returns 1 when the result must be
 * ignored (as mrd__cut_call_end); out->cut may then be freed already. */
int mrd__cut_call_take(void *data, mrd__cut_call *out);
/* Backoff after a failure: base 200 ms, doubling, capped at 5 s, jittered. */
uint64_t mrd__cut_backoff(uint32_t failures);
int64_t mrd__cut_unix_ms(void);

/* reconcile.c */
void mrd__reconcile_service(struct mrd__cutover *cut, size_t index, uint64_t now);
/* Starts an etcd write of want over the same epoch (drift repair). Returns 0
 * (the result goes through mrd__cut_apply_done) or a negative MRD_E*. */
int mrd__reconcile_etcd_repair(struct mrd__cutover *cut, size_t index, mrd__cut_driver *d);
/* Outcome of an apply (driver or repair transaction). */
void mrd__cut_apply_done(const mrd_cutover_result *res, void *data);

#endif
