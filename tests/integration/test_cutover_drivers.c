/* Integration tests of the cutover drivers against the real PowerDNS and
 * etcd that tests/run.sh starts (MERIDIAN_TEST_PDNS_API, _PDNS_KEY,
 * _PDNS_DNS_PORT, MERIDIAN_TEST_ETCD), and of the webhook driver against a
 * small HTTP receiver run by the test in a thread on 127.0.0.1:0. Each test
 * runs its libuv loop with a bound (deadline timer) and checks that the
 * driver leaves no handle behind (uv_loop_close succeeds). */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cutover_internal.h"
#include "meridian/cutover.h"
#include "meridian/error.h"
#include "meridian/http_client.h"

static const char *env(const char *name)
{
    const char *v = getenv(name);
    cr_assert(v && v[0], "%s is not set: run through tests/run.sh", name);
    return v;
}

/* ---------------- loop with a bound ---------------- */

typedef struct {
    int calls, status, attempts, ok;
    int64_t epoch;
    char message[400], region[64], value[256];
} outcome;

static void on_result(const mrd_cutover_result *r, void *data)
{
    outcome *o = data;
    o->calls++;
    o->status = r->status;
    o->attempts = r->attempts;
    snprintf(o->message, sizeof(o->message), "%s", r->message);
    o->ok = -1;
    if (r->observed) {
        o->ok = r->observed->ok;
        o->epoch = r->observed->epoch;
        snprintf(o->region, sizeof(o->region), "%s", r->observed->region);
        snprintf(o->value, sizeof(o->value), "%s", r->observed->value);
    }
}

static void deadline_cb(uv_timer_t *t)
{
    *(int *)t->data = 1;
}

/* Runs the loop until o->calls > 0, at most ms milliseconds. */
static void wait_for(uv_loop_t *loop, outcome *o, uint64_t ms)
{
    uv_timer_t deadline;
    int expired = 0;
    uv_timer_init(loop, &deadline);
    deadline.data = &expired;
    uv_timer_start(&deadline, deadline_cb, ms, 0);
    for (int i = 0; i < 100000 && !o->calls && !expired; i++)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    cr_assert_eq(o->calls, 1, "no callback within %" PRIu64 " ms", ms);
}

static outcome apply_wait(uv_loop_t *loop, mrd_cutover_driver *d, const mrd_cutover_target *t)
{
    outcome o = {0};
    int rc = mrd_cutover_apply(d, t, on_result, &o);
    cr_assert_eq(rc, 0, "apply refused: %s", mrd_err_name(rc));
    cr_assert_eq(o.calls, 0, "callback ran inside apply");
    wait_for(loop, &o, 15000);
    return o;
}

static outcome read_wait(uv_loop_t *loop, mrd_cutover_driver *d, const char *service)
{
    outcome o = {0};
    int rc = mrd_cutover_read(d, service, on_result, &o);
    cr_assert_eq(rc, 0, "read refused: %s", mrd_err_name(rc));
    wait_for(loop, &o, 15000);
    return o;
}

