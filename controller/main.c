/*
 * meridian-controller: one per region (or more). Serves the REST API and the
 * agent API, applies the store's migrations, takes part in leader election,
 * and (when leader) decides and drives operations.
 *
 *   meridian-controller --config FILE           run
 *   meridian-controller migrate --config FILE   apply migrations and exit
 *
 * The program is one libuv loop; periodic work happens in one cron timer.
 * SIGTERM/SIGINT: release the lease if held, finish in-flight requests,
 * close everything and exit 0.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller.h"
#include "meridian/config.h"
#include "meridian/error.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: meridian-controller --config FILE           run\n"
        "       meridian-controller migrate --config FILE   apply the store's migrations and exit\n"
        "       meridian-controller check --config FILE     validate the configuration and exit\n"
        "       meridian-controller --version\n");
}

static void listen_done(int err, PGresult *res, void *data)
{
    (void)res;
    (void)data;
    if (err != 0)
        mrd_log(MRD_LOG_WARN, "cannot listen for store notifications",
                MRD_S("error", mrd_strerror(err)));
}

static void on_pg_state(mrd_pg *pg, int connected, void *data)
{
    mrd_ctl *ctl = data;
    mrd_log(connected ? MRD_LOG_INFO : MRD_LOG_WARN,
            connected ? "store connected" : "store connection lost");
    if (connected) {
        mrd__store_migrate_async(ctl);
        mrd_pg_query(pg, "LISTEN meridian_ingest", 0, NULL, listen_done, ctl);
        mrd_pg_query(pg, "LISTEN meridian_commands", 0, NULL, listen_done, ctl);
    }
}

/* Another controller recorded something an operation may wait for. */
static void on_pg_notify(mrd_pg *pg, const char *channel, const char *payload, void *data)
{
    mrd_ctl *ctl = data;
    (void)pg;
    (void)payload;
    if (strcmp(channel, "meridian_commands") == 0)
        mrd__ingest_refresh_now(ctl);
    else if (mrd__lease_is_leader(ctl)) {
        ctl->tick_wanted = 1;
        mrd__tick_cron(ctl, mrd__now_ms());
    }
}

/* Lateness of the cron timer: how long the loop was kept from it. */
static void loop_lag(mrd_ctl *ctl)
{
    uint64_t now = uv_hrtime(), due = ctl->cron_last_ns + ctl->cron_period_ms * 1000000u;
    if (ctl->cron_last_ns != 0 && now > due) {
        uint64_t lag = now - due;
        if (lag > ctl->loop_lag_max_ns)
            ctl->loop_lag_max_ns = lag;
        ctl->loop_stalls[0] += lag > 20000000u;
        ctl->loop_stalls[1] += lag > 100000000u;
        ctl->loop_stalls[2] += lag > 1000000000u;
    }
    ctl->cron_last_ns = now;
}

