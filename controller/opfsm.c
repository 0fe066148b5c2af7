/*
 * The operation state machine: one static const table (fsm[] below) and a
 * small pure interpreter, in the spirit of pg_auto_failover's KeeperFSM[].
 * The leader's tick calls mrd_op_advance() with the facts it observed,
 * persists the transition with mrd_op_apply() (the only place a step is
 * assigned; the caller logs t.from, t.to and t.why), then issues the commands
 * the transition lists. No I/O, no clock, no allocation.
 *
 * Crash safety: every step can be re-run after a crash without harm.
 *  - Commands carry the op's epoch and a deterministic id
 *    "<op>.<tag>/<step>/<action>" (the tag is random, fixed at creation, so a
 *    store that lost transactions and hands out an op id again cannot make
 *    two ops share a command id); agents execute an id at most once and
 *    refuse epochs below what they saw.
 *  - Registry and DNS writes compare-and-set or replace for op.epoch: applying
 *    twice is applying once.
 *  - Recorded values (barrier, lost bytes) are written with the step change in
 *    one transaction; re-running a step recomputes them from new facts only
 *    if the step change was lost, i.e. never half-written.
 *  - plan commits service.epoch := op.epoch (a set, not an increment).
 * Nothing before promote is irreversible: cancels and timeouts up to catchup
 * go to rollback (unfence the old primary: nothing lost). After promote the
 * only ways are forward or failed (an operator decides). registry and dns
 * never give up: past their timeout they stay, retrying, and report overdue.
 * rejoin may stay pending: after its timeout (or a failed rejoin) the op is
 * done with rejoin_pending = 1; the queued rejoin command stays in the store
 * for the agent's return, and that member is never a failover candidate
 * until it reports replica. Failure of the checks in mrd_opfsm_check() is a
 * programming error reported as MRD_EINTERNAL.
 * mrd_op_divergence_check() compares what the old primary reports after the
 * promotion with the fork and what the op counted (docs/diverged.md).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/opfsm.h"

#define SW   (1u << MRD_OP_SWITCHOVER)
#define FO   (1u << MRD_OP_FAILOVER)
#define BOTH (SW | FO)

typedef struct {
    unsigned kinds;          /* bit per mrd_op_kind */
    mrd_op_step from;        /* step the row leaves */
    mrd_op_step to;          /* step it enters when cond holds */
    mrd_op_cond cond;        /* rows of a step are tried in order */
    unsigned record;         /* MRD_REC_* for this transition */
    mrd_op_timeout timeout;  /* the step's timeout kind (same for all its rows) */
    mrd_op_step on_timeout;  /* where the timeout leads; == from: stay, overdue */
    unsigned timeout_record; /* MRD_REC_* when the timeout fires */
    mrd_op_action action;    /* (re)issued while in from */
    const char *comment;
} fsm_row;

/* Short names for the table only. */
#define S(x)  MRD_STEP_##x
#define C(x)  MRD_COND_##x
#define T(x)  MRD_TMO_##x
#define A(x)  MRD_ACT_##x
#define EPOCH MRD_REC_COMMIT_EPOCH
#define B_OLD MRD_REC_BARRIER_OLD
#define B_TGT MRD_REC_BARRIER_TARGET
#define LOST  MRD_REC_LOST_BYTES
#define PEND  MRD_REC_REJOIN_PENDING
#define FORK  MRD_REC_FORK
#define LOSTF (MRD_REC_LOST_BYTES | MRD_REC_FORK)

