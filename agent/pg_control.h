/*
 * What a PostgreSQL data directory's control file (global/pg_control) says
 * about how the server last stopped: after a clean shutdown, the location of
 * its shutdown checkpoint is past every commit the server ever made, which
 * makes it the exact "final position" of a member fenced by stopping it
 * (fence mode stop): the switchover's catch-up barrier. Only the fields at
 * the head of ControlFileData are read; they have kept their layout since
 * PostgreSQL 11 (pg_control_version 1100 .. 1700), other versions are
 * refused rather than guessed.
 */
#ifndef MERIDIAN_AGENT_PG_CONTROL_H
#define MERIDIAN_AGENT_PG_CONTROL_H

#include <stddef.h>
#include <stdint.h>

/* DBState values of the control file. */
#define MRD_PG_CONTROL_SHUTDOWNED             1
#define MRD_PG_CONTROL_SHUTDOWNED_IN_RECOVERY 2
#define MRD_PG_CONTROL_IN_PRODUCTION          6

typedef struct {
    uint64_t system_identifier;
    uint32_t version;    /* pg_control_version */
    int state;           /* DBState */
    uint64_t checkpoint; /* location of the latest checkpoint record */
} mrd_pg_control;

/* Parses the head of a control file (len bytes at buf, native byte order).
 * Returns 0, or MRD_EPARSE when it is too short or of an unknown version. */
int mrd_pg_control_parse(const void *buf, size_t len, mrd_pg_control *out);

/* Reads <data_dir>/global/pg_control. Returns 0, MRD_EIO (cannot read) or
 * MRD_EPARSE. Blocking, but a read of a few hundred bytes of a local file. */
int mrd_pg_control_read(const char *data_dir, mrd_pg_control *out);

/* The final position after a stop: the checkpoint location when the control
 * file says the server was shut down cleanly as a primary; 0 otherwise (or
 * when it cannot be read). */
uint64_t mrd_pg_control_final_position(const char *data_dir);

#endif
