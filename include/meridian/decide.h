/*
 * The failover decision: a pure function of (view, policy, now).
 *
 * No I/O, no clock, no allocation: the leader's tick builds an mrd_view per
 * service from the store, calls mrd_decide() and carries out the result
 * (persist first, then act). Every struct here is plain data (fixed-size
 * arrays, no pointers), so a view or a decision can be copied with memcpy,
 * stored, logged or replayed in a test. Every enum has a name table
 * (mrd_*_name()) whose names are stable: they appear in logs, the API and
 * the store.
 *
 * Time: every *_ms value is milliseconds on ONE clock, the same as the now_ms
 * passed in. Use the store's clock (last_seen is written with it); 0 always
 * means "never / unknown".
 *
 * The only state carried from one tick to the next is primary_down_since_ms:
 * mrd_decide() returns it in the decision, the caller copies it into the next
 * view of the same service with mrd_view_carry(). Losing it (new leader,
 * restart) is safe: for a silent primary the start of the outage is rebuilt
 * from last_seen_ms + node_timeout_ms, for a critical one the grace simply
 * starts again (a later failover, never an earlier one).
 */
#ifndef MERIDIAN_DECIDE_H
#define MERIDIAN_DECIDE_H

#include <stddef.h>
#include <stdint.h>

#define MRD_NAME_MAX         64 /* names (service, region, node) incl. NUL */
#define MRD_VIEW_MAX_REGIONS 16
#define MRD_VIEW_MAX_MEMBERS 64
#define MRD_TEXT_MAX         256

/* vantage_quorum value meaning "a strict majority of the vantage points that
 * have a verdict"; any value >= 1 means "at least that many say down". */
#define MRD_QUORUM_MAJORITY 0
/* lag value meaning "unknown": always beyond any bound */
#define MRD_LAG_UNKNOWN UINT64_MAX

/* ---- policy ------------------------------------------------------------ */

typedef struct {
    int auto_failover;                /* act without an operator */
    uint32_t heartbeat_ms;            /* agent heartbeat interval (profile) */
    uint32_t lease_ttl_ms;            /* leader lease TTL (profile) */
    uint32_t node_timeout_ms;         /* no heartbeat for this long: silent */
    uint32_t failure_grace_ms;        /* primary down this long before acting */
    uint32_t isolation_timeout_ms;    /* primary agent self-fences after this */
    uint32_t isolation_margin_ms;     /* added before a silent primary is replaced */
    uint64_t max_lag_bytes;           /* RPO bound (UINT64_MAX: none) */
    uint64_t max_lag_ms;              /* RPO bound in time (UINT64_MAX: none) */
    uint32_t min_failover_interval_s; /* anti-flapping */
    uint32_t vantage_quorum;          /* MRD_QUORUM_MAJORITY or an integer >= 1 */
    /* operation timeouts (used by opfsm, see mrd_op_timeouts_from_policy) */
    uint32_t fence_timeout_ms;              /* wait for a fence confirmation */
    uint32_t switchover_catchup_timeout_ms; /* switchover: target must reach barrier */
    uint32_t failover_catchup_timeout_ms;   /* failover: bounded replay wait */
    uint32_t promote_timeout_ms;            /* target must report primary */
    uint32_t cutover_timeout_ms;            /* registry / dns: overdue after this */
    uint32_t rejoin_timeout_ms;             /* op completes with rejoin pending after */
} mrd_policy;

/* Fills *p with a shipped profile: "default" or "fast" (docs/design.md). NULL
 * name means "default". Returns 0, or MRD_EINVAL for another name (then *p
 * holds the "default" profile). */
int mrd_policy_defaults(mrd_policy *p, const char *profile);

/* Checks that the values make sense together (nonzero timeouts,
 * isolation_timeout > heartbeat, node_timeout > heartbeat, ...). Returns 0,
 * or MRD_ECONFIG with "key: why" in err. */
int mrd_policy_validate(const mrd_policy *p, char *err, size_t errlen);

/* ---- view -------------------------------------------------------------- */

#define MRD_ROLE_MAP(XX)                                                                           \
    XX(UNKNOWN, "unknown")                                                                         \
    XX(PRIMARY, "primary")                                                                         \
    XX(REPLICA, "replica")                                                                         \
    XX(FENCED, "fenced")

typedef enum {
#define MRD__ROLE_ENUM(n, s) MRD_ROLE_##n,
    MRD_ROLE_MAP(MRD__ROLE_ENUM)
#undef MRD__ROLE_ENUM
        MRD_ROLE__COUNT
} mrd_role;

#define MRD_HEALTH_MAP(XX)                                                                         \
    XX(UNKNOWN, "unknown")                                                                         \
    XX(PASSING, "passing")                                                                         \
    XX(WARNING, "warning")                                                                         \
    XX(CRITICAL, "critical")

