/*
 * Benchmark (not a test: prints figures, asserts nothing about speed) of
 * the cutover drivers against real servers:
 *   pdns: time from apply() until the DNS server answers the new address,
 *         polled with a UDP DNS query every 10 ms (and until the callback);
 *   etcd: time from apply() until a read() sees the new epoch, polled every
 *         10 ms (and until the callback).
 * ROUNDS rounds each (default 20), p50/p99/max in milliseconds.
 *
 * Needs MERIDIAN_TEST_PDNS_API, MERIDIAN_TEST_PDNS_KEY,
 * MERIDIAN_TEST_PDNS_DNS_PORT, MERIDIAN_TEST_ETCD (tests/bench/cutover.sh
 * starts throw-away servers and sets them). Usage: bench_cutover [ROUNDS]
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "meridian/cutover.h"
#include "meridian/error.h"
#include "meridian/http_client.h"

static const char *need(const char *name)
{
    const char *v = getenv(name);
    if (!v || !v[0]) {
        fprintf(stderr, "bench_cutover: %s is not set (see tests/bench/README.md)\n", name);
        exit(2);
    }
    return v;
}

static double now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

/* ---- minimal DNS client: one A query over UDP ---- */

/* Sends a query for name/A to 127.0.0.1:port; copies the first A answer
 * into out ("" when none). Returns 0, or -1 on a timeout or bad answer. */
static int dns_query_a(int port, const char *name, char *out, size_t outlen)
{
    unsigned char q[512], r[1500];
    size_t n = 0;
    uint16_t id = (uint16_t)(uv_hrtime() & 0xffff);
    out[0] = '\0';
    q[n++] = id >> 8, q[n++] = id & 0xff, q[n++] = 0x01, q[n++] = 0x00; /* RD */
    q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 0, q[n++] = 0, q[n++] = 0, q[n++] = 0, q[n++] = 0;
    for (const char *p = name; *p && n < 400;) {
        size_t l = strcspn(p, ".");
        if (l == 0 || l > 63)
            return -1;
        q[n++] = (unsigned char)l;
        memcpy(q + n, p, l);
        n += l;
        p += l;
        if (*p == '.')
            p++;
    }
    q[n++] = 0, q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1; /* A, IN */
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = -1;
    if (sendto(s, q, n, 0, (struct sockaddr *)&a, sizeof(a)) != (ssize_t)n)
        goto out;
    struct pollfd pf = {s, POLLIN, 0};
    if (poll(&pf, 1, 200) != 1)
        goto out;
    ssize_t got = recv(s, r, sizeof(r), 0);
    if (got < 12 || r[0] != q[0] || r[1] != q[1])
        goto out;
    size_t len = (size_t)got, i = 12;
    int ancount = r[6] << 8 | r[7];
    while (i < len && r[i]) /* question name */
        i += (size_t)r[i] + 1;
    i += 5;
    for (int k = 0; k < ancount && i + 12 <= len; k++) {
        if ((r[i] & 0xc0) == 0xc0)
            i += 2;
        else {
            while (i < len && r[i])
                i += (size_t)r[i] + 1;
            i++;
        }
        if (i + 10 > len)
            break;
        int type = r[i] << 8 | r[i + 1];
        size_t rdlen = (size_t)(r[i + 8] << 8 | r[i + 9]);
        i += 10;
        if (i + rdlen > len)
            break;
        if (type == 1 && rdlen == 4) {
            inet_ntop(AF_INET, r + i, out, (socklen_t)outlen);
            break;
        }
        i += rdlen;
    }
    rc = 0;
out:
    close(s);
    return rc;
}

/* ---- one round ---- */

typedef struct {
    uv_loop_t *loop;
    mrd_cutover_driver *d;
    int kind; /* 0 pdns, 1 etcd */
    int dns_port;
    const char *name, *want;
    int64_t epoch;
    double t0, t_cb, t_visible;
    int status, done_cb, read_in_flight, expired;
} round_ctx;

static void applied(const mrd_cutover_result *r, void *data)
{
    round_ctx *c = data;
    c->t_cb = now_ms() - c->t0;
    c->status = r->status;
    c->done_cb = 1;
    if (r->status)
        fprintf(stderr, "apply failed: %s: %s\n", mrd_err_name(r->status), r->message);
}

static void read_done(const mrd_cutover_result *r, void *data)
{
    round_ctx *c = data;
    c->read_in_flight = 0;
    if (r->status == 0 && r->observed && r->observed->epoch == c->epoch && c->t_visible < 0)
        c->t_visible = now_ms() - c->t0;
}

static void poll_cb(uv_timer_t *t)
{
    round_ctx *c = t->data;
    if (c->t_visible >= 0)
        return;
    if (c->kind == 0) {
        char got[64];
        if (dns_query_a(c->dns_port, c->name, got, sizeof(got)) == 0 && !strcmp(got, c->want))
            c->t_visible = now_ms() - c->t0;
    } else if (!c->read_in_flight) {
        if (mrd_cutover_read(c->d, "bench", read_done, c) == 0)
            c->read_in_flight = 1;
    }
}

static void expire_cb(uv_timer_t *t)
{
    ((round_ctx *)t->data)->expired = 1;
}