/* Closes the driver, drains the loop (bounded) and checks nothing is left. */
static void close_all(uv_loop_t *loop, mrd_cutover_driver *d)
{
    mrd_cutover_close(d);
    for (int i = 0; i < 1000 && uv_run(loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    cr_assert_eq(uv_loop_close(loop), 0, "handles left on the loop");
}

static mrd_cutover_driver *driver(uv_loop_t *loop, json_t *cfg)
{
    mrd_cutover_driver *d = NULL;
    char err[256] = "";
    int rc = mrd_cutover_driver_init(&d, loop, cfg, err, sizeof(err));
    cr_assert_eq(rc, 0, "init: %s %s", mrd_err_name(rc), err);
    json_decref(cfg);
    return d;
}

static mrd_cutover_target tgt(const char *svc, int64_t epoch, const char *region,
                              const char *endpoint)
{
    mrd_cutover_target t = {svc, epoch, region, "eu", endpoint, "op-test"};
    return t;
}

/* ---------------- PowerDNS ---------------- */

static void pdns_create_zone(const char *zone)
{
    char url[512], key[256], body[512], err[256];
    snprintf(url, sizeof(url), "%s/api/v1/servers/localhost/zones", env("MERIDIAN_TEST_PDNS_API"));
    snprintf(key, sizeof(key), "X-API-Key: %s", env("MERIDIAN_TEST_PDNS_KEY"));
    snprintf(body, sizeof(body), "{\"name\": \"%s\", \"kind\": \"Native\", \"nameservers\": []}",
             zone);
    const char *headers[] = {key, "Content-Type: application/json", NULL};
    mrd_http_client_req req = {.method = "POST",
                               .url = url,
                               .body = body,
                               .body_len = strlen(body),
                               .headers = headers,
                               .timeout_ms = 10000};
    int status = 0;
    char *resp = NULL;
    size_t len = 0;
    int rc = mrd_http_fetch(&req, &status, &resp, &len, err, sizeof(err));
    cr_assert_eq(rc, 0, "zone create: %s", err);
    cr_assert_eq(status, 201, "zone create: status %d: %s", status, resp ? resp : "");
    free(resp);
}

/* First line of `dig +short`, "" when none. */
static void dig(const char *name, const char *type, char *out, size_t outlen)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "dig @127.0.0.1 -p %s +short +time=2 +tries=2 %s %s",
             env("MERIDIAN_TEST_PDNS_DNS_PORT"), name, type);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    out[0] = '\0';
    if (!fgets(out, (int)outlen, p))
        out[0] = '\0';
    pclose(p);
    out[strcspn(out, "\n")] = '\0';
}

static json_t *pdns_cfg(const char *zone, const char *name, const char *key)
{
    return json_pack("{ss ss ss ss ss ss si sI s{ssss} sb}", "driver", "pdns", "api_url",
                     env("MERIDIAN_TEST_PDNS_API"), "api_key", key, "zone", zone, "name", name,
                     "type", "A", "ttl", 5, "timeout_ms", (json_int_t)5000, "values", "eu",
                     "127.0.0.11", "us", "127.0.0.12", "required", 1);
}

static void unique(char *out, size_t len, const char *fmt)
{
    static int n;
    snprintf(out, len, fmt, (int)getpid(), ++n, (unsigned)(uv_hrtime() % 100000));
}

Test(pdns, apply_epochs_then_dig_and_read)
{
    char zone[128], name[160], ans[256];
    unique(zone, sizeof(zone), "t%d-%d-%u.test.");
    snprintf(name, sizeof(name), "db.%s", zone);
    pdns_create_zone(zone);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, pdns_cfg(zone, name, env("MERIDIAN_TEST_PDNS_KEY")));
    cr_assert_str_eq(d->name, "pdns");

    mrd_cutover_target t = tgt("db", 1, "us", NULL);
    outcome o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.attempts, 1);
    dig(name, "A", ans, sizeof(ans));
    cr_assert_str_eq(ans, "127.0.0.12");
    char txt_name[200];
    snprintf(txt_name, sizeof(txt_name), "_meridian.%s", name);
    dig(txt_name, "TXT", ans, sizeof(ans));
    cr_assert_str_eq(ans, "\"epoch=1 primary=us\"");

    t = tgt("db", 2, "eu", NULL);
    o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, 0, "%s", o.message);
    dig(name, "A", ans, sizeof(ans));
    cr_assert_str_eq(ans, "127.0.0.11");
    dig(txt_name, "TXT", ans, sizeof(ans));
    cr_assert_str_eq(ans, "\"epoch=2 primary=eu\"");

    o = read_wait(&loop, d, "db");
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.ok, 1);
    cr_assert_eq(o.epoch, 2);
    cr_assert_str_eq(o.region, "eu");
    cr_assert_str_eq(o.value, "127.0.0.11");
    cr_assert_eq(o.attempts, 2);

    /* Re-applying is harmless. */
    o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, 0, "%s", o.message);
    dig(name, "A", ans, sizeof(ans));
    cr_assert_str_eq(ans, "127.0.0.11");

    /* A region without a configured value: the endpoint if it is an address,
     * else a refusal before any request. */
    t = tgt("db", 3, "ap", "127.0.0.13");
    o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, 0, "%s", o.message);
    dig(name, "A", ans, sizeof(ans));
    cr_assert_str_eq(ans, "127.0.0.13");
    t = tgt("db", 4, "ap", "db-ap.internal:5432");
    cr_assert_eq(mrd_cutover_apply(d, &t, on_result, &o), MRD_EINVAL);
    close_all(&loop, d);
}

