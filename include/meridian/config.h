/*
 * Configuration files: JSON, loaded with jansson and validated against a
 * schema table before any value is used. Every error names the key path and
 * says why: "services[1].policy.node_timeout_ms: must be an integer between
 * 100 and 600000". Unknown keys are errors (a typo must not silently fall
 * back to a default). Durations are integers in milliseconds, keys end in
 * _ms.
 */
#ifndef MERIDIAN_CONFIG_H
#define MERIDIAN_CONFIG_H

#include <jansson.h>
#include <stddef.h>

typedef enum {
    MRD_CFG_STRING = 1,
    MRD_CFG_INT,
    MRD_CFG_BOOL,
    MRD_CFG_OBJECT, /* nested object checked against .object */
    MRD_CFG_ARRAY,  /* array; elements of .elem type (objects: .object) */
    MRD_CFG_MAP,    /* object with free keys; values of .elem type (objects: .object) */
    MRD_CFG_NUMBER, /* integer or real */
} mrd_cfg_type;

typedef struct mrd_cfg_schema mrd_cfg_schema;

typedef struct {
    const char *key;
    mrd_cfg_type type;
    int required;
    long long min, max;           /* INT: bounds (both 0: no bound); STRING/ARRAY: length bounds */
    const char *const *choices;   /* STRING: allowed values, NULL-terminated; NULL: any */
    mrd_cfg_type elem;            /* ARRAY/MAP element type */
    const mrd_cfg_schema *object; /* OBJECT, or ARRAY/MAP of objects */
} mrd_cfg_field;

struct mrd_cfg_schema {
    const mrd_cfg_field *fields;
    size_t nfields;
};

/* Validates obj against schema. Returns 0, or MRD_ECONFIG with the first
 * error ("path: why") in err. */
int mrd_cfg_validate(const json_t *obj, const mrd_cfg_schema *schema, char *err, size_t errlen);

/* Reads and parses a JSON file whose top level must be an object. Returns 0
 * and a new reference in *out, or MRD_ECONFIG with "file:line:col: why" or
 * "file: why" in err. */
int mrd_cfg_load_file(const char *path, json_t **out, char *err, size_t errlen);
/* Same from a string (tests, fuzzing). */
int mrd_cfg_load_string(const char *text, size_t len, json_t **out, char *err, size_t errlen);

/* Typed getters with defaults, for values already validated. */
const char *mrd_cfg_str(const json_t *obj, const char *key, const char *def);
long long mrd_cfg_int(const json_t *obj, const char *key, long long def);
int mrd_cfg_bool(const json_t *obj, const char *key, int def);

/* Scans argv for "--config PATH" / "--config=PATH"; returns PATH or NULL. */
const char *mrd_cfg_arg(int argc, char **argv);

#endif
