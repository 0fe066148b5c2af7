/*
 * libFuzzer target for common/protocol.c. The first byte picks a decoder
 * (heartbeat request, heartbeat answer, lease request, lease answer); the
 * rest is the JSON text. Checks that decoding never crashes, leaks or
 * overflows, that a failure leaves a NUL-terminated message naming a field
 * and an empty struct, and that whatever decodes re-encodes to JSON that
 * decodes again to the same encoding (round trip). Seeds:
 * tests/fuzz/corpus/protocol/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/protocol.h"

static char *dump(json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    return s;
}

static void check_error(int rc, const char *err)
{
    if (rc != MRD_EPARSE && rc != MRD_ENOMEM)
        abort();
    if (memchr(err, '\0', 256) == NULL || err[0] == '\0' || strstr(err, ": ") == NULL)
        abort();
}

static void round_trip_request(const char *text, size_t len)
{
    char err[256];
    mrd_hb_request r, r2;
    int rc = mrd_hb_request_parse(text, len, &r, err, sizeof(err));
    if (rc) {
        check_error(rc, err);
        if (r.members || r.checks || r.nmembers)
            abort();
        return;
    }
    char *a = dump(mrd_hb_request_to_json(&r));
    if (!a || mrd_hb_request_parse(a, strlen(a), &r2, err, sizeof(err)) != 0)
        abort();
    char *b = dump(mrd_hb_request_to_json(&r2));
    if (!b || strcmp(a, b) != 0)
        abort();
    free(a);
    free(b);
    mrd_hb_request_free(&r);
    mrd_hb_request_free(&r2);
}

static void round_trip_answer(const char *text, size_t len)
{
    char err[256];
    mrd_hb_answer x, x2;
    int rc = mrd_hb_answer_parse(text, len, &x, err, sizeof(err));
    if (rc) {
        check_error(rc, err);
        if (x.commands || x.ncommands)
            abort();
        return;
    }
    char *a = dump(mrd_hb_answer_to_json(&x));
    if (!a || mrd_hb_answer_parse(a, strlen(a), &x2, err, sizeof(err)) != 0)
        abort();
    char *b = dump(mrd_hb_answer_to_json(&x2));
    if (!b || strcmp(a, b) != 0)
        abort();
    free(a);
    free(b);
    mrd_hb_answer_free(&x);
    mrd_hb_answer_free(&x2);
}

static void round_trip_lease(const char *text, size_t len, int answer)
{
    char err[256];
    json_error_t jerr;
    json_t *j = json_loadb(text, len, 0, &jerr);
    if (!j)
        return;
    if (answer) {
        mrd_lease_answer a, a2;
        int rc = mrd_lease_answer_from_json(j, &a, err, sizeof(err));
        if (rc == 0) {
            json_t *k = mrd_lease_answer_to_json(&a);
            if (!k || mrd_lease_answer_from_json(k, &a2, err, sizeof(err)) != 0 ||
                memcmp(&a, &a2, sizeof(a)) != 0)
                abort();
            json_decref(k);
        } else {
            check_error(rc, err);
        }
    } else {
        mrd_lease_request r, r2;
        int rc = mrd_lease_request_from_json(j, &r, err, sizeof(err));
        if (rc == 0) {
            json_t *k = mrd_lease_request_to_json(&r);
            if (!k || mrd_lease_request_from_json(k, &r2, err, sizeof(err)) != 0 ||
                memcmp(&r, &r2, sizeof(r)) != 0)
                abort();
            json_decref(k);
        } else {
            check_error(rc, err);
        }
    }
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 4) {
    case 0:
        round_trip_request(text, len);
        break;
    case 1:
        round_trip_answer(text, len);
        break;
    case 2:
        round_trip_lease(text, len, 0);
        break;
    default:
        round_trip_lease(text, len, 1);
        break;
    }
    return 0;
}
