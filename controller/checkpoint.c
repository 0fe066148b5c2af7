/*
 * The pure side of data-sync checkpoints: whether a region reached a
 * checkpoint given its members' last reports, when, whether a checkpoint of
 * an older epoch is lost, and the small parsers of the API. No I/O, no
 * clock, no allocation: the store side (checkpoint_store.c) and the API
 * (api_checkpoints.c) feed it what the store holds, and the unit tests
 * (tests/unit/test_checkpoint.c) feed it tables.
 *
 * The rules are spelled out in checkpoint.h. Every loop is bounded by its
 * arguments; bad input (NULL, empty) gives "not reached", never a crash.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "meridian/error.h"

uint64_t mrd__ckpt_member_held(const mrd__ckpt_member *m)
{
    uint64_t held = m->replay_position;
    if ((m->role == MRD_ROLE_PRIMARY || m->role == MRD_ROLE_FENCED) && m->position > held)
        held = m->position;
    return held;
}

int mrd__ckpt_history_cmp(const mrd__ckpt *c, const mrd__ckpt_member *m)
{
    if (c->timeline != 0 && m->timeline != 0)
        return m->timeline < c->timeline ? -1 : m->timeline > c->timeline;
    return m->epoch_seen < c->epoch ? -1 : m->epoch_seen > c->epoch;
}

int mrd__ckpt_member_reaches(const mrd__ckpt *c, const mrd__ckpt_member *m, int carried)
{
    uint64_t held = mrd__ckpt_member_held(m);
    int cmp = mrd__ckpt_history_cmp(c, m);
    if (held == 0)
        return 0; /* nothing known */
    if (cmp == 0)
        return held >= c->position;
    if (cmp < 0)
        return 0;
    if (carried && held >= c->position)
        return 1;
    /* A promoted primary replayed c's history up to replay_position first. */
    return (m->role == MRD_ROLE_PRIMARY || m->role == MRD_ROLE_FENCED) && c->timeline != 0 &&
           m->timeline == c->timeline + 1 && m->replay_position != 0 &&
           m->replay_position >= c->position;
}

int mrd__ckpt_region_reaches(const mrd__ckpt *c, const char *region, const mrd__ckpt_member *ms,
                             size_t n, int carried, uint64_t *at_ms)
{
    int reached = 0;
    *at_ms = 0;
    if (region == NULL || (ms == NULL && n > 0))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ms[i].region, region) != 0 || !mrd__ckpt_member_reaches(c, &ms[i], carried))
            continue;
        uint64_t at = ms[i].seen_ms > c->created_ms ? ms[i].seen_ms : c->created_ms;
        if (!reached || at < *at_ms)
            *at_ms = at;
        reached = 1;
    }
    return reached;
}

size_t mrd__ckpt_evaluate(const mrd__ckpt *c, const mrd__ckpt_service *svc,
                          const mrd__ckpt_member *ms, size_t n, mrd__ckpt_mark *marks,
                          size_t nmarks)
{
    int carried = 0;
    uint64_t at;
    const char *primary = svc ? svc->primary_region : "";
    for (size_t i = 0; i < nmarks; i++)
        if (marks[i].marked && primary[0] && strcmp(marks[i].region, primary) == 0)
            carried = 1;
    if (!carried && primary[0] && !c->lost)
        carried = mrd__ckpt_region_reaches(c, primary, ms, n, 0, &at);
    size_t count = 0;
    for (size_t i = 0; i < nmarks; i++) {
        mrd__ckpt_mark *k = &marks[i];
        k->fresh = 0;
        if (k->marked) {
            k->reached = 1;
        } else if (c->lost) {
            k->reached = 0;
            k->at_ms = 0;
        } else {
            k->reached = mrd__ckpt_region_reaches(c, k->region, ms, n, carried, &k->at_ms);
            k->fresh = k->reached;
        }
        count += (size_t)k->reached;
    }
    return count;
}

int mrd__ckpt_is_lost(const mrd__ckpt *c, const mrd__ckpt_service *svc,
                      const mrd__ckpt_member *primary, int primary_region_reached)
{
    if (c->lost)
        return 1;
    if (svc == NULL || c->epoch >= svc->epoch || primary_region_reached || primary == NULL)
        return 0;
    /* Only once the primary of the current epoch has been promoted: until
     * then (a switchover catching up) it may still reach c. A newer timeline
     * proves the promotion (even if it fenced itself since); without
     * timelines, it must report itself a writable primary. */
    if (primary->epoch_seen < svc->epoch)
        return 0;
    if (c->timeline != 0 && primary->timeline != 0)
        return primary->timeline > c->timeline;
    return primary->role == MRD_ROLE_PRIMARY && !primary->fenced;
}

int mrd__ckpt_parse_wait(const char *text, uint64_t *out)
{
    uint64_t v = 0;
    if (text == NULL || text[0] == '\0') {
        *out = 0;
        return 0;
    }
    for (size_t i = 0; text[i]; i++) {
        if (text[i] < '0' || text[i] > '9' || i >= 18)
            return MRD_EINVAL;
        v = v * 10 + (uint64_t)(text[i] - '0');
    }
    *out = v > MRD__CKPT_MAX_WAIT_MS ? MRD__CKPT_MAX_WAIT_MS : v;
    return 0;
}

int mrd__ckpt_parse_regions(const char *text, char (*out)[MRD_NAME_MAX], size_t max)
{
    size_t n = 0;
    if (text == NULL)
        return 0;
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0 || len >= MRD_NAME_MAX || n >= max)
            return MRD_EINVAL;
        memcpy(out[n], p, len);
        out[n][len] = '\0';
        for (size_t i = 0; i < n; i++)
            if (strcmp(out[i], out[n]) == 0)
                return MRD_EINVAL;
        n++;
        if (e == NULL)
            break;
        p = e + 1;
        if (*p == '\0')
            return MRD_EINVAL; /* trailing comma */
    }
    return (int)n;
}

char *mrd__ckpt_time_format(uint64_t ms, char *buf, size_t len)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (len == 0)
        return buf;
    buf[0] = '\0';
    if (gmtime_r(&s, &tm) == NULL)
        return buf;
    char head[32];
    strftime(head, sizeof(head), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03uZ", head, (unsigned)(ms % 1000));
    return buf;
}
