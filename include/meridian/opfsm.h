/*
 * The operation state machine (switchover, failover): one static const table
 * of transitions and a pure interpreter. No I/O, no clock: the leader's tick
 * gathers the facts it observed (mrd_op_inputs), calls mrd_op_advance(),
 * persists the result with mrd_op_apply() (in the transaction that re-checks
 * its lease; when commit_epoch is set, the service's epoch := op.epoch in the
 * same transaction), and only then issues the commands/driver calls listed in
 * the transition. Every action is idempotent (commands carry a deterministic
 * id and the op's epoch), so a new leader resumes at the persisted step and
 * simply issues the step's actions again. See controller/opfsm.c for the
 * table.
 */
#ifndef MERIDIAN_OPFSM_H
#define MERIDIAN_OPFSM_H

#include <stddef.h>
#include <stdint.h>

#include "meridian/decide.h"

#define MRD_OP_ID_MAX     64
#define MRD_OP_WHY_MAX    160
#define MRD_OP_CMD_ID_MAX 96
#define MRD_OP_TAG_MAX    17 /* 16 hex digits and the NUL */

#define MRD_OP_KIND_MAP(XX)                                                                        \
    XX(SWITCHOVER, "switchover")                                                                   \
    XX(FAILOVER, "failover")

typedef enum {
#define MRD__OPK_ENUM(n, s) MRD_OP_##n,
    MRD_OP_KIND_MAP(MRD__OPK_ENUM)
#undef MRD__OPK_ENUM
        MRD_OP_KIND__COUNT
} mrd_op_kind;

/* Steps. done, aborted and failed are terminal. rollback is the abort path
 * of a fence that may have happened: unfence the old primary, then aborted. */
#define MRD_OP_STEP_MAP(XX)                                                                        \
    XX(PLAN, "plan")                                                                               \
    XX(FENCE, "fence")                                                                             \
    XX(CATCHUP, "catchup")                                                                         \
    XX(PROMOTE, "promote")                                                                         \
    XX(REGISTRY, "registry")                                                                       \
    XX(DNS, "dns")                                                                                 \
    XX(REJOIN, "rejoin")                                                                           \
    XX(DONE, "done")                                                                               \
    XX(ROLLBACK, "rollback")                                                                       \
    XX(ABORTED, "aborted")                                                                         \
    XX(FAILED, "failed")

typedef enum {
#define MRD__STEP_ENUM(n, s) MRD_STEP_##n,
    MRD_OP_STEP_MAP(MRD__STEP_ENUM)
#undef MRD__STEP_ENUM
        MRD_STEP__COUNT
} mrd_op_step;

/* What the leader does while the op is in a step (re-issued every tick
 * while the step lasts; each is idempotent). */
#define MRD_OP_ACTION_MAP(XX)                                                                      \
    XX(NONE, "none")         /* nothing to send; just observe */                                   \
    XX(VALIDATE, "validate") /* re-run mrd_decide_plan for the target */                           \
    XX(FENCE, "fence")       /* agent command to the old primary */                                \
    XX(UNFENCE, "unfence")   /* agent command to the old primary */                                \
    XX(PROMOTE, "promote")   /* agent command to the target */                                     \
    XX(REJOIN, "rejoin")     /* agent command: old primary follows target */                       \
    XX(REGISTRY, "registry") /* etcd compare-and-swap on the epoch */                              \
    XX(DNS, "dns")           /* replace the service's record(s) */

typedef enum {
#define MRD__ACT_ENUM(n, s) MRD_ACT_##n,
    MRD_OP_ACTION_MAP(MRD__ACT_ENUM)
#undef MRD__ACT_ENUM
        MRD_ACT__COUNT
} mrd_op_action;

