/*
 * Replication positions: 64-bit numbers that only grow within a timeline.
 * For PostgreSQL a position is the LSN, written "X/Y" where X is the upper and
 * Y the lower 32 bits in hex ("16/B374D848"). Lag in bytes is primary position
 * minus replay position, never negative.
 */
#ifndef MERIDIAN_POSITION_H
#define MERIDIAN_POSITION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Buffer size that always holds a formatted position and its NUL
 * ("FFFFFFFF/FFFFFFFF"). */
#define MRD_POS_STRLEN 18

/* Parses "X/Y": each part 1 to 8 hex digits (either case, leading zeros
 * allowed, so PostgreSQL's padded and unpadded forms both parse), exactly one
 * '/', nothing else (no spaces, signs or "0x"). Returns 0 and sets *out, or
 * MRD_EPARSE and leaves *out untouched. */
int mrd_pos_parse(const char *text, uint64_t *out);

/* Writes pos as PostgreSQL prints it ("%X/%X": upper-case hex, no padding,
 * "0/0" for zero). Returns the length written (at most 17), or MRD_ETOOBIG
 * when the text and its NUL do not fit in len bytes (buf then holds "" if
 * len > 0); a buffer of MRD_POS_STRLEN always fits. */
int mrd_pos_format(uint64_t pos, char *buf, size_t len);

/* Bytes by which replay is behind primary: primary - replay, or 0 when replay
 * is at or past primary (never wraps around). */
uint64_t mrd_pos_lag_bytes(uint64_t primary, uint64_t replay);

/* Reads a position from JSON: a non-negative integer or an "X/Y" string (with
 * no embedded NUL). jansson integers are signed 64-bit, so a position above
 * INT64_MAX can only be given as text. Returns 0 and sets *out, or MRD_EPARSE
 * (NULL, negative, real, other types, malformed text) and leaves *out
 * untouched. */
int mrd_pos_from_json(const json_t *v, uint64_t *out);

#endif
