/*
 * Bearer tokens with roles. A token table comes from configuration; checks
 * compare every configured token in constant time (no early exit on the
 * first differing byte, no early exit on the first matching token).
 */
#ifndef MERIDIAN_AUTH_H
#define MERIDIAN_AUTH_H

#include <jansson.h>
#include <stddef.h>

#define MRD_ROLE_VIEWER   0x1u
#define MRD_ROLE_OPERATOR 0x2u
#define MRD_ROLE_AGENT    0x4u
#define MRD_ROLE_APP      0x8u
/* Shorthands for route masks. */
#define MRD_ROLES_READ  (MRD_ROLE_VIEWER | MRD_ROLE_OPERATOR)
#define MRD_ROLES_WRITE (MRD_ROLE_OPERATOR)

typedef struct mrd_auth mrd_auth;

/* Builds the table from a JSON array [{"name": "...", "token": "...",
 * "role": "viewer|operator|agent|app"}]. Returns 0, or MRD_ECONFIG with a
 * message naming the bad entry in err. */
int mrd_auth_init(mrd_auth **out, const json_t *tokens, char *err, size_t errlen);
void mrd_auth_free(mrd_auth *auth);

/* Checks an Authorization header value ("Bearer <token>", may be NULL)
 * against the allowed role mask. Returns 0 and sets *principal and *role,
 * MRD_EUNAUTHORIZED (no or unknown token) or MRD_EFORBIDDEN (known token,
 * role not allowed). */
int mrd_auth_check(const mrd_auth *auth, const char *authorization, unsigned allowed,
                   const char **principal, unsigned *role);

/* "viewer" -> MRD_ROLE_VIEWER ...; 0 if unknown. */
unsigned mrd_auth_role_parse(const char *name);
const char *mrd_auth_role_name(unsigned role);

/* Constant-time comparison of two byte strings of possibly different
 * lengths; returns 1 when equal. */
int mrd_consttime_eq(const char *a, size_t alen, const char *b, size_t blen);

#endif
