/* Unit tests of common/config.c: every validation error names its key path,
 * a valid nested config passes, files (missing, malformed, too large, a
 * directory) fail with a clear message, getters fall back to defaults, and
 * --config is found in argv. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
};
static const mrd_cfg_schema policy_schema = {policy_fields, 4};

static const mrd_cfg_field service_fields[] = {
    {.key = "name", .type = MRD_CFG_STRING, .required = 1, .min = 1, .max = 63},
    {.key = "policy", .type = MRD_CFG_OBJECT, .object = &policy_schema},
    {.key = "regions", .type = MRD_CFG_ARRAY, .elem = MRD_CFG_STRING, .choices = region_names},
};
static const mrd_cfg_schema service_schema = {service_fields, 3};

static const mrd_cfg_field member_fields[] = {
    {.key = "kind", .type = MRD_CFG_STRING, .required = 1, .choices = member_kinds},
    {.key = "port", .type = MRD_CFG_INT, .min = 1, .max = 65535},
};
static const mrd_cfg_schema member_schema = {member_fields, 2};

static const mrd_cfg_field store_fields[] = {
    {.key = "conninfo", .type = MRD_CFG_STRING, .required = 1, .min = 1},
    {.key = "pool", .type = MRD_CFG_INT, .min = 1, .max = 64},
};
static const mrd_cfg_schema store_schema = {store_fields, 2};

static const mrd_cfg_field top_fields[] = {
    {.key = "name", .type = MRD_CFG_STRING, .required = 1, .min = 1, .max = 63},
    {.key = "heartbeat_ms", .type = MRD_CFG_INT, .min = 100, .max = 600000},
    {.key = "debug", .type = MRD_CFG_BOOL},
    {.key = "ratio", .type = MRD_CFG_NUMBER, .min = 0, .max = 1},
    {.key = "scale", .type = MRD_CFG_NUMBER},
    {.key = "retries", .type = MRD_CFG_INT},
    {.key = "tags", .type = MRD_CFG_ARRAY, .elem = MRD_CFG_STRING, .min = 0, .max = 4},
    {.key = "peers", .type = MRD_CFG_ARRAY, .elem = MRD_CFG_STRING, .min = 2},
    {.key = "store", .type = MRD_CFG_OBJECT, .required = 1, .object = &store_schema},
    {.key = "services",
     .type = MRD_CFG_ARRAY,
     .required = 1,
     .min = 1,
     .elem = MRD_CFG_OBJECT,
     .object = &service_schema},
    {.key = "members", .type = MRD_CFG_MAP, .elem = MRD_CFG_OBJECT, .object = &member_schema},
    {.key = "limits", .type = MRD_CFG_MAP, .elem = MRD_CFG_INT},
    {.key = "weights", .type = MRD_CFG_MAP, .elem = MRD_CFG_NUMBER, .min = 1, .max = 3},
    {.key = "labels", .type = MRD_CFG_OBJECT},
    {.key = "anything", .type = MRD_CFG_ARRAY},
};
static const mrd_cfg_schema top_schema = {top_fields, sizeof(top_fields) / sizeof(top_fields[0])};

static const char *valid_json =
    "{\"name\": \"eu-1\", \"heartbeat_ms\": 1000, \"debug\": false, \"ratio\": 0.5,"
    " \"scale\": 3, \"retries\": -2, \"tags\": [\"a\", \"b\"], \"peers\": [\"x\", \"y\"],"
    " \"store\": {\"conninfo\": \"host=127.0.0.1\", \"pool\": 4},"
    " \"services\": [{\"name\": \"pg\", \"policy\": {\"node_timeout_ms\": 3000,"
    "   \"fence_action\": \"read_only\", \"auto_failover\": true, \"max_lag_bytes\": 0},"
    "   \"regions\": [\"eu\", \"us\"]},"
    "  {\"name\": \"kv\", \"policy\": {}}],"
    " \"members\": {\"pg-eu\": {\"kind\": \"pg\", \"port\": 5432}, \"kv-us\": {\"kind\": "
    "\"exec\"}},"
    " \"limits\": {\"conns\": 10}, \"weights\": {\"eu\": 1, \"us\": 0.25},"
    " \"labels\": {\"free\": [1, {\"x\": null}]}, \"anything\": [1, \"two\", null]}";

/* Parses valid_json, applies a JSON merge patch, validates; returns the code
 * and leaves the message in err. */
