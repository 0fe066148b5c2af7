/*
 * meridianctl's command line: the command and option tables, the parser, the
 * manual (`--help`, `help COMMAND`), and the resolution of controller URLs
 * and token from flags, environment and config file (in that order of
 * precedence). Called by main.c; pure (no I/O but the usage text written to
 * the FILE it is given), so tests/unit/test_cli_format.c tests it directly.
 *
 * A bad command line is a usage error with a one-line message naming the
 * offending word; nothing here exits or allocates except the resolved
 * settings, which the caller frees.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "meridian/error.h"
#include "meridian/position.h"

enum {
    O_TO = 1 << 0,
    O_FORCE = 1 << 1,
    O_WAIT = 1 << 2,
    O_EXPECT_EPOCH = 1 << 3,
    O_EXPECT_PRIMARY = 1 << 4,
    O_REASON = 1 << 5,
    O_TIMEOUT = 1 << 6,
    O_FOLLOW = 1 << 7,
    O_SERVICE = 1 << 8,
    O_AFTER = 1 << 9,
    O_MAX_SECONDS = 1 << 10,
    O_LIMIT = 1 << 11,
    O_POSITION = 1 << 12,
    O_REGIONS = 1 << 13,
    O_KIND = 1 << 14,
    O_OPERATION = 1 << 15,
    O_WAIT_MS = 1 << 16,
    O_GLOBAL = 1 << 30,
};

typedef struct {
    const char *name;
    int has_value;
    unsigned bit;
} cli_option;

static const cli_option options[] = {
    {"url", 1, O_GLOBAL},
    {"token", 1, O_GLOBAL},
    {"config", 1, O_GLOBAL},
    {"json", 0, O_GLOBAL},
    {"no-color", 0, O_GLOBAL},
    {"help", 0, O_GLOBAL},
    {"to", 1, O_TO},
    {"force", 0, O_FORCE},
    {"wait", 0, O_WAIT},
    {"expect-epoch", 1, O_EXPECT_EPOCH},
    {"expect-primary", 1, O_EXPECT_PRIMARY},
    {"reason", 1, O_REASON},
    {"timeout", 1, O_TIMEOUT},
    {"follow", 0, O_FOLLOW},
    {"service", 1, O_SERVICE},
    {"after", 1, O_AFTER},
    {"max-seconds", 1, O_MAX_SECONDS},
    {"limit", 1, O_LIMIT},
    {"position", 1, O_POSITION},
    {"regions", 1, O_REGIONS},
    {"kind", 1, O_KIND},
    {"operation", 1, O_OPERATION},
    {"wait-ms", 1, O_WAIT_MS},
};

typedef struct {
    const char *name;
    size_t min_pos, max_pos;
    unsigned opts;
    const char *synopsis;
    const char *summary;
    const char *page; /* description, options, examples */
} cli_command;

#define OP_OPTS (O_WAIT | O_EXPECT_EPOCH | O_EXPECT_PRIMARY | O_REASON | O_TIMEOUT | O_TO)

