/*
 * libFuzzer target for the agent's epoch file reader (agent/epoch_store.c):
 * the input is written as <dir>/epochs.json and mrd__epoch_store_open loads
 * it, as the agent does at start. A corrupt file must stop the agent with a
 * message, never crash it or load half of it. Checks that a failure leaves
 * no store and a message, and that a loaded store answers its queries with
 * non-negative epochs and bounded counts, and that what it writes back
 * (observe on a new service) loads again to the same epochs. Seeds:
 * tests/fuzz/corpus/epoch_file/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "epoch_store.h"
#include "fuzz_files.h"
#include "meridian/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("epochs.json", data, size);
    mrd__epoch_store *s = (mrd__epoch_store *)1;
    char err[256];
    memset(err, 'x', sizeof(err));
    int rc = mrd__epoch_store_open(&s, fuzz_dir(), 16, err, sizeof(err));
    if (rc != 0) {
        if (s != NULL && s != (mrd__epoch_store *)1)
            abort();
        if (!memchr(err, '\0', sizeof(err)) || err[0] == '\0')
            abort();
        return 0;
    }
    if (mrd__epoch_store_nservices(s) > MRD__EPOCH_STORE_MAX_SERVICES ||
        mrd__epoch_store_ncommands(s) > 16)
        abort();
    if (mrd__epoch_store_epoch(s, "orders") < 0 || mrd__epoch_store_epoch(s, "") < 0)
        abort();
    mrd__cmd_record rec;
    (void)mrd__epoch_store_lookup(s, "orders/1/promote", &rec);
    int64_t before = mrd__epoch_store_epoch(s, "orders");
    int64_t want = mrd__epoch_store_epoch(s, "fuzz-new-service");
    if (want < 3)
        want = 3;
    if (mrd__epoch_store_observe(s, "fuzz-new-service", 3) == 0) {
        mrd__epoch_store_close(s);
        s = NULL;
        if (mrd__epoch_store_open(&s, fuzz_dir(), 16, err, sizeof(err)) != 0)
            abort(); /* what it wrote itself must load */
        if (mrd__epoch_store_epoch(s, "orders") != before ||
            mrd__epoch_store_epoch(s, "fuzz-new-service") != want)
            abort();
    }
    mrd__epoch_store_close(s);
    return 0;
}