Test(pdns, read_of_absent_record_and_errors)
{
    char zone[128], name[160];
    unique(zone, sizeof(zone), "t%d-%d-%u.test.");
    snprintf(name, sizeof(name), "db.%s", zone);
    pdns_create_zone(zone);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, pdns_cfg(zone, name, env("MERIDIAN_TEST_PDNS_KEY")));
    outcome o = read_wait(&loop, d, "db");
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.ok, 0);
    cr_assert_eq(o.epoch, -1);
    close_all(&loop, d);

    /* A zone that does not exist: not found, reported, not a crash. */
    uv_loop_init(&loop);
    d = driver(&loop, pdns_cfg("absent.test.", "db.absent.test.", env("MERIDIAN_TEST_PDNS_KEY")));
    mrd_cutover_target t = tgt("db", 1, "us", NULL);
    o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, MRD_ENOTFOUND, "%s: %s", mrd_err_name(o.status), o.message);
    cr_assert(strstr(o.message, "404"), "%s", o.message);
    close_all(&loop, d);

    /* A wrong API key. */
    uv_loop_init(&loop);
    d = driver(&loop, pdns_cfg(zone, name, "wrong-key"));
    o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, MRD_EUNAUTHORIZED, "%s: %s", mrd_err_name(o.status), o.message);
    close_all(&loop, d);
}

/* ---------------- etcd ---------------- */

static json_t *etcd_cfg(const char *prefix, const char *first_endpoint)
{
    json_t *eps = json_array();
    if (first_endpoint)
        json_array_append_new(eps, json_string(first_endpoint));
    json_array_append_new(eps, json_string(env("MERIDIAN_TEST_ETCD")));
    return json_pack("{ss so ss sI sb}", "driver", "etcd", "endpoints", eps, "prefix", prefix,
                     "timeout_ms", (json_int_t)5000, "required", 1);
}

Test(etcd, stale_epoch_is_refused)
{
    char prefix[128];
    unique(prefix, sizeof(prefix), "/meridian-test-%d-%d-%u");
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, etcd_cfg(prefix, NULL));
    cr_assert_str_eq(d->name, "etcd");

    mrd_cutover_target t = tgt("db", 5, "us", "10.0.0.12:5432");
    outcome o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.attempts, 1);

    /* A late apply of an older epoch (a deposed leader) is a fencing event. */
    mrd_cutover_target late = tgt("db", 4, "eu", "10.0.0.11:5432");
    o = apply_wait(&loop, d, &late);
    cr_assert_eq(o.status, MRD_ESTALE, "%s: %s", mrd_err_name(o.status), o.message);
    cr_assert_eq(o.epoch, 5);
    cr_assert_str_eq(o.region, "us");
    cr_assert(strstr(o.message, "epoch 5"), "%s", o.message);

    o = read_wait(&loop, d, "db");
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.ok, 1);
    cr_assert_eq(o.epoch, 5);
    cr_assert_str_eq(o.region, "us");
    cr_assert_str_eq(o.value, "10.0.0.12:5432");

    /* The same epoch again: our own write, succeeds without a change... */
    o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_str_eq(o.message, "already applied");
    /* ...but the same epoch with another primary is refused. */
    mrd_cutover_target other = tgt("db", 5, "eu", "10.0.0.11:5432");
    o = apply_wait(&loop, d, &other);
    cr_assert_eq(o.status, MRD_ESTALE, "%s", o.message);

    o = read_wait(&loop, d, "nothing-here");
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.ok, 0);
    close_all(&loop, d);
}

