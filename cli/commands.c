/*
 * meridianctl's commands: each asks the controller's REST API (through
 * client.c) and prints the answer as aligned tables (format.c) or, with
 * --json, as the API's JSON. Called by main.c through mrd__cli_run.
 *
 * Exit codes follow cli.h: a 4xx answer is printed with its error code and
 * message (3); no answer or a 5xx is 4; an operation that aborted is 1;
 * --wait past --timeout is 5 (checkpoint create --wait: 0 complete, 1 lost,
 * 5 regions still pending). Polling loops (events --follow, --wait) are
 * bounded by their deadline and end early on SIGINT/SIGTERM, which they
 * block and collect with sigtimedwait, so no signal handler or global state
 * is needed; every HTTP exchange is itself bounded by the client's timeout.
 * The checkpoint long-poll holds each exchange up to 60 s (the client's
 * bound is raised for it); Ctrl-C there ends the program at once.
 * Text that came from the server is sanitised before it reaches a terminal.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cli.h"
#include "meridian/error.h"
#include "meridian/position.h"

/* ---- small helpers -------------------------------------------------------- */

void mrd__cli_error(FILE *err, const char *detail, const char *fmt, ...)
{
    char msg[600], clean[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(err, "meridianctl: error: %s\n", mrd__cli_sanitize(msg, clean, sizeof(clean)));
    if (detail && detail[0])
        fprintf(err, "%s\n", detail);
}

static const char *js(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* Integer or real member; 0 and *ok = 0 when absent or null. */
static int64_t jint(const json_t *o, const char *key, int *ok)
{
    json_t *v = json_object_get(o, key);
    int has = json_is_number(v);
    if (ok)
        *ok = has;
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_real(v))
        return (int64_t)json_real_value(v);
    return 0;
}

static int jtrue(const json_t *o, const char *key)
{
    return json_is_true(json_object_get(o, key));
}

static char *bytes_or_dash(const json_t *o, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        snprintf(buf, len, "-");
    else
        mrd__cli_fmt_bytes(json_number_value(v), buf, len);
    return buf;
}

static char *ms_or_dash(const json_t *o, const char *key, char *buf, size_t len)
{
    int ok;
    int64_t v = jint(o, key, &ok);
    if (!ok)
        snprintf(buf, len, "-");
    else
        mrd__cli_fmt_ms(v, buf, len);
    return buf;
}

static char *pos_text(const json_t *o, const char *key, char *buf, size_t len)
{
    uint64_t p;
    json_t *v = json_object_get(o, key);
    if (json_is_real(v) && json_real_value(v) >= 0)
        p = (uint64_t)json_real_value(v);
    else if (mrd_pos_from_json(v, &p) != 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    if (mrd_pos_format(p, buf, len) < 0)
        snprintf(buf, len, "?");
    return buf;
}

static void print_json(mrd__cli_ctx *ctx, const json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) {
        fprintf(ctx->out, "%s\n", s);
        free(s);
    }
}

/* Copies text into buf with "detail: " before each line. */
static void prefix_lines(const char *text, char *buf, size_t len)
{
    size_t o = strlen(buf);
    const char *p = text;
    for (int guard = 0; *p && guard < 64; guard++) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        snprintf(buf + o, len - o, "%sdetail: %.*s", o ? "\n" : "", n, p);
        o = strlen(buf);
        if (nl == NULL)
            break;
        p = nl + 1;
    }
}

/* Reports a failed exchange and returns its exit code. */
static int api_fail(mrd__cli_ctx *ctx, int rc, const mrd__cli_resp *r)
{
    if (rc != 0 || r->status == 0) {
        char detail[1600] = "";
        prefix_lines(r->error[0] ? r->error : "no controller URL", detail, sizeof(detail));
        size_t n = strlen(detail);
        snprintf(detail + n, sizeof(detail) - n,
                 "\nhint: check --url / MERIDIAN_URL and that a controller is running");
        mrd__cli_error(ctx->err, detail, "cannot reach any controller");
        return MRD__CLI_EXIT_UNREACHABLE;
    }
    json_t *e = json_object_get(r->json, "error");
    const char *code = js(e, "code"), *message = js(e, "message");
    char detail[1400], where[600];
    snprintf(where, sizeof(where), "detail: HTTP %d from %.500s", r->status, r->url);
    const char *hint = "";
    if (code && strcmp(code, "unauthorized") == 0)
        hint = "\nhint: give a valid token with --token or MERIDIAN_TOKEN";
    else if (code && strcmp(code, "forbidden") == 0)
        hint = "\nhint: this command needs a token with the operator role";
    else if (code && strcmp(code, "no_leader") == 0)
        hint = "\nhint: no controller holds the lease right now; retry in a few seconds";
    else if (code && strcmp(code, "conflict") == 0)
        hint = "\nhint: see `meridianctl status` for the current primary, epoch and operation";
    snprintf(detail, sizeof(detail), "%s%s", where, hint);
    if (r->status >= 500 && r->error[0])
        prefix_lines(r->error, detail, sizeof(detail));
    if (ctx->json && r->json)
        print_json(ctx, r->json);
    if (code)
        mrd__cli_error(ctx->err, detail, "%s: %s", code, message ? message : "(no message)");
    else
        mrd__cli_error(ctx->err, detail, "unexpected answer (HTTP %d)", r->status);
    if (r->status >= 400 && r->status < 500)
        return MRD__CLI_EXIT_REFUSED;
    return MRD__CLI_EXIT_UNREACHABLE;
}

/* GET/POST/PUT; returns 0 when the answer is 2xx with a JSON object, else
 * reports and returns the exit code (r is cleared then). */
static int call(mrd__cli_ctx *ctx, const char *method, const char *path, const json_t *body,
                const char *const *headers, mrd__cli_resp *r)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && text == NULL) {
        mrd__cli_error(ctx->err, NULL, "out of memory");
        return MRD__CLI_EXIT_FAILED;
    }
    int rc = mrd__cli_request(ctx->client, method, path, text, headers, r);
    free(text);
    if (rc == 0 && r->status >= 200 && r->status < 300 && json_is_object(r->json))
        return 0;
    int ex;
    if (rc == 0 && r->status >= 200 && r->status < 300) {
        mrd__cli_error(ctx->err, NULL, "the controller answered something that is not JSON");
        ex = MRD__CLI_EXIT_UNREACHABLE;
    } else {
        ex = api_fail(ctx, rc, r);
    }
    mrd__cli_resp_clear(r);
    return ex;
}

static int get(mrd__cli_ctx *ctx, const char *path, mrd__cli_resp *r)
{
    return call(ctx, "GET", path, NULL, NULL, r);
}

/* "/v1/services/<escaped name><suffix>" */
static int svc_path(mrd__cli_ctx *ctx, const char *name, const char *suffix, char *buf, size_t len)
{
    snprintf(buf, len, "/v1/services/");
    if (mrd__cli_url_escape(name, buf, len) != 0 || strlen(buf) + strlen(suffix) + 1 > len) {
        mrd__cli_error(ctx->err, NULL, "service name too long");
        return MRD__CLI_EXIT_USAGE;
    }
    size_t n = strlen(buf);
    snprintf(buf + n, len - n, "%s", suffix);
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Blocks SIGINT and SIGTERM (collected by sleep_or_signal); old keeps the
 * previous mask. */
static void signals_block(sigset_t *old)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    sigprocmask(SIG_BLOCK, &s, old);
}

static void signals_restore(const sigset_t *old)
{
    sigprocmask(SIG_SETMASK, old, NULL);
}

/* Sleeps ms; returns the signal number if SIGINT/SIGTERM came, else 0. */
static int sleep_or_signal(long ms)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGTERM);
    if (ms < 0)
        ms = 0;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    for (int i = 0; i < 100; i++) { /* EINTR from other signals: bounded retries */
        int sig = sigtimedwait(&s, NULL, &ts);
        if (sig > 0)
            return sig;
        if (errno != EINTR)
            return 0;
    }
    return 0;
}

static const char *health_word(const json_t *m, mrd__cli_color *c)
{
    if (jtrue(m, "fenced")) {
        *c = MRD__CLI_YELLOW;
        return "fenced";
    }
    if (jtrue(m, "healthy")) {
        *c = MRD__CLI_GREEN;
        return "healthy";
    }
    *c = MRD__CLI_RED;
    return "unhealthy";
}

/* recovery: the service's /recovery document for an RPO column per member's
 * region, or NULL for no such column. */
