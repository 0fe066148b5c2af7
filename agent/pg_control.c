/*
 * Reading a PostgreSQL control file (see pg_control.h). Used by the fence
 * of mode stop, after the stop command succeeded, to report the position
 * the new primary must replay before it may be promoted. Never writes.
 */
#include "pg_control.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "meridian/error.h"

/* ControlFileData's head: uint64 system_identifier, uint32
 * pg_control_version, uint32 catalog_version_no, DBState state (an int,
 * padded to 8), pg_time_t time, XLogRecPtr checkPoint. */
#define OFF_VERSION    8
#define OFF_STATE      16
#define OFF_CHECKPOINT 32
#define HEAD_LEN       40

static int version_known(uint32_t v)
{
    return v == 1100 || v == 1201 || v == 1300 || v == 1700;
}

int mrd_pg_control_parse(const void *buf, size_t len, mrd_pg_control *out)
{
    const unsigned char *p = buf;
    int32_t state;
    memset(out, 0, sizeof(*out));
    if (buf == NULL || len < HEAD_LEN)
        return MRD_EPARSE;
    memcpy(&out->system_identifier, p, 8);
    memcpy(&out->version, p + OFF_VERSION, 4);
    memcpy(&state, p + OFF_STATE, 4);
    memcpy(&out->checkpoint, p + OFF_CHECKPOINT, 8);
    if (!version_known(out->version) || state < 0 || state > 6)
        return MRD_EPARSE;
    out->state = state;
    return 0;
}

int mrd_pg_control_read(const char *data_dir, mrd_pg_control *out)
{
    char path[4096];
    unsigned char buf[HEAD_LEN];
    memset(out, 0, sizeof(*out));
    if (data_dir == NULL ||
        (size_t)snprintf(path, sizeof(path), "%s/global/pg_control", data_dir) >= sizeof(path))
        return MRD_EIO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return MRD_EIO;
    size_t got = 0;
    for (int tries = 0; got < sizeof(buf) && tries < 8; tries++) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return got < sizeof(buf) ? MRD_EIO : mrd_pg_control_parse(buf, got, out);
}

uint64_t mrd_pg_control_final_position(const char *data_dir)
{
    mrd_pg_control c;
    if (mrd_pg_control_read(data_dir, &c) != 0 || c.state != MRD_PG_CONTROL_SHUTDOWNED)
        return 0;
    return c.checkpoint;
}
