/*
 * Epoch file of the agent (epoch_store.h): highest epoch per service and the
 * ring of recently started command ids, persisted in <state_dir>/epochs.json.
 *
 * Called by the heartbeat loop (observe epochs of every answer; begin/finish
 * each command) and by the peer-lease handler (refuse leases of an older
 * epoch). Every change is written synchronously on the loop thread: the file
 * is small (at most ~1024 ids) and changes only when an epoch moves or a
 * command arrives, so the fsyncs are rare and bounded.
 *
 * Durability: write <path>.tmp, fsync it, rename over <path>, fsync the
 * directory. A crash leaves either the old or the new file, never a torn
 * one. When a write fails, the in-memory state keeps the safer value (the
 * raised epoch; a command that was not recorded is not executed).
 */
#include "epoch_store.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meridian/error.h"

typedef struct {
    char service[MRD_PROTO_NAME_MAX];
    int64_t epoch;
} svc_epoch;

struct mrd__epoch_store {
    char *dir;
    char *path;
    char *tmp;
    svc_epoch *svcs;
    size_t nsvcs, capsvcs;
    mrd__cmd_record *ring; /* oldest at head */
    size_t head, count, cap;
};

static const char *const state_names[] = {"started", "done", "failed", "refused", NULL};

static void seterr(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, a, b);
}

static mrd__cmd_record *ring_at(const mrd__epoch_store *s, size_t i)
{
    return &s->ring[(s->head + i) % s->cap];
}

static mrd__cmd_record *find_cmd(const mrd__epoch_store *s, const char *id)
{
    for (size_t i = 0; i < s->count; i++) {
        mrd__cmd_record *r = ring_at(s, i);
        if (strcmp(r->id, id) == 0)
            return r;
    }
    return NULL;
}

static mrd__cmd_record *push_cmd(mrd__epoch_store *s)
{
    mrd__cmd_record *r;
    if (s->count == s->cap) {
        r = ring_at(s, 0); /* forget the oldest */
        s->head = (s->head + 1) % s->cap;
        s->count--;
    }
    r = ring_at(s, s->count);
    s->count++;
    memset(r, 0, sizeof(*r));
    return r;
}

static void pop_last_cmd(mrd__epoch_store *s)
{
    if (s->count)
        s->count--;
}

static svc_epoch *find_svc(const mrd__epoch_store *s, const char *service)
{
    for (size_t i = 0; i < s->nsvcs; i++)
        if (strcmp(s->svcs[i].service, service) == 0)
            return &s->svcs[i];
    return NULL;
}

static int valid_name(const char *s, size_t max)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n < max;
}

static int set_svc(mrd__epoch_store *s, const char *service, int64_t epoch)
{
    svc_epoch *e = find_svc(s, service);
    if (e) {
        e->epoch = epoch;
        return 0;
    }
    if (!valid_name(service, MRD_PROTO_NAME_MAX))
        return MRD_EINVAL;
    if (s->nsvcs == MRD__EPOCH_STORE_MAX_SERVICES)
        return MRD_ETOOBIG;
    if (s->nsvcs == s->capsvcs) {
        size_t ncap = s->capsvcs ? s->capsvcs * 2 : 8;
        svc_epoch *n = realloc(s->svcs, ncap * sizeof(*n));
        if (!n)
            return MRD_ENOMEM;
        s->svcs = n;
        s->capsvcs = ncap;
    }
    e = &s->svcs[s->nsvcs++];
    memset(e, 0, sizeof(*e));
    memcpy(e->service, service, strlen(service) + 1);
    e->epoch = epoch;
    return 0;
}

/* ---- persistence ---- */

static json_t *to_json(const mrd__epoch_store *s)
{
    json_t *root = json_object(), *eps = json_object(), *cmds = json_array();
    int bad = !root || !eps || !cmds;
    for (size_t i = 0; !bad && i < s->nsvcs; i++)
        bad = json_object_set_new(eps, s->svcs[i].service,
                                  json_integer((json_int_t)s->svcs[i].epoch)) != 0;
    for (size_t i = 0; !bad && i < s->count; i++) {
        const mrd__cmd_record *r = ring_at(s, i);
        json_t *c = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I}", "id", r->id, "service", r->service,
                              "epoch", (json_int_t)r->epoch, "state", state_names[r->state],
                              "error", r->error, "position", (json_int_t)r->position);
        bad = !c || json_array_append_new(cmds, c) != 0;
    }
    if (!bad)
        bad = json_object_set_new(root, "version", json_integer(1)) ||
              json_object_set(root, "epochs", eps) || json_object_set(root, "commands", cmds);
    json_decref(eps);
    json_decref(cmds);
    if (bad) {
        json_decref(root);
        return NULL;
    }
    return root;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int persist(mrd__epoch_store *s)
{
    json_t *j = to_json(s);
    if (!j)
        return MRD_ENOMEM;
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return MRD_ENOMEM;
    int rc = MRD_EIO;
    int fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        if (write_all(fd, text, strlen(text)) == 0 && write_all(fd, "\n", 1) == 0 &&
            fsync(fd) == 0) {
            if (close(fd) == 0 && rename(s->tmp, s->path) == 0) {
                int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0) {
                    if (fsync(dfd) == 0)
                        rc = 0;
                    close(dfd);
                }
            }
            fd = -1;
        }
        if (fd >= 0)
            close(fd);
    }
    free(text);
    if (rc)
        unlink(s->tmp);
    return rc;
}

