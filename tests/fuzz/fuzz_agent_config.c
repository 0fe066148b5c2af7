/*
 * libFuzzer target for the agent's real configuration loader
 * (agent/agent_config.c: schema, kind-specific checks, references between
 * members, checks, peers and probes): the input goes through
 * mrd_cfg_load_string and mrd__agent_config_from_json, as
 * `meridian-agent --check-config` does with a file. Checks that nothing
 * crashes or leaks, that a failure leaves a message, and that a success
 * leaves counts within the arrays it allocated. Seeds:
 * tests/fuzz/corpus/agent_config/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "meridian/config.h"
#include "meridian/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    json_t *root = NULL;
    if (mrd_cfg_load_string((const char *)data, size, &root, err, sizeof(err)) != 0)
        return 0; /* covered by fuzz_config */
    mrd__agent_config cfg;
    memset(err, 'x', sizeof(err));
    int rc = mrd__agent_config_from_json(&cfg, root, err, sizeof(err));
    json_decref(root);
    if (rc != 0) {
        if (!memchr(err, '\0', sizeof(err)) || err[0] == '\0')
            abort();
        return 0;
    }
    if ((cfg.nmembers && !cfg.members) || (cfg.nchecks && !cfg.checks) ||
        (cfg.npeers && !cfg.peers) || (cfg.ncontrollers && !cfg.controllers))
        abort();
    mrd__agent_config_free(&cfg);
    return 0;
}