/* clang-format off */
static const fsm_row fsm[] = {
/*   kinds from         to           cond                 record timeout      on_timeout
     t_rec action       comment */
    {BOTH, S(PLAN),     S(ABORTED),  C(CANCELLED),        0,     T(PLAN),     S(ABORTED),
     0,    A(VALIDATE), "cancelled before anything was done"},
    {BOTH, S(PLAN),     S(ABORTED),  C(PLAN_INVALID),     0,     T(PLAN),     S(ABORTED),
     0,    A(VALIDATE), "target no longer acceptable; nothing was done"},
    {BOTH, S(PLAN),     S(FENCE),    C(PLAN_VALID),       EPOCH, T(PLAN),     S(ABORTED),
     0,    A(VALIDATE), "target valid; epoch committed, fence the old primary"},

    {BOTH, S(FENCE),    S(ROLLBACK), C(CANCELLED),        0,     T(FENCE),    S(ROLLBACK),
     0,    A(FENCE),    "cancelled; undo a fence that may have happened"},
    {BOTH, S(FENCE),    S(ROLLBACK), C(STEP_FAILED),      0,     T(FENCE),    S(ROLLBACK),
     0,    A(FENCE),    "old primary could not fence"},
    {SW,   S(FENCE),    S(CATCHUP),  C(FENCE_CONFIRMED),  B_OLD, T(FENCE),    S(ROLLBACK),
     0,    A(FENCE),    "old primary fenced; barrier = its final position"},
    {FO,   S(FENCE),    S(CATCHUP),  C(FENCE_CONFIRMED),  B_TGT, T(FENCE),    S(ROLLBACK),
     0,    A(FENCE),    "old primary fenced; barrier = target's received position"},
    {FO,   S(FENCE),    S(CATCHUP),  C(ISOLATED),         B_TGT, T(FENCE),    S(ROLLBACK),
     0,    A(FENCE),    "old primary silent past isolation: it has fenced itself"},

    {SW,   S(CATCHUP),  S(ROLLBACK), C(CANCELLED),        0,     T(CATCHUP),  S(ROLLBACK),
     0,    A(NONE),     "cancelled; unfence the old primary"},
    {SW,   S(CATCHUP),  S(PROMOTE),  C(CAUGHT_UP),        LOSTF, T(CATCHUP),  S(ROLLBACK),
     0,    A(NONE),     "target replayed up to the barrier: nothing lost"},
    {FO,   S(CATCHUP),  S(ROLLBACK), C(CANCELLED),        0,     T(CATCHUP),  S(PROMOTE),
     LOSTF, A(NONE),    "cancelled; unfence the old primary"},
    {FO,   S(CATCHUP),  S(PROMOTE),  C(CAUGHT_UP),        LOSTF, T(CATCHUP),  S(PROMOTE),
     LOSTF, A(NONE),    "target replayed all it received"},

    {BOTH, S(PROMOTE),  S(FAILED),   C(STEP_FAILED),      0,     T(PROMOTE),  S(FAILED),
     0,    A(PROMOTE),  "promote failed; old primary stays fenced, operator needed"},
    {BOTH, S(PROMOTE),  S(REGISTRY), C(TARGET_PRIMARY),   FORK,  T(PROMOTE),  S(FAILED),
     0,    A(PROMOTE),  "target reports primary"},

    {BOTH, S(REGISTRY), S(FAILED),   C(STEP_FAILED),      0,     T(CUTOVER),  S(REGISTRY),
     0,    A(REGISTRY), "registry refused the epoch (a newer one exists)"},
    {BOTH, S(REGISTRY), S(DNS),      C(REGISTRY_APPLIED), 0,     T(CUTOVER),  S(REGISTRY),
     0,    A(REGISTRY), "registry holds the new epoch"},

    {BOTH, S(DNS),      S(FAILED),   C(STEP_FAILED),      0,     T(CUTOVER),  S(DNS),
     0,    A(DNS),      "dns refused the change"},
    {BOTH, S(DNS),      S(REJOIN),   C(DNS_APPLIED),      0,     T(CUTOVER),  S(DNS),
     0,    A(DNS),      "dns points at the new primary"},

    {BOTH, S(REJOIN),   S(DONE),     C(STEP_FAILED),      PEND,  T(REJOIN),   S(DONE),
     PEND, A(REJOIN),   "rejoin failed; done, rejoin left to the operator"},
    {BOTH, S(REJOIN),   S(DONE),     C(REJOINED),         0,     T(REJOIN),   S(DONE),
     PEND, A(REJOIN),   "old primary follows the new one"},

    {BOTH, S(ROLLBACK), S(FAILED),   C(STEP_FAILED),      0,     T(ROLLBACK), S(FAILED),
     0,    A(UNFENCE),  "unfence failed; operator needed"},
    {BOTH, S(ROLLBACK), S(ABORTED),  C(UNFENCED),         0,     T(ROLLBACK), S(FAILED),
     0,    A(UNFENCE),  "old primary unfenced: nothing changed, nothing lost"},
};
/* clang-format on */

