/*
 * Unit tests of the operation state machine (controller/opfsm.c): the table
 * checks itself, prints as Graphviz, and the interpreter walks switchover and
 * failover through every step, every timeout and failure path, and gives the
 * same answer when re-run with the same facts (what a new leader does after a
 * crash).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/opfsm.h"

#define T0 1000000ull

static mrd_policy pol;

static void init_op(mrd_op *op, mrd_op_kind kind)
{
    cr_assert_eq(mrd_policy_defaults(&pol, "default"), 0);
    cr_assert_eq(
        mrd_op_init(op, "op-42", kind, "orders", 7, "eu", "db-eu-1", "us", "db-us-1", 0, &pol, T0),
        0);
    cr_assert_eq(op->step, MRD_STEP_PLAN);
    cr_assert_eq(op->epoch, 8);
}

/* Advances twice (must be identical: pure), applies, returns the transition. */
static mrd_op_transition go(mrd_op *op, const mrd_op_inputs *in, uint64_t now)
{
    mrd_op_transition t, again;
    mrd_op before = *op;
    int rc = mrd_op_advance(op, in, now, &t);
    cr_assert(rc == MRD_OP_STAY || rc == MRD_OP_MOVE, "rc %d", rc);
    cr_assert_eq((int)t.result, rc);
    cr_assert_eq(memcmp(&before, op, sizeof(before)), 0, "advance changed the op");
    cr_assert_eq(mrd_op_advance(op, in, now, &again), rc);
    cr_assert_eq(memcmp(&t, &again, sizeof(t)), 0, "same facts, different answer");
    cr_assert_eq(mrd_op_apply(op, &t, now), 0);
    cr_assert_eq(op->step, t.to);
    return t;
}

static void expect_move(const mrd_op_transition *t, mrd_op_step to, mrd_op_cond cond)
{
    cr_assert_eq(t->result, MRD_OP_MOVE, "expected a move to %s, stayed in %s (%s)",
                 mrd_op_step_name(to), mrd_op_step_name(t->from), t->why);
    cr_assert_eq(t->to, to, "to %s, expected %s (%s)", mrd_op_step_name(t->to),
                 mrd_op_step_name(to), t->why);
    cr_assert_eq(t->cond, cond, "cond %s, expected %s", mrd_op_cond_name(t->cond),
                 mrd_op_cond_name(cond));
}

static void expect_stay(const mrd_op_transition *t, mrd_op_step at)
{
    cr_assert_eq(t->result, MRD_OP_STAY, "expected to stay in %s, moved to %s (%s)",
                 mrd_op_step_name(at), mrd_op_step_name(t->to), t->why);
    cr_assert_eq(t->to, at);
}

static void expect_cmd(const mrd_op_transition *t, mrd_op_action a, const char *node)
{
    cr_assert_eq(t->ncommands, 1, "commands: %zu", t->ncommands);
    cr_assert_eq(t->commands[0].action, a, "action %s, expected %s",
                 mrd_op_action_name(t->commands[0].action), mrd_op_action_name(a));
    cr_assert_str_eq(t->commands[0].node, node);
    cr_assert_eq(t->commands[0].epoch, 8);
}

/* Drives a fresh op of this kind to the given step along the happy path. */
static void drive_to(mrd_op *op, mrd_op_kind kind, mrd_op_step target, uint64_t *now)
{
    init_op(op, kind);
    mrd_op_inputs in = {0};
    *now = T0;
    while (op->step != target) {
        cr_assert(!mrd_op_step_terminal(op->step), "passed %s", mrd_op_step_name(target));
        memset(&in, 0, sizeof(in));
        in.plan_ok = 1;
        in.old_fence_confirmed = 1;
        in.old_final_pos = 5000;
        in.old_last_pos = 5000;
        in.target_receive_pos = 5000;
        in.target_replay_pos = op->step == MRD_STEP_CATCHUP ? 5000 : 4000;
        in.target_is_primary = op->step == MRD_STEP_PROMOTE;
        in.registry_epoch = op->step == MRD_STEP_REGISTRY ? 8 : 7;
        in.dns_epoch = op->step == MRD_STEP_DNS ? 8 : 7;
        in.old_rejoined = op->step == MRD_STEP_REJOIN;
        *now += 100;
        mrd_op_transition t = go(op, &in, *now);
        cr_assert_eq(t.result, MRD_OP_MOVE, "stuck in %s", mrd_op_step_name(op->step));
    }
}

/* ---- the table ------------------------------------------------------------ */

