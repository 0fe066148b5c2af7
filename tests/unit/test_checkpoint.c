/*
 * Unit tests of the pure checkpoint logic (controller/checkpoint.c): when a
 * region reached a checkpoint given its members' reports (equal positions,
 * several members, report times, timelines and epochs, carried checkpoints,
 * promoted primaries), sticky marks against reordered reports, lost
 * checkpoints after an epoch change, and the API's small parsers.
 *
 * Topology: regions eu (primary), us, ap; one PostgreSQL member each unless
 * a test says otherwise. Checkpoint C: epoch 3, timeline 2, position 1000,
 * created at T.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "checkpoint.h"
#include "meridian/error.h"

#define T 1700000000000ull

static mrd__ckpt ck(uint64_t epoch, uint64_t timeline, uint64_t pos)
{
    mrd__ckpt c;
    memset(&c, 0, sizeof(c));
    c.id = 7;
    c.epoch = epoch;
    c.timeline = timeline;
    c.position = pos;
    c.created_ms = T;
    return c;
}

static mrd__ckpt_member mem(const char *region, mrd_role role, uint64_t timeline, uint64_t epoch,
                            uint64_t pos, uint64_t replay, uint64_t seen)
{
    mrd__ckpt_member m;
    memset(&m, 0, sizeof(m));
    snprintf(m.region, sizeof(m.region), "%s", region);
    m.role = role;
    m.timeline = timeline;
    m.epoch_seen = epoch;
    m.position = pos;
    m.replay_position = replay;
    m.seen_ms = seen;
    return m;
}

static mrd__ckpt_service svc(uint64_t epoch, const char *primary)
{
    mrd__ckpt_service s;
    memset(&s, 0, sizeof(s));
    s.epoch = epoch;
    snprintf(s.primary_region, sizeof(s.primary_region), "%s", primary);
    return s;
}

static void marks_init(mrd__ckpt_mark *m, size_t n)
{
    static const char *names[] = {"eu", "us", "ap"};
    memset(m, 0, n * sizeof(*m));
    for (size_t i = 0; i < n; i++)
        snprintf(m[i].region, sizeof(m[i].region), "%s", names[i]);
}

Test(reach, equal_position_counts_one_less_does_not)
{
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_member eq = mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 1000, T + 5);
    mrd__ckpt_member less = mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 999, T + 5);
    mrd__ckpt_member more = mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 1 << 20, T + 5);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &eq, 0), 1);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &less, 0), 0);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &more, 0), 1);
}

Test(reach, replica_counts_replay_not_receive_nor_position)
{
    mrd__ckpt c = ck(3, 2, 1000);
    /* A replica's position field means nothing (0 on the wire); even a stray
     * value must not count, only what it replayed. */
    mrd__ckpt_member r = mem("us", MRD_ROLE_REPLICA, 2, 3, 5000, 10, T);
    cr_assert_eq(mrd__ckpt_member_held(&r), 10);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &r, 0), 0);
    mrd__ckpt_member p = mem("eu", MRD_ROLE_PRIMARY, 2, 3, 5000, 0, T);
    cr_assert_eq(mrd__ckpt_member_held(&p), 5000);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &p, 0), 1);
    mrd__ckpt_member f = mem("eu", MRD_ROLE_FENCED, 2, 4, 1000, 0, T);
    f.epoch_seen = 3;
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &f, 0), 1, "a fenced primary holds what it wrote");
}

Test(reach, unknown_report_never_reaches)
{
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_member none = mem("us", MRD_ROLE_UNKNOWN, 0, 0, 0, 0, T);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &none, 1), 0);
    mrd__ckpt c0 = ck(3, 2, 0);
    cr_assert_eq(mrd__ckpt_member_reaches(&c0, &none, 1), 0, "position 0 is 'not known'");
}

Test(reach, region_with_several_members_any_one_and_earliest_time)
{
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_member ms[] = {
        mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 900, T + 100),  /* behind */
        mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 1200, T + 300), /* reached, later report */
        mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 1000, T + 200), /* reached, earlier report */
        mem("ap", MRD_ROLE_REPLICA, 2, 3, 0, 5000, T + 50),  /* another region */
    };
    uint64_t at;
    cr_assert_eq(mrd__ckpt_region_reaches(&c, "us", ms, 4, 0, &at), 1);
    cr_assert_eq(at, T + 200);
    cr_assert_eq(mrd__ckpt_region_reaches(&c, "ap", ms, 4, 0, &at), 1);
    cr_assert_eq(at, T + 50);
    cr_assert_eq(mrd__ckpt_region_reaches(&c, "eu", ms, 4, 0, &at), 0);
    cr_assert_eq(at, 0);
    cr_assert_eq(mrd__ckpt_region_reaches(&c, "us", ms, 1, 0, &at), 0, "only the one behind");
}

