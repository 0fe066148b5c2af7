/*
 * The failover decision: mrd_decide() and mrd_decide_plan(), pure functions
 * of (view, policy, now). Called by the leader's tick once per service (and by
 * the API for a dry run or to validate a manual failover). No I/O, no clock,
 * no allocation, no global state: the same arguments always give the same
 * decision, which is what makes the table tests in tests/unit/test_decide.c
 * exhaustive.
 *
 * Invariants kept here (see include/meridian/decide.h for the full order):
 * - never a FAILOVER while the primary is up (failback is never automatic);
 * - never a FAILOVER to a member that is not a live, healthy replica within
 *   the RPO bound: with no candidate the answer is an alert;
 * - never a FAILOVER to replace a silent, unfenced primary before its last
 *   recorded contact + isolation_timeout + isolation_margin (WAIT instead);
 * - never a FAILOVER when the vantage quorum does not see the primary down
 *   (the primary's own agent, when heard reporting it critical or fenced, is
 *   one of the vantage points);
 * - never an automatic FAILOVER to a member outside the primary's reported
 *   lease set (nor a planned one while the primary is silent and unfenced).
 * Bad input (NULL, counts out of range, names without a terminating NUL
 * within MRD_NAME_MAX) gives ALERT invalid_view, never a crash.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "meridian/decide.h"
#include "meridian/error.h"

/* ---- name tables --------------------------------------------------------- */

#define NAME_STR(n, s) s,
static const char *const role_names[] = {MRD_ROLE_MAP(NAME_STR)};
static const char *const health_names[] = {MRD_HEALTH_MAP(NAME_STR)};
static const char *const verdict_names[] = {MRD_VERDICT_MAP(NAME_STR)};
static const char *const decision_names[] = {MRD_DECISION_MAP(NAME_STR)};
static const char *const reason_names[] = {MRD_REASON_MAP(NAME_STR)};
#undef NAME_STR

static const char *name_of(const char *const *names, int n, int v)
{
    return (v >= 0 && v < n) ? names[v] : "?";
}

static int parse_in(const char *const *names, int n, const char *name, int *out)
{
    if (!name)
        return MRD_EINVAL;
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], name) == 0) {
            *out = i;
            return 0;
        }
    }
    return MRD_EINVAL;
}

const char *mrd_role_name(mrd_role r)
{
    return name_of(role_names, MRD_ROLE__COUNT, (int)r);
}

const char *mrd_health_name(mrd_health h)
{
    return name_of(health_names, MRD_HEALTH__COUNT, (int)h);
}

const char *mrd_verdict_name(mrd_verdict v)
{
    return name_of(verdict_names, MRD_VERDICT__COUNT, (int)v);
}

const char *mrd_decision_kind_name(mrd_decision_kind k)
{
    return name_of(decision_names, MRD_DECISION__COUNT, (int)k);
}

const char *mrd_reason_name(mrd_reason r)
{
    return name_of(reason_names, MRD_REASON__COUNT, (int)r);
}

int mrd_role_parse(const char *name, mrd_role *out)
{
    int v, rc = parse_in(role_names, MRD_ROLE__COUNT, name, &v);
    if (rc == 0 && out)
        *out = (mrd_role)v;
    return out ? rc : MRD_EINVAL;
}

int mrd_health_parse(const char *name, mrd_health *out)
{
    int v, rc = parse_in(health_names, MRD_HEALTH__COUNT, name, &v);
    if (rc == 0 && out)
        *out = (mrd_health)v;
    return out ? rc : MRD_EINVAL;
}

int mrd_verdict_parse(const char *name, mrd_verdict *out)
{
    int v, rc = parse_in(verdict_names, MRD_VERDICT__COUNT, name, &v);
    if (rc == 0 && out)
        *out = (mrd_verdict)v;
    return out ? rc : MRD_EINVAL;
}

/* ---- policy -------------------------------------------------------------- */