Test(opfsm, table_is_well_formed)
{
    char err[256] = "x";
    cr_assert_eq(mrd_opfsm_check(err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(err, "");
    cr_assert_eq(mrd_opfsm_check(NULL, 0), 0);
}

Test(opfsm, dot_contains_every_step_of_both_kinds)
{
    static char buf[16384];
    size_t need = mrd_opfsm_dot(buf, sizeof(buf));
    cr_assert_lt(need, sizeof(buf));
    cr_assert_eq(strlen(buf), need);
    cr_assert(strncmp(buf, "digraph opfsm {", 15) == 0);
    cr_assert(buf[need - 2] == '}');
    for (int k = 0; k < MRD_OP_KIND__COUNT; k++) {
        char id[64];
        snprintf(id, sizeof(id), "subgraph cluster_%s", mrd_op_kind_name(k));
        cr_assert(strstr(buf, id), "%s", id);
        for (int s = 0; s < MRD_STEP__COUNT; s++) {
            snprintf(id, sizeof(id), "    %s_%s [label=\"%s", mrd_op_kind_name(k),
                     mrd_op_step_name(s), mrd_op_step_name(s));
            cr_assert(strstr(buf, id), "missing node %s", id);
        }
    }
    cr_assert(
        strstr(buf, "switchover_catchup -> switchover_rollback [label=\"timeout (catchup)\""));
    cr_assert(strstr(buf, "failover_catchup -> failover_promote [label=\"timeout (catchup)\""));
    cr_assert(strstr(buf, "failover_fence -> failover_catchup [label=\"isolated\"]"));
    /* too small a buffer: terminated, and the length needed is the same */
    char small[32];
    cr_assert_eq(mrd_opfsm_dot(small, sizeof(small)), need);
    cr_assert_eq(strlen(small), sizeof(small) - 1);
    cr_assert_eq(mrd_opfsm_dot(NULL, 0), need);
}

Test(opfsm, agent_commands_are_exactly_what_the_table_sends_to_agents)
{
    int emitted[MRD_ACT__COUNT] = {0};
    for (int k = 0; k < MRD_OP_KIND__COUNT; k++) {
        for (int s = 0; s < MRD_STEP__COUNT; s++) {
            mrd_op op;
            mrd_op_transition t;
            mrd_op_inputs in = {0};
            init_op(&op, (mrd_op_kind)k);
            op.step = (mrd_op_step)s;
            op.barrier_pos = 100;
            mrd_op_advance(&op, &in, op.step_started_ms, &t);
            for (size_t i = 0; i < t.ncommands; i++)
                emitted[t.commands[i].action] = 1;
        }
    }
    int listed[MRD_ACT__COUNT] = {0};
    cr_assert_eq(mrd_opfsm_agent_commands_len, 4);
    for (size_t i = 0; i < mrd_opfsm_agent_commands_len; i++)
        listed[mrd_opfsm_agent_commands[i]] = 1;
    cr_assert(listed[MRD_ACT_FENCE] && listed[MRD_ACT_UNFENCE] && listed[MRD_ACT_PROMOTE] &&
              listed[MRD_ACT_REJOIN]);
    for (int a = 0; a < MRD_ACT__COUNT; a++) {
        int agent_cmd = a == MRD_ACT_FENCE || a == MRD_ACT_UNFENCE || a == MRD_ACT_PROMOTE ||
                        a == MRD_ACT_REJOIN;
        if (agent_cmd)
            cr_assert(emitted[a] && listed[a], "%s", mrd_op_action_name(a));
        else
            cr_assert(!listed[a], "%s is not an agent command", mrd_op_action_name(a));
    }
}

/* ---- switchover ------------------------------------------------------------ */

Test(opfsm, switchover_walks_every_step)
{
    mrd_op op;
    mrd_op_inputs in = {0};
    mrd_op_transition t;
    init_op(&op, MRD_OP_SWITCHOVER);

    t = go(&op, &in, T0 + 10); /* plan not evaluated yet */
    expect_stay(&t, MRD_STEP_PLAN);
    expect_cmd(&t, MRD_ACT_VALIDATE, "db-us-1");
    in.plan_ok = 1;
    t = go(&op, &in, T0 + 20);
    expect_move(&t, MRD_STEP_FENCE, MRD_COND_PLAN_VALID);
    cr_assert(t.record & MRD_REC_COMMIT_EPOCH);
    expect_cmd(&t, MRD_ACT_FENCE, "db-eu-1");
    cr_assert_str_eq(t.commands[0].command_id, "op-42/fence/fence");
    cr_assert_eq(op.attempts, 1);

    in = (mrd_op_inputs){0};
    t = go(&op, &in, T0 + 30); /* not confirmed yet: re-issue the same command */
    expect_stay(&t, MRD_STEP_FENCE);
    expect_cmd(&t, MRD_ACT_FENCE, "db-eu-1");
    cr_assert_str_eq(t.commands[0].command_id, "op-42/fence/fence");
    cr_assert_eq(op.attempts, 2);
    in.old_reachable = 0; /* a switchover never accepts isolation for a fence */
    in.old_last_contact_ms = T0 - 60000;
    t = go(&op, &in, T0 + 40);
    expect_stay(&t, MRD_STEP_FENCE);

    in = (mrd_op_inputs){.old_fence_confirmed = 1,
                         .old_final_pos = 5000,
                         .target_receive_pos = 4800,
                         .target_replay_pos = 4500};
    t = go(&op, &in, T0 + 50);
    expect_move(&t, MRD_STEP_CATCHUP, MRD_COND_FENCE_CONFIRMED);
    cr_assert_eq(op.barrier_pos, 5000, "barrier = old primary's final position");
    cr_assert_eq(op.old_last_pos, 5000, "the final position is the last one");
    cr_assert_eq(t.ncommands, 0);

    in.target_replay_pos = 4999;
    t = go(&op, &in, T0 + 60);
    expect_stay(&t, MRD_STEP_CATCHUP);
    in.target_replay_pos = 5000;
    t = go(&op, &in, T0 + 70);
    expect_move(&t, MRD_STEP_PROMOTE, MRD_COND_CAUGHT_UP);
    cr_assert_eq(op.lost_bytes, 0);
    expect_cmd(&t, MRD_ACT_PROMOTE, "db-us-1");

    t = go(&op, &in, T0 + 80);
    expect_stay(&t, MRD_STEP_PROMOTE);
    in.target_is_primary = 1;
    t = go(&op, &in, T0 + 90);
    expect_move(&t, MRD_STEP_REGISTRY, MRD_COND_TARGET_PRIMARY);
    expect_cmd(&t, MRD_ACT_REGISTRY, "");
    cr_assert_str_eq(t.commands[0].region, "us");
    cr_assert_str_eq(t.commands[0].leader_node, "db-us-1");

    in.registry_epoch = 7; /* still the old epoch */
    t = go(&op, &in, T0 + 100);
    expect_stay(&t, MRD_STEP_REGISTRY);
    in.registry_epoch = 8;
    t = go(&op, &in, T0 + 110);
    expect_move(&t, MRD_STEP_DNS, MRD_COND_REGISTRY_APPLIED);
    expect_cmd(&t, MRD_ACT_DNS, "");

    t = go(&op, &in, T0 + 120);
    expect_stay(&t, MRD_STEP_DNS);
    in.dns_epoch = 8;
    t = go(&op, &in, T0 + 130);
    expect_move(&t, MRD_STEP_REJOIN, MRD_COND_DNS_APPLIED);
    expect_cmd(&t, MRD_ACT_REJOIN, "db-eu-1");
    cr_assert_str_eq(t.commands[0].leader_node, "db-us-1");

    t = go(&op, &in, T0 + 140);
    expect_stay(&t, MRD_STEP_REJOIN);
    in.old_rejoined = 1;
    t = go(&op, &in, T0 + 150);
    expect_move(&t, MRD_STEP_DONE, MRD_COND_REJOINED);
    cr_assert_eq(t.ncommands, 0);
    cr_assert_eq(op.rejoin_pending, 0);

    /* terminal: stays whatever happens */
    in.cancel = 1;
    in.step_failed = 1;
    t = go(&op, &in, T0 + 10000000);
    expect_stay(&t, MRD_STEP_DONE);
    cr_assert_eq(t.ncommands, 0);
    /* every step was entered, in order */
    const mrd_op_step path[] = {MRD_STEP_PLAN,    MRD_STEP_FENCE,    MRD_STEP_CATCHUP,
                                MRD_STEP_PROMOTE, MRD_STEP_REGISTRY, MRD_STEP_DNS,
                                MRD_STEP_REJOIN,  MRD_STEP_DONE};
    for (size_t i = 1; i < sizeof(path) / sizeof(path[0]); i++)
        cr_assert_gt(op.step_entered_ms[path[i]], op.step_entered_ms[path[i - 1]], "%s",
                     mrd_op_step_name(path[i]));
    cr_assert_eq(op.step_entered_ms[MRD_STEP_ROLLBACK], 0);
}

Test(opfsm, switchover_catchup_timeout_rolls_back_and_unfences)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_SWITCHOVER, MRD_STEP_CATCHUP, &now);
    cr_assert_eq(op.barrier_pos, 5000);
    mrd_op_inputs in = {.target_replay_pos = 4000};
    uint64_t deadline = op.step_started_ms + pol.switchover_catchup_timeout_ms;
    mrd_op_transition t = go(&op, &in, deadline - 1);
    expect_stay(&t, MRD_STEP_CATCHUP);
    t = go(&op, &in, deadline);
    expect_move(&t, MRD_STEP_ROLLBACK, MRD_COND_TIMEOUT);
    expect_cmd(&t, MRD_ACT_UNFENCE, "db-eu-1");
    cr_assert_str_eq(t.commands[0].command_id, "op-42/rollback/unfence");
    cr_assert_eq(op.failed_from, MRD_STEP_CATCHUP);
    t = go(&op, &in, deadline + 10);
    expect_stay(&t, MRD_STEP_ROLLBACK);
    in.old_unfence_confirmed = 1;
    t = go(&op, &in, deadline + 20);
    expect_move(&t, MRD_STEP_ABORTED, MRD_COND_UNFENCED);
    cr_assert_eq(op.failed_from, MRD_STEP_CATCHUP, "kept through rollback");
    cr_assert_eq(op.lost_bytes, 0, "nothing lost");
    cr_assert_eq(op.step_entered_ms[MRD_STEP_PROMOTE], 0, "never promoted");
}