typedef enum {
#define MRD__HEALTH_ENUM(n, s) MRD_HEALTH_##n,
    MRD_HEALTH_MAP(MRD__HEALTH_ENUM)
#undef MRD__HEALTH_ENUM
        MRD_HEALTH__COUNT
} mrd_health;

#define MRD_VERDICT_MAP(XX)                                                                        \
    XX(UNKNOWN, "unknown")                                                                         \
    XX(UP, "up")                                                                                   \
    XX(DOWN, "down")

typedef enum {
#define MRD__VERDICT_ENUM(n, s) MRD_VERDICT_##n,
    MRD_VERDICT_MAP(MRD__VERDICT_ENUM)
#undef MRD__VERDICT_ENUM
        MRD_VERDICT__COUNT
} mrd_verdict;

/* One region of the service's topology, and what its probes think of the
 * primary region (one vantage point). The primary region's own verdict is
 * ignored. A verdict refreshed longer ago than node_timeout_ms is unknown. */
typedef struct {
    char name[MRD_NAME_MAX];
    int priority;        /* lower number = preferred */
    mrd_verdict verdict; /* its probes on the primary region */
    uint64_t verdict_ms; /* when that verdict was last refreshed */
} mrd_view_region;

/* One member (the service's instance on one node). Lags are the builder's
 * job and must be measured against the primary's LAST KNOWN state, not
 * against now: once the primary is dead, lag_bytes = its last reported
 * current_pos - replay_pos, and lag_ms = its last commit time - the
 * replica's last replayed commit time (or the value reported while the
 * primary was alive). A lag_ms that keeps growing with the clock would put
 * every replica beyond max_lag_ms before the grace is over. */
typedef struct {
    char node[MRD_NAME_MAX];
    char region[MRD_NAME_MAX]; /* must name an entry of view.regions */
    mrd_role role;             /* last role reported */
    mrd_health health;         /* last health reported */
    uint64_t last_seen_ms;     /* last recorded heartbeat (store clock); 0 never */
    uint64_t receive_pos;      /* replica: received position */
    uint64_t replay_pos;       /* replica: replayed position */
    uint64_t current_pos;      /* primary: current write position */
    uint64_t lag_bytes;        /* last known primary position - replay_pos (builder) */
    uint64_t lag_ms;           /* replay lag in time; MRD_LAG_UNKNOWN if unknown */
    int fenced;                /* reports its member fenced (not writable) */
    int fence_confirmed;       /* confirmed a fence at the current epoch */
    int outside_leases;        /* the current primary's last reported set of required peer
                                  leases is not empty and does not include this member: the
                                  primary may stay writable on the others' leases, and this
                                  member promised it nothing */
} mrd_view_member;

/* Everything mrd_decide() knows about one service. */
typedef struct {
    char service[MRD_NAME_MAX];
    uint64_t epoch;
    char primary_region[MRD_NAME_MAX];
    char primary_node[MRD_NAME_MAX]; /* optional: "" = the member of primary_region
                                        that reports role primary */
    int maintenance;                 /* automatic decisions suspended */
    uint64_t last_failover_ms;       /* start of the last failover; 0 never */
    uint64_t primary_down_since_ms;  /* carried, see mrd_view_carry(); 0 unknown */
    size_t nregions;
    mrd_view_region regions[MRD_VIEW_MAX_REGIONS];
    size_t nmembers;
    mrd_view_member members[MRD_VIEW_MAX_MEMBERS];
} mrd_view;

/* ---- decision ---------------------------------------------------------- */

#define MRD_DECISION_MAP(XX)                                                                       \
    XX(NONE, "none")         /* nothing to do */                                                   \
    XX(ALERT, "alert")       /* an operator should look; no automatic action */                    \
    XX(WAIT, "wait")         /* a failover is decided but may not start before not_before_ms */    \
    XX(FAILOVER, "failover") /* start a failover to target now */

typedef enum {
#define MRD__DECISION_ENUM(n, s) MRD_DECISION_##n,
    MRD_DECISION_MAP(MRD__DECISION_ENUM)
#undef MRD__DECISION_ENUM
        MRD_DECISION__COUNT
} mrd_decision_kind;