int mrd_policy_defaults(mrd_policy *p, const char *profile)
{
    if (!p)
        return MRD_EINVAL;
    *p = (mrd_policy){
        .auto_failover = 1,
        .heartbeat_ms = 1000,
        .lease_ttl_ms = 5000,
        .node_timeout_ms = 3000,
        .failure_grace_ms = 2000,
        .isolation_timeout_ms = 4000,
        .isolation_margin_ms = 1000,
        .max_lag_bytes = 16u * 1024 * 1024,
        .max_lag_ms = 5000,
        .min_failover_interval_s = 600,
        .vantage_quorum = MRD_QUORUM_MAJORITY,
        .fence_timeout_ms = 10000,
        .switchover_catchup_timeout_ms = 30000,
        .failover_catchup_timeout_ms = 10000,
        .promote_timeout_ms = 60000,
        .cutover_timeout_ms = 30000,
        .rejoin_timeout_ms = 300000,
    };
    if (!profile || strcmp(profile, "default") == 0)
        return 0;
    if (strcmp(profile, "fast") == 0) {
        p->heartbeat_ms = 250;
        p->lease_ttl_ms = 2000;
        p->node_timeout_ms = 1000;
        p->failure_grace_ms = 500;
        p->isolation_timeout_ms = 1500;
        p->isolation_margin_ms = 500;
        p->fence_timeout_ms = 5000;
        return 0;
    }
    return MRD_EINVAL;
}

static int policy_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return MRD_ECONFIG;
}

int mrd_policy_validate(const mrd_policy *p, char *err, size_t errlen)
{
    if (!p)
        return policy_err(err, errlen, "policy: missing");
    if (p->heartbeat_ms == 0)
        return policy_err(err, errlen, "heartbeat_ms: must be positive");
    if (p->node_timeout_ms <= p->heartbeat_ms)
        return policy_err(err, errlen, "node_timeout_ms: must be greater than heartbeat_ms");
    if (p->isolation_timeout_ms <= p->heartbeat_ms)
        return policy_err(err, errlen, "isolation_timeout_ms: must be greater than heartbeat_ms");
    if (p->lease_ttl_ms < 3 * p->heartbeat_ms / 2 || p->lease_ttl_ms == 0)
        return policy_err(err, errlen, "lease_ttl_ms: must be at least 1.5 heartbeats");
    if (p->fence_timeout_ms == 0 || p->switchover_catchup_timeout_ms == 0 ||
        p->failover_catchup_timeout_ms == 0 || p->promote_timeout_ms == 0 ||
        p->cutover_timeout_ms == 0 || p->rejoin_timeout_ms == 0)
        return policy_err(err, errlen, "operation timeouts: must be positive");
    if (err && errlen)
        err[0] = '\0';
    return 0;
}

/* ---- helpers ------------------------------------------------------------- */

static int name_ok(const char *s)
{
    return memchr(s, '\0', MRD_NAME_MAX) != NULL;
}

static int name_eq(const char *a, const char *b)
{
    return strncmp(a, b, MRD_NAME_MAX) == 0;
}