Test(opfsm, switchover_fence_timeout_rolls_back)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_SWITCHOVER, MRD_STEP_FENCE, &now);
    mrd_op_inputs in = {0};
    mrd_op_transition t = go(&op, &in, op.step_started_ms + pol.fence_timeout_ms);
    expect_move(&t, MRD_STEP_ROLLBACK, MRD_COND_TIMEOUT);
    cr_assert_eq(op.failed_from, MRD_STEP_FENCE);
}

Test(opfsm, rollback_timeout_fails)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_SWITCHOVER, MRD_STEP_FENCE, &now);
    mrd_op_inputs in = {.cancel = 1};
    mrd_op_transition t = go(&op, &in, now + 1);
    expect_move(&t, MRD_STEP_ROLLBACK, MRD_COND_CANCELLED);
    in = (mrd_op_inputs){0};
    t = go(&op, &in, op.step_started_ms + pol.fence_timeout_ms);
    expect_move(&t, MRD_STEP_FAILED, MRD_COND_TIMEOUT);
    cr_assert_eq(op.failed_from, MRD_STEP_FENCE);
}

Test(opfsm, plan_timeout_and_refusal_abort_without_action)
{
    mrd_op op;
    mrd_op_inputs in = {0};
    init_op(&op, MRD_OP_SWITCHOVER);
    mrd_op_transition t = go(&op, &in, T0 + pol.fence_timeout_ms);
    expect_move(&t, MRD_STEP_ABORTED, MRD_COND_TIMEOUT);
    cr_assert_eq(t.record & MRD_REC_COMMIT_EPOCH, 0, "epoch never committed");
    cr_assert_eq(t.ncommands, 0);

    init_op(&op, MRD_OP_FAILOVER);
    in.plan_ok = -1;
    t = go(&op, &in, T0 + 1);
    expect_move(&t, MRD_STEP_ABORTED, MRD_COND_PLAN_INVALID);
    cr_assert_eq(op.failed_from, MRD_STEP_PLAN);

    init_op(&op, MRD_OP_FAILOVER);
    in.plan_ok = 1;
    in.cancel = 1; /* cancel wins over a valid plan */
    t = go(&op, &in, T0 + 1);
    expect_move(&t, MRD_STEP_ABORTED, MRD_COND_CANCELLED);
}

