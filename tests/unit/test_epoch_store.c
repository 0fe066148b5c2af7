/* Unit tests of the agent's epoch file: epochs only grow and survive a
 * reopen, stale commands are refused, an id runs at most once across a
 * reopen, interrupted commands read "failed", the id ring is bounded, a
 * corrupt file refuses to open, the write is atomic (no temp file left). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "epoch_store.h"
#include "meridian/error.h"

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/mrd-epoch-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char p[128];
    snprintf(p, sizeof(p), "%s/epochs.json", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/epochs.json.tmp", dir);
    unlink(p);
    rmdir(dir);
}

static mrd__epoch_store *open_store(size_t max_ids)
{
    mrd__epoch_store *s;
    char err[256];
    int rc = mrd__epoch_store_open(&s, dir, max_ids, err, sizeof(err));
    cr_assert_eq(rc, 0, "open: %s", err);
    return s;
}

TestSuite(epoch_store, .init = setup, .fini = teardown);

Test(epoch_store, epochs_only_grow_and_survive_reopen)
{
    mrd__epoch_store *s = open_store(0);
    cr_assert_eq(mrd__epoch_store_epoch(s, "orders"), 0);
    cr_assert_eq(mrd__epoch_store_observe(s, "orders", 5), 1);
    cr_assert_eq(mrd__epoch_store_observe(s, "orders", 3), 0);
    cr_assert_eq(mrd__epoch_store_observe(s, "orders", 5), 0);
    cr_assert_eq(mrd__epoch_store_epoch(s, "orders"), 5);
    cr_assert_eq(mrd__epoch_store_observe(s, "users", 0), 0);
    cr_assert_eq(mrd__epoch_store_nservices(s), 1);
    cr_assert_eq(mrd__epoch_store_observe(s, "", 3), MRD_EINVAL);
    mrd__epoch_store_close(s);

    s = open_store(0);
    cr_assert_eq(mrd__epoch_store_epoch(s, "orders"), 5);
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s/epochs.json.tmp", dir);
    cr_assert_neq(access(tmp, F_OK), 0, "temporary file left behind");
    mrd__epoch_store_close(s);
}

Test(epoch_store, stale_command_refused_also_after_reopen)
{
    mrd__epoch_store *s = open_store(0);
    mrd__cmd_record rec;
    cr_assert_eq(mrd__epoch_store_begin(s, "c1", "orders", 4, &rec), 0);
    cr_assert_eq(rec.state, MRD__CMD_STARTED);
    cr_assert_eq(mrd__epoch_store_epoch(s, "orders"), 4, "a command's epoch is observed");
    cr_assert_eq(mrd__epoch_store_finish(s, "c1", MRD__CMD_DONE, NULL, 0), 0);
    mrd__epoch_store_close(s);

    s = open_store(0);
    cr_assert_eq(mrd__epoch_store_begin(s, "c2", "orders", 3, &rec), MRD_ESTALE);
    cr_assert_eq(rec.state, MRD__CMD_REFUSED);
    cr_assert_str_eq(rec.error, "stale epoch 3 < 4");
    /* same epoch is fine; another service is independent */
    cr_assert_eq(mrd__epoch_store_begin(s, "c3", "orders", 4, NULL), 0);
    cr_assert_eq(mrd__epoch_store_begin(s, "c4", "users", 1, NULL), 0);
    /* the refusal is remembered: the same id again is not re-evaluated */
    cr_assert_eq(mrd__epoch_store_begin(s, "c2", "orders", 3, &rec), MRD_EEXISTS);
    cr_assert_eq(rec.state, MRD__CMD_REFUSED);
    mrd__epoch_store_close(s);
}

Test(epoch_store, id_executed_at_most_once_across_reopen)
{
    mrd__epoch_store *s = open_store(0);
    mrd__cmd_record rec;
    cr_assert_eq(mrd__epoch_store_begin(s, "c1", "orders", 1, NULL), 0);
    cr_assert_eq(mrd__epoch_store_finish(s, "c1", MRD__CMD_FAILED, "boom", 77), 0);
    /* c2 started but the agent "crashes" before finish */
    cr_assert_eq(mrd__epoch_store_begin(s, "c2", "orders", 1, NULL), 0);
    mrd__epoch_store_close(s);

    s = open_store(0);
    cr_assert_eq(mrd__epoch_store_begin(s, "c1", "orders", 1, &rec), MRD_EEXISTS);
    cr_assert_eq(rec.state, MRD__CMD_FAILED);
    cr_assert_str_eq(rec.error, "boom");
    cr_assert_eq(rec.position, 77, "the position survives a restart");
    cr_assert_eq(mrd__epoch_store_begin(s, "c2", "orders", 1, &rec), MRD_EEXISTS);
    cr_assert_eq(rec.state, MRD__CMD_FAILED);
    cr_assert_str_eq(rec.error, "interrupted by an agent restart");
    cr_assert_eq(mrd__epoch_store_lookup(s, "c9", &rec), MRD_ENOTFOUND);
    cr_assert_eq(mrd__epoch_store_finish(s, "c9", MRD__CMD_DONE, NULL, 0), MRD_ENOTFOUND);
    mrd__epoch_store_close(s);
}