static int run_round(round_ctx *c, const mrd_cutover_target *tg)
{
    uv_timer_t poll_t, deadline;
    uv_timer_init(c->loop, &poll_t);
    uv_timer_init(c->loop, &deadline);
    poll_t.data = deadline.data = c;
    c->t_visible = -1;
    c->done_cb = 0;
    c->expired = 0;
    c->t0 = now_ms();
    int rc = mrd_cutover_apply(c->d, tg, applied, c);
    if (rc) {
        fprintf(stderr, "apply refused: %s\n", mrd_err_name(rc));
        return rc;
    }
    uv_timer_start(&poll_t, poll_cb, 0, 10);
    uv_timer_start(&deadline, expire_cb, 5000, 0);
    for (int i = 0;
         i < 100000 && !c->expired && !(c->done_cb && c->t_visible >= 0 && !c->read_in_flight); i++)
        uv_run(c->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&poll_t, NULL);
    uv_close((uv_handle_t *)&deadline, NULL);
    for (int i = 0; i < 100 && !(c->done_cb && !c->read_in_flight); i++)
        uv_run(c->loop, UV_RUN_ONCE);
    uv_run(c->loop, UV_RUN_NOWAIT);
    if (c->expired || c->status)
        return -1;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    int i99 = (int)((n * 99 + 99) / 100) - 1;
    printf("%-34s n=%-3d p50=%7.2f ms  p99=%7.2f ms  max=%7.2f ms\n", what, n, v[(n - 1) / 2],
           v[i99 < 0 ? 0 : i99], v[n - 1]);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    if (rounds < 1 || rounds > 10000)
        rounds = 20;
    const char *api = need("MERIDIAN_TEST_PDNS_API"), *key = need("MERIDIAN_TEST_PDNS_KEY");
    int dns_port = atoi(need("MERIDIAN_TEST_PDNS_DNS_PORT"));
    const char *etcd = need("MERIDIAN_TEST_ETCD");
    char zone[64], name[96], url[512], keyh[256], body[256], err[256];
    snprintf(zone, sizeof(zone), "bench%d.test.", (int)getpid());
    snprintf(name, sizeof(name), "db.%s", zone);

    /* zone */
    snprintf(url, sizeof(url), "%s/api/v1/servers/localhost/zones", api);
    snprintf(keyh, sizeof(keyh), "X-API-Key: %s", key);
    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"kind\":\"Native\",\"nameservers\":[]}", zone);
    const char *hdrs[] = {keyh, "Content-Type: application/json", NULL};
    mrd_http_client_req req = {.method = "POST",
                               .url = url,
                               .body = body,
                               .body_len = strlen(body),
                               .headers = hdrs,
                               .timeout_ms = 10000};
    int status = 0;
    char *resp = NULL;
    size_t rlen = 0;
    if (mrd_http_fetch(&req, &status, &resp, &rlen, err, sizeof(err)) || status != 201) {
        fprintf(stderr, "cannot create zone: %s %d %s\n", err, status, resp ? resp : "");
        free(resp);
        return 1;
    }
    free(resp);

    uv_loop_t loop;
    uv_loop_init(&loop);
    json_t *pc = json_pack("{ss ss ss ss ss ss si s{ssss}}", "driver", "pdns", "api_url", api,
                           "api_key", key, "zone", zone, "name", name, "type", "A", "ttl", 5,
                           "values", "eu", "127.0.0.11", "us", "127.0.0.12");
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "/meridian-bench-%d", (int)getpid());
    json_t *ec = json_pack("{ss s[s] ss}", "driver", "etcd", "endpoints", etcd, "prefix", prefix);
    mrd_cutover_driver *pd = NULL, *ed = NULL;
    if (mrd_cutover_driver_init(&pd, &loop, pc, err, sizeof(err)) ||
        mrd_cutover_driver_init(&ed, &loop, ec, err, sizeof(err))) {
        fprintf(stderr, "driver init: %s\n", err);
        return 1;
    }
    json_decref(pc);
    json_decref(ec);

    double *cb[2], *vis[2];
    int ok[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        cb[k] = calloc((size_t)rounds, sizeof(double));
        vis[k] = calloc((size_t)rounds, sizeof(double));
    }
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < rounds; i++) {
            const char *region = i % 2 ? "eu" : "us";
            round_ctx c = {.loop = &loop,
                           .d = k ? ed : pd,
                           .kind = k,
                           .dns_port = dns_port,
                           .name = name,
                           .want = i % 2 ? "127.0.0.11" : "127.0.0.12",
                           .epoch = i + 1};
            mrd_cutover_target t = {"bench", i + 1, region, i % 2 ? "us" : "eu", c.want, NULL};
            if (run_round(&c, &t) == 0) {
                cb[k][ok[k]] = c.t_cb;
                vis[k][ok[k]] = c.t_visible;
                ok[k]++;
            } else {
                fprintf(stderr, "%s round %d failed or timed out\n", k ? "etcd" : "pdns", i);
            }
        }
    }
    printf("cutover drivers, %d rounds (loopback servers; polling every 10 ms)\n", rounds);
    if (ok[0]) {
        report("pdns apply() -> callback", cb[0], ok[0]);
        report("pdns apply() -> dns answers", vis[0], ok[0]);
    }
    if (ok[1]) {
        report("etcd apply() -> callback", cb[1], ok[1]);
        report("etcd apply() -> read sees epoch", vis[1], ok[1]);
    }
    for (int k = 0; k < 2; k++) {
        free(cb[k]);
        free(vis[k]);
    }
    mrd_cutover_close(pd);
    mrd_cutover_close(ed);
    for (int i = 0; i < 1000 && uv_run(&loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    uv_loop_close(&loop);
    return ok[0] == rounds && ok[1] == rounds ? 0 : 1;
}
