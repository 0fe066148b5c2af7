/*
 * Peer leases and the self-fencing rule, as pure functions of explicit
 * monotonic times in milliseconds (no clock, no I/O: the caller passes now).
 *
 * Granter side (an agent whose member is a replica), per service:
 * - a lease request of epoch E is refused once the granter has seen an epoch
 *   above E, or once it was ordered to promote at an epoch >= E;
 * - a grant lasts ttl_ms (capped at max_ttl_ms) from the granter's receipt;
 *   the granter remembers the latest end of any lease it granted;
 * - a promote waits until that latest end has passed.
 *
 * Requester side (the agent of a primary): a lease counts from the time the
 * request was sent, which is never later than the granter's receipt, so the
 * requester always believes in a lease for no longer than the granter keeps
 * its promise.
 *
 * The primary stays writable while (now - last recorded contact) <
 * isolation_timeout, OR every other member's lease is valid (and there is at
 * least one: with no peers configured the failsafe does not apply); else it
 * fences itself.
 *
 * The rule holds after a stall too (agent stopped, swapped out, paused),
 * although the member's PostgreSQL served writes all along: an agent that
 * resumes past its leader's isolation deadline cannot tell, without a
 * round trip, whether the leader promoted another member meanwhile, so it
 * fences at once rather than after asking (heartbeat.c, on_tick).
 */
#ifndef MERIDIAN_AGENT_LEASE_H
#define MERIDIAN_AGENT_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "meridian/protocol.h"

typedef struct {
    uint64_t granted_until_ms; /* latest end of a granted lease; 0: none */
    int64_t granted_epoch;     /* epoch of the latest grant */
    int64_t promote_epoch;     /* a promote of this epoch was ordered; 0: none */
} mrd__lease_grants;

/* Decides a lease request for one service. highest_seen: the highest epoch
 * the granter has seen for the service (epoch file). Fills *ans; on a grant
 * updates *g. Returns 1 when granted, 0 when refused. */
int mrd__lease_grant(mrd__lease_grants *g, int64_t highest_seen, const mrd_lease_request *req,
                     uint64_t now_ms, uint64_t max_ttl_ms, mrd_lease_answer *ans);

/* A promote of epoch was ordered: from now on leases of epoch <= epoch are
 * refused. Returns how many ms the promote must still wait (0: go now). May
 * be called again (each tick) until it returns 0. */
uint64_t mrd__lease_promote_wait(mrd__lease_grants *g, int64_t epoch, uint64_t now_ms);

/* Requester side: records a lease answer for a request sent at sent_ms.
 * A grant extends *valid_until_ms to sent_ms + ttl (never shortens it); a
 * refusal ends it at once (the peer has seen a newer epoch: fencing sooner
 * is always safe). */
void mrd__lease_record(uint64_t *valid_until_ms, uint64_t sent_ms, const mrd_lease_answer *ans);

typedef enum {
    MRD__WRITABLE_CONTACT = 1, /* recorded contact is fresh */
    MRD__WRITABLE_LEASES,      /* failsafe: every peer lease is valid */
    MRD__MUST_FENCE = 0,       /* neither */
} mrd__writable;

/* The primary-side rule. have_contact: whether a recorded contact ever
 * happened (last_contact_ms is then its time). peer_until: each other
 * member's lease end (requester clock), npeers entries. Returns a
 * mrd__writable value; *why (may be NULL) gets a short static reason. */
mrd__writable mrd__lease_primary_writable(uint64_t now_ms, int have_contact,
                                          uint64_t last_contact_ms, uint64_t isolation_timeout_ms,
                                          const uint64_t *peer_until, size_t npeers,
                                          const char **why);

/* Lateness of a periodic timer: how much later than last_ms + interval_ms
 * it ran at now_ms (0 when on time, or when last_ms is 0: first run). A
 * lateness of a heartbeat or more means the agent's loop was stalled
 * (process stopped, swapped out, VM paused): whatever it knew of its
 * contact and leases is as old as the stall. */
uint64_t mrd__lease_stall_ms(uint64_t now_ms, uint64_t last_ms, uint64_t interval_ms);

/* How long a lease the primary asks for: isolation_timeout_ms, at least
 * 1 ms, at most MRD_PROTO_MAX_LEASE_TTL_MS. */
uint64_t mrd__lease_request_ttl(uint64_t isolation_timeout_ms);

#endif
