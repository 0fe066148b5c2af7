/*
 * meridianctl's internal interface: parsed arguments (args.c), settings
 * resolved from flags, environment and config file (args.c), the HTTP client
 * that fails over between controller URLs and follows the leader's redirects
 * (client.c), pure formatting helpers and aligned tables (format.c), and the
 * commands (commands.c). main.c only glues them together.
 */
#ifndef MERIDIAN_CLI_H
#define MERIDIAN_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes (documented in the usage text). */
#define MRD__CLI_EXIT_OK          0 /* done (or cutover complete, rejoin pending) */
#define MRD__CLI_EXIT_FAILED      1 /* the operation aborted or failed */
#define MRD__CLI_EXIT_USAGE       2 /* bad command line or config file */
#define MRD__CLI_EXIT_REFUSED     3 /* the API answered 4xx */
#define MRD__CLI_EXIT_UNREACHABLE 4 /* no controller answered, or 5xx */
#define MRD__CLI_EXIT_TIMEOUT     5 /* --wait ran out of time (or was interrupted) */

#define MRD__CLI_MAX_URLS 16
#define MRD__CLI_MAX_POS  4

/* ---- arguments (args.c) ------------------------------------------------- */

/* The command line, as parsed. Strings point into argv (not owned). */
typedef struct {
    const char *command;               /* NULL when none was given */
    const char *pos[MRD__CLI_MAX_POS]; /* positional arguments after the command */
    size_t npos;
    const char *urls[MRD__CLI_MAX_URLS]; /* --url values as given (may hold commas) */
    size_t nurls;
    const char *token, *config;
    int json, help, no_color;
    /* command options */
    const char *to, *service, *reason, *expect_primary;
    int64_t after;        /* --after, -1 when not given */
    int64_t expect_epoch; /* --expect-epoch, 0 when not given */
    int force, wait, follow;
    double timeout_s;   /* --timeout, default 120 */
    double max_seconds; /* --max-seconds, 0 = unbounded */
    long limit;         /* --limit for events, default 50 (0 = all) */
    /* checkpoint options */
    const char *position;  /* --position X/Y (checked by the parser) */
    const char *regions;   /* --regions a,b (checked: names separated by commas) */
    const char *kind;      /* --kind auto|manual|barrier */
    const char *operation; /* --operation ID (checked: positive integer) */
    int64_t wait_ms;       /* --wait-ms, -1 when not given */
} mrd__cli_args;

/* Parses argv (options anywhere, "--opt value" or "--opt=value", "--" ends
 * options). Checks that each option belongs to the command and the number of
 * positional arguments. Returns 0, or MRD_EINVAL with a short lower-case
 * message in err (a usage error); *a is then partly filled. A help request
 * ("--help", "help [COMMAND]") returns 0 with a->help set. */
int mrd__cli_args_parse(int argc, char **argv, mrd__cli_args *a, char *err, size_t errlen);

/* 1 if name is a known command. */
int mrd__cli_command_known(const char *name);

/* Writes the usage text: the whole manual when command is NULL, else the
 * command's page. Returns 0, or MRD_ENOTFOUND for an unknown command. */
int mrd__cli_usage(FILE *out, const char *command);

/* Controller URLs and token, resolved. */
typedef struct {
    char *urls[MRD__CLI_MAX_URLS]; /* owned; no trailing '/' */
    size_t nurls;
    char *token; /* owned; NULL when none */
} mrd__cli_settings;

/* Resolves URLs and token: flags win over the environment (env_url is
 * MERIDIAN_URL, comma-separated; env_token MERIDIAN_TOKEN; either may be
 * NULL), the environment over the config file (cfg: {"urls": [...] or "a,b",
 * "token": "..."}, may be NULL). Every URL must be http:// or https://.
 * Returns 0, or MRD_EINVAL / MRD_ECONFIG with a message in err (s then holds
 * nothing: free it anyway). */
int mrd__cli_settings_resolve(const mrd__cli_args *a, const char *env_url, const char *env_token,
                              const json_t *cfg, mrd__cli_settings *s, char *err, size_t errlen);
/* Frees what s owns and zeroes it. */
void mrd__cli_settings_free(mrd__cli_settings *s);

/* ---- formatting (format.c, pure) ---------------------------------------- */

/* "0 B", "1023 B", "1.0 KiB", "12.3 MiB" ... up to EiB. Returns buf. */
char *mrd__cli_fmt_bytes(double bytes, char *buf, size_t len);
/* Durations: "0 ms", "850 ms", "1.25 s", "12.3 s", "2m05s", "1h02m", "3d04h";
 * negative values get a '-'. Returns buf. */
char *mrd__cli_fmt_ms(int64_t ms, char *buf, size_t len);
/* Parses an ISO 8601 timestamp as PostgreSQL writes it in JSON
 * ("2026-11-27T17:20:01.123456+00:00", also 'Z', space for 'T', no
 * fraction, "+05:30", "+05"). Returns 0 and sets *us (microseconds since the
 * Unix epoch, UTC), or MRD_EPARSE leaving *us untouched. */
int mrd__cli_time_parse(const char *text, int64_t *us);
/* "2026-11-27 17:20:01" from such a timestamp (the server's offset kept as
 * given), or the text cut short when it does not parse. Returns buf. */