static void print_members(mrd__cli_ctx *ctx, const json_t *members, const json_t *recovery,
                          const char *indent)
{
    if (json_array_size(members) == 0) {
        fprintf(ctx->out, "%sno member has reported yet (are the agents running?)\n", indent);
        return;
    }
    static const char *const hdr[] = {"MEMBER", "REGION",   "NODE",     "ROLE",      "HEALTH",
                                      "LAG",    "LAG TIME", "POSITION", "HEARTBEAT", "RPO"};
    mrd__cli_table *t = mrd__cli_table_new(recovery ? 10 : 9, hdr);
    if (t == NULL)
        return;
    mrd__cli_table_align_right(t, 5);
    mrd__cli_table_align_right(t, 6);
    mrd__cli_table_align_right(t, 8);
    mrd__cli_table_align_right(t, 9);
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m)
    {
        char b1[32], b2[32], b3[32], b4[MRD_POS_STRLEN], b5[32];
        mrd__cli_color hc;
        const char *h = health_word(m, &hc);
        const char *role = js(m, "role");
        int ok;
        int64_t age = jint(m, "age_ms", &ok);
        mrd__cli_table_row(t);
        mrd__cli_table_cell(t, 0, js(m, "name"));
        mrd__cli_table_cell(t, 0, js(m, "region"));
        mrd__cli_table_cell(t, 0, js(m, "node"));
        mrd__cli_table_cell(t, role && strcmp(role, "primary") == 0 ? MRD__CLI_BOLD : 0, role);
        mrd__cli_table_cell(t, hc, h);
        mrd__cli_table_cell(t, 0, bytes_or_dash(m, "lag_bytes", b1, sizeof(b1)));
        mrd__cli_table_cell(t, 0, ms_or_dash(m, "lag_ms", b2, sizeof(b2)));
        mrd__cli_table_cell(
            t, 0,
            pos_text(m, role && strcmp(role, "primary") == 0 ? "position" : "replay_position", b4,
                     sizeof(b4)));
        if (ok)
            mrd__cli_table_cellf(t, age > 5000 ? MRD__CLI_RED : 0, "%s ago",
                                 mrd__cli_fmt_ms(age, b3, sizeof(b3)));
        else
            mrd__cli_table_cell(t, 0, "never");
        if (recovery)
            mrd__cli_table_cell(t, 0, mrd__cli_fmt_rpo(recovery, js(m, "region"), b5, sizeof(b5)));
    }
    mrd__cli_table_print(t, ctx->out, indent, ctx->color);
    mrd__cli_table_free(t);
}

static void op_summary(const json_t *op, char *buf, size_t len)
{
    char clean[200];
    if (!json_is_object(op)) {
        snprintf(buf, len, "none");
        return;
    }
    int ok;
    int64_t id = jint(op, "id", &ok);
    snprintf(buf, len, "%" PRId64 " %s to %s (step %s)", id, js(op, "kind") ? js(op, "kind") : "?",
             js(op, "to_region") ? js(op, "to_region") : "?",
             js(op, "step") ? js(op, "step") : "?");
    mrd__cli_sanitize(buf, clean, sizeof(clean));
    snprintf(buf, len, "%s", clean);
}

static void print_service_block(mrd__cli_ctx *ctx, const json_t *s, const json_t *recovery)
{
    char opbuf[200], clean[200], reason[200];
    op_summary(json_object_get(s, "operation"), opbuf, sizeof(opbuf));
    const char *mr = js(s, "maintenance_reason");
    snprintf(reason, sizeof(reason), "%s%s%s", mr ? " (" : "", mr ? mr : "", mr ? ")" : "");
    fprintf(ctx->out, "service %s: primary %s, epoch %" PRId64 ", maintenance %s%s, operation %s\n",
            mrd__cli_sanitize(js(s, "name"), clean, sizeof(clean)),
            js(s, "primary_region") ? js(s, "primary_region") : "-", jint(s, "epoch", NULL),
            jtrue(s, "maintenance") ? "on" : "off", reason, opbuf);
    print_members(ctx, json_object_get(s, "members"), recovery, "  ");
}

/* ---- status, services, nodes, regions ----------------------------------- */

/* The service's /recovery document (a new reference), or NULL when the call
 * fails for any reason: status then shows "-" and says nothing. */
static json_t *recovery_quiet(mrd__cli_ctx *ctx, const char *service)
{
    char path[600];
    if (service == NULL)
        return NULL;
    snprintf(path, sizeof(path), "/v1/services/");
    if (mrd__cli_url_escape(service, path, sizeof(path) - 16) != 0)
        return NULL;
    size_t n = strlen(path);
    snprintf(path + n, sizeof(path) - n, "/recovery");
    mrd__cli_resp r;
    json_t *doc = NULL;
    if (mrd__cli_request(ctx->client, "GET", path, NULL, NULL, &r) == 0 && r.status == 200 &&
        json_is_object(r.json))
        doc = json_incref(r.json);
    mrd__cli_resp_clear(&r);
    return doc;
}

static int cmd_status(mrd__cli_ctx *ctx)
{
    mrd__cli_resp st, sv;
    int ex = get(ctx, "/v1/status", &st);
    if (ex)
        return ex;
    ex = get(ctx, "/v1/services", &sv);
    if (ex) {
        mrd__cli_resp_clear(&st);
        return ex;
    }
    json_t *services = json_object_get(sv.json, "services");
    size_t i;
    json_t *s;
    if (ctx->json) {
        json_array_foreach(services, i, s)
        {
            json_t *rec = recovery_quiet(ctx, js(s, "name"));
            json_object_set_new(s, "recovery", rec ? rec : json_null());
        }
        json_object_set(st.json, "services", services ? services : json_array());
        print_json(ctx, st.json);
        mrd__cli_resp_clear(&st);
        mrd__cli_resp_clear(&sv);
        return 0;
    }
    char c1[128], c2[128], b[32];
    json_t *me = json_object_get(st.json, "controller");
    json_t *ld = json_object_get(st.json, "leader");
    json_t *store = json_object_get(st.json, "store");
    /* a follower's own term is that of its last lease, if any: not worth showing */
    fprintf(ctx->out, "controller  %s (region %s), %s\n",
            mrd__cli_sanitize(js(me, "name"), c1, sizeof(c1)),
            mrd__cli_sanitize(js(me, "region"), c2, sizeof(c2)),
            jtrue(me, "is_leader") ? "leader" : "follower");
    if (json_is_object(ld)) {
        fprintf(ctx->out, "leader      %s (region %s), term %" PRId64 ", lease expires in %s\n",
                mrd__cli_sanitize(js(ld, "name"), c1, sizeof(c1)),
                mrd__cli_sanitize(js(ld, "region"), c2, sizeof(c2)), jint(ld, "term", NULL),
                mrd__cli_fmt_ms(jint(ld, "expires_in_ms", NULL), b, sizeof(b)));
    } else {
        fprintf(ctx->out, "leader      %snone known%s\n", ctx->color ? "\033[31m" : "",
                ctx->color ? "\033[0m" : "");
    }
    fprintf(ctx->out, "store       %s, %s\n",
            jtrue(store, "connected") ? "connected" : "NOT CONNECTED",
            jtrue(store, "migrated") ? "migrated" : "not migrated");
    if (json_array_size(services) == 0)
        fprintf(ctx->out, "\nno services configured\n");
    json_array_foreach(services, i, s)
    {
        json_t *rec = recovery_quiet(ctx, js(s, "name"));
        fputc('\n', ctx->out);
        /* an empty document still gives the column, all "-" */
        json_t *empty = rec ? NULL : json_object();
        print_service_block(ctx, s, rec ? rec : empty);
        json_decref(rec);
        json_decref(empty);
    }
    mrd__cli_resp_clear(&st);
    mrd__cli_resp_clear(&sv);
    return 0;
}

static void print_decision_line(mrd__cli_ctx *ctx, const char *label, const json_t *d)
{
    char c1[300], c2[80];
    const char *target = js(d, "target_region");
    snprintf(c2, sizeof(c2), "%s%s%s%s", target ? " -> " : "", target ? target : "",
             target ? "/" : "", target ? (js(d, "target_node") ? js(d, "target_node") : "") : "");
    fprintf(ctx->out, "%-11s %s%s (%s): %s\n", label, js(d, "decision") ? js(d, "decision") : "?",
            mrd__cli_sanitize(c2, c1, 80), js(d, "reason") ? js(d, "reason") : "?",
            mrd__cli_sanitize(js(d, "message"), c1 + 100, 200));
}