/* Reasons, for decisions and for each candidate's verdict. */
#define MRD_REASON_MAP(XX)                                                                         \
    XX(OK, "ok")                                 /* healthy / candidate acceptable */              \
    XX(PRIMARY_CRITICAL, "primary_critical")     /* primary member reports critical */             \
    XX(PRIMARY_SILENT, "primary_silent")         /* primary's node silent */                       \
    XX(PRIMARY_FENCED, "primary_fenced")         /* primary reports itself fenced */               \
    XX(FAILURE_GRACE, "failure_grace")           /* down, but not for failure_grace yet */         \
    XX(MAINTENANCE, "maintenance")               /* maintenance mode */                            \
    XX(AUTO_FAILOVER_OFF, "auto_failover_off")   /* policy says no automatic action */             \
    XX(QUORUM_NOT_REACHED, "quorum_not_reached") /* too few vantage points see it down */          \
    XX(ANTI_FLAP, "anti_flap")                   /* too soon after the last failover */            \
    XX(NO_CANDIDATE, "no_candidate")             /* no acceptable replica */                       \
    XX(LAG_EXCEEDED, "lag_exceeded")             /* replicas exist, all beyond the RPO bound */    \
    XX(ISOLATION_WAIT, "isolation_wait")         /* old primary may still be writable */           \
    XX(NO_PRIMARY, "no_primary")                 /* the view names no primary member */            \
    XX(MULTIPLE_PRIMARIES, "multiple_primaries") /* more than one live writable primary */         \
    XX(INVALID_VIEW, "invalid_view")             /* view or policy unusable */                     \
    XX(MANUAL, "manual")                         /* plan: operator request acceptable */           \
    XX(FORCED, "forced")                         /* plan: acceptable only because of force */      \
    XX(UNKNOWN_REGION, "unknown_region")         /* plan: target region not in the view */         \
    XX(IS_PRIMARY, "is_primary")                 /* candidate: it is the current primary */        \
    XX(NOT_REPLICA, "not_replica")               /* candidate: role is not replica */              \
    XX(FENCED, "fenced")                         /* candidate: fenced */                           \
    XX(SILENT, "silent")                         /* candidate: node silent */                      \
    XX(UNHEALTHY, "unhealthy")                   /* candidate: critical or unknown health */       \
    XX(LAG_BYTES, "lag_bytes_exceeded")          /* candidate: lag_bytes > max_lag_bytes */        \
    XX(LAG_MS, "lag_ms_exceeded")                /* candidate: lag_ms > max_lag_ms */              \
    XX(OUTRANKED, "outranked")                   /* candidate: acceptable, another preferred */    \
    XX(NOT_TARGET, "not_target_region")          /* candidate: not in the requested region */      \
    XX(OUTSIDE_LEASES, "outside_lease_set")      /* candidate: not in the primary's lease set */

typedef enum {
#define MRD__REASON_ENUM(n, s) MRD_REASON_##n,
    MRD_REASON_MAP(MRD__REASON_ENUM)
#undef MRD__REASON_ENUM
        MRD_REASON__COUNT
} mrd_reason;

/* One member considered as a failover target. */
typedef struct {
    char node[MRD_NAME_MAX];
    char region[MRD_NAME_MAX];
    int priority;
    uint64_t replay_pos;
    uint64_t lag_bytes;
    uint64_t lag_ms;
    int acceptable;    /* could be promoted (with force: beyond the lag bound too) */
    int chosen;        /* this is the target */
    mrd_reason reason; /* OK, OUTRANKED, or why not (LAG_* with acceptable=1: forced) */
} mrd_candidate;

typedef struct {
    mrd_decision_kind kind;
    mrd_reason reason;
    char text[MRD_TEXT_MAX]; /* one lower-case sentence for logs/API */
    char service[MRD_NAME_MAX];
    uint64_t epoch;                   /* the view's epoch */
    char target_region[MRD_NAME_MAX]; /* FAILOVER / WAIT (and plan) */
    char target_node[MRD_NAME_MAX];
    uint64_t not_before_ms;         /* WAIT, FAILURE_GRACE, ANTI_FLAP: when it lifts */
    mrd_reason primary_state;       /* OK or PRIMARY_CRITICAL/SILENT/FENCED */
    uint64_t primary_down_since_ms; /* carry into the next view; 0 if up */
    /* vantage count, filled once the quorum was evaluated */
    uint32_t votes_down, votes_up, votes_needed;
    /* every member but the primary, in preference order (acceptable first) */
    size_t ncandidates;
    mrd_candidate candidates[MRD_VIEW_MAX_MEMBERS];
} mrd_decision;