#undef S
#undef C
#undef T
#undef A
#undef EPOCH
#undef B_OLD
#undef B_TGT
#undef LOST
#undef PEND
#undef FORK
#undef LOSTF

#define NROWS (sizeof(fsm) / sizeof(fsm[0]))

const mrd_op_action mrd_opfsm_agent_commands[] = {MRD_ACT_FENCE, MRD_ACT_UNFENCE, MRD_ACT_PROMOTE,
                                                  MRD_ACT_REJOIN};
const size_t mrd_opfsm_agent_commands_len =
    sizeof(mrd_opfsm_agent_commands) / sizeof(mrd_opfsm_agent_commands[0]);

/* ---- names --------------------------------------------------------------- */

#define NAME_STR(n, s) s,
static const char *const kind_names[] = {MRD_OP_KIND_MAP(NAME_STR)};
static const char *const step_names[] = {MRD_OP_STEP_MAP(NAME_STR)};
static const char *const action_names[] = {MRD_OP_ACTION_MAP(NAME_STR)};
static const char *const cond_names[] = {MRD_OP_COND_MAP(NAME_STR)};
static const char *const timeout_names[] = {MRD_OP_TIMEOUT_MAP(NAME_STR)};
#undef NAME_STR

static const char *name_of(const char *const *names, int n, int v)
{
    return (v >= 0 && v < n) ? names[v] : "?";
}

static int parse_in(const char *const *names, int n, const char *name, int *out)
{
    if (!name || !out)
        return MRD_EINVAL;
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], name) == 0) {
            *out = i;
            return 0;
        }
    }
    return MRD_EINVAL;
}

const char *mrd_op_kind_name(mrd_op_kind k)
{
    return name_of(kind_names, MRD_OP_KIND__COUNT, (int)k);
}

const char *mrd_op_step_name(mrd_op_step s)
{
    return name_of(step_names, MRD_STEP__COUNT, (int)s);
}

const char *mrd_op_action_name(mrd_op_action a)
{
    return name_of(action_names, MRD_ACT__COUNT, (int)a);
}

const char *mrd_op_cond_name(mrd_op_cond c)
{
    return name_of(cond_names, MRD_COND__COUNT, (int)c);
}

const char *mrd_op_timeout_name(mrd_op_timeout t)
{
    return name_of(timeout_names, MRD_TMO__COUNT, (int)t);
}

int mrd_op_kind_parse(const char *name, mrd_op_kind *out)
{
    int v, rc = parse_in(kind_names, MRD_OP_KIND__COUNT, name, &v);
    if (rc == 0)
        *out = (mrd_op_kind)v;
    return rc;
}

int mrd_op_step_parse(const char *name, mrd_op_step *out)
{
    int v, rc = parse_in(step_names, MRD_STEP__COUNT, name, &v);
    if (rc == 0)
        *out = (mrd_op_step)v;
    return rc;
}

int mrd_op_step_terminal(mrd_op_step s)
{
    return s == MRD_STEP_DONE || s == MRD_STEP_ABORTED || s == MRD_STEP_FAILED;
}

/* ---- op creation --------------------------------------------------------- */

int mrd_op_command_id(const mrd_op *op, const char *step, const char *action, char *buf, size_t len)
{
    if (op == NULL || step == NULL || action == NULL || buf == NULL || len == 0)
        return MRD_EINVAL;
    int n = op->tag[0] ? snprintf(buf, len, "%s.%s/%s/%s", op->id, op->tag, step, action)
                       : snprintf(buf, len, "%s/%s/%s", op->id, step, action);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return MRD_EINVAL;
    }
    return 0;
}

