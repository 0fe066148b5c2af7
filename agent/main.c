/*
 * meridian-agent: one per node. Reports health and replication state of the
 * node's members to a controller every heartbeat, executes the controller's
 * commands at most once and never below the highest epoch seen, grants and
 * holds peer leases, and fences a primary that is isolated (docs/design.md).
 *
 *   meridian-agent --config /etc/meridian/agent.json
 *   meridian-agent --config FILE --check-config    validate and exit
 *
 * Start order: configuration, epoch file (a corrupt one stops the agent),
 * HTTP client, peer API, members, checks, heartbeat. SIGTERM/SIGINT stop it
 * gracefully: timers stop, the peer API answers what it has in flight,
 * connections close, children of running commands finish (bounded by their
 * timeouts), then the process exits 0. Exit 1: bad configuration or a
 * failure to start; 2: bad arguments.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent.h"
#include "meridian/config.h"
#include "meridian/error.h"
#include "meridian/limits.h"
#include "meridian/log.h"

uint64_t mrd__now_ms(mrd__agent *a)
{
    uv_update_time(a->loop);
    return uv_now(a->loop);
}

int64_t mrd__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void mrd__agent_handle_closed(mrd__agent *a)
{
    if (a->open_handles > 0)
        a->open_handles--;
}

static void on_signal_closed(uv_handle_t *h)
{
    mrd__agent_handle_closed(h->data);
}

void mrd__agent_stop(mrd__agent *a, int code)
{
    if (a->stopping)
        return;
    a->stopping = 1;
    a->exit_code = code;
    mrd_log(MRD_LOG_INFO, "stopping", MRD_I("code", code));
    a->open_handles += 2;
    uv_close((uv_handle_t *)&a->sigterm, on_signal_closed);
    uv_close((uv_handle_t *)&a->sigint, on_signal_closed);
    mrd__heartbeat_stop(a);
    mrd__checks_stop(a);
    mrd__peer_server_stop(a);
    mrd__commands_stop(a);
    mrd__members_stop(a);
    if (a->http) {
        mrd_http_client_close(a->http);
        a->http = NULL;
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    mrd__agent *a = s->data;
    mrd_log(MRD_LOG_INFO, "signal received", MRD_I("signal", signum));
    mrd__agent_stop(a, 0);
}

static void free_runtime(mrd__agent *a)
{
    for (size_t i = 0; a->members && i < a->nmembers; i++) {
        mrd__member *m = &a->members[i];
        while (m->queue) {
            mrd__pending_cmd *n = m->queue->next;
            json_decref(m->queue->args);
            free(m->queue);
            m->queue = n;
        }
        free(m->peers);
    }
    for (size_t i = 0; a->services && i < a->nservices; i++)
        free(a->services[i].peers);
    free(a->members);
    free(a->checks);
    free(a->probes);
    free(a->results);
    free(a->services);
    mrd_auth_free(a->auth);
    mrd__epoch_store_close(a->epochs);
    mrd__agent_config_free(&a->cfg);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: meridian-agent --config FILE [--check-config]\n"
               "       meridian-agent --version\n");
}

int main(int argc, char **argv)
{
    int check_only = 0;
    const char *path = mrd_cfg_arg(argc, argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("meridian-agent %s\n", MERIDIAN_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--check-config") == 0)
            check_only = 1;
    }
    mrd_log_set_program("meridian-agent");
    if (!path) {
        usage(stderr);
        return 2;
    }

    mrd__agent *a = calloc(1, sizeof(*a));
    if (!a)
        return 1;
    char err[512];
    int rc = mrd__agent_config_load(&a->cfg, path, err, sizeof(err));
    if (rc) {
        mrd_log(MRD_LOG_ERROR, "invalid configuration", MRD_S("error", err));
        fprintf(stderr, "meridian-agent: %s\n", err);
        free(a);
        return 1;
    }
    if (check_only) {
        printf("configuration ok\n");
        mrd__agent_config_free(&a->cfg);
        free(a);
        return 0;
    }
    mrd_log_level level;
    if (mrd_log_level_parse(a->cfg.log_level, &level) == 0)
        mrd_log_set_level(level);

    rc = mrd__epoch_store_open(&a->epochs, a->cfg.state_dir, 0, err, sizeof(err));
    if (rc) {
        mrd_log(MRD_LOG_ERROR, "cannot open the epoch file", MRD_S("error", err));
        mrd__agent_config_free(&a->cfg);
        free(a);
        return 1;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    a->loop = &loop;
    uv_signal_init(&loop, &a->sigterm);
    uv_signal_init(&loop, &a->sigint);
    a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);

    /* the peer API needs few connections; the rest of the fds stay for the
     * members' PostgreSQL connections, libcurl and commands */
    mrd_fd_budget fdb;
    mrd_fd_budget_init(&fdb, 128, PEER_MAX_CONNECTIONS);
    a->http_max_connections = fdb.max_connections;
    mrd_log(MRD_LOG_INFO, "connection limits", MRD_U("nofile_before", fdb.soft_before),
            MRD_U("nofile", fdb.soft), MRD_U("nofile_hard", fdb.hard),
            MRD_U("reserve", fdb.reserve), MRD_U("max_connections", fdb.max_connections),
            MRD_U("max_connections_per_client", PEER_MAX_PER_CLIENT));

    rc = mrd_http_client_init(&a->http, &loop);
    if (rc == 0)
        rc = mrd__peer_server_start(a);
    if (rc == 0)
        rc = mrd__members_start(a);
    if (rc == 0)
        rc = mrd__checks_start(a);
    if (rc == 0)
        rc = mrd__heartbeat_start(a);
    if (rc) {
        mrd_log(MRD_LOG_ERROR, "cannot start", MRD_S("error", mrd_strerror(rc)));
        a->stopping = 0;
    } else {
        mrd_log(MRD_LOG_INFO, "agent started", MRD_S("node", a->cfg.node),
                MRD_S("region", a->cfg.region), MRD_U("members", a->nmembers),
                MRD_U("checks", a->nchecks), MRD_U("peers", a->cfg.npeers),
                MRD_S("epoch_file", mrd__epoch_store_path(a->epochs)));
    }
    if (rc) {
        /* a partial start: close what started, through the same stop path */
        if (!a->hb_timer.loop) {
            uv_timer_init(&loop, &a->hb_timer);
            uv_timer_init(&loop, &a->tick_timer);
            a->hb_timer.data = a->tick_timer.data = a;
        }
        mrd__agent_stop(a, 1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int code = a->exit_code;
    if (uv_loop_close(&loop) != 0)
        mrd_log(MRD_LOG_WARN, "handles left open at exit");
    free_runtime(a);
    free(a);
    mrd_log(MRD_LOG_INFO, "stopped", MRD_I("code", code));
    return code;
}
