/*
 * Divergence: the old primary wrote after its replacement was promoted.
 * With asynchronous replication nobody can stop an old primary frozen
 * together with its agent (a whole region or VM paused) from acknowledging
 * a write in the instant it resumes, before its agent fences it; the leader
 * must then see it and say so (docs/diverged.md).
 *
 * Called by the leader's tick (tick.c): mrd__diverge_observe() for the
 * running op of a service, mrd__diverge_watch() for the newest finished op
 * of each service whose rejoin was still pending when it completed. Both
 * take, as the old primary's position on its old history, the highest of
 * its current report (while it is a writable primary) and the final
 * positions of the op's fence and rejoin results, and hand it to the pure
 * mrd_op_divergence_check(). New figures
 * are merged into the op's state (state || patch, guarded by the lease and
 * by "only if larger") with an audit event operation.diverged on the first
 * detection, in one statement; the log line and the counters follow its
 * commit. A lost write is retried by the next tick (the state still lacks
 * the figures); a new leader finds them in the state and raises nothing
 * twice.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/error.h"
#include "meridian/position.h"

static uint64_t jpos(const json_t *o, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(o, key));
    return v > 0 ? (uint64_t)v : 0;
}

/* The old primary's highest position on its old history that the leader
 * can see now: its report while it is a writable primary, and the final
 * positions its fence and rejoin results carry. A fenced member's own
 * reports do not count: a read-only primary still writes a record now and
 * then by itself (a snapshot of running transactions, a checkpoint), which
 * no client wrote; what it wrote until its fence is in the fence's result. */
static uint64_t old_position(const mrd_op *op, const json_t *old, const json_t *cmds)
{
    uint64_t pos = 0;
    const char *role = json_string_value(json_object_get(old, "role"));
    if (role && strcmp(role, "primary") == 0 && !json_is_true(json_object_get(old, "fenced")))
        pos = jpos(old, "position");
    char fence_id[MRD_OP_CMD_ID_MAX], rejoin_id[MRD_OP_CMD_ID_MAX];
    if (mrd_op_command_id(op, "fence", "fence", fence_id, sizeof(fence_id)) != 0 ||
        mrd_op_command_id(op, "rejoin", "rejoin", rejoin_id, sizeof(rejoin_id)) != 0)
        return pos;
    size_t i;
    json_t *c;
    json_array_foreach((json_t *)cmds, i, c)
    {
        const char *id = json_string_value(json_object_get(c, "id"));
        if (id == NULL || (strcmp(id, fence_id) != 0 && strcmp(id, rejoin_id) != 0))
            continue;
        uint64_t p = jpos(json_object_get(c, "result"), "position");
        if (p > pos)
            pos = p;
    }
    return pos;
}

typedef struct {
    mrd_ctl *ctl;
    char service[MRD_NAME_MAX];
    char op_id[MRD_OP_ID_MAX];
    char member[MRD_NAME_MAX];
    mrd_op_divergence d;
    uint64_t fork;
    uint64_t delta; /* written_after bytes new in this report */
} div_req;

static void persist_done(int err, PGresult *res, void *data)
{
    div_req *r = data;
    if (err != 0) {
        mrd_log(MRD_LOG_WARN, "divergence not recorded", MRD_S("operation", r->op_id),
                MRD_S("error", err == MRD_EIO ? PQresultErrorMessage(res) : mrd_strerror(err)));
    } else if (PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "1") == 0) {
        int first = strcmp(PQgetvalue(res, 0, 1), "1") == 0;
        char old[MRD_POS_STRLEN], fork[MRD_POS_STRLEN];
        mrd_pos_format(r->d.old_seen_pos, old, sizeof(old));
        mrd_pos_format(r->fork, fork, sizeof(fork));
        mrd_log(MRD_LOG_ERROR,
                first ? "the old primary wrote after the failover"
                      : "the old primary wrote more after the failover",
                MRD_S("operation", r->op_id), MRD_S("service", r->service),
                MRD_S("member", r->member), MRD_S("old_position", old), MRD_S("fork", fork),
                MRD_U("diverged_bytes", r->d.diverged_bytes),
                MRD_U("written_after_failover_bytes", r->d.written_after_bytes));
        mrd__service *s = mrd__service_find(r->ctl, r->service);
        if (s) {
            if (first)
                s->diverged_ops++;
            s->diverged_bytes += r->delta;
        }
    }
    free(r);
}

static const char *persist_sql =
    "WITH g AS (SELECT meridian.is_leader($1, $2::bigint) AS ok),"
    " prev AS (SELECT coalesce((state->>'written_after_failover_bytes')::bigint, 0) AS w"
    "  FROM meridian.operations WHERE id = $3::bigint),"
    " up AS (UPDATE meridian.operations SET state = state || $4::jsonb"
    "  WHERE id = $3::bigint AND (SELECT ok FROM g)"
    "   AND coalesce((state->>'old_seen_pos')::bigint, 0) < $5::bigint RETURNING id),"
    " ev AS (INSERT INTO meridian.events (kind, service, actor, term, message, detail)"
    "  SELECT 'operation.diverged', $6, $1, $2::bigint, $7, $8::jsonb FROM prev"
    "  WHERE prev.w = 0 AND EXISTS (SELECT 1 FROM up) RETURNING 1)"
    " SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM ev)";