static void name_copy(char *dst, const char *src)
{
    size_t n = strnlen(src, MRD_NAME_MAX - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void say(mrd_decision *out, mrd_decision_kind kind, mrd_reason reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void say(mrd_decision *out, mrd_decision_kind kind, mrd_reason reason, const char *fmt, ...)
{
    va_list ap;
    out->kind = kind;
    out->reason = reason;
    va_start(ap, fmt);
    vsnprintf(out->text, sizeof(out->text), fmt, ap);
    va_end(ap);
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static int member_silent(const mrd_view_member *m, const mrd_policy *p, uint64_t now)
{
    if (m->last_seen_ms == 0)
        return 1;
    if (m->last_seen_ms >= now) /* store clock ahead of ours: just seen */
        return 0;
    return now - m->last_seen_ms >= p->node_timeout_ms;
}

static int region_index(const mrd_view *v, const char *name)
{
    for (size_t i = 0; i < v->nregions; i++)
        if (name_eq(v->regions[i].name, name))
            return (int)i;
    return -1;
}

static int region_priority(const mrd_view *v, const char *name)
{
    int r = region_index(v, name);
    return r < 0 ? INT_MAX : v->regions[r].priority;
}

/* Structural checks: counts in range, every name terminated. */
static int view_valid(const mrd_view *v)
{
    if (v->nregions == 0 || v->nregions > MRD_VIEW_MAX_REGIONS ||
        v->nmembers > MRD_VIEW_MAX_MEMBERS)
        return 0;
    if (!name_ok(v->service) || !name_ok(v->primary_region) || !name_ok(v->primary_node))
        return 0;
    for (size_t i = 0; i < v->nregions; i++)
        if (!name_ok(v->regions[i].name))
            return 0;
    for (size_t i = 0; i < v->nmembers; i++)
        if (!name_ok(v->members[i].node) || !name_ok(v->members[i].region))
            return 0;
    return 1;
}

/* The primary member: the one named by primary_node, else the member of
 * primary_region reporting role primary (a live one first). -1 if none. */
static int find_primary(const mrd_view *v, const mrd_policy *p, uint64_t now)
{
    int found = -1;
    if (v->primary_node[0]) {
        for (size_t i = 0; i < v->nmembers; i++)
            if (name_eq(v->members[i].node, v->primary_node))
                return (int)i;
        return -1;
    }
    for (size_t i = 0; i < v->nmembers; i++) {
        const mrd_view_member *m = &v->members[i];
        if (m->role != MRD_ROLE_PRIMARY || !name_eq(m->region, v->primary_region))
            continue;
        if (!member_silent(m, p, now))
            return (int)i;
        if (found < 0)
            found = (int)i;
    }
    return found;
}

/* Why the primary is down (PRIMARY_CRITICAL/SILENT/FENCED) or OK. */
static mrd_reason primary_state(const mrd_view_member *m, const mrd_policy *p, uint64_t now)
{
    if (member_silent(m, p, now))
        return MRD_REASON_PRIMARY_SILENT;
    if (m->health == MRD_HEALTH_CRITICAL)
        return MRD_REASON_PRIMARY_CRITICAL;
    if (m->fenced || m->role == MRD_ROLE_FENCED)
        return MRD_REASON_PRIMARY_FENCED;
    return MRD_REASON_OK;
}

/* Start of the current outage: the carried value, or for a silent node the
 * moment it crossed node_timeout, whichever is earlier; now if neither. */
static uint64_t down_since(const mrd_view *v, const mrd_view_member *m, const mrd_policy *p,
                           uint64_t now)
{
    uint64_t since = now;
    if (v->primary_down_since_ms && v->primary_down_since_ms < since)
        since = v->primary_down_since_ms;
    if (m->last_seen_ms && member_silent(m, p, now)) {
        uint64_t s = add_sat(m->last_seen_ms, p->node_timeout_ms);
        if (s < since)
            since = s;
    }
    return since;
}

/* Earliest time a silent, unfenced primary may be replaced; 0 if now. */
static uint64_t isolation_deadline(const mrd_view_member *m, const mrd_policy *p, uint64_t now,
                                   uint64_t since)
{
    if (m->fence_confirmed || !member_silent(m, p, now))
        return 0; /* confirmed, or reachable: the operation fences it first */
    /* never recorded: count from the start of the outage instead */
    uint64_t base = m->last_seen_ms ? m->last_seen_ms : since;
    uint64_t deadline =
        add_sat(base, (uint64_t)p->isolation_timeout_ms + (uint64_t)p->isolation_margin_ms);
    return now >= deadline ? 0 : deadline;
}

/* Verdict of one member as a target. *lag_only: failed only the lag bound.
 * lease_strict: a member outside the primary's lease set is refused. */
static mrd_reason judge(const mrd_view_member *m, const mrd_policy *p, uint64_t now,
                        int lease_strict, int *lag_only)
{
    *lag_only = 0;
    if (m->fenced || m->role == MRD_ROLE_FENCED)
        return MRD_REASON_FENCED;
    if (m->role != MRD_ROLE_REPLICA)
        return MRD_REASON_NOT_REPLICA;
    if (member_silent(m, p, now))
        return MRD_REASON_SILENT;
    if (m->health != MRD_HEALTH_PASSING && m->health != MRD_HEALTH_WARNING)
        return MRD_REASON_UNHEALTHY;
    if (lease_strict && m->outside_leases)
        return MRD_REASON_OUTSIDE_LEASES;
    if (m->lag_bytes > p->max_lag_bytes) {
        *lag_only = 1;
        return MRD_REASON_LAG_BYTES;
    }
    if (m->lag_ms > p->max_lag_ms) {
        *lag_only = 1;
        return MRD_REASON_LAG_MS;
    }
    return MRD_REASON_OK;
}

/* Sort group: 0 acceptable, 1 acceptable only by force, 2 acceptable but
 * outside the requested region, 3 not acceptable. */
static int cand_group(const mrd_candidate *c, int in_target)
{
    if (!c->acceptable)
        return 3;
    if (!in_target)
        return 2;
    return c->reason == MRD_REASON_OK ? 0 : 1;
}

typedef struct {
    mrd_candidate c;
    int group;
} ranked;

static int ranked_before(const ranked *a, const ranked *b)
{
    if (a->group != b->group)
        return a->group < b->group;
    if (a->c.priority != b->c.priority)
        return a->c.priority < b->c.priority;
    if (a->c.replay_pos != b->c.replay_pos)
        return a->c.replay_pos > b->c.replay_pos;
    return strncmp(a->c.node, b->c.node, MRD_NAME_MAX) < 0;
}

/*
 * Fills out->candidates with every member but the primary, best first, and
 * marks the chosen one. Returns its index in out->candidates or -1;
 * *lag_blocked is set when some member failed only the lag bound (and force
 * did not accept it).
 */
static int rank_candidates(const mrd_view *v, const mrd_policy *p, uint64_t now, int prim,
                           const char *target_region, int force, int lease_strict,
                           mrd_decision *out, int *lag_blocked)
{
    ranked r[MRD_VIEW_MAX_MEMBERS];
    size_t n = 0;
    *lag_blocked = 0;
    for (size_t i = 0; i < v->nmembers; i++) {
        const mrd_view_member *m = &v->members[i];
        int lag_only, in_target;
        if ((int)i == prim)
            continue;
        ranked *x = &r[n++];
        memset(x, 0, sizeof(*x));
        name_copy(x->c.node, m->node);
        name_copy(x->c.region, m->region);
        x->c.priority = region_priority(v, m->region);
        x->c.replay_pos = m->replay_pos;
        x->c.lag_bytes = m->lag_bytes;
        x->c.lag_ms = m->lag_ms;
        x->c.reason = judge(m, p, now, lease_strict, &lag_only);
        in_target = !target_region || !target_region[0] || name_eq(m->region, target_region);
        x->c.acceptable = x->c.reason == MRD_REASON_OK || (lag_only && force);
        if (lag_only && !force && in_target)
            *lag_blocked = 1;
        x->group = cand_group(&x->c, in_target);
        if (x->group == 2)
            x->c.reason = MRD_REASON_NOT_TARGET;
    }
    /* insertion sort: at most MRD_VIEW_MAX_MEMBERS entries */
    for (size_t i = 1; i < n; i++) {
        ranked t = r[i];
        size_t j = i;
        while (j > 0 && ranked_before(&t, &r[j - 1])) {
            r[j] = r[j - 1];
            j--;
        }
        r[j] = t;
    }
    int chosen = -1;
    for (size_t i = 0; i < n; i++) {
        out->candidates[i] = r[i].c;
        if (r[i].group <= 1) {
            if (chosen < 0) {
                chosen = (int)i;
                out->candidates[i].chosen = 1;
            } else if (r[i].group == 0) {
                out->candidates[i].reason = MRD_REASON_OUTRANKED;
            }
        }
    }
    out->ncandidates = n;
    return chosen;
}

static void set_target(mrd_decision *out, const mrd_candidate *c)
{
    name_copy(out->target_region, c->region);
    name_copy(out->target_node, c->node);
}

/* Common start of both entry points: zero *out, check the inputs, find the
 * primary. Returns its index, or -1 with *out already an ALERT. */
static int begin(const mrd_view *v, const mrd_policy *p, uint64_t now, mrd_decision *out)
{
    if (!out)
        return -1;
    memset(out, 0, sizeof(*out));
    if (!v || !p || !view_valid(v)) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_INVALID_VIEW, "view or policy is invalid");
        return -1;
    }
    name_copy(out->service, v->service);
    out->epoch = v->epoch;
    if (region_index(v, v->primary_region) < 0) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_NO_PRIMARY, "primary region %s is not in the view",
            v->primary_region);
        return -1;
    }
    int prim = find_primary(v, p, now);
    if (prim < 0) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_NO_PRIMARY, "no primary member in region %s",
            v->primary_region);
        return -1;
    }
    return prim;
}

