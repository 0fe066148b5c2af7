/* Unit tests of the cutover drivers without servers: base64, epoch padding,
 * backoff bounds, HMAC-SHA256 known answers (RFC 4231), the JSON builders
 * and parsers of the PowerDNS, etcd and webhook drivers (parsers fed with
 * answers captured from PowerDNS 4.7 and etcd 3.4), config checks, and the
 * noop driver on a libuv loop. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cutover_internal.h"
#include "meridian/cutover.h"
#include "meridian/error.h"

/* ---------------- base64 ---------------- */

static const char *b64_plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
static const char *b64_coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};

Test(b64, rfc4648_vectors_encode)
{
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        size_t n = mrd__b64_encode(b64_plain[i], strlen(b64_plain[i]), out, sizeof(out));
        cr_assert_eq(n, strlen(b64_coded[i]));
        cr_assert_str_eq(out, b64_coded[i]);
    }
}

Test(b64, rfc4648_vectors_decode)
{
    for (size_t i = 0; i < 7; i++) {
        char out[16];
        size_t n = 99;
        cr_assert_eq(mrd__b64_decode(b64_coded[i], strlen(b64_coded[i]), out, sizeof(out), &n), 0);
        cr_assert_eq(n, strlen(b64_plain[i]));
        cr_assert_eq(memcmp(out, b64_plain[i], n), 0);
    }
}

Test(b64, encode_reports_needed_length_when_too_small)
{
    char out[4] = "xyz";
    cr_assert_eq(mrd__b64_encode("foobar", 6, out, sizeof(out)), 8);
    cr_assert_str_eq(out, "xyz"); /* untouched */
}

Test(b64, binary_round_trip)
{
    unsigned char in[256], back[256];
    char coded[400];
    for (int i = 0; i < 256; i++)
        in[i] = (unsigned char)(255 - i);
    for (size_t len = 0; len <= 256; len += 37) {
        size_t n = mrd__b64_encode(in, len, coded, sizeof(coded)), m = 0;
        cr_assert_eq(mrd__b64_decode(coded, n, back, sizeof(back), &m), 0);
        cr_assert_eq(m, len);
        cr_assert_eq(memcmp(in, back, len), 0);
    }
}

Test(b64, refuses_malformed_input)
{
    const char *bad[] = {
        "Zg=", "Zg=a", "Z===", "Zh==", "Zm9=", "Zm@v", "Zg==Zg==", "====", "Zm9v\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[16];
        size_t n;
        cr_assert_eq(mrd__b64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n), MRD_EPARSE,
                     "accepted %s", bad[i]);
    }
}

Test(b64, refuses_small_output)
{
    char out[5];
    size_t n;
    cr_assert_eq(mrd__b64_decode("Zm9vYmFy", 8, out, sizeof(out), &n), MRD_ETOOBIG);
}

/* ---------------- epoch padding ---------------- */

Test(epoch, pads_to_twenty_digits)
{
    char a[21], b[21];
    cr_assert_eq(mrd__epoch_pad(0, a), 0);
    cr_assert_str_eq(a, "00000000000000000000");
    cr_assert_eq(mrd__epoch_pad(INT64_MAX, a), 0);
    cr_assert_str_eq(a, "09223372036854775807");
    cr_assert_eq(mrd__epoch_pad(-1, a), MRD_EINVAL);
    /* Bytewise order is numeric order: the reason for the padding. */
    mrd__epoch_pad(9, a);
    mrd__epoch_pad(10, b);
    cr_assert_lt(strcmp(a, b), 0);
    cr_assert_gt(strcmp("9", "10"), 0);
    for (int64_t e = 0; e < 2000; e += 7) {
        mrd__epoch_pad(e, a);
        mrd__epoch_pad(e + 1, b);
        cr_assert_lt(strcmp(a, b), 0);
    }
}

Test(epoch, unpad_round_trip_and_refusals)
{
    char a[21];
    int64_t v = -1;
    mrd__epoch_pad(1234567, a);
    cr_assert_eq(mrd__epoch_unpad(a, 20, &v), 0);
    cr_assert_eq(v, 1234567);
    cr_assert_eq(mrd__epoch_unpad("09223372036854775807", 20, &v), 0);
    cr_assert_eq(v, INT64_MAX);
    cr_assert_eq(mrd__epoch_unpad("09223372036854775808", 20, &v), MRD_EPARSE);
    cr_assert_eq(mrd__epoch_unpad("99999999999999999999", 20, &v), MRD_EPARSE);
    cr_assert_eq(mrd__epoch_unpad("5", 1, &v), MRD_EPARSE);
    cr_assert_eq(mrd__epoch_unpad("0000000000000000000x", 20, &v), MRD_EPARSE);
    cr_assert_eq(mrd__epoch_unpad("-0000000000000000001", 20, &v), MRD_EPARSE);
}

