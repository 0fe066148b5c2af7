/*
 * Unit tests of the pure failover decision (controller/decide.c): one table of
 * cases, each a view + policy + now and the expected decision (kind, reason,
 * target, and when it matters the time a wait lifts), run by one
 * parameterized test; then a few tests of what a table cannot show (carrying
 * state across ticks, candidate lists, name tables, bad input).
 *
 * Topology of most cases: regions eu (priority 1, primary), us (2), ap (3);
 * db-eu-1 primary, db-us-1 and db-ap-1 replicas. Times are "ms ago" relative
 * to NOW; the default profile has node_timeout 3000, failure_grace 2000,
 * isolation 4000 + 1000.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

#include "meridian/decide.h"
#include "meridian/error.h"

#pragma GCC diagnostic ignored "-Woverride-init"

#define NOW   1000000000ull
#define NEVER (-1)
#define MIB   (1024ull * 1024)

#define PRI  MRD_ROLE_PRIMARY
#define REP  MRD_ROLE_REPLICA
#define FEN  MRD_ROLE_FENCED
#define UNKR MRD_ROLE_UNKNOWN
#define PASS MRD_HEALTH_PASSING
#define WARN MRD_HEALTH_WARNING
#define CRIT MRD_HEALTH_CRITICAL
#define UNKH MRD_HEALTH_UNKNOWN
#define UP   MRD_VERDICT_UP
#define DOWN MRD_VERDICT_DOWN
#define UNKV MRD_VERDICT_UNKNOWN

#define K_NONE     MRD_DECISION_NONE
#define K_ALERT    MRD_DECISION_ALERT
#define K_WAIT     MRD_DECISION_WAIT
#define K_FAILOVER MRD_DECISION_FAILOVER

typedef struct {
    const char *name;
    int prio;
    mrd_verdict v;
    long long ago; /* verdict age; NEVER: verdict_ms = 0 */
} R;

typedef struct {
    const char *node, *region;
    mrd_role role;
    mrd_health h;
    long long seen; /* ms ago; NEVER: last_seen_ms = 0 */
    unsigned long long replay, lagb, lagms, cur;
    int fenced, confirmed;
    int outside; /* outside the primary's reported lease set */
} M;

typedef struct {
    const char *name;
    const char *profile;
    R regions[6];
    M members[8];
    const char *primary_region; /* NULL: "eu" */
    const char *primary_node;   /* NULL: "" */
    int maintenance;
    long long last_failover_ago; /* 0: never */
    long long down_since_ago;    /* 0: not carried */
    int auto_off;
    unsigned quorum;
    int plan;
    const char *target;
    int force;
    /* expected */
    mrd_decision_kind kind;
    mrd_reason reason;
    const char *expect_node; /* NULL: no target expected */
    long long not_before_in; /* 0: not checked */
} tc;

/* clang-format off */
#define EU1 .node = "db-eu-1", .region = "eu", .role = PRI, \
    .h = PASS, .seen = 100, .cur = 1000
#define EU2 .node = "db-eu-2", .region = "eu", .role = REP, .h = PASS, \
    .seen = 100, .replay = 995, .lagb = 5, .lagms = 10
#define US1 .node = "db-us-1", .region = "us", .role = REP, .h = PASS, \
    .seen = 100, .replay = 990, .lagb = 10, .lagms = 50
#define US2 .node = "db-us-2", .region = "us", .role = REP, .h = PASS, \
    .seen = 100, .replay = 990, .lagb = 10, .lagms = 50
#define AP1 .node = "db-ap-1", .region = "ap", .role = REP, .h = PASS, \
    .seen = 100, .replay = 980, .lagb = 20, .lagms = 80

#define RG_UP   {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}, {"ap", 3, UP, 100}}
#define RG_DOWN {{"eu", 1, UNKV, NEVER}, {"us", 2, DOWN, 100}, {"ap", 3, DOWN, 100}}
#define SILENT_LONG .seen = 10000 /* silent and past grace and isolation */
/* clang-format on */