char *mrd__cli_fmt_time(const char *text, char *buf, size_t len);
/* Seconds for people: rpo_seconds and lag_seconds of /recovery (a JSON
 * number, possibly real) as mrd__cli_fmt_ms does, "-" when v is not a
 * number. Returns buf. */
char *mrd__cli_fmt_seconds(const json_t *v, char *buf, size_t len);
/* The RPO of region in a /recovery document ({"regions": [{"region",
 * "rpo_seconds", ...}]}): its rpo_seconds formatted, or "-" when the
 * document, the region or its rpo_seconds is missing. Returns buf. */
char *mrd__cli_fmt_rpo(const json_t *recovery, const char *region, char *buf, size_t len);
/* The wait_ms of the next long-poll slice of a --wait with left_ms to go:
 * left_ms capped at 60000, 0 when nothing is left. */
int64_t mrd__cli_wait_slice_ms(int64_t left_ms);

/* Copies src into buf with control characters (terminal escapes, newlines)
 * replaced by spaces or '?', so server text cannot drive the terminal.
 * Returns buf. */
char *mrd__cli_sanitize(const char *src, char *buf, size_t len);
/* Number of terminal columns of a UTF-8 string (one per code point). */
size_t mrd__cli_text_width(const char *s);

typedef enum {
    MRD__CLI_PLAIN = 0,
    MRD__CLI_GREEN,
    MRD__CLI_YELLOW,
    MRD__CLI_RED,
    MRD__CLI_BOLD,
    MRD__CLI_DIM,
} mrd__cli_color;

typedef struct mrd__cli_table mrd__cli_table;

/* A table with ncols columns (at most 16) and these headers. Returns NULL
 * when out of memory. */
mrd__cli_table *mrd__cli_table_new(size_t ncols, const char *const *headers);
/* Right-aligns column col (numbers). */
void mrd__cli_table_align_right(mrd__cli_table *t, size_t col);
/* Starts a new row. Returns 0 or MRD_ENOMEM. */
int mrd__cli_table_row(mrd__cli_table *t);
/* Appends a cell to the current row (sanitized; NULL prints "-"). Cells
 * beyond ncols are ignored. Returns 0 or MRD_ENOMEM. */
int mrd__cli_table_cell(mrd__cli_table *t, mrd__cli_color color, const char *text);
/* printf-style cell. */
int mrd__cli_table_cellf(mrd__cli_table *t, mrd__cli_color color, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Renders: every line starts with indent, columns separated by two spaces,
 * no trailing spaces, colours only when color is set. Returns a string the
 * caller frees, or NULL when out of memory. */
char *mrd__cli_table_render(const mrd__cli_table *t, const char *indent, int color);
/* Renders to out. */
void mrd__cli_table_print(const mrd__cli_table *t, FILE *out, const char *indent, int color);
void mrd__cli_table_free(mrd__cli_table *t);

/* ---- HTTP (client.c) ---------------------------------------------------- */

typedef struct mrd__cli_client mrd__cli_client;

typedef struct {
    int status;       /* HTTP status of the final answer; 0 when nothing answered */
    char *body;       /* owned; "" when none */
    json_t *json;     /* the body parsed, or NULL */
    char url[1024];   /* the URL that gave this answer (after redirects) */
    char error[1024]; /* status 0: one line per controller tried, why it failed */
} mrd__cli_resp;

/* A client over the settings' URLs (copied). Returns NULL when out of
 * memory. timeout_ms bounds each HTTP exchange. */
mrd__cli_client *mrd__cli_client_new(const mrd__cli_settings *s, long timeout_ms);
void mrd__cli_client_free(mrd__cli_client *c);
/* Sets the bound of each later HTTP exchange (ms, > 0; for long-polls).
 * Returns the previous bound. */
long mrd__cli_client_set_timeout(mrd__cli_client *c, long timeout_ms);

/* Sends method path (e.g. "/v1/status") with an optional JSON body and extra
 * headers (NULL-terminated "Name: value"). Tries the URL that answered last
 * first, then the others; a transport error or a 5xx moves on to the next
 * URL; a 307/308 is followed (at most 4 hops) with the same method, body and
 * token. Returns 0 with r filled (any HTTP status) or MRD_EHTTP when no
 * controller answered (r->status 0, r->error says why). Free r with
 * mrd__cli_resp_clear. */
int mrd__cli_request(mrd__cli_client *c, const char *method, const char *path, const char *body,
                     const char *const *headers, mrd__cli_resp *r);
void mrd__cli_resp_clear(mrd__cli_resp *r);

/* Appends s to buf[len] percent-encoded for a URL query or path segment.
 * Returns 0, or MRD_ETOOBIG when it does not fit (buf then truncated). */
int mrd__cli_url_escape(const char *s, char *buf, size_t len);

/* ---- commands (commands.c) ---------------------------------------------- */

typedef struct {
    mrd__cli_client *client;
    const mrd__cli_args *args;
    FILE *out, *err;
    int json;  /* --json */
    int color; /* colours on out */
} mrd__cli_ctx;

/* Runs the parsed command. Returns the exit code (MRD__CLI_EXIT_*). */
int mrd__cli_run(mrd__cli_ctx *ctx);

/* Prints "meridianctl: error: msg" and the optional detail lines to err. */
void mrd__cli_error(FILE *err, const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
