/*
 * meridianctl: the operator CLI of Meridian. Parses the command line
 * (args.c), resolves controller URLs and token (flags > MERIDIAN_URL /
 * MERIDIAN_TOKEN > --config file), builds the HTTP client (client.c) and
 * runs the command (commands.c). Exit codes are listed in cli.h and in the
 * manual (`meridianctl --help`).
 *
 * Everything the program owns lives in main's frame and is freed before it
 * returns, so LeakSanitizer stays quiet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "meridian/error.h"

static json_t *load_config(const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open config file %s: %m", path);
        return NULL;
    }
    json_t *cfg = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (cfg == NULL)
        snprintf(err, errlen, "config file %s: line %d: %s", path, jerr.line, jerr.text);
    return cfg;
}

int main(int argc, char **argv)
{
    mrd__cli_args args;
    char err[512];
    if (mrd__cli_args_parse(argc, argv, &args, err, sizeof(err)) != 0) {
        mrd__cli_error(stderr, "hint: see `meridianctl --help`", "%s", err);
        return MRD__CLI_EXIT_USAGE;
    }
    if (args.help) {
        const char *topic = args.command && strcmp(args.command, "help") == 0
                                ? (args.npos ? args.pos[0] : NULL)
                                : args.command;
        mrd__cli_usage(stdout, topic);
        return 0;
    }
    json_t *cfg = NULL;
    if (args.config && (cfg = load_config(args.config, err, sizeof(err))) == NULL) {
        mrd__cli_error(stderr, NULL, "%s", err);
        return MRD__CLI_EXIT_USAGE;
    }
    mrd__cli_settings settings;
    int rc = mrd__cli_settings_resolve(&args, getenv("MERIDIAN_URL"), getenv("MERIDIAN_TOKEN"), cfg,
                                       &settings, err, sizeof(err));
    json_decref(cfg);
    int is_version = strcmp(args.command, "version") == 0;
    if (rc != 0 && !is_version) {
        mrd__cli_error(stderr, "hint: see `meridianctl --help`", "%s", err);
        return MRD__CLI_EXIT_USAGE;
    }
    mrd__cli_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.args = &args;
    ctx.out = stdout;
    ctx.err = stderr;
    ctx.json = args.json;
    const char *no_color = getenv("NO_COLOR");
    const char *term = getenv("TERM");
    ctx.color = !args.no_color && !args.json && isatty(STDOUT_FILENO) &&
                !(no_color && no_color[0]) && !(term && strcmp(term, "dumb") == 0);
    if (rc == 0) {
        ctx.client = mrd__cli_client_new(&settings, is_version ? 2000 : 10000);
        if (ctx.client == NULL) {
            mrd__cli_settings_free(&settings);
            mrd__cli_error(stderr, NULL, "out of memory");
            return MRD__CLI_EXIT_FAILED;
        }
    }
    int ex = mrd__cli_run(&ctx);
    mrd__cli_client_free(ctx.client);
    mrd__cli_settings_free(&settings);
    if (fflush(stdout) != 0 && ex == 0)
        ex = MRD__CLI_EXIT_FAILED;
    return ex;
}
