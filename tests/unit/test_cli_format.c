/* Unit tests of meridianctl's pure parts: byte and duration humanising,
 * seconds and RPO from /recovery, long-poll slices, timestamps, sanitising of server text, table
 * alignment, the command line parser and the resolution of URLs and token (flags > env > config).
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "meridian/error.h"

static void expect_bytes(double v, const char *want)
{
    char buf[32];
    cr_assert_str_eq(mrd__cli_fmt_bytes(v, buf, sizeof(buf)), want, "bytes %.1f", v);
}

static void expect_ms(int64_t v, const char *want)
{
    char buf[32];
    cr_assert_str_eq(mrd__cli_fmt_ms(v, buf, sizeof(buf)), want, "ms %lld", (long long)v);
}

Test(cli_format, bytes)
{
    expect_bytes(0, "0 B");
    expect_bytes(1, "1 B");
    expect_bytes(1023, "1023 B");
    expect_bytes(1024, "1.0 KiB");
    expect_bytes(1536, "1.5 KiB");
    expect_bytes(12.3 * 1024 * 1024, "12.3 MiB");
    expect_bytes(1024.0 * 1024 - 1, "1.0 MiB"); /* never "1024.0 KiB" */
    expect_bytes(5.0 * 1024 * 1024 * 1024, "5.0 GiB");
    expect_bytes(2.0 * 1024 * 1024 * 1024 * 1024, "2.0 TiB");
    expect_bytes(18446744073709551615.0, "16.0 EiB");
    expect_bytes(-2048, "-2.0 KiB");
    char small[4];
    mrd__cli_fmt_bytes(123456789, small, sizeof(small));
    cr_assert_eq(strlen(small), 3, "cut to the buffer");
}

Test(cli_format, durations)
{
    expect_ms(0, "0 ms");
    expect_ms(999, "999 ms");
    expect_ms(1000, "1.00 s");
    expect_ms(1234, "1.23 s");
    expect_ms(9994, "9.99 s");
    expect_ms(9995, "10.0 s");
    expect_ms(59949, "59.9 s");
    expect_ms(59950, "1m00s");
    expect_ms(125000, "2m05s");
    expect_ms(3599499, "59m59s");
    expect_ms(3600000, "1h00m");
    expect_ms(3720000, "1h02m");
    expect_ms(86400000LL * 3 + 3600000LL * 4, "3d04h");
    expect_ms(-1500, "-1.50 s");
    expect_ms(INT64_MIN, "-106751991167d07h");
}

Test(cli_format, timestamps)
{
    int64_t us = 7;
    cr_assert_eq(mrd__cli_time_parse("1970-01-01T00:00:00+00:00", &us), 0);
    cr_assert_eq(us, 0);
    cr_assert_eq(mrd__cli_time_parse("2026-11-27T17:20:01.123456+00:00", &us), 0);
    int64_t base = us;
    cr_assert_eq(base, 1795800001123456LL);
    cr_assert_eq(mrd__cli_time_parse("2026-11-27T18:20:01.123456+01:00", &us), 0);
    cr_assert_eq(us, base, "offsets are applied");
    cr_assert_eq(mrd__cli_time_parse("2026-11-27 22:50:01.123456+0530", &us), 0);
    cr_assert_eq(us, base);
    cr_assert_eq(mrd__cli_time_parse("2026-11-27T17:20:01.1234569Z", &us), 0);
    cr_assert_eq(us, base, "beyond microseconds is cut");
    cr_assert_eq(mrd__cli_time_parse("2026-11-27T17:20:01.5-02", &us), 0);
    cr_assert_eq(us, 1795800001500000LL + 2 * 3600 * 1000000LL);
    cr_assert_eq(mrd__cli_time_parse("2024-02-29T00:00:00Z", &us), 0);
    const char *bad[] = {"",
                         "2026-11-27",
                         "2026-11-27T17:20:01",
                         "2026-13-01T00:00:00Z",
                         "2026-11-32T00:00:00Z",
                         "2026-11-27T24:00:00Z",
                         "2026-11-27T17:20:01.Z",
                         "2026-11-27T17:20:01Zjunk",
                         "2026-11-27T17:20:01+1",
                         "x026-11-27T17:20:01Z",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        us = 42;
        cr_assert_eq(mrd__cli_time_parse(bad[i], &us), MRD_EPARSE, "%s", bad[i]);
        cr_assert_eq(us, 42, "untouched on error");
    }
    cr_assert_eq(mrd__cli_time_parse(NULL, &us), MRD_EPARSE);
    char buf[32];
    cr_assert_str_eq(mrd__cli_fmt_time("2026-11-27T17:20:01.123+00:00", buf, sizeof(buf)),
                     "2026-11-27 17:20:01");
    cr_assert_str_eq(mrd__cli_fmt_time(NULL, buf, sizeof(buf)), "-");
}