void mrd_op_timeouts_from_policy(mrd_op_timeouts *t, mrd_op_kind kind, const mrd_policy *p)
{
    memset(t, 0, sizeof(*t));
    t->isolation_ms = p->isolation_timeout_ms + p->isolation_margin_ms;
    t->ms[MRD_TMO_PLAN] = p->fence_timeout_ms;
    t->ms[MRD_TMO_FENCE] =
        kind == MRD_OP_FAILOVER ? t->isolation_ms + p->fence_timeout_ms : p->fence_timeout_ms;
    t->ms[MRD_TMO_CATCHUP] =
        kind == MRD_OP_FAILOVER ? p->failover_catchup_timeout_ms : p->switchover_catchup_timeout_ms;
    t->ms[MRD_TMO_PROMOTE] = p->promote_timeout_ms;
    t->ms[MRD_TMO_CUTOVER] = p->cutover_timeout_ms;
    t->ms[MRD_TMO_REJOIN] = p->rejoin_timeout_ms;
    t->ms[MRD_TMO_ROLLBACK] = p->fence_timeout_ms;
}

static int copy_name(char *dst, size_t cap, const char *src)
{
    if (!src || !src[0])
        return MRD_EINVAL;
    size_t n = strnlen(src, cap);
    if (n >= cap)
        return MRD_EINVAL;
    memcpy(dst, src, n + 1);
    return 0;
}

int mrd_op_init(mrd_op *op, const char *id, mrd_op_kind kind, const char *service,
                uint64_t service_epoch, const char *from_region, const char *from_node,
                const char *to_region, const char *to_node, int force, const mrd_policy *policy,
                uint64_t now_ms)
{
    if (!op)
        return MRD_EINVAL;
    memset(op, 0, sizeof(*op));
    if (!policy || (unsigned)kind >= MRD_OP_KIND__COUNT || service_epoch == UINT64_MAX ||
        copy_name(op->id, sizeof(op->id), id) || copy_name(op->service, MRD_NAME_MAX, service) ||
        copy_name(op->from_region, MRD_NAME_MAX, from_region) ||
        copy_name(op->from_node, MRD_NAME_MAX, from_node) ||
        copy_name(op->to_region, MRD_NAME_MAX, to_region) ||
        copy_name(op->to_node, MRD_NAME_MAX, to_node)) {
        memset(op, 0, sizeof(*op));
        return MRD_EINVAL;
    }
    op->kind = kind;
    op->epoch = service_epoch + 1;
    op->force = force ? 1 : 0;
    op->step = MRD_STEP_PLAN;
    op->created_ms = now_ms;
    op->step_started_ms = now_ms;
    op->step_entered_ms[MRD_STEP_PLAN] = now_ms;
    op->failed_from = MRD_STEP_PLAN;
    snprintf(op->why, sizeof(op->why), "created");
    mrd_op_timeouts_from_policy(&op->timeouts, kind, policy);
    return 0;
}

/* ---- interpreter --------------------------------------------------------- */

static int cond_holds(mrd_op_cond c, const mrd_op *op, const mrd_op_inputs *in, uint64_t now)
{
    switch (c) {
    case MRD_COND_PLAN_VALID:
        return in->plan_ok > 0;
    case MRD_COND_PLAN_INVALID:
        return in->plan_ok < 0;
    case MRD_COND_CANCELLED:
        return in->cancel != 0;
    case MRD_COND_STEP_FAILED:
        return in->step_failed != 0;
    case MRD_COND_FENCE_CONFIRMED:
        return in->old_fence_confirmed != 0;
    case MRD_COND_ISOLATED: {
        /* never recorded: its agent's isolation clock started before the op */
        uint64_t base = in->old_last_contact_ms ? in->old_last_contact_ms : op->created_ms;
        /* a target outside the old primary's lease set granted it no lease: the
         * old primary may still be writable on the others' leases */
        return !in->old_reachable && !in->target_outside_leases && now >= base &&
               now - base >= op->timeouts.isolation_ms;
    }
    case MRD_COND_CAUGHT_UP:
        return in->target_replay_pos >= op->barrier_pos;
    case MRD_COND_TARGET_PRIMARY:
        return in->target_is_primary != 0;
    case MRD_COND_REGISTRY_APPLIED:
        return in->registry_epoch >= op->epoch;
    case MRD_COND_DNS_APPLIED:
        return in->dns_epoch >= op->epoch;
    case MRD_COND_REJOINED:
        return in->old_rejoined != 0;
    case MRD_COND_UNFENCED:
        return in->old_unfence_confirmed != 0;
    case MRD_COND_TIMEOUT:
    case MRD_COND__COUNT:
        break;
    }
    return 0;
}

