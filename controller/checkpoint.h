/*
 * Data-sync checkpoints: the pure reaching logic (controller/checkpoint.c)
 * shared by the store side (controller/checkpoint_store.c) and the API
 * (controller/api_checkpoints.c). Internal to controller/.
 *
 * Rules (what "region R reached checkpoint C" means):
 *  - a member holds, on its own history, its replay position, and when it is
 *    (or was until fenced) the primary also its current position;
 *  - histories are told apart by timeline when both the checkpoint and the
 *    report know it (PostgreSQL: a promotion starts a new timeline), else by
 *    epoch (the report's highest epoch seen against the checkpoint's epoch);
 *  - a report on C's history reaches C when it holds >= C's position (equal
 *    counts); a report on a newer history reaches C only when C was carried
 *    into that history (the current primary region reached C), or when it is
 *    a promoted primary whose last replayed position before the promotion
 *    (timeline C+1, PostgreSQL keeps pg_last_wal_replay_lsn) is >= C's
 *    position; a report on an older history never does;
 *  - a region reaches C when any of its members does; the time is the store
 *    time of the earliest such report, but never before C was created;
 *  - reaching is sticky: a mark stays even if a later (or reordered) report
 *    shows a lower position.
 * A checkpoint is lost when its epoch is older than the service's, the
 * primary of the current epoch has been promoted (it has seen that epoch and
 * reports a newer timeline than the checkpoint's; without timelines: reports
 * itself a writable primary), and the primary region never reached it.
 */
#ifndef MERIDIAN_CONTROLLER_CHECKPOINT_H
#define MERIDIAN_CONTROLLER_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "meridian/decide.h"

/* Longest wait of a long-poll, default checkpoint interval and retention. */
#define MRD__CKPT_MAX_WAIT_MS          60000u
#define MRD__CKPT_DEFAULT_INTERVAL_MS  5000u
#define MRD__CKPT_DEFAULT_RETENTION_MS (24u * 3600u * 1000u)
#define MRD__CKPT_MAX_REGIONS          MRD_VIEW_MAX_REGIONS

/* A member's last report as the store holds it. */
typedef struct {
    char region[MRD_NAME_MAX];
    mrd_role role;
    int fenced;
    uint64_t timeline; /* 0: unknown */
    uint64_t epoch_seen;
    uint64_t position;        /* primary: current position; 0: n/a */
    uint64_t replay_position; /* 0: n/a */
    uint64_t seen_ms;         /* store clock of the report (last_seen) */
} mrd__ckpt_member;

typedef struct {
    uint64_t id;
    uint64_t epoch;
    uint64_t timeline; /* 0: unknown */
    uint64_t position;
    uint64_t created_ms; /* store clock */
    int lost;
} mrd__ckpt;

/* The service as the store holds it now. */
typedef struct {
    uint64_t epoch;
    char primary_region[MRD_NAME_MAX];
} mrd__ckpt_service;

/* One region's state for one checkpoint: in, what the store has (marked,
 * at_ms); out, reached and at_ms, and fresh = reached now but not marked. */
typedef struct {
    char region[MRD_NAME_MAX];
    int marked;
    int reached;
    int fresh;
    uint64_t at_ms;
} mrd__ckpt_mark;

/* The position m holds on its own history. */
uint64_t mrd__ckpt_member_held(const mrd__ckpt_member *m);

/* -1, 0, 1: m's report is on an older, the same, a newer history than c. */
int mrd__ckpt_history_cmp(const mrd__ckpt *c, const mrd__ckpt_member *m);

/* 1 when m's report reaches c; carried: c is in the current history (the
 * current primary region reached it). */
int mrd__ckpt_member_reaches(const mrd__ckpt *c, const mrd__ckpt_member *m, int carried);

/* 1 when some member of region reaches c; *at_ms gets the earliest
 * max(c->created_ms, report time) of those that do. 0 and *at_ms = 0 else. */
int mrd__ckpt_region_reaches(const mrd__ckpt *c, const char *region, const mrd__ckpt_member *ms,
                             size_t n, int carried, uint64_t *at_ms);

/* Evaluates c for every entry of marks (each names a region; marked/at_ms
 * say what the store has). Sets reached/at_ms/fresh of each. The primary
 * region of svc is evaluated first (as if listed) to know whether c is
 * carried. Returns how many of marks are reached. */
size_t mrd__ckpt_evaluate(const mrd__ckpt *c, const mrd__ckpt_service *svc,
                          const mrd__ckpt_member *ms, size_t n, mrd__ckpt_mark *marks,
                          size_t nmarks);

/* 1 when c is lost (see the header comment). primary: the report of the
 * service's primary member, NULL when unknown; primary_region_reached:
 * whether the primary region reached c (marks or evaluation). */
int mrd__ckpt_is_lost(const mrd__ckpt *c, const mrd__ckpt_service *svc,
                      const mrd__ckpt_member *primary, int primary_region_reached);

/* Parses wait_ms ("" or absent: 0): decimal digits only. Values above
 * MRD__CKPT_MAX_WAIT_MS are capped. Returns 0, or MRD_EINVAL. */
int mrd__ckpt_parse_wait(const char *text, uint64_t *out);

/* Splits "a,b" into names (each 1..MRD_NAME_MAX-1 bytes, no duplicates, at
 * most max). Returns the count, or MRD_EINVAL (empty item, too long,
 * duplicate, too many). */
int mrd__ckpt_parse_regions(const char *text, char (*out)[MRD_NAME_MAX], size_t max);

/* Formats a store-clock Unix ms as RFC 3339 UTC ("2026-11-27T17:14:03.123Z").
 * Returns buf. */
char *mrd__ckpt_time_format(uint64_t ms, char *buf, size_t len);

#endif