static int load(mrd__epoch_store *s, char *err, size_t errlen)
{
    json_error_t jerr;
    struct stat st;
    if (stat(s->path, &st) != 0) {
        if (errno == ENOENT)
            return 0;
        seterr(err, errlen, "%s: %s", s->path, strerror(errno));
        return MRD_EIO;
    }
    json_t *j = json_load_file(s->path, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        if (err && errlen)
            snprintf(err, errlen, "%s:%d:%d: %s", s->path, jerr.line, jerr.column, jerr.text);
        return MRD_EPARSE;
    }
    int rc = MRD_EPARSE;
    const char *why = "must be an object";
    json_t *eps = json_object_get(j, "epochs"), *cmds = json_object_get(j, "commands");
    if (!json_is_object(j))
        goto out;
    why = "version must be 1";
    if (json_integer_value(json_object_get(j, "version")) != 1)
        goto out;
    why = "epochs must be an object of non-negative integers";
    if (!json_is_object(eps))
        goto out;
    const char *k;
    json_t *v;
    json_object_foreach(eps, k, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            goto out;
        int src = set_svc(s, k, (int64_t)json_integer_value(v));
        if (src) {
            rc = src;
            why = "bad or too many services";
            goto out;
        }
    }
    why = "commands must be an array of {id, service, epoch, state, error}";
    if (!json_is_array(cmds))
        goto out;
    size_t i;
    json_array_foreach(cmds, i, v)
    {
        const char *id = json_string_value(json_object_get(v, "id"));
        const char *svc = json_string_value(json_object_get(v, "service"));
        const char *state = json_string_value(json_object_get(v, "state"));
        const char *error = json_string_value(json_object_get(v, "error"));
        json_t *ep = json_object_get(v, "epoch");
        int si = -1;
        for (int n = 0; state && state_names[n]; n++)
            if (strcmp(state, state_names[n]) == 0)
                si = n;
        if (!valid_name(id, MRD_PROTO_ID_MAX) || !valid_name(svc, MRD_PROTO_NAME_MAX) || si < 0 ||
            !json_is_integer(ep) || json_integer_value(ep) < 0)
            goto out;
        mrd__cmd_record *r = push_cmd(s);
        memcpy(r->id, id, strlen(id) + 1);
        memcpy(r->service, svc, strlen(svc) + 1);
        r->epoch = (int64_t)json_integer_value(ep);
        r->state = (mrd__cmd_state)si;
        snprintf(r->error, sizeof(r->error), "%s", error ? error : "");
        json_t *pos = json_object_get(v, "position");
        r->position = json_is_integer(pos) && json_integer_value(pos) > 0
                          ? (int64_t)json_integer_value(pos)
                          : 0;
        if (r->state == MRD__CMD_STARTED) {
            r->state = MRD__CMD_FAILED;
            snprintf(r->error, sizeof(r->error), "interrupted by an agent restart");
        }
    }
    rc = 0;
out:
    if (rc && err && errlen)
        snprintf(err, errlen, "%s: %s", s->path, why);
    json_decref(j);
    return rc;
}

/* ---- public ---- */

static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

