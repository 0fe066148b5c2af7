/*
 * Error codes of Meridian. Every function of libmeridian that can fail returns
 * 0 on success or one of these negative codes. The table below is the only
 * place a code is defined: it generates the enum, mrd_err_name() (the stable
 * code that appears in logs and API errors) and mrd_strerror() (a short
 * lower-case message).
 */
#ifndef MERIDIAN_ERROR_H
#define MERIDIAN_ERROR_H

#define MRD_ERRNO_MAP(XX)                                                                          \
    XX(NOMEM, "out_of_memory", "out of memory")                                                    \
    XX(INVAL, "invalid_argument", "invalid argument")                                              \
    XX(IO, "io_error", "input/output error")                                                       \
    XX(NOTFOUND, "not_found", "not found")                                                         \
    XX(EXISTS, "already_exists", "already exists")                                                 \
    XX(TOOBIG, "too_large", "too large")                                                           \
    XX(TIMEOUT, "timeout", "timed out")                                                            \
    XX(PARSE, "parse_error", "malformed input")                                                    \
    XX(CONFIG, "config_error", "invalid configuration")                                            \
    XX(UNAUTHORIZED, "unauthorized", "missing or unknown token")                                   \
    XX(FORBIDDEN, "forbidden", "token not allowed here")                                           \
    XX(CONFLICT, "conflict", "conflict")                                                           \
    XX(STORE, "store_unavailable", "store unavailable")                                            \
    XX(NOTLEADER, "not_leader", "not the leader")                                                  \
    XX(STALE, "stale_epoch", "stale epoch")                                                        \
    XX(CLOSED, "closed", "closed")                                                                 \
    XX(HTTP, "http_error", "http request failed")                                                  \
    XX(UNSUPPORTED, "unsupported", "not supported")                                                \
    XX(INTERNAL, "internal", "internal error")

typedef enum {
    MRD_OK = 0,
#define MRD__ERR_ENUM(name, code, msg) MRD_E##name,
    MRD__ERR_FIRST = -1000,
    MRD_ERRNO_MAP(MRD__ERR_ENUM)
#undef MRD__ERR_ENUM
        MRD__ERR_LAST
} mrd_err;

/* Stable machine-readable name of an error ("not_found"); "unknown" if none. */
const char *mrd_err_name(int err);
/* Short lower-case human message ("not found"); "unknown error" if none. */
const char *mrd_strerror(int err);

#endif
