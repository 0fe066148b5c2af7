/*
 * The agent's durable memory of fencing tokens: the highest epoch seen per
 * service, and the ids of the commands it has started (the last max_ids of
 * them) with their outcome. Kept in one JSON file, <state_dir>/epochs.json,
 * replaced atomically (write a temporary file, fsync, rename, fsync the
 * directory) on every change, before the change is acted upon.
 *
 * Invariants:
 * - the highest epoch of a service never decreases, also across restarts;
 * - a command id is recorded as started (durably) before it is executed, so
 *   it is executed at most once, also across restarts; a command whose
 *   outcome was not recorded (crash during execution) reports "failed";
 * - a command whose epoch is below the highest seen for its service is
 *   refused and recorded as such.
 */
#ifndef MERIDIAN_AGENT_EPOCH_STORE_H
#define MERIDIAN_AGENT_EPOCH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "meridian/protocol.h"

typedef struct mrd__epoch_store mrd__epoch_store;

typedef enum {
    MRD__CMD_STARTED = 0, /* recorded, executing (or interrupted by a crash) */
    MRD__CMD_DONE,
    MRD__CMD_FAILED,
    MRD__CMD_REFUSED,
} mrd__cmd_state;

typedef struct {
    char id[MRD_PROTO_ID_MAX];
    char service[MRD_PROTO_NAME_MAX];
    int64_t epoch;
    mrd__cmd_state state;
    char error[MRD_PROTO_ERROR_MAX];
    int64_t position; /* fence: the member's position once fenced; 0: n/a */
} mrd__cmd_record;

#define MRD__EPOCH_STORE_DEFAULT_IDS  1024
#define MRD__EPOCH_STORE_MAX_SERVICES 1024

/* Opens (or creates) the store in dir, loading <dir>/epochs.json if it
 * exists. max_ids: how many command ids to remember (0: default 1024).
 * Commands found "started" in the file were interrupted by a crash: they
 * become "failed" ("interrupted by an agent restart") and are never re-run.
 * Returns 0 and sets *out; MRD_EIO (dir not writable), MRD_EPARSE (corrupt
 * file: the agent must not start and forget its epochs) or MRD_ENOMEM, with
 * a message in err; nothing allocated on failure. */
int mrd__epoch_store_open(mrd__epoch_store **out, const char *dir, size_t max_ids, char *err,
                          size_t errlen);
void mrd__epoch_store_close(mrd__epoch_store *s);

/* Highest epoch seen for service; 0 when never seen. */
int64_t mrd__epoch_store_epoch(const mrd__epoch_store *s, const char *service);
/* Raises the highest epoch of service to epoch if it is higher, persisting
 * it. Returns 1 when raised, 0 when not, MRD_EIO when it could not be
 * persisted (the raise is kept in memory: refusing more is safe),
 * MRD_ETOOBIG when too many services, MRD_EINVAL for a bad name. */
int mrd__epoch_store_observe(mrd__epoch_store *s, const char *service, int64_t epoch);

/* Decides whether a command may run, and records the decision durably.
 * Returns
 *   0            id recorded as started (epoch observed): execute it now;
 *   MRD_EEXISTS  id already known: do not execute; *rec holds its record;
 *   MRD_ESTALE   epoch < highest seen: recorded as refused, do not execute;
 *                *rec holds the record;
 *   MRD_EIO      could not persist: nothing recorded, do not execute (the
 *                controller will resend it);
 * rec may be NULL. */
int mrd__epoch_store_begin(mrd__epoch_store *s, const char *id, const char *service, int64_t epoch,
                           mrd__cmd_record *rec);
/* Records the outcome of a started command (DONE or FAILED) with an error
 * text (may be NULL) and a position (fence; 0: none). Returns 0,
 * MRD_ENOTFOUND (unknown id) or MRD_EIO (the outcome stays in memory; after
 * a restart the command reads "failed"). */
int mrd__epoch_store_finish(mrd__epoch_store *s, const char *id, mrd__cmd_state state,
                            const char *error, int64_t position);
/* Looks a command up; returns 0 and fills *rec, or MRD_ENOTFOUND. */
int mrd__epoch_store_lookup(const mrd__epoch_store *s, const char *id, mrd__cmd_record *rec);

/* Number of services / command ids held, and the file path (for logs). */
size_t mrd__epoch_store_nservices(const mrd__epoch_store *s);
size_t mrd__epoch_store_ncommands(const mrd__epoch_store *s);
const char *mrd__epoch_store_path(const mrd__epoch_store *s);

#endif