Test(cli_format, sanitize)
{
    char buf[64];
    cr_assert_str_eq(mrd__cli_sanitize("a\033[31mred\nb\tc\x7f", buf, sizeof(buf)),
                     "a?[31mred b c?");
    cr_assert_str_eq(mrd__cli_sanitize("caf\xc3\xa9 \xc2\x9b", buf, sizeof(buf)), "caf\xc3\xa9 ?");
    cr_assert_str_eq(mrd__cli_sanitize(NULL, buf, sizeof(buf)), "");
    char small[5];
    /* "abc" + the two bytes of é do not fit in 4: the half character is dropped */
    cr_assert_str_eq(mrd__cli_sanitize("abc\xc3\xa9", small, sizeof(small)), "abc");
    cr_assert_eq(mrd__cli_text_width("caf\xc3\xa9"), 4);
}

Test(cli_format, table_alignment)
{
    static const char *const hdr[] = {"NAME", "LAG", "STATE"};
    mrd__cli_table *t = mrd__cli_table_new(3, hdr);
    cr_assert_not_null(t);
    mrd__cli_table_align_right(t, 1);
    mrd__cli_table_row(t);
    mrd__cli_table_cell(t, MRD__CLI_RED, "orders-eu-1");
    mrd__cli_table_cell(t, 0, "0 B");
    mrd__cli_table_cell(t, 0, "ok");
    mrd__cli_table_row(t);
    mrd__cli_table_cell(t, 0, "x");
    mrd__cli_table_cellf(t, 0, "%.1f MiB", 12.3);
    mrd__cli_table_cell(t, 0, NULL);
    mrd__cli_table_row(t);
    mrd__cli_table_cell(t, 0, "caf\xc3\xa9");
    mrd__cli_table_cell(t, 0, "1 B");
    mrd__cli_table_cell(t, 0, ""); /* empty last cell: no trailing spaces */
    mrd__cli_table_cell(t, 0, "ignored: beyond the columns");
    char *s = mrd__cli_table_render(t, "  ", 0);
    cr_assert_not_null(s);
    cr_assert_str_eq(s, "  NAME              LAG  STATE\n"
                        "  orders-eu-1       0 B  ok\n"
                        "  x            12.3 MiB  -\n"
                        "  caf\xc3\xa9              1 B\n");
    free(s);
    s = mrd__cli_table_render(t, "", 1);
    cr_assert(strstr(s, "\033[31morders-eu-1\033[0m") != NULL, "colour when asked: %s", s);
    cr_assert(strstr(s, "\033[1mNAME\033[0m") != NULL);
    /* colour codes do not count as width: the next column starts where it would */
    cr_assert(strstr(s, "orders-eu-1\033[0m       0 B") != NULL, "%s", s);
    free(s);
    mrd__cli_table_free(t);
    cr_assert_null(mrd__cli_table_new(0, NULL));
    cr_assert_null(mrd__cli_table_new(17, NULL));
}

Test(cli_format, table_sanitizes_cells)
{
    static const char *const hdr[] = {"A", "B"};
    mrd__cli_table *t = mrd__cli_table_new(2, hdr);
    mrd__cli_table_row(t);
    mrd__cli_table_cell(t, 0, "evil\033]0;title\007");
    mrd__cli_table_cell(t, 0, "two\nlines");
    char *s = mrd__cli_table_render(t, "", 0);
    cr_assert_str_eq(s, "A               B\nevil?]0;title?  two lines\n");
    free(s);
    mrd__cli_table_free(t);
}

/* ---- arguments --------------------------------------------------------- */

