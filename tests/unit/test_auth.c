/* Unit tests of bearer-token auth: constant-time compare, roles, 401/403/ok,
 * and configuration errors that name the bad entry. */
#include <criterion/criterion.h>
#include <string.h>

#include "meridian/auth.h"
#include "meridian/error.h"

static mrd_auth *mk(void)
{
    json_error_t je;
    json_t *j = json_loads("[{\"name\":\"ops\",\"token\":\"op-secret-1\",\"role\":\"operator\"},"
                           "{\"name\":\"grafana\",\"token\":\"view-2\",\"role\":\"viewer\"},"
                           "{\"name\":\"agent-eu\",\"token\":\"ag-3\",\"role\":\"agent\"},"
                           "{\"name\":\"billing\",\"token\":\"app-4\",\"role\":\"app\"}]",
                           0, &je);
    cr_assert_not_null(j);
    mrd_auth *a = NULL;
    char err[256];
    cr_assert_eq(mrd_auth_init(&a, j, err, sizeof(err)), 0, "%s", err);
    json_decref(j);
    return a;
}

Test(auth, consttime_eq)
{
    cr_assert(mrd_consttime_eq("abc", 3, "abc", 3));
    cr_assert_not(mrd_consttime_eq("abc", 3, "abd", 3));
    cr_assert_not(mrd_consttime_eq("abc", 3, "ab", 2));
    cr_assert_not(mrd_consttime_eq("ab", 2, "abc", 3));
    cr_assert_not(mrd_consttime_eq("", 0, "a", 1));
    cr_assert_not(mrd_consttime_eq("a", 1, "", 0));
    cr_assert(mrd_consttime_eq("", 0, "", 0));
    cr_assert_not(mrd_consttime_eq("xbc", 3, "abc", 3));
    /* a prefix repeated must not compare equal to a longer string */
    cr_assert_not(mrd_consttime_eq("aaaa", 4, "aaaaaaaa", 8));
    cr_assert(mrd_consttime_eq("a\0b", 3, "a\0b", 3));
    cr_assert_not(mrd_consttime_eq("a\0b", 3, "a\0c", 3));
}

Test(auth, role_names)
{
    cr_assert_eq(mrd_auth_role_parse("viewer"), MRD_ROLE_VIEWER);
    cr_assert_eq(mrd_auth_role_parse("operator"), MRD_ROLE_OPERATOR);
    cr_assert_eq(mrd_auth_role_parse("agent"), MRD_ROLE_AGENT);
    cr_assert_eq(mrd_auth_role_parse("app"), MRD_ROLE_APP);
    cr_assert_eq(mrd_auth_role_parse("admin"), 0);
    cr_assert_eq(mrd_auth_role_parse("Viewer"), 0);
    cr_assert_eq(mrd_auth_role_parse(NULL), 0);
    cr_assert_str_eq(mrd_auth_role_name(MRD_ROLE_AGENT), "agent");
    cr_assert_str_eq(mrd_auth_role_name(MRD_ROLE_OPERATOR), "operator");
    cr_assert_str_eq(mrd_auth_role_name(MRD_ROLE_VIEWER | MRD_ROLE_APP), "unknown");
}

