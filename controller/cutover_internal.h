/*
 * Internals shared by the cutover drivers (controller/cutover*.c) and their
 * unit tests: pure functions without I/O (codecs, JSON builders and parsers,
 * backoff), and the config checks of each driver.
 */
#ifndef MERIDIAN_CUTOVER_INTERNAL_H
#define MERIDIAN_CUTOVER_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "meridian/config.h"
#include "meridian/cutover.h"
#include "meridian/http_client.h"

/* ---- shared helpers (cutover.c) ---- */

/* Standard base64 (RFC 4648, with padding). Writes a NUL-terminated text
 * into out when it fits; returns the length it needed without the NUL. */
size_t mrd__b64_encode(const void *in, size_t len, char *out, size_t outlen);
/* Decodes standard base64 (padding required, no whitespace). Returns 0 and
 * sets *outn; MRD_EPARSE on malformed input; MRD_ETOOBIG when out is too
 * small. out is not NUL-terminated. */
int mrd__b64_decode(const char *in, size_t len, void *out, size_t outlen, size_t *outn);

/* Epoch as exactly 20 decimal digits, zero-padded (bytewise order equals
 * numeric order for epochs >= 0). out must hold 21 bytes. Returns 0 or
 * MRD_EINVAL for a negative epoch. */
int mrd__epoch_pad(int64_t epoch, char out[21]);
/* Parses exactly 20 digits. Returns 0 or MRD_EPARSE. */
int mrd__epoch_unpad(const char *s, size_t len, int64_t *out);

/* Full-jitter exponential backoff: a delay in [0, min(cap, base * 2^attempt)]
 * picked by rnd (any 64-bit random number). attempt counts from 0. */
uint64_t mrd__backoff_full_jitter(unsigned attempt, uint64_t base_ms, uint64_t cap_ms,
                                  uint64_t rnd);

/* HMAC-SHA256 of msg under key, as 64 lower-case hex digits and a NUL.
 * Returns 0 or MRD_EINTERNAL. */
int mrd__hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
                         char out[65]);

/* 1 when s is 1..max characters of [A-Za-z0-9] and the extra characters. */
int mrd__cutover_name_ok(const char *s, size_t max, const char *extra);

/* Maps the outcome of an HTTP request to 0 (2xx) or an MRD_E* with a short
 * message in msg: transport error -> MRD_ETIMEOUT ("timed out") or MRD_EHTTP;
 * 401/403 -> MRD_EUNAUTHORIZED; 404 -> MRD_ENOTFOUND; 400/409/422 ->
 * MRD_EINVAL; other statuses -> MRD_EHTTP. what names the target ("powerdns"). */
int mrd__cutover_http_status(const mrd_http_client_result *r, const char *what, char *msg,
                             size_t msglen);

/* Current UTC time as RFC 3339 with milliseconds ("2026-11-27T17:00:00.123Z"). */
void mrd__cutover_now_rfc3339(char out[32]);

/* ---- config helpers (cutover.c) ---- */

/* Validates obj against schema (include/meridian/config.h) and prefixes the
 * message with path ("dns.ttl: ..."). Returns 0 or MRD_ECONFIG. */
int mrd__cutover_validate(const json_t *obj, const mrd_cfg_schema *schema, const char *path,
                          char *err, size_t errlen);
/* 1 when s is an http:// or https:// URL with a host part and no blanks. */
int mrd__cutover_url_ok(const char *s);
/* The string at key, or def when absent or not a string. */
const char *mrd__cfg_str_or(const json_t *obj, const char *key, const char *def);
/* The integer at key, or def when absent or not an integer. */
long long mrd__cfg_int_or(const json_t *obj, const char *key, long long def);

/* ---- config checks (one per driver file) ---- */
int mrd__cutover_pdns_check(const json_t *cfg, char *err, size_t errlen);
int mrd__cutover_etcd_check(const json_t *cfg, char *err, size_t errlen);
int mrd__cutover_webhook_check(const json_t *cfg, char *err, size_t errlen);