static const cli_command commands[] = {
    {"status", 0, 0, 0, "status", "leader, services, members, lag and heartbeats",
     "Shows which controller leads (name, region, term) and, per service, the\n"
     "primary region, epoch, maintenance flag and running operation, then per\n"
     "member: region, node, role, health, replication lag in bytes and time,\n"
     "the age of its last heartbeat, and the RPO of its region (from\n"
     "/v1/services/NAME/recovery; \"-\" when that is not known).\n"
     "With --json: the controller's /v1/status document with a \"services\"\n"
     "array from /v1/services added, each with its \"recovery\" document\n"
     "(null when it could not be read).\n"},
    {"services", 0, 1, 0, "services [NAME]", "services, or one service in detail",
     "Without NAME: one line per service (primary, epoch, maintenance,\n"
     "members healthy, running operation). With NAME: the service, its members,\n"
     "its cutover drivers and the leader's last automatic decision.\n"},
    {"nodes", 0, 1, 0, "nodes [NAME]", "nodes with their agents' last heartbeat",
     "One line per node: region, age of its last heartbeat, the controller it\n"
     "reports through, and the members it hosts. With NAME: that node.\n"},
    {"regions", 0, 0, 0, "regions", "regions and their priorities",
     "The regions the controller knows, with their priority (lower is\n"
     "preferred).\n"},
    {"events", 0, 0, O_FOLLOW | O_SERVICE | O_AFTER | O_MAX_SECONDS | O_LIMIT,
     "events [--follow] [--service S] [--after ID] [--limit N] [--max-seconds N]", "the event log",
     "Prints the event log: id, time, kind, service, actor, message.\n"
     "Without --after, the last --limit events (default 50; 0 for all).\n"
     "\n"
     "  --after ID         only events with an id above ID (all of them)\n"
     "  --service S        only events of service S\n"
     "  --follow           keep polling (every 500 ms) and print new events as\n"
     "                     they come, until Ctrl-C, SIGTERM or --max-seconds\n"
     "  --max-seconds N    stop following after N seconds (exit 0)\n"
     "  --limit N          how many of the latest events to print\n"
     "\n"
     "With --json and without --follow: one document {\"events\": [...],\n"
     "\"last_id\": N}; with --follow: one JSON object per line per event.\n"},
    {"switchover", 1, 1, OP_OPTS, "switchover SERVICE --to REGION [--wait] [options]",
     "planned move of a service's primary (no data loss)",
     "Asks the leader for a planned switchover of SERVICE to REGION and prints\n"
     "the operation id. The primary is fenced, the target catches up fully,\n"
     "is promoted, and the registry and DNS are cut over.\n"
     "\n"
     "  --to REGION        target region (required)\n"
     "  --wait             follow the operation, printing each step as it\n"
     "                     completes (step, duration, attempts, outcome) until\n"
     "                     it is done or has passed its cutover (the old primary\n"
     "                     rejoining is then left to the controller)\n"
     "  --timeout SECONDS  how long --wait waits (default 120)\n"
     "  --expect-epoch N   refuse unless the service is at epoch N\n"
     "  --expect-primary R refuse unless the primary is in region R\n"
     "  --reason TEXT      why, for the event log\n"
     "\n"
     "Example:\n"
     "  meridianctl switchover orders --to us --expect-primary eu --wait\n"},
    {"failover", 1, 1, OP_OPTS | O_FORCE, "failover SERVICE [--to REGION] [--force] [--wait] [...]",
     "unplanned move of a service's primary (loss bounded by policy)",
     "Asks the leader to fail SERVICE over now, to REGION or to the best\n"
     "candidate. Without --force the policy's lag limits apply; with --force\n"
     "a candidate beyond them may be chosen (data written after its position\n"
     "is lost: the operation reports how much). Same options as switchover.\n"
     "Run `meridianctl plan SERVICE` first to see what would be chosen.\n"},
    {"plan", 1, 1, O_TO | O_FORCE, "plan SERVICE [--to REGION] [--force]",
     "what a failover would do now, without doing it",
     "Prints the decision a failover of SERVICE would take now: decision,\n"
     "reason, message, and the candidate table (node, region, priority, replay\n"
     "position, lag, acceptable, reason). Changes nothing.\n"},
    {"maintenance", 2, 2, O_REASON, "maintenance SERVICE on|off [--reason TEXT]",
     "pause or resume automatic failover of a service",
     "Turns maintenance on (no automatic failover; manual operations still\n"
     "work) or off for SERVICE. The change lands in the event log with\n"
     "--reason.\n"},
    {"operations", 0, 1, O_SERVICE, "operations [ID] [--service S]",
     "operations, or one operation's timeline",
     "Without ID: the latest 100 operations (of service S with --service).\n"
     "With ID: the operation's timeline: each step with its start (offset\n"
     "from the operation's start), duration, share of the total, attempts and\n"
     "outcome; the total duration, bytes lost, the barrier position; and the\n"
     "commands sent to agents with their status.\n"},
    {"checkpoint", 2, 3,
     O_POSITION | O_WAIT | O_REGIONS | O_TIMEOUT | O_WAIT_MS | O_KIND | O_OPERATION | O_LIMIT,
     "checkpoint create|show|list SERVICE [ID] [options]",
     "data-sync checkpoints: create one, wait for the regions, list them",
     "A checkpoint is a position of the service's primary; the controller\n"
     "records when each region's replay reached it.\n"
     "\n"
     "  checkpoint create SERVICE [--position X/Y] [--wait] [--regions a,b]\n"
     "                    [--timeout SECONDS]\n"
     "      Creates a checkpoint at the primary's current position (or at X/Y)\n"
     "      and prints its id. With --wait, waits until every region (or those\n"
     "      of --regions) reached it, printing each region and when; exit 0\n"
     "      when complete, 5 when --timeout (default 120) ran out (the pending\n"
     "      regions are named), 1 when the checkpoint is lost (a failover left\n"
     "      it behind).\n"
     "  checkpoint show SERVICE ID [--wait-ms N] [--regions a,b]\n"
     "      The checkpoint: position, epoch, which regions reached it and when,\n"
     "      which are pending. --wait-ms N (at most 60000) lets the controller\n"
     "      answer as soon as the regions reached it, or after N ms.\n"
     "  checkpoint list SERVICE [--kind auto|manual|barrier] [--operation ID]\n"
     "                  [--limit N]\n"
     "      The newest checkpoints (default 50, at most 1000), with the regions\n"
     "      that reached each; --operation ID: those of that operation (its\n"
     "      switchover barrier).\n"
     "\n"
     "With --json: the API's document (for create --wait: the last state).\n"
     "\n"
     "Examples:\n"
     "  meridianctl checkpoint create orders --wait --regions us --timeout 10\n"
     "  meridianctl checkpoint list orders --kind barrier --limit 5\n"},
    {"recovery", 1, 1, 0, "recovery SERVICE", "per region recovery point, RPO and lag",
     "Per region of SERVICE: the newest checkpoint the region reached (its\n"
     "recovery point: the region holds every write up to that time), the RPO\n"
     "(now minus the recovery point), and the replication lag in bytes and\n"
     "seconds. \"-\" where unknown.\n"},
    {"version", 0, 0, 0, "version", "versions of meridianctl and the controller",
     "Prints meridianctl's version and, when a controller answers, its version.\n"},
    {"help", 0, 1, 0, "help [COMMAND]", "this manual, or one command's page",
     "Prints the manual, or the page of COMMAND.\n"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))
