/*
 * patch.c — JSON Merge Patch (RFC 7396), JSON Patch (RFC 6902) and JSON Pointer (RFC 6901) on
 * jansson; patch.h says what each function promises and why these are hand-written. Every
 * recursion here carries its depth and stops at PATCH_MAX_DEPTH; a patch is applied to a deep
 * copy, so a failure half-way leaves nothing changed.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patch.h"

/* the longest part of a pointer quoted in an error message */
#define QUOTE 80

const char *patch_status_name(enum patch_status s)
{
	switch (s) {
	case PATCH_OK:
		return "ok";
	case PATCH_MALFORMED:
		return "malformed";
	case PATCH_CONFLICT:
		return "conflict";
	case PATCH_UNPROCESSABLE:
		return "unprocessable";
	}
	return "?";
}

static const char *kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	case JSON_NULL:
		return "null";
	}
	return "?";
}

/* The values in v (v itself counts one); -1 when deeper than PATCH_MAX_DEPTH or over PATCH_MAX_VALUES. */
static long count_values(const json_t *v, int depth)
{
	if (depth > PATCH_MAX_DEPTH)
		return -1;
	long n = 1;
	const char *key;
	json_t *child;
	size_t i;
	if (json_is_object(v)) {
		json_object_foreach((json_t *)v, key, child)
		{
			long m = count_values(child, depth + 1);
			if (m < 0 || (n += m) > PATCH_MAX_VALUES)
				return -1;
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child)
		{
			long m = count_values(child, depth + 1);
			if (m < 0 || (n += m) > PATCH_MAX_VALUES)
				return -1;
		}
	}
	return n;
}

static int equal_at(const json_t *a, const json_t *b, int depth)
{
	if (depth > PATCH_MAX_DEPTH)
		return -1;
	if (!a || !b)
		return a == b;
	if (json_is_number(a) && json_is_number(b)) {
		if (json_is_integer(a) && json_is_integer(b))
			return json_integer_value(a) == json_integer_value(b);
		return json_number_value(a) == json_number_value(b);
	}
	if (json_typeof(a) != json_typeof(b))
		return 0;
	if (json_is_string(a))
		return json_string_length(a) == json_string_length(b) &&
		       memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
	const char *key;
	json_t *child;
	size_t i;
	if (json_is_array(a)) {
		if (json_array_size(a) != json_array_size(b))
			return 0;
		json_array_foreach(a, i, child)
		{
			int e = equal_at(child, json_array_get(b, i), depth + 1);
			if (e != 1)
				return e;
		}
		return 1;
	}
	if (json_is_object(a)) {
		if (json_object_size(a) != json_object_size(b))
			return 0;
		json_object_foreach((json_t *)a, key, child)
		{
			const json_t *other = json_object_get(b, key);
			int e = other ? equal_at(child, other, depth + 1) : 0;
			if (e != 1)
				return e;
		}
		return 1;
	}
	return 1; /* true, false, null: the type is the value */
}

int patch_json_equal(const json_t *a, const json_t *b)
{
	return equal_at(a, b, 0);
}

/* ---- JSON Pointer ---- */

/* "" or "/" followed by tokens whose every "~" is "~0" or "~1"; no NUL inside. */
static bool pointer_valid(const json_t *s)
{
	const char *p = json_string_value(s);
	if (!p || strlen(p) != json_string_length(s))
		return false;
	if (*p && *p != '/')
		return false;
	for (; *p; p++)
		if (*p == '~' && p[1] != '0' && p[1] != '1')
			return false;
	return true;
}

/* The next token from *p (at its "/"), unescaped into tok (room for strlen(*p) + 1). -1 on a bad escape. */
static int next_token(const char **p, char *tok)
{
	const char *s = *p + 1;
	size_t n = 0;
	while (*s && *s != '/') {
		if (*s == '~') {
			if (s[1] != '0' && s[1] != '1')
				return -1;
			tok[n++] = s[1] == '0' ? '~' : '/';
			s += 2;
		} else {
			tok[n++] = *s++;
		}
	}
	tok[n] = '\0';
	*p = s;
	return 0;
}