/* ---------------- backoff ---------------- */

Test(backoff, full_jitter_bounds)
{
    /* ceiling = min(cap, base * 2^attempt); the delay is in [0, ceiling]. */
    cr_assert_eq(mrd__backoff_full_jitter(0, 100, 5000, 100), 100);
    cr_assert_eq(mrd__backoff_full_jitter(0, 100, 5000, 101), 0);
    cr_assert_eq(mrd__backoff_full_jitter(3, 100, 5000, 800), 800);
    cr_assert_eq(mrd__backoff_full_jitter(3, 100, 5000, 801), 0);
    cr_assert_eq(mrd__backoff_full_jitter(10, 100, 5000, 5000), 5000);
    cr_assert_eq(mrd__backoff_full_jitter(10, 100, 5000, 5001), 0);
    /* Huge attempts neither overflow nor exceed the cap. */
    cr_assert_leq(mrd__backoff_full_jitter(200, 1000, 60000, UINT64_MAX), 60000);
    cr_assert_leq(mrd__backoff_full_jitter(63, UINT64_MAX / 3, UINT64_MAX, 12345), 12345);
    uint64_t x = 88172645463325252ull, seen_max = 0;
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        uint64_t ceiling = 100ull << attempt > 5000 ? 5000 : 100ull << attempt;
        for (int i = 0; i < 500; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint64_t d = mrd__backoff_full_jitter(attempt, 100, 5000, x);
            cr_assert_leq(d, ceiling);
            if (d > seen_max)
                seen_max = d;
        }
    }
    cr_assert_gt(seen_max, 4000); /* it does use the range */
}

/* ---------------- HMAC ---------------- */