#define NOPTIONS  (sizeof(options) / sizeof(options[0]))

static const cli_command *command_find(const char *name)
{
    for (size_t i = 0; name && i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

int mrd__cli_command_known(const char *name)
{
    return command_find(name) != NULL;
}

static int parse_int(const char *s, int64_t min, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400.0 * 365)
        return -1;
    *out = v;
    return 0;
}

/* Region names separated by commas: no empty name, no control character
 * or space, at most 32 names of at most 64 bytes. */
static int regions_valid(const char *v)
{
    size_t names = 0, n = 0;
    for (const unsigned char *p = (const unsigned char *)v;; p++) {
        if (*p == ',' || *p == '\0') {
            if (n == 0 || ++names > 32)
                return 0;
            n = 0;
            if (*p == '\0')
                return 1;
            continue;
        }
        if (*p <= ' ' || *p == 0x7f || ++n > 64)
            return 0;
    }
}

static int set_option(mrd__cli_args *a, const cli_option *o, const char *v, char *err,
                      size_t errlen)
{
    int64_t n;
    const char *name = o->name;
    if (strcmp(name, "url") == 0) {
        if (a->nurls == MRD__CLI_MAX_URLS) {
            snprintf(err, errlen, "too many --url options (at most %d)", MRD__CLI_MAX_URLS);
            return MRD_EINVAL;
        }
        a->urls[a->nurls++] = v;
    } else if (strcmp(name, "token") == 0) {
        a->token = v;
    } else if (strcmp(name, "config") == 0) {
        a->config = v;
    } else if (strcmp(name, "json") == 0) {
        a->json = 1;
    } else if (strcmp(name, "no-color") == 0) {
        a->no_color = 1;
    } else if (strcmp(name, "help") == 0) {
        a->help = 1;
    } else if (strcmp(name, "to") == 0) {
        a->to = v;
    } else if (strcmp(name, "force") == 0) {
        a->force = 1;
    } else if (strcmp(name, "wait") == 0) {
        a->wait = 1;
    } else if (strcmp(name, "follow") == 0) {
        a->follow = 1;
    } else if (strcmp(name, "reason") == 0) {
        a->reason = v;
    } else if (strcmp(name, "expect-primary") == 0) {
        a->expect_primary = v;
    } else if (strcmp(name, "service") == 0) {
        a->service = v;
    } else if (strcmp(name, "position") == 0) {
        uint64_t p;
        if (mrd_pos_parse(v, &p) != 0 || p == 0) {
            snprintf(err, errlen, "--position: must be a position like 0/3000148, not \"%.40s\"",
                     v);
            return MRD_EINVAL;
        }
        a->position = v;
    } else if (strcmp(name, "regions") == 0) {
        if (!regions_valid(v)) {
            snprintf(err, errlen,
                     "--regions: must be region names separated by commas, not \"%.40s\"", v);
            return MRD_EINVAL;
        }
        a->regions = v;
    } else if (strcmp(name, "kind") == 0) {
        if (strcmp(v, "auto") != 0 && strcmp(v, "manual") != 0 && strcmp(v, "barrier") != 0) {
            snprintf(err, errlen, "--kind: must be auto, manual or barrier, not \"%.40s\"", v);
            return MRD_EINVAL;
        }
        a->kind = v;
    } else if (strcmp(name, "operation") == 0) {
        if (parse_int(v, 1, &n) != 0) {
            snprintf(err, errlen, "--operation: must be an operation id, not \"%.40s\"", v);
            return MRD_EINVAL;
        }
        a->operation = v;
    } else if (strcmp(name, "wait-ms") == 0) {
        if (parse_int(v, 0, &n) != 0 || n > 60000) {
            snprintf(err, errlen, "--wait-ms: must be an integer from 0 to 60000, not \"%.40s\"",
                     v);
            return MRD_EINVAL;
        }
        a->wait_ms = n;
    } else if (strcmp(name, "expect-epoch") == 0) {
        if (parse_int(v, 1, &n) != 0) {
            snprintf(err, errlen, "--expect-epoch: must be a positive integer, not \"%.40s\"", v);
            return MRD_EINVAL;
        }
        a->expect_epoch = n;
    } else if (strcmp(name, "after") == 0) {
        if (parse_int(v, 0, &n) != 0) {
            snprintf(err, errlen, "--after: must be an event id (an integer >= 0), not \"%.40s\"",
                     v);
            return MRD_EINVAL;
        }
        a->after = n;
    } else if (strcmp(name, "limit") == 0) {
        if (parse_int(v, 0, &n) != 0 || n > 1000000) {
            snprintf(err, errlen, "--limit: must be an integer from 0 to 1000000, not \"%.40s\"",
                     v);
            return MRD_EINVAL;
        }
        a->limit = (long)n;
    } else if (strcmp(name, "timeout") == 0) {
        if (parse_seconds(v, &a->timeout_s) != 0 || a->timeout_s <= 0) {
            snprintf(err, errlen, "--timeout: must be a number of seconds above 0, not \"%.40s\"",
                     v);
            return MRD_EINVAL;
        }
    } else if (strcmp(name, "max-seconds") == 0) {
        if (parse_seconds(v, &a->max_seconds) != 0 || a->max_seconds <= 0) {
            snprintf(err, errlen,
                     "--max-seconds: must be a number of seconds above 0, not \"%.40s\"", v);
            return MRD_EINVAL;
        }
    }
    return 0;
}

/* The checkpoint subcommands: their arguments and options. */
static int check_checkpoint(const mrd__cli_args *a, const cli_option *const *seen, size_t nseen,
                            char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t npos;
        unsigned opts;
        const char *synopsis;
    } subs[] = {
        {"create", 2, O_POSITION | O_WAIT | O_REGIONS | O_TIMEOUT,
         "checkpoint create SERVICE [--position X/Y] [--wait] [--regions a,b] [--timeout S]"},
        {"show", 3, O_WAIT_MS | O_REGIONS,
         "checkpoint show SERVICE ID [--wait-ms N] [--regions a,b]"},
        {"list", 2, O_KIND | O_OPERATION | O_LIMIT,
         "checkpoint list SERVICE [--kind K] [--operation ID] [--limit N]"},
    };
    size_t k = 0;
    while (k < sizeof(subs) / sizeof(subs[0]) && strcmp(subs[k].name, a->pos[0]) != 0)
        k++;
    if (k == sizeof(subs) / sizeof(subs[0])) {
        snprintf(err, errlen, "checkpoint: expected create, show or list, not \"%.40s\"",
                 a->pos[0]);
        return MRD_EINVAL;
    }
    if (a->npos != subs[k].npos) {
        snprintf(err, errlen, "checkpoint %s: %s (usage: meridianctl %s)", subs[k].name,
                 a->npos < subs[k].npos ? "missing argument" : "too many arguments",
                 subs[k].synopsis);
        return MRD_EINVAL;
    }
    for (size_t i = 0; i < nseen; i++) {
        if (seen[i]->bit != O_GLOBAL && !(subs[k].opts & seen[i]->bit)) {
            snprintf(err, errlen, "--%s is not an option of checkpoint %s", seen[i]->name,
                     subs[k].name);
            return MRD_EINVAL;
        }
    }
    int64_t id;
    if (k == 1 && parse_int(a->pos[2], 1, &id) != 0) {
        snprintf(err, errlen, "checkpoint show: the id must be a positive integer, not \"%.40s\"",
                 a->pos[2]);
        return MRD_EINVAL;
    }
    if (k == 2 && (a->limit < 1 || a->limit > 1000)) {
        snprintf(err, errlen, "checkpoint list: --limit must be from 1 to 1000");
        return MRD_EINVAL;
    }
    return 0;
}