Test(etcd, padding_orders_nine_before_ten)
{
    char prefix[128];
    unique(prefix, sizeof(prefix), "/meridian-test-%d-%d-%u");
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, etcd_cfg(prefix, NULL));
    mrd_cutover_target t9 = tgt("db", 9, "eu", "e9"), t10 = tgt("db", 10, "us", "e10");
    outcome o = apply_wait(&loop, d, &t9);
    cr_assert_eq(o.status, 0, "%s", o.message);
    o = apply_wait(&loop, d, &t10); /* "10" < "9" bytewise: padding makes this work */
    cr_assert_eq(o.status, 0, "%s", o.message);
    o = apply_wait(&loop, d, &t9);
    cr_assert_eq(o.status, MRD_ESTALE, "%s", o.message);
    cr_assert_eq(o.epoch, 10);
    o = read_wait(&loop, d, "db");
    cr_assert_eq(o.epoch, 10);
    cr_assert_str_eq(o.region, "us");
    cr_assert_str_eq(o.value, "e10");

    /* The stored epoch key is the padded text. */
    char key[256], b64[512], url[512], body[700], err[128];
    mrd__etcd_key(key, sizeof(key), prefix, "db", "epoch");
    mrd__b64_encode(key, strlen(key), b64, sizeof(b64));
    snprintf(url, sizeof(url), "%s/v3/kv/range", env("MERIDIAN_TEST_ETCD"));
    snprintf(body, sizeof(body), "{\"key\": \"%s\"}", b64);
    mrd_http_client_req req = {
        .method = "POST", .url = url, .body = body, .body_len = strlen(body), .timeout_ms = 5000};
    int status = 0;
    char *resp = NULL;
    size_t len = 0;
    cr_assert_eq(mrd_http_fetch(&req, &status, &resp, &len, err, sizeof(err)), 0, "%s", err);
    json_t *doc = json_loads(resp, 0, NULL);
    free(resp);
    const char *v =
        json_string_value(json_object_get(json_array_get(json_object_get(doc, "kvs"), 0), "value"));
    cr_assert_not_null(v);
    char raw[64];
    size_t n = 0;
    cr_assert_eq(mrd__b64_decode(v, strlen(v), raw, sizeof(raw) - 1, &n), 0);
    raw[n] = '\0';
    cr_assert_str_eq(raw, "00000000000000000010");
    json_decref(doc);
    close_all(&loop, d);
}

Test(etcd, unreachable_endpoint_falls_over_to_the_next)
{
    char prefix[128];
    unique(prefix, sizeof(prefix), "/meridian-test-%d-%d-%u");
    /* A port nobody listens on: bind one, close it. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s);
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", ntohs(a.sin_port));
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, etcd_cfg(prefix, dead));
    mrd_cutover_target t = tgt("db", 1, "us", "x");
    outcome o = apply_wait(&loop, d, &t);
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.attempts, 2);
    close_all(&loop, d);
}

Test(etcd, close_with_a_pending_call_reports_closed)
{
    char prefix[128];
    unique(prefix, sizeof(prefix), "/meridian-test-%d-%d-%u");
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, etcd_cfg(prefix, NULL));
    outcome o = {0};
    mrd_cutover_target t = tgt("db", 1, "us", "x");
    cr_assert_eq(mrd_cutover_apply(d, &t, on_result, &o), 0);
    mrd_cutover_close(d);
    for (int i = 0; i < 1000 && uv_run(&loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.status, MRD_ECLOSED, "%s", mrd_err_name(o.status));
    cr_assert_eq(uv_loop_close(&loop), 0);
}

/* ---------------- webhooks ---------------- */

#define MAX_REQS 8

typedef struct {
    int fd, port;
    int statuses[MAX_REQS]; /* answer of the n-th request, then the last; -1: none */
    int nstatuses;
    int count;
    char idem[MAX_REQS][128], sig[MAX_REQS][128], body[MAX_REQS][1024];
    volatile int stop;
    pthread_t thread;
} receiver;

static void header_value(const char *head, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    size_t nl = strlen(name);
    for (const char *p = head; p && *p; p = strstr(p, "\r\n") ? strstr(p, "\r\n") + 2 : NULL) {
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = strcspn(v, "\r\n");
            snprintf(out, outlen, "%.*s", (int)n, v);
            return;
        }
    }
}

