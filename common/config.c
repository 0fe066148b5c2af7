/*
 * Configuration files: parsing with jansson and validation against a static
 * schema table (include/meridian/config.h). Every program calls it once at
 * start (mrd_cfg_arg, mrd_cfg_load_file, mrd_cfg_validate) before it reads a
 * single value with the typed getters.
 *
 * Failure: the first error found, in document order, is written to the
 * caller's buffer as "path: why" (the path names the key, e.g.
 * "services[1].policy.node_timeout_ms") and MRD_ECONFIG is returned; nothing
 * is allocated on failure. Unknown keys, duplicate keys, reals where an
 * integer is wanted and integers outside long long are errors, never
 * defaults. Files are read with a size cap so that /dev/zero or a huge file
 * cannot exhaust memory.
 *
 * Recursion follows the schema only (free-form values are type-checked, not
 * walked), so its depth is bounded by the schema, not by the input.
 */
#include "meridian/config.h"
#include "meridian/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_PATH_MAX  512
#define CFG_FILE_MAX  (4 * 1024 * 1024)
#define CFG_CHOICES_N 256 /* longest choice list a message spells out */

/* Key path of the value being checked, e.g. services[1].policy. */
typedef struct {
    char buf[CFG_PATH_MAX];
    size_t len;
} cfg_path;

typedef struct {
    char *err;
    size_t errlen;
} cfg_err;

static void path_append(cfg_path *p, const char *s, size_t n)
{
    for (size_t i = 0; i < n && p->len + 1 < sizeof(p->buf); i++)
        p->buf[p->len++] = s[i];
    p->buf[p->len] = '\0';
}

static int key_is_plain(const char *key)
{
    if (key[0] == '\0')
        return 0;
    for (const char *c = key; *c; c++) {
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-'))
            return 0;
    }
    return 1;
}

/* Appends ".key" (or "key" at the top), or ["k\"ey"] for keys that are not
 * plain identifiers so that a message stays one unambiguous line. */
static void path_push_key(cfg_path *p, const char *key)
{
    if (key_is_plain(key)) {
        if (p->len > 0)
            path_append(p, ".", 1);
        path_append(p, key, strlen(key));
        return;
    }
    path_append(p, "[\"", 2);
    for (const unsigned char *c = (const unsigned char *)key; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            path_append(p, esc, 2);
        } else if (*c < 0x20 || *c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", *c);
            path_append(p, esc, 4);
        } else {
            path_append(p, (const char *)c, 1);
        }
    }
    path_append(p, "\"]", 2);
}

static void path_push_index(cfg_path *p, size_t i)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "[%zu]", i);
    path_append(p, num, (size_t)n);
}

static void path_pop(cfg_path *p, size_t len)
{
    p->len = len;
    p->buf[len] = '\0';
}

static int fail(cfg_err *e, const cfg_path *p, const char *why)
{
    if (e->err && e->errlen > 0)
        snprintf(e->err, e->errlen, "%s: %s", p->len ? p->buf : "top level", why);
    return MRD_ECONFIG;
}

static const char *type_phrase(mrd_cfg_type t)
{
    switch (t) {
    case MRD_CFG_STRING:
        return "must be a string";
    case MRD_CFG_INT:
        return "must be an integer";
    case MRD_CFG_BOOL:
        return "must be a boolean";
    case MRD_CFG_OBJECT:
    case MRD_CFG_MAP:
        return "must be an object";
    case MRD_CFG_ARRAY:
        return "must be an array";
    case MRD_CFG_NUMBER:
        return "must be a number";
    }
    return "has an unknown schema type";
}

static int type_matches(const json_t *v, mrd_cfg_type t)
{
    switch (t) {
    case MRD_CFG_STRING:
        return json_is_string(v);
    case MRD_CFG_INT:
        return json_is_integer(v);
    case MRD_CFG_BOOL:
        return json_is_boolean(v);
    case MRD_CFG_OBJECT:
    case MRD_CFG_MAP:
        return json_is_object(v);
    case MRD_CFG_ARRAY:
        return json_is_array(v);
    case MRD_CFG_NUMBER:
        return json_is_number(v);
    }
    return 0;
}

/* "must be one of: a, b, c" (cut with "..." if very long). */
static int fail_choices(cfg_err *e, const cfg_path *p, const char *const *choices)
{
    char why[CFG_CHOICES_N + 32];
    size_t n = (size_t)snprintf(why, sizeof(why), "must be one of: ");
    for (size_t i = 0; choices[i] && n < sizeof(why); i++)
        n += (size_t)snprintf(why + n, sizeof(why) - n, "%s%s", i ? ", " : "", choices[i]);
    if (n >= sizeof(why))
        memcpy(why + sizeof(why) - 4, "...", 4);
    return fail(e, p, why);
}

/* Length bounds of strings, arrays and maps: both 0 means none; max 0 with
 * min > 0 means "at least min". */