static int validate_patched(const char *patch, char *err, size_t errlen)
{
    json_error_t je;
    json_t *base = json_loads(valid_json, 0, &je);
    cr_assert_not_null(base, "valid_json: %s", je.text);
    json_t *p = json_loads(patch, 0, &je);
    cr_assert_not_null(p, "patch %s: %s", patch, je.text);
    cr_assert_eq(json_object_update_recursive(base, p), 0);
    json_decref(p);
    int rc = mrd_cfg_validate(base, &top_schema, err, errlen);
    json_decref(base);
    return rc;
}

static void expect_error(const char *patch, const char *message)
{
    char err[512] = "untouched";
    int rc = validate_patched(patch, err, sizeof(err));
    cr_assert_eq(rc, MRD_ECONFIG, "patch %s: expected an error, got %d", patch, rc);
    cr_assert_str_eq(err, message, "patch %s", patch);
}

static void expect_ok(const char *patch)
{
    char err[512] = "untouched";
    int rc = validate_patched(patch, err, sizeof(err));
    cr_assert_eq(rc, 0, "patch %s: %s", patch, err);
    cr_assert_str_eq(err, "");
}

Test(config, valid_nested_config_passes)
{
    expect_ok("{}");
}

Test(config, top_level_must_be_object)
{
    char err[128];
    json_t *a = json_array();
    cr_assert_eq(mrd_cfg_validate(a, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "top level: must be an object");
    cr_assert_eq(mrd_cfg_validate(NULL, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "top level: must be an object");
    json_decref(a);
}

Test(config, null_schema_is_an_error)
{
    char err[64];
    json_t *o = json_object();
    cr_assert_eq(mrd_cfg_validate(o, NULL, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "no schema");
    json_decref(o);
}

Test(config, unknown_keys)
{
    expect_error("{\"nmae\": \"x\"}", "nmae: unknown key");
    expect_error("{\"store\": {\"poool\": 1}}", "store.poool: unknown key");
    expect_error("{\"members\": {\"pg-eu\": {\"kinds\": \"pg\"}}}",
                 "members.pg-eu.kinds: unknown key");
}

Test(config, unknown_key_in_array_element)
{
    char err[256];
    json_t *o = json_loads(valid_json, 0, NULL);
    json_t *pol = json_object_get(json_array_get(json_object_get(o, "services"), 1), "policy");
    json_object_set_new(pol, "node_timout_ms", json_integer(1));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "services[1].policy.node_timout_ms: unknown key");
    json_decref(o);
}

Test(config, missing_required_keys)
{
    char err[256];
    json_t *o = json_loads(valid_json, 0, NULL);
    json_object_del(json_object_get(o, "store"), "conninfo");
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "store.conninfo: missing required key");
    json_object_del(o, "store");
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "store: missing required key");
    json_decref(o);

    o = json_loads(valid_json, 0, NULL);
    json_object_del(json_array_get(json_object_get(o, "services"), 1), "name");
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "services[1].name: missing required key");
    json_decref(o);

    o = json_loads(valid_json, 0, NULL);
    json_object_del(json_object_get(json_object_get(o, "members"), "kv-us"), "kind");
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "members.kv-us.kind: missing required key");
    json_decref(o);
}

Test(config, wrong_types)
{
    expect_error("{\"name\": 5}", "name: must be a string");
    expect_error("{\"retries\": \"3\"}", "retries: must be an integer");
    expect_error("{\"retries\": true}", "retries: must be an integer");
    expect_error("{\"debug\": \"true\"}", "debug: must be a boolean");
    expect_error("{\"debug\": 1}", "debug: must be a boolean");
    expect_error("{\"scale\": \"1\"}", "scale: must be a number");
    expect_error("{\"tags\": \"a\"}", "tags: must be an array");
    expect_error("{\"store\": [1]}", "store: must be an object");
    expect_error("{\"members\": [1]}", "members: must be an object");
    expect_error("{\"labels\": 3}", "labels: must be an object");
    expect_error("{\"anything\": {}}", "anything: must be an array");
    expect_error("{\"services\": {\"name\": \"x\"}}", "services: must be an array");
    expect_error("{\"store\": {\"conninfo\": null}}", "store.conninfo: must be a string");
}