static int parse(mrd__cli_args *a, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "meridianctl";
    va_list ap;
    va_start(ap, errlen);
    for (char *s; argc < 31 && (s = va_arg(ap, char *)) != NULL;)
        argv[argc++] = s;
    va_end(ap);
    argv[argc] = NULL;
    return mrd__cli_args_parse(argc, argv, a, err, errlen);
}

#define P(...) parse(&a, err, sizeof(err), __VA_ARGS__, NULL)

Test(cli_args, commands_and_options)
{
    mrd__cli_args a;
    char err[256];
    cr_assert_eq(P("status"), 0, "%s", err);
    cr_assert_str_eq(a.command, "status");
    cr_assert_eq(a.npos, 0);
    cr_assert_eq(a.timeout_s, 120.0);
    cr_assert_eq(a.after, -1);

    cr_assert_eq(P("--json", "--url", "http://a:1", "switchover", "orders", "--to=us", "--wait",
                   "--expect-epoch", "7", "--expect-primary", "eu", "--reason", "patching",
                   "--timeout", "2.5", "--url=http://b:2,http://c:3", "--token", "tk"),
                 0, "%s", err);
    cr_assert_str_eq(a.command, "switchover");
    cr_assert_str_eq(a.pos[0], "orders");
    cr_assert_str_eq(a.to, "us");
    cr_assert(a.wait && a.json);
    cr_assert_eq(a.expect_epoch, 7);
    cr_assert_str_eq(a.expect_primary, "eu");
    cr_assert_str_eq(a.reason, "patching");
    cr_assert_eq(a.timeout_s, 2.5);
    cr_assert_eq(a.nurls, 2);
    cr_assert_str_eq(a.urls[1], "http://b:2,http://c:3");
    cr_assert_str_eq(a.token, "tk");

    cr_assert_eq(P("events", "--follow", "--service", "orders", "--after", "0", "--max-seconds",
                   "3", "--limit", "0"),
                 0, "%s", err);
    cr_assert(a.follow);
    cr_assert_eq(a.after, 0);
    cr_assert_eq(a.max_seconds, 3.0);
    cr_assert_eq(a.limit, 0);

    cr_assert_eq(P("maintenance", "orders", "off"), 0, "%s", err);
    cr_assert_eq(P("failover", "orders", "--force"), 0, "%s", err);
    cr_assert(a.force);
    cr_assert_eq(P("plan", "orders", "--to", "us", "--force"), 0, "%s", err);
    cr_assert_eq(P("operations", "42"), 0, "%s", err);
    cr_assert_eq(P("operations", "--service", "orders"), 0, "%s", err);
    cr_assert_eq(P("--", "services", "-odd-name"), 0, "%s", err);
    cr_assert_str_eq(a.pos[0], "-odd-name");
}