Test(reach, time_is_never_before_creation)
{
    /* A report older than the checkpoint (recorded before it was created)
     * that already shows the position: reached at creation. */
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_member m = mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 2000, T - 700);
    uint64_t at;
    cr_assert_eq(mrd__ckpt_region_reaches(&c, "us", &m, 1, 0, &at), 1);
    cr_assert_eq(at, T);
}

Test(reach, history_by_timeline_then_by_epoch)
{
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_member same = mem("us", MRD_ROLE_REPLICA, 2, 9, 0, 10, T);
    mrd__ckpt_member older = mem("us", MRD_ROLE_REPLICA, 1, 3, 0, 10, T);
    mrd__ckpt_member newer = mem("us", MRD_ROLE_REPLICA, 3, 1, 0, 10, T);
    cr_assert_eq(mrd__ckpt_history_cmp(&c, &same), 0, "timelines decide, not epochs");
    cr_assert_eq(mrd__ckpt_history_cmp(&c, &older), -1);
    cr_assert_eq(mrd__ckpt_history_cmp(&c, &newer), 1);
    mrd__ckpt_member e_same = mem("us", MRD_ROLE_REPLICA, 0, 3, 0, 10, T);
    mrd__ckpt_member e_old = mem("us", MRD_ROLE_REPLICA, 0, 2, 0, 10, T);
    mrd__ckpt_member e_new = mem("us", MRD_ROLE_REPLICA, 5, 4, 0, 10, T);
    mrd__ckpt c_exec = ck(3, 0, 1000); /* no timelines (exec members) */
    cr_assert_eq(mrd__ckpt_history_cmp(&c, &e_same), 0, "unknown timeline: epochs");
    cr_assert_eq(mrd__ckpt_history_cmp(&c, &e_old), -1);
    cr_assert_eq(mrd__ckpt_history_cmp(&c_exec, &e_new), 1);
}

Test(reach, newer_history_counts_only_when_carried)
{
    /* After a failover to us (timeline 3), ap follows us. A checkpoint of
     * timeline 2 at 1000: ap's replay of 5000 on timeline 3 holds it only if
     * the new primary region had it (carried). */
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_member ap = mem("ap", MRD_ROLE_REPLICA, 3, 4, 0, 5000, T + 10);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &ap, 0), 0);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &ap, 1), 1);
    mrd__ckpt_member old = mem("ap", MRD_ROLE_REPLICA, 1, 4, 0, 5000, T + 10);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &old, 1), 0, "an older history never reaches");
}

Test(reach, promoted_primary_by_replay_before_promotion)
{
    mrd__ckpt c = ck(3, 2, 1000);
    /* us promoted: timeline 3, position far ahead on its own timeline; it
     * replayed timeline 2 up to 1500 before the promotion. */
    mrd__ckpt_member us = mem("us", MRD_ROLE_PRIMARY, 3, 4, 90000, 1500, T + 10);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &us, 0), 1);
    mrd__ckpt_member short_ = mem("us", MRD_ROLE_PRIMARY, 3, 4, 90000, 900, T + 10);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &short_, 0), 0,
                 "its position on timeline 3 must not count for timeline 2");
    mrd__ckpt_member two_later = mem("us", MRD_ROLE_PRIMARY, 4, 5, 90000, 1500, T + 10);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &two_later, 0), 0,
                 "replay position is of the timeline just before its own");
    mrd__ckpt_member replica = mem("us", MRD_ROLE_REPLICA, 3, 4, 0, 1500, T + 10);
    cr_assert_eq(mrd__ckpt_member_reaches(&c, &replica, 0), 0, "only for a promoted primary");
}

Test(evaluate, primary_region_reaches_at_creation_others_when_replayed)
{
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_service s = svc(3, "eu");
    mrd__ckpt_member ms[] = {
        mem("eu", MRD_ROLE_PRIMARY, 2, 3, 1000, 0, T - 300),
        mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 1000, T + 400),
        mem("ap", MRD_ROLE_REPLICA, 2, 3, 0, 999, T + 450),
    };
    mrd__ckpt_mark m[3];
    marks_init(m, 3);
    cr_assert_eq(mrd__ckpt_evaluate(&c, &s, ms, 3, m, 3), 2);
    cr_assert(m[0].reached && m[0].fresh && m[0].at_ms == T);
    cr_assert(m[1].reached && m[1].fresh && m[1].at_ms == T + 400);
    cr_assert(!m[2].reached && !m[2].fresh && m[2].at_ms == 0);
}