int mrd__cli_args_parse(int argc, char **argv, mrd__cli_args *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->after = -1;
    a->timeout_s = 120.0;
    a->limit = 50;
    a->wait_ms = -1;
    if (errlen)
        err[0] = '\0';
    const cli_option *seen[64];
    size_t nseen = 0;
    int only_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_pos && strcmp(arg, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (!only_pos && (strcmp(arg, "-h") == 0)) {
            a->help = 1;
            continue;
        }
        if (!only_pos && arg[0] == '-' && arg[1] != '\0') {
            if (arg[1] != '-') {
                snprintf(err, errlen, "unknown option \"%.40s\" (options are spelled --name)", arg);
                return MRD_EINVAL;
            }
            const char *name = arg + 2, *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            const cli_option *o = NULL;
            for (size_t k = 0; k < NOPTIONS; k++)
                if (strlen(options[k].name) == nlen && strncmp(options[k].name, name, nlen) == 0)
                    o = &options[k];
            if (o == NULL) {
                snprintf(err, errlen, "unknown option \"--%.*s\"", (int)(nlen > 40 ? 40 : nlen),
                         name);
                return MRD_EINVAL;
            }
            const char *value = NULL;
            if (o->has_value) {
                if (eq) {
                    value = eq + 1;
                } else if (i + 1 < argc) {
                    value = argv[++i];
                } else {
                    snprintf(err, errlen, "--%s needs a value", o->name);
                    return MRD_EINVAL;
                }
            } else if (eq) {
                snprintf(err, errlen, "--%s takes no value", o->name);
                return MRD_EINVAL;
            }
            int rc = set_option(a, o, value, err, errlen);
            if (rc != 0)
                return rc;
            if (nseen < sizeof(seen) / sizeof(seen[0]))
                seen[nseen++] = o;
            continue;
        }
        if (a->command == NULL) {
            a->command = arg;
        } else if (a->npos < MRD__CLI_MAX_POS) {
            a->pos[a->npos++] = arg;
        } else {
            snprintf(err, errlen, "too many arguments");
            return MRD_EINVAL;
        }
    }
    if (a->command && strcmp(a->command, "help") == 0)
        a->help = 1;
    if (a->help) {
        const char *topic = a->command && strcmp(a->command, "help") == 0
                                ? (a->npos ? a->pos[0] : NULL)
                                : a->command;
        if (topic && !mrd__cli_command_known(topic)) {
            snprintf(err, errlen, "unknown command \"%.40s\"", topic);
            return MRD_EINVAL;
        }
        return 0;
    }
    if (a->command == NULL) {
        snprintf(err, errlen, "no command given");
        return MRD_EINVAL;
    }
    const cli_command *c = command_find(a->command);
    if (c == NULL) {
        snprintf(err, errlen, "unknown command \"%.40s\"", a->command);
        return MRD_EINVAL;
    }
    for (size_t k = 0; k < nseen; k++) {
        if (seen[k]->bit != O_GLOBAL && !(c->opts & seen[k]->bit)) {
            snprintf(err, errlen, "--%s is not an option of %s", seen[k]->name, c->name);
            return MRD_EINVAL;
        }
    }
    if (a->npos < c->min_pos || a->npos > c->max_pos) {
        snprintf(err, errlen, "%s: %s (usage: meridianctl %s)", c->name,
                 a->npos < c->min_pos ? "missing argument" : "too many arguments", c->synopsis);
        return MRD_EINVAL;
    }
    for (size_t k = 0; k < a->npos; k++) {
        if (a->pos[k][0] == '\0') {
            snprintf(err, errlen, "%s: empty argument", c->name);
            return MRD_EINVAL;
        }
    }
    if (strcmp(c->name, "switchover") == 0 && (a->to == NULL || a->to[0] == '\0')) {
        snprintf(err, errlen, "switchover: --to REGION is required");
        return MRD_EINVAL;
    }
    if (strcmp(c->name, "maintenance") == 0 && strcmp(a->pos[1], "on") != 0 &&
        strcmp(a->pos[1], "off") != 0) {
        snprintf(err, errlen, "maintenance: expected on or off, not \"%.40s\"", a->pos[1]);
        return MRD_EINVAL;
    }
    if (strcmp(c->name, "checkpoint") == 0)
        return check_checkpoint(a, seen, nseen, err, errlen);
    if (strcmp(c->name, "operations") == 0 && a->npos == 1) {
        int64_t id;
        if (parse_int(a->pos[0], 1, &id) != 0) {
            snprintf(err, errlen, "operations: the id must be a positive integer, not \"%.40s\"",
                     a->pos[0]);
            return MRD_EINVAL;
        }
    }
    return 0;
}