static int cmd_services(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    mrd__cli_resp r;
    if (a->npos == 1) {
        char path[600];
        int ex = svc_path(ctx, a->pos[0], "", path, sizeof(path));
        if (ex || (ex = get(ctx, path, &r)) != 0)
            return ex;
        if (ctx->json) {
            print_json(ctx, r.json);
        } else {
            char c1[200], b[32];
            print_service_block(ctx, r.json, NULL);
            fprintf(ctx->out, "\nprofile     %s\n",
                    mrd__cli_sanitize(js(r.json, "profile"), c1, sizeof(c1)));
            const char *lf = js(r.json, "last_failover_at");
            fprintf(ctx->out, "failed over %s\n",
                    lf ? mrd__cli_fmt_time(lf, b, sizeof(b)) : "never");
            json_t *drivers = json_object_get(r.json, "drivers");
            const char *dname;
            json_t *dv;
            json_object_foreach(drivers, dname, dv)
            {
                if (!jtrue(dv, "configured")) {
                    fprintf(ctx->out, "%-11s not configured\n", dname);
                    continue;
                }
                const char *le = js(dv, "last_error");
                fprintf(ctx->out, "%-11s epoch %" PRId64 ", %" PRId64 " attempt(s)%s%s\n", dname,
                        jint(dv, "epoch", NULL), jint(dv, "attempts", NULL),
                        le && le[0] ? ", last error: " : "",
                        le && le[0] ? mrd__cli_sanitize(le, c1, sizeof(c1)) : "");
            }
            json_t *d = json_object_get(r.json, "decision");
            if (json_is_object(d))
                print_decision_line(ctx, "decision", d);
        }
        mrd__cli_resp_clear(&r);
        return 0;
    }
    int ex = get(ctx, "/v1/services", &r);
    if (ex)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    static const char *const hdr[] = {"SERVICE", "PRIMARY", "EPOCH",    "MAINTENANCE",
                                      "HEALTHY", "MEMBERS", "OPERATION"};
    mrd__cli_table *t = mrd__cli_table_new(7, hdr);
    if (t == NULL) {
        mrd__cli_resp_clear(&r);
        return MRD__CLI_EXIT_FAILED;
    }
    mrd__cli_table_align_right(t, 2);
    size_t i, k;
    json_t *s, *m;
    json_array_foreach(json_object_get(r.json, "services"), i, s)
    {
        size_t healthy = 0, n = 0;
        json_array_foreach(json_object_get(s, "members"), k, m)
        {
            n++;
            healthy += jtrue(m, "healthy") && !jtrue(m, "fenced");
        }
        char opbuf[200];
        op_summary(json_object_get(s, "operation"), opbuf, sizeof(opbuf));
        mrd__cli_table_row(t);
        mrd__cli_table_cell(t, 0, js(s, "name"));
        mrd__cli_table_cell(t, 0, js(s, "primary_region"));
        mrd__cli_table_cellf(t, 0, "%" PRId64, jint(s, "epoch", NULL));
        mrd__cli_table_cell(t, jtrue(s, "maintenance") ? MRD__CLI_YELLOW : 0,
                            jtrue(s, "maintenance") ? "on" : "off");
        mrd__cli_table_cellf(t, healthy < n ? MRD__CLI_YELLOW : 0, "%zu/%zu", healthy, n);
        mrd__cli_table_cellf(t, 0, "%zu", n);
        mrd__cli_table_cell(t, 0, opbuf);
    }
    mrd__cli_table_print(t, ctx->out, "", ctx->color);
    mrd__cli_table_free(t);
    mrd__cli_resp_clear(&r);
    return 0;
}

static void node_row(mrd__cli_table *t, const json_t *n)
{
    char b[32], members[300] = "";
    int ok;
    int64_t age = jint(n, "age_ms", &ok);
    size_t k;
    json_t *m;
    json_array_foreach(json_object_get(n, "members"), k, m)
    {
        size_t len = strlen(members);
        snprintf(members + len, sizeof(members) - len, "%s%s/%s %s", len ? ", " : "",
                 js(m, "service") ? js(m, "service") : "?", js(m, "name") ? js(m, "name") : "?",
                 js(m, "role") ? js(m, "role") : "?");
    }
    size_t failing = 0, nchecks = 0;
    json_t *c;
    json_array_foreach(json_object_get(n, "checks"), k, c)
    {
        nchecks++;
        const char *st = js(c, "status");
        failing += st && strcmp(st, "passing") != 0;
    }
    mrd__cli_table_row(t);
    mrd__cli_table_cell(t, 0, js(n, "name"));
    mrd__cli_table_cell(t, 0, js(n, "region"));
    if (ok)
        mrd__cli_table_cellf(t, age > 5000 ? MRD__CLI_RED : 0, "%s ago",
                             mrd__cli_fmt_ms(age, b, sizeof(b)));
    else
        mrd__cli_table_cell(t, 0, "never");
    mrd__cli_table_cell(t, 0, js(n, "via"));
    mrd__cli_table_cellf(t, failing ? MRD__CLI_RED : 0, "%zu/%zu", nchecks - failing, nchecks);
    mrd__cli_table_cell(t, 0, members[0] ? members : "-");
}

