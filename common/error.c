/*
 * Names and messages of the error codes of include/meridian/error.h, generated
 * from the one MRD_ERRNO_MAP table so that a code can never lack either.
 * Pure: no state, no I/O.
 */
#include "meridian/error.h"

const char *mrd_err_name(int err)
{
    switch (err) {
    case 0:
        return "ok";
#define MRD__ERR_NAME(name, code, msg)                                                             \
    case MRD_E##name:                                                                              \
        return code;
        MRD_ERRNO_MAP(MRD__ERR_NAME)
#undef MRD__ERR_NAME
    default:
        return "unknown";
    }
}

const char *mrd_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define MRD__ERR_MSG(name, code, msg)                                                              \
    case MRD_E##name:                                                                              \
        return msg;
        MRD_ERRNO_MAP(MRD__ERR_MSG)
#undef MRD__ERR_MSG
    default:
        return "unknown error";
    }
}
