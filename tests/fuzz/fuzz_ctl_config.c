/*
 * libFuzzer target for the controller's real configuration loader
 * (controller/config_ctl.c with the regions, services, cutover and token
 * schemas it pulls in): the input is written to a file and given to
 * mrd__ctl_config_load, as `meridian-controller check --config` and a
 * SIGHUP reload do. Checks that nothing crashes or leaks, that a failure
 * leaves a message naming something and nothing allocated, and that a
 * success leaves a usable config (listen port in range, a store conninfo)
 * that mrd__ctl_config_free releases. Seeds: tests/fuzz/corpus/ctl_config/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "fuzz_files.h"
#include "meridian/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("controller.json", data, size);
    mrd_ctl *ctl = calloc(1, sizeof(*ctl));
    if (!ctl)
        return 0;
    char err[512];
    memset(err, 'x', sizeof(err));
    int rc = mrd__ctl_config_load(ctl, path, err, sizeof(err));
    if (rc != 0) {
        if (!memchr(err, '\0', sizeof(err)) || err[0] == '\0')
            abort();
        if (ctl->auth || ctl->cfg_json || ctl->cfg.store)
            abort();
    } else {
        if (ctl->cfg.listen_port < 0 || ctl->cfg.listen_port > 65535 || !ctl->cfg.store ||
            !memchr(ctl->cfg.advertise_url, '\0', sizeof(ctl->cfg.advertise_url)))
            abort();
        mrd__ctl_config_free(ctl);
    }
    free(ctl);
    return 0;
}