/* First row of (kind, step), or NULL. */
static const fsm_row *first_row(mrd_op_kind kind, mrd_op_step step)
{
    for (size_t i = 0; i < NROWS; i++)
        if ((fsm[i].kinds & (1u << kind)) && fsm[i].from == step)
            return &fsm[i];
    return NULL;
}

static void fill_commands(const mrd_op *op, mrd_op_step step, mrd_op_transition *t)
{
    const fsm_row *r = first_row(op->kind, step);
    t->ncommands = 0;
    if (!r || r->action == MRD_ACT_NONE)
        return;
    mrd_op_command *c = &t->commands[t->ncommands++];
    memset(c, 0, sizeof(*c));
    c->action = r->action;
    c->epoch = op->epoch;
    switch (r->action) {
    case MRD_ACT_FENCE:
    case MRD_ACT_UNFENCE:
        memcpy(c->node, op->from_node, MRD_NAME_MAX);
        memcpy(c->region, op->from_region, MRD_NAME_MAX);
        break;
    case MRD_ACT_REJOIN:
        memcpy(c->node, op->from_node, MRD_NAME_MAX);
        memcpy(c->region, op->from_region, MRD_NAME_MAX);
        memcpy(c->leader_node, op->to_node, MRD_NAME_MAX);
        break;
    case MRD_ACT_PROMOTE:
    case MRD_ACT_VALIDATE:
        memcpy(c->node, op->to_node, MRD_NAME_MAX);
        memcpy(c->region, op->to_region, MRD_NAME_MAX);
        break;
    default: /* drivers: the new primary's region and node */
        memcpy(c->region, op->to_region, MRD_NAME_MAX);
        memcpy(c->leader_node, op->to_node, MRD_NAME_MAX);
        break;
    }
    mrd_op_command_id(op, mrd_op_step_name(step), mrd_op_action_name(r->action), c->command_id,
                      sizeof(c->command_id));
}

static void compute_record(const mrd_op *op, const mrd_op_inputs *in, unsigned rec,
                           mrd_op_transition *t)
{
    t->record = rec;
    t->barrier_pos = op->barrier_pos;
    t->old_last_pos = op->old_last_pos;
    t->lost_bytes = op->lost_bytes;
    t->fork_pos = op->fork_pos;
    if (rec & MRD_REC_BARRIER_OLD) {
        t->barrier_pos = in->old_final_pos;
        t->old_last_pos = in->old_final_pos;
    }
    if (rec & MRD_REC_BARRIER_TARGET) {
        /* a fence result's final position is newer than the last heartbeat's */
        t->barrier_pos = in->target_receive_pos;
        t->old_last_pos = in->old_last_pos > op->old_last_pos ? in->old_last_pos : op->old_last_pos;
        if (in->old_final_pos > t->old_last_pos)
            t->old_last_pos = in->old_final_pos;
    }
    if (rec & MRD_REC_LOST_BYTES)
        t->lost_bytes =
            t->old_last_pos > in->target_replay_pos ? t->old_last_pos - in->target_replay_pos : 0;
    /* A promoted target keeps reporting its last replayed position: the fork. */
    if ((rec & MRD_REC_FORK) && in->target_replay_pos > t->fork_pos)
        t->fork_pos = in->target_replay_pos;
}

static int op_sane(const mrd_op *op)
{
    return (unsigned)op->kind < MRD_OP_KIND__COUNT && (unsigned)op->step < MRD_STEP__COUNT &&
           memchr(op->id, 0, sizeof(op->id)) && memchr(op->from_node, 0, MRD_NAME_MAX) &&
           memchr(op->to_node, 0, MRD_NAME_MAX) && memchr(op->from_region, 0, MRD_NAME_MAX) &&
           memchr(op->to_region, 0, MRD_NAME_MAX);
}