/* One request per connection (answers with Connection: close). */
static void serve_one(receiver *r, int c)
{
    char buf[8192];
    size_t n = 0;
    char *end = NULL;
    for (int i = 0; i < 200 && !end && n < sizeof(buf) - 1; i++) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t k = recv(c, buf + n, sizeof(buf) - 1 - n, 0);
        if (k <= 0)
            return;
        n += (size_t)k;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return;
    char cl[32];
    header_value(buf, "Content-Length", cl, sizeof(cl));
    size_t want = (size_t)atol(cl), head = (size_t)(end + 4 - buf);
    for (int i = 0; i < 200 && n < head + want && n < sizeof(buf) - 1; i++) {
        struct pollfd p = {c, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t k = recv(c, buf + n, sizeof(buf) - 1 - n, 0);
        if (k <= 0)
            return;
        n += (size_t)k;
        buf[n] = '\0';
    }
    int i = r->count < MAX_REQS ? r->count : MAX_REQS - 1;
    header_value(buf, "Idempotency-Key", r->idem[i], sizeof(r->idem[i]));
    header_value(buf, "X-Meridian-Signature", r->sig[i], sizeof(r->sig[i]));
    snprintf(r->body[i], sizeof(r->body[i]), "%.*s", (int)want, buf + head);
    int status = r->statuses[r->count < r->nstatuses ? r->count : r->nstatuses - 1];
    r->count++;
    if (status < 0) { /* never answer: hold the connection until stopped */
        for (int k = 0; k < 2000 && !r->stop; k++)
            usleep(10000);
        return;
    }
    char resp[128];
    int len = snprintf(resp, sizeof(resp),
                       "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", status);
    ssize_t w = send(c, resp, (size_t)len, MSG_NOSIGNAL);
    (void)w;
}

static void *receiver_main(void *arg)
{
    receiver *r = arg;
    for (int i = 0; i < 2000 && !r->stop; i++) { /* 2000 x 10 ms bound */
        struct pollfd p = {r->fd, POLLIN, 0};
        if (poll(&p, 1, 10) <= 0)
            continue;
        int c = accept(r->fd, NULL, NULL);
        if (c < 0)
            continue;
        serve_one(r, c);
        close(c);
    }
    return NULL;
}

static void receiver_start(receiver *r)
{
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    cr_assert_eq(bind(r->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(r->fd, 16), 0);
    getsockname(r->fd, (struct sockaddr *)&a, &al);
    r->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&r->thread, NULL, receiver_main, r), 0);
}

static void receiver_stop(receiver *r)
{
    r->stop = 1;
    pthread_join(r->thread, NULL);
    close(r->fd);
}

static json_t *hook_cfg(int port, const char *secret, int max_attempts)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", port);
    return json_pack("[{sssssisisisi}]", "url", url, "secret", secret, "timeout_ms", 2000,
                     "max_attempts", max_attempts, "backoff_base_ms", 20, "backoff_max_ms", 200);
}

