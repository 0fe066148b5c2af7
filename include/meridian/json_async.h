/*
 * Parsing a large JSON document off the event loop: the text is copied,
 * parsed (and optionally indexed) on libuv's thread pool, and the document
 * is handed to a callback on the loop thread. The controller's per-tick
 * snapshots of a large fleet are megabytes of JSON; parsing them on the
 * loop stalled every heartbeat answer behind it for tens of milliseconds.
 *
 * The worker only touches the new document (jansson objects are not shared
 * across threads until the callback runs), so no locking is needed.
 */
#ifndef MERIDIAN_JSON_ASYNC_H
#define MERIDIAN_JSON_ASYNC_H

#include <jansson.h>
#include <stddef.h>
#include <uv.h>

/* Runs on a worker thread right after a successful parse: may add keys to
 * doc (indexes), must touch nothing else. */
typedef void (*mrd_json_index_fn)(json_t *doc);

/* Runs on the loop thread. doc is NULL when the text was not valid JSON
 * (or memory ran out); otherwise the callee owns the reference. */
typedef void (*mrd_json_parsed_cb)(json_t *doc, void *data);

/* Copies len bytes of text and schedules the parse. Returns 0, or
 * MRD_ENOMEM / MRD_EIO (the callback is then never called). */
int mrd_json_parse_async(uv_loop_t *loop, const char *text, size_t len, mrd_json_index_fn index,
                         mrd_json_parsed_cb cb, void *data);

/* Drops a reference to doc on the thread pool: freeing a document of
 * millions of values takes as long as parsing it. Only for documents that
 * nothing on the loop reads afterwards except through references it holds
 * itself (jansson's reference counts are atomic here). Falls back to
 * json_decref() on the loop when the work cannot be queued. */
void mrd_json_release_async(uv_loop_t *loop, json_t *doc);

#endif