Test(epoch_store, id_ring_is_bounded)
{
    mrd__epoch_store *s = open_store(4);
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "c%d", i);
        cr_assert_eq(mrd__epoch_store_begin(s, id, "orders", 1, NULL), 0);
    }
    cr_assert_eq(mrd__epoch_store_ncommands(s), 4);
    mrd__cmd_record rec;
    cr_assert_eq(mrd__epoch_store_lookup(s, "c5", &rec), MRD_ENOTFOUND);
    cr_assert_eq(mrd__epoch_store_lookup(s, "c6", &rec), 0);
    cr_assert_eq(mrd__epoch_store_lookup(s, "c9", &rec), 0);
    mrd__epoch_store_close(s);
    s = open_store(4);
    cr_assert_eq(mrd__epoch_store_ncommands(s), 4);
    cr_assert_eq(mrd__epoch_store_lookup(s, "c9", &rec), 0);
    mrd__epoch_store_close(s);
}

Test(epoch_store, corrupt_file_refuses_to_open)
{
    char p[128], err[256];
    snprintf(p, sizeof(p), "%s/epochs.json", dir);
    const char *bad[] = {
        "{\"version\":1,\"epochs\":{\"o\":1},\"commands\":[",
        "{\"version\":2,\"epochs\":{},\"commands\":[]}",
        "{\"version\":1,\"epochs\":{\"o\":-1},\"commands\":[]}",
        "{\"version\":1,\"epochs\":{},\"commands\":[{\"id\":\"x\"}]}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FILE *f = fopen(p, "w");
        fputs(bad[i], f);
        fclose(f);
        mrd__epoch_store *s = (mrd__epoch_store *)1;
        err[0] = '\0';
        cr_assert_eq(mrd__epoch_store_open(&s, dir, 0, err, sizeof(err)), MRD_EPARSE, "%s", bad[i]);
        cr_assert_null(s);
        cr_assert_eq(strncmp(err, p, strlen(p)), 0, "error names the file: %s", err);
    }
}

Test(epoch_store, unwritable_dir_refused)
{
    mrd__epoch_store *s;
    char err[256];
    cr_assert_eq(mrd__epoch_store_open(&s, "/nonexistent/dir", 0, err, sizeof(err)), MRD_EIO);
    cr_assert_null(s);
    cr_assert_eq(mrd__epoch_store_open(&s, "", 0, err, sizeof(err)), MRD_EINVAL);
}

Test(epoch_store, failed_persist_does_not_record_start)
{
    if (geteuid() == 0) {
        /* root ignores directory permissions: make the temp path a directory
         * so that open(O_WRONLY) fails */
        char tmp[128];
        mrd__epoch_store *s = open_store(0);
        snprintf(tmp, sizeof(tmp), "%s/epochs.json.tmp", dir);
        cr_assert_eq(mkdir(tmp, 0700), 0);
        cr_assert_eq(mrd__epoch_store_begin(s, "c1", "orders", 2, NULL), MRD_EIO);
        mrd__cmd_record rec;
        cr_assert_eq(mrd__epoch_store_lookup(s, "c1", &rec), MRD_ENOTFOUND);
        cr_assert_eq(mrd__epoch_store_epoch(s, "orders"), 2, "the raise stays in memory");
        cr_assert_eq(mrd__epoch_store_observe(s, "orders", 3), MRD_EIO);
        rmdir(tmp);
        cr_assert_eq(mrd__epoch_store_begin(s, "c1", "orders", 3, NULL), 0);
        mrd__epoch_store_close(s);
    } else {
        mrd__epoch_store *s = open_store(0);
        chmod(dir, 0500);
        cr_assert_eq(mrd__epoch_store_begin(s, "c1", "orders", 2, NULL), MRD_EIO);
        chmod(dir, 0700);
        mrd__epoch_store_close(s);
    }
}