Test(opfsm, promote_timeout_and_failure_fail_without_unfencing)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_SWITCHOVER, MRD_STEP_PROMOTE, &now);
    mrd_op saved = op;
    mrd_op_inputs in = {.cancel = 1}; /* too late to cancel */
    mrd_op_transition t = go(&op, &in, now + 1);
    expect_stay(&t, MRD_STEP_PROMOTE);
    expect_cmd(&t, MRD_ACT_PROMOTE, "db-us-1");
    t = go(&op, &in, op.step_started_ms + pol.promote_timeout_ms);
    expect_move(&t, MRD_STEP_FAILED, MRD_COND_TIMEOUT);
    cr_assert_eq(t.ncommands, 0, "no unfence after a promote was sent");

    op = saved;
    in = (mrd_op_inputs){.step_failed = 1};
    t = go(&op, &in, now + 1);
    expect_move(&t, MRD_STEP_FAILED, MRD_COND_STEP_FAILED);
    cr_assert_eq(op.failed_from, MRD_STEP_PROMOTE);
}

Test(opfsm, registry_and_dns_retry_past_timeout_and_fail_on_refusal)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_REGISTRY, &now);
    mrd_op saved = op;
    mrd_op_inputs in = {0};
    mrd_op_transition t = go(&op, &in, op.step_started_ms + pol.cutover_timeout_ms + 5);
    expect_stay(&t, MRD_STEP_REGISTRY);
    cr_assert_eq(t.overdue, 1);
    expect_cmd(&t, MRD_ACT_REGISTRY, "");
    t = go(&op, &in, op.step_started_ms + 1);
    cr_assert_eq(t.overdue, 0);
    in.step_failed = 1;
    t = go(&op, &in, now + 2);
    expect_move(&t, MRD_STEP_FAILED, MRD_COND_STEP_FAILED);

    op = saved;
    in = (mrd_op_inputs){.registry_epoch = 9}; /* newer than ours also counts as applied */
    t = go(&op, &in, now + 1);
    expect_move(&t, MRD_STEP_DNS, MRD_COND_REGISTRY_APPLIED);
    in = (mrd_op_inputs){0};
    t = go(&op, &in, op.step_started_ms + pol.cutover_timeout_ms);
    expect_stay(&t, MRD_STEP_DNS);
    cr_assert_eq(t.overdue, 1);
    in.step_failed = 1;
    t = go(&op, &in, now + 3);
    expect_move(&t, MRD_STEP_FAILED, MRD_COND_STEP_FAILED);
}

Test(opfsm, rejoin_timeout_completes_with_rejoin_pending)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_SWITCHOVER, MRD_STEP_REJOIN, &now);
    mrd_op saved = op;
    mrd_op_inputs in = {0};
    mrd_op_transition t = go(&op, &in, op.step_started_ms + pol.rejoin_timeout_ms);
    expect_move(&t, MRD_STEP_DONE, MRD_COND_TIMEOUT);
    cr_assert_eq(op.rejoin_pending, 1);

    op = saved;
    in.step_failed = 1;
    t = go(&op, &in, now + 1);
    expect_move(&t, MRD_STEP_DONE, MRD_COND_STEP_FAILED);
    cr_assert_eq(op.rejoin_pending, 1);
}

/* ---- failover -------------------------------------------------------------- */

Test(opfsm, failover_target_outside_the_lease_set_needs_a_confirmed_fence)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    uint64_t contact = T0 - 1000;
    uint64_t deadline = contact + pol.isolation_timeout_ms + pol.isolation_margin_ms;
    mrd_op_inputs in = {.old_reachable = 0,
                        .old_last_contact_ms = contact,
                        .target_outside_leases = 1,
                        .target_receive_pos = 8000};
    /* isolation is over, but the old primary may still hold the others' leases */
    mrd_op_transition t = go(&op, &in, deadline + 1);
    expect_stay(&t, MRD_STEP_FENCE);
    mrd_op saved = op;
    /* only a confirmed fence lets it on */
    in.old_fence_confirmed = 1;
    t = go(&op, &in, deadline + 2);
    expect_move(&t, MRD_STEP_CATCHUP, MRD_COND_FENCE_CONFIRMED);
    /* without one, the step times out into a rollback: never a promotion */
    op = saved;
    in.old_fence_confirmed = 0;
    t = go(&op, &in, op.step_started_ms + op.timeouts.ms[MRD_TMO_FENCE]);
    expect_move(&t, MRD_STEP_ROLLBACK, MRD_COND_TIMEOUT);
}