Test(evaluate, marks_are_sticky_against_reordered_reports)
{
    /* The store got us's reports out of order: a newer one (replay 1200 at
     * T+400) was marked; now an older one (replay 800) overwrote it. The mark
     * stays, with its first time, and is not fresh (nothing to write). */
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_service s = svc(3, "eu");
    mrd__ckpt_member ms[] = {
        mem("eu", MRD_ROLE_PRIMARY, 2, 3, 1300, 0, T + 900),
        mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 800, T + 800),
    };
    mrd__ckpt_mark m[2];
    marks_init(m, 2);
    m[1].marked = 1;
    m[1].at_ms = T + 400;
    cr_assert_eq(mrd__ckpt_evaluate(&c, &s, ms, 2, m, 2), 2);
    cr_assert(m[1].reached && !m[1].fresh && m[1].at_ms == T + 400);
    /* And a later report that also reaches does not move the first time. */
    ms[1].replay_position = 5000;
    ms[1].seen_ms = T + 5000;
    cr_assert_eq(mrd__ckpt_evaluate(&c, &s, ms, 2, m, 2), 2);
    cr_assert_eq(m[1].at_ms, T + 400);
}

Test(evaluate, carried_through_primary_region_mark_or_evaluation)
{
    /* Epoch 4 after a failover eu -> us (timeline 3). Checkpoint of epoch 3. */
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_service s = svc(4, "us");
    mrd__ckpt_member ms[] = {
        mem("eu", MRD_ROLE_FENCED, 2, 4, 1300, 0, T + 100),
        mem("us", MRD_ROLE_PRIMARY, 3, 4, 70000, 1200, T + 200),
        mem("ap", MRD_ROLE_REPLICA, 3, 4, 0, 60000, T + 300),
    };
    mrd__ckpt_mark m[3];
    marks_init(m, 3);
    cr_assert_eq(mrd__ckpt_evaluate(&c, &s, ms, 3, m, 3), 3, "us replayed it: carried to ap");
    cr_assert_eq(m[2].at_ms, T + 300);

    /* us promoted from 900: c is not in timeline 3; ap's 60000 means nothing. */
    ms[1].replay_position = 900;
    marks_init(m, 3);
    cr_assert_eq(mrd__ckpt_evaluate(&c, &s, ms, 3, m, 3), 1);
    cr_assert(m[0].reached && !m[1].reached && !m[2].reached);

    /* ...unless the store already has us's mark (made before the promotion). */
    marks_init(m, 3);
    m[1].marked = 1;
    m[1].at_ms = T + 50;
    cr_assert_eq(mrd__ckpt_evaluate(&c, &s, ms, 3, m, 3), 3);
}

Test(evaluate, lost_checkpoint_reaches_nothing_new)
{
    mrd__ckpt c = ck(3, 2, 1000);
    c.lost = 1;
    mrd__ckpt_service s = svc(3, "eu");
    mrd__ckpt_member ms[] = {mem("us", MRD_ROLE_REPLICA, 2, 3, 0, 5000, T)};
    mrd__ckpt_mark m[2];
    marks_init(m, 2);
    m[0].marked = 1;
    m[0].at_ms = T;
    cr_assert_eq(mrd__ckpt_evaluate(&c, &s, ms, 1, m, 2), 1, "only the stored mark");
    cr_assert(!m[1].reached);
}