Test(hmac, rfc4231_case_2)
{
    char hex[65];
    const char *msg = "what do ya want for nothing?";
    cr_assert_eq(mrd__hmac_sha256_hex("Jefe", 4, msg, strlen(msg), hex), 0);
    cr_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

Test(hmac, rfc4231_case_1)
{
    char hex[65];
    unsigned char key[20];
    memset(key, 0x0b, sizeof(key));
    cr_assert_eq(mrd__hmac_sha256_hex(key, sizeof(key), "Hi There", 8, hex), 0);
    cr_assert_str_eq(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

/* ---------------- targets ---------------- */

static mrd_cutover_target target(const char *svc, int64_t epoch, const char *region)
{
    mrd_cutover_target t = {svc, epoch, region, "eu", "10.0.0.2:5432", "op-7"};
    return t;
}

Test(target, check)
{
    char err[160];
    mrd_cutover_target t = target("db", 3, "us");
    cr_assert_eq(mrd_cutover_target_check(&t, err, sizeof(err)), 0);
    t.service = "db/x";
    cr_assert_eq(mrd_cutover_target_check(&t, err, sizeof(err)), MRD_EINVAL);
    cr_assert(strstr(err, "service"));
    t = target("db", -1, "us");
    cr_assert_eq(mrd_cutover_target_check(&t, err, sizeof(err)), MRD_EINVAL);
    t = target("db", 1, "u s");
    cr_assert_eq(mrd_cutover_target_check(&t, err, sizeof(err)), MRD_EINVAL);
    t = target("db", 1, NULL);
    cr_assert_eq(mrd_cutover_target_check(&t, err, sizeof(err)), MRD_EINVAL);
    t = target("db", 1, "us");
    t.old_region = NULL;
    t.endpoint = NULL;
    t.operation_id = NULL;
    cr_assert_eq(mrd_cutover_target_check(&t, err, sizeof(err)), 0);
}

/* ---------------- PowerDNS ---------------- */

Test(pdns, values_by_type)
{
    cr_assert(mrd__pdns_value_ok("A", "127.0.0.11"));
    cr_assert_not(mrd__pdns_value_ok("A", "127.0.0.256"));
    cr_assert_not(mrd__pdns_value_ok("A", "::1"));
    cr_assert(mrd__pdns_value_ok("AAAA", "fd00::12"));
    cr_assert_not(mrd__pdns_value_ok("AAAA", "10.0.0.1"));
    cr_assert(mrd__pdns_value_ok("CNAME", "db-us.example.test."));
    cr_assert_not(mrd__pdns_value_ok("CNAME", "db-us.example.test"));
    cr_assert_not(mrd__pdns_value_ok("CNAME", "db us.example.test."));
    cr_assert_not(mrd__pdns_value_ok("MX", "10 mail.example.test."));
    cr_assert_not(mrd__pdns_value_ok("A", ""));
}

Test(pdns, txt_content_is_quoted)
{
    char txt[64];
    mrd__pdns_txt_content(txt, sizeof(txt), 3, "us");
    cr_assert_str_eq(txt, "\"epoch=3 primary=us\"");
}

Test(pdns, txt_parse)
{
    int64_t e = -1;
    char region[64];
    cr_assert_eq(mrd__pdns_txt_parse("\"epoch=3 primary=us\"", &e, region, sizeof(region)), 0);
    cr_assert_eq(e, 3);
    cr_assert_str_eq(region, "us");
    cr_assert_eq(mrd__pdns_txt_parse("epoch=12 primary=eu-west", &e, region, sizeof(region)), 0);
    cr_assert_eq(e, 12);
    cr_assert_str_eq(region, "eu-west");
    const char *bad[] = {"\"epoch= primary=us\"",  "\"epoch=3\"",
                         "\"epoch=3 primary=\"",   "\"epoch=x primary=us\"",
                         "\"primary=us epoch=3\"", "\"epoch=99999999999999999999 primary=us\"",
                         "\"epoch=3 primary=u s\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(mrd__pdns_txt_parse(bad[i], &e, region, sizeof(region)), MRD_EPARSE, "%s",
                     bad[i]);
}

Test(pdns, patch_body)
{
    char *body = mrd__pdns_patch_body("db.example.test.", "A", 5, "127.0.0.12", 3, "us");
    cr_assert_not_null(body);
    json_t *doc = json_loads(body, 0, NULL);
    free(body);
    cr_assert_not_null(doc);
    json_t *rr = json_object_get(doc, "rrsets");
    cr_assert_eq(json_array_size(rr), 2);
    json_t *a = json_array_get(rr, 0), *t = json_array_get(rr, 1);
    cr_assert_str_eq(json_string_value(json_object_get(a, "name")), "db.example.test.");
    cr_assert_str_eq(json_string_value(json_object_get(a, "type")), "A");
    cr_assert_eq(json_integer_value(json_object_get(a, "ttl")), 5);
    cr_assert_str_eq(json_string_value(json_object_get(a, "changetype")), "REPLACE");
    json_t *rec = json_array_get(json_object_get(a, "records"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(rec, "content")), "127.0.0.12");
    cr_assert(json_is_false(json_object_get(rec, "disabled")));
    cr_assert_str_eq(json_string_value(json_object_get(t, "name")), "_meridian.db.example.test.");
    cr_assert_str_eq(json_string_value(json_object_get(t, "type")), "TXT");
    cr_assert_str_eq(json_string_value(json_object_get(t, "changetype")), "REPLACE");
    rec = json_array_get(json_object_get(t, "records"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(rec, "content")), "\"epoch=3 primary=us\"");
    json_decref(doc);
}

/* Captured from PowerDNS 4.7.3: GET .../zones/example.test.?rrset_name=... */
static const char *zone_a =
    "{\"account\": \"\", \"id\": \"example.test.\", \"kind\": \"Native\", \"name\": "
    "\"example.test.\", \"rrsets\": [{\"comments\": [], \"name\": \"db.example.test.\", "
    "\"records\": [{\"content\": \"127.0.0.11\", \"disabled\": false}], \"ttl\": 5, \"type\": "
    "\"A\"}], \"serial\": 2026112702}";
static const char *zone_txt =
    "{\"id\": \"example.test.\", \"rrsets\": [{\"comments\": [], \"name\": "
    "\"_meridian.db.example.test.\", \"records\": [{\"content\": \"\\\"epoch=3 primary=eu\\\"\", "
    "\"disabled\": false}], \"ttl\": 5, \"type\": \"TXT\"}]}";

Test(pdns, observed_from_zone_documents)
{
    json_t *za = json_loads(zone_a, 0, NULL), *zt = json_loads(zone_txt, 0, NULL);
    mrd_cutover_observed obs;
    cr_assert_eq(mrd__pdns_observed(za, zt, "db.example.test.", "A", &obs), 0);
    cr_assert_eq(obs.ok, 1);
    cr_assert_eq(obs.epoch, 3);
    cr_assert_str_eq(obs.region, "eu");
    cr_assert_str_eq(obs.value, "127.0.0.11");
    /* Names compare case-insensitively; the wrong type is absent. */
    cr_assert_eq(mrd__pdns_observed(za, zt, "DB.example.test.", "AAAA", &obs), 0);
    cr_assert_eq(obs.ok, 0);
    cr_assert_eq(obs.epoch, 3);
    /* Record present, TXT absent. */
    cr_assert_eq(mrd__pdns_observed(za, za, "db.example.test.", "A", &obs), 0);
    cr_assert_eq(obs.ok, 0);
    cr_assert_eq(obs.epoch, -1);
    cr_assert_str_eq(obs.value, "127.0.0.11");
    json_decref(za);
    json_decref(zt);
}

Test(pdns, zone_find_skips_disabled_and_refuses_garbage)
{
    char c[64];
    json_t *z = json_loads("{\"rrsets\":[{\"name\":\"a.t.\",\"type\":\"A\",\"records\":["
                           "{\"content\":\"1.1.1.1\",\"disabled\":true},"
                           "{\"content\":\"2.2.2.2\",\"disabled\":false}]}]}",
                           0, NULL);
    cr_assert_eq(mrd__pdns_zone_find(z, "a.t.", "A", c, sizeof(c)), 1);
    cr_assert_str_eq(c, "2.2.2.2");
    json_decref(z);
    z = json_loads("{\"rrsets\":{}}", 0, NULL);
    cr_assert_eq(mrd__pdns_zone_find(z, "a.t.", "A", c, sizeof(c)), MRD_EPARSE);
    json_decref(z);
    z = json_loads("{\"rrsets\":[{\"name\":\"a.t.\",\"type\":\"A\",\"records\":[{}]}]}", 0, NULL);
    cr_assert_eq(mrd__pdns_zone_find(z, "a.t.", "A", c, sizeof(c)), MRD_EPARSE);
    json_decref(z);
    cr_assert_eq(mrd__pdns_zone_find(NULL, "a.t.", "A", c, sizeof(c)), MRD_EPARSE);
}

/* ---------------- etcd ---------------- */

static char *b64dec(const char *s)
{
    static char buf[4][1024];
    static int k;
    size_t n = 0;
    char *out = buf[k++ % 4];
    cr_assert_eq(mrd__b64_decode(s, strlen(s), out, sizeof(buf[0]) - 1, &n), 0);
    out[n] = '\0';
    return out;
}

static const char *jstr(json_t *o, const char *path)
{
    char first[64];
    const char *dot = strchr(path, '.');
    snprintf(first, sizeof(first), "%.*s", (int)(dot - path), path);
    return json_string_value(json_object_get(json_object_get(o, first), dot + 1));
}

Test(etcd, keys)
{
    char k[128];
    mrd__etcd_key(k, sizeof(k), "/meridian", "db", "epoch");
    cr_assert_str_eq(k, "/meridian/services/db/epoch");
}

Test(etcd, txn_body)
{
    mrd_cutover_target t = target("db", 5, "us");
    char *body = mrd__etcd_txn_body("/m", &t, "2026-11-27T17:00:00.000Z");
    cr_assert_not_null(body);
    json_t *doc = json_loads(body, 0, NULL);
    free(body);
    cr_assert_not_null(doc);
    json_t *cmp = json_array_get(json_object_get(doc, "compare"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(cmp, "target")), "VALUE");
    cr_assert_str_eq(json_string_value(json_object_get(cmp, "result")), "LESS");
    cr_assert_str_eq(b64dec(json_string_value(json_object_get(cmp, "key"))),
                     "/m/services/db/epoch");
    cr_assert_str_eq(b64dec(json_string_value(json_object_get(cmp, "value"))),
                     "00000000000000000005");
    json_t *succ = json_object_get(doc, "success");
    cr_assert_eq(json_array_size(succ), 2);
    json_t *p0 = json_object_get(json_array_get(succ, 0), "request_put");
    json_t *p1 = json_object_get(json_array_get(succ, 1), "request_put");
    cr_assert_str_eq(b64dec(json_string_value(json_object_get(p0, "key"))), "/m/services/db/epoch");
    cr_assert_str_eq(b64dec(json_string_value(json_object_get(p0, "value"))),
                     "00000000000000000005");
    cr_assert_str_eq(b64dec(json_string_value(json_object_get(p1, "key"))),
                     "/m/services/db/primary");
    json_t *pv = json_loads(b64dec(json_string_value(json_object_get(p1, "value"))), 0, NULL);
    cr_assert_not_null(pv);
    cr_assert_str_eq(json_string_value(json_object_get(pv, "primary_region")), "us");
    cr_assert_str_eq(json_string_value(json_object_get(pv, "endpoint")), "10.0.0.2:5432");
    cr_assert_eq(json_integer_value(json_object_get(pv, "epoch")), 5);
    cr_assert_str_eq(json_string_value(json_object_get(pv, "changed_at")),
                     "2026-11-27T17:00:00.000Z");
    cr_assert_str_eq(json_string_value(json_object_get(pv, "operation_id")), "op-7");
    json_decref(pv);
    /* failure: nested txn on create_revision == 0, then ranges */
    json_t *inner =
        json_object_get(json_array_get(json_object_get(doc, "failure"), 0), "request_txn");
    cr_assert_not_null(inner);
    json_t *c2 = json_array_get(json_object_get(inner, "compare"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(c2, "target")), "CREATE");
    cr_assert_str_eq(json_string_value(json_object_get(c2, "result")), "EQUAL");
    cr_assert_str_eq(json_string_value(json_object_get(c2, "create_revision")), "0");
    cr_assert_eq(json_array_size(json_object_get(inner, "success")), 2);
    json_t *f = json_object_get(inner, "failure");
    cr_assert_eq(json_array_size(f), 2);
    cr_assert_str_eq(b64dec(jstr(json_array_get(f, 0), "request_range.key")),
                     "/m/services/db/epoch");
    cr_assert_str_eq(b64dec(jstr(json_array_get(f, 1), "request_range.key")),
                     "/m/services/db/primary");
    json_decref(doc);
    t.epoch = -1;
    cr_assert_null(mrd__etcd_txn_body("/m", &t, "x"));
}

/* Answers captured from etcd 3.4.23. */
static const char *txn_ok_outer =
    "{\"header\":{\"revision\":\"3\"},\"succeeded\":true,\"responses\":[{\"response_put\":{"
    "\"header\":{\"revision\":\"3\"}}},{\"response_put\":{\"header\":{\"revision\":\"3\"}}}]}";
static const char *txn_ok_first =
    "{\"header\":{\"revision\":\"2\"},\"responses\":[{\"response_txn\":{\"header\":{},"
    "\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{\"revision\":\"2\"}}},{"
    "\"response_put\":{\"header\":{\"revision\":\"2\"}}}]}}]}";

/* A refused txn whose stored values are epoch and primary JSON. */
static char *txn_refused(const char *epoch, const char *primary)
{
    char e64[128], p64[1024];
    mrd__b64_encode(epoch, strlen(epoch), e64, sizeof(e64));
    mrd__b64_encode(primary, strlen(primary), p64, sizeof(p64));
    json_t *doc = json_pack("{s{ss}s[{s{s{}s[{s{s[{ssss}]ss}}{s{s[{ssss}]ss}}]}}]}", "header",
                            "revision", "2", "responses", "response_txn", "header", "responses",
                            "response_range", "kvs", "key", "L20vc2VydmljZXMvZGIvZXBvY2g=", "value",
                            e64, "count", "1", "response_range", "kvs", "key",
                            "L20vc2VydmljZXMvZGIvcHJpbWFyeQ==", "value", p64, "count", "1");
    cr_assert_not_null(doc);
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

Test(etcd, txn_parse_success_both_branches)
{
    mrd_cutover_observed obs;
    char err[128];
    cr_assert_eq(mrd__etcd_txn_parse(txn_ok_outer, strlen(txn_ok_outer), &obs, err, sizeof(err)),
                 1);
    cr_assert_eq(mrd__etcd_txn_parse(txn_ok_first, strlen(txn_ok_first), &obs, err, sizeof(err)),
                 1);
}

Test(etcd, txn_parse_refused_gives_stored_values)
{
    mrd_cutover_observed obs;
    char err[128];
    char *body = txn_refused("00000000000000000005",
                             "{\"changed_at\":\"T\",\"endpoint\":\"10.0.0.1:5432\",\"epoch\":5,"
                             "\"primary_region\":\"eu\"}");
    cr_assert_eq(mrd__etcd_txn_parse(body, strlen(body), &obs, err, sizeof(err)), 0, "%s", err);
    free(body);
    cr_assert_eq(obs.ok, 1);
    cr_assert_eq(obs.epoch, 5);
    cr_assert_str_eq(obs.region, "eu");
    cr_assert_str_eq(obs.value, "10.0.0.1:5432");
    cr_assert(strstr(obs.detail, "changed_at=T"));
}

Test(etcd, txn_parse_refuses_malformed)
{
    mrd_cutover_observed obs;
    char err[128];
    char *body = txn_refused("5", "{\"epoch\":5,\"primary_region\":\"eu\"}");
    cr_assert_eq(mrd__etcd_txn_parse(body, strlen(body), &obs, err, sizeof(err)), MRD_EPARSE);
    cr_assert(strstr(err, "20 digits"));
    free(body);
    body = txn_refused("00000000000000000005", "not json");
    cr_assert_eq(mrd__etcd_txn_parse(body, strlen(body), &obs, err, sizeof(err)), MRD_EPARSE);
    free(body);
    body = txn_refused("00000000000000000005", "{\"epoch\":4,\"primary_region\":\"eu\"}");
    cr_assert_eq(mrd__etcd_txn_parse(body, strlen(body), &obs, err, sizeof(err)), MRD_EPARSE);
    cr_assert(strstr(err, "disagree"));
    free(body);
    const char *bad[] = {"", "[]", "{\"header\":{}}", "{\"responses\":[{\"response_txn\":{}}]}",
                         "{\"responses\":[{\"response_txn\":{\"responses\":[{}, {}]}}]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(mrd__etcd_txn_parse(bad[i], strlen(bad[i]), &obs, err, sizeof(err)),
                     MRD_EPARSE, "%s", bad[i]);
}

Test(etcd, read_body_and_parse)
{
    char *body = mrd__etcd_read_body("/m", "db");
    json_t *doc = json_loads(body, 0, NULL);
    free(body);
    cr_assert_null(json_object_get(doc, "compare"));
    json_t *succ = json_object_get(doc, "success");
    cr_assert_eq(json_array_size(succ), 2);
    cr_assert_str_eq(b64dec(jstr(json_array_get(succ, 0), "request_range.key")),
                     "/m/services/db/epoch");
    json_decref(doc);

    mrd_cutover_observed obs;
    char err[128];
    const char *absent =
        "{\"header\":{},\"succeeded\":true,\"responses\":[{\"response_range\":{\"header\":{}}},"
        "{\"response_range\":{\"header\":{}}}]}";
    cr_assert_eq(mrd__etcd_read_parse(absent, strlen(absent), &obs, err, sizeof(err)), 0);
    cr_assert_eq(obs.ok, 0);
    cr_assert_eq(obs.epoch, -1);
    char *refused = txn_refused("00000000000000000010",
                                "{\"epoch\":10,\"primary_region\":\"us\",\"endpoint\":\"e\"}");
    /* The read answer has the same ranges at the top level. */
    json_t *r = json_loads(refused, 0, NULL);
    free(refused);
    json_t *inner =
        json_object_get(json_array_get(json_object_get(r, "responses"), 0), "response_txn");
    json_object_set_new(inner, "succeeded", json_true());
    char *present = json_dumps(inner, JSON_COMPACT);
    json_decref(r);
    cr_assert_eq(mrd__etcd_read_parse(present, strlen(present), &obs, err, sizeof(err)), 0, "%s",
                 err);
    free(present);
    cr_assert_eq(obs.ok, 1);
    cr_assert_eq(obs.epoch, 10);
    cr_assert_str_eq(obs.region, "us");
    cr_assert_str_eq(obs.value, "e");
}

Test(etcd, error_message)
{
    char m[64];
    const char *e = "{\"error\":\"etcdserver: duplicate key given in txn request\",\"code\":3,"
                    "\"message\":\"etcdserver: duplicate key given in txn request\"}";
    mrd__etcd_error_message(e, strlen(e), m, sizeof(m));
    cr_assert_str_eq(m, "etcdserver: duplicate key given in txn request");
    mrd__etcd_error_message("oops", 4, m, sizeof(m));
    cr_assert_str_eq(m, "");
}

/* ---------------- webhook ---------------- */

Test(webhook, body)
{
    mrd_cutover_target t = target("db", 7, "us");
    char *b = mrd__webhook_body(&t);
    cr_assert_str_eq(b, "{\"service\":\"db\",\"epoch\":7,\"old_region\":\"eu\",\"new_region\":"
                        "\"us\",\"endpoint\":\"10.0.0.2:5432\",\"operation_id\":\"op-7\"}");
    free(b);
    t.old_region = NULL;
    t.operation_id = "";
    b = mrd__webhook_body(&t);
    json_t *doc = json_loads(b, 0, NULL);
    free(b);
    cr_assert(json_is_null(json_object_get(doc, "old_region")));
    cr_assert(json_is_null(json_object_get(doc, "operation_id")));
    json_decref(doc);
}

Test(webhook, retryable_statuses)
{
    int yes[] = {0, 408, 429, 500, 502, 503, 599};
    int no[] = {200, 204, 301, 400, 401, 403, 404, 409, 422, 600};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        cr_assert(mrd__webhook_retryable(yes[i]), "%d", yes[i]);
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        cr_assert_not(mrd__webhook_retryable(no[i]), "%d", no[i]);
}

/* ---------------- config checks ---------------- */

static int check(const char *text, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *cfg = json_loads(text, JSON_DECODE_ANY, &jerr);
    cr_assert_not_null(cfg, "%s: %s", text, jerr.text);
    int rc = mrd_cutover_config_check(cfg, err, errlen);
    json_decref(cfg);
    return rc;
}

#define PDNS_OK                                                                                    \
    "\"driver\": \"pdns\", \"api_url\": \"http://127.0.0.1:8081\", \"api_key\": \"k\", "           \
    "\"zone\": \"example.test.\", \"ttl\": 5, \"required\": true"

Test(config, valid_examples)
{
    char err[200] = "";
    cr_assert_eq(check("{" PDNS_OK ", \"name\": \"db.example.test.\", \"type\": \"A\", "
                       "\"values\": {\"eu\": \"127.0.0.11\", \"us\": \"127.0.0.12\"}}",
                       err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(check("{" PDNS_OK ", \"name\": \"db.example.test.\", \"type\": \"CNAME\", "
                       "\"values\": {\"eu\": \"db-eu.example.test.\"}}",
                       err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(check("{\"driver\": \"etcd\", \"endpoints\": [\"http://127.0.0.1:2379\"], "
                       "\"prefix\": \"/meridian\", \"required\": true}",
                       err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(check("[{\"url\": \"http://127.0.0.1:9/hook\", \"secret\": \"s\", "
                       "\"timeout_ms\": 2000, \"max_attempts\": 5}]",
                       err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(check("{\"driver\": \"noop\"}", err, sizeof(err)), 0, "%s", err);
}

Test(config, errors_name_the_key)
{
    struct {
        const char *cfg, *expect;
    } cases[] = {
        {"{\"driver\": \"bind\"}", "driver: must be one of: noop, pdns, etcd"},
        {"{}", "driver: missing required key"},
        {"{" PDNS_OK ", \"name\": \"db.example.test.\", \"type\": \"A\", \"tll\": 5}",
         "dns.tll: unknown key"},
        {"{" PDNS_OK ", \"name\": \"db.other.test.\", \"type\": \"A\"}",
         "dns.name: must be inside dns.zone"},
        {"{" PDNS_OK ", \"name\": \"db.example.test\", \"type\": \"A\"}",
         "dns.name: must be a domain name with the trailing dot"},
        {"{" PDNS_OK ", \"name\": \"db.example.test.\", \"type\": \"MX\"}",
         "dns.type: must be one of: A, AAAA, CNAME"},
        {"{" PDNS_OK ", \"name\": \"db.example.test.\", \"type\": \"A\", \"values\": "
         "{\"eu\": \"::1\"}}",
         "dns.values.eu: must be a valid A value"},
        {"{" PDNS_OK ", \"name\": \"db.example.test.\", \"type\": \"A\", \"ttl\": 0}",
         "dns.ttl: must be an integer between 1 and 86400"},
        {"{\"driver\": \"pdns\", \"api_url\": \"ftp://x\", \"api_key\": \"k\", \"zone\": \"t.\", "
         "\"name\": \"t.\", \"type\": \"A\", \"ttl\": 5}",
         "dns.api_url: must be an http"},
        {"{" PDNS_OK ", \"name\": \"db.example.test.\", \"type\": \"A\", \"values\": []}",
         "dns.values: must be an object"},
        {"{\"driver\": \"etcd\", \"endpoints\": [\"http://a\"], \"prefix\": \"/m\", "
         "\"timeout_ms\": 5}",
         "registry.timeout_ms: must be an integer between 100 and 600000"},
        {"{\"driver\": \"noop\", \"x\": 1}", "noop.x: unknown key"},
        {"3", "must be an object"},
        {"{\"driver\": \"etcd\", \"endpoints\": [], \"prefix\": \"/m\"}",
         "registry.endpoints: must be an array of 1 to 16 elements"},
        {"{\"driver\": \"etcd\", \"endpoints\": [\"http://a\", 3], \"prefix\": \"/m\"}",
         "registry.endpoints[1]: must be a string"},
        {"{\"driver\": \"etcd\", \"endpoints\": [\"http://a\", \"a:2379\"], \"prefix\": \"/m\"}",
         "registry.endpoints[1]: must be an http"},
        {"{\"driver\": \"etcd\", \"endpoints\": [\"http://a\"], \"prefix\": \"/m/\"}",
         "registry.prefix: must start with '/'"},
        {"{\"driver\": \"etcd\", \"endpoints\": [\"http://a\"]}",
         "registry.prefix: missing required key"},
        {"[]", "webhooks: must be an array of 1 to 16 objects"},
        {"[{\"url\": \"http://a\"}]", "webhooks[0].secret: missing required key"},
        {"[{\"url\": \"http://a\", \"secret\": \"s\", \"max_attempts\": 0}]",
         "webhooks[0].max_attempts: must be an integer between 1 and 20"},
        {"[{\"url\": \"http://a\", \"secret\": \"s\", \"backoff_base_ms\": 500, "
         "\"backoff_max_ms\": 100}]",
         "webhooks[0].backoff_max_ms: must be >= backoff_base_ms"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[200] = "";
        cr_assert_eq(check(cases[i].cfg, err, sizeof(err)), MRD_ECONFIG, "%s", cases[i].cfg);
        cr_assert(strstr(err, cases[i].expect), "case %zu: got \"%s\", want \"%s\"", i, err,
                  cases[i].expect);
    }
}

/* ---------------- noop driver on a loop ---------------- */

typedef struct {
    int calls, status, in_apply;
    int64_t epoch;
    char region[64], message[128];
    int had_obs, ok;
} seen;

static void record(const mrd_cutover_result *r, void *data)
{
    seen *s = data;
    cr_assert_eq(s->in_apply, 0, "callback ran from inside apply/read");
    s->calls++;
    s->status = r->status;
    snprintf(s->message, sizeof(s->message), "%s", r->message);
    s->had_obs = r->observed != NULL;
    if (r->observed) {
        s->epoch = r->observed->epoch;
        s->ok = r->observed->ok;
        snprintf(s->region, sizeof(s->region), "%s", r->observed->region);
    }
}

static void run_bounded(uv_loop_t *loop)
{
    for (int i = 0; i < 100 && uv_run(loop, UV_RUN_NOWAIT); i++)
        ;
}

Test(noop, apply_read_stale_and_close)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = NULL;
    char err[128];
    cr_assert_eq(mrd_cutover_noop_init(&d, &loop, NULL, err, sizeof(err)), 0);
    cr_assert_str_eq(d->name, "noop");

    seen s = {0};
    mrd_cutover_target t = target("db", 5, "us");
    s.in_apply = 1;
    cr_assert_eq(mrd_cutover_apply(d, &t, record, &s), 0);
    s.in_apply = 0;
    cr_assert_eq(s.calls, 0);
    run_bounded(&loop);
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.status, 0);

    seen r = {0};
    cr_assert_eq(mrd_cutover_read(d, "db", record, &r), 0);
    run_bounded(&loop);
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.ok, 1);
    cr_assert_eq(r.epoch, 5);
    cr_assert_str_eq(r.region, "us");

    seen stale = {0};
    mrd_cutover_target old = target("db", 4, "eu");
    cr_assert_eq(mrd_cutover_apply(d, &old, record, &stale), 0);
    run_bounded(&loop);
    cr_assert_eq(stale.status, MRD_ESTALE);
    cr_assert_eq(stale.epoch, 5);
    cr_assert_str_eq(stale.region, "us");

    seen same = {0};
    mrd_cutover_target other = target("db", 5, "eu");
    cr_assert_eq(mrd_cutover_apply(d, &other, record, &same), 0);
    run_bounded(&loop);
    cr_assert_eq(same.status, MRD_ESTALE);
    cr_assert_str_eq(same.region, "us");
    seen again = {0};
    cr_assert_eq(mrd_cutover_apply(d, &t, record, &again), 0);
    run_bounded(&loop);
    cr_assert_eq(again.status, 0);

    seen none = {0};
    cr_assert_eq(mrd_cutover_read(d, "other", record, &none), 0);
    run_bounded(&loop);
    cr_assert_eq(none.status, 0);
    cr_assert_eq(none.ok, 0);

    mrd_cutover_target bad = target("db", 6, "u s");
    cr_assert_eq(mrd_cutover_apply(d, &bad, record, &s), MRD_EINVAL);

    /* close completes what is pending with MRD_ECLOSED and refuses more */
    seen pending = {0};
    cr_assert_eq(mrd_cutover_read(d, "db", record, &pending), 0);
    mrd_cutover_close(d);
    cr_assert_eq(pending.calls, 1);
    cr_assert_eq(pending.status, MRD_ECLOSED);
    run_bounded(&loop);
    cr_assert_eq(uv_loop_close(&loop), 0);
}

Test(factory, dispatches_and_refuses)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = NULL;
    char err[128];
    json_t *cfg = json_pack("{ss}", "driver", "noop");
    cr_assert_eq(mrd_cutover_driver_init(&d, &loop, cfg, err, sizeof(err)), 0);
    cr_assert_str_eq(d->name, "noop");
    mrd_cutover_close(d);
    json_decref(cfg);
    cfg = json_pack("{ss}", "driver", "consul");
    d = NULL;
    cr_assert_eq(mrd_cutover_driver_init(&d, &loop, cfg, err, sizeof(err)), MRD_ECONFIG);
    cr_assert_null(d);
    json_decref(cfg);
    run_bounded(&loop);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
