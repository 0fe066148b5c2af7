/*
 * Between the store side of checkpoints (controller/checkpoint_store.c) and
 * their API (controller/api_checkpoints.c). Internal to controller/.
 */
#ifndef MERIDIAN_CONTROLLER_CHECKPOINT_STORE_H
#define MERIDIAN_CONTROLLER_CHECKPOINT_STORE_H

#include "checkpoint.h"
#include "controller.h"

/* cb of a state query: err 0 and doc (borrowed; valid during the call), or
 * an MRD_E* error and doc NULL. */
typedef void (*mrd__ckpt_state_cb)(int err, json_t *doc, void *data);

/* Reads what checkpoints are evaluated from, in one statement: the store's
 * clock, services, members, the newest `window` pending checkpoints per
 * service plus the ids in ids_json (a JSON array), and the newest marked
 * recovery point per service and region. service "" = every service.
 * Returns 0 (cb will run once) or MRD_ESTORE/MRD_ENOMEM (cb will not run). */
int mrd__ckpt_state_query(mrd_ctl *ctl, const char *service, const char *ids_json, int window,
                          mrd__ckpt_state_cb cb, void *data);

/* The answer to GET .../checkpoints/{id} from a state document: *status 200
 * (and *done: every asked region reached it, or it is lost) or 404 (not in
 * doc, or of another service; the body is then NULL). nregions 0: every
 * region with a member of the service. Caller owns the result. */
json_t *mrd__ckpt_answer(mrd_ctl *ctl, json_t *doc, const char *service, uint64_t id,
                         char (*regions)[MRD_NAME_MAX], size_t nregions, int *status, int *done);

/* The answer to GET .../recovery of service s from a state document. */
json_t *mrd__ckpt_recovery_json(mrd_ctl *ctl, json_t *doc, const mrd__service *s);

/* Keeps res waiting until the checkpoint is done (re-checked at every
 * refresh) or deadline_ms (monotonic) passes; then it is answered with the
 * latest evaluation (last is that answer now; stolen). Returns 0, or
 * MRD_ENOMEM / MRD_ECLOSED (stopping) and then answers res itself. */
int mrd__ckpt_wait_add(mrd_ctl *ctl, mrd_http_response *res, const char *service, uint64_t id,
                       char (*regions)[MRD_NAME_MAX], size_t nregions, uint64_t deadline_ms,
                       json_t *last);

/* Creates an on-demand checkpoint and answers res: 201 {id, position,
 * position_text, epoch, created_at}; 404 no such service; 422 position
 * beyond the primary's known position (after waiting up to two heartbeats
 * for the primary's report to catch up); 503 primary position unknown, not
 * leader (leader_guard) or store down. has_position 0: the primary's known
 * position. */
void mrd__ckpt_create(mrd_ctl *ctl, mrd_http_response *res, const char *service, int has_position,
                      uint64_t position, const char *actor, int leader_guard);

#endif
