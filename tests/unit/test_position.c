/* Unit tests of common/position.c: LSN text round trips, edge values,
 * malformed inputs refused without touching the output, lag that never
 * underflows, and positions read from JSON integers and strings. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/position.h"

static void expect_parse(const char *text, uint64_t want)
{
    uint64_t got = 12345;
    cr_assert_eq(mrd_pos_parse(text, &got), 0, "parse %s", text);
    cr_assert_eq(got, want, "parse %s: got %llx", text, (unsigned long long)got);
}

static void expect_format(uint64_t pos, const char *want)
{
    char buf[MRD_POS_STRLEN];
    int n = mrd_pos_format(pos, buf, sizeof(buf));
    cr_assert_eq(n, (int)strlen(want));
    cr_assert_str_eq(buf, want);
}

Test(position, parse_and_format_known_values)
{
    expect_parse("16/B374D848", 0x16B374D848ULL);
    expect_parse("16/b374d848", 0x16B374D848ULL);
    expect_parse("0/0", 0);
    expect_parse("00000000/00000000", 0);
    expect_parse("0/3000060", 0x3000060ULL);
    expect_parse("FFFFFFFF/FFFFFFFF", UINT64_MAX);
    expect_parse("1/0", 1ULL << 32);
    expect_parse("0/FFFFFFFF", 0xFFFFFFFFULL);
    expect_parse("7FFFFFFF/FFFFFFFF", (uint64_t)INT64_MAX);
    expect_format(0x16B374D848ULL, "16/B374D848");
    expect_format(0, "0/0");
    expect_format(UINT64_MAX, "FFFFFFFF/FFFFFFFF");
    expect_format(1ULL << 32, "1/0");
    expect_format(0xFFFFFFFFULL, "0/FFFFFFFF");
    expect_format(0x3000060ULL, "0/3000060");
}

Test(position, round_trips)
{
    /* Deterministic xorshift over the whole range, plus every power of two
     * and its neighbours. */
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < 20000; i++) {
        uint64_t v;
        if (i < 64 * 3)
            v = (1ULL << (i / 3)) + (uint64_t)(i % 3) - 1;
        else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v = i % 2 ? x : x >> (i % 64);
        }
        char buf[MRD_POS_STRLEN];
        uint64_t back = ~v;
        cr_assert_gt(mrd_pos_format(v, buf, sizeof(buf)), 0);
        cr_assert_eq(mrd_pos_parse(buf, &back), 0, "%s", buf);
        cr_assert_eq(back, v, "%s", buf);
    }
}

Test(position, malformed_inputs_refused_and_output_untouched)
{
    const char *bad[] = {
        "",       "/",    "1/",    "/1",   "1",     "16B374D848",  "1//2",        "1/2/3",
        " 1/2",   "1/2 ", "1 /2",  "1/ 2", "1/2\n", "123456789/0", "0/123456789", "000000000/0",
        "G/0",    "0/g",  "0x1/0", "-1/0", "+1/0",  "1/-0",        "1.5/0",       "１/0",
        "0/0\x01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t out = 777;
        cr_assert_eq(mrd_pos_parse(bad[i], &out), MRD_EPARSE, "accepted \"%s\"", bad[i]);
        cr_assert_eq(out, 777, "\"%s\" touched the output", bad[i]);
    }
    uint64_t out = 777;
    cr_assert_eq(mrd_pos_parse(NULL, &out), MRD_EPARSE);
    cr_assert_eq(out, 777);
}

Test(position, format_needs_room)
{
    char buf[MRD_POS_STRLEN];
    cr_assert_eq(mrd_pos_format(UINT64_MAX, buf, 17), MRD_ETOOBIG);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(mrd_pos_format(UINT64_MAX, buf, 18), 17);
    cr_assert_eq(mrd_pos_format(0, buf, 4), 3);
    cr_assert_str_eq(buf, "0/0");
    cr_assert_eq(mrd_pos_format(0, buf, 3), MRD_ETOOBIG);
    cr_assert_eq(mrd_pos_format(0, buf, 0), MRD_ETOOBIG);
    cr_assert_eq(mrd_pos_format(0, NULL, 10), MRD_ETOOBIG);
}

Test(position, lag_never_underflows)
{
    cr_assert_eq(mrd_pos_lag_bytes(100, 40), 60);
    cr_assert_eq(mrd_pos_lag_bytes(100, 100), 0);
    cr_assert_eq(mrd_pos_lag_bytes(40, 100), 0);
    cr_assert_eq(mrd_pos_lag_bytes(0, UINT64_MAX), 0);
    cr_assert_eq(mrd_pos_lag_bytes(UINT64_MAX, 0), UINT64_MAX);
    cr_assert_eq(mrd_pos_lag_bytes(UINT64_MAX, UINT64_MAX - 1), 1);
    cr_assert_eq(mrd_pos_lag_bytes(0x16B374D848ULL, 0x16B3000000ULL), 0x74D848ULL);
    /* Across the 32-bit boundary of the text form: 1/0 - 0/FFFFFFFF. */
    uint64_t a, b;
    cr_assert_eq(mrd_pos_parse("1/0", &a), 0);
    cr_assert_eq(mrd_pos_parse("0/FFFFFFFF", &b), 0);
    cr_assert_eq(mrd_pos_lag_bytes(a, b), 1);
    cr_assert_eq(mrd_pos_lag_bytes(b, a), 0);
}

Test(position, from_json)
{
    uint64_t out = 0;
    json_t *v = json_integer(0x16B374D848LL);
    cr_assert_eq(mrd_pos_from_json(v, &out), 0);
    cr_assert_eq(out, 0x16B374D848ULL);
    json_decref(v);

    v = json_integer(INT64_MAX);
    cr_assert_eq(mrd_pos_from_json(v, &out), 0);
    cr_assert_eq(out, (uint64_t)INT64_MAX);
    json_decref(v);

    v = json_string("FFFFFFFF/FFFFFFFF");
    cr_assert_eq(mrd_pos_from_json(v, &out), 0);
    cr_assert_eq(out, UINT64_MAX);
    json_decref(v);

    out = 5;
    json_t *bad[] = {json_integer(-1),
                     json_integer(INT64_MIN),
                     json_real(1.0),
                     json_string("16/B374D848 "),
                     json_stringn("1/2\0junk", 8),
                     json_string("18446744073709551615"),
                     json_true(),
                     json_null(),
                     json_array()};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(mrd_pos_from_json(bad[i], &out), MRD_EPARSE, "item %zu", i);
        cr_assert_eq(out, 5, "item %zu touched the output", i);
        json_decref(bad[i]);
    }
    cr_assert_eq(mrd_pos_from_json(NULL, &out), MRD_EPARSE);

    /* A position above INT64_MAX does not parse as a JSON integer at all. */
    json_error_t je;
    cr_assert_null(json_loads("[18446744073709551615]", 0, &je));
}