/* Conditions that let an op leave a step (evaluated on mrd_op_inputs). */
#define MRD_OP_COND_MAP(XX)                                                                        \
    XX(PLAN_VALID, "plan_valid")           /* in.plan_ok > 0 */                                    \
    XX(PLAN_INVALID, "plan_invalid")       /* in.plan_ok < 0 */                                    \
    XX(CANCELLED, "cancelled")             /* in.cancel */                                         \
    XX(STEP_FAILED, "step_failed")         /* in.step_failed: action failed for good */            \
    XX(FENCE_CONFIRMED, "fence_confirmed") /* in.old_fence_confirmed */                            \
    XX(ISOLATED, "isolated")   /* !old_reachable, !target_outside_leases, isolation over */        \
    XX(CAUGHT_UP, "caught_up") /* in.target_replay_pos >= barrier */                               \
    XX(TARGET_PRIMARY, "target_primary")     /* in.target_is_primary */                            \
    XX(REGISTRY_APPLIED, "registry_applied") /* in.registry_epoch >= op.epoch */                   \
    XX(DNS_APPLIED, "dns_applied")           /* in.dns_epoch >= op.epoch */                        \
    XX(REJOINED, "rejoined")                 /* in.old_rejoined */                                 \
    XX(UNFENCED, "unfenced")                 /* in.old_unfence_confirmed */                        \
    XX(TIMEOUT, "timeout")                   /* the step's timeout expired */

typedef enum {
#define MRD__COND_ENUM(n, s) MRD_COND_##n,
    MRD_OP_COND_MAP(MRD__COND_ENUM)
#undef MRD__COND_ENUM
        MRD_COND__COUNT
} mrd_op_cond;

/* Timeout kinds: the table names a kind, the op carries the milliseconds
 * (frozen from the policy when the op is created). */
#define MRD_OP_TIMEOUT_MAP(XX)                                                                     \
    XX(NONE, "none")                                                                               \
    XX(PLAN, "plan")                                                                               \
    XX(FENCE, "fence") /* failover: isolation + fence_timeout */                                   \
    XX(CATCHUP, "catchup")                                                                         \
    XX(PROMOTE, "promote")                                                                         \
    XX(CUTOVER, "cutover")                                                                         \
    XX(REJOIN, "rejoin")                                                                           \
    XX(ROLLBACK, "rollback")

typedef enum {
#define MRD__TMO_ENUM(n, s) MRD_TMO_##n,
    MRD_OP_TIMEOUT_MAP(MRD__TMO_ENUM)
#undef MRD__TMO_ENUM
        MRD_TMO__COUNT
} mrd_op_timeout;

/* What a transition records into the op (bits). */
enum {
    MRD_REC_COMMIT_EPOCH = 1 << 0,   /* service.epoch := op.epoch (same tx) */
    MRD_REC_BARRIER_OLD = 1 << 1,    /* barrier := in.old_final_pos (switchover) */
    MRD_REC_BARRIER_TARGET = 1 << 2, /* barrier := in.target_receive_pos (failover) */
    MRD_REC_LOST_BYTES = 1 << 3,     /* lost := old_last_pos - target replay, >= 0 */
    MRD_REC_REJOIN_PENDING = 1 << 4, /* completes with the rejoin still queued */
    MRD_REC_FORK = 1 << 5,           /* fork := max(fork, target replay): where the new
                                        timeline leaves the old one */
};

typedef struct {
    uint32_t ms[MRD_TMO__COUNT]; /* [MRD_TMO_NONE] unused */
    uint32_t isolation_ms;       /* isolation_timeout + isolation_margin */
} mrd_op_timeouts;

/* The persisted state of one operation (plain data: store it as columns or
 * as a blob; mrd_op_apply() is the only function that changes step). */
typedef struct {
    char id[MRD_OP_ID_MAX];
    /* Random, chosen once when the op is created and persisted with it:
     * part of every command id, so that an op id handed out again by a
     * store that lost transactions (an asynchronous standby promoted) never
     * names the same commands as the lost op. "" for ops created before
     * tags existed (their ids keep the old form). */
    char tag[MRD_OP_TAG_MAX];
    mrd_op_kind kind;
    char service[MRD_NAME_MAX];
    uint64_t epoch; /* the epoch this op establishes (service epoch + 1) */
    char from_region[MRD_NAME_MAX], from_node[MRD_NAME_MAX]; /* old primary */
    char to_region[MRD_NAME_MAX], to_node[MRD_NAME_MAX];     /* target */
    int force;
    mrd_op_step step;
    uint64_t created_ms;
    uint64_t step_started_ms;
    uint64_t step_entered_ms[MRD_STEP__COUNT]; /* 0: never entered (durations) */
    uint32_t attempts;                         /* ticks the current step's actions were issued */
    uint64_t old_last_pos;                     /* last known position of the old primary */
    uint64_t barrier_pos;
    uint64_t lost_bytes;
    uint64_t fork_pos; /* target's replay position at promotion: the new history's start */
    /* Divergence (mrd_op_divergence_check): the old primary's highest position seen
     * after the promotion, on its old history, when beyond what the op counted. */
    uint64_t old_seen_pos;
    uint64_t diverged_bytes;      /* old_seen_pos - fork_pos: WAL the new primary lacks */
    uint64_t written_after_bytes; /* beyond what lost_bytes counted (0: no divergence) */
    uint64_t diverged_ms;         /* store clock of the first detection (0: none) */
    int rejoin_pending;
    mrd_op_step failed_from;  /* step that led to rollback/aborted/failed */
    char why[MRD_OP_WHY_MAX]; /* why the last transition happened */
    mrd_op_timeouts timeouts;
} mrd_op;

