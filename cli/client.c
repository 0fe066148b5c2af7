/*
 * meridianctl's HTTP client: blocking requests with libcurl easy to a list
 * of controller URLs. Called by commands.c, one request at a time.
 *
 * Failover between URLs: the URL that answered last is tried first; a
 * transport error (refused, unreachable, timed out) or a 5xx answer moves on
 * to the next URL, and only when every URL failed does the caller see the
 * failure (MRD_EHTTP) or the last 5xx. Writes are safe to resend: switchover
 * and failover carry an Idempotency-Key, maintenance is idempotent.
 *
 * Redirects: a follower answers a write with 307 and Location set to the
 * leader. curl's own redirect following would drop the Authorization header
 * on a change of port, so 307/308 are followed here, at most MAX_HOPS times,
 * with the same method, body and token, and only to http(s) URLs.
 * Proxies from the environment are ignored: the URLs are explicit.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "meridian/error.h"

#define MAX_HOPS      4
#define MAX_BODY      ((size_t)16 << 20)
#define CONNECT_LIMIT 2000L

struct mrd__cli_client {
    CURL *easy;
    char *urls[MRD__CLI_MAX_URLS];
    size_t nurls;
    size_t preferred; /* index of the URL that answered last */
    char *auth;       /* "Authorization: Bearer ..." or NULL */
    long timeout_ms;
    int global; /* curl_global_init succeeded */
};

typedef struct {
    char *data;
    size_t len, cap;
    int too_big;
} body_buf;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    body_buf *b = userdata;
    size_t n = size * nmemb;
    if (n > MAX_BODY - b->len) {
        b->too_big = 1;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL)
            return 0;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

mrd__cli_client *mrd__cli_client_new(const mrd__cli_settings *s, long timeout_ms)
{
    mrd__cli_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        free(c);
        return NULL;
    }
    c->global = 1;
    c->easy = curl_easy_init();
    if (c->easy == NULL)
        goto fail;
    for (size_t i = 0; i < s->nurls && i < MRD__CLI_MAX_URLS; i++) {
        c->urls[i] = strdup(s->urls[i]);
        if (c->urls[i] == NULL)
            goto fail;
        c->nurls++;
    }
    if (s->token) {
        size_t n = strlen(s->token) + 32;
        c->auth = malloc(n);
        if (c->auth == NULL)
            goto fail;
        snprintf(c->auth, n, "Authorization: Bearer %s", s->token);
    }
    return c;
fail:
    mrd__cli_client_free(c);
    return NULL;
}

long mrd__cli_client_set_timeout(mrd__cli_client *c, long timeout_ms)
{
    long old = c->timeout_ms;
    if (timeout_ms > 0)
        c->timeout_ms = timeout_ms;
    return old;
}

void mrd__cli_client_free(mrd__cli_client *c)
{
    if (c == NULL)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    for (size_t i = 0; i < c->nurls; i++)
        free(c->urls[i]);
    if (c->auth) {
        memset(c->auth, 0, strlen(c->auth));
        free(c->auth);
    }
    if (c->global)
        curl_global_cleanup();
    free(c);
}

void mrd__cli_resp_clear(mrd__cli_resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

int mrd__cli_url_escape(const char *s, char *buf, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = strlen(buf);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        size_t need = plain ? 1 : 3;
        if (o + need + 1 > len) {
            return MRD_ETOOBIG;
        }
        if (plain) {
            buf[o++] = (char)*p;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[*p >> 4];
            buf[o++] = hex[*p & 15];
        }
        buf[o] = '\0';
    }
    return 0;
}

/* One HTTP exchange, no redirects followed. Returns the CURLcode; fills
 * status, body and (for 3xx) location. */