Test(webhook, retries_until_success_with_the_same_key_and_a_valid_signature)
{
    receiver r = {.statuses = {500, 500, 200}, .nstatuses = 3};
    receiver_start(&r);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, hook_cfg(r.port, "s3cret", 5));
    cr_assert_str_eq(d->name, "webhook");
    mrd_cutover_target t = {"db", 7, "us", "eu", "10.0.0.12:5432", "op-42"};
    outcome o = apply_wait(&loop, d, &t);
    receiver_stop(&r);
    cr_assert_eq(o.status, 0, "%s", o.message);
    cr_assert_eq(o.attempts, 3);
    cr_assert_eq(r.count, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(r.idem[i], "db:7");
        cr_assert_str_eq(r.body[i], r.body[0]);
        char hex[65], want[80];
        mrd__hmac_sha256_hex("s3cret", 6, r.body[i], strlen(r.body[i]), hex);
        snprintf(want, sizeof(want), "sha256=%s", hex);
        cr_assert_str_eq(r.sig[i], want);
    }
    json_t *ev = json_loads(r.body[0], 0, NULL);
    cr_assert_not_null(ev);
    cr_assert_str_eq(json_string_value(json_object_get(ev, "service")), "db");
    cr_assert_eq(json_integer_value(json_object_get(ev, "epoch")), 7);
    cr_assert_str_eq(json_string_value(json_object_get(ev, "old_region")), "eu");
    cr_assert_str_eq(json_string_value(json_object_get(ev, "new_region")), "us");
    cr_assert_str_eq(json_string_value(json_object_get(ev, "endpoint")), "10.0.0.12:5432");
    cr_assert_str_eq(json_string_value(json_object_get(ev, "operation_id")), "op-42");
    json_decref(ev);
    outcome rd = {0};
    cr_assert_eq(mrd_cutover_read(d, "db", on_result, &rd), MRD_EUNSUPPORTED);
    close_all(&loop, d);
}

Test(webhook, gives_up_after_max_attempts)
{
    receiver r = {.statuses = {503}, .nstatuses = 1};
    receiver_start(&r);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, hook_cfg(r.port, "k", 2));
    mrd_cutover_target t = {"db", 8, "eu", "us", NULL, NULL};
    outcome o = apply_wait(&loop, d, &t);
    receiver_stop(&r);
    cr_assert_eq(o.status, MRD_EHTTP, "%s", mrd_err_name(o.status));
    cr_assert_eq(o.attempts, 2);
    cr_assert_eq(r.count, 2);
    cr_assert(strstr(o.message, "503") && strstr(o.message, "after 2 attempts"), "%s", o.message);
    close_all(&loop, d);
}

Test(webhook, client_error_is_not_retried)
{
    receiver r = {.statuses = {400}, .nstatuses = 1};
    receiver_start(&r);
    uv_loop_t loop;
    uv_loop_init(&loop);
    mrd_cutover_driver *d = driver(&loop, hook_cfg(r.port, "k", 5));
    mrd_cutover_target t = {"db", 9, "eu", "us", NULL, NULL};
    outcome o = apply_wait(&loop, d, &t);
    receiver_stop(&r);
    cr_assert_eq(o.status, MRD_EHTTP, "%s", mrd_err_name(o.status));
    cr_assert_eq(o.attempts, 1);
    cr_assert_eq(r.count, 1);
    close_all(&loop, d);
}

/* Closed while waiting for a retry or with the retry in flight (the jitter
 * decides which): the call completes with MRD_ECLOSED either way. */
Test(webhook, close_during_retries_reports_closed)
{
    receiver r = {.statuses = {500, -1}, .nstatuses = 2};
    receiver_start(&r);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hook", r.port);
    mrd_cutover_driver *d =
        driver(&loop, json_pack("[{sssssisisi}]", "url", url, "secret", "k", "max_attempts", 5,
                                "backoff_base_ms", 5000, "backoff_max_ms", 5000));
    mrd_cutover_target t = {"db", 10, "eu", "us", NULL, NULL};
    outcome o = {0};
    cr_assert_eq(mrd_cutover_apply(d, &t, on_result, &o), 0);
    /* Run until the first answer has arrived (bounded), then close. */
    for (int i = 0; i < 500 && r.count < 1; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
    for (int i = 0; i < 20; i++) { /* let the client deliver the 500 */
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(5000);
    }
    cr_assert_geq(r.count, 1);
    cr_assert_eq(o.calls, 0);
    mrd_cutover_close(d);
    for (int i = 0; i < 1000 && uv_run(&loop, UV_RUN_NOWAIT); i++)
        usleep(1000);
    receiver_stop(&r);
    cr_assert_eq(o.calls, 1);
    cr_assert_eq(o.status, MRD_ECLOSED, "%s", mrd_err_name(o.status));
    cr_assert_eq(uv_loop_close(&loop), 0);
}