/* ---- manual ------------------------------------------------------------ */

static const char manual_head[] =
    "NAME\n"
    "  meridianctl - operate Meridian, the multi-datacenter failover controller\n"
    "\n"
    "SYNOPSIS\n"
    "  meridianctl [--url URL]... [--token TOKEN] [--json] COMMAND [ARGS] [OPTIONS]\n"
    "  meridianctl help [COMMAND]\n"
    "\n"
    "COMMANDS\n";

static const char manual_tail[] =
    "\n"
    "GLOBAL OPTIONS\n"
    "  --url URL        a controller's URL; repeat it or separate URLs with commas.\n"
    "                   The first that answers is used; writes sent to a follower\n"
    "                   are redirected to the leader and followed.\n"
    "  --token TOKEN    API bearer token (viewer for reads, operator for writes)\n"
    "  --config FILE    JSON file {\"urls\": [...], \"token\": \"...\"}\n"
    "  --json           print the API's JSON as is (one document), for scripts\n"
    "  --no-color       no colours even on a terminal (also NO_COLOR=1)\n"
    "  --help, -h       this manual; `meridianctl COMMAND --help` for a command\n"
    "\n"
    "ENVIRONMENT\n"
    "  MERIDIAN_URL     controller URLs, comma-separated\n"
    "  MERIDIAN_TOKEN   API token\n"
    "  Flags win over the environment, the environment over --config.\n"
    "\n"
    "EXIT STATUS\n"
    "  0  success (for --wait: the operation is done, or its cutover is complete\n"
    "     and only the old primary's rejoin is pending)\n"
    "  1  the operation aborted or failed (or the checkpoint waited for was lost)\n"
    "  2  usage error (bad command line or config file)\n"
    "  3  refused by the API (4xx): the error code and message are printed\n"
    "  4  no controller reachable, or a server error (5xx)\n"
    "  5  --wait timed out or was interrupted (the operation goes on; for\n"
    "     checkpoint create --wait: some regions have not reached it yet)\n"
    "\n"
    "EXAMPLES\n"
    "  export MERIDIAN_URL=http://ctl-eu:7001,http://ctl-us:7001\n"
    "  export MERIDIAN_TOKEN=...\n"
    "  meridianctl status\n"
    "  meridianctl plan orders --to us\n"
    "  meridianctl switchover orders --to us --expect-primary eu --wait\n"
    "  meridianctl operations 42\n"
    "  meridianctl events --follow --service orders\n"
    "  meridianctl checkpoint create orders --wait --timeout 30\n"
    "  meridianctl recovery orders\n";

