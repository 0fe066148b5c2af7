/*
 * libFuzzer target for what the controller parses from PowerDNS and etcd
 * answers (controller/cutover_pdns.c, cutover_etcd.c): a misbehaving or
 * hostile DNS API or etcd gateway controls these bytes. The first byte
 * picks the parser: PowerDNS zone documents (two documents split at the
 * first NUL: the record zone and the TXT zone) through mrd__pdns_observed,
 * a TXT content through mrd__pdns_txt_parse, an etcd txn answer, an etcd
 * read answer, an etcd error body, or raw base64 through mrd__b64_decode
 * (then re-encoded). Checks that nothing crashes, leaks or overflows, that
 * every text field of what was observed is NUL-terminated, and that base64
 * round-trips. Seeds: tests/fuzz/corpus/cutover_answers/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cutover_internal.h"
#include "meridian/error.h"

static void check_obs(const mrd_cutover_observed *o)
{
    if (!memchr(o->region, '\0', sizeof(o->region)) || !memchr(o->value, '\0', sizeof(o->value)) ||
        !memchr(o->detail, '\0', sizeof(o->detail)))
        abort();
}

static void pdns_zones(const char *text, size_t len)
{
    const char *sep = memchr(text, '\0', len);
    size_t l1 = sep ? (size_t)(sep - text) : len;
    json_t *rec = json_loadb(text, l1, 0, NULL);
    json_t *txt = sep ? json_loadb(sep + 1, len - l1 - 1, 0, NULL) : json_incref(rec);
    static const char *const types[] = {"A", "AAAA", "CNAME"};
    for (size_t i = 0; i < 3; i++) {
        mrd_cutover_observed o;
        int rc = mrd__pdns_observed(rec, txt, "orders.db.example.", types[i], &o);
        if (rc != 0 && rc != MRD_EPARSE)
            abort();
        if (rc == 0)
            check_obs(&o);
    }
    json_decref(rec);
    json_decref(txt);
}

static void pdns_txt(const char *text, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        return;
    memcpy(s, text, len);
    s[len] = '\0';
    int64_t epoch = -7;
    char region[64];
    if (mrd__pdns_txt_parse(s, &epoch, region, sizeof(region)) == 0) {
        if (epoch < 0 || !memchr(region, '\0', sizeof(region)))
            abort();
        char back[256];
        size_t n = mrd__pdns_txt_content(back, sizeof(back), epoch, region);
        int64_t e2 = -1;
        char r2[64];
        if (n < sizeof(back) && (mrd__pdns_txt_parse(back, &e2, r2, sizeof(r2)) != 0 ||
                                 e2 != epoch || strcmp(r2, region) != 0))
            abort();
    }
    free(s);
}

static void etcd(const char *text, size_t len, int which)
{
    mrd_cutover_observed o;
    memset(&o, 0, sizeof(o));
    char err[128];
    memset(err, 'x', sizeof(err));
    int rc = which == 0 ? mrd__etcd_txn_parse(text, len, &o, err, sizeof(err))
                        : mrd__etcd_read_parse(text, len, &o, err, sizeof(err));
    if (rc < 0 && (rc != MRD_EPARSE || !memchr(err, '\0', sizeof(err)) || err[0] == '\0'))
        abort();
    if (rc >= 0)
        check_obs(&o);
    char msg[64];
    mrd__etcd_error_message(text, len, msg, sizeof(msg));
    if (!memchr(msg, '\0', sizeof(msg)))
        abort();
}

static void b64(const char *text, size_t len)
{
    unsigned char out[4096];
    size_t n = 0;
    int rc = mrd__b64_decode(text, len, out, sizeof(out), &n);
    if (rc == 0) {
        if (n > sizeof(out) || n > len)
            abort();
        char back[8192];
        size_t m = mrd__b64_encode(out, n, back, sizeof(back));
        if (m >= sizeof(back))
            abort();
        /* canonical input comes back as it was (padding bits may differ) */
        size_t n2 = 0;
        unsigned char again[4096];
        if (mrd__b64_decode(back, m, again, sizeof(again), &n2) != 0 || n2 != n ||
            memcmp(again, out, n) != 0)
            abort();
    } else if (rc != MRD_EPARSE && rc != MRD_ETOOBIG) {
        abort();
    }
    unsigned char tiny[2];
    rc = mrd__b64_decode(text, len, tiny, sizeof(tiny), &n);
    if (rc == 0 && n > sizeof(tiny))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 5) {
    case 0:
        pdns_zones(text, len);
        break;
    case 1:
        pdns_txt(text, len);
        break;
    case 2:
        etcd(text, len, 0);
        break;
    case 3:
        etcd(text, len, 1);
        break;
    default:
        b64(text, len);
        break;
    }
    return 0;
}