/* Records new figures of op (already applied to it) in the store, with the
 * event on the first detection. */
static void persist(mrd_ctl *ctl, const mrd__service *s, const mrd_op *op, const char *member,
                    const mrd_op_divergence *d, uint64_t delta)
{
    div_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return;
    r->ctl = ctl;
    r->d = *d;
    r->fork = op->fork_pos;
    r->delta = delta;
    snprintf(r->service, sizeof(r->service), "%s", s->name);
    snprintf(r->op_id, sizeof(r->op_id), "%s", op->id);
    snprintf(r->member, sizeof(r->member), "%s", member);
    char old[MRD_POS_STRLEN], fork[MRD_POS_STRLEN], message[400];
    mrd_pos_format(op->old_seen_pos, old, sizeof(old));
    mrd_pos_format(op->fork_pos, fork, sizeof(fork));
    snprintf(message, sizeof(message),
             "%s in %s wrote after the failover: %llu bytes of WAL beyond what the operation "
             "counted, %llu bytes past the fork %s are not on the new primary",
             member, op->from_region, (unsigned long long)op->written_after_bytes,
             (unsigned long long)op->diverged_bytes, fork);
    json_t *patch =
        json_pack("{s:I, s:I, s:I, s:I, s:I}", "fork_pos", (json_int_t)op->fork_pos, "old_seen_pos",
                  (json_int_t)op->old_seen_pos, "diverged_bytes", (json_int_t)op->diverged_bytes,
                  "written_after_failover_bytes", (json_int_t)op->written_after_bytes,
                  "diverged_ms", (json_int_t)op->diverged_ms);
    json_t *detail =
        json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "level", "error",
                  "operation", (json_int_t)strtoll(op->id, NULL, 10), "member", member, "region",
                  op->from_region, "new_primary_region", op->to_region, "old_position", old, "fork",
                  fork, "old_last_pos", (json_int_t)op->old_last_pos, "lost_bytes",
                  (json_int_t)op->lost_bytes, "diverged_bytes", (json_int_t)op->diverged_bytes,
                  "written_after_failover_bytes", (json_int_t)op->written_after_bytes);
    char *ptext = patch ? json_dumps(patch, JSON_COMPACT) : NULL;
    char *dtext = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(patch);
    json_decref(detail);
    char term[32], seen[32];
    snprintf(term, sizeof(term), "%lld", (long long)ctl->lease.term);
    snprintf(seen, sizeof(seen), "%llu", (unsigned long long)op->old_seen_pos);
    const char *params[8] = {ctl->cfg.name, term,    op->id,  ptext ? ptext : "{}",
                             seen,          s->name, message, dtext ? dtext : "{}"};
    if (ptext == NULL || dtext == NULL ||
        mrd_pg_query(ctl->pg, persist_sql, 8, params, persist_done, r) != 0)
        free(r);
    free(ptext);
    free(dtext);
}

void mrd__diverge_observe(mrd_ctl *ctl, const mrd__service *s, mrd_op *op, const json_t *old,
                          const json_t *cmds, uint64_t now)
{
    mrd_op_divergence d;
    if (mrd_op_divergence_check(op, old_position(op, old, cmds), &d) != 1)
        return;
    uint64_t delta = d.written_after_bytes - op->written_after_bytes;
    mrd_op_divergence_apply(op, &d, now);
    const mrd__member_cfg *m = mrd__member_by_node(s, op->from_node);
    persist(ctl, s, op, m ? m->name : op->from_node, &d, delta);
}

void mrd__diverge_watch(mrd_ctl *ctl, json_t *snap, uint64_t now)
{
    size_t i;
    json_t *row;
    json_array_foreach(json_object_get(snap, "diverge_watch"), i, row)
    {
        const char *name = json_string_value(json_object_get(row, "service"));
        mrd__service *s = name ? mrd__service_find(ctl, name) : NULL;
        mrd_op op;
        if (s == NULL || mrd__op_from_json(json_object_get(row, "state"), &op) != 0)
            continue;
        snprintf(op.id, sizeof(op.id), "%lld",
                 (long long)json_integer_value(json_object_get(row, "id")));
        const mrd__member_cfg *m = mrd__member_by_node(s, op.from_node);
        json_t *old =
            m ? json_object_get(json_object_get(json_object_get(snap, "ix_members"), s->name),
                                m->name)
              : NULL;
        mrd__diverge_observe(ctl, s, &op, old, json_object_get(row, "commands"), now);
    }
}