Test(config, reals_rejected_where_integer_required)
{
    expect_error("{\"retries\": 3.0}", "retries: must be an integer");
    expect_error("{\"heartbeat_ms\": 1000.0}",
                 "heartbeat_ms: must be an integer between 100 and 600000");
    expect_error("{\"heartbeat_ms\": 1e3}",
                 "heartbeat_ms: must be an integer between 100 and 600000");
    expect_error("{\"limits\": {\"conns\": 1.5}}", "limits.conns: must be an integer");
    expect_ok("{\"scale\": 2.5}");
}

Test(config, integer_bounds)
{
    const char *why = "heartbeat_ms: must be an integer between 100 and 600000";
    expect_error("{\"heartbeat_ms\": 99}", why);
    expect_error("{\"heartbeat_ms\": 600001}", why);
    expect_error("{\"heartbeat_ms\": -1}", why);
    expect_error("{\"heartbeat_ms\": \"1000\"}", why);
    expect_error("{\"heartbeat_ms\": 9223372036854775807}", why);
    expect_error("{\"heartbeat_ms\": -9223372036854775808}", why);
    expect_ok("{\"heartbeat_ms\": 100}");
    expect_ok("{\"heartbeat_ms\": 600000}");
    /* No bounds: the whole long long range. */
    expect_ok("{\"retries\": 9223372036854775807}");
    expect_ok("{\"retries\": -9223372036854775808}");
}

Test(config, nested_integer_bounds_name_the_path)
{
    char err[256];
    json_t *o = json_loads(valid_json, 0, NULL);
    json_t *pol = json_object_get(json_array_get(json_object_get(o, "services"), 1), "policy");
    json_object_set_new(pol, "node_timeout_ms", json_integer(50));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "services[1].policy.node_timeout_ms: must be an integer between 100 and "
                          "600000");
    json_decref(o);
    expect_error("{\"members\": {\"pg-eu\": {\"port\": 0}}}",
                 "members.pg-eu.port: must be an integer between 1 and 65535");
    expect_error("{\"store\": {\"pool\": 65}}", "store.pool: must be an integer between 1 and 64");
}

Test(config, number_bounds)
{
    const char *why = "ratio: must be a number between 0 and 1";
    expect_error("{\"ratio\": 1.5}", why);
    expect_error("{\"ratio\": -0.01}", why);
    expect_error("{\"ratio\": 2}", why);
    expect_error("{\"ratio\": \"0.5\"}", why);
    expect_ok("{\"ratio\": 0}");
    expect_ok("{\"ratio\": 1.0}");
    expect_error("{\"weights\": {\"ap\": \"1\"}}", "weights.ap: must be a number");
}

Test(config, string_choices)
{
    char err[256];
    json_t *o = json_loads(valid_json, 0, NULL);
    json_t *pol = json_object_get(json_array_get(json_object_get(o, "services"), 0), "policy");
    json_object_set_new(pol, "fence_action", json_string("readonly"));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "services[0].policy.fence_action: must be one of: read_only, stop, exec");
    json_object_set_new(pol, "fence_action", json_integer(1));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "services[0].policy.fence_action: must be one of: read_only, stop, exec");
    /* A prefix of a choice, or a choice with a trailing NUL, is not a choice. */
    json_object_set_new(pol, "fence_action", json_stringn("stop\0x", 5));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    json_object_set_new(pol, "fence_action", json_string("sto"));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    json_object_set_new(pol, "fence_action", json_string("exec"));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), 0, "%s", err);
    json_decref(o);
    expect_error("{\"members\": {\"pg-eu\": {\"kind\": \"mysql\"}}}",
                 "members.pg-eu.kind: must be one of: pg, exec");
}

