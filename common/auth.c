/*
 * Bearer-token authentication with roles (viewer, operator, agent, app).
 * The controller builds one mrd_auth from its configuration at start and the
 * HTTP server calls mrd_auth_check for every request on a protected route.
 *
 * Invariants:
 * - tokens are kept only as SHA-256 digests; a check hashes the presented
 *   token once and compares it with every configured digest in constant
 *   time, without an early exit on a differing byte or on the first match,
 *   so timing reveals neither which token matched nor a token prefix;
 * - names and tokens are unique; a bad entry fails the whole table with a
 *   message that names it (by index and name, never by token);
 * - the table is immutable after mrd_auth_init: checks are thread-safe.
 */
#include "meridian/auth.h"

#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "meridian/error.h"

typedef struct {
    char *name;
    unsigned role;
    unsigned char digest[SHA256_DIGEST_LENGTH];
} auth_entry;

struct mrd_auth {
    auth_entry *entries;
    size_t n;
};

static const struct {
    const char *name;
    unsigned role;
} roles[] = {
    {"viewer", MRD_ROLE_VIEWER},
    {"operator", MRD_ROLE_OPERATOR},
    {"agent", MRD_ROLE_AGENT},
    {"app", MRD_ROLE_APP},
};

unsigned mrd_auth_role_parse(const char *name)
{
    if (!name)
        return 0;
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(roles[i].name, name) == 0)
            return roles[i].role;
    return 0;
}

const char *mrd_auth_role_name(unsigned role)
{
    if (role == 0)
        return "none";
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (roles[i].role == role)
            return roles[i].name;
    return "unknown";
}

int mrd_consttime_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Walks the longer length; bytes past the end of the shorter string read
     * as index 0 of it (or a zero when it is empty), so the loop has no
     * data-dependent branch. The length difference is folded in at the end. */
    size_t n = alen > blen ? alen : blen;
    unsigned char diff = 0;
    size_t lendiff = alen ^ blen;
    for (size_t i = 0; i < n; i++) {
        size_t ia = i < alen ? i : 0, ib = i < blen ? i : 0;
        unsigned char ca = alen ? (unsigned char)a[ia] : 0;
        unsigned char cb = blen ? (unsigned char)b[ib] : 0;
        diff |= ca ^ cb;
    }
    /* Fold lendiff to one bit without a branch. */
    size_t l = lendiff | (size_t)(0 - lendiff);
    diff |= (unsigned char)(l >> (sizeof(size_t) * 8 - 1));
    return diff == 0;
}

void mrd_auth_free(mrd_auth *auth)
{
    if (!auth)
        return;
    for (size_t i = 0; i < auth->n; i++)
        free(auth->entries[i].name);
    free(auth->entries);
    free(auth);
}

int mrd_auth_init(mrd_auth **out, const json_t *tokens, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    err[0] = '\0';
    *out = NULL;
    if (!json_is_array(tokens)) {
        snprintf(err, errlen, "tokens: expected an array of {name, token, role}");
        return MRD_ECONFIG;
    }
    mrd_auth *a = calloc(1, sizeof(*a));
    size_t n = json_array_size(tokens);
    if (!a || (n && !(a->entries = calloc(n, sizeof(auth_entry))))) {
        free(a);
        snprintf(err, errlen, "tokens: out of memory");
        return MRD_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(tokens, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *token = json_string_value(json_object_get(e, "token"));
        const char *role = json_string_value(json_object_get(e, "role"));
        const char *what = NULL;
        if (!json_is_object(e))
            what = "not an object";
        else if (!name || !*name)
            what = "missing or empty \"name\"";
        else if (!token || !*token)
            what = "missing or empty \"token\"";
        else if (!role)
            what = "missing \"role\"";
        else if (!mrd_auth_role_parse(role))
            what = "unknown \"role\" (viewer, operator, agent or app)";
        if (!what) {
            for (size_t j = 0; j < a->n; j++)
                if (strcmp(a->entries[j].name, name) == 0)
                    what = "duplicate \"name\"";
        }
        unsigned char digest[SHA256_DIGEST_LENGTH];
        if (!what) {
            SHA256((const unsigned char *)token, strlen(token), digest);
            for (size_t j = 0; j < a->n; j++)
                if (memcmp(a->entries[j].digest, digest, sizeof(digest)) == 0)
                    what = "duplicate \"token\"";
        }
        if (what) {
            snprintf(err, errlen, "tokens[%zu] (name \"%s\"): %s", i, name ? name : "?", what);
            mrd_auth_free(a);
            return MRD_ECONFIG;
        }
        auth_entry *ent = &a->entries[a->n];
        if (!(ent->name = strdup(name))) {
            snprintf(err, errlen, "tokens: out of memory");
            mrd_auth_free(a);
            return MRD_ENOMEM;
        }
        ent->role = mrd_auth_role_parse(role);
        memcpy(ent->digest, digest, sizeof(digest));
        a->n++;
    }
    *out = a;
    return 0;
}

int mrd_auth_check(const mrd_auth *auth, const char *authorization, unsigned allowed,
                   const char **principal, unsigned *role)
{
    if (!auth || !authorization)
        return MRD_EUNAUTHORIZED;
    const char *s = authorization;
    while (*s == ' ' || *s == '\t')
        s++;
    if (strncasecmp(s, "bearer", 6) != 0 || (s[6] != ' ' && s[6] != '\t'))
        return MRD_EUNAUTHORIZED;
    s += 6;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strlen(s);
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0)
        return MRD_EUNAUTHORIZED;

    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, len, digest);
    /* Every entry is compared; the match is selected with masks. */
    size_t match = 0;
    size_t found = 0;
    for (size_t i = 0; i < auth->n; i++) {
        size_t eq = (size_t)mrd_consttime_eq((const char *)digest, sizeof(digest),
                                             (const char *)auth->entries[i].digest, sizeof(digest));
        size_t mask = (size_t)0 - eq; /* all ones when equal */
        match = (match & ~mask) | (i & mask);
        found |= eq;
    }
    if (!found)
        return MRD_EUNAUTHORIZED;
    const auth_entry *e = &auth->entries[match];
    if (!(e->role & allowed))
        return MRD_EFORBIDDEN;
    if (principal)
        *principal = e->name;
    if (role)
        *role = e->role;
    return 0;
}
