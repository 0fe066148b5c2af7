/*
 * libFuzzer target for the bodies the agent's peer API decodes
 * (agent/peer.c): POST /v1/agent/poke (mrd_hb_poke_from_json) and POST
 * /v1/peer/lease (mrd_lease_request_from_json), both reached after the
 * server's JSON load with duplicate keys rejected, as in
 * mrd_http_request_json. The first byte picks the body kind. Checks that
 * decoding never crashes or leaks, that a failure leaves a message naming
 * a field and no commands, and that a decoded poke's commands are bounded
 * and NUL-terminated and a decoded lease re-encodes to the same lease.
 * Seeds: tests/fuzz/corpus/peer_bodies/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/protocol.h"

static void check_error(int rc, const char *err)
{
    if (rc != MRD_EPARSE && rc != MRD_ENOMEM)
        abort();
    if (memchr(err, '\0', 256) == NULL || err[0] == '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return 0; /* the server answers 400 before any decoder runs */
    }
    char err[256];
    memset(err, 'x', sizeof(err));
    if (data[0] & 1) {
        mrd_lease_request r, r2;
        int rc = mrd_lease_request_from_json(j, &r, err, sizeof(err));
        if (rc) {
            check_error(rc, err);
        } else {
            if (!memchr(r.service, '\0', sizeof(r.service)) ||
                !memchr(r.node, '\0', sizeof(r.node)) || r.ttl_ms < 1 || r.ttl_ms > 600000)
                abort();
            json_t *k = mrd_lease_request_to_json(&r);
            if (!k || mrd_lease_request_from_json(k, &r2, err, sizeof(err)) != 0 ||
                memcmp(&r, &r2, sizeof(r)) != 0)
                abort();
            json_decref(k);
        }
    } else {
        mrd_hb_answer p;
        int rc = mrd_hb_poke_from_json(j, &p, err, sizeof(err));
        if (rc) {
            check_error(rc, err);
            if (p.commands || p.ncommands)
                abort();
        } else {
            for (size_t i = 0; i < p.ncommands; i++)
                if (!memchr(p.commands[i].id, '\0', sizeof(p.commands[i].id)) ||
                    !memchr(p.commands[i].service, '\0', sizeof(p.commands[i].service)))
                    abort();
            json_t *k = mrd_hb_answer_to_json(&p);
            if (!k)
                abort();
            json_decref(k);
            mrd_hb_answer_free(&p);
        }
    }
    json_decref(j);
    return 0;
}