int mrd__cli_usage(FILE *out, const char *command)
{
    if (command == NULL) {
        fputs(manual_head, out);
        for (size_t i = 0; i < NCOMMANDS; i++)
            fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
        fputs(manual_tail, out);
        return 0;
    }
    const cli_command *c = command_find(command);
    if (c == NULL)
        return MRD_ENOTFOUND;
    fprintf(out, "usage: meridianctl %s\n\n%s", c->synopsis, c->page);
    fputs("\nGlobal options: --url URL, --token TOKEN, --config FILE, --json, --no-color\n"
          "(see meridianctl --help).\n",
          out);
    return 0;
}

/* ---- settings ------------------------------------------------------------ */

void mrd__cli_settings_free(mrd__cli_settings *s)
{
    for (size_t i = 0; i < s->nurls; i++)
        free(s->urls[i]);
    free(s->token);
    memset(s, 0, sizeof(*s));
}

/* Splits a comma-separated list and appends each URL (checked, without a
 * trailing '/'). */
static int add_urls(mrd__cli_settings *s, const char *list, const char *from, char *err,
                    size_t errlen)
{
    const char *p = list;
    for (int guard = 0; guard < 1000; guard++) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            n--;
        }
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        while (n > 0 && p[n - 1] == '/')
            n--;
        if (n > 0) {
            if (!((n > 7 && strncmp(p, "http://", 7) == 0) ||
                  (n > 8 && strncmp(p, "https://", 8) == 0))) {
                snprintf(err, errlen, "%s: \"%.*s\" is not an http:// or https:// URL", from,
                         (int)(n > 60 ? 60 : n), p);
                return MRD_EINVAL;
            }
            if (n > 400) {
                snprintf(err, errlen, "%s: URL too long", from);
                return MRD_EINVAL;
            }
            if (s->nurls == MRD__CLI_MAX_URLS) {
                snprintf(err, errlen, "%s: too many URLs (at most %d)", from, MRD__CLI_MAX_URLS);
                return MRD_EINVAL;
            }
            s->urls[s->nurls] = strndup(p, n);
            if (s->urls[s->nurls] == NULL) {
                snprintf(err, errlen, "out of memory");
                return MRD_ENOMEM;
            }
            s->nurls++;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return 0;
}