int mrd__epoch_store_open(mrd__epoch_store **out, const char *dir, size_t max_ids, char *err,
                          size_t errlen)
{
    *out = NULL;
    if (!dir || !dir[0]) {
        seterr(err, errlen, "%s%s", "state_dir: must not be empty", "");
        return MRD_EINVAL;
    }
    mrd__epoch_store *s = calloc(1, sizeof(*s));
    if (!s)
        return MRD_ENOMEM;
    s->cap = max_ids ? max_ids : MRD__EPOCH_STORE_DEFAULT_IDS;
    s->dir = strdup(dir);
    s->path = join(dir, "epochs.json");
    s->tmp = join(dir, "epochs.json.tmp");
    s->ring = calloc(s->cap, sizeof(*s->ring));
    if (!s->dir || !s->path || !s->tmp || !s->ring) {
        mrd__epoch_store_close(s);
        seterr(err, errlen, "%s%s", "out of memory", "");
        return MRD_ENOMEM;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(dir, W_OK) != 0) {
        seterr(err, errlen, "%s: %s", dir, "not a writable directory");
        mrd__epoch_store_close(s);
        return MRD_EIO;
    }
    int rc = load(s, err, errlen);
    if (rc == 0) {
        /* Write once at start: proves the directory works and turns
         * interrupted commands into failed ones durably. */
        rc = persist(s);
        if (rc)
            seterr(err, errlen, "%s: %s", s->path, "cannot write");
    }
    if (rc) {
        mrd__epoch_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void mrd__epoch_store_close(mrd__epoch_store *s)
{
    if (!s)
        return;
    free(s->dir);
    free(s->path);
    free(s->tmp);
    free(s->svcs);
    free(s->ring);
    free(s);
}

int64_t mrd__epoch_store_epoch(const mrd__epoch_store *s, const char *service)
{
    const svc_epoch *e = find_svc(s, service);
    return e ? e->epoch : 0;
}

int mrd__epoch_store_observe(mrd__epoch_store *s, const char *service, int64_t epoch)
{
    svc_epoch *e = find_svc(s, service);
    if (e && e->epoch >= epoch)
        return 0;
    if (!e && epoch <= 0) {
        /* epoch 0 equals "never seen": nothing to remember */
        return valid_name(service, MRD_PROTO_NAME_MAX) ? 0 : MRD_EINVAL;
    }
    int rc = set_svc(s, service, epoch);
    if (rc)
        return rc;
    return persist(s) ? MRD_EIO : 1;
}

int mrd__epoch_store_begin(mrd__epoch_store *s, const char *id, const char *service, int64_t epoch,
                           mrd__cmd_record *rec)
{
    if (!valid_name(id, MRD_PROTO_ID_MAX) || !valid_name(service, MRD_PROTO_NAME_MAX) || epoch < 0)
        return MRD_EINVAL;
    mrd__cmd_record *r = find_cmd(s, id);
    if (r) {
        if (rec)
            *rec = *r;
        return MRD_EEXISTS;
    }
    int64_t highest = mrd__epoch_store_epoch(s, service);
    int stale = epoch < highest;
    if (!stale && epoch > highest) {
        int rc = set_svc(s, service, epoch);
        if (rc)
            return rc;
    }
    /* Remember what the ring forgets if it is full, to undo on failure. */
    mrd__cmd_record evicted = {0};
    size_t old_head = s->head, old_count = s->count;
    if (s->count == s->cap)
        evicted = *ring_at(s, 0);
    r = push_cmd(s);
    memcpy(r->id, id, strlen(id) + 1);
    memcpy(r->service, service, strlen(service) + 1);
    r->epoch = epoch;
    if (stale) {
        r->state = MRD__CMD_REFUSED;
        snprintf(r->error, sizeof(r->error), "stale epoch %lld < %lld", (long long)epoch,
                 (long long)highest);
    } else {
        r->state = MRD__CMD_STARTED;
    }
    mrd__cmd_record copy = *r;
    if (persist(s) != 0) {
        if (!stale) {
            /* Not durably recorded: undo and do not execute. The raised
             * epoch stays (safe: refusing more). */
            pop_last_cmd(s);
            if (old_count == s->cap) {
                s->head = old_head;
                s->count = old_count;
                *ring_at(s, 0) = evicted;
            }
            return MRD_EIO;
        }
        /* A refusal is safe whether or not it is durable. */
    }
    if (rec)
        *rec = copy;
    return stale ? MRD_ESTALE : 0;
}

int mrd__epoch_store_finish(mrd__epoch_store *s, const char *id, mrd__cmd_state state,
                            const char *error, int64_t position)
{
    mrd__cmd_record *r = find_cmd(s, id);
    if (!r)
        return MRD_ENOTFOUND;
    r->state = state;
    r->position = position > 0 ? position : 0;
    snprintf(r->error, sizeof(r->error), "%s", error ? error : "");
    return persist(s) ? MRD_EIO : 0;
}

int mrd__epoch_store_lookup(const mrd__epoch_store *s, const char *id, mrd__cmd_record *rec)
{
    const mrd__cmd_record *r = find_cmd(s, id);
    if (!r)
        return MRD_ENOTFOUND;
    *rec = *r;
    return 0;
}

size_t mrd__epoch_store_nservices(const mrd__epoch_store *s)
{
    return s->nsvcs;
}

size_t mrd__epoch_store_ncommands(const mrd__epoch_store *s)
{
    return s->count;
}

const char *mrd__epoch_store_path(const mrd__epoch_store *s)
{
    return s->path;
}