int mrd_op_advance(const mrd_op *op, const mrd_op_inputs *in, uint64_t now, mrd_op_transition *out)
{
    if (!out)
        return MRD_EINVAL;
    memset(out, 0, sizeof(*out));
    out->result = MRD_OP_STAY;
    if (!op || !in || !op_sane(op))
        return MRD_EINVAL;
    out->from = out->to = op->step;
    compute_record(op, in, 0, out);
    if (mrd_op_step_terminal(op->step)) {
        snprintf(out->why, sizeof(out->why), "%s is terminal", mrd_op_step_name(op->step));
        return MRD_OP_STAY;
    }
    const fsm_row *first = first_row(op->kind, op->step);
    if (!first)
        return MRD_EINVAL; /* cannot happen with a checked table */
    for (size_t i = 0; i < NROWS; i++) {
        const fsm_row *r = &fsm[i];
        if (!(r->kinds & (1u << op->kind)) || r->from != op->step ||
            !cond_holds(r->cond, op, in, now))
            continue;
        out->result = MRD_OP_MOVE;
        out->to = r->to;
        out->cond = r->cond;
        compute_record(op, in, r->record, out);
        snprintf(out->why, sizeof(out->why), "%s: %s", mrd_op_cond_name(r->cond), r->comment);
        fill_commands(op, r->to, out);
        return MRD_OP_MOVE;
    }
    uint32_t ms = op->timeouts.ms[first->timeout];
    if (now >= op->step_started_ms && now - op->step_started_ms >= ms) {
        if (first->on_timeout == op->step) {
            out->overdue = 1;
            snprintf(out->why, sizeof(out->why), "%s overdue by %llu ms; retrying",
                     mrd_op_step_name(op->step),
                     (unsigned long long)(now - op->step_started_ms - ms));
            fill_commands(op, op->step, out);
            return MRD_OP_STAY;
        }
        out->result = MRD_OP_MOVE;
        out->to = first->on_timeout;
        out->cond = MRD_COND_TIMEOUT;
        compute_record(op, in, first->timeout_record, out);
        snprintf(out->why, sizeof(out->why), "timeout: %s did not finish within %u ms",
                 mrd_op_step_name(op->step), ms);
        fill_commands(op, first->on_timeout, out);
        return MRD_OP_MOVE;
    }
    snprintf(out->why, sizeof(out->why), "waiting in %s", mrd_op_step_name(op->step));
    fill_commands(op, op->step, out);
    return MRD_OP_STAY;
}

int mrd_op_apply(mrd_op *op, const mrd_op_transition *t, uint64_t now)
{
    if (!op || !t || t->from != op->step || (unsigned)t->to >= MRD_STEP__COUNT)
        return MRD_EINVAL;
    if (t->result != MRD_OP_MOVE) {
        if (t->ncommands)
            op->attempts++;
        return 0;
    }
    if (t->to == MRD_STEP_ROLLBACK ||
        ((t->to == MRD_STEP_ABORTED || t->to == MRD_STEP_FAILED) && t->from != MRD_STEP_ROLLBACK))
        op->failed_from = t->from;
    op->step = t->to;
    op->step_started_ms = now;
    op->step_entered_ms[t->to] = now;
    op->attempts = t->ncommands ? 1 : 0;
    if (t->record & (MRD_REC_BARRIER_OLD | MRD_REC_BARRIER_TARGET)) {
        op->barrier_pos = t->barrier_pos;
        op->old_last_pos = t->old_last_pos;
    }
    if (t->record & MRD_REC_LOST_BYTES)
        op->lost_bytes = t->lost_bytes;
    if (t->record & MRD_REC_REJOIN_PENDING)
        op->rejoin_pending = 1;
    if (t->record & MRD_REC_FORK)
        op->fork_pos = t->fork_pos;
    snprintf(op->why, sizeof(op->why), "%s", t->why);
    return 0;
}

/* ---- divergence ---------------------------------------------------------- */