/* ---- decide -------------------------------------------------------------- */

/* Counts the vantage points; returns 1 if enough see the primary down.
 * agent_down: the primary's own agent, heard, reports it down (critical or
 * fenced): one more vantage point, the closest one. */
static int quorum(const mrd_view *v, const mrd_policy *p, uint64_t now, int agent_down,
                  mrd_decision *out)
{
    uint32_t down = 1 + (agent_down ? 1 : 0), up = 0; /* the controller's own view: down */
    for (size_t i = 0; i < v->nregions; i++) {
        const mrd_view_region *r = &v->regions[i];
        if (name_eq(r->name, v->primary_region) || r->verdict_ms == 0)
            continue;
        if (r->verdict_ms < now && now - r->verdict_ms >= p->node_timeout_ms)
            continue; /* stale: abstains */
        if (r->verdict == MRD_VERDICT_DOWN)
            down++;
        else if (r->verdict == MRD_VERDICT_UP)
            up++;
    }
    out->votes_down = down;
    out->votes_up = up;
    out->votes_needed =
        p->vantage_quorum == MRD_QUORUM_MAJORITY ? (down + up) / 2 + 1 : p->vantage_quorum;
    return down >= out->votes_needed;
}

mrd_decision_kind mrd_decide(const mrd_view *v, const mrd_policy *p, uint64_t now,
                             mrd_decision *out)
{
    int prim = begin(v, p, now, out);
    if (prim < 0)
        return out ? out->kind : MRD_DECISION_ALERT;
    const mrd_view_member *pm = &v->members[prim];

    out->primary_state = primary_state(pm, p, now);
    uint64_t since = now;
    if (out->primary_state != MRD_REASON_OK)
        out->primary_down_since_ms = since = down_since(v, pm, p, now);
    for (size_t i = 0; i < v->nmembers; i++) {
        const mrd_view_member *m = &v->members[i];
        if ((int)i != prim && m->role == MRD_ROLE_PRIMARY && !m->fenced &&
            !member_silent(m, p, now)) {
            say(out, MRD_DECISION_ALERT, MRD_REASON_MULTIPLE_PRIMARIES,
                "%s in %s reports primary besides %s", m->node, m->region, pm->node);
            return out->kind;
        }
    }

    if (out->primary_state == MRD_REASON_OK) {
        say(out, MRD_DECISION_NONE, MRD_REASON_OK, "primary %s in %s is up", pm->node, pm->region);
        return out->kind;
    }
    const char *state = mrd_reason_name(out->primary_state);
    if (now - since < p->failure_grace_ms) {
        out->not_before_ms = since + p->failure_grace_ms;
        say(out, MRD_DECISION_NONE, MRD_REASON_FAILURE_GRACE,
            "primary %s down (%s) for %llu ms, within failure grace", pm->node, state,
            (unsigned long long)(now - since));
        return out->kind;
    }
    if (v->maintenance) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_MAINTENANCE,
            "primary %s down (%s); maintenance mode: no automatic action", pm->node, state);
        return out->kind;
    }
    if (!p->auto_failover) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_AUTO_FAILOVER_OFF,
            "primary %s down (%s); auto_failover is off", pm->node, state);
        return out->kind;
    }
    /* A primary whose agent is heard reporting it critical (a hung or
     * stopped PostgreSQL: its status query and checks time out) or fenced
     * adds the agent's vote to the controller's: with application-level
     * (postgresql) probes, the other regions see a hung server down too; a
     * check that fails only on the primary's own node is outvoted. */
    if (!quorum(v, p, now, out->primary_state != MRD_REASON_PRIMARY_SILENT, out)) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_QUORUM_NOT_REACHED,
            "primary %s down (%s) here, but only %u of %u needed vantage points agree (%u see "
            "it up)",
            pm->node, state, out->votes_down, out->votes_needed, out->votes_up);
        return out->kind;
    }
    if (v->last_failover_ms) {
        uint64_t until = add_sat(v->last_failover_ms, (uint64_t)p->min_failover_interval_s * 1000);
        if (now < until) {
            out->not_before_ms = until;
            say(out, MRD_DECISION_ALERT, MRD_REASON_ANTI_FLAP,
                "primary %s down (%s); last failover too recent", pm->node, state);
            return out->kind;
        }
    }
    int lag_blocked;
    int c = rank_candidates(v, p, now, prim, NULL, 0, 1, out, &lag_blocked);
    if (c < 0) {
        if (lag_blocked)
            say(out, MRD_DECISION_ALERT, MRD_REASON_LAG_EXCEEDED,
                "primary %s down (%s); every live replica is beyond the lag bound", pm->node,
                state);
        else
            say(out, MRD_DECISION_ALERT, MRD_REASON_NO_CANDIDATE,
                "primary %s down (%s); no healthy replica to promote", pm->node, state);
        return out->kind;
    }
    set_target(out, &out->candidates[c]);
    uint64_t deadline = isolation_deadline(pm, p, now, since);
    if (deadline) {
        out->not_before_ms = deadline;
        say(out, MRD_DECISION_WAIT, MRD_REASON_ISOLATION_WAIT,
            "primary %s down (%s); waiting for isolation before failover to %s", pm->node, state,
            out->target_node);
        return out->kind;
    }
    say(out, MRD_DECISION_FAILOVER, out->primary_state,
        "primary %s down (%s); failover to %s in %s", pm->node, state, out->target_node,
        out->target_region);
    return out->kind;
}