/* RFC 6901's array index: "0", or digits without a leading zero (at most 9: no array is that long). */
static bool parse_index(const char *tok, size_t *out)
{
	size_t len = strlen(tok), v = 0;
	if (len == 0 || len > 9 || (len > 1 && tok[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (tok[i] < '0' || tok[i] > '9')
			return false;
		v = v * 10 + (size_t)(tok[i] - '0');
	}
	*out = v;
	return true;
}

/* The member or element tok of c (borrowed), or NULL with why. */
static json_t *child_of(json_t *c, const char *tok, char *why, size_t len)
{
	size_t i;
	if (json_is_object(c)) {
		json_t *v = json_object_get(c, tok);
		if (!v)
			snprintf(why, len, "no member \"%.*s\"", QUOTE, tok);
		return v;
	}
	if (json_is_array(c)) {
		if (!parse_index(tok, &i)) {
			snprintf(why, len, "\"%.*s\" is not an array index", QUOTE, tok);
			return NULL;
		}
		if (i >= json_array_size(c)) {
			snprintf(why, len, "index %zu is past the end (%zu elements)", i, json_array_size(c));
			return NULL;
		}
		return json_array_get(c, i);
	}
	snprintf(why, len, "a %s has no members", kind(c));
	return NULL;
}

/*
 * Splits ptr into the container its last token is in (*parent, borrowed) and that token (*last,
 * unescaped, the caller frees it). For "" (the whole document) *parent and *last are NULL.
 */
static enum patch_status locate(json_t *root, const char *ptr, json_t **parent, char **last, char *err,
                                size_t errlen)
{
	*parent = NULL;
	*last = NULL;
	if (!*ptr)
		return PATCH_OK;
	if (*ptr != '/') {
		snprintf(err, errlen, "pointer \"%.*s\" must be empty or start with /", QUOTE, ptr);
		return PATCH_MALFORMED;
	}
	char *tok = malloc(strlen(ptr) + 1);
	if (!tok) {
		snprintf(err, errlen, "out of memory");
		return PATCH_UNPROCESSABLE;
	}
	json_t *cur = root;
	for (const char *p = ptr;;) {
		if (next_token(&p, tok) < 0) {
			snprintf(err, errlen, "pointer \"%.*s\": \"~\" must be followed by 0 or 1", QUOTE,
			         ptr);
			free(tok);
			return PATCH_MALFORMED;
		}
		if (!*p) {
			*parent = cur;
			*last = tok;
			return PATCH_OK;
		}
		char why[160];
		cur = child_of(cur, tok, why, sizeof(why));
		if (!cur) {
			snprintf(err, errlen, "path \"%.*s\" does not exist: %s", QUOTE, ptr, why);
			free(tok);
			return PATCH_CONFLICT;
		}
	}
}

json_t *json_pointer_get(const json_t *doc, const char *pointer, enum patch_status *status, char *err,
                         size_t errlen)
{
	enum patch_status dummy;
	status = status ? status : &dummy;
	json_t *parent;
	char *last, why[160];
	if (!doc || !pointer) {
		snprintf(err, errlen, "no document or no pointer");
		*status = PATCH_MALFORMED;
		return NULL;
	}
	*status = locate((json_t *)doc, pointer, &parent, &last, err, errlen);
	if (*status != PATCH_OK)
		return NULL;
	if (!parent)
		return (json_t *)doc;
	json_t *v = child_of(parent, last, why, sizeof(why));
	if (!v) {
		snprintf(err, errlen, "path \"%.*s\" does not exist: %s", QUOTE, pointer, why);
		*status = PATCH_CONFLICT;
	}
	free(last);
	return v;
}

/* ---- RFC 7396 ---- */

/* MergePatch(*t, patch) as the RFC's pseudocode writes it, in place on a document we own. */
static int merge_into(json_t **t, const json_t *patch, int depth)
{
	if (depth > PATCH_MAX_DEPTH)
		return -1;
	if (!json_is_object(patch)) {
		json_t *copy = json_deep_copy(patch);
		if (!copy)
			return -1;
		json_decref(*t);
		*t = copy;
		return 0;
	}
	if (!json_is_object(*t)) {
		json_decref(*t);
		if (!(*t = json_object()))
			return -1;
	}
	const char *key;
	json_t *value;
	json_object_foreach((json_t *)patch, key, value)
	{
		if (json_is_null(value)) {
			json_object_del(*t, key);
			continue;
		}
		json_t *member = json_incref(json_object_get(*t, key));
		if (merge_into(&member, value, depth + 1) < 0) {
			json_decref(member);
			return -1;
		}
		if (json_object_set_new(*t, key, member) < 0)
			return -1;
	}
	return 0;
}

enum patch_status merge_patch_apply(const json_t *target, const json_t *patch, json_t **out, char *err,
                                    size_t errlen)
{
	*out = NULL;
	if (!patch) {
		snprintf(err, errlen, "no patch");
		return PATCH_MALFORMED;
	}
	if (count_values(patch, 0) < 0 || (target && count_values(target, 0) < 0)) {
		snprintf(err, errlen, "nested deeper than %d or over %d values", PATCH_MAX_DEPTH,
		         PATCH_MAX_VALUES);
		return PATCH_UNPROCESSABLE;
	}
	json_t *doc = target ? json_deep_copy(target) : NULL;
	if ((target && !doc) || merge_into(&doc, patch, 0) < 0 || count_values(doc, 0) < 0) {
		json_decref(doc);
		snprintf(err, errlen, "the result would hold over %d values", PATCH_MAX_VALUES);
		return PATCH_UNPROCESSABLE;
	}
	*out = doc;
	return PATCH_OK;
}

/* ---- RFC 6902 ---- */

static const char *const OPS[] = {"add", "remove", "replace", "move", "copy", "test"};
enum op { OP_ADD, OP_REMOVE, OP_REPLACE, OP_MOVE, OP_COPY, OP_TEST, OP_COUNT };

static int op_of(const json_t *o)
{
	const char *name = json_string_value(json_object_get(o, "op"));
	for (int i = 0; name && i < OP_COUNT; i++)
		if (strcmp(name, OPS[i]) == 0 && strlen(name) == json_string_length(json_object_get(o, "op")))
			return i;
	return -1;
}

/* from is a proper prefix of path, token-wise: "/a" of "/a/b", not of "/ab" */
static bool proper_prefix(const char *from, const char *path)
{
	size_t n = strlen(from);
	return strncmp(from, path, n) == 0 && path[n] == '/';
}

static enum patch_status check_op(const json_t *o, size_t i, char *err, size_t errlen)
{
	if (!json_is_object(o)) {
		snprintf(err, errlen, "operation %zu is a %s, not an object", i, kind(o));
		return PATCH_MALFORMED;
	}
	int op = op_of(o);
	if (op < 0) {
		snprintf(err, errlen,
		         "operation %zu: \"op\" must be one of add, remove, replace, move, copy, test", i);
		return PATCH_MALFORMED;
	}
	const json_t *path = json_object_get(o, "path"), *from = json_object_get(o, "from");
	if (!json_is_string(path) || !pointer_valid(path)) {
		snprintf(err, errlen,
		         "operation %zu (%s): \"path\" must be a JSON Pointer (\"\" or \"/...\", ~0 ~1)", i,
		         OPS[op]);
		return PATCH_MALFORMED;
	}
	if ((op == OP_MOVE || op == OP_COPY) && (!json_is_string(from) || !pointer_valid(from))) {
		snprintf(err, errlen, "operation %zu (%s): \"from\" must be a JSON Pointer", i, OPS[op]);
		return PATCH_MALFORMED;
	}
	if (op == OP_MOVE && proper_prefix(json_string_value(from), json_string_value(path))) {
		snprintf(err, errlen, "operation %zu (move): cannot move a value into one of its children",
		         i);
		return PATCH_MALFORMED;
	}
	const json_t *value = json_object_get(o, "value");
	if ((op == OP_ADD || op == OP_REPLACE || op == OP_TEST) && !value) {
		snprintf(err, errlen, "operation %zu (%s): \"value\" is required", i, OPS[op]);
		return PATCH_MALFORMED;
	}
	if (value && count_values(value, 0) < 0) {
		snprintf(err, errlen,
		         "operation %zu (%s): \"value\" is nested deeper than %d or over %d values", i,
		         OPS[op], PATCH_MAX_DEPTH, PATCH_MAX_VALUES);
		return PATCH_MALFORMED;
	}
	return PATCH_OK;
}

enum patch_status json_patch_check(const json_t *patch, char *err, size_t errlen)
{
	if (!json_is_array(patch)) {
		snprintf(err, errlen, "a JSON Patch is an array of operations, got %s",
		         patch ? kind(patch) : "nothing");
		return PATCH_MALFORMED;
	}
	if (json_array_size(patch) > PATCH_MAX_OPS) {
		snprintf(err, errlen, "at most %d operations in one patch, got %zu", PATCH_MAX_OPS,
		         json_array_size(patch));
		return PATCH_MALFORMED;
	}
	size_t i;
	const json_t *o;
	json_array_foreach(patch, i, o)
	{
		enum patch_status s = check_op(o, i, err, errlen);
		if (s != PATCH_OK)
			return s;
	}
	return PATCH_OK;
}

/* Adds value (stolen) at ptr: RFC 6902 section 4.1. */
static enum patch_status op_add(json_t **root, const char *ptr, json_t *value, char *err, size_t errlen)
{
	json_t *parent;
	char *last;
	enum patch_status s = locate(*root, ptr, &parent, &last, err, errlen);
	size_t i;
	if (s == PATCH_OK && !parent) {
		json_decref(*root);
		*root = value;
		return PATCH_OK;
	}
	if (s != PATCH_OK) {
		json_decref(value);
		return s;
	}
	int rc = -1;
	if (json_is_object(parent))
		rc = json_object_set_new(parent, last, value);
	else if (json_is_array(parent) && strcmp(last, "-") == 0)
		rc = json_array_append_new(parent, value);
	else if (json_is_array(parent) && parse_index(last, &i) && i <= json_array_size(parent))
		rc = json_array_insert_new(parent, i, value);
	else
		json_decref(value);
	if (rc < 0) {
		if (json_is_array(parent))
			snprintf(err, errlen, "path \"%.*s\": \"%.*s\" is not an index in 0..%zu or -", QUOTE,
			         ptr, QUOTE, last, json_array_size(parent));
		else
			snprintf(err, errlen, "path \"%.*s\": cannot add into a %s", QUOTE, ptr,
			         parent ? kind(parent) : "nothing");
	}
	free(last);
	return rc < 0 ? PATCH_CONFLICT : PATCH_OK;
}

/* Removes (or, with value, replaces) what ptr refers to, which must exist: sections 4.2 and 4.3. */
static enum patch_status op_remove(json_t **root, const char *ptr, json_t *value, char *err, size_t errlen)
{
	json_t *parent;
	char *last, why[160];
	enum patch_status s = locate(*root, ptr, &parent, &last, err, errlen);
	if (s == PATCH_OK && !parent && value) {
		json_decref(*root);
		*root = value;
		return PATCH_OK;
	}
	if (s == PATCH_OK && !parent) {
		snprintf(err, errlen, "cannot remove the whole document");
		s = PATCH_CONFLICT;
	}
	if (s == PATCH_OK && !child_of(parent, last, why, sizeof(why))) {
		snprintf(err, errlen, "path \"%.*s\" does not exist: %s", QUOTE, ptr, why);
		s = PATCH_CONFLICT;
	}
	if (s != PATCH_OK) {
		json_decref(value);
		free(last);
		return s;
	}
	size_t i = 0;
	int rc;
	if (json_is_object(parent))
		rc = value ? json_object_set_new(parent, last, value) : json_object_del(parent, last);
	else /* an array whose index child_of accepted */
		rc = parse_index(last, &i) && (value ? json_array_set_new(parent, i, value)
		                                     : json_array_remove(parent, i)) == 0
		             ? 0
		             : -1;
	free(last);
	if (rc < 0) {
		snprintf(err, errlen, "out of memory");
		return PATCH_UNPROCESSABLE;
	}
	return PATCH_OK;
}

/* Section 4.6: the value at path equals value. */
static enum patch_status op_test(json_t *root, const char *ptr, const json_t *value, char *err, size_t errlen)
{
	enum patch_status s;
	json_t *v = json_pointer_get(root, ptr, &s, err, errlen);
	if (!v)
		return s;
	int e = patch_json_equal(v, value);
	if (e < 0) {
		snprintf(err, errlen, "test of \"%.*s\": nested deeper than %d", QUOTE, ptr, PATCH_MAX_DEPTH);
		return PATCH_UNPROCESSABLE;
	}
	if (e == 0) {
		char *got = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		snprintf(err, errlen, "test failed: \"%.*s\" is %.*s", QUOTE, ptr, QUOTE, got ? got : "?");
		free(got);
		return PATCH_CONFLICT;
	}
	return PATCH_OK;
}

static enum patch_status apply_op(json_t **root, const json_t *o, char *err, size_t errlen)
{
	const char *path = json_string_value(json_object_get(o, "path"));
	const char *from = json_string_value(json_object_get(o, "from"));
	const json_t *value = json_object_get(o, "value");
	enum patch_status s;
	json_t *v = NULL;
	int op = op_of(o);
	/* a copy of value that failed must not turn a replace into a remove */
	if ((op == OP_ADD || op == OP_REPLACE) && !(v = json_deep_copy(value))) {
		snprintf(err, errlen, "out of memory");
		return PATCH_UNPROCESSABLE;
	}
	switch (op) {
	case OP_ADD:
		return op_add(root, path, v, err, errlen);
	case OP_REMOVE:
		return op_remove(root, path, NULL, err, errlen);
	case OP_REPLACE:
		return op_remove(root, path, v, err, errlen);
	case OP_TEST:
		return op_test(*root, path, value, err, errlen);
	case OP_MOVE:
	case OP_COPY:
		if (!(v = json_pointer_get(*root, from, &s, err, errlen)))
			return s;
		if (op == OP_COPY) {
			v = json_deep_copy(v);
		} else if (strcmp(from, path) == 0) {
			return PATCH_OK; /* a move onto itself changes nothing */
		} else {
			json_incref(v); /* ours, while remove takes it out of its parent */
			if ((s = op_remove(root, from, NULL, err, errlen)) != PATCH_OK) {
				json_decref(v);
				return s;
			}
		}
		if (!v) {
			snprintf(err, errlen, "out of memory");
			return PATCH_UNPROCESSABLE;
		}
		return op_add(root, path, v, err, errlen);
	}
	return PATCH_MALFORMED; /* json_patch_check let no other op through */
}

enum patch_status json_patch_apply(const json_t *doc, const json_t *patch, json_t **out, char *err,
                                   size_t errlen)
{
	*out = NULL;
	enum patch_status s = json_patch_check(patch, err, errlen);
	if (s != PATCH_OK)
		return s;
	if (!doc || count_values(doc, 0) < 0) {
		snprintf(err, errlen, "the document is missing, nested deeper than %d or over %d values",
		         PATCH_MAX_DEPTH, PATCH_MAX_VALUES);
		return PATCH_UNPROCESSABLE;
	}
	json_t *root = json_deep_copy(doc);
	size_t i;
	const json_t *o;
	json_array_foreach(patch, i, o)
	{
		char why[400];
		s = root ? apply_op(&root, o, why, sizeof(why)) : PATCH_UNPROCESSABLE;
		if (s == PATCH_OK && count_values(root, 0) < 0) {
			snprintf(why, sizeof(why),
			         "the result would be nested deeper than %d or hold over %d values",
			         PATCH_MAX_DEPTH, PATCH_MAX_VALUES);
			s = PATCH_UNPROCESSABLE;
		}
		if (s != PATCH_OK) {
			snprintf(err, errlen, "operation %zu (%s): %s", i,
			         json_string_value(json_object_get(o, "op")), root ? why : "out of memory");
			json_decref(root);
			return s;
		}
	}
	*out = root;
	return PATCH_OK;
}