Test(config, array_elements_checked)
{
    expect_error("{\"tags\": [\"a\", \"b\", 3]}", "tags[2]: must be a string");
    expect_error("{\"services\": [{\"name\": \"a\"}, 7]}", "services[1]: must be an object");
    char err[256];
    json_t *o = json_loads(valid_json, 0, NULL);
    json_t *regions = json_object_get(json_array_get(json_object_get(o, "services"), 0), "regions");
    json_array_append_new(regions, json_string("mars"));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "services[0].regions[2]: must be one of: eu, us, ap");
    json_decref(o);
    expect_ok("{\"anything\": [[1], {\"a\": 2}]}");
}

Test(config, map_values_checked)
{
    expect_error("{\"members\": {\"pg-eu\": {\"kind\": \"pg\"}, \"pg-us\": 3}}",
                 "members.pg-us: must be an object");
    expect_error("{\"limits\": {\"conns\": \"10\"}}", "limits.conns: must be an integer");
    /* Keys that are not plain identifiers are quoted and escaped. */
    expect_error("{\"members\": {\"pg.eu\": {\"kind\": 1}}}",
                 "members[\"pg.eu\"].kind: must be one of: pg, exec");
    expect_error("{\"members\": {\"a\\\"b\\n\": {}}}",
                 "members[\"a\\\"b\\x0a\"].kind: missing required key");
    expect_error("{\"members\": {\"\": {}}}", "members[\"\"].kind: missing required key");
    expect_error("{\"bad key\": 1}", "[\"bad key\"]: unknown key");
}

Test(config, string_length_bounds)
{
    expect_error("{\"name\": \"\"}", "name: must be a string of 1 to 63 bytes");
    char patch[160];
    snprintf(patch, sizeof(patch), "{\"name\": \"%064d\"}", 0);
    expect_error(patch, "name: must be a string of 1 to 63 bytes");
    snprintf(patch, sizeof(patch), "{\"name\": \"%063d\"}", 0);
    expect_ok(patch);
    expect_error("{\"store\": {\"conninfo\": \"\"}}", "store.conninfo: must be a non-empty string");
}

Test(config, array_and_map_length_bounds)
{
    expect_error("{\"services\": []}", "services: must be a non-empty array");
    expect_error("{\"tags\": [\"1\", \"2\", \"3\", \"4\", \"5\"]}",
                 "tags: must be an array of 0 to 4 elements");
    expect_ok("{\"tags\": []}");
    expect_error("{\"peers\": [\"x\"]}", "peers: must be an array of at least 2 elements");
    expect_ok("{\"peers\": [\"x\", \"y\", \"z\", \"w\", \"v\"]}");
    expect_error("{\"weights\": {\"a\": 1, \"b\": 1}}",
                 "weights: must be an object of 1 to 3 entries");

    char err[256];
    json_t *o = json_loads(valid_json, 0, NULL);
    json_object_set_new(o, "weights", json_object());
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "weights: must be an object of 1 to 3 entries");
    json_decref(o);
}

Test(config, first_error_in_document_order)
{
    char err[256];
    json_t *o = json_loads("{\"zz\": 1, \"name\": 2}", 0, NULL);
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "zz: unknown key");
    json_decref(o);
    /* Wrong values come before missing keys. */
    o = json_loads("{\"name\": 2}", 0, NULL);
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "name: must be a string");
    json_decref(o);
}

Test(config, small_or_null_error_buffer_is_safe)
{
    char err[8];
    json_t *o = json_loads("{\"a_very_long_unknown_key\": 1}", 0, NULL);
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "a_very_");
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, NULL, 0), MRD_ECONFIG);
    json_decref(o);
}

Test(config, very_long_key_path_is_cut_not_overflowed)
{
    char key[2000];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    char err[4096];
    json_t *o = json_loads(valid_json, 0, NULL);
    json_t *members = json_object_get(o, "members");
    json_object_set_new(members, key, json_pack("{s:s}", "kind", "oracle"));
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_lt(strlen(err), 600);
    cr_assert_eq(strncmp(err, "members.kkk", 11), 0, "%s", err);
    cr_assert_not_null(strstr(err, ": must be one of: pg, exec"), "%s", err);
    json_decref(o);
}

