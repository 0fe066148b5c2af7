/*
 * libFuzzer target for common/config.c: arbitrary bytes go through
 * mrd_cfg_load_string and, when they parse, through mrd_cfg_validate against
 * a nested schema that uses every field kind (objects, arrays of objects,
 * maps of objects and of integers, string choices, integer/number bounds,
 * string and array length bounds), then through the getters. It checks that
 * loading and validation never crash, leak or overflow, that a failure always
 * leaves a NUL-terminated message that names something, and that a success
 * leaves the error buffer empty. Seeds: tests/fuzz/corpus/config/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/config.h"
#include "meridian/error.h"

static const char *const fence_actions[] = {"read_only", "stop", "exec", NULL};
static const char *const region_names[] = {"eu", "us", "ap", NULL};
static const char *const member_kinds[] = {"pg", "exec", NULL};

static const mrd_cfg_field policy_fields[] = {
    {.key = "node_timeout_ms", .type = MRD_CFG_INT, .min = 100, .max = 600000},
    {.key = "fence_action", .type = MRD_CFG_STRING, .choices = fence_actions},
    {.key = "auto_failover", .type = MRD_CFG_BOOL},
    {.key = "max_lag_bytes", .type = MRD_CFG_INT, .min = 0, .max = 1LL << 40},
    {.key = "ratio", .type = MRD_CFG_NUMBER, .min = 0, .max = 1},
};
static const mrd_cfg_schema policy_schema = {policy_fields, 5};

static const mrd_cfg_field service_fields[] = {
    {.key = "name", .type = MRD_CFG_STRING, .required = 1, .min = 1, .max = 63},
    {.key = "policy", .type = MRD_CFG_OBJECT, .object = &policy_schema},
    {.key = "regions", .type = MRD_CFG_ARRAY, .elem = MRD_CFG_STRING, .choices = region_names},
};
static const mrd_cfg_schema service_schema = {service_fields, 3};

static const mrd_cfg_field member_fields[] = {
    {.key = "kind", .type = MRD_CFG_STRING, .required = 1, .choices = member_kinds},
    {.key = "port", .type = MRD_CFG_INT, .min = 1, .max = 65535},
    {.key = "labels", .type = MRD_CFG_OBJECT},
};
static const mrd_cfg_schema member_schema = {member_fields, 3};

static const mrd_cfg_field top_fields[] = {
    {.key = "name", .type = MRD_CFG_STRING, .required = 1, .min = 1, .max = 63},
    {.key = "heartbeat_ms", .type = MRD_CFG_INT, .min = 100, .max = 600000},
    {.key = "debug", .type = MRD_CFG_BOOL},
    {.key = "scale", .type = MRD_CFG_NUMBER},
    {.key = "tags", .type = MRD_CFG_ARRAY, .elem = MRD_CFG_STRING, .max = 8},
    {.key = "peers", .type = MRD_CFG_ARRAY, .elem = MRD_CFG_STRING, .min = 2},
    {.key = "services",
     .type = MRD_CFG_ARRAY,
     .min = 1,
     .elem = MRD_CFG_OBJECT,
     .object = &service_schema},
    {.key = "members", .type = MRD_CFG_MAP, .elem = MRD_CFG_OBJECT, .object = &member_schema},
    {.key = "limits", .type = MRD_CFG_MAP, .elem = MRD_CFG_INT},
    {.key = "weights", .type = MRD_CFG_MAP, .elem = MRD_CFG_NUMBER, .min = 1, .max = 3},
    {.key = "raw", .type = MRD_CFG_ARRAY},
};
static const mrd_cfg_schema top_schema = {top_fields, sizeof(top_fields) / sizeof(top_fields[0])};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_t *root = NULL;
    memset(err, 'x', sizeof(err));
    int rc = mrd_cfg_load_string((const char *)data, size, &root, err, sizeof(err));
    if (memchr(err, '\0', sizeof(err)) == NULL)
        abort();
    if (rc != 0) {
        if (rc != MRD_ECONFIG || root != NULL || err[0] == '\0')
            abort();
        return 0;
    }
    if (!json_is_object(root))
        abort();
    memset(err, 'x', sizeof(err));
    rc = mrd_cfg_validate(root, &top_schema, err, sizeof(err));
    if (memchr(err, '\0', sizeof(err)) == NULL)
        abort();
    if ((rc == 0) != (err[0] == '\0') || (rc != 0 && rc != MRD_ECONFIG))
        abort();
    /* "path: why", unless the path alone filled the buffer. */
    if (rc != 0 && strlen(err) < sizeof(err) - 1 && strstr(err, ": ") == NULL)
        abort();
    /* A tiny buffer must be cut, not overrun. */
    char tiny[4];
    mrd_cfg_validate(root, &top_schema, tiny, sizeof(tiny));
    if (strlen(tiny) > 3)
        abort();
    (void)mrd_cfg_str(root, "name", NULL);
    (void)mrd_cfg_int(root, "heartbeat_ms", 1000);
    (void)mrd_cfg_bool(root, "debug", 0);
    json_decref(root);
    return 0;
}
