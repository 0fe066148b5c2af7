/*
 * libFuzzer target for the agent's pg_control reader (agent/pg_control.c):
 * the head of a PostgreSQL control file, parsed from memory and read from
 * <dir>/global/pg_control as the fence and rejoin paths do (a data
 * directory the agent does not own may hold anything). Checks that nothing
 * crashes or reads past the input, that a parse result is one of the known
 * control versions and DB states, and that the file reader agrees with the
 * parser on the same bytes. Seeds: tests/fuzz/corpus/pg_control/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_files.h"
#include "meridian/error.h"
#include "pg_control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mrd_pg_control a, b;
    int ra = mrd_pg_control_parse(data, size, &a);
    if (ra == 0 && (a.state < 0 || a.state > 6))
        abort();
    if (ra != 0 && ra != MRD_EPARSE)
        abort();
    fuzz_write("global/pg_control", data, size);
    int rb = mrd_pg_control_read(fuzz_dir(), &b);
    if (rb != ra && !(ra == MRD_EPARSE && rb == MRD_EIO))
        abort();
    if (ra == 0 && memcmp(&a, &b, sizeof(a)) != 0)
        abort();
    (void)mrd_pg_control_final_position(fuzz_dir());
    return 0;
}