/* ---- plan ---------------------------------------------------------------- */

mrd_decision_kind mrd_decide_plan(const mrd_view *v, const mrd_policy *p, uint64_t now,
                                  const char *target_region, int force, mrd_decision *out)
{
    int prim = begin(v, p, now, out);
    if (prim < 0)
        return out ? out->kind : MRD_DECISION_ALERT;
    const mrd_view_member *pm = &v->members[prim];
    if (target_region && !name_ok(target_region)) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_UNKNOWN_REGION, "target region name too long");
        return out->kind;
    }
    int any = !target_region || !target_region[0];
    if (!any && region_index(v, target_region) < 0) {
        say(out, MRD_DECISION_ALERT, MRD_REASON_UNKNOWN_REGION, "unknown region %s", target_region);
        return out->kind;
    }
    out->primary_state = primary_state(pm, p, now);
    uint64_t since = now;
    if (out->primary_state != MRD_REASON_OK)
        out->primary_down_since_ms = since = down_since(v, pm, p, now);

    int lag_blocked;
    /* a silent primary that confirmed no fence can only be replaced after the
     * isolation wait, which a member outside its lease set cannot rely on */
    int lease_strict = member_silent(pm, p, now) && !pm->fence_confirmed;
    int c = rank_candidates(v, p, now, prim, any ? NULL : target_region, force, lease_strict, out,
                            &lag_blocked);
    const char *where = any ? "any region" : target_region;
    if (c < 0) {
        if (lag_blocked)
            say(out, MRD_DECISION_ALERT, MRD_REASON_LAG_EXCEEDED,
                "every live replica in %s is beyond the lag bound (force would accept)", where);
        else
            say(out, MRD_DECISION_ALERT, MRD_REASON_NO_CANDIDATE, "no healthy replica in %s",
                where);
        return out->kind;
    }
    const mrd_candidate *t = &out->candidates[c];
    set_target(out, t);
    mrd_reason why = t->reason == MRD_REASON_OK ? MRD_REASON_MANUAL : MRD_REASON_FORCED;
    uint64_t deadline = isolation_deadline(pm, p, now, since);
    if (deadline) {
        out->not_before_ms = deadline;
        say(out, MRD_DECISION_WAIT, MRD_REASON_ISOLATION_WAIT,
            "failover to %s acceptable (%s); old primary %s is silent: promotion waits for "
            "isolation",
            t->node, mrd_reason_name(why), pm->node);
        return out->kind;
    }
    say(out, MRD_DECISION_FAILOVER, why, "failover to %s in %s acceptable (%s, %llu bytes behind)",
        t->node, t->region, mrd_reason_name(t->reason), (unsigned long long)t->lag_bytes);
    return out->kind;
}

void mrd_view_carry(mrd_view *next, const mrd_decision *prev)
{
    if (!next)
        return;
    if (prev && prev->epoch == next->epoch && name_ok(next->service) &&
        name_eq(prev->service, next->service))
        next->primary_down_since_ms = prev->primary_down_since_ms;
    else
        next->primary_down_since_ms = 0;
}
