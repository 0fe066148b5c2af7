/* Unit tests: logfmt formatting and escaping; every error code has a name. */
#include <criterion/criterion.h>
#include <string.h>

#include "meridian/error.h"
#include "meridian/log.h"

Test(log, plain_values_unquoted)
{
    char buf[256];
    mrd_kv kvs[] = {MRD_S("holder", "eu-1"), MRD_I("term", -4), MRD_U("pos", 42)};
    mrd_log_format(buf, sizeof(buf), "T", MRD_LOG_INFO, "lease acquired", kvs, 3);
    cr_assert_str_eq(buf, "ts=T level=info msg=\"lease acquired\" holder=eu-1 term=-4 pos=42");
}

Test(log, escapes_quotes_newlines_equals_and_empty)
{
    char buf[256];
    mrd_kv kvs[] = {MRD_S("a", "x=y"), MRD_S("b", "say \"hi\"\n"), MRD_S("c", ""),
                    MRD_S("d", "\x01")};
    mrd_log_format(buf, sizeof(buf), "T", MRD_LOG_ERROR, "m", kvs, 4);
    cr_assert_str_eq(buf, "ts=T level=error msg=m a=\"x=y\" b=\"say \\\"hi\\\"\\n\" c=\"\" "
                          "d=\"\\x01\"");
}

Test(log, truncates_without_overflow)
{
    char buf[16];
    mrd_kv kvs[] = {MRD_S("key", "a very long value that does not fit")};
    size_t need = mrd_log_format(buf, sizeof(buf), "T", MRD_LOG_WARN, "m", kvs, 1);
    cr_assert_gt(need, sizeof(buf));
    cr_assert_eq(strlen(buf), sizeof(buf) - 1);
}

Test(log, level_parse)
{
    mrd_log_level l;
    cr_assert_eq(mrd_log_level_parse("warn", &l), 0);
    cr_assert_eq(l, MRD_LOG_WARN);
    cr_assert_eq(mrd_log_level_parse("loud", &l), MRD_EINVAL);
    cr_assert_eq(mrd_log_level_parse(NULL, &l), MRD_EINVAL);
}

Test(error, every_code_has_a_distinct_name_and_message)
{
    for (int e = MRD__ERR_FIRST + 1; e < MRD__ERR_LAST; e++) {
        cr_assert_str_neq(mrd_err_name(e), "unknown", "code %d", e);
        cr_assert_str_neq(mrd_strerror(e), "unknown error", "code %d", e);
        for (int f = e + 1; f < MRD__ERR_LAST; f++)
            cr_assert_str_neq(mrd_err_name(e), mrd_err_name(f));
    }
    cr_assert_str_eq(mrd_err_name(0), "ok");
    cr_assert_str_eq(mrd_err_name(12345), "unknown");
}