int mrd_op_divergence_check(const mrd_op *op, uint64_t pos, mrd_op_divergence *out)
{
    if (!op || !out)
        return MRD_EINVAL;
    memset(out, 0, sizeof(*out));
    switch (op->step) {
    case MRD_STEP_REGISTRY:
    case MRD_STEP_DNS:
    case MRD_STEP_REJOIN:
    case MRD_STEP_DONE:
        break;
    default:
        return 0; /* no promotion yet (or none that completed): no fork */
    }
    uint64_t fork = op->fork_pos;
    if (fork == 0)
        fork = op->old_last_pos > op->lost_bytes ? op->old_last_pos - op->lost_bytes : 0;
    uint64_t counted = op->old_last_pos > fork ? op->old_last_pos : fork;
    if (pos <= counted || pos <= op->old_seen_pos)
        return 0;
    out->old_seen_pos = pos;
    out->diverged_bytes = pos - fork;
    out->written_after_bytes = pos - counted;
    out->first = op->written_after_bytes == 0;
    return 1;
}

void mrd_op_divergence_apply(mrd_op *op, const mrd_op_divergence *d, uint64_t now_ms)
{
    if (!op || !d || d->old_seen_pos <= op->old_seen_pos)
        return;
    op->old_seen_pos = d->old_seen_pos;
    op->diverged_bytes = d->diverged_bytes;
    op->written_after_bytes = d->written_after_bytes;
    if (op->diverged_ms == 0)
        op->diverged_ms = now_ms;
}

/* ---- self-check and graphviz -------------------------------------------- */

static int check_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int check_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return MRD_EINTERNAL;
}

/* Steps reachable from plan for one kind (bit per step). */
static unsigned reachable_from(unsigned kbit, mrd_op_step start)
{
    unsigned seen = 1u << start;
    for (int pass = 0; pass < MRD_STEP__COUNT; pass++) {
        for (size_t i = 0; i < NROWS; i++) {
            if (!(fsm[i].kinds & kbit) || !(seen & (1u << fsm[i].from)))
                continue;
            seen |= (1u << fsm[i].to) | (1u << fsm[i].on_timeout);
        }
    }
    return seen;
}

int mrd_opfsm_check(char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    for (size_t i = 0; i < NROWS; i++) {
        const fsm_row *r = &fsm[i];
        if (!r->kinds || (r->kinds & ~BOTH))
            return check_fail(err, errlen, "row %zu: bad kinds", i);
        if ((unsigned)r->from >= MRD_STEP__COUNT || (unsigned)r->to >= MRD_STEP__COUNT ||
            (unsigned)r->on_timeout >= MRD_STEP__COUNT)
            return check_fail(err, errlen, "row %zu: step out of range", i);
        if ((unsigned)r->cond >= MRD_COND__COUNT || r->cond == MRD_COND_TIMEOUT)
            return check_fail(err, errlen, "row %zu: bad condition", i);
        if ((unsigned)r->action >= MRD_ACT__COUNT || (unsigned)r->timeout >= MRD_TMO__COUNT)
            return check_fail(err, errlen, "row %zu: bad action or timeout", i);
        if (mrd_op_step_terminal(r->from))
            return check_fail(err, errlen, "row %zu: terminal step %s has a row out", i,
                              mrd_op_step_name(r->from));
        if (r->to == r->from)
            return check_fail(err, errlen, "row %zu: condition leads nowhere", i);
        if (r->timeout == MRD_TMO_NONE)
            return check_fail(err, errlen, "row %zu: step %s has no timeout", i,
                              mrd_op_step_name(r->from));
        if (!r->comment || !r->comment[0])
            return check_fail(err, errlen, "row %zu: no comment", i);
        for (size_t j = 0; j < i; j++) {
            const fsm_row *q = &fsm[j];
            if (!(q->kinds & r->kinds) || q->from != r->from)
                continue;
            if (q->timeout != r->timeout || q->on_timeout != r->on_timeout ||
                q->timeout_record != r->timeout_record || q->action != r->action)
                return check_fail(err, errlen,
                                  "row %zu: step %s disagrees with row %zu on timeout or action", i,
                                  mrd_op_step_name(r->from), j);
            if (q->cond == r->cond)
                return check_fail(err, errlen, "row %zu: duplicate condition of row %zu", i, j);
        }
    }
    for (int k = 0; k < MRD_OP_KIND__COUNT; k++) {
        unsigned kbit = 1u << k;
        unsigned reach = reachable_from(kbit, MRD_STEP_PLAN);
        for (int s = 0; s < MRD_STEP__COUNT; s++) {
            int rows = first_row((mrd_op_kind)k, (mrd_op_step)s) != NULL;
            if (!(reach & (1u << s))) {
                if (rows)
                    return check_fail(err, errlen, "%s: step %s has rows but is unreachable",
                                      mrd_op_kind_name(k), mrd_op_step_name(s));
                continue;
            }
            if (mrd_op_step_terminal((mrd_op_step)s))
                continue;
            if (!rows)
                return check_fail(err, errlen, "%s: step %s has no way out", mrd_op_kind_name(k),
                                  mrd_op_step_name(s));
            unsigned after = reachable_from(kbit, (mrd_op_step)s);
            if (!(after &
                  ((1u << MRD_STEP_DONE) | (1u << MRD_STEP_ABORTED) | (1u << MRD_STEP_FAILED))))
                return check_fail(err, errlen, "%s: step %s cannot reach a terminal step",
                                  mrd_op_kind_name(k), mrd_op_step_name(s));
        }
        if (!(reach & (1u << MRD_STEP_DONE)))
            return check_fail(err, errlen, "%s: done is unreachable", mrd_op_kind_name(k));
    }
    return 0;
}