/* Facts the leader observed this tick (all about the op's epoch). */
typedef struct {
    int plan_ok;             /* plan step: 1 mrd_decide_plan accepted the target (FAILOVER or WAIT),
                                -1 it refused, 0 not evaluated this tick */
    int cancel;              /* an operator asked to cancel (honoured before promote) */
    int step_failed;         /* the current step's command/driver failed for good */
    int old_reachable;       /* old primary's node is heard from (not silent): then only its
                                confirmation ends a failover's fence step */
    int old_fence_confirmed; /* old primary confirmed the fence at op.epoch */
    int target_outside_leases;    /* the old primary's reported lease set leaves the target
                                     out: only a confirmed fence (never "isolated") lets a
                                     failover pass the fence step */
    int old_unfence_confirmed;    /* old primary confirmed the unfence at op.epoch */
    uint64_t old_last_contact_ms; /* its last recorded contact (store clock) */
    uint64_t old_final_pos;       /* its final position, reported with the fence */
    uint64_t old_last_pos;        /* last known position of the old primary */
    uint64_t target_receive_pos;
    uint64_t target_replay_pos;
    int target_is_primary;   /* target reports role primary at op.epoch */
    uint64_t registry_epoch; /* epoch the registry holds (0 unknown) */
    uint64_t dns_epoch;      /* epoch the DNS records were written for (0 none) */
    int old_rejoined;        /* old primary reports replica following target */
} mrd_op_inputs;

/* One command or driver call to (re)issue. */
typedef struct {
    mrd_op_action action;
    char node[MRD_NAME_MAX]; /* agent commands: the node; drivers: "" */
    char region[MRD_NAME_MAX];
    char leader_node[MRD_NAME_MAX]; /* rejoin: the node to follow */
    uint64_t epoch;
    /* "<op id>.<tag>/<step>/<action>" ("<op id>/<step>/<action>" without a
     * tag): the same on re-issue, never the same for two ops */
    char command_id[MRD_OP_CMD_ID_MAX];
} mrd_op_command;

typedef enum { MRD_OP_STAY = 0, MRD_OP_MOVE } mrd_op_result;

typedef struct {
    mrd_op_result result;
    mrd_op_step from, to; /* to == from on STAY */
    mrd_op_cond cond;     /* the condition that fired (MOVE) */
    int overdue;          /* STAY past the step's timeout (retrying: alert) */
    char why[MRD_OP_WHY_MAX];
    unsigned record;      /* MRD_REC_* bits, applied by mrd_op_apply */
    uint64_t barrier_pos; /* with MRD_REC_BARRIER_* */
    uint64_t lost_bytes;  /* with MRD_REC_LOST_BYTES */
    uint64_t old_last_pos;
    uint64_t fork_pos; /* with MRD_REC_FORK */
    /* actions of the step the op is in after this transition */
    size_t ncommands;
    mrd_op_command commands[2];
} mrd_op_transition;

/* Initialises a new op in step plan: copies names, epoch = service_epoch+1,
 * freezes the timeouts from policy. Returns 0, or MRD_EINVAL (NULL argument,
 * empty or too long name, bad kind; *op is then zeroed). */
int mrd_op_init(mrd_op *op, const char *id, mrd_op_kind kind, const char *service,
                uint64_t service_epoch, const char *from_region, const char *from_node,
                const char *to_region, const char *to_node, int force, const mrd_policy *policy,
                uint64_t now_ms);