static int count_ok(size_t n, long long min, long long max)
{
    if (min == 0 && max == 0)
        return 1;
    if (min > 0 && (unsigned long long)n < (unsigned long long)min)
        return 0;
    if (max > 0 && (unsigned long long)n > (unsigned long long)max)
        return 0;
    return 1;
}

static int fail_count(cfg_err *e, const cfg_path *p, const char *what, const char *unit,
                      long long min, long long max)
{
    char why[160];
    if (max == 0 && min == 1)
        snprintf(why, sizeof(why), "must be a non-empty %s", what);
    else if (max == 0)
        snprintf(why, sizeof(why), "must be %s %s of at least %lld %s",
                 what[0] == 'a' || what[0] == 'o' ? "an" : "a", what, min, unit);
    else
        snprintf(why, sizeof(why), "must be %s %s of %lld to %lld %s",
                 what[0] == 'a' || what[0] == 'o' ? "an" : "a", what, min, max, unit);
    return fail(e, p, why);
}

static int check_object(const json_t *obj, const mrd_cfg_schema *schema, cfg_path *p, cfg_err *e);

/* Checks one value of type t (a field, or an array/map element). How the
 * field's min/max apply: INT and NUMBER values (both 0: no bound); STRING
 * length in bytes, ARRAY element count, MAP entry count (both 0: none; max 0
 * with min > 0: at least min). Elements of an array or map get no bounds of
 * their own, but STRING elements must be one of .choices when it is set.
 * elem 0 (unset) accepts any element; OBJECT with .object NULL any object. */
