/* Unit tests of the control file reader (agent/pg_control.c): the head of
 * ControlFileData parsed field by field, unknown versions and short input
 * refused, the final position only after a clean shutdown, files that
 * cannot be read. The integration test test_agent_checks.py (fence_stop)
 * reads a real PostgreSQL 15 control file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meridian/error.h"
#include "pg_control.h"

static void head(unsigned char *buf, uint32_t version, int32_t state, uint64_t ckpt)
{
    uint64_t sysid = 7301234567890123456ULL;
    memset(buf, 0xAB, 64);
    memcpy(buf, &sysid, 8);
    memcpy(buf + 8, &version, 4);
    memcpy(buf + 16, &state, 4);
    memcpy(buf + 32, &ckpt, 8);
}

Test(pg_control, parses_the_head)
{
    unsigned char buf[64];
    mrd_pg_control c;
    head(buf, 1300, MRD_PG_CONTROL_SHUTDOWNED, 0x16B374D48ULL);
    cr_assert_eq(mrd_pg_control_parse(buf, sizeof(buf), &c), 0);
    cr_assert_eq(c.system_identifier, 7301234567890123456ULL);
    cr_assert_eq(c.version, 1300);
    cr_assert_eq(c.state, MRD_PG_CONTROL_SHUTDOWNED);
    cr_assert_eq(c.checkpoint, 0x16B374D48ULL);
}

Test(pg_control, refuses_what_it_does_not_know)
{
    unsigned char buf[64];
    mrd_pg_control c;
    head(buf, 942, MRD_PG_CONTROL_SHUTDOWNED, 1); /* 9.4 */
    cr_assert_eq(mrd_pg_control_parse(buf, sizeof(buf), &c), MRD_EPARSE);
    head(buf, 1300, 9, 1); /* no such state */
    cr_assert_eq(mrd_pg_control_parse(buf, sizeof(buf), &c), MRD_EPARSE);
    head(buf, 1300, 1, 1);
    cr_assert_eq(mrd_pg_control_parse(buf, 39, &c), MRD_EPARSE);
    cr_assert_eq(mrd_pg_control_parse(NULL, 64, &c), MRD_EPARSE);
}

static char *data_dir_with(const unsigned char *buf, size_t len)
{
    char *dir = strdup("/tmp/mrd-pgctl-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/global", dir);
    cr_assert_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/global/pg_control", dir);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
    return dir;
}

static void remove_dir(char *dir)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/global/pg_control", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/global", dir);
    rmdir(path);
    rmdir(dir);
    free(dir);
}

Test(pg_control, final_position_only_after_a_clean_shutdown)
{
    unsigned char buf[64];
    head(buf, 1300, MRD_PG_CONTROL_SHUTDOWNED, 0x3000060ULL);
    char *dir = data_dir_with(buf, sizeof(buf));
    cr_assert_eq(mrd_pg_control_final_position(dir), 0x3000060ULL);
    remove_dir(dir);
    /* still running, crashed, or stopped as a standby: the checkpoint is
     * not past every commit */
    int states[] = {MRD_PG_CONTROL_IN_PRODUCTION, MRD_PG_CONTROL_SHUTDOWNED_IN_RECOVERY, 4};
    for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
        head(buf, 1300, states[i], 0x3000060ULL);
        dir = data_dir_with(buf, sizeof(buf));
        cr_assert_eq(mrd_pg_control_final_position(dir), 0, "state %d", states[i]);
        remove_dir(dir);
    }
    /* short file, missing directory */
    dir = data_dir_with(buf, 20);
    mrd_pg_control c;
    cr_assert_eq(mrd_pg_control_read(dir, &c), MRD_EIO);
    remove_dir(dir);
    cr_assert_eq(mrd_pg_control_final_position("/nonexistent/meridian"), 0);
    cr_assert_eq(mrd_pg_control_final_position(NULL), 0);
}