Test(lost, only_after_promotion_in_a_newer_epoch_without_the_primary_region)
{
    mrd__ckpt c = ck(3, 2, 1000);
    mrd__ckpt_service s4 = svc(4, "us");
    mrd__ckpt_member promoted = mem("us", MRD_ROLE_PRIMARY, 3, 4, 70000, 900, T + 10);
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &promoted, 0), 1);
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &promoted, 1), 0, "the primary region reached it");

    mrd__ckpt_service s3 = svc(3, "eu");
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s3, &promoted, 0), 0, "same epoch: never lost");

    /* A switchover still catching up: epoch 4 announced, target a replica. */
    mrd__ckpt_member catching = mem("us", MRD_ROLE_REPLICA, 2, 4, 0, 900, T + 10);
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &catching, 0), 0);
    /* Promoted but has not seen epoch 4 yet. */
    mrd__ckpt_member stale = mem("us", MRD_ROLE_PRIMARY, 3, 3, 70000, 900, T + 10);
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &stale, 0), 0);
    /* Primary on the checkpoint's own timeline (no promotion happened). */
    mrd__ckpt_member same_tl = mem("us", MRD_ROLE_PRIMARY, 2, 4, 70000, 0, T + 10);
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &same_tl, 0), 0);
    mrd__ckpt_member fenced = promoted;
    fenced.fenced = 1;
    fenced.role = MRD_ROLE_FENCED;
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &fenced, 0), 1,
                 "promoted (timeline 3), then fenced itself: still promoted");
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, NULL, 0), 0, "primary unknown");
    cr_assert_eq(mrd__ckpt_is_lost(&c, NULL, &promoted, 0), 0);
    c.lost = 1;
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s3, NULL, 1), 1, "once lost, stays lost");
}

Test(lost, exec_members_without_timelines)
{
    mrd__ckpt c = ck(3, 0, 1000);
    mrd__ckpt_service s4 = svc(4, "us");
    mrd__ckpt_member promoted = mem("us", MRD_ROLE_PRIMARY, 0, 4, 70000, 0, T + 10);
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &promoted, 0), 1);
    mrd__ckpt_member fenced = promoted;
    fenced.fenced = 1;
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &fenced, 0), 0, "not known to be promoted");
    mrd__ckpt_member replica = mem("us", MRD_ROLE_REPLICA, 0, 4, 0, 900, T + 10);
    cr_assert_eq(mrd__ckpt_is_lost(&c, &s4, &replica, 0), 0);
}

Test(parse, wait_ms)
{
    uint64_t v = 99;
    cr_assert_eq(mrd__ckpt_parse_wait("", &v), 0);
    cr_assert_eq(v, 0);
    cr_assert_eq(mrd__ckpt_parse_wait(NULL, &v), 0);
    cr_assert_eq(mrd__ckpt_parse_wait("10000", &v), 0);
    cr_assert_eq(v, 10000);
    cr_assert_eq(mrd__ckpt_parse_wait("600000", &v), 0);
    cr_assert_eq(v, MRD__CKPT_MAX_WAIT_MS);
    cr_assert_eq(mrd__ckpt_parse_wait("99999999999999999999999", &v), MRD_EINVAL);
    cr_assert_eq(mrd__ckpt_parse_wait("-1", &v), MRD_EINVAL);
    cr_assert_eq(mrd__ckpt_parse_wait("1.5", &v), MRD_EINVAL);
    cr_assert_eq(mrd__ckpt_parse_wait("10s", &v), MRD_EINVAL);
}

Test(parse, regions)
{
    char r[4][MRD_NAME_MAX];
    cr_assert_eq(mrd__ckpt_parse_regions("eu", r, 4), 1);
    cr_assert_str_eq(r[0], "eu");
    cr_assert_eq(mrd__ckpt_parse_regions("eu,us,ap", r, 4), 3);
    cr_assert_str_eq(r[2], "ap");
    cr_assert_eq(mrd__ckpt_parse_regions("", r, 4), 0);
    cr_assert_eq(mrd__ckpt_parse_regions("eu,,us", r, 4), MRD_EINVAL);
    cr_assert_eq(mrd__ckpt_parse_regions("eu,", r, 4), MRD_EINVAL);
    cr_assert_eq(mrd__ckpt_parse_regions(",eu", r, 4), MRD_EINVAL);
    cr_assert_eq(mrd__ckpt_parse_regions("eu,eu", r, 4), MRD_EINVAL);
    cr_assert_eq(mrd__ckpt_parse_regions("a,b,c,d,e", r, 4), MRD_EINVAL);
    char longname[100];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_assert_eq(mrd__ckpt_parse_regions(longname, r, 4), MRD_EINVAL);
}

Test(parse, time_format)
{
    char buf[40];
    cr_assert_str_eq(mrd__ckpt_time_format(0, buf, sizeof(buf)), "1970-01-01T00:00:00.000Z");
    cr_assert_str_eq(mrd__ckpt_time_format(1700000000123ull, buf, sizeof(buf)),
                     "2023-11-14T22:13:20.123Z");
    char tiny[4];
    mrd__ckpt_time_format(1700000000123ull, tiny, sizeof(tiny));
    cr_assert_eq(strlen(tiny), 3, "truncated, still terminated");
}