static int cmd_nodes(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    mrd__cli_resp r;
    char path[600] = "/v1/nodes";
    if (a->npos == 1) {
        snprintf(path, sizeof(path), "/v1/nodes/");
        if (mrd__cli_url_escape(a->pos[0], path, sizeof(path)) != 0) {
            mrd__cli_error(ctx->err, NULL, "node name too long");
            return MRD__CLI_EXIT_USAGE;
        }
    }
    int ex = get(ctx, path, &r);
    if (ex)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    static const char *const hdr[] = {"NODE", "REGION", "HEARTBEAT", "VIA", "CHECKS OK", "MEMBERS"};
    mrd__cli_table *t = mrd__cli_table_new(6, hdr);
    if (t == NULL) {
        mrd__cli_resp_clear(&r);
        return MRD__CLI_EXIT_FAILED;
    }
    mrd__cli_table_align_right(t, 2);
    if (a->npos == 1) {
        node_row(t, r.json);
    } else {
        size_t i;
        json_t *n;
        json_array_foreach(json_object_get(r.json, "nodes"), i, n) node_row(t, n);
    }
    if (a->npos == 0 && json_array_size(json_object_get(r.json, "nodes")) == 0)
        fprintf(ctx->out, "no node has reported yet (are the agents running?)\n");
    else
        mrd__cli_table_print(t, ctx->out, "", ctx->color);
    mrd__cli_table_free(t);
    if (a->npos == 1) {
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(r.json, "checks"), i, c)
        {
            char c1[80], c2[300];
            const char *st = js(c, "status");
            fprintf(ctx->out, "%scheck %s: %s%s%s\n", i == 0 ? "\n" : "",
                    mrd__cli_sanitize(js(c, "name"), c1, sizeof(c1)), st ? st : "?",
                    js(c, "output") ? " - " : "",
                    mrd__cli_sanitize(js(c, "output"), c2, sizeof(c2)));
        }
        json_array_foreach(json_object_get(r.json, "probes"), i, c)
        {
            char c1[80], c2[200];
            fprintf(ctx->out, "%sprobe %s (%s): %s\n", i == 0 ? "\n" : "",
                    mrd__cli_sanitize(js(c, "region"), c1, sizeof(c1)),
                    mrd__cli_sanitize(js(c, "target"), c2, sizeof(c2)),
                    jtrue(c, "ok") ? "ok" : "failing");
        }
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

static int cmd_regions(mrd__cli_ctx *ctx)
{
    mrd__cli_resp r;
    int ex = get(ctx, "/v1/regions", &r);
    if (ex)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    static const char *const hdr[] = {"REGION", "PRIORITY"};
    mrd__cli_table *t = mrd__cli_table_new(2, hdr);
    if (t) {
        mrd__cli_table_align_right(t, 1);
        size_t i;
        json_t *g;
        json_array_foreach(json_object_get(r.json, "regions"), i, g)
        {
            mrd__cli_table_row(t);
            mrd__cli_table_cell(t, 0, js(g, "name"));
            mrd__cli_table_cellf(t, 0, "%" PRId64, jint(g, "priority", NULL));
        }
        mrd__cli_table_print(t, ctx->out, "", ctx->color);
        mrd__cli_table_free(t);
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

/* ---- events ---------------------------------------------------------------- */

static void event_line(mrd__cli_ctx *ctx, const json_t *e)
{
    char t[32], kind[80], svc[80], actor[80], msg[600];
    if (ctx->json) {
        char *s = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s)
            fprintf(ctx->out, "%s\n", s);
        free(s);
    } else {
        fprintf(ctx->out, "%6" PRId64 "  %s  %-16s %-12s %-10s %s\n", jint(e, "id", NULL),
                mrd__cli_fmt_time(js(e, "at"), t, sizeof(t)),
                mrd__cli_sanitize(js(e, "kind"), kind, sizeof(kind)),
                js(e, "service") ? mrd__cli_sanitize(js(e, "service"), svc, sizeof(svc)) : "-",
                mrd__cli_sanitize(js(e, "actor"), actor, sizeof(actor)),
                mrd__cli_sanitize(js(e, "message"), msg, sizeof(msg)));
    }
    fflush(ctx->out);
}

/* One page of events after *after; appends them to acc and moves *after.
 * Returns 0 or an exit code; *n = events in the page. With *warned non-NULL
 * (following), no answer or a 5xx is noted once on stderr and returns -1. */
static int events_page(mrd__cli_ctx *ctx, int64_t *after, json_t *acc, size_t *n, int *warned)
{
    char path[400], svc[300] = "";
    *n = 0;
    if (ctx->args->service && mrd__cli_url_escape(ctx->args->service, svc, sizeof(svc)) != 0) {
        mrd__cli_error(ctx->err, NULL, "service name too long");
        return MRD__CLI_EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "/v1/events?after=%" PRId64 "&limit=1000%s%s", *after,
             svc[0] ? "&service=" : "", svc);
    mrd__cli_resp r;
    int rc = mrd__cli_request(ctx->client, "GET", path, NULL, NULL, &r);
    if (warned && (rc != 0 || r.status >= 500)) {
        if (!*warned)
            mrd__cli_error(ctx->err, r.error, "no controller answers; still trying");
        *warned = 1;
        mrd__cli_resp_clear(&r);
        return -1;
    }
    if (rc != 0 || r.status != 200 || !json_is_object(r.json)) {
        int ex = api_fail(ctx, rc, &r);
        mrd__cli_resp_clear(&r);
        return ex;
    }
    if (warned)
        *warned = 0;
    json_t *events = json_object_get(r.json, "events");
    *n = json_array_size(events);
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        int ok;
        int64_t id = jint(e, "id", &ok);
        if (ok && id > *after)
            *after = id;
        json_array_append(acc, e);
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

static void trim_front(json_t *acc, long limit)
{
    if (limit > 0)
        while (json_array_size(acc) > (size_t)limit)
            json_array_remove(acc, 0);
}

static int cmd_events(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    int64_t after = a->after >= 0 ? a->after : 0;
    long keep = a->after < 0 ? a->limit : 0;
    json_t *acc = json_array();
    if (acc == NULL)
        return MRD__CLI_EXIT_FAILED;
    /* catch up: page through (bounded: 10 million events) */
    int ex = 0;
    for (int page = 0; page < 10000; page++) {
        size_t n = 0;
        ex = events_page(ctx, &after, acc, &n, NULL);
        trim_front(acc, keep);
        if (ex || n < 1000)
            break;
    }
    if (ex) {
        json_decref(acc);
        return ex;
    }
    if (ctx->json && !a->follow) {
        json_t *doc = json_pack("{s:O, s:I}", "events", acc, "last_id", (json_int_t)after);
        if (doc)
            print_json(ctx, doc);
        json_decref(doc);
        json_decref(acc);
        return 0;
    }
    if (!ctx->json)
        fprintf(ctx->out, "%6s  %-19s  %-16s %-12s %-10s %s\n", "ID", "TIME", "KIND", "SERVICE",
                "ACTOR", "MESSAGE");
    size_t i;
    json_t *e;
    json_array_foreach(acc, i, e) event_line(ctx, e);
    json_array_clear(acc);
    if (!a->follow) {
        json_decref(acc);
        return 0;
    }
    sigset_t old;
    signals_block(&old);
    int64_t deadline = a->max_seconds > 0 ? now_ms() + (int64_t)(a->max_seconds * 1000) : 0;
    int warned = 0;
    for (;;) {
        int64_t left = deadline ? deadline - now_ms() : 500;
        if (left <= 0 || sleep_or_signal(left < 500 ? left : 500))
            break;
        size_t n = 0;
        ex = events_page(ctx, &after, acc, &n, &warned);
        if (ex > 0)
            break;
        ex = 0;
        json_array_foreach(acc, i, e) event_line(ctx, e);
        json_array_clear(acc);
    }
    signals_restore(&old);
    json_decref(acc);
    return ex;
}

/* ---- operations ------------------------------------------------------------ */

static const char *outcome_of(const json_t *op)
{
    const char *o = js(op, "outcome");
    return o ? o : js(op, "finished_at") ? "finished" : "running";
}

static mrd__cli_color outcome_color(const char *o)
{
    if (o == NULL)
        return 0;
    if (strcmp(o, "done") == 0 || strcmp(o, "ok") == 0)
        return MRD__CLI_GREEN;
    if (strcmp(o, "running") == 0)
        return MRD__CLI_YELLOW;
    return MRD__CLI_RED;
}

/* A step's detail without the "<outcome>: " the controller puts first. */
static const char *step_detail(const json_t *st)
{
    const char *d = js(st, "detail"), *o = js(st, "outcome");
    if (d == NULL)
        return "";
    size_t n = o ? strlen(o) : 0;
    if (n && strncmp(d, o, n) == 0 && d[n] == ':' && d[n + 1] == ' ')
        return d + n + 2;
    return d;
}

static void print_step_line(mrd__cli_ctx *ctx, const json_t *st)
{
    char b[32], step[40], outcome[60], detail[300];
    int64_t attempts = jint(st, "attempts", NULL);
    const char *o = js(st, "outcome");
    fprintf(ctx->out, "  %-9s %9s  %3" PRId64 " attempt%s  %-17s %s\n",
            mrd__cli_sanitize(js(st, "step"), step, sizeof(step)),
            mrd__cli_fmt_ms(jint(st, "duration_ms", NULL), b, sizeof(b)), attempts,
            attempts == 1 ? " " : "s", mrd__cli_sanitize(o ? o : "-", outcome, sizeof(outcome)),
            mrd__cli_sanitize(step_detail(st), detail, sizeof(detail)));
    fflush(ctx->out);
}

static void print_operation(mrd__cli_ctx *ctx, const json_t *op)
{
    char c1[200], c2[200], b1[32], b2[32], b3[32], pos[MRD_POS_STRLEN];
    int ok;
    fprintf(ctx->out, "operation %" PRId64 ": %s of %s from %s to %s (epoch %" PRId64 ")\n",
            jint(op, "id", NULL), js(op, "kind") ? js(op, "kind") : "?",
            mrd__cli_sanitize(js(op, "service"), c1, sizeof(c1)),
            js(op, "from_region") ? js(op, "from_region") : "?",
            js(op, "to_region") ? js(op, "to_region") : "?", jint(op, "epoch", NULL));
    fprintf(ctx->out, "  requested by %s: %s\n", mrd__cli_sanitize(js(op, "actor"), c1, sizeof(c1)),
            mrd__cli_sanitize(js(op, "reason"), c2, sizeof(c2)));
    fprintf(ctx->out, "  started     %s\n",
            mrd__cli_fmt_time(js(op, "started_at"), b1, sizeof(b1)));
    const char *outcome = outcome_of(op);
    const char *oc = ctx->color ? "\033[1m" : "", *oe = ctx->color ? "\033[0m" : "";
    if (js(op, "finished_at"))
        fprintf(ctx->out, "  finished    %s: %s%s%s after %s%s%s\n",
                mrd__cli_fmt_time(js(op, "finished_at"), b2, sizeof(b2)), oc, outcome, oe, oc,
                mrd__cli_fmt_ms(jint(op, "duration_ms", NULL), b3, sizeof(b3)), oe);
    else
        fprintf(ctx->out, "  running     step %s for %s so far%s\n",
                js(op, "step") ? js(op, "step") : "?",
                mrd__cli_fmt_ms(jint(op, "duration_ms", NULL), b3, sizeof(b3)),
                jtrue(op, "rejoin_pending") || (js(op, "step") && !strcmp(js(op, "step"), "rejoin"))
                    ? " (cutover complete; rejoin pending)"
                    : "");
    int64_t lost = jint(op, "lost_bytes", &ok);
    fprintf(ctx->out, "  lost        %s\n",
            ok ? mrd__cli_fmt_bytes((double)lost, b1, sizeof(b1)) : "- (not measured)");
    fprintf(ctx->out, "  barrier     %s\n", pos_text(op, "barrier_position", pos, sizeof(pos)));
    if (jtrue(op, "diverged")) {
        /* the old primary wrote after the promotion (docs/diverged.md) */
        char fork[MRD_POS_STRLEN];
        const char *ec = ctx->color ? "\033[1;31m" : "";
        fprintf(ctx->out,
                "  %sDIVERGED%s    the old primary wrote after the failover: %s beyond"
                " what was counted\n",
                ec, oe,
                mrd__cli_fmt_bytes((double)jint(op, "written_after_failover_bytes", NULL), b1,
                                   sizeof(b1)));
        fprintf(ctx->out, "              %s past the fork %s (old primary reached %s)\n",
                mrd__cli_fmt_bytes((double)jint(op, "diverged_bytes", NULL), b2, sizeof(b2)),
                pos_text(op, "fork_position", fork, sizeof(fork)),
                pos_text(op, "old_seen_position", pos, sizeof(pos)));
    }
    if (js(op, "why"))
        fprintf(ctx->out, "  why         %s\n", mrd__cli_sanitize(js(op, "why"), c1, sizeof(c1)));

    /* where the seconds went */
    int64_t op_start_us = 0, total = jint(op, "duration_ms", NULL);
    int have_start = mrd__cli_time_parse(js(op, "started_at"), &op_start_us) == 0;
    static const char *const hdr[] = {"STEP",     "START",   "DURATION", "SHARE",
                                      "ATTEMPTS", "OUTCOME", "DETAIL"};
    mrd__cli_table *t = mrd__cli_table_new(7, hdr);
    if (t == NULL)
        return;
    mrd__cli_table_align_right(t, 1);
    mrd__cli_table_align_right(t, 2);
    mrd__cli_table_align_right(t, 4);
    size_t i;
    json_t *st;
    json_array_foreach(json_object_get(op, "steps"), i, st)
    {
        int64_t us, d = jint(st, "duration_ms", NULL);
        char off[32] = "?", bar[48];
        if (have_start && mrd__cli_time_parse(js(st, "started_at"), &us) == 0) {
            off[0] = '+';
            mrd__cli_fmt_ms((us - op_start_us) / 1000, off + 1, sizeof(off) - 1);
        }
        int pct = total > 0 ? (int)((d * 100 + total / 2) / total) : 0;
        if (pct > 100)
            pct = 100;
        int width = total > 0 ? (int)((d * 20 + total / 2) / total) : 0;
        if (width > 20)
            width = 20;
        if (width == 0 && d > 0 && total > 0 && d * 40 >= total)
            width = 1;
        snprintf(bar, sizeof(bar), "%3d%% %.*s", pct, width, "####################");
        const char *o = js(st, "outcome");
        if (o == NULL)
            o = js(st, "finished_at") ? "-" : "running";
        mrd__cli_table_row(t);
        mrd__cli_table_cell(t, 0, js(st, "step"));
        mrd__cli_table_cell(t, 0, off);
        mrd__cli_table_cell(t, 0, mrd__cli_fmt_ms(d, b1, sizeof(b1)));
        mrd__cli_table_cell(t, pct >= 50 ? MRD__CLI_YELLOW : 0, bar);
        mrd__cli_table_cellf(t, jint(st, "attempts", NULL) > 1 ? MRD__CLI_YELLOW : 0, "%" PRId64,
                             jint(st, "attempts", NULL));
        mrd__cli_table_cell(t, outcome_color(o), o);
        mrd__cli_table_cell(t, 0, step_detail(st));
    }
    mrd__cli_table_row(t);
    mrd__cli_table_cell(t, MRD__CLI_BOLD, "total");
    mrd__cli_table_cell(t, 0, "");
    mrd__cli_table_cell(t, MRD__CLI_BOLD, mrd__cli_fmt_ms(total, b1, sizeof(b1)));
    fputc('\n', ctx->out);
    mrd__cli_table_print(t, ctx->out, "", ctx->color);
    mrd__cli_table_free(t);

    json_t *cmds = json_object_get(op, "commands");
    if (json_array_size(cmds) == 0)
        return;
    static const char *const chdr[] = {"COMMAND", "KIND", "NODE",  "EPOCH",
                                       "STATUS",  "TOOK", "RESULT"};
    t = mrd__cli_table_new(7, chdr);
    if (t == NULL)
        return;
    mrd__cli_table_align_right(t, 5);
    json_t *c;
    json_array_foreach(cmds, i, c)
    {
        int64_t a, z;
        char took[32] = "-", res[120] = "";
        if (mrd__cli_time_parse(js(c, "created_at"), &a) == 0 &&
            mrd__cli_time_parse(js(c, "finished_at"), &z) == 0)
            mrd__cli_fmt_ms((z - a) / 1000, took, sizeof(took));
        json_t *rv = json_object_get(c, "result");
        if (rv && !json_is_null(rv)) {
            char *s = json_dumps(rv, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s) {
                snprintf(res, sizeof(res), "%.80s%s", s, strlen(s) > 80 ? "..." : "");
                free(s);
            }
        }
        const char *status = js(c, "status");
        mrd__cli_table_row(t);
        mrd__cli_table_cell(t, 0, js(c, "id"));
        mrd__cli_table_cell(t, 0, js(c, "kind"));
        mrd__cli_table_cell(t, 0, js(c, "node"));
        mrd__cli_table_cellf(t, 0, "%" PRId64, jint(c, "epoch", NULL));
        mrd__cli_table_cell(t,
                            status && strcmp(status, "done") == 0      ? MRD__CLI_GREEN
                            : status && strcmp(status, "pending") == 0 ? MRD__CLI_YELLOW
                                                                       : MRD__CLI_RED,
                            status);
        mrd__cli_table_cell(t, 0, took);
        mrd__cli_table_cell(t, 0, res);
    }
    fputc('\n', ctx->out);
    mrd__cli_table_print(t, ctx->out, "", ctx->color);
    mrd__cli_table_free(t);
}

static int cmd_operations(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    mrd__cli_resp r;
    char path[400];
    if (a->npos == 1) {
        snprintf(path, sizeof(path), "/v1/operations/%s", a->pos[0]); /* digits, checked */
        int ex = get(ctx, path, &r);
        if (ex)
            return ex;
        if (ctx->json)
            print_json(ctx, r.json);
        else
            print_operation(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    snprintf(path, sizeof(path), "/v1/operations");
    if (a->service) {
        snprintf(path, sizeof(path), "/v1/operations?service=");
        if (mrd__cli_url_escape(a->service, path, sizeof(path)) != 0) {
            mrd__cli_error(ctx->err, NULL, "service name too long");
            return MRD__CLI_EXIT_USAGE;
        }
    }
    int ex = get(ctx, path, &r);
    if (ex)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    static const char *const hdr[] = {"ID",      "SERVICE", "KIND",     "FROM", "TO",
                                      "OUTCOME", "STARTED", "DURATION", "ACTOR"};
    mrd__cli_table *t = mrd__cli_table_new(9, hdr);
    if (t) {
        mrd__cli_table_align_right(t, 0);
        mrd__cli_table_align_right(t, 7);
        size_t i;
        json_t *op;
        json_array_foreach(json_object_get(r.json, "operations"), i, op)
        {
            char b1[32], b2[32], step[80];
            const char *o = js(op, "outcome");
            if (o == NULL)
                snprintf(step, sizeof(step), "running (%s)", js(op, "step") ? js(op, "step") : "?");
            mrd__cli_table_row(t);
            mrd__cli_table_cellf(t, 0, "%" PRId64, jint(op, "id", NULL));
            mrd__cli_table_cell(t, 0, js(op, "service"));
            mrd__cli_table_cell(t, 0, js(op, "kind"));
            mrd__cli_table_cell(t, 0, js(op, "from_region"));
            mrd__cli_table_cell(t, 0, js(op, "to_region"));
            mrd__cli_table_cell(t, outcome_color(o ? o : "running"), o ? o : step);
            mrd__cli_table_cell(t, 0, mrd__cli_fmt_time(js(op, "started_at"), b1, sizeof(b1)));
            mrd__cli_table_cell(t, 0, mrd__cli_fmt_ms(jint(op, "duration_ms", NULL), b2, 32));
            mrd__cli_table_cell(t, 0, js(op, "actor"));
        }
        if (json_array_size(json_object_get(r.json, "operations")) == 0)
            fprintf(ctx->out, "no operations\n");
        else
            mrd__cli_table_print(t, ctx->out, "", ctx->color);
        mrd__cli_table_free(t);
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

/* ---- switchover, failover, --wait ---------------------------------------- */

/* Follows operation id until finished, past cutover (step rejoin), timeout
 * or a signal. Returns the exit code. */
static int wait_operation(mrd__cli_ctx *ctx, const char *id)
{
    char path[200];
    snprintf(path, sizeof(path), "/v1/operations/%s", id);
    char printed[32][40];
    size_t nprinted = 0;
    int64_t deadline = now_ms() + (int64_t)(ctx->args->timeout_s * 1000.0);
    sigset_t old;
    signals_block(&old);
    int ex = MRD__CLI_EXIT_TIMEOUT, warned = 0, sig = 0;
    json_t *last = NULL;
    for (;;) {
        mrd__cli_resp r;
        int rc = mrd__cli_request(ctx->client, "GET", path, NULL, NULL, &r);
        if (rc != 0 || r.status >= 500) {
            if (!warned)
                mrd__cli_error(ctx->err, r.error, "no controller answers; still waiting");
            warned = 1;
        } else if (r.status != 200 || !json_is_object(r.json)) {
            ex = api_fail(ctx, 0, &r);
            mrd__cli_resp_clear(&r);
            break;
        } else {
            warned = 0;
            json_decref(last);
            last = json_incref(r.json);
            size_t i;
            json_t *st;
            json_array_foreach(json_object_get(r.json, "steps"), i, st)
            {
                const char *name = js(st, "step");
                if (name == NULL || js(st, "finished_at") == NULL)
                    continue;
                int seen = 0;
                for (size_t k = 0; k < nprinted; k++)
                    seen |= strcmp(printed[k], name) == 0;
                if (seen || nprinted == 32)
                    continue;
                snprintf(printed[nprinted++], sizeof(printed[0]), "%s", name);
                if (!ctx->json)
                    print_step_line(ctx, st);
            }
            const char *step = js(r.json, "step");
            if (js(r.json, "finished_at")) {
                const char *o = outcome_of(r.json);
                char b[32], why[300];
                ex = strcmp(o, "done") == 0 ? MRD__CLI_EXIT_OK : MRD__CLI_EXIT_FAILED;
                if (!ctx->json) {
                    fprintf(ctx->out, "operation %s %s after %s", id, o,
                            mrd__cli_fmt_ms(jint(r.json, "duration_ms", NULL), b, sizeof(b)));
                    int ok;
                    int64_t lost = jint(r.json, "lost_bytes", &ok);
                    if (ok)
                        fprintf(ctx->out, ", lost %s", mrd__cli_fmt_bytes((double)lost, b, 32));
                    if (ex != 0 && js(r.json, "why"))
                        fprintf(ctx->out, ": %s",
                                mrd__cli_sanitize(js(r.json, "why"), why, sizeof(why)));
                    fputc('\n', ctx->out);
                }
                mrd__cli_resp_clear(&r);
                break;
            }
            if (step && strcmp(step, "rejoin") == 0) {
                if (!ctx->json)
                    fprintf(ctx->out, "cutover complete; rejoin pending\n");
                ex = MRD__CLI_EXIT_OK;
                mrd__cli_resp_clear(&r);
                break;
            }
        }
        mrd__cli_resp_clear(&r);
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        if ((sig = sleep_or_signal(left < 100 ? left : 100)) != 0)
            break;
    }
    signals_restore(&old);
    if (ctx->json && last)
        print_json(ctx, last);
    json_decref(last);
    if (ex == MRD__CLI_EXIT_TIMEOUT) {
        char detail[200];
        snprintf(detail, sizeof(detail),
                 "hint: the operation goes on; follow it with `meridianctl operations %s`", id);
        if (sig)
            mrd__cli_error(ctx->err, detail, "interrupted while waiting for operation %s", id);
        else
            mrd__cli_error(ctx->err, detail, "timed out after %.0f s waiting for operation %s",
                           ctx->args->timeout_s, id);
    }
    return ex;
}

static int cmd_start(mrd__cli_ctx *ctx, const char *kind)
{
    const mrd__cli_args *a = ctx->args;
    char path[600];
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "/%s", kind);
    int ex = svc_path(ctx, a->pos[0], suffix, path, sizeof(path));
    if (ex)
        return ex;
    json_t *body = json_object();
    if (a->to)
        json_object_set_new(body, "to", json_string(a->to));
    if (a->force)
        json_object_set_new(body, "force", json_true());
    if (a->expect_epoch > 0)
        json_object_set_new(body, "expect_epoch", json_integer((json_int_t)a->expect_epoch));
    if (a->expect_primary)
        json_object_set_new(body, "expect_primary", json_string(a->expect_primary));
    if (a->reason)
        json_object_set_new(body, "reason", json_string(a->reason));
    /* the same key on every controller tried: a resend cannot start a second one */
    unsigned char rnd[16];
    char key[80] = "Idempotency-Key: meridianctl-";
    if (getrandom(rnd, sizeof(rnd), 0) == (ssize_t)sizeof(rnd)) {
        for (size_t i = 0; i < sizeof(rnd); i++) {
            size_t n = strlen(key);
            snprintf(key + n, sizeof(key) - n, "%02x", rnd[i]);
        }
    } else {
        size_t n = strlen(key);
        snprintf(key + n, sizeof(key) - n, "%lld-%d", (long long)time(NULL), (int)getpid());
    }
    const char *headers[] = {key, NULL};
    mrd__cli_resp r;
    ex = call(ctx, "POST", path, body, headers, &r);
    json_decref(body);
    if (ex)
        return ex;
    char id[64], clean[64];
    json_t *idv = json_object_get(r.json, "operation");
    if (json_is_string(idv))
        snprintf(id, sizeof(id), "%s", json_string_value(idv));
    else
        snprintf(id, sizeof(id), "%" PRId64, jint(r.json, "operation", NULL));
    for (const char *p = id; *p; p++) {
        if (*p < '0' || *p > '9') {
            mrd__cli_error(ctx->err, NULL, "the controller answered an odd operation id: %s",
                           mrd__cli_sanitize(id, clean, sizeof(clean)));
            mrd__cli_resp_clear(&r);
            return MRD__CLI_EXIT_UNREACHABLE;
        }
    }
    if (ctx->json && !a->wait) {
        print_json(ctx, r.json);
    } else if (!ctx->json) {
        char c1[100], c2[100];
        fprintf(ctx->out, "operation %s started: %s of %s%s%s\n", id, kind,
                mrd__cli_sanitize(a->pos[0], c1, sizeof(c1)), a->to ? " to " : "",
                a->to ? mrd__cli_sanitize(a->to, c2, sizeof(c2)) : "");
        fflush(ctx->out);
    }
    mrd__cli_resp_clear(&r);
    if (!a->wait)
        return 0;
    return wait_operation(ctx, id);
}

/* ---- checkpoint, recovery ------------------------------------------------ */

/* "<svc path>/checkpoints/<id>?wait_ms=N[&regions=...]" */
static int ckpt_path(mrd__cli_ctx *ctx, const char *id, int64_t wait_ms, char *buf, size_t len)
{
    char suffix[700];
    snprintf(suffix, sizeof(suffix), "/checkpoints/%s?wait_ms=%" PRId64, id, wait_ms);
    if (ctx->args->regions) {
        size_t n = strlen(suffix);
        snprintf(suffix + n, sizeof(suffix) - n, "&regions=");
        if (mrd__cli_url_escape(ctx->args->regions, suffix, sizeof(suffix)) != 0) {
            mrd__cli_error(ctx->err, NULL, "--regions too long");
            return MRD__CLI_EXIT_USAGE;
        }
    }
    return svc_path(ctx, ctx->args->pos[1], suffix, buf, len);
}

/* "reached at T (after D)" for one region of a checkpoint document. */
static void reached_text(const json_t *ck, const char *t, char *buf, size_t len)
{
    char when[32], after[32];
    int64_t t0, t1;
    mrd__cli_fmt_time(t, when, sizeof(when));
    if (mrd__cli_time_parse(js(ck, "created_at"), &t0) == 0 && mrd__cli_time_parse(t, &t1) == 0)
        snprintf(buf, len, "%s (after %s)", when,
                 mrd__cli_fmt_ms((t1 - t0) / 1000, after, sizeof(after)));
    else
        snprintf(buf, len, "%s", when);
}

/* The pending regions, "ap, us", or "-". */
static void pending_text(const json_t *ck, char *buf, size_t len)
{
    size_t i;
    json_t *p;
    snprintf(buf, len, "-");
    json_array_foreach(json_object_get(ck, "pending"), i, p)
    {
        size_t n = i == 0 ? 0 : strlen(buf);
        char clean[80];
        snprintf(buf + n, len - n, "%s%s", i ? ", " : "",
                 mrd__cli_sanitize(json_string_value(p), clean, sizeof(clean)));
    }
}

static const char *ckpt_state(const json_t *ck, mrd__cli_color *c)
{
    if (jtrue(ck, "lost")) {
        *c = MRD__CLI_RED;
        return "lost";
    }
    if (jtrue(ck, "complete")) {
        *c = MRD__CLI_GREEN;
        return "complete";
    }
    *c = MRD__CLI_YELLOW;
    return "pending";
}

static void print_ckpt_head(mrd__cli_ctx *ctx, const json_t *ck)
{
    char c1[100], pos[MRD_POS_STRLEN], when[32];
    fprintf(ctx->out,
            "checkpoint %" PRId64 " of %s (%s): position %s, epoch %" PRId64 ", created %s\n",
            jint(ck, "id", NULL), mrd__cli_sanitize(js(ck, "service"), c1, sizeof(c1)),
            js(ck, "kind") ? js(ck, "kind") : "?", pos_text(ck, "position", pos, sizeof(pos)),
            jint(ck, "epoch", NULL), mrd__cli_fmt_time(js(ck, "created_at"), when, sizeof(when)));
}

static void print_ckpt(mrd__cli_ctx *ctx, const json_t *ck)
{
    print_ckpt_head(ctx, ck);
    static const char *const hdr[] = {"REGION", "REACHED"};
    mrd__cli_table *t = mrd__cli_table_new(2, hdr);
    if (t == NULL)
        return;
    const char *region;
    json_t *v;
    json_object_foreach(json_object_get(ck, "reached"), region, v)
    {
        char b[80];
        reached_text(ck, json_string_value(v), b, sizeof(b));
        mrd__cli_table_row(t);
        mrd__cli_table_cell(t, 0, region);
        mrd__cli_table_cell(t, MRD__CLI_GREEN, b);
    }
    size_t i;
    json_array_foreach(json_object_get(ck, "pending"), i, v)
    {
        mrd__cli_table_row(t);
        mrd__cli_table_cell(t, 0, json_string_value(v));
        mrd__cli_table_cell(t, MRD__CLI_YELLOW, "pending");
    }
    mrd__cli_table_print(t, ctx->out, "  ", ctx->color);
    mrd__cli_table_free(t);
    mrd__cli_color c;
    const char *st = ckpt_state(ck, &c);
    fprintf(ctx->out, "state: %s%s%s\n", ctx->color ? "\033[1m" : "", st,
            ctx->color ? "\033[0m" : "");
}

/* Long-polls checkpoint id until complete, lost, --timeout or a 4xx.
 * Prints each region as it reaches it. Returns the exit code. */
static int wait_checkpoint(mrd__cli_ctx *ctx, const char *id)
{
    int64_t deadline = now_ms() + (int64_t)(ctx->args->timeout_s * 1000.0);
    char printed[32][64];
    size_t nprinted = 0;
    int ex = MRD__CLI_EXIT_TIMEOUT, failing = 0;
    json_t *last = NULL;
    for (int round = 0; round < 100000; round++) {
        int64_t slice = mrd__cli_wait_slice_ms(deadline - now_ms());
        char path[1200];
        if ((ex = ckpt_path(ctx, id, slice, path, sizeof(path))) != 0)
            break;
        ex = MRD__CLI_EXIT_TIMEOUT;
        mrd__cli_resp r;
        /* the controller holds the answer up to slice ms: give the exchange that long too */
        int64_t asked = now_ms();
        long old = mrd__cli_client_set_timeout(ctx->client, (long)slice + 10000);
        int rc = mrd__cli_request(ctx->client, "GET", path, NULL, NULL, &r);
        mrd__cli_client_set_timeout(ctx->client, old);
        if (rc != 0 || r.status >= 500) {
            if (!failing)
                mrd__cli_error(ctx->err, r.error, "no controller answers; still waiting");
            failing = 1;
        } else if (r.status != 200 || !json_is_object(r.json)) {
            ex = api_fail(ctx, 0, &r);
            mrd__cli_resp_clear(&r);
            break;
        } else {
            failing = 0;
            json_decref(last);
            last = json_incref(r.json);
            const char *region;
            json_t *v;
            json_object_foreach(json_object_get(r.json, "reached"), region, v)
            {
                int seen = 0;
                for (size_t k = 0; k < nprinted; k++)
                    seen |= strcmp(printed[k], region) == 0;
                if (seen || nprinted == 32)
                    continue;
                snprintf(printed[nprinted++], sizeof(printed[0]), "%s", region);
                if (!ctx->json) {
                    char c1[80], b[80];
                    reached_text(r.json, json_string_value(v), b, sizeof(b));
                    fprintf(ctx->out, "  %s reached it at %s\n",
                            mrd__cli_sanitize(region, c1, sizeof(c1)), b);
                    fflush(ctx->out);
                }
            }
            if (jtrue(r.json, "lost") || jtrue(r.json, "complete")) {
                ex = jtrue(r.json, "lost") ? MRD__CLI_EXIT_FAILED : MRD__CLI_EXIT_OK;
                if (!ctx->json)
                    fprintf(ctx->out, "checkpoint %s %s\n", id, ex ? "lost" : "complete");
                mrd__cli_resp_clear(&r);
                break;
            }
        }
        mrd__cli_resp_clear(&r);
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        /* after an error, or an answer that did not hold (a controller that
         * ignores wait_ms), pause instead of spinning */
        int64_t pause = failing ? 500 : (now_ms() - asked < 100 ? 100 : 0);
        if (pause > 0 && sleep_or_signal(left < pause ? left : pause) != 0)
            break;
    }
    if (ctx->json && last)
        print_json(ctx, last);
    if (ex == MRD__CLI_EXIT_TIMEOUT && failing && last == NULL) {
        mrd__cli_error(ctx->err, NULL, "no controller answered while waiting for checkpoint %s",
                       id);
        ex = MRD__CLI_EXIT_UNREACHABLE;
    } else if (ex == MRD__CLI_EXIT_TIMEOUT) {
        char pending[400] = "unknown";
        if (last)
            pending_text(last, pending, sizeof(pending));
        if (!ctx->json)
            fprintf(ctx->out, "checkpoint %s pending in: %s\n", id, pending);
        mrd__cli_error(ctx->err, NULL,
                       "timed out after %.0f s waiting for checkpoint %s; pending: %s",
                       ctx->args->timeout_s, id, pending);
    }
    json_decref(last);
    return ex;
}

static int ckpt_create(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    char path[600];
    int ex = svc_path(ctx, a->pos[1], "/checkpoints", path, sizeof(path));
    if (ex)
        return ex;
    json_t *body = json_object();
    if (a->position)
        json_object_set_new(body, "position", json_string(a->position));
    mrd__cli_resp r;
    ex = call(ctx, "POST", path, body, NULL, &r);
    json_decref(body);
    if (ex)
        return ex;
    int ok;
    int64_t idn = jint(r.json, "id", &ok);
    if (!ok || idn <= 0) {
        mrd__cli_error(ctx->err, NULL, "the controller answered no checkpoint id");
        mrd__cli_resp_clear(&r);
        return MRD__CLI_EXIT_UNREACHABLE;
    }
    char id[32];
    snprintf(id, sizeof(id), "%" PRId64, idn);
    if (ctx->json && !a->wait) {
        print_json(ctx, r.json);
    } else if (!ctx->json) {
        char c1[100], pos[MRD_POS_STRLEN];
        fprintf(ctx->out, "checkpoint %s created for %s at position %s, epoch %" PRId64 "\n", id,
                mrd__cli_sanitize(a->pos[1], c1, sizeof(c1)),
                pos_text(r.json, "position", pos, sizeof(pos)), jint(r.json, "epoch", NULL));
        fflush(ctx->out);
    }
    mrd__cli_resp_clear(&r);
    if (!a->wait)
        return 0;
    return wait_checkpoint(ctx, id);
}

static int ckpt_show(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    int64_t wait_ms = a->wait_ms > 0 ? a->wait_ms : 0;
    char path[1200];
    int ex = ckpt_path(ctx, a->pos[2], wait_ms, path, sizeof(path));
    if (ex)
        return ex;
    mrd__cli_resp r;
    long old = mrd__cli_client_set_timeout(ctx->client, (long)wait_ms + 10000);
    ex = get(ctx, path, &r);
    mrd__cli_client_set_timeout(ctx->client, old);
    if (ex)
        return ex;
    if (ctx->json)
        print_json(ctx, r.json);
    else
        print_ckpt(ctx, r.json);
    mrd__cli_resp_clear(&r);
    return 0;
}

static int ckpt_list(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    char suffix[200], path[800];
    snprintf(suffix, sizeof(suffix), "/checkpoints?limit=%ld%s%s%s%s", a->limit,
             a->kind ? "&kind=" : "", a->kind ? a->kind : "", a->operation ? "&operation=" : "",
             a->operation ? a->operation : ""); /* both checked by the parser */
    int ex = svc_path(ctx, a->pos[1], suffix, path, sizeof(path));
    mrd__cli_resp r;
    if (ex || (ex = get(ctx, path, &r)) != 0)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    json_t *list = json_object_get(r.json, "checkpoints");
    static const char *const hdr[] = {"ID",      "KIND",  "POSITION", "EPOCH",
                                      "CREATED", "STATE", "REACHED",  "OPERATION"};
    mrd__cli_table *t = mrd__cli_table_new(8, hdr);
    if (t) {
        mrd__cli_table_align_right(t, 0);
        mrd__cli_table_align_right(t, 3);
        size_t i;
        json_t *ck;
        json_array_foreach(list, i, ck)
        {
            char pos[MRD_POS_STRLEN], when[32], regions[300] = "";
            const char *region;
            json_t *v;
            json_object_foreach(json_object_get(ck, "reached"), region, v)
            {
                size_t n = strlen(regions);
                snprintf(regions + n, sizeof(regions) - n, "%s%s", n ? "," : "", region);
            }
            mrd__cli_color c;
            const char *st = ckpt_state(ck, &c);
            int ok;
            int64_t op = jint(ck, "operation_id", &ok);
            mrd__cli_table_row(t);
            mrd__cli_table_cellf(t, 0, "%" PRId64, jint(ck, "id", NULL));
            mrd__cli_table_cell(t, 0, js(ck, "kind"));
            mrd__cli_table_cell(t, 0, pos_text(ck, "position", pos, sizeof(pos)));
            mrd__cli_table_cellf(t, 0, "%" PRId64, jint(ck, "epoch", NULL));
            mrd__cli_table_cell(t, 0, mrd__cli_fmt_time(js(ck, "created_at"), when, 32));
            mrd__cli_table_cell(t, c, st);
            mrd__cli_table_cell(t, 0, regions[0] ? regions : "-");
            if (ok)
                mrd__cli_table_cellf(t, 0, "%" PRId64, op);
            else
                mrd__cli_table_cell(t, 0, "-");
        }
        if (json_array_size(list) == 0)
            fprintf(ctx->out, "no checkpoints\n");
        else
            mrd__cli_table_print(t, ctx->out, "", ctx->color);
        mrd__cli_table_free(t);
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

static int cmd_checkpoint(mrd__cli_ctx *ctx)
{
    const char *sub = ctx->args->pos[0];
    if (strcmp(sub, "create") == 0)
        return ckpt_create(ctx);
    if (strcmp(sub, "show") == 0)
        return ckpt_show(ctx);
    return ckpt_list(ctx); /* the parser allows nothing else */
}

static int cmd_recovery(mrd__cli_ctx *ctx)
{
    char path[600];
    int ex = svc_path(ctx, ctx->args->pos[0], "/recovery", path, sizeof(path));
    mrd__cli_resp r;
    if (ex || (ex = get(ctx, path, &r)) != 0)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    json_t *d = r.json;
    char c1[100], c2[100], b[32];
    fprintf(
        ctx->out, "service %s: primary %s, epoch %" PRId64 ", checkpoint interval %s\n",
        mrd__cli_sanitize(js(d, "service"), c1, sizeof(c1)),
        mrd__cli_sanitize(js(d, "primary_region") ? js(d, "primary_region") : "-", c2, sizeof(c2)),
        jint(d, "epoch", NULL), ms_or_dash(d, "checkpoint_interval_ms", b, sizeof(b)));
    static const char *const hdr[] = {"REGION", "ROLE", "RECOVERY POINT", "CHECKPOINT",
                                      "RPO",    "LAG",  "LAG TIME"};
    mrd__cli_table *t = mrd__cli_table_new(7, hdr);
    if (t) {
        mrd__cli_table_align_right(t, 3);
        mrd__cli_table_align_right(t, 4);
        mrd__cli_table_align_right(t, 5);
        mrd__cli_table_align_right(t, 6);
        size_t i;
        json_t *reg;
        json_array_foreach(json_object_get(d, "regions"), i, reg)
        {
            char when[32], b1[32], b2[32], b3[32];
            int ok;
            int64_t ck = jint(reg, "checkpoint_id", &ok);
            mrd__cli_table_row(t);
            mrd__cli_table_cell(t, 0, js(reg, "region"));
            mrd__cli_table_cell(t, jtrue(reg, "primary") ? MRD__CLI_BOLD : 0,
                                jtrue(reg, "primary") ? "primary" : "replica");
            mrd__cli_table_cell(t, 0, mrd__cli_fmt_time(js(reg, "recovery_point"), when, 32));
            if (ok)
                mrd__cli_table_cellf(t, 0, "%" PRId64, ck);
            else
                mrd__cli_table_cell(t, 0, "-");
            mrd__cli_table_cell(t, 0,
                                mrd__cli_fmt_seconds(json_object_get(reg, "rpo_seconds"), b1, 32));
            mrd__cli_table_cell(t, 0, bytes_or_dash(reg, "lag_bytes", b2, sizeof(b2)));
            mrd__cli_table_cell(t, 0,
                                mrd__cli_fmt_seconds(json_object_get(reg, "lag_seconds"), b3, 32));
        }
        fputc('\n', ctx->out);
        if (json_array_size(json_object_get(d, "regions")) == 0)
            fprintf(ctx->out, "no regions\n");
        else
            mrd__cli_table_print(t, ctx->out, "", ctx->color);
        mrd__cli_table_free(t);
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

/* ---- plan, maintenance, version ---------------------------------------- */

static int cmd_plan(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    char suffix[300] = "/plan", path[700];
    if (a->to || a->force) {
        snprintf(suffix, sizeof(suffix), "/plan?");
        if (a->to) {
            size_t n = strlen(suffix);
            snprintf(suffix + n, sizeof(suffix) - n, "to=");
            if (mrd__cli_url_escape(a->to, suffix, sizeof(suffix)) != 0) {
                mrd__cli_error(ctx->err, NULL, "region name too long");
                return MRD__CLI_EXIT_USAGE;
            }
        }
        if (a->force) {
            size_t n = strlen(suffix);
            snprintf(suffix + n, sizeof(suffix) - n, "%sforce=true", a->to ? "&" : "");
        }
    }
    int ex = svc_path(ctx, a->pos[0], suffix, path, sizeof(path));
    mrd__cli_resp r;
    if (ex || (ex = get(ctx, path, &r)) != 0)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
        mrd__cli_resp_clear(&r);
        return 0;
    }
    json_t *d = r.json;
    char c1[200], c2[400];
    fprintf(ctx->out, "service     %s (epoch %" PRId64 "), primary state %s\n",
            mrd__cli_sanitize(js(d, "service"), c1, sizeof(c1)), jint(d, "epoch", NULL),
            js(d, "primary_state") ? js(d, "primary_state") : "?");
    const char *target = js(d, "target_region");
    fprintf(ctx->out, "decision    %s%s%s%s%s\n", js(d, "decision") ? js(d, "decision") : "?",
            target ? " -> " : "", target ? target : "", target ? " / " : "",
            target && js(d, "target_node") ? js(d, "target_node") : "");
    fprintf(ctx->out, "reason      %s\n", js(d, "reason") ? js(d, "reason") : "?");
    fprintf(ctx->out, "message     %s\n", mrd__cli_sanitize(js(d, "message"), c2, sizeof(c2)));
    int ok;
    int64_t nb = jint(d, "not_before_ms", &ok);
    if (ok) {
        char when[64];
        time_t secs = (time_t)(nb / 1000);
        struct tm tm;
        if (gmtime_r(&secs, &tm) && strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm))
            fprintf(ctx->out, "not before  %s\n", when);
    }
    fprintf(ctx->out, "would act   %s\n", jtrue(d, "would_act") ? "yes" : "no");
    json_t *au = json_object_get(d, "automatic");
    if (json_is_object(au))
        print_decision_line(ctx, "automatic", au);
    static const char *const hdr[] = {"",    "NODE",     "REGION",     "PRIORITY", "REPLAY",
                                      "LAG", "LAG TIME", "ACCEPTABLE", "REASON"};
    mrd__cli_table *t = mrd__cli_table_new(9, hdr);
    if (t) {
        mrd__cli_table_align_right(t, 3);
        mrd__cli_table_align_right(t, 5);
        mrd__cli_table_align_right(t, 6);
        size_t i;
        json_t *c;
        json_array_foreach(json_object_get(d, "candidates"), i, c)
        {
            char b1[32], b2[32], pos[MRD_POS_STRLEN];
            int acc = jtrue(c, "acceptable");
            mrd__cli_table_row(t);
            mrd__cli_table_cell(t, MRD__CLI_BOLD, jtrue(c, "chosen") ? "*" : "");
            mrd__cli_table_cell(t, 0, js(c, "node"));
            mrd__cli_table_cell(t, 0, js(c, "region"));
            mrd__cli_table_cellf(t, 0, "%" PRId64, jint(c, "priority", NULL));
            mrd__cli_table_cell(t, 0, pos_text(c, "replay_position", pos, sizeof(pos)));
            mrd__cli_table_cell(t, 0, bytes_or_dash(c, "lag_bytes", b1, sizeof(b1)));
            mrd__cli_table_cell(t, 0, ms_or_dash(c, "lag_ms", b2, sizeof(b2)));
            mrd__cli_table_cell(t, acc ? MRD__CLI_GREEN : MRD__CLI_RED, acc ? "yes" : "no");
            mrd__cli_table_cell(t, 0, js(c, "reason"));
        }
        fputc('\n', ctx->out);
        if (json_array_size(json_object_get(d, "candidates")) == 0)
            fprintf(ctx->out, "no candidates\n");
        else
            mrd__cli_table_print(t, ctx->out, "", ctx->color);
        mrd__cli_table_free(t);
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

static int cmd_maintenance(mrd__cli_ctx *ctx)
{
    const mrd__cli_args *a = ctx->args;
    char path[600];
    int ex = svc_path(ctx, a->pos[0], "/maintenance", path, sizeof(path));
    if (ex)
        return ex;
    int on = strcmp(a->pos[1], "on") == 0;
    json_t *body = json_pack("{s:b}", "enabled", on);
    if (a->reason)
        json_object_set_new(body, "reason", json_string(a->reason));
    mrd__cli_resp r;
    ex = call(ctx, "PUT", path, body, NULL, &r);
    json_decref(body);
    if (ex)
        return ex;
    if (ctx->json) {
        print_json(ctx, r.json);
    } else {
        char c1[100];
        fprintf(ctx->out, "maintenance %s for %s%s\n", on ? "on" : "off",
                mrd__cli_sanitize(a->pos[0], c1, sizeof(c1)),
                on ? ": no automatic failover until `maintenance off`" : "");
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

static int cmd_version(mrd__cli_ctx *ctx)
{
    mrd__cli_resp r = {0};
    int rc = ctx->client ? mrd__cli_request(ctx->client, "GET", "/v1/health", NULL, NULL, &r)
                         : MRD_EHTTP;
    const char *v = rc == 0 && r.status == 200 ? js(r.json, "version") : NULL;
    if (ctx->json) {
        json_t *doc = json_pack("{s:s}", "meridianctl", MERIDIAN_VERSION);
        if (v)
            json_object_set_new(doc, "controller", json_string(v));
        print_json(ctx, doc);
        json_decref(doc);
    } else {
        char c1[80], c2[600];
        fprintf(ctx->out, "meridianctl %s\n", MERIDIAN_VERSION);
        char *tail = strstr(r.url, "/v1/health");
        if (tail)
            *tail = '\0';
        if (v)
            fprintf(ctx->out, "controller  %s (%s)\n", mrd__cli_sanitize(v, c1, sizeof(c1)),
                    mrd__cli_sanitize(r.url, c2, sizeof(c2)));
        else if (ctx->client)
            fprintf(ctx->out, "controller  unreachable\n");
    }
    mrd__cli_resp_clear(&r);
    return 0;
}

int mrd__cli_run(mrd__cli_ctx *ctx)
{
    const char *c = ctx->args->command;
    if (strcmp(c, "version") == 0)
        return cmd_version(ctx);
    if (ctx->client == NULL) {
        mrd__cli_error(ctx->err, NULL, "no controller to talk to");
        return MRD__CLI_EXIT_USAGE;
    }
    if (strcmp(c, "status") == 0)
        return cmd_status(ctx);
    if (strcmp(c, "services") == 0)
        return cmd_services(ctx);
    if (strcmp(c, "nodes") == 0)
        return cmd_nodes(ctx);
    if (strcmp(c, "regions") == 0)
        return cmd_regions(ctx);
    if (strcmp(c, "events") == 0)
        return cmd_events(ctx);
    if (strcmp(c, "switchover") == 0 || strcmp(c, "failover") == 0)
        return cmd_start(ctx, c);
    if (strcmp(c, "plan") == 0)
        return cmd_plan(ctx);
    if (strcmp(c, "maintenance") == 0)
        return cmd_maintenance(ctx);
    if (strcmp(c, "operations") == 0)
        return cmd_operations(ctx);
    if (strcmp(c, "checkpoint") == 0)
        return cmd_checkpoint(ctx);
    if (strcmp(c, "recovery") == 0)
        return cmd_recovery(ctx);
    mrd__cli_error(ctx->err, NULL, "unknown command \"%s\"", c);
    return MRD__CLI_EXIT_USAGE;
}