static const tc cases[] = {
    /* ---- steady state, failback ---- */
    {.name = "steady: all up",
     .regions = RG_UP,
     .members = {{EU1}, {US1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "steady: primary warning is not down",
     .regions = RG_UP,
     .members = {{EU1, .h = WARN}, {US1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "steady: explicit primary_node",
     .regions = RG_UP,
     .members = {{EU1}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "failback never automatic: primary in less preferred us, eu healthy again",
     .regions = {{"eu", 1, UP, 100}, {"us", 2, UNKV, NEVER}, {"ap", 3, UP, 100}},
     .members = {{EU1, .role = REP, .replay = 1000, .lagb = 0}, {US1, .role = PRI}, {AP1}},
     .primary_region = "us",
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "failback never automatic: old primary back but fenced is no target",
     .regions = {{"eu", 1, DOWN, 100}, {"us", 2, UNKV, NEVER}, {"ap", 3, DOWN, 100}},
     .members = {{EU1, .role = FEN, .fenced = 1}, {US1, .role = PRI, SILENT_LONG}, {AP1}},
     .primary_region = "us",
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "failback never automatic: old primary not rejoined (role unknown) is no target",
     .regions = {{"eu", 1, DOWN, 100}, {"us", 2, UNKV, NEVER}, {"ap", 3, DOWN, 100}},
     .members = {{EU1, .role = UNKR}, {US1, .role = PRI, SILENT_LONG}},
     .primary_region = "us",
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},

    /* ---- primary down: critical vs silent, grace ---- */
    {.name = "critical primary past grace, reachable: failover, no isolation wait",
     .regions = RG_DOWN,
     .members = {{EU1, .h = CRIT}, {US1}, {AP1}},
     .down_since_ago = 3000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-us-1"},
    {.name = "critical primary first seen now: grace starts",
     .regions = RG_DOWN,
     .members = {{EU1, .h = CRIT}, {US1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_FAILURE_GRACE,
     .not_before_in = 2000},
    {.name = "critical primary within grace",
     .regions = RG_DOWN,
     .members = {{EU1, .h = CRIT}, {US1}, {AP1}},
     .down_since_ago = 1500,
     .kind = K_NONE,
     .reason = MRD_REASON_FAILURE_GRACE,
     .not_before_in = 500},
    {.name = "heartbeat late but under node_timeout: not down",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 2999}, {US1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "silent shorter than grace",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 4000}, {US1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_FAILURE_GRACE,
     .not_before_in = 1000},
    {.name = "silent past grace and isolation: failover",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 6000}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "silent exactly node_timeout + grace: failover",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 5000}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "silent one ms short of grace",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 4999}, {US1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_FAILURE_GRACE,
     .not_before_in = 1},
    {.name = "primary never seen: grace counts from now",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = NEVER}, {US1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_FAILURE_GRACE,
     .not_before_in = 2000},
    {.name = "primary reports itself fenced, confirmed: failover",
     .regions = RG_DOWN,
     .members = {{EU1, .role = FEN, .fenced = 1, .confirmed = 1}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 2500,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_FENCED,
     .expect_node = "db-us-1"},

    /* ---- isolation ---- */
    {.name = "fast: silent past grace, before isolation: wait",
     .profile = "fast",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 1600}, {US1}, {AP1}},
     .kind = K_WAIT,
     .reason = MRD_REASON_ISOLATION_WAIT,
     .expect_node = "db-us-1",
     .not_before_in = 400},
    {.name = "fast: old primary confirmed fenced: no wait",
     .profile = "fast",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 1600, .confirmed = 1}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "fast: silent past isolation",
     .profile = "fast",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 2000}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "critical then silent: grace carried, isolation not passed",
     .regions = RG_DOWN,
     .members = {{EU1, .h = CRIT, .seen = 3500}, {US1}, {AP1}},
     .down_since_ago = 4000,
     .kind = K_WAIT,
     .reason = MRD_REASON_ISOLATION_WAIT,
     .expect_node = "db-us-1",
     .not_before_in = 1500},

    /* ---- hung primary: the port stays open (a tcp vantage point sees it up),
     * nothing answers. Its live agent reports it critical with role unknown
     * (the status query timed out) and counts as a vantage point; the other
     * regions' postgresql probes see it down. Or the whole region is frozen
     * (silent). ---- */
    {.name = "hung: agent alive reports critical, role unknown, vantages down: failover",
     .regions = RG_DOWN,
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 2000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-us-1"},
    {.name = "hung fast: agent alive reports critical, role unknown, vantages down: failover",
     .profile = "fast",
     .regions = RG_DOWN,
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 500,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-us-1"},
    {.name = "hung: agent alive reports critical, role primary, vantages down: failover",
     .regions = RG_DOWN,
     .members = {{EU1, .h = CRIT}, {US1}, {AP1}},
     .down_since_ago = 2500,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-us-1"},
    {.name = "hung: agent alive reports critical, within grace: wait for grace",
     .regions = RG_DOWN,
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 1200,
     .kind = K_NONE,
     .reason = MRD_REASON_FAILURE_GRACE,
     .not_before_in = 800},
    {.name = "hung, tcp vantages: agent critical, both others see the port open: 2 of 4",
     .regions = RG_UP,
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 3000,
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "agent critical alone (its own check), others query it fine: no failover",
     .profile = "fast",
     .regions = RG_UP,
     .members = {{EU1, .h = CRIT}, {US1}, {AP1}},
     .down_since_ago = 5000,
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "hung mixed: agent critical, one vantage down, one up: 3 of 4",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}, {"ap", 3, DOWN, 100}},
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 2000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-us-1"},
    {.name = "hung mixed: agent critical, one vantage up, one unknown: 2 of 3",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}, {"ap", 3, UNKV, 100}},
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 2000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-us-1"},
    {.name = "hung mixed: agent critical, two regions, the other sees it up: 2 of 3",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}},
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 2000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-us-1"},
    {.name = "fenced primary, agent alive, vantages down: failover",
     .regions = RG_DOWN,
     .members = {{EU1, .role = FEN, .fenced = 1}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 2000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_FENCED,
     .expect_node = "db-us-1"},
    {.name = "hung region: silent, every vantage down, past isolation: failover",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 5000}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "hung region fast: silent, every vantage down, past isolation: failover",
     .profile = "fast",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 2000}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "hung region: silent, every vantage down, before isolation: wait",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 4500}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 2000,
     .kind = K_WAIT,
     .reason = MRD_REASON_ISOLATION_WAIT,
     .expect_node = "db-us-1",
     .not_before_in = 500},
    {.name = "hung region: silent, vantages up (tcp sees the port open): no failover",
     .regions = RG_UP,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "hung mixed: silent after reporting critical: the agent's vote is gone",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}, {"ap", 3, UNKV, NEVER}},
     .members = {{EU1, .role = UNKR, .h = CRIT, SILENT_LONG}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 8000,
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "hung mixed: silent, one vantage down, one up: majority 2 of 3",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, DOWN, 100}, {"ap", 3, UP, 100}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "hung mixed: silent, one vantage up, one stale down: tie, no failover",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}, {"ap", 3, DOWN, 5000}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "hung: critical but maintenance: alert, no failover",
     .regions = RG_DOWN,
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 3000,
     .maintenance = 1,
     .kind = K_ALERT,
     .reason = MRD_REASON_MAINTENANCE},
    {.name = "hung: critical, the only replica unreachable too: no candidate",
     .regions = RG_DOWN,
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1, .role = UNKR, .h = CRIT}},
     .primary_node = "db-eu-1",
     .down_since_ago = 3000,
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "hung: critical, anti-flap still applies",
     .regions = RG_DOWN,
     .members = {{EU1, .role = UNKR, .h = CRIT}, {US1}, {AP1}},
     .primary_node = "db-eu-1",
     .down_since_ago = 3000,
     .last_failover_ago = 60000,
     .kind = K_ALERT,
     .reason = MRD_REASON_ANTI_FLAP},

    /* ---- vantage quorum ---- */
    {.name = "partition controller-primary only: others see it up",
     .regions = RG_UP,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "quorum: one region down, one up: 2 of 3",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, DOWN, 100}, {"ap", 3, UP, 100}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "quorum: tie is not a majority",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}, {"ap", 3, UNKV, 100}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "quorum: unknown verdicts abstain, controller alone",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UNKV, 100}, {"ap", 3, UNKV, 100}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "quorum: stale up verdicts abstain",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 3000}, {"ap", 3, UP, 9000}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "quorum: primary region's own verdict ignored",
     .regions = {{"eu", 1, DOWN, 100}, {"us", 2, UP, 100}, {"ap", 3, UNKV, NEVER}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "quorum: two regions, the other sees it up",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UP, 100}},
     .members = {{EU1, SILENT_LONG}, {US1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "quorum integer 3 not reached",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, DOWN, 100}, {"ap", 3, UP, 100}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .quorum = 3,
     .kind = K_ALERT,
     .reason = MRD_REASON_QUORUM_NOT_REACHED},
    {.name = "quorum integer 3 reached",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .quorum = 3,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "quorum integer 1: controller alone decides",
     .regions = RG_UP,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .quorum = 1,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},

    /* ---- lag bound ---- */
    {.name = "every candidate too far behind in bytes",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .lagb = 20 * MIB}, {AP1, .lagb = 17 * MIB}},
     .kind = K_ALERT,
     .reason = MRD_REASON_LAG_EXCEEDED},
    {.name = "every candidate too far behind in time",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .lagms = 6000}, {AP1, .lagms = 5001}},
     .kind = K_ALERT,
     .reason = MRD_REASON_LAG_EXCEEDED},
    {.name = "preferred candidate lagging: next one",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .lagb = 20 * MIB}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "lag exactly at the bound is accepted",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .lagb = 16 * MIB, .lagms = 5000}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "unknown lag is beyond any bound",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .lagms = MRD_LAG_UNKNOWN}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "lagging and silent: no_candidate, not lag",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, SILENT_LONG}, {AP1, .h = CRIT, .lagb = 20 * MIB}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},

    /* ---- ordering ---- */
    {.name = "priority beats position",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .replay = 900}, {AP1, .replay = 1000}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "equal priority: most advanced position",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, DOWN, 100}, {"ap", 2, DOWN, 100}},
     .members = {{EU1, SILENT_LONG}, {US1, .replay = 900}, {AP1, .replay = 1000}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "equal priority and position: node name",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US2}, {US1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "replica in the primary region is preferred",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .replay = 999}, {EU2}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-eu-2"},
    {.name = "region with no members (most preferred) is skipped",
     .regions =
         {{"eu", 1, UNKV, NEVER}, {"sa", 0, DOWN, 100}, {"us", 2, DOWN, 100}, {"ap", 3, DOWN, 100}},
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},

    /* ---- candidate health ---- */
    {.name = "unhealthy candidate skipped",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .h = CRIT}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "silent candidate skipped",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .seen = 3000}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "candidate with unknown health skipped",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .h = UNKH}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "candidate with warning health accepted",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .h = WARN}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "fenced replica skipped",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .fenced = 1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "no healthy candidate: alert, never promotion",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .h = CRIT}, {AP1, .seen = NEVER}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "no replica at all",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},

    /* ---- anti-flap, maintenance, auto_failover ---- */
    {.name = "anti-flap window",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .last_failover_ago = 100000,
     .kind = K_ALERT,
     .reason = MRD_REASON_ANTI_FLAP,
     .not_before_in = 500000},
    {.name = "anti-flap window over",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .last_failover_ago = 600000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-us-1"},
    {.name = "maintenance: primary down, no action",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .maintenance = 1,
     .kind = K_ALERT,
     .reason = MRD_REASON_MAINTENANCE},
    {.name = "maintenance: healthy, nothing",
     .regions = RG_UP,
     .members = {{EU1}, {US1}, {AP1}},
     .maintenance = 1,
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "maintenance within grace: still grace",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 4000}, {US1}, {AP1}},
     .maintenance = 1,
     .kind = K_NONE,
     .reason = MRD_REASON_FAILURE_GRACE},
    {.name = "auto_failover off",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1}, {AP1}},
     .auto_off = 1,
     .kind = K_ALERT,
     .reason = MRD_REASON_AUTO_FAILOVER_OFF},

    /* ---- two primaries, bad views ---- */
    {.name = "two live primaries reported",
     .regions = RG_UP,
     .members = {{EU1}, {US1, .role = PRI}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_MULTIPLE_PRIMARIES},
    {.name = "two primaries while the designated one is down",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .role = PRI}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_MULTIPLE_PRIMARIES},
    {.name = "stale second primary (silent) ignored",
     .regions = RG_UP,
     .members = {{EU1}, {US1, .role = PRI, SILENT_LONG}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "fenced second primary ignored",
     .regions = RG_UP,
     .members = {{EU1}, {US1, .role = PRI, .fenced = 1}, {AP1}},
     .kind = K_NONE,
     .reason = MRD_REASON_OK},
    {.name = "designated primary node absent",
     .regions = RG_UP,
     .members = {{EU1}, {US1}},
     .primary_node = "db-eu-9",
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_PRIMARY},
    {.name = "primary region unknown",
     .regions = RG_UP,
     .members = {{EU1}, {US1}},
     .primary_region = "mars",
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_PRIMARY},
    {.name = "no regions at all",
     .members = {{EU1}, {US1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_INVALID_VIEW},

    /* ---- plan (operator dry run / manual failover) ---- */
    {.name = "plan: forced target beyond lag",
     .plan = 1,
     .target = "us",
     .force = 1,
     .regions = RG_UP,
     .members = {{EU1}, {US1, .lagb = 20 * MIB}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_FORCED,
     .expect_node = "db-us-1"},
    {.name = "plan: target beyond lag without force",
     .plan = 1,
     .target = "us",
     .regions = RG_UP,
     .members = {{EU1}, {US1, .lagb = 20 * MIB}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_LAG_EXCEEDED},
    {.name = "plan: force prefers a replica within the bound",
     .plan = 1,
     .target = "us",
     .force = 1,
     .regions = RG_UP,
     .members = {{EU1}, {US1, .lagb = 20 * MIB, .replay = 999}, {US2, .replay = 100}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_MANUAL,
     .expect_node = "db-us-2"},
    {.name = "plan: unknown region",
     .plan = 1,
     .target = "mars",
     .regions = RG_UP,
     .members = {{EU1}, {US1}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_UNKNOWN_REGION},
    {.name = "plan: region without members",
     .plan = 1,
     .target = "sa",
     .regions = {{"eu", 1, UNKV, NEVER}, {"us", 2, UNKV, NEVER}, {"sa", 4, UNKV, NEVER}},
     .members = {{EU1}, {US1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "plan: force never before isolation",
     .plan = 1,
     .target = "us",
     .force = 1,
     .profile = "fast",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 1600}, {US1, .lagb = 20 * MIB}, {AP1}},
     .kind = K_WAIT,
     .reason = MRD_REASON_ISOLATION_WAIT,
     .expect_node = "db-us-1",
     .not_before_in = 400},
    {.name = "plan: old primary confirmed fenced, no wait",
     .plan = 1,
     .target = "us",
     .profile = "fast",
     .regions = RG_DOWN,
     .members = {{EU1, .seen = 1600, .confirmed = 1}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_MANUAL,
     .expect_node = "db-us-1"},
    {.name = "plan: any region, ignoring maintenance, anti-flap, auto off",
     .plan = 1,
     .regions = RG_UP,
     .members = {{EU1}, {AP1}, {US1}},
     .maintenance = 1,
     .last_failover_ago = 1000,
     .auto_off = 1,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_MANUAL,
     .expect_node = "db-us-1"},
    {.name = "plan: less preferred region on request",
     .plan = 1,
     .target = "ap",
     .regions = RG_UP,
     .members = {{EU1}, {US1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_MANUAL,
     .expect_node = "db-ap-1"},
    {.name = "plan: silent target refused even with force",
     .plan = 1,
     .target = "us",
     .force = 1,
     .regions = RG_UP,
     .members = {{EU1}, {US1, SILENT_LONG}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "plan: critical target refused even with force",
     .plan = 1,
     .target = "us",
     .force = 1,
     .regions = RG_UP,
     .members = {{EU1}, {US1, .h = CRIT}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},

    /* ---- the primary's lease set ---- */
    {.name = "lease set: critical primary, preferred us outside its lease set: failover to ap",
     .regions = RG_DOWN,
     .members = {{EU1, .h = CRIT}, {US1, .outside = 1}, {AP1}},
     .down_since_ago = 3000,
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_CRITICAL,
     .expect_node = "db-ap-1"},
    {.name = "lease set: silent primary, us outside its lease set: failover to ap",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .outside = 1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_PRIMARY_SILENT,
     .expect_node = "db-ap-1"},
    {.name = "lease set: silent primary, the only replica outside its lease set: no candidate",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .outside = 1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "lease set: silent primary that confirmed a fence: still never automatic",
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG, .fenced = 1, .confirmed = 1}, {US1, .outside = 1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "lease set: outside member beyond the lag bound too: no lag alert, no candidate",
     .regions = RG_DOWN,
     .members = {{EU1, .h = CRIT}, {US1, .outside = 1, .lagb = 20 * MIB}},
     .down_since_ago = 3000,
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "plan: target outside the lease set, primary reachable: acceptable (fence first)",
     .plan = 1,
     .target = "us",
     .regions = RG_UP,
     .members = {{EU1}, {US1, .outside = 1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_MANUAL,
     .expect_node = "db-us-1"},
    {.name = "plan: target outside the lease set, primary silent and unfenced: refused",
     .plan = 1,
     .target = "us",
     .force = 1,
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .outside = 1}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_CANDIDATE},
    {.name = "plan: any region, primary silent: the member inside the lease set is chosen",
     .plan = 1,
     .force = 1,
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG}, {US1, .outside = 1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_MANUAL,
     .expect_node = "db-ap-1"},
    {.name = "plan: target outside the lease set, silent primary confirmed its fence: acceptable",
     .plan = 1,
     .target = "us",
     .force = 1,
     .regions = RG_DOWN,
     .members = {{EU1, SILENT_LONG, .fenced = 1, .confirmed = 1}, {US1, .outside = 1}, {AP1}},
     .kind = K_FAILOVER,
     .reason = MRD_REASON_MANUAL,
     .expect_node = "db-us-1"},
    {.name = "plan: no primary known",
     .plan = 1,
     .target = "us",
     .regions = RG_UP,
     .members = {{US1}, {AP1}},
     .kind = K_ALERT,
     .reason = MRD_REASON_NO_PRIMARY},
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void build(const tc *c, mrd_view *v, mrd_policy *p)
{
    cr_assert_eq(mrd_policy_defaults(p, c->profile), 0);
    if (c->auto_off)
        p->auto_failover = 0;
    p->vantage_quorum = c->quorum;
    memset(v, 0, sizeof(*v));
    snprintf(v->service, sizeof(v->service), "orders");
    v->epoch = 7;
    snprintf(v->primary_region, sizeof(v->primary_region), "%s",
             c->primary_region ? c->primary_region : "eu");
    snprintf(v->primary_node, sizeof(v->primary_node), "%s",
             c->primary_node ? c->primary_node : "");
    v->maintenance = c->maintenance;
    v->last_failover_ms = c->last_failover_ago ? NOW - (uint64_t)c->last_failover_ago : 0;
    v->primary_down_since_ms = c->down_since_ago ? NOW - (uint64_t)c->down_since_ago : 0;
    for (size_t i = 0; i < 6 && c->regions[i].name; i++) {
        mrd_view_region *r = &v->regions[v->nregions++];
        snprintf(r->name, sizeof(r->name), "%s", c->regions[i].name);
        r->priority = c->regions[i].prio;
        r->verdict = c->regions[i].v;
        r->verdict_ms = c->regions[i].ago == NEVER ? 0 : NOW - (uint64_t)c->regions[i].ago;
    }
    for (size_t i = 0; i < 8 && c->members[i].node; i++) {
        const M *s = &c->members[i];
        mrd_view_member *m = &v->members[v->nmembers++];
        snprintf(m->node, sizeof(m->node), "%s", s->node);
        snprintf(m->region, sizeof(m->region), "%s", s->region);
        m->role = s->role;
        m->health = s->h;
        m->last_seen_ms = s->seen == NEVER ? 0 : NOW - (uint64_t)s->seen;
        m->replay_pos = s->replay;
        m->receive_pos = s->replay;
        m->current_pos = s->cur;
        m->lag_bytes = s->lagb;
        m->lag_ms = s->lagms;
        m->fenced = s->fenced;
        m->fence_confirmed = s->confirmed;
        m->outside_leases = s->outside;
    }
}

/* Criterion re-executes the binary for each test, so parameters must not
 * hold pointers: each parameter is an index into cases[]. */
ParameterizedTestParameters(decide, table)
{
    static size_t idx[NCASES];
    for (size_t i = 0; i < NCASES; i++)
        idx[i] = i;
    return cr_make_param_array(size_t, idx, NCASES);
}

ParameterizedTest(size_t *ip, decide, table)
{
    const tc *c = &cases[*ip];
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d, again;
    build(c, &v, &p);
    mrd_decision_kind k = c->plan ? mrd_decide_plan(&v, &p, NOW, c->target, c->force, &d)
                                  : mrd_decide(&v, &p, NOW, &d);
    cr_assert_eq(k, d.kind, "%s: return value", c->name);
    cr_assert_eq(d.kind, c->kind, "%s: kind %s, expected %s (%s: %s)", c->name,
                 mrd_decision_kind_name(d.kind), mrd_decision_kind_name(c->kind),
                 mrd_reason_name(d.reason), d.text);
    cr_assert_eq(d.reason, c->reason, "%s: reason %s, expected %s (%s)", c->name,
                 mrd_reason_name(d.reason), mrd_reason_name(c->reason), d.text);
    if (c->expect_node) {
        cr_assert_str_eq(d.target_node, c->expect_node, "%s: target", c->name);
    } else {
        cr_assert_str_eq(d.target_node, "", "%s: unexpected target %s", c->name, d.target_node);
        cr_assert_neq(d.kind, MRD_DECISION_FAILOVER, "%s", c->name);
    }
    if (c->not_before_in)
        cr_assert_eq(d.not_before_ms, NOW + (uint64_t)c->not_before_in,
                     "%s: not_before %llu, expected now+%lld", c->name,
                     (unsigned long long)(d.not_before_ms - NOW), c->not_before_in);
    cr_assert_neq(d.text[0], '\0', "%s: text", c->name);
    /* pure: the same arguments give the same decision */
    if (c->plan)
        mrd_decide_plan(&v, &p, NOW, c->target, c->force, &again);
    else
        mrd_decide(&v, &p, NOW, &again);
    cr_assert_eq(memcmp(&d, &again, sizeof(d)), 0, "%s: not deterministic", c->name);
}

Test(decide, table_is_large_enough)
{
    cr_assert_geq(NCASES, 45);
}

/* ---- what a table cannot show ------------------------------------------- */

static void base_view(mrd_view *v, mrd_policy *p)
{
    static const tc c = {.name = "base", .regions = RG_DOWN, .members = {{EU1}, {US1}, {AP1}}};
    build(&c, v, p);
}

Test(decide, down_since_is_carried_across_ticks)
{
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d;
    base_view(&v, &p);
    v.members[0].health = MRD_HEALTH_CRITICAL;
    uint64_t t = NOW;
    cr_assert_eq(mrd_decide(&v, &p, t, &d), MRD_DECISION_NONE);
    cr_assert_eq(d.reason, MRD_REASON_FAILURE_GRACE);
    cr_assert_eq(d.primary_down_since_ms, t);
    for (int i = 1; i <= 3; i++) { /* ticks every 500 ms: still in grace */
        mrd_view_carry(&v, &d);
        cr_assert_eq(mrd_decide(&v, &p, t + 500 * i, &d), MRD_DECISION_NONE);
        cr_assert_eq(d.primary_down_since_ms, t);
    }
    mrd_view_carry(&v, &d);
    cr_assert_eq(mrd_decide(&v, &p, t + 2000, &d), MRD_DECISION_FAILOVER, "%s", d.text);
    /* recovery resets the carried state */
    v.members[0].health = MRD_HEALTH_PASSING;
    mrd_view_carry(&v, &d);
    cr_assert_eq(mrd_decide(&v, &p, t + 2100, &d), MRD_DECISION_NONE);
    cr_assert_eq(d.primary_down_since_ms, 0);
    mrd_view_carry(&v, &d);
    cr_assert_eq(v.primary_down_since_ms, 0);
}

Test(decide, carry_ignores_other_epoch_or_service)
{
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d;
    base_view(&v, &p);
    v.members[0].health = MRD_HEALTH_CRITICAL;
    mrd_decide(&v, &p, NOW, &d);
    cr_assert_eq(d.primary_down_since_ms, NOW);
    v.epoch = 8;
    mrd_view_carry(&v, &d);
    cr_assert_eq(v.primary_down_since_ms, 0);
    v.epoch = 7;
    snprintf(v.service, sizeof(v.service), "billing");
    mrd_view_carry(&v, &d);
    cr_assert_eq(v.primary_down_since_ms, 0);
    mrd_view_carry(&v, NULL);
    cr_assert_eq(v.primary_down_since_ms, 0);
    mrd_view_carry(NULL, &d); /* no crash */
}

Test(decide, plan_lists_every_candidate_with_its_verdict)
{
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d;
    static const tc c = {
        .name = "plan list",
        .regions = RG_UP,
        .members =
            {{EU1},
             {US1, .lagb = 20 * MIB},
             {AP1},
             {.node = "db-ap-2", .region = "ap", .role = REP, .h = PASS, .seen = 100, .replay = 10},
             {.node = "db-ap-3", .region = "ap", .role = REP, .h = CRIT, .seen = 100},
             {.node = "db-ap-4", .region = "ap", .role = REP, .h = PASS, .seen = 9000},
             {.node = "db-ap-5", .region = "ap", .role = FEN, .h = PASS, .seen = 10},
             {.node = "db-ap-6", .region = "ap", .role = UNKR, .h = PASS, .seen = 10}},
    };
    build(&c, &v, &p);
    cr_assert_eq(mrd_decide_plan(&v, &p, NOW, "ap", 0, &d), MRD_DECISION_FAILOVER, "%s", d.text);
    cr_assert_str_eq(d.target_node, "db-ap-1");
    cr_assert_eq(d.ncandidates, 7); /* every member but the primary */
    struct {
        const char *node;
        mrd_reason reason;
        int acceptable, chosen;
    } want[] = {
        {"db-ap-1", MRD_REASON_OK, 1, 1},        {"db-ap-2", MRD_REASON_OUTRANKED, 1, 0},
        {"db-ap-3", MRD_REASON_UNHEALTHY, 0, 0}, {"db-ap-4", MRD_REASON_SILENT, 0, 0},
        {"db-ap-5", MRD_REASON_FENCED, 0, 0},    {"db-ap-6", MRD_REASON_NOT_REPLICA, 0, 0},
        {"db-us-1", MRD_REASON_LAG_BYTES, 0, 0},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const mrd_candidate *x = NULL;
        for (size_t j = 0; j < d.ncandidates; j++)
            if (strcmp(d.candidates[j].node, want[i].node) == 0)
                x = &d.candidates[j];
        cr_assert_not_null(x, "%s listed", want[i].node);
        cr_assert_eq(x->reason, want[i].reason, "%s: %s", want[i].node, mrd_reason_name(x->reason));
        cr_assert_eq(x->acceptable, want[i].acceptable, "%s", want[i].node);
        cr_assert_eq(x->chosen, want[i].chosen, "%s", want[i].node);
    }
    /* the chosen one comes first, and an acceptable one elsewhere is marked */
    cr_assert_str_eq(d.candidates[0].node, "db-ap-1");
    cr_assert_eq(mrd_decide_plan(&v, &p, NOW, "us", 1, &d), MRD_DECISION_FAILOVER);
    cr_assert_eq(d.candidates[0].reason, MRD_REASON_LAG_BYTES);
    cr_assert_eq(d.candidates[0].acceptable, 1);
    cr_assert_eq(d.candidates[0].chosen, 1);
    int not_target = 0;
    for (size_t j = 0; j < d.ncandidates; j++)
        not_target += d.candidates[j].reason == MRD_REASON_NOT_TARGET;
    cr_assert_eq(not_target, 2, "db-ap-1 and db-ap-2 are acceptable but not in us");
}

Test(decide, agent_of_a_critical_primary_is_a_vantage_point)
{
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d;
    base_view(&v, &p);
    v.members[0].health = MRD_HEALTH_CRITICAL;
    v.members[0].role = MRD_ROLE_UNKNOWN;
    snprintf(v.primary_node, sizeof(v.primary_node), "db-eu-1");
    v.primary_down_since_ms = NOW - 3000;
    v.regions[1].verdict = MRD_VERDICT_UP;
    v.regions[2].verdict = MRD_VERDICT_DOWN;
    cr_assert_eq(mrd_decide(&v, &p, NOW, &d), MRD_DECISION_FAILOVER, "%s", d.text);
    cr_assert_eq(d.votes_down, 3, "controller, the primary's agent, ap");
    cr_assert_eq(d.votes_up, 1);
    cr_assert_eq(d.votes_needed, 3);
    /* silent: the agent is not heard, so it does not vote */
    v.members[0].last_seen_ms = NOW - 10000;
    mrd_decide(&v, &p, NOW, &d);
    cr_assert_eq(d.votes_down, 2);
    cr_assert_eq(d.votes_needed, 2);
}

Test(decide, candidate_outside_the_lease_set_says_so)
{
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d;
    base_view(&v, &p);
    v.members[0].last_seen_ms = NOW - 10000;
    v.members[1].outside_leases = 1; /* db-us-1 */
    cr_assert_eq(mrd_decide(&v, &p, NOW, &d), MRD_DECISION_FAILOVER, "%s", d.text);
    cr_assert_str_eq(d.target_node, "db-ap-1");
    int seen = 0;
    for (size_t j = 0; j < d.ncandidates; j++)
        if (strcmp(d.candidates[j].node, "db-us-1") == 0) {
            seen = 1;
            cr_assert_eq(d.candidates[j].reason, MRD_REASON_OUTSIDE_LEASES);
            cr_assert_eq(d.candidates[j].acceptable, 0);
        }
    cr_assert(seen);
    cr_assert_str_eq(mrd_reason_name(MRD_REASON_OUTSIDE_LEASES), "outside_lease_set");
}

Test(decide, quorum_counts_are_reported)
{
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d;
    base_view(&v, &p);
    v.members[0].last_seen_ms = NOW - 10000;
    v.regions[2].verdict = MRD_VERDICT_UP;
    mrd_decide(&v, &p, NOW, &d);
    cr_assert_eq(d.votes_down, 2);
    cr_assert_eq(d.votes_up, 1);
    cr_assert_eq(d.votes_needed, 2);
}

Test(decide, invalid_input_is_an_alert_not_a_crash)
{
    static mrd_view v;
    static mrd_policy p;
    static mrd_decision d;
    base_view(&v, &p);
    cr_assert_eq(mrd_decide(NULL, &p, NOW, &d), MRD_DECISION_ALERT);
    cr_assert_eq(d.reason, MRD_REASON_INVALID_VIEW);
    cr_assert_eq(mrd_decide(&v, NULL, NOW, &d), MRD_DECISION_ALERT);
    cr_assert_eq(mrd_decide_plan(NULL, &p, NOW, "us", 0, &d), MRD_DECISION_ALERT);
    cr_assert_eq(mrd_decide(&v, &p, NOW, NULL), MRD_DECISION_ALERT);
    cr_assert_eq(mrd_decide_plan(&v, &p, NOW, NULL, 0, NULL), MRD_DECISION_ALERT);
    v.nmembers = MRD_VIEW_MAX_MEMBERS + 1;
    cr_assert_eq(mrd_decide(&v, &p, NOW, &d), MRD_DECISION_ALERT);
    cr_assert_eq(d.reason, MRD_REASON_INVALID_VIEW);
    base_view(&v, &p);
    memset(v.members[1].node, 'x', MRD_NAME_MAX); /* no terminating NUL */
    cr_assert_eq(mrd_decide(&v, &p, NOW, &d), MRD_DECISION_ALERT);
    cr_assert_eq(d.reason, MRD_REASON_INVALID_VIEW);
    base_view(&v, &p);
    char longname[MRD_NAME_MAX + 10];
    memset(longname, 'r', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_eq(mrd_decide_plan(&v, &p, NOW, longname, 0, &d), MRD_DECISION_ALERT);
    cr_assert_eq(d.reason, MRD_REASON_UNKNOWN_REGION);
    /* a store clock ahead of ours: seen "in the future" is just seen */
    v.members[0].last_seen_ms = NOW + 500;
    cr_assert_eq(mrd_decide(&v, &p, NOW, &d), MRD_DECISION_NONE);
}

Test(decide, policy_profiles)
{
    mrd_policy p;
    char err[128];
    cr_assert_eq(mrd_policy_defaults(&p, "default"), 0);
    cr_assert_eq(p.auto_failover, 1);
    cr_assert_eq(p.heartbeat_ms, 1000);
    cr_assert_eq(p.node_timeout_ms, 3000);
    cr_assert_eq(p.failure_grace_ms, 2000);
    cr_assert_eq(p.isolation_timeout_ms, 4000);
    cr_assert_eq(p.isolation_margin_ms, 1000);
    cr_assert_eq(p.max_lag_bytes, 16 * MIB);
    cr_assert_eq(p.max_lag_ms, 5000);
    cr_assert_eq(p.min_failover_interval_s, 600);
    cr_assert_eq(p.vantage_quorum, MRD_QUORUM_MAJORITY);
    cr_assert_eq(p.lease_ttl_ms, 5000);
    cr_assert_eq(mrd_policy_validate(&p, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(mrd_policy_defaults(&p, "fast"), 0);
    cr_assert_eq(p.heartbeat_ms, 250);
    cr_assert_eq(p.node_timeout_ms, 1000);
    cr_assert_eq(p.failure_grace_ms, 500);
    cr_assert_eq(p.isolation_timeout_ms, 1500);
    cr_assert_eq(p.isolation_margin_ms, 500);
    cr_assert_eq(p.lease_ttl_ms, 2000);
    cr_assert_eq(mrd_policy_validate(&p, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(mrd_policy_defaults(&p, NULL), 0);
    cr_assert_eq(p.heartbeat_ms, 1000);
    cr_assert_eq(mrd_policy_defaults(&p, "turbo"), MRD_EINVAL);
    cr_assert_eq(p.heartbeat_ms, 1000, "unknown profile leaves the default one");
    p.node_timeout_ms = 500;
    cr_assert_eq(mrd_policy_validate(&p, err, sizeof(err)), MRD_ECONFIG);
    cr_assert(strstr(err, "node_timeout_ms") != NULL, "%s", err);
    cr_assert_eq(mrd_policy_validate(NULL, err, sizeof(err)), MRD_ECONFIG);
}

Test(decide, names_are_distinct_and_parse_back)
{
    for (int i = 0; i < MRD_REASON__COUNT; i++) {
        cr_assert_str_neq(mrd_reason_name(i), "?");
        for (int j = i + 1; j < MRD_REASON__COUNT; j++)
            cr_assert_str_neq(mrd_reason_name(i), mrd_reason_name(j));
    }
    cr_assert_str_eq(mrd_reason_name(MRD_REASON__COUNT), "?");
    cr_assert_str_eq(mrd_reason_name(MRD_REASON_PRIMARY_SILENT), "primary_silent");
    cr_assert_str_eq(mrd_reason_name(MRD_REASON_ISOLATION_WAIT), "isolation_wait");
    cr_assert_str_eq(mrd_decision_kind_name(MRD_DECISION_FAILOVER), "failover");
    cr_assert_str_eq(mrd_decision_kind_name((mrd_decision_kind)-1), "?");
    for (int i = 0; i < MRD_ROLE__COUNT; i++) {
        mrd_role r;
        cr_assert_eq(mrd_role_parse(mrd_role_name(i), &r), 0);
        cr_assert_eq((int)r, i);
    }
    for (int i = 0; i < MRD_HEALTH__COUNT; i++) {
        mrd_health h;
        cr_assert_eq(mrd_health_parse(mrd_health_name(i), &h), 0);
        cr_assert_eq((int)h, i);
    }
    for (int i = 0; i < MRD_VERDICT__COUNT; i++) {
        mrd_verdict x;
        cr_assert_eq(mrd_verdict_parse(mrd_verdict_name(i), &x), 0);
        cr_assert_eq((int)x, i);
    }
    mrd_role r;
    cr_assert_eq(mrd_role_parse("leader", &r), MRD_EINVAL);
    cr_assert_eq(mrd_role_parse(NULL, &r), MRD_EINVAL);
    cr_assert_eq(mrd_role_parse("primary", NULL), MRD_EINVAL);
}
