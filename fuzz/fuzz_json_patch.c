/*
 * fuzz_json_patch.c — JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7396) application, the
 * functions lab-put-patch's PATCH route runs on the stored user and the request's body
 * (labs/put-patch/patch.c: json_patch_apply, merge_patch_apply, json_pointer_get).
 *
 * The input is a document and a patch, split at the first line "---" ("doc\n---\npatch"; with no
 * such line all of it is the patch and there is no document). Each is parsed as the API parses a
 * body (jansson, duplicate keys refused, any JSON value); the patch is applied both ways, and the
 * patch's text, as it is, is also looked up as a JSON Pointer in the document. Asserted:
 *   - neither the document nor the patch changed (a patch works on a copy);
 *   - a failed patch gave no document, a status that says why and a message;
 *   - a successful one gave a document that prints as JSON and reads back equal, nested at most
 *     PATCH_MAX_DEPTH and holding at most PATCH_MAX_VALUES values (what patch.h promises);
 *   - a merge patch applied again to its own result changes nothing (RFC 7396 is idempotent);
 *   - an empty JSON Patch gives the document back, and so does [{"op": "test", "path": "",
 *     "value": <the document>}]; patch_json_equal finds every document equal to itself.
 *
 * links: lab_put_patch
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch.h"
#include "fuzz_check.h"

#define SEPARATOR "\n---\n"

static json_t *parse(const char *text, size_t len)
{
	json_error_t jerr;
	return json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
}

static char *print(const json_t *v)
{
	return v ? json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
}

/* The values in v (v counts one), or -1 when deeper than max_depth. */
static long values_within(const json_t *v, int depth, int max_depth)
{
	if (depth > max_depth)
		return -1;
	long n = 1;
	const char *key;
	json_t *child;
	size_t i;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, child)
		{
			long m = values_within(child, depth + 1, max_depth);
			if (m < 0)
				return -1;
			n += m;
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child)
		{
			long m = values_within(child, depth + 1, max_depth);
			if (m < 0)
				return -1;
			n += m;
		}
	}
	return n;
}

/* What every outcome must look like: nothing and a reason, or a document within the limits. */
static void check_outcome(enum patch_status s, json_t *out, const char *err)
{
	if (s != PATCH_OK) {
		check(out == NULL && err[0] != '\0');
		check(s == PATCH_MALFORMED || s == PATCH_CONFLICT || s == PATCH_UNPROCESSABLE);
		return;
	}
	check(out != NULL);
	long n = values_within(out, 0, PATCH_MAX_DEPTH);
	check(n >= 1 && n <= PATCH_MAX_VALUES);
	char *text = print(out);
	check(text != NULL);
	json_t *back = parse(text, strlen(text));
	check(back && json_equal(back, out));
	json_decref(back);
	free(text);
	check(patch_json_equal(out, out) == 1);
}

static void merge(const json_t *doc, const json_t *patch)
{
	char err[512] = "";
	json_t *out = NULL;
	enum patch_status s = merge_patch_apply(doc, patch, &out, err, sizeof(err));
	check_outcome(s, out, err);
	if (s == PATCH_OK) {
		json_t *again = NULL;
		check(merge_patch_apply(out, patch, &again, err, sizeof(err)) == PATCH_OK);
		check(json_equal(again, out));
		json_decref(again);
	}
	json_decref(out);
}

static void json_patch(const json_t *doc, const json_t *patch)
{
	char err[512] = "";
	json_t *out = NULL;
	enum patch_status s = json_patch_apply(doc, patch, &out, err, sizeof(err));
	check_outcome(s, out, err);
	json_decref(out);
	/* json_patch_check and json_patch_apply agree on what is malformed */
	check((json_patch_check(patch, err, sizeof(err)) == PATCH_MALFORMED) == (s == PATCH_MALFORMED));
}

/* A document the patches take (within the limits) comes back from [] and from a test of itself. */
static void identities(const json_t *doc)
{
	char err[512] = "";
	json_t *empty = json_array(), *out = NULL;
	enum patch_status s = json_patch_apply(doc, empty, &out, err, sizeof(err));
	json_decref(empty);
	if (s != PATCH_OK)
		return;
	check(json_equal(out, doc));
	json_decref(out);
	check(patch_json_equal(doc, doc) == 1);
	json_t *test = json_pack("[{s:s,s:s,s:O}]", "op", "test", "path", "", "value", doc);
	check(test != NULL);
	out = NULL;
	s = json_patch_apply(doc, test, &out, err, sizeof(err));
	check(s == PATCH_OK && json_equal(out, doc));
	json_decref(out);
	json_decref(test);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *sep = memmem(text, size, SEPARATOR, strlen(SEPARATOR));
	size_t doc_len = sep ? (size_t)(sep - text) : 0;
	const char *patch_text = sep ? sep + strlen(SEPARATOR) : text;
	size_t patch_len = size - (size_t)(patch_text - text);

	json_t *doc = sep ? parse(text, doc_len) : NULL;
	json_t *patch = parse(patch_text, patch_len);
	char *doc_before = print(doc), *patch_before = print(patch);

	if (patch) {
		merge(doc, patch);
		json_patch(doc, patch);
	}
	if (doc) {
		identities(doc);
		/* the patch's raw text as a pointer (up to a NUL, as a C string is) */
		char *pointer = strndup(patch_text, patch_len);
		char err[512] = "";
		enum patch_status s = PATCH_OK;
		if (pointer && !json_pointer_get(doc, pointer, &s, err, sizeof(err)))
			check(s != PATCH_OK && err[0] != '\0');
		free(pointer);
	}

	/* nothing applied above may have changed its inputs */
	char *doc_after = print(doc), *patch_after = print(patch);
	check((!doc_before && !doc_after) || (doc_before && doc_after && !strcmp(doc_before, doc_after)));
	check((!patch_before && !patch_after) ||
	      (patch_before && patch_after && !strcmp(patch_before, patch_after)));
	free(doc_before);
	free(doc_after);
	free(patch_before);
	free(patch_after);
	json_decref(doc);
	json_decref(patch);
	return 0;
}