Test(opfsm, failover_unreachable_old_primary_waits_out_isolation)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    uint64_t contact = T0 - 1000;
    uint64_t deadline = contact + pol.isolation_timeout_ms + pol.isolation_margin_ms;
    mrd_op_inputs in = {.old_reachable = 0,
                        .old_last_contact_ms = contact,
                        .old_last_pos = 9000,
                        .target_receive_pos = 8000,
                        .target_replay_pos = 7000};
    mrd_op_transition t = go(&op, &in, deadline - 1);
    expect_stay(&t, MRD_STEP_FENCE);
    expect_cmd(&t, MRD_ACT_FENCE, "db-eu-1"); /* queued for when it comes back */
    t = go(&op, &in, deadline);
    expect_move(&t, MRD_STEP_CATCHUP, MRD_COND_ISOLATED);
    cr_assert_eq(op.barrier_pos, 8000, "barrier = target's received position");
    cr_assert_eq(op.old_last_pos, 9000);

    in.target_replay_pos = 7500;
    t = go(&op, &in, op.step_started_ms + 10);
    expect_stay(&t, MRD_STEP_CATCHUP);
    t = go(&op, &in, op.step_started_ms + pol.failover_catchup_timeout_ms);
    expect_move(&t, MRD_STEP_PROMOTE, MRD_COND_TIMEOUT); /* bounded wait, then proceed */
    cr_assert_eq(op.lost_bytes, 1500, "last known primary position - target replay");
    expect_cmd(&t, MRD_ACT_PROMOTE, "db-us-1");

    in.target_is_primary = 1;
    t = go(&op, &in, op.step_started_ms + 1);
    expect_move(&t, MRD_STEP_REGISTRY, MRD_COND_TARGET_PRIMARY);
    in.registry_epoch = 8;
    t = go(&op, &in, op.step_started_ms + 1);
    expect_move(&t, MRD_STEP_DNS, MRD_COND_REGISTRY_APPLIED);
    in.dns_epoch = 8;
    t = go(&op, &in, op.step_started_ms + 1);
    expect_move(&t, MRD_STEP_REJOIN, MRD_COND_DNS_APPLIED);
    /* the old primary does not come back: done, rejoin left queued */
    t = go(&op, &in, op.step_started_ms + pol.rejoin_timeout_ms);
    expect_move(&t, MRD_STEP_DONE, MRD_COND_TIMEOUT);
    cr_assert_eq(op.rejoin_pending, 1);
    cr_assert_eq(op.lost_bytes, 1500);
}

/* ---- divergence: the old primary wrote after the promotion --------------- */

/* A failover whose old primary went silent at 9000 (last report) while the
 * target had replayed 7000; the promoted target reports replay 7200 (it
 * replayed the rest it had received before promoting). */
static void failover_promoted(mrd_op *op, mrd_op_inputs *in)
{
    uint64_t now;
    drive_to(op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    memset(in, 0, sizeof(*in));
    in->old_last_contact_ms = T0 - 1000;
    in->old_last_pos = 9000;
    in->old_final_pos = 9000;
    in->target_receive_pos = 7200;
    in->target_replay_pos = 7000;
    mrd_op_transition t = go(op, in, T0 + pol.isolation_timeout_ms + pol.isolation_margin_ms);
    expect_move(&t, MRD_STEP_CATCHUP, MRD_COND_ISOLATED);
    t = go(op, in, op->step_started_ms + pol.failover_catchup_timeout_ms);
    expect_move(&t, MRD_STEP_PROMOTE, MRD_COND_TIMEOUT);
    cr_assert_eq(op->fork_pos, 7000, "provisional fork: replay at catchup");
    cr_assert_eq(op->lost_bytes, 2000);
    in->target_replay_pos = 7200;
    in->target_is_primary = 1;
    t = go(op, in, op->step_started_ms + 1);
    expect_move(&t, MRD_STEP_REGISTRY, MRD_COND_TARGET_PRIMARY);
    cr_assert_eq(op->fork_pos, 7200, "fork: the promoted target's last replayed position");
}

Test(opfsm, fence_result_counts_in_the_old_primary_last_position)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    /* last heartbeat said 9000; the fence's final position says 9400 */
    mrd_op_inputs in = {.old_reachable = 1,
                        .old_fence_confirmed = 1,
                        .old_last_pos = 9000,
                        .old_final_pos = 9400,
                        .target_receive_pos = 9000,
                        .target_replay_pos = 9000};
    mrd_op_transition t = go(&op, &in, now + 1);
    expect_move(&t, MRD_STEP_CATCHUP, MRD_COND_FENCE_CONFIRMED);
    cr_assert_eq(op.old_last_pos, 9400);
    t = go(&op, &in, now + 2);
    expect_move(&t, MRD_STEP_PROMOTE, MRD_COND_CAUGHT_UP);
    cr_assert_eq(op.lost_bytes, 400);
}