typedef struct {
    char *buf;
    size_t len, used;
} dot_out;

static void dot_put(dot_out *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void dot_put(dot_out *d, const char *fmt, ...)
{
    va_list ap;
    size_t room = d->used < d->len ? d->len - d->used : 0;
    va_start(ap, fmt);
    int n = vsnprintf(room ? d->buf + d->used : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        d->used += (size_t)n;
}

size_t mrd_opfsm_dot(char *buf, size_t len)
{
    dot_out d = {buf, len, 0};
    if (buf && len)
        buf[0] = '\0';
    else
        d.len = 0;
    dot_put(&d, "digraph opfsm {\n  rankdir=LR;\n  node [shape=box];\n");
    for (int k = 0; k < MRD_OP_KIND__COUNT; k++) {
        const char *kn = mrd_op_kind_name(k);
        unsigned reach = reachable_from(1u << k, MRD_STEP_PLAN);
        dot_put(&d, "  subgraph cluster_%s {\n    label=\"%s\";\n", kn, kn);
        for (int s = 0; s < MRD_STEP__COUNT; s++) {
            if (!(reach & (1u << s)))
                continue;
            const fsm_row *r = first_row((mrd_op_kind)k, (mrd_op_step)s);
            dot_put(&d, "    %s_%s [label=\"%s\\n(%s)\"%s];\n", kn, mrd_op_step_name(s),
                    mrd_op_step_name(s), r ? mrd_op_action_name(r->action) : "end",
                    mrd_op_step_terminal((mrd_op_step)s) ? " shape=doublecircle" : "");
        }
        for (size_t i = 0; i < NROWS; i++) {
            const fsm_row *r = &fsm[i];
            if (!(r->kinds & (1u << k)))
                continue;
            dot_put(&d, "    %s_%s -> %s_%s [label=\"%s\"];\n", kn, mrd_op_step_name(r->from), kn,
                    mrd_op_step_name(r->to), mrd_op_cond_name(r->cond));
            if (first_row((mrd_op_kind)k, r->from) == r)
                dot_put(&d, "    %s_%s -> %s_%s [label=\"timeout (%s)\" style=dashed];\n", kn,
                        mrd_op_step_name(r->from), kn, mrd_op_step_name(r->on_timeout),
                        mrd_op_timeout_name(r->timeout));
        }
        dot_put(&d, "  }\n");
    }
    dot_put(&d, "}\n");
    if (buf && len && d.used >= len)
        buf[len - 1] = '\0';
    return d.used;
}
