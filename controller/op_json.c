/*
 * The JSON form of an operation's state (mrd_op), as the leader persists it
 * in meridian.operations.state and the API shows it. Pure: no I/O. Reading
 * accepts only what writing produces (names of steps and kinds, integers);
 * a corrupt row is refused with MRD_EPARSE rather than half-read.
 */
#include <stdio.h>
#include <string.h>

#include "controller.h"
#include "meridian/error.h"

json_t *mrd__op_to_json(const mrd_op *op)
{
    json_t *entered = json_object();
    for (int s = 0; s < MRD_STEP__COUNT; s++)
        if (op->step_entered_ms[s])
            json_object_set_new(entered, mrd_op_step_name((mrd_op_step)s),
                                json_integer((json_int_t)op->step_entered_ms[s]));
    json_t *tmo = json_object();
    for (int t = 1; t < MRD_TMO__COUNT; t++)
        json_object_set_new(tmo, mrd_op_timeout_name((mrd_op_timeout)t),
                            json_integer(op->timeouts.ms[t]));
    json_object_set_new(tmo, "isolation", json_integer(op->timeouts.isolation_ms));
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:b, s:s, s:I, s:I, s:o, s:I, s:I,"
        " s:I, s:I, s:b, s:s, s:s, s:o}",
        "id", op->id, "tag", op->tag, "kind", mrd_op_kind_name(op->kind), "service", op->service,
        "epoch", (json_int_t)op->epoch, "from_region", op->from_region, "from_node", op->from_node,
        "to_region", op->to_region, "to_node", op->to_node, "force", op->force, "step",
        mrd_op_step_name(op->step), "created_ms", (json_int_t)op->created_ms, "step_started_ms",
        (json_int_t)op->step_started_ms, "step_entered_ms", entered, "attempts",
        (json_int_t)op->attempts, "old_last_pos", (json_int_t)op->old_last_pos, "barrier_pos",
        (json_int_t)op->barrier_pos, "lost_bytes", (json_int_t)op->lost_bytes, "rejoin_pending",
        op->rejoin_pending, "failed_from", mrd_op_step_name(op->failed_from), "why", op->why,
        "timeouts", tmo);
    if (j == NULL)
        return NULL;
    /* the fork and what the old primary wrote beyond it (docs/diverged.md) */
    json_object_set_new(j, "fork_pos", json_integer((json_int_t)op->fork_pos));
    json_object_set_new(j, "old_seen_pos", json_integer((json_int_t)op->old_seen_pos));
    json_object_set_new(j, "diverged_bytes", json_integer((json_int_t)op->diverged_bytes));
    json_object_set_new(j, "written_after_failover_bytes",
                        json_integer((json_int_t)op->written_after_bytes));
    json_object_set_new(j, "diverged_ms", json_integer((json_int_t)op->diverged_ms));
    return j;
}

static int get_str(const json_t *j, const char *key, char *dst, size_t len)
{
    const char *v = json_string_value(json_object_get(j, key));
    if (v == NULL || strlen(v) >= len)
        return MRD_EPARSE;
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static uint64_t get_u64(const json_t *j, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(j, key));
    return v > 0 ? (uint64_t)v : 0;
}

int mrd__op_from_json(const json_t *j, mrd_op *op)
{
    memset(op, 0, sizeof(*op));
    if (!json_is_object(j))
        return MRD_EPARSE;
    if (get_str(j, "id", op->id, sizeof(op->id)) ||
        get_str(j, "service", op->service, sizeof(op->service)) ||
        get_str(j, "from_region", op->from_region, sizeof(op->from_region)) ||
        get_str(j, "from_node", op->from_node, sizeof(op->from_node)) ||
        get_str(j, "to_region", op->to_region, sizeof(op->to_region)) ||
        get_str(j, "to_node", op->to_node, sizeof(op->to_node)) ||
        get_str(j, "why", op->why, sizeof(op->why)))
        return MRD_EPARSE;
    /* no tag: an op persisted before tags existed keeps its command ids */
    const char *tag = json_string_value(json_object_get(j, "tag"));
    if (tag != NULL && get_str(j, "tag", op->tag, sizeof(op->tag)) != 0)
        return MRD_EPARSE;
    if (mrd_op_kind_parse(json_string_value(json_object_get(j, "kind")), &op->kind) != 0 ||
        mrd_op_step_parse(json_string_value(json_object_get(j, "step")), &op->step) != 0)
        return MRD_EPARSE;
    if (mrd_op_step_parse(json_string_value(json_object_get(j, "failed_from")), &op->failed_from) !=
        0)
        op->failed_from = MRD_STEP_PLAN;
    op->epoch = get_u64(j, "epoch");
    op->force = json_is_true(json_object_get(j, "force"));
    op->created_ms = get_u64(j, "created_ms");
    op->step_started_ms = get_u64(j, "step_started_ms");
    op->attempts = (uint32_t)get_u64(j, "attempts");
    op->old_last_pos = get_u64(j, "old_last_pos");
    op->barrier_pos = get_u64(j, "barrier_pos");
    op->lost_bytes = get_u64(j, "lost_bytes");
    op->fork_pos = get_u64(j, "fork_pos"); /* absent in states written before: 0 */
    op->old_seen_pos = get_u64(j, "old_seen_pos");
    op->diverged_bytes = get_u64(j, "diverged_bytes");
    op->written_after_bytes = get_u64(j, "written_after_failover_bytes");
    op->diverged_ms = get_u64(j, "diverged_ms");
    op->rejoin_pending = json_is_true(json_object_get(j, "rejoin_pending"));
    json_t *entered = json_object_get(j, "step_entered_ms");
    for (int s = 0; s < MRD_STEP__COUNT; s++)
        op->step_entered_ms[s] = get_u64(entered, mrd_op_step_name((mrd_op_step)s));
    json_t *tmo = json_object_get(j, "timeouts");
    for (int t = 1; t < MRD_TMO__COUNT; t++)
        op->timeouts.ms[t] = (uint32_t)get_u64(tmo, mrd_op_timeout_name((mrd_op_timeout)t));
    op->timeouts.isolation_ms = (uint32_t)get_u64(tmo, "isolation");
    return 0;
}