Test(opfsm, divergence_is_not_judged_before_the_promotion)
{
    mrd_op op;
    uint64_t now;
    mrd_op_divergence d;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_PROMOTE, &now);
    cr_assert_eq(mrd_op_divergence_check(&op, 1u << 30, &d), 0);
    cr_assert_eq(d.written_after_bytes, 0);
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_CATCHUP, &now);
    cr_assert_eq(mrd_op_divergence_check(&op, 1u << 30, &d), 0);
    cr_assert_eq(mrd_op_divergence_check(NULL, 1, &d), MRD_EINVAL);
    cr_assert_eq(mrd_op_divergence_check(&op, 1, NULL), MRD_EINVAL);
}

Test(opfsm, divergence_within_what_the_op_counted_is_no_news)
{
    mrd_op op;
    mrd_op_inputs in;
    mrd_op_divergence d;
    failover_promoted(&op, &in);
    /* no report, a stale report, the last known position: all counted */
    cr_assert_eq(mrd_op_divergence_check(&op, 0, &d), 0);
    cr_assert_eq(mrd_op_divergence_check(&op, 8000, &d), 0);
    cr_assert_eq(mrd_op_divergence_check(&op, 9000, &d), 0);
    cr_assert_eq(op.written_after_bytes, 0);
}

Test(opfsm, divergence_beyond_the_last_known_position_is_reported_and_grows)
{
    mrd_op op;
    mrd_op_inputs in;
    mrd_op_divergence d;
    failover_promoted(&op, &in);
    /* the old primary resumed and committed a write: 9000 -> 9150 */
    cr_assert_eq(mrd_op_divergence_check(&op, 9150, &d), 1);
    cr_assert_eq(d.old_seen_pos, 9150);
    cr_assert_eq(d.diverged_bytes, 9150 - 7200, "everything past the fork");
    cr_assert_eq(d.written_after_bytes, 150, "beyond what lost_bytes counted");
    cr_assert_eq(d.first, 1);
    mrd_op_divergence_apply(&op, &d, 777);
    cr_assert_eq(op.diverged_ms, 777);
    cr_assert_eq(op.written_after_bytes, 150);
    /* the same report again, or an older one: nothing new */
    cr_assert_eq(mrd_op_divergence_check(&op, 9150, &d), 0);
    cr_assert_eq(mrd_op_divergence_check(&op, 9100, &d), 0);
    /* its fence's final position later: the figures grow, not a first */
    cr_assert_eq(mrd_op_divergence_check(&op, 9300, &d), 1);
    cr_assert_eq(d.first, 0);
    cr_assert_eq(d.written_after_bytes, 300);
    mrd_op_divergence_apply(&op, &d, 999);
    cr_assert_eq(op.diverged_ms, 777, "first detection time kept");
    cr_assert_eq(op.diverged_bytes, 2100);
    cr_assert_eq(op.lost_bytes, 2000, "what was counted at promotion is kept apart");

    /* steps after promotion and done (rejoin pending) keep comparing */
    in.registry_epoch = 8;
    mrd_op_transition t = go(&op, &in, op.step_started_ms + 1);
    expect_move(&t, MRD_STEP_DNS, MRD_COND_REGISTRY_APPLIED);
    cr_assert_eq(op.written_after_bytes, 300, "a step change keeps the figures");
    in.dns_epoch = 8;
    go(&op, &in, op.step_started_ms + 1);
    t = go(&op, &in, op.step_started_ms + pol.rejoin_timeout_ms);
    expect_move(&t, MRD_STEP_DONE, MRD_COND_TIMEOUT);
    cr_assert_eq(mrd_op_divergence_check(&op, 9400, &d), 1);
    cr_assert_eq(d.written_after_bytes, 400);
}

Test(opfsm, divergence_when_the_target_was_ahead_of_the_last_report)
{
    mrd_op op;
    mrd_op_inputs in;
    mrd_op_divergence d;
    failover_promoted(&op, &in);
    op.old_last_pos = 7100; /* the last report was older than what the target replayed */
    op.lost_bytes = 0;
    cr_assert_eq(mrd_op_divergence_check(&op, 7200, &d), 0, "the fork itself: nothing diverged");
    cr_assert_eq(mrd_op_divergence_check(&op, 7250, &d), 1);
    cr_assert_eq(d.diverged_bytes, 50);
    cr_assert_eq(d.written_after_bytes, 50);
}

Test(opfsm, divergence_of_an_op_recorded_without_a_fork)
{
    mrd_op op;
    mrd_op_inputs in;
    mrd_op_divergence d;
    failover_promoted(&op, &in);
    op.fork_pos = 0; /* a state written before forks were recorded */
    cr_assert_eq(mrd_op_divergence_check(&op, 9500, &d), 1);
    cr_assert_eq(d.diverged_bytes, 2500, "fork = old_last_pos - lost_bytes");
    cr_assert_eq(d.written_after_bytes, 500);
}

Test(opfsm, failover_reachable_old_primary_must_confirm)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    /* heard from: isolation is not an excuse, even long past the deadline */
    mrd_op_inputs in = {.old_reachable = 1, .old_last_contact_ms = T0 - 100000};
    mrd_op_transition t = go(&op, &in, now + 1000);
    expect_stay(&t, MRD_STEP_FENCE);
    in.old_fence_confirmed = 1;
    in.old_last_pos = 6000;
    in.target_receive_pos = 6000;
    in.target_replay_pos = 5900;
    t = go(&op, &in, now + 2000);
    expect_move(&t, MRD_STEP_CATCHUP, MRD_COND_FENCE_CONFIRMED);
    cr_assert_eq(op.barrier_pos, 6000);
    in.target_replay_pos = 6000;
    t = go(&op, &in, now + 3000);
    expect_move(&t, MRD_STEP_PROMOTE, MRD_COND_CAUGHT_UP);
    cr_assert_eq(op.lost_bytes, 0);
}

