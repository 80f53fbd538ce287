/*
 * patch.h — JSON Merge Patch (RFC 7396) and JSON Patch (RFC 6902, with JSON Pointer, RFC 6901)
 * on jansson: pure functions that take a document and a patch and return a new document or an
 * error, with no I/O. The input document and patch are never modified.
 *
 * Why hand-written: Debian 12 packages no C library for either format (jansson has none, json-c
 * 0.16 has none, and two JSON libraries in one program is worse than 300 lines of RFC), and the
 * RFCs are short and come with their own examples, which tests/test_put_patch.c runs.
 *
 * Safe on any input (a fuzzer will be pointed at them): no recursion without a depth bound
 * (PATCH_MAX_DEPTH), no crash on a pointer into a scalar or past an array's end, the array index
 * rules of RFC 6901 ("0" or digits without a leading zero; "-", the end of the array, only where
 * an add may append), a cap on the operations of one patch and on the values of the result (a
 * chain of copy operations would otherwise double the document at each step).
 *
 * What goes wrong is sorted the way an HTTP API answers it (RFC 5789, section 2.2):
 *   PATCH_MALFORMED     the patch document itself is wrong, whatever it is applied to: not an
 *                       array, an unknown op, a pointer that does not start with "/", a bad "~"
 *                       escape, a missing "value" (400)
 *   PATCH_CONFLICT      the patch is well formed but does not fit the document as it is now: a
 *                       failed "test", a path that does not exist, an index past the end or not an
 *                       index at all on that array, a step into a string or a number (409)
 *   PATCH_UNPROCESSABLE the result would be nested deeper than PATCH_MAX_DEPTH or hold more than
 *                       PATCH_MAX_VALUES values (422)
 */
#ifndef LAB_PUT_PATCH_PATCH_H
#define LAB_PUT_PATCH_PATCH_H

#include <jansson.h>
#include <stddef.h>

/* a user is 3 levels deep; 64 is room for any honest document and bounds every recursion here */
#define PATCH_MAX_DEPTH 64
/* operations in one JSON Patch: an edit is a handful; a 64 KiB body could hold thousands */
#define PATCH_MAX_OPS 256
/* values (every scalar, array and object counts one) in a document before, during and after a patch */
#define PATCH_MAX_VALUES 20000

enum patch_status { PATCH_OK = 0, PATCH_MALFORMED, PATCH_CONFLICT, PATCH_UNPROCESSABLE };

/* "ok", "malformed", "conflict", "unprocessable" */
const char *patch_status_name(enum patch_status s);

/*
 * RFC 7396: *out is a new document (a new reference): target with patch merged in (a null in
 * the patch removes that member; a patch that is not an object replaces the whole target).
 * target may be NULL (no document yet). PATCH_UNPROCESSABLE when either is nested deeper than
 * PATCH_MAX_DEPTH or too large; PATCH_MALFORMED when patch is NULL. *out is NULL on error.
 */
enum patch_status merge_patch_apply(const json_t *target, const json_t *patch, json_t **out, char *err,
                                    size_t errlen);

/*
 * Checks a JSON Patch document before it is applied to anything: an array of at most
 * PATCH_MAX_OPS objects, each with a known "op" (add, remove, replace, move, copy, test), a
 * "path" (and for move and copy a "from") that is a valid JSON Pointer, and a "value" where the
 * op needs one. PATCH_OK or PATCH_MALFORMED with err naming the operation and what is wrong.
 */
enum patch_status json_patch_check(const json_t *patch, char *err, size_t errlen);

/*
 * RFC 6902: applies the operations in order to a copy of doc; *out is the new document (a new
 * reference) when every one succeeded, NULL otherwise (all or nothing). The patch is checked
 * first (json_patch_check). err names the failing operation by its index.
 */
enum patch_status json_patch_apply(const json_t *doc, const json_t *patch, json_t **out, char *err,
                                   size_t errlen);

/*
 * RFC 6901: the value that pointer refers to in doc (borrowed), or NULL with err: PATCH_MALFORMED
 * for a bad pointer, PATCH_CONFLICT when it refers to nothing. *status may be NULL.
 */
json_t *json_pointer_get(const json_t *doc, const char *pointer, enum patch_status *status, char *err,
                         size_t errlen);

/*
 * Equality as RFC 6902's test defines it: same type (numbers compare by value, 1 equals 1.0),
 * strings by their bytes, arrays element by element, objects by their members in any order.
 * 1 equal, 0 not, -1 nested deeper than PATCH_MAX_DEPTH.
 */
int patch_json_equal(const json_t *a, const json_t *b);

#endif