static CURLcode exchange(mrd__cli_client *c, const char *method, const char *url, const char *body,
                         const char *const *headers, long *status, body_buf *out, char *location,
                         size_t loclen, char *err, size_t errlen)
{
    CURL *e = c->easy;
    curl_easy_reset(e);
    struct curl_slist *h = NULL, *t;
    char curl_err[CURL_ERROR_SIZE] = "";
    const char *fixed[] = {"Accept: application/json", "User-Agent: meridianctl/" MERIDIAN_VERSION,
                           body ? "Content-Type: application/json" : NULL};
    CURLcode cc = CURLE_OUT_OF_MEMORY;
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (fixed[i] == NULL)
            continue;
        if ((t = curl_slist_append(h, fixed[i])) == NULL)
            goto done;
        h = t;
    }
    if (c->auth) {
        if ((t = curl_slist_append(h, c->auth)) == NULL)
            goto done;
        h = t;
    }
    for (size_t i = 0; headers && headers[i]; i++) {
        if ((t = curl_slist_append(h, headers[i])) == NULL)
            goto done;
        h = t;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     c->timeout_ms < CONNECT_LIMIT ? c->timeout_ms : CONNECT_LIMIT);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, curl_err);
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    cc = curl_easy_perform(e);
    if (cc == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
        char *loc = NULL;
        location[0] = '\0';
        if (curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc)
            snprintf(location, loclen, "%s", loc);
    } else {
        snprintf(err, errlen, "%s",
                 out->too_big  ? "answer too large"
                 : curl_err[0] ? curl_err
                               : curl_easy_strerror(cc));
    }
done:
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    return cc;
}

static void append_error(mrd__cli_resp *r, const char *url, const char *why)
{
    size_t n = strlen(r->error);
    snprintf(r->error + n, sizeof(r->error) - n, "%s%s: %s", n ? "\n" : "", url, why);
}

int mrd__cli_request(mrd__cli_client *c, const char *method, const char *path, const char *body,
                     const char *const *headers, mrd__cli_resp *r)
{
    memset(r, 0, sizeof(*r));
    mrd__cli_resp last5xx = {0};
    int have5xx = 0;
    for (size_t k = 0; k < c->nurls; k++) {
        size_t idx = (c->preferred + k) % c->nurls;
        char url[1024];
        snprintf(url, sizeof(url), "%s%s", c->urls[idx], path);
        for (int hop = 0; hop <= MAX_HOPS; hop++) {
            body_buf b = {0};
            long status = 0;
            char location[1024] = "", err[CURL_ERROR_SIZE + 64] = "";
            CURLcode cc = exchange(c, method, url, body, headers, &status, &b, location,
                                   sizeof(location), err, sizeof(err));
            if (cc != CURLE_OK) {
                free(b.data);
                append_error(r, url, err);
                break; /* next URL */
            }
            if ((status == 307 || status == 308) && location[0]) {
                free(b.data);
                if (hop == MAX_HOPS) {
                    append_error(r, url, "too many redirects");
                    break;
                }
                if (strncmp(location, "http://", 7) != 0 && strncmp(location, "https://", 8) != 0) {
                    append_error(r, url, "redirect to a non-http URL refused");
                    break;
                }
                snprintf(url, sizeof(url), "%s", location);
                continue;
            }
            mrd__cli_resp got = {0};
            got.status = (int)status;
            got.body = b.data ? b.data : strdup("");
            if (got.body == NULL) {
                append_error(r, url, "out of memory");
                break;
            }
            got.json = json_loads(got.body, JSON_DECODE_ANY, NULL);
            snprintf(got.url, sizeof(got.url), "%s", url);
            if (status >= 500) {
                char why[160];
                json_t *e = json_object_get(got.json, "error");
                snprintf(why, sizeof(why), "HTTP %ld %.100s", status,
                         json_string_value(json_object_get(e, "code"))
                             ? json_string_value(json_object_get(e, "code"))
                             : "");
                append_error(r, url, why);
                mrd__cli_resp_clear(&last5xx);
                last5xx = got;
                have5xx = 1;
                break; /* another controller may do better */
            }
            c->preferred = idx;
            memcpy(got.error, r->error, sizeof(got.error));
            mrd__cli_resp_clear(&last5xx);
            *r = got;
            return 0;
        }
    }
    if (have5xx) {
        memcpy(last5xx.error, r->error, sizeof(last5xx.error));
        *r = last5xx;
        return 0;
    }
    return MRD_EHTTP;
}