Test(opfsm, failover_fence_timeout_is_after_isolation)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    cr_assert_eq(op.timeouts.ms[MRD_TMO_FENCE],
                 pol.isolation_timeout_ms + pol.isolation_margin_ms + pol.fence_timeout_ms);
    mrd_op_inputs in = {.old_reachable = 1, .old_last_contact_ms = now};
    mrd_op_transition t = go(&op, &in, op.step_started_ms + op.timeouts.ms[MRD_TMO_FENCE] - 1);
    expect_stay(&t, MRD_STEP_FENCE);
    t = go(&op, &in, op.step_started_ms + op.timeouts.ms[MRD_TMO_FENCE]);
    expect_move(&t, MRD_STEP_ROLLBACK, MRD_COND_TIMEOUT);
    expect_cmd(&t, MRD_ACT_UNFENCE, "db-eu-1");
}

Test(opfsm, failover_never_recorded_contact_counts_from_op_creation)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    mrd_op_inputs in = {.old_reachable = 0, .old_last_contact_ms = 0};
    uint32_t iso = op.timeouts.isolation_ms;
    mrd_op_transition t = go(&op, &in, op.created_ms + iso - 1);
    expect_stay(&t, MRD_STEP_FENCE);
    t = go(&op, &in, op.created_ms + iso);
    expect_move(&t, MRD_STEP_CATCHUP, MRD_COND_ISOLATED);
}

Test(opfsm, cancel_before_promote_rolls_back)
{
    for (int k = 0; k < MRD_OP_KIND__COUNT; k++) {
        mrd_op op;
        uint64_t now;
        drive_to(&op, (mrd_op_kind)k, MRD_STEP_CATCHUP, &now);
        mrd_op_inputs in = {.cancel = 1, .target_replay_pos = 99999};
        mrd_op_transition t = go(&op, &in, now + 1);
        expect_move(&t, MRD_STEP_ROLLBACK, MRD_COND_CANCELLED);
        expect_cmd(&t, MRD_ACT_UNFENCE, "db-eu-1");
    }
}

Test(opfsm, fence_failure_rolls_back)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_FAILOVER, MRD_STEP_FENCE, &now);
    mrd_op_inputs in = {.step_failed = 1, .old_reachable = 1};
    mrd_op_transition t = go(&op, &in, now + 1);
    expect_move(&t, MRD_STEP_ROLLBACK, MRD_COND_STEP_FAILED);
    in = (mrd_op_inputs){.step_failed = 1};
    t = go(&op, &in, now + 2);
    expect_move(&t, MRD_STEP_FAILED, MRD_COND_STEP_FAILED);
}

/* ---- re-running after a crash ------------------------------------------- */

Test(opfsm, rerun_after_crash_gives_the_same_commands)
{
    for (int k = 0; k < MRD_OP_KIND__COUNT; k++) {
        for (int s = 0; s < MRD_STEP__COUNT; s++) {
            mrd_op op, persisted;
            mrd_op_inputs in = {0};
            mrd_op_transition a, b;
            init_op(&op, (mrd_op_kind)k);
            op.step = (mrd_op_step)s;
            op.barrier_pos = 100; /* not reached by the empty facts */
            persisted = op;       /* what a new leader reads back */
            cr_assert_geq(mrd_op_advance(&op, &in, T0 + 5, &a), 0);
            cr_assert_eq(mrd_op_apply(&op, &a, T0 + 5), 0);
            cr_assert_eq(op.step, (mrd_op_step)s, "no facts: no step change in %s",
                         mrd_op_step_name(s));
            cr_assert_geq(mrd_op_advance(&persisted, &in, T0 + 5, &b), 0);
            cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "%s", mrd_op_step_name(s));
            /* and the re-issued command ids are the same tick after tick */
            cr_assert_geq(mrd_op_advance(&op, &in, T0 + 6, &b), 0);
            cr_assert_eq(a.ncommands, b.ncommands);
            for (size_t i = 0; i < a.ncommands; i++)
                cr_assert_str_eq(a.commands[i].command_id, b.commands[i].command_id);
        }
    }
}

Test(opfsm, clock_going_back_does_not_time_out)
{
    mrd_op op;
    uint64_t now;
    drive_to(&op, MRD_OP_SWITCHOVER, MRD_STEP_CATCHUP, &now);
    mrd_op_inputs in = {0};
    mrd_op_transition t = go(&op, &in, op.step_started_ms - 100000);
    expect_stay(&t, MRD_STEP_CATCHUP);
}

/* ---- bad input ------------------------------------------------------------- */

