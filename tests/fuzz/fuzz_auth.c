/*
 * libFuzzer target for common/auth.c. The first byte picks what the rest is:
 * even: an Authorization header value checked against a fixed token table
 * for every role mask (the header is what any client controls); odd: a JSON
 * token table given to mrd_auth_init (configuration, reloaded at SIGHUP),
 * then its own tokens checked back. Checks that nothing crashes or leaks,
 * that a success names a principal whose role the mask allows, that the
 * known tokens authenticate in any "Bearer" spelling the header allows, and
 * that a failed init leaves a message and no table. Seeds:
 * tests/fuzz/corpus/auth/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/auth.h"
#include "meridian/error.h"

static mrd_auth *fixed_table(void)
{
    static mrd_auth *a;
    if (a)
        return a;
    json_t *t = json_pack("[{s:s,s:s,s:s},{s:s,s:s,s:s},{s:s,s:s,s:s}]", "name", "ops", "token",
                          "operator-token-0123456789", "role", "operator", "name", "view", "token",
                          "viewer-token-0123456789", "role", "viewer", "name", "agents", "token",
                          "agent-token-0123456789ab", "role", "agent");
    char err[256];
    if (!t || mrd_auth_init(&a, t, err, sizeof(err)) != 0)
        abort();
    json_decref(t);
    return a;
}

static void check_header(const mrd_auth *a, const char *hdr)
{
    static const unsigned masks[] = {0,
                                     MRD_ROLE_VIEWER,
                                     MRD_ROLE_OPERATOR,
                                     MRD_ROLE_AGENT,
                                     MRD_ROLE_APP,
                                     MRD_ROLES_READ,
                                     MRD_ROLE_VIEWER | MRD_ROLE_OPERATOR | MRD_ROLE_AGENT |
                                         MRD_ROLE_APP};
    for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
        const char *principal = NULL;
        unsigned role = 0;
        int rc = mrd_auth_check(a, hdr, masks[i], &principal, &role);
        if (rc == 0) {
            if (!principal || !(role & masks[i]) || mrd_auth_role_name(role) == NULL)
                abort();
        } else if (rc != MRD_EUNAUTHORIZED && rc != MRD_EFORBIDDEN) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0'; /* headers reach the server NUL-terminated */
    if ((data[0] & 1) == 0) {
        check_header(fixed_table(), text);
        free(text);
        return 0;
    }
    json_error_t jerr;
    json_t *tokens = json_loadb((const char *)data + 1, size - 1, 0, &jerr);
    mrd_auth *a = (mrd_auth *)1;
    char err[256];
    memset(err, 'x', sizeof(err));
    int rc = mrd_auth_init(&a, tokens, err, sizeof(err));
    if (rc != 0) {
        if (a != NULL || memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0')
            abort();
    } else {
        size_t i;
        json_t *e;
        json_array_foreach(tokens, i, e)
        {
            const char *tok = json_string_value(json_object_get(e, "token"));
            const char *name = json_string_value(json_object_get(e, "name"));
            char hdr[1200];
            if (!tok || !name ||
                snprintf(hdr, sizeof(hdr), " bearer\t%s ", tok) >= (int)sizeof(hdr))
                continue;
            const char *principal = NULL;
            unsigned role = 0;
            /* a token with NUL or blanks at its ends cannot be presented */
            if (strlen(tok) != json_string_length(json_object_get(e, "token")) ||
                strpbrk(tok, " \t") == tok || (tok[0] && strchr(" \t", tok[strlen(tok) - 1])))
                continue;
            if (mrd_auth_check(a, hdr, 0xffu, &principal, &role) != 0 ||
                strcmp(principal, name) != 0)
                abort();
        }
        check_header(a, text);
        mrd_auth_free(a);
    }
    json_decref(tokens);
    free(text);
    return 0;
}
