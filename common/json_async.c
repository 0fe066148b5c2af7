/*
 * Parsing a large JSON document on libuv's thread pool (see
 * include/meridian/json_async.h). One request owns its copy of the text and
 * frees it on the worker; the document goes to the callback.
 */
#include "meridian/json_async.h"

#include <stdlib.h>
#include <string.h>

#include "meridian/error.h"

typedef struct {
    uv_work_t work;
    char *text;
    size_t len;
    json_t *doc;
    mrd_json_index_fn index;
    mrd_json_parsed_cb cb;
    void *data;
} parse_req;

static void parse_work(uv_work_t *w)
{
    parse_req *r = w->data;
    json_error_t jerr;
    r->doc = json_loadb(r->text, r->len, 0, &jerr);
    free(r->text);
    r->text = NULL;
    if (r->doc && r->index)
        r->index(r->doc);
}

static void parse_after(uv_work_t *w, int status)
{
    parse_req *r = w->data;
    json_t *doc = r->doc;
    (void)status; /* UV_ECANCELED cannot happen: nothing cancels these */
    r->cb(doc, r->data);
    free(r->text);
    free(r);
}

int mrd_json_parse_async(uv_loop_t *loop, const char *text, size_t len, mrd_json_index_fn index,
                         mrd_json_parsed_cb cb, void *data)
{
    parse_req *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return MRD_ENOMEM;
    r->text = malloc(len + 1);
    if (r->text == NULL) {
        free(r);
        return MRD_ENOMEM;
    }
    memcpy(r->text, text, len);
    r->text[len] = '\0';
    r->len = len;
    r->index = index;
    r->cb = cb;
    r->data = data;
    r->work.data = r;
    if (uv_queue_work(loop, &r->work, parse_work, parse_after) != 0) {
        free(r->text);
        free(r);
        return MRD_EIO;
    }
    return 0;
}

static void release_work(uv_work_t *w)
{
    json_decref(w->data);
}

static void release_after(uv_work_t *w, int status)
{
    (void)status;
    free(w);
}

void mrd_json_release_async(uv_loop_t *loop, json_t *doc)
{
    if (doc == NULL)
        return;
    uv_work_t *w = malloc(sizeof(*w));
    if (w != NULL) {
        w->data = doc;
        if (uv_queue_work(loop, w, release_work, release_after) == 0)
            return;
        free(w);
    }
    json_decref(doc);
}