/*
 * The automatic decision for one service, in this order (first match wins):
 *  1. view unusable (no regions, bad counts) -> ALERT invalid_view;
 *     no primary member -> ALERT no_primary;
 *     another live, unfenced member reports primary -> ALERT multiple_primaries.
 *  2. primary down = health critical, or its node silent (now - last_seen >=
 *     node_timeout_ms), or it reports itself fenced. Not down -> NONE ok
 *     (a healthy primary is never moved: failback is never automatic).
 *  3. down for less than failure_grace_ms -> NONE failure_grace (not_before).
 *  4. maintenance -> ALERT maintenance; auto_failover off -> ALERT
 *     auto_failover_off.
 *  5. vantage quorum: voters = the controller's own view (down, by step 2)
 *     + the primary's own agent when it is heard (not silent) reporting the
 *     primary critical or fenced (down) + each region other than the primary
 *     region whose fresh verdict is up or down (unknown/stale abstain).
 *     majority: down > voters / 2 (a tie is not a majority); integer N:
 *     down >= N. Not reached -> ALERT quorum_not_reached. So a partition
 *     between the controller and the primary region alone, with the other
 *     regions still seeing it up, never fails over, nor does a check that
 *     fails only on the primary's node. A hung PostgreSQL keeps its port
 *     open: only application-level (postgresql) probes see it down.
 *  6. last failover less than min_failover_interval_s ago -> ALERT anti_flap.
 *  7. candidates: every member except the primary, role replica, not fenced,
 *     not silent, health passing or warning, lag_bytes <= max_lag_bytes and
 *     lag_ms <= max_lag_ms, and not outside_leases (a member the primary's
 *     reported lease set leaves out: reason outside_lease_set; the primary
 *     could stay writable on the leases of the others, so it is never an
 *     automatic target); ordered by region priority (lower first), then
 *     replay_pos (higher first), then node name. None -> ALERT lag_exceeded
 *     if some live healthy replica failed only the lag bound, else ALERT
 *     no_candidate: never a promotion.
 *  8. isolation: a SILENT primary that has not confirmed a fence may still
 *     be writable until its last_seen_ms + isolation_timeout_ms +
 *     isolation_margin_ms (from the start of the outage if never seen):
 *     before that -> WAIT isolation_wait (target filled in, not_before_ms =
 *     that time). A primary that is down but still heard from (critical or
 *     self-fenced, heartbeats recorded) gets FAILOVER at once: it is
 *     reachable, so the operation's fence step commands the fence and never
 *     promotes before the fence is confirmed (see opfsm.h).
 *  9. FAILOVER to the best candidate, reason = why the primary is down.
 * An automatic failover only ever replaces a primary that is down: it never
 * moves a live primary back to a preferred region, and a member that is not a
 * healthy replica (an old primary that has not rejoined) is never a target.
 * out must not be NULL (then: ALERT, nothing written). Always fills *out
 * completely; returns out->kind. mrd_decision is ~12 KiB: keep one per
 * service in the leader's context rather than on a small stack.
 */
mrd_decision_kind mrd_decide(const mrd_view *view, const mrd_policy *policy, uint64_t now_ms,
                             mrd_decision *out);

/*
 * Operator's dry run / validation of a manual failover (GET .../plan,
 * POST .../failover). Ignores maintenance, auto_failover, grace, quorum and
 * anti-flap (manual actions are allowed in all of them). target_region NULL
 * or "" = best candidate anywhere, else the best candidate of that region.
 * force accepts a candidate beyond the lag bound (never a silent, critical,
 * fenced or non-replica one). A member outside the primary's lease set
 * (outside_leases) is refused while the primary is silent and has not
 * confirmed a fence (its promotion could only follow the isolation wait,
 * which does not hold against the others' leases); with a reachable primary
 * it is acceptable, since the operation promotes only after a confirmed
 * fence (opfsm: no "isolated" path to a member outside the set). Result:
 *   FAILOVER (reason manual, or forced when only force made it acceptable);
 *   WAIT isolation_wait: acceptable, but the old primary is silent and
 *     unfenced, so the promotion cannot happen before not_before_ms (the
 *     operation's fence step waits it out; force does not shorten it);
 *   ALERT unknown_region / no_candidate / lag_exceeded / no_primary /
 *     invalid_view: refused.
 * Every member but the primary is listed in out->candidates with its verdict.
 * Returns out->kind.
 */
mrd_decision_kind mrd_decide_plan(const mrd_view *view, const mrd_policy *policy, uint64_t now_ms,
                                  const char *target_region, int force, mrd_decision *out);

/* Carries the state of the previous decision into the next view of the same
 * service: copies primary_down_since_ms if prev is about the same service and
 * epoch, else sets it to 0. prev may be NULL (first tick). */
void mrd_view_carry(mrd_view *next, const mrd_decision *prev);

/* Stable names; "?" for a value out of range. */
const char *mrd_role_name(mrd_role r);
const char *mrd_health_name(mrd_health h);
const char *mrd_verdict_name(mrd_verdict v);
const char *mrd_decision_kind_name(mrd_decision_kind k);
const char *mrd_reason_name(mrd_reason r);
/* Parse a name back; return 0 and set *out, or MRD_EINVAL. */
int mrd_role_parse(const char *name, mrd_role *out);
int mrd_health_parse(const char *name, mrd_health *out);
int mrd_verdict_parse(const char *name, mrd_verdict *out);

#endif