Test(opfsm, bad_input_is_refused)
{
    mrd_op op;
    mrd_op_inputs in = {0};
    mrd_op_transition t;
    init_op(&op, MRD_OP_SWITCHOVER);
    cr_assert_eq(mrd_op_advance(NULL, &in, T0, &t), MRD_EINVAL);
    cr_assert_eq(t.result, MRD_OP_STAY);
    cr_assert_eq(t.ncommands, 0);
    cr_assert_eq(mrd_op_advance(&op, NULL, T0, &t), MRD_EINVAL);
    cr_assert_eq(mrd_op_advance(&op, &in, T0, NULL), MRD_EINVAL);
    op.step = (mrd_op_step)42;
    cr_assert_eq(mrd_op_advance(&op, &in, T0, &t), MRD_EINVAL);
    init_op(&op, MRD_OP_SWITCHOVER);
    op.kind = (mrd_op_kind)-3;
    cr_assert_eq(mrd_op_advance(&op, &in, T0, &t), MRD_EINVAL);
    init_op(&op, MRD_OP_SWITCHOVER);
    memset(op.to_node, 'x', sizeof(op.to_node));
    cr_assert_eq(mrd_op_advance(&op, &in, T0, &t), MRD_EINVAL);

    /* apply refuses a transition computed for another step */
    init_op(&op, MRD_OP_SWITCHOVER);
    in.plan_ok = 1;
    cr_assert_eq(mrd_op_advance(&op, &in, T0 + 1, &t), MRD_OP_MOVE);
    cr_assert_eq(mrd_op_apply(&op, &t, T0 + 1), 0);
    cr_assert_eq(mrd_op_apply(&op, &t, T0 + 2), MRD_EINVAL, "applied twice");
    cr_assert_eq(op.step, MRD_STEP_FENCE);
    cr_assert_eq(mrd_op_apply(NULL, &t, T0), MRD_EINVAL);

    char longname[MRD_NAME_MAX + 4];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_eq(
        mrd_op_init(&op, "id", MRD_OP_FAILOVER, longname, 1, "eu", "a", "us", "b", 0, &pol, T0),
        MRD_EINVAL);
    cr_assert_eq(op.service[0], '\0', "zeroed on failure");
    cr_assert_eq(
        mrd_op_init(&op, "id", MRD_OP_FAILOVER, "svc", 1, "eu", "", "us", "b", 0, &pol, T0),
        MRD_EINVAL);
    cr_assert_eq(
        mrd_op_init(&op, "id", (mrd_op_kind)7, "svc", 1, "eu", "a", "us", "b", 0, &pol, T0),
        MRD_EINVAL);
    cr_assert_eq(
        mrd_op_init(&op, "id", MRD_OP_FAILOVER, "svc", 1, "eu", "a", "us", "b", 0, NULL, T0),
        MRD_EINVAL);
    cr_assert_eq(
        mrd_op_init(NULL, "id", MRD_OP_FAILOVER, "svc", 1, "eu", "a", "us", "b", 0, &pol, T0),
        MRD_EINVAL);
}

Test(opfsm, names_are_distinct_and_parse_back)
{
    for (int s = 0; s < MRD_STEP__COUNT; s++) {
        mrd_op_step x;
        cr_assert_eq(mrd_op_step_parse(mrd_op_step_name(s), &x), 0);
        cr_assert_eq((int)x, s);
    }
    for (int k = 0; k < MRD_OP_KIND__COUNT; k++) {
        mrd_op_kind x;
        cr_assert_eq(mrd_op_kind_parse(mrd_op_kind_name(k), &x), 0);
        cr_assert_eq((int)x, k);
    }
    for (int a = 0; a < MRD_ACT__COUNT; a++)
        for (int b = a + 1; b < MRD_ACT__COUNT; b++)
            cr_assert_str_neq(mrd_op_action_name(a), mrd_op_action_name(b));
    for (int a = 0; a < MRD_COND__COUNT; a++)
        for (int b = a + 1; b < MRD_COND__COUNT; b++)
            cr_assert_str_neq(mrd_op_cond_name(a), mrd_op_cond_name(b));
    cr_assert_str_eq(mrd_op_step_name(MRD_STEP__COUNT), "?");
    cr_assert_str_eq(mrd_op_timeout_name(MRD_TMO_CUTOVER), "cutover");
    mrd_op_step x;
    cr_assert_eq(mrd_op_step_parse("nope", &x), MRD_EINVAL);
    cr_assert_eq(mrd_op_step_parse(NULL, &x), MRD_EINVAL);
    cr_assert(mrd_op_step_terminal(MRD_STEP_DONE) && mrd_op_step_terminal(MRD_STEP_ABORTED) &&
              mrd_op_step_terminal(MRD_STEP_FAILED) && !mrd_op_step_terminal(MRD_STEP_ROLLBACK));
}

/* A tagged op's command ids carry the tag: an op id handed out again by a
 * store that lost transactions names other commands. */
Test(opfsm, command_ids_carry_the_tag)
{
    mrd_op op;
    mrd_op_inputs in = {0};
    mrd_op_transition t;
    init_op(&op, MRD_OP_SWITCHOVER);
    snprintf(op.tag, sizeof(op.tag), "0123456789abcdef");
    in.plan_ok = 1;
    t = go(&op, &in, T0 + 20);
    expect_move(&t, MRD_STEP_FENCE, MRD_COND_PLAN_VALID);
    cr_assert_str_eq(t.commands[0].command_id, "op-42.0123456789abcdef/fence/fence");
    char id[MRD_OP_CMD_ID_MAX];
    cr_assert_eq(mrd_op_command_id(&op, "rejoin", "follow-2", id, sizeof(id)), 0);
    cr_assert_str_eq(id, "op-42.0123456789abcdef/rejoin/follow-2");
    cr_assert_eq(mrd_op_command_id(&op, "fence", "fence", id, 10), MRD_EINVAL);
    cr_assert_str_eq(id, "");
    cr_assert_eq(mrd_op_command_id(NULL, "fence", "fence", id, sizeof(id)), MRD_EINVAL);
}