int mrd__cli_settings_resolve(const mrd__cli_args *a, const char *env_url, const char *env_token,
                              const json_t *cfg, mrd__cli_settings *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    const char *cfg_token = NULL;
    const json_t *cfg_urls = NULL;
    if (cfg != NULL) {
        if (!json_is_object(cfg)) {
            snprintf(err, errlen, "config file: must be a JSON object");
            return MRD_ECONFIG;
        }
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)cfg, key, v)
        {
            if (strcmp(key, "urls") == 0) {
                int ok = json_is_string(v);
                if (json_is_array(v)) {
                    ok = 1;
                    size_t i;
                    json_t *u;
                    json_array_foreach(v, i, u) ok = ok && json_is_string(u);
                }
                if (!ok) {
                    snprintf(err, errlen,
                             "config file: urls: must be a list of strings or one string");
                    return MRD_ECONFIG;
                }
                cfg_urls = v;
            } else if (strcmp(key, "token") == 0) {
                if (!json_is_string(v)) {
                    snprintf(err, errlen, "config file: token: must be a string");
                    return MRD_ECONFIG;
                }
                cfg_token = json_string_value(v);
            } else {
                snprintf(err, errlen, "config file: %.60s: unknown key (known: urls, token)", key);
                return MRD_ECONFIG;
            }
        }
    }
    int rc = 0;
    if (a->nurls > 0) {
        for (size_t i = 0; rc == 0 && i < a->nurls; i++)
            rc = add_urls(s, a->urls[i], "--url", err, errlen);
    } else if (env_url && env_url[0]) {
        rc = add_urls(s, env_url, "MERIDIAN_URL", err, errlen);
    } else if (cfg_urls) {
        if (json_is_string(cfg_urls)) {
            rc = add_urls(s, json_string_value(cfg_urls), "config file urls", err, errlen);
        } else {
            size_t i;
            json_t *u;
            json_array_foreach(cfg_urls, i, u)
            {
                if (rc == 0)
                    rc = add_urls(s, json_string_value(u), "config file urls", err, errlen);
            }
        }
    }
    if (rc == 0 && s->nurls == 0) {
        snprintf(err, errlen, "no controller URL: give --url, MERIDIAN_URL or a config file");
        rc = MRD_EINVAL;
    }
    const char *token = a->token ? a->token : (env_token && env_token[0]) ? env_token : cfg_token;
    if (rc == 0 && token) {
        if (strpbrk(token, "\r\n") != NULL) {
            snprintf(err, errlen, "token: must not contain a line break");
            rc = MRD_EINVAL;
        } else if ((s->token = strdup(token)) == NULL) {
            snprintf(err, errlen, "out of memory");
            rc = MRD_ENOMEM;
        }
    }
    if (rc != 0)
        mrd__cli_settings_free(s);
    return rc;
}