Test(config, load_string_valid_and_errors)
{
    char err[256];
    json_t *o = (json_t *)1;
    cr_assert_eq(mrd_cfg_load_string(valid_json, strlen(valid_json), &o, err, sizeof(err)), 0);
    cr_assert_not_null(o);
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), 0, "%s", err);
    json_decref(o);

    const char *bad = "{\n  \"a\": 1,\n  \"b\": }";
    cr_assert_eq(mrd_cfg_load_string(bad, strlen(bad), &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_null(o);
    cr_assert_str_eq(err, "<string>:3:8: unexpected token near '}'");

    const char *big = "{\"a\": 99999999999999999999}";
    cr_assert_eq(mrd_cfg_load_string(big, strlen(big), &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_not_null(strstr(err, "<string>:1:26: too big integer"), "%s", err);
    const char *neg = "{\"a\": -9223372036854775809}";
    cr_assert_eq(mrd_cfg_load_string(neg, strlen(neg), &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_not_null(strstr(err, "too big negative integer"), "%s", err);

    const char *dup = "{\"a\": 1, \"a\": 2}";
    cr_assert_eq(mrd_cfg_load_string(dup, strlen(dup), &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_not_null(strstr(err, "duplicate object key"), "%s", err);

    const char *arr = "[1, 2]";
    cr_assert_eq(mrd_cfg_load_string(arr, strlen(arr), &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "<string>: top level must be an object");
    cr_assert_null(o);

    const char *trail = "{} x";
    cr_assert_eq(mrd_cfg_load_string(trail, strlen(trail), &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_not_null(strstr(err, "end of file expected"), "%s", err);

    cr_assert_eq(mrd_cfg_load_string("", 0, &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_eq(mrd_cfg_load_string(NULL, 0, &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "<string>: no text");

    /* Length is honoured: bytes past len are not read. */
    const char *cut = "{\"a\": 1}garbage";
    cr_assert_eq(mrd_cfg_load_string(cut, 8, &o, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(mrd_cfg_int(o, "a", 0), 1);
    json_decref(o);
}

static void write_temp(char *path, size_t len, const char *text)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(path, len, "%s/mrd-test-config-XXXXXX", dir);
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    size_t n = strlen(text);
    cr_assert_eq(write(fd, text, n), (ssize_t)n);
    close(fd);
}

Test(config, load_file_valid)
{
    char path[256], err[256];
    json_t *o = NULL;
    write_temp(path, sizeof(path), valid_json);
    int rc = mrd_cfg_load_file(path, &o, err, sizeof(err));
    unlink(path);
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(mrd_cfg_validate(o, &top_schema, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(mrd_cfg_str(o, "name", NULL), "eu-1");
    json_decref(o);
}

Test(config, load_file_missing)
{
    char err[256];
    json_t *o = (json_t *)1;
    cr_assert_eq(mrd_cfg_load_file("/nonexistent/meridian.json", &o, err, sizeof(err)),
                 MRD_ECONFIG);
    cr_assert_null(o);
    cr_assert_str_eq(err, "/nonexistent/meridian.json: cannot open: No such file or directory");
    cr_assert_eq(mrd_cfg_load_file("", &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "config file path is empty");
    cr_assert_eq(mrd_cfg_load_file(NULL, &o, err, sizeof(err)), MRD_ECONFIG);
}

Test(config, load_file_syntax_error_has_line_and_column)
{
    char path[256], err[512], want[512];
    json_t *o = (json_t *)1;
    write_temp(path, sizeof(path), "{\n  \"name\": \"x\",\n  \"heartbeat_ms\": 10 00\n}\n");
    int rc = mrd_cfg_load_file(path, &o, err, sizeof(err));
    unlink(path);
    cr_assert_eq(rc, MRD_ECONFIG);
    cr_assert_null(o);
    snprintf(want, sizeof(want), "%s:3:22: ", path);
    cr_assert_eq(strncmp(err, want, strlen(want)), 0, "got %s", err);
}

Test(config, load_file_top_level_not_object)
{
    char path[256], err[512], want[512];
    json_t *o = NULL;
    write_temp(path, sizeof(path), "[]");
    int rc = mrd_cfg_load_file(path, &o, err, sizeof(err));
    unlink(path);
    cr_assert_eq(rc, MRD_ECONFIG);
    snprintf(want, sizeof(want), "%s: top level must be an object", path);
    cr_assert_str_eq(err, want);
}

Test(config, load_file_directory_and_too_large)
{
    char err[512];
    json_t *o = NULL;
    cr_assert_eq(mrd_cfg_load_file("/", &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_not_null(strstr(err, "/: cannot"), "%s", err);
    cr_assert_eq(mrd_cfg_load_file("/dev/zero", &o, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_str_eq(err, "/dev/zero: larger than 4194304 bytes");
    cr_assert_null(o);
}

Test(config, getters_with_defaults)
{
    json_t *o = json_pack("{s:s, s:I, s:b, s:f, s:n}", "s", "v", "i", (json_int_t)-7, "b", 1, "r",
                          2.5, "z");
    cr_assert_str_eq(mrd_cfg_str(o, "s", "d"), "v");
    cr_assert_str_eq(mrd_cfg_str(o, "missing", "d"), "d");
    cr_assert_str_eq(mrd_cfg_str(o, "i", "d"), "d");
    cr_assert_null(mrd_cfg_str(o, "z", NULL));
    cr_assert_eq(mrd_cfg_int(o, "i", 3), -7);
    cr_assert_eq(mrd_cfg_int(o, "missing", 3), 3);
    cr_assert_eq(mrd_cfg_int(o, "r", 3), 3);
    cr_assert_eq(mrd_cfg_int(o, "s", 3), 3);
    cr_assert_eq(mrd_cfg_bool(o, "b", 0), 1);
    cr_assert_eq(mrd_cfg_bool(o, "missing", 1), 1);
    cr_assert_eq(mrd_cfg_bool(o, "missing", 0), 0);
    cr_assert_eq(mrd_cfg_bool(o, "i", 0), 0);
    json_object_set_new(o, "b", json_false());
    cr_assert_eq(mrd_cfg_bool(o, "b", 1), 0);
    cr_assert_str_eq(mrd_cfg_str(NULL, "s", "d"), "d");
    cr_assert_eq(mrd_cfg_int(NULL, "i", 9), 9);
    cr_assert_eq(mrd_cfg_bool(NULL, "b", 1), 1);
    cr_assert_eq(mrd_cfg_int(o, NULL, 9), 9);
    json_decref(o);
}

Test(config, config_argument)
{
    char *a1[] = {"prog", "--config", "/etc/m.json", NULL};
    cr_assert_str_eq(mrd_cfg_arg(3, a1), "/etc/m.json");
    char *a2[] = {"prog", "-v", "--config=/x.json", NULL};
    cr_assert_str_eq(mrd_cfg_arg(3, a2), "/x.json");
    char *a3[] = {"prog", "-v", NULL};
    cr_assert_null(mrd_cfg_arg(2, a3));
    char *a4[] = {"prog", "--config", NULL};
    cr_assert_str_eq(mrd_cfg_arg(2, a4), "");
    char *a5[] = {"prog", "--config=a", "--config", "b", NULL};
    cr_assert_str_eq(mrd_cfg_arg(4, a5), "b");
    char *a6[] = {"prog", "--", "--config", "b", NULL};
    cr_assert_null(mrd_cfg_arg(4, a6));
    char *a7[] = {"prog", "--configfile", "b", NULL};
    cr_assert_null(mrd_cfg_arg(3, a7));
    /* The value of --config is taken as is, even when it looks like an option. */
    char *a8[] = {"prog", "--config", "--", NULL};
    cr_assert_str_eq(mrd_cfg_arg(3, a8), "--");
    cr_assert_null(mrd_cfg_arg(0, NULL));
}