/* ---- PowerDNS (cutover_pdns.c) ---- */

/* 1 when value is valid content for type ("A", "AAAA", "CNAME"; CNAME targets
 * are absolute names with the trailing dot). */
int mrd__pdns_value_ok(const char *type, const char *value);
/* TXT content with its quotes: "\"epoch=3 primary=us\"". Returns the length
 * needed without the NUL (like snprintf). */
size_t mrd__pdns_txt_content(char *out, size_t outlen, int64_t epoch, const char *region);
/* Parses TXT content, quoted or not ("epoch=N primary=R"). Returns 0 or
 * MRD_EPARSE. */
int mrd__pdns_txt_parse(const char *content, int64_t *epoch, char *region, size_t regionlen);
/* Body of the PATCH that replaces the record (name, type, ttl, value) and
 * the TXT _meridian.<name>. Returns a malloc'd JSON text or NULL (no memory). */
char *mrd__pdns_patch_body(const char *name, const char *type, long ttl, const char *value,
                           int64_t epoch, const char *region);
/* Looks for the rrset (name, type) in a zone document (GET of a zone, with
 * or without an rrset filter) and copies the first enabled record's content.
 * Returns 1 found, 0 absent (or no enabled record), MRD_EPARSE. */
int mrd__pdns_zone_find(const json_t *zone, const char *name, const char *type, char *content,
                        size_t contentlen);
/* Fills obs from the zone documents of the record and of its TXT (they may be
 * the same document). obs->ok is 1 when both are present and the TXT parses.
 * Returns 0 or MRD_EPARSE. */
int mrd__pdns_observed(const json_t *record_zone, const json_t *txt_zone, const char *name,
                       const char *type, mrd_cutover_observed *obs);

/* ---- etcd (cutover_etcd.c) ---- */

/* Keys of a service: "<prefix>/services/<svc>/primary" and ".../epoch".
 * Return the length needed (like snprintf). */
size_t mrd__etcd_key(char *out, size_t outlen, const char *prefix, const char *service,
                     const char *leaf);
/* Value of the primary key: {"primary_region", "endpoint", "epoch",
 * "changed_at", "operation_id"?}. Returns a malloc'd JSON text or NULL. */
char *mrd__etcd_primary_value(const mrd_cutover_target *t, const char *changed_at);
/* Body of the fencing transaction:
 *   if epoch_key.value < pad(epoch): put both keys
 *   else txn { if epoch_key.create_revision == 0: put both keys
 *              else range epoch_key, range primary_key }
 * Returns a malloc'd JSON text or NULL (no memory, or epoch < 0). */
char *mrd__etcd_txn_body(const char *prefix, const mrd_cutover_target *t, const char *changed_at);
/* Parses the answer to mrd__etcd_txn_body. Returns 1 (written), 0 (refused:
 * obs holds the stored values), or MRD_EPARSE with a reason in err. */
int mrd__etcd_txn_parse(const char *body, size_t len, mrd_cutover_observed *obs, char *err,
                        size_t errlen);
/* Body of the read transaction (no compare; ranges of both keys). */
char *mrd__etcd_read_body(const char *prefix, const char *service);
/* Parses the answer to mrd__etcd_read_body into obs (obs->ok = 0 when the
 * keys are absent). Returns 0 or MRD_EPARSE with a reason in err. */
int mrd__etcd_read_parse(const char *body, size_t len, mrd_cutover_observed *obs, char *err,
                         size_t errlen);
/* Copies the "message" (or "error") of an etcd gateway error document into
 * out; "" when none. */
void mrd__etcd_error_message(const char *body, size_t len, char *out, size_t outlen);

/* ---- webhooks (cutover_webhook.c) ---- */

/* Event body: {"service", "epoch", "old_region", "new_region", "endpoint",
 * "operation_id"} (absent strings as null). Returns a malloc'd compact JSON
 * text or NULL. */
char *mrd__webhook_body(const mrd_cutover_target *t);
/* 1 when an answer with this status (0: transport error) is worth a retry. */
int mrd__webhook_retryable(int status);

#endif