Test(cli_args, usage_errors)
{
    mrd__cli_args a;
    char err[256];
    struct {
        const char *argv[8];
        const char *msg;
    } cases[] = {
        {{NULL}, "no command given"},
        {{"frobnicate"}, "unknown command \"frobnicate\""},
        {{"status", "extra"}, "status: too many arguments"},
        {{"switchover"}, "switchover: missing argument"},
        {{"switchover", "orders"}, "switchover: --to REGION is required"},
        {{"status", "--wait"}, "--wait is not an option of status"},
        {{"plan", "orders", "--wait"}, "--wait is not an option of plan"},
        {{"switchover", "orders", "--to", "us", "--force"}, "--force is not an option of"},
        {{"maintenance", "orders", "maybe"}, "maintenance: expected on or off"},
        {{"status", "--bogus"}, "unknown option \"--bogus\""},
        {{"status", "-x"}, "unknown option \"-x\""},
        {{"status", "--url"}, "--url needs a value"},
        {{"status", "--json=yes"}, "--json takes no value"},
        {{"events", "--after", "-1"}, "--after: must be an event id"},
        {{"switchover", "o", "--to", "us", "--expect-epoch", "0"}, "--expect-epoch: must be"},
        {{"switchover", "o", "--to", "us", "--timeout", "0"}, "--timeout: must be"},
        {{"switchover", "o", "--to", "us", "--timeout", "nan"}, "--timeout: must be"},
        {{"events", "--max-seconds", "x"}, "--max-seconds: must be"},
        {{"operations", "4x"}, "operations: the id must be a positive integer"},
        {{"services", ""}, "services: empty argument"},
        {{"help", "nope"}, "unknown command \"nope\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[10] = {"meridianctl"};
        int argc = 1;
        for (int k = 0; cases[i].argv[k]; k++)
            argv[argc++] = (char *)cases[i].argv[k];
        cr_assert_eq(mrd__cli_args_parse(argc, argv, &a, err, sizeof(err)), MRD_EINVAL,
                     "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].msg) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err,
                  cases[i].msg);
    }
}

Test(cli_args, help)
{
    mrd__cli_args a;
    char err[256];
    cr_assert_eq(P("--help"), 0);
    cr_assert(a.help);
    cr_assert_eq(P("help", "plan"), 0);
    cr_assert(a.help);
    cr_assert_eq(P("switchover", "-h"), 0);
    cr_assert(a.help);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert_eq(mrd__cli_usage(f, NULL), 0);
    cr_assert_eq(mrd__cli_usage(f, "switchover"), 0);
    cr_assert_eq(mrd__cli_usage(f, "nope"), MRD_ENOTFOUND);
    fclose(f);
    cr_assert(strstr(text, "EXIT STATUS") && strstr(text, "MERIDIAN_URL"));
    cr_assert(strstr(text, "usage: meridianctl switchover SERVICE --to REGION"));
    /* every command has a line in the manual */
    const char *cmds[] = {"status",     "services",   "nodes",    "regions",     "events",
                          "switchover", "failover",   "plan",     "maintenance", "operations",
                          "version",    "checkpoint", "recovery", NULL};
    for (int i = 0; cmds[i]; i++) {
        char line[64];
        snprintf(line, sizeof(line), "\n  %s ", cmds[i]);
        cr_assert(strstr(text, line), "%s missing from the manual", cmds[i]);
        cr_assert(mrd__cli_command_known(cmds[i]));
    }
    free(text);
}

Test(cli_args, settings_precedence)
{
    mrd__cli_args a;
    char err[256];
    mrd__cli_settings s;
    json_t *cfg = json_pack("{s:[s,s], s:s}", "urls", "http://cfg1:1", "http://cfg2:2/", "token",
                            "cfg-token");

    cr_assert_eq(P("status"), 0);
    cr_assert_eq(mrd__cli_settings_resolve(&a, NULL, NULL, cfg, &s, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(s.nurls, 2);
    cr_assert_str_eq(s.urls[1], "http://cfg2:2", "trailing slash dropped");
    cr_assert_str_eq(s.token, "cfg-token");
    mrd__cli_settings_free(&s);

    cr_assert_eq(mrd__cli_settings_resolve(&a, " http://env1:1 , https://env2:2", "env-token", cfg,
                                           &s, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(s.nurls, 2);
    cr_assert_str_eq(s.urls[0], "http://env1:1");
    cr_assert_str_eq(s.urls[1], "https://env2:2");
    cr_assert_str_eq(s.token, "env-token");
    mrd__cli_settings_free(&s);

    cr_assert_eq(P("status", "--url", "http://flag:1,http://flag:2", "--url", "http://flag:3",
                   "--token", "flag-token"),
                 0);
    cr_assert_eq(
        mrd__cli_settings_resolve(&a, "http://env1:1", "env-token", cfg, &s, err, sizeof(err)), 0,
        "%s", err);
    cr_assert_eq(s.nurls, 3);
    cr_assert_str_eq(s.urls[2], "http://flag:3");
    cr_assert_str_eq(s.token, "flag-token");
    mrd__cli_settings_free(&s);

    /* the config file may give one string */
    json_t *cfg2 = json_pack("{s:s}", "urls", "http://one:1,http://two:2");
    cr_assert_eq(P("status"), 0);
    cr_assert_eq(mrd__cli_settings_resolve(&a, "", "", cfg2, &s, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(s.nurls, 2);
    cr_assert_null(s.token);
    mrd__cli_settings_free(&s);
    json_decref(cfg2);

    /* errors */
    cr_assert_eq(mrd__cli_settings_resolve(&a, NULL, NULL, NULL, &s, err, sizeof(err)), MRD_EINVAL);
    cr_assert(strstr(err, "no controller URL"));
    cr_assert_eq(mrd__cli_settings_resolve(&a, "ftp://x", NULL, NULL, &s, err, sizeof(err)),
                 MRD_EINVAL);
    cr_assert(strstr(err, "MERIDIAN_URL: \"ftp://x\" is not an http"), "%s", err);
    cr_assert_eq(s.nurls, 0);
    cr_assert_eq(mrd__cli_settings_resolve(&a, "http://x", "a\r\nb", NULL, &s, err, sizeof(err)),
                 MRD_EINVAL);
    json_t *bad = json_pack("{s:s, s:i}", "urls", "http://x", "tokn", 1);
    cr_assert_eq(mrd__cli_settings_resolve(&a, NULL, NULL, bad, &s, err, sizeof(err)), MRD_ECONFIG);
    cr_assert(strstr(err, "tokn: unknown key"), "%s", err);
    json_decref(bad);
    bad = json_pack("{s:[i]}", "urls", 1);
    cr_assert_eq(mrd__cli_settings_resolve(&a, NULL, NULL, bad, &s, err, sizeof(err)), MRD_ECONFIG);
    json_decref(bad);
    json_decref(cfg);
}

Test(cli_args, url_escape)
{
    char buf[32] = "/v1/services/";
    cr_assert_eq(mrd__cli_url_escape("a b/c?d&e", buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "/v1/services/a%20b%2Fc%3Fd%26e");
    char small[8] = "";
    cr_assert_eq(mrd__cli_url_escape("abcdefghij", small, sizeof(small)), MRD_ETOOBIG);
    cr_assert_eq(strlen(small), 7);
}

Test(cli_format, seconds_and_rpo)
{
    char buf[32];
    json_t *v = json_real(6.6);
    cr_assert_str_eq(mrd__cli_fmt_seconds(v, buf, sizeof(buf)), "6.60 s");
    json_decref(v);
    v = json_integer(125);
    cr_assert_str_eq(mrd__cli_fmt_seconds(v, buf, sizeof(buf)), "2m05s");
    json_decref(v);
    v = json_real(0.0004);
    cr_assert_str_eq(mrd__cli_fmt_seconds(v, buf, sizeof(buf)), "0 ms");
    json_decref(v);
    v = json_real(1e300); /* clamped, not undefined behaviour */
    cr_assert(mrd__cli_fmt_seconds(v, buf, sizeof(buf))[0] != '-');
    json_decref(v);
    cr_assert_str_eq(mrd__cli_fmt_seconds(json_null(), buf, sizeof(buf)), "-");
    cr_assert_str_eq(mrd__cli_fmt_seconds(NULL, buf, sizeof(buf)), "-");

    json_error_t e;
    json_t *doc = json_loads("{\"regions\": [{\"region\": \"eu\", \"rpo_seconds\": 0.25},"
                             " {\"region\": \"us\", \"rpo_seconds\": 61},"
                             " {\"region\": \"ap\", \"rpo_seconds\": null}, {\"rpo_seconds\": 3}]}",
                             0, &e);
    cr_assert_not_null(doc, "%s", e.text);
    cr_assert_str_eq(mrd__cli_fmt_rpo(doc, "eu", buf, sizeof(buf)), "250 ms");
    cr_assert_str_eq(mrd__cli_fmt_rpo(doc, "us", buf, sizeof(buf)), "1m01s");
    cr_assert_str_eq(mrd__cli_fmt_rpo(doc, "ap", buf, sizeof(buf)), "-");
    cr_assert_str_eq(mrd__cli_fmt_rpo(doc, "sa", buf, sizeof(buf)), "-");
    cr_assert_str_eq(mrd__cli_fmt_rpo(doc, NULL, buf, sizeof(buf)), "-");
    cr_assert_str_eq(mrd__cli_fmt_rpo(NULL, "eu", buf, sizeof(buf)), "-");
    json_decref(doc);
}

Test(cli_format, wait_slices)
{
    cr_assert_eq(mrd__cli_wait_slice_ms(-5), 0);
    cr_assert_eq(mrd__cli_wait_slice_ms(0), 0);
    cr_assert_eq(mrd__cli_wait_slice_ms(2999), 2999);
    cr_assert_eq(mrd__cli_wait_slice_ms(60000), 60000);
    cr_assert_eq(mrd__cli_wait_slice_ms(120000), 60000);
}

Test(cli_args, checkpoint_commands)
{
    mrd__cli_args a;
    char err[256];
    cr_assert_eq(P("checkpoint", "create", "orders"), 0, "%s", err);
    cr_assert_null(a.position);
    cr_assert_eq(a.wait_ms, -1);
    cr_assert_eq(P("checkpoint", "create", "orders", "--position", "0/3000148", "--wait",
                   "--regions", "eu,us", "--timeout", "3"),
                 0, "%s", err);
    cr_assert_str_eq(a.pos[0], "create");
    cr_assert_str_eq(a.pos[1], "orders");
    cr_assert_str_eq(a.position, "0/3000148");
    cr_assert_str_eq(a.regions, "eu,us");
    cr_assert(a.wait);
    cr_assert_eq(a.timeout_s, 3.0);
    cr_assert_eq(P("checkpoint", "show", "orders", "42", "--wait-ms=60000", "--regions", "ap"), 0,
                 "%s", err);
    cr_assert_eq(a.wait_ms, 60000);
    cr_assert_str_eq(a.pos[2], "42");
    cr_assert_eq(P("checkpoint", "list", "orders", "--kind", "barrier", "--operation", "7",
                   "--limit", "1000"),
                 0, "%s", err);
    cr_assert_str_eq(a.kind, "barrier");
    cr_assert_str_eq(a.operation, "7");
    cr_assert_eq(a.limit, 1000);
    cr_assert_eq(P("checkpoint", "list", "orders"), 0, "%s", err);
    cr_assert_eq(a.limit, 50);
    cr_assert_eq(P("recovery", "orders", "--json"), 0, "%s", err);
    cr_assert(a.json);

    struct {
        const char *argv[8];
        const char *msg;
    } cases[] = {
        {{"checkpoint", "create"}, "checkpoint: missing argument"},
        {{"checkpoint", "drop", "orders"}, "checkpoint: expected create, show or list"},
        {{"checkpoint", "create", "orders", "5"}, "checkpoint create: too many arguments"},
        {{"checkpoint", "show", "orders"}, "checkpoint show: missing argument"},
        {{"checkpoint", "show", "orders", "x1"}, "checkpoint show: the id must be"},
        {{"checkpoint", "show", "orders", "0"}, "checkpoint show: the id must be"},
        {{"checkpoint", "list", "orders", "3"}, "checkpoint list: too many arguments"},
        {{"checkpoint", "create", "orders", "--position", "3000148"}, "--position: must be"},
        {{"checkpoint", "create", "orders", "--position", "0/0"}, "--position: must be"},
        {{"checkpoint", "create", "orders", "--regions", "eu,"}, "--regions: must be"},
        {{"checkpoint", "create", "orders", "--regions", "e u"}, "--regions: must be"},
        {{"checkpoint", "create", "orders", "--kind", "auto"},
         "--kind is not an option of checkpoint create"},
        {{"checkpoint", "show", "orders", "1", "--wait"},
         "--wait is not an option of checkpoint show"},
        {{"checkpoint", "show", "orders", "1", "--wait-ms", "60001"}, "--wait-ms: must be"},
        {{"checkpoint", "list", "orders", "--kind", "hourly"}, "--kind: must be"},
        {{"checkpoint", "list", "orders", "--operation", "-3"}, "--operation: must be"},
        {{"checkpoint", "list", "orders", "--limit", "0"}, "--limit must be from 1 to 1000"},
        {{"checkpoint", "list", "orders", "--limit", "1001"}, "--limit must be from 1 to 1000"},
        {{"checkpoint", "list", "orders", "--position", "0/1"},
         "--position is not an option of checkpoint list"},
        {{"recovery"}, "recovery: missing argument"},
        {{"recovery", "orders", "--wait"}, "--wait is not an option of recovery"},
        {{"status", "--regions", "eu"}, "--regions is not an option of status"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[10] = {"meridianctl"};
        int argc = 1;
        for (int k = 0; cases[i].argv[k]; k++)
            argv[argc++] = (char *)cases[i].argv[k];
        cr_assert_eq(mrd__cli_args_parse(argc, argv, &a, err, sizeof(err)), MRD_EINVAL,
                     "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].msg) != NULL, "case %zu: \"%s\" lacks \"%s\"", i, err,
                  cases[i].msg);
    }
}