static int check_value(const json_t *v, mrd_cfg_type t, const mrd_cfg_field *f, int with_bounds,
                       cfg_path *p, cfg_err *e)
{
    char why[160];
    int bounded = with_bounds && (f->min != 0 || f->max != 0);

    if (t == MRD_CFG_STRING && f->choices) {
        if (!json_is_string(v))
            return fail_choices(e, p, f->choices);
        const char *s = json_string_value(v);
        size_t slen = json_string_length(v);
        for (size_t i = 0; f->choices[i]; i++) {
            if (strlen(f->choices[i]) == slen && memcmp(f->choices[i], s, slen) == 0)
                return 0;
        }
        return fail_choices(e, p, f->choices);
    }
    if ((t == MRD_CFG_INT || t == MRD_CFG_NUMBER) && bounded) {
        const char *what = t == MRD_CFG_INT ? "an integer" : "a number";
        snprintf(why, sizeof(why), "must be %s between %lld and %lld", what, f->min, f->max);
        if (!type_matches(v, t))
            return fail(e, p, why);
        if (json_is_integer(v)) {
            json_int_t i = json_integer_value(v);
            if (i < f->min || i > f->max)
                return fail(e, p, why);
        } else {
            double d = json_real_value(v);
            if (!(d >= (double)f->min && d <= (double)f->max))
                return fail(e, p, why);
        }
        return 0;
    }
    if (!type_matches(v, t))
        return fail(e, p, type_phrase(t));

    switch (t) {
    case MRD_CFG_STRING:
        if (with_bounds && !count_ok(json_string_length(v), f->min, f->max))
            return fail_count(e, p, "string", "bytes", f->min, f->max);
        return 0;
    case MRD_CFG_OBJECT:
        return f->object ? check_object(v, f->object, p, e) : 0;
    case MRD_CFG_ARRAY: {
        if (!with_bounds)
            return 0; /* array of arrays: elements are not described */
        if (!count_ok(json_array_size(v), f->min, f->max))
            return fail_count(e, p, "array", "elements", f->min, f->max);
        if (f->elem == 0)
            return 0;
        size_t i;
        const json_t *el;
        size_t mark = p->len;
        json_array_foreach(v, i, el)
        {
            path_push_index(p, i);
            int rc = check_value(el, f->elem, f, 0, p, e);
            path_pop(p, mark);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case MRD_CFG_MAP: {
        if (!with_bounds)
            return 0; /* map of maps: values are not described */
        if (!count_ok(json_object_size(v), f->min, f->max))
            return fail_count(e, p, "object", "entries", f->min, f->max);
        if (f->elem == 0)
            return 0;
        const char *key;
        const json_t *el;
        size_t mark = p->len;
        json_object_foreach((json_t *)v, key, el)
        {
            path_push_key(p, key);
            int rc = check_value(el, f->elem, f, 0, p, e);
            path_pop(p, mark);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    default:
        return 0;
    }
}

static const mrd_cfg_field *find_field(const mrd_cfg_schema *schema, const char *key)
{
    for (size_t i = 0; i < schema->nfields; i++) {
        if (schema->fields[i].key && strcmp(schema->fields[i].key, key) == 0)
            return &schema->fields[i];
    }
    return NULL;
}

/* Keys in document order (unknown or wrong), then missing required keys in
 * schema order. */
static int check_object(const json_t *obj, const mrd_cfg_schema *schema, cfg_path *p, cfg_err *e)
{
    const char *key;
    const json_t *v;
    size_t mark = p->len;
    int rc = 0;

    if (!json_is_object(obj))
        return fail(e, p, "must be an object");
    json_object_foreach((json_t *)obj, key, v)
    {
        const mrd_cfg_field *f = find_field(schema, key);
        path_push_key(p, key);
        rc = f ? check_value(v, f->type, f, 1, p, e) : fail(e, p, "unknown key");
        path_pop(p, mark);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < schema->nfields; i++) {
        const mrd_cfg_field *f = &schema->fields[i];
        if (f->required && f->key && !json_object_get(obj, f->key)) {
            path_push_key(p, f->key);
            rc = fail(e, p, "missing required key");
            path_pop(p, mark);
            return rc;
        }
    }
    return 0;
}

int mrd_cfg_validate(const json_t *obj, const mrd_cfg_schema *schema, char *err, size_t errlen)
{
    cfg_path p = {.len = 0};
    cfg_err e = {err, errlen};
    p.buf[0] = '\0';
    if (err && errlen > 0)
        err[0] = '\0';
    if (schema == NULL) {
        if (err && errlen > 0)
            snprintf(err, errlen, "no schema");
        return MRD_ECONFIG;
    }
    return check_object(obj, schema, &p, &e);
}

/* Parses text; name prefixes the message ("file:line:col: why"). */
static int load_buffer(const char *name, const char *text, size_t len, json_t **out, char *err,
                       size_t errlen)
{
    json_error_t je;
    *out = NULL;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        if (err && errlen > 0)
            snprintf(err, errlen, "%s:%d:%d: %s", name, je.line, je.column, je.text);
        return MRD_ECONFIG;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: top level must be an object", name);
        return MRD_ECONFIG;
    }
    *out = root;
    return 0;
}

int mrd_cfg_load_string(const char *text, size_t len, json_t **out, char *err, size_t errlen)
{
    if (err && errlen > 0)
        err[0] = '\0';
    if (text == NULL) {
        *out = NULL;
        if (err && errlen > 0)
            snprintf(err, errlen, "<string>: no text");
        return MRD_ECONFIG;
    }
    return load_buffer("<string>", text, len, out, err, errlen);
}

int mrd_cfg_load_file(const char *path, json_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen > 0)
        err[0] = '\0';
    if (path == NULL || path[0] == '\0') {
        if (err && errlen > 0)
            snprintf(err, errlen, "config file path is empty");
        return MRD_ECONFIG;
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int saved = errno;
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(saved));
        return MRD_ECONFIG;
    }
    /* Read at most CFG_FILE_MAX + 1 bytes, whatever the file claims. */
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    int rc = 0;
    while (buf) {
        if (len == cap) {
            if (cap > CFG_FILE_MAX)
                break;
            size_t ncap = cap * 2 > CFG_FILE_MAX + 1 ? CFG_FILE_MAX + 1 : cap * 2;
            char *nbuf = realloc(buf, ncap);
            if (nbuf == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (buf == NULL) {
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: out of memory", path);
        rc = MRD_ECONFIG;
    } else if (ferror(f)) {
        int saved = errno;
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(saved));
        rc = MRD_ECONFIG;
    } else if (len > CFG_FILE_MAX) {
        if (err && errlen > 0)
            snprintf(err, errlen, "%s: larger than %d bytes", path, CFG_FILE_MAX);
        rc = MRD_ECONFIG;
    } else {
        rc = load_buffer(path, buf, len, out, err, errlen);
    }
    free(buf);
    fclose(f);
    return rc;
}

const char *mrd_cfg_str(const json_t *obj, const char *key, const char *def)
{
    const json_t *v = json_is_object(obj) && key ? json_object_get(obj, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : def;
}

long long mrd_cfg_int(const json_t *obj, const char *key, long long def)
{
    const json_t *v = json_is_object(obj) && key ? json_object_get(obj, key) : NULL;
    return json_is_integer(v) ? (long long)json_integer_value(v) : def;
}

int mrd_cfg_bool(const json_t *obj, const char *key, int def)
{
    const json_t *v = json_is_object(obj) && key ? json_object_get(obj, key) : NULL;
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* The last occurrence wins; "--" ends the options. A "--config" with no
 * value yields "" so that loading fails loudly instead of silently using
 * defaults. */
const char *mrd_cfg_arg(int argc, char **argv)
{
    const char *found = NULL;
    for (int i = 1; i < argc && argv && argv[i]; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--config") == 0) {
            found = i + 1 < argc && argv[i + 1] ? argv[i + 1] : "";
            i++;
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            found = argv[i] + 9;
        }
    }
    return found;
}