Test(auth, check_ok_401_403)
{
    mrd_auth *a = mk();
    const char *who = NULL;
    unsigned role = 0;
    cr_assert_eq(mrd_auth_check(a, "Bearer op-secret-1", MRD_ROLES_WRITE, &who, &role), 0);
    cr_assert_str_eq(who, "ops");
    cr_assert_eq(role, MRD_ROLE_OPERATOR);
    cr_assert_eq(mrd_auth_check(a, "bearer   view-2  ", MRD_ROLES_READ, &who, &role), 0);
    cr_assert_str_eq(who, "grafana");
    cr_assert_eq(mrd_auth_check(a, "Bearer ag-3", MRD_ROLE_AGENT, &who, &role), 0);
    cr_assert_str_eq(who, "agent-eu");
    cr_assert_eq(mrd_auth_check(a, "Bearer app-4", MRD_ROLE_APP | MRD_ROLE_VIEWER, &who, &role), 0);
    cr_assert_eq(role, MRD_ROLE_APP);

    cr_assert_eq(mrd_auth_check(a, NULL, MRD_ROLES_READ, &who, &role), MRD_EUNAUTHORIZED);
    cr_assert_eq(mrd_auth_check(a, "", MRD_ROLES_READ, &who, &role), MRD_EUNAUTHORIZED);
    cr_assert_eq(mrd_auth_check(a, "Bearer ", MRD_ROLES_READ, &who, &role), MRD_EUNAUTHORIZED);
    cr_assert_eq(mrd_auth_check(a, "Bearer nope", MRD_ROLES_READ, &who, &role), MRD_EUNAUTHORIZED);
    cr_assert_eq(mrd_auth_check(a, "Bearer op-secret", MRD_ROLES_READ, &who, &role),
                 MRD_EUNAUTHORIZED, "a prefix of a token is not the token");
    cr_assert_eq(mrd_auth_check(a, "Bearer op-secret-12", MRD_ROLES_READ, &who, &role),
                 MRD_EUNAUTHORIZED);
    cr_assert_eq(mrd_auth_check(a, "Basic op-secret-1", MRD_ROLES_READ, &who, &role),
                 MRD_EUNAUTHORIZED);
    cr_assert_eq(mrd_auth_check(a, "Bearerop-secret-1", MRD_ROLES_READ, &who, &role),
                 MRD_EUNAUTHORIZED);

    cr_assert_eq(mrd_auth_check(a, "Bearer view-2", MRD_ROLES_WRITE, &who, &role), MRD_EFORBIDDEN);
    cr_assert_eq(mrd_auth_check(a, "Bearer ag-3", MRD_ROLES_READ, &who, &role), MRD_EFORBIDDEN);
    cr_assert_eq(mrd_auth_check(a, "Bearer app-4", MRD_ROLE_AGENT, &who, &role), MRD_EFORBIDDEN);
    mrd_auth_free(a);
}

Test(auth, empty_table_refuses_everything)
{
    json_t *j = json_array();
    mrd_auth *a = NULL;
    cr_assert_eq(mrd_auth_init(&a, j, NULL, 0), 0);
    cr_assert_eq(mrd_auth_check(a, "Bearer x", MRD_ROLES_READ, NULL, NULL), MRD_EUNAUTHORIZED);
    mrd_auth_free(a);
    json_decref(j);
    cr_assert_eq(mrd_auth_check(NULL, "Bearer x", MRD_ROLES_READ, NULL, NULL), MRD_EUNAUTHORIZED);
}

static void expect_bad(const char *json, const char *needle1, const char *needle2)
{
    json_error_t je;
    json_t *j = json_loads(json, JSON_DECODE_ANY, &je);
    cr_assert_not_null(j, "%s", json);
    mrd_auth *a = (mrd_auth *)0x1;
    char err[256];
    cr_assert_eq(mrd_auth_init(&a, j, err, sizeof(err)), MRD_ECONFIG, "%s", json);
    cr_assert_null(a);
    cr_assert_not_null(strstr(err, needle1), "error \"%s\" lacks \"%s\"", err, needle1);
    if (needle2)
        cr_assert_not_null(strstr(err, needle2), "error \"%s\" lacks \"%s\"", err, needle2);
    json_decref(j);
}

Test(auth, bad_config_names_entry)
{
    expect_bad("{}", "array", NULL);
    expect_bad("[{\"name\":\"a\",\"token\":\"t1\",\"role\":\"viewer\"},"
               "{\"name\":\"b\",\"token\":\"t2\",\"role\":\"admin\"}]",
               "tokens[1]", "\"b\"");
    expect_bad("[{\"name\":\"a\",\"token\":\"\",\"role\":\"viewer\"}]", "tokens[0]", "token");
    expect_bad("[{\"token\":\"t\",\"role\":\"viewer\"}]", "tokens[0]", "name");
    expect_bad("[{\"name\":\"a\",\"token\":\"t\"}]", "tokens[0]", "role");
    expect_bad("[42]", "tokens[0]", "object");
    expect_bad("[{\"name\":\"a\",\"token\":\"t1\",\"role\":\"viewer\"},"
               "{\"name\":\"a\",\"token\":\"t2\",\"role\":\"viewer\"}]",
               "tokens[1]", "duplicate");
    expect_bad("[{\"name\":\"a\",\"token\":\"same\",\"role\":\"viewer\"},"
               "{\"name\":\"b\",\"token\":\"same\",\"role\":\"operator\"}]",
               "tokens[1]", "duplicate");
}

Test(auth, error_never_contains_token)
{
    json_t *j = json_loads("[{\"name\":\"a\",\"token\":\"s3cr3t\",\"role\":\"root\"}]", 0, NULL);
    mrd_auth *a = NULL;
    char err[256];
    cr_assert_eq(mrd_auth_init(&a, j, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_null(strstr(err, "s3cr3t"), "%s", err);
    json_decref(j);
}