static void cron(uv_timer_t *t)
{
    mrd_ctl *ctl = t->data;
    loop_lag(ctl);
    uint64_t now = mrd__now_ms();
    mrd__store_migrate_async(ctl);
    mrd__lease_cron(ctl, now);
    mrd__ingest_cron(ctl, now);
    mrd__tick_cron(ctl, now);
    mrd__cutover_cron(ctl, now);
    mrd__checkpoint_cron(ctl, now);
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void pg_closed(void *arg)
{
    (void)arg;
}

static void http_stopped(void *arg)
{
    mrd_ctl *ctl = arg;
    ctl->http = NULL;
    mrd__ingest_close(ctl);
    mrd__cutover_close(ctl);
    if (ctl->http_client)
        mrd_http_client_close(ctl->http_client);
    ctl->http_client = NULL;
    json_decref(ctl->poked);
    ctl->poked = NULL;
    json_decref(ctl->snapshot);
    ctl->snapshot = NULL;
    mrd_pg_stop(ctl->pg, pg_closed, ctl);
    ctl->pg = NULL;
    mrd_pg_stop(ctl->pg_ingest, pg_closed, ctl);
    ctl->pg_ingest = NULL;
}

static void released(void *arg)
{
    mrd_ctl *ctl = arg;
    if (ctl->http)
        mrd_http_server_stop(ctl->http, http_stopped, ctl);
    else
        http_stopped(ctl);
}

static void on_signal(uv_signal_t *s, int signum)
{
    mrd_ctl *ctl = s->data;
    if (ctl->stopping)
        return;
    ctl->stopping = 1;
    mrd_log(MRD_LOG_INFO, "stopping", MRD_I("signal", signum));
    uv_timer_stop(&ctl->cron);
    uv_close((uv_handle_t *)&ctl->cron, close_cb);
    uv_close((uv_handle_t *)&ctl->sig_term, close_cb);
    uv_close((uv_handle_t *)&ctl->sig_int, close_cb);
    uv_close((uv_handle_t *)&ctl->sig_hup, close_cb);
    mrd__lease_release(ctl, released, ctl);
}

static void on_hup(uv_signal_t *s, int signum)
{
    mrd_ctl *ctl = s->data;
    (void)signum;
    if (!ctl->stopping)
        mrd__reload(ctl, ctl->config_path);
}

static int run(mrd_ctl *ctl)
{
    char fsm_err[256];
    if (mrd_opfsm_check(fsm_err, sizeof(fsm_err)) != 0) {
        mrd_log(MRD_LOG_ERROR, "operation table is not well-formed", MRD_S("error", fsm_err));
        return 1;
    }
    mrd_pg_options po;
    memset(&po, 0, sizeof(po));
    po.conninfo = ctl->cfg.store;
    po.on_state = on_pg_state;
    po.on_notify = on_pg_notify;
    po.data = ctl;
    po.query_timeout_ms = ctl->cfg.lease_ttl_ms / 2;
    int rc = mrd_pg_start(&ctl->pg, ctl->loop, &po);
    if (rc == 0) {
        /* the heartbeat flushes' own connection: no LISTEN, no migrations */
        po.on_state = NULL;
        po.on_notify = NULL;
        rc = mrd_pg_start(&ctl->pg_ingest, ctl->loop, &po);
        if (rc != 0)
            mrd_pg_stop(ctl->pg, pg_closed, ctl);
    }
    if (rc != 0) {
        mrd_log(MRD_LOG_ERROR, "cannot start the store connection",
                MRD_S("error", mrd_strerror(rc)));
        return 1;
    }
    mrd__ingest_init(ctl);
    ctl->poked = json_object();
    if (mrd_http_client_init(&ctl->http_client, ctl->loop) != 0)
        ctl->http_client = NULL;
    ctl->heartbeat_ms = 1000;
    for (size_t i = 0; i < ctl->nservices; i++)
        if (i == 0 || ctl->services[i].policy.heartbeat_ms < ctl->heartbeat_ms)
            ctl->heartbeat_ms = ctl->services[i].policy.heartbeat_ms;
    rc = mrd__api_start(ctl);
    if (rc != 0) {
        mrd_log(MRD_LOG_ERROR, "cannot listen", MRD_S("host", ctl->cfg.listen_host),
                MRD_I("port", ctl->cfg.listen_port), MRD_S("error", mrd_strerror(rc)),
                MRD_S("detail", rc > MRD__ERR_FIRST && rc < MRD__ERR_LAST ? "" : uv_strerror(rc)));
        mrd_pg_stop(ctl->pg, pg_closed, ctl);
        mrd_pg_stop(ctl->pg_ingest, pg_closed, ctl);
        uv_run(ctl->loop, UV_RUN_DEFAULT);
        return 1;
    }
    mrd_log(MRD_LOG_INFO, "controller started", MRD_S("name", ctl->cfg.name),
            MRD_S("region", ctl->cfg.region), MRD_S("url", ctl->cfg.advertise_url),
            MRD_I("lease_ttl_ms", ctl->cfg.lease_ttl_ms));
    uv_timer_init(ctl->loop, &ctl->cron);
    ctl->cron.data = ctl;
    uint64_t period = ctl->cfg.lease_ttl_ms / 40;
    if (period < 10)
        period = 10;
    if (period > 50)
        period = 50;
    ctl->cron_period_ms = period;
    uv_timer_start(&ctl->cron, cron, 0, period);
    uv_signal_init(ctl->loop, &ctl->sig_term);
    uv_signal_init(ctl->loop, &ctl->sig_int);
    ctl->sig_term.data = ctl->sig_int.data = ctl;
    uv_signal_start(&ctl->sig_term, on_signal, SIGTERM);
    uv_signal_start(&ctl->sig_int, on_signal, SIGINT);
    uv_signal_init(ctl->loop, &ctl->sig_hup);
    ctl->sig_hup.data = ctl;
    uv_signal_start(&ctl->sig_hup, on_hup, SIGHUP);
    uv_run(ctl->loop, UV_RUN_DEFAULT);
    mrd_log(MRD_LOG_INFO, "controller stopped");
    return ctl->exit_code;
}

int main(int argc, char **argv)
{
    int migrate_only = 0, check_only = 0;
    /* The thread pool parses and frees the leader's large documents; with
     * glibc's default of one arena per thread each kept its own high-water
     * mark (RSS tripled with 1,000 services). Two arenas: the loop's and
     * one shared by the workers. */
    mallopt(M_ARENA_MAX, 2);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("meridian-controller %s\n", MERIDIAN_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "fsm") == 0) {
            char err[256];
            if (mrd_opfsm_check(err, sizeof(err)) != 0) {
                fprintf(stderr, "meridian-controller: operation table is not well-formed: %s\n",
                        err);
                return 1;
            }
            size_t need = mrd_opfsm_dot(NULL, 0) + 1;
            char *dot = malloc(need);
            if (dot == NULL)
                return 1;
            mrd_opfsm_dot(dot, need);
            fputs(dot, stdout);
            free(dot);
            return 0;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "migrate") == 0)
            migrate_only = 1;
        if (strcmp(argv[i], "check") == 0)
            check_only = 1;
    }
    const char *path = mrd_cfg_arg(argc, argv);
    if (path == NULL) {
        usage(stderr);
        return 2;
    }
    mrd_log_set_program("meridian-controller");
    mrd_ctl ctl;
    memset(&ctl, 0, sizeof(ctl));
    char err[512];
    if (mrd__ctl_config_load(&ctl, path, err, sizeof(err)) != 0) {
        mrd_log(MRD_LOG_ERROR, "invalid configuration", MRD_S("file", path), MRD_S("error", err));
        return 2;
    }
    mrd_log_set_level(ctl.cfg.log_level);
    int rc;
    if (check_only) {
        printf("%s: valid (%zu regions, %zu services)\n", path, ctl.nregions, ctl.nservices);
        mrd__ctl_config_free(&ctl);
        return 0;
    }
    if (migrate_only) {
        int applied = 0;
        rc = mrd__store_migrate(ctl.cfg.store, &applied, err, sizeof(err));
        if (rc != 0)
            mrd_log(MRD_LOG_ERROR, "migration failed", MRD_S("error", err));
        else
            mrd_log(MRD_LOG_INFO, "migrations done", MRD_I("applied", applied));
        mrd__ctl_config_free(&ctl);
        return rc == 0 ? 0 : 1;
    }
    ctl.loop = uv_default_loop();
    ctl.config_path = path;
    rc = run(&ctl);
    uv_loop_close(ctl.loop);
    free(ctl.routes);
    mrd__ctl_config_free(&ctl);
    return rc;
}