/* Writes the id of the op's command for (step, action) into buf:
 * "<id>.<tag>/<step>/<action>", or "<id>/<step>/<action>" when the op has no
 * tag. Returns 0, or MRD_EINVAL when an argument is NULL or the id does not
 * fit (buf is then ""). */
int mrd_op_command_id(const mrd_op *op, const char *step, const char *action, char *buf,
                      size_t len);

/* The timeouts an op of this kind gets from a policy. */
void mrd_op_timeouts_from_policy(mrd_op_timeouts *t, mrd_op_kind kind, const mrd_policy *policy);

/* Pure: what should happen to op given the facts. Never changes op. The
 * first row of (kind, step) whose condition holds wins; the step's timeout
 * is checked after the conditions. Same arguments -> same output. Returns
 * MRD_OP_STAY or MRD_OP_MOVE (a terminal step always stays), or MRD_EINVAL
 * for a NULL argument or a corrupt op (out->result is then STAY, no
 * commands). */
int mrd_op_advance(const mrd_op *op, const mrd_op_inputs *in, uint64_t now_ms,
                   mrd_op_transition *out);

/* Applies a transition returned by mrd_op_advance for this op: the only
 * place where op->step is assigned. MOVE: step, step_started_ms,
 * step_entered_ms, attempts, why and the recorded values; STAY: attempts++
 * when commands were issued. Returns 0, or MRD_EINVAL if t.from != op.step. */
int mrd_op_apply(mrd_op *op, const mrd_op_transition *t, uint64_t now_ms);

/* What a position of the old primary says about an op that promoted its
 * target. */
typedef struct {
    uint64_t old_seen_pos;
    uint64_t diverged_bytes;
    uint64_t written_after_bytes;
    int first; /* 1: the op had recorded no divergence before (raise the alarm) */
} mrd_op_divergence;

/* Pure: compares pos, a position the old primary reported on its old
 * history (its current position while writable or fenced but not rejoined,
 * or the final position of a fence or rejoin result; 0: none), with what op
 * counted. Only an op past its promotion is compared (registry, dns,
 * rejoin, done): before it there is no fork. Returns 1 when pos lies beyond
 * both the op's last known position of the old primary and the fork and
 * beyond what the op already recorded: *out holds the new figures, to be
 * applied with mrd_op_divergence_apply(). Returns 0 when there is nothing
 * new, MRD_EINVAL for a NULL argument. The fork is op.fork_pos, or for an op
 * recorded without one, old_last_pos - lost_bytes (the target's replay at
 * catchup). */
int mrd_op_divergence_check(const mrd_op *op, uint64_t pos, mrd_op_divergence *out);

/* Records d into op (figures; diverged_ms := now_ms on the first). */
void mrd_op_divergence_apply(mrd_op *op, const mrd_op_divergence *d, uint64_t now_ms);

/* 1 if the step is terminal (done, aborted, failed). */
int mrd_op_step_terminal(mrd_op_step s);

/* Checks the table: every non-terminal step of each kind has a way out,
 * rows of one step agree on timeout/on_timeout/action, every target exists
 * and is reachable for the kind, terminals have no rows out, every
 * non-terminal step has a timeout. Returns 0, or MRD_EINTERNAL with the first
 * problem in err. */
int mrd_opfsm_check(char *err, size_t errlen);

/* Writes the table as Graphviz (digraph, one cluster per kind) into buf.
 * Returns the length needed (like snprintf); buf is always terminated. */
size_t mrd_opfsm_dot(char *buf, size_t len);

/* The agent command kinds the FSM can emit (fence, unfence, promote,
 * rejoin): every one needs an agent-side handler. */
extern const mrd_op_action mrd_opfsm_agent_commands[];
extern const size_t mrd_opfsm_agent_commands_len;

const char *mrd_op_kind_name(mrd_op_kind k);
const char *mrd_op_step_name(mrd_op_step s);
const char *mrd_op_action_name(mrd_op_action a);
const char *mrd_op_cond_name(mrd_op_cond c);
const char *mrd_op_timeout_name(mrd_op_timeout t);
int mrd_op_kind_parse(const char *name, mrd_op_kind *out);
int mrd_op_step_parse(const char *name, mrd_op_step *out);

#endif
