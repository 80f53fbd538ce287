/*
 * user.c — what the API accepts: a valid user (for PUT bodies and for the result of every
 * PATCH), an If-Match value, a media type. Pure functions, no I/O.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* sizes a person would write; a body is capped at max_body anyway */
#define MAX_NAME     100
#define MAX_EMAIL    200
#define MAX_BIO      500
#define MAX_TAGS     50
#define MAX_TAG      40
#define MAX_COUNTERS 32
#define MAX_COUNTER  32
/* a count that fits a bigint many times over and no client reaches */
#define MAX_COUNT 1000000000000LL

static const char *const FIELDS[] = {"id", "name", "email", "bio", "tags", "visits", "counters"};
static const char *const REQUIRED[] = {"name", "email", "tags", "visits"};

static bool string_of(const json_t *v, size_t min, size_t max)
{
	return json_is_string(v) && json_string_length(v) >= min && json_string_length(v) <= max &&
	       strlen(json_string_value(v)) == json_string_length(v);
}

static bool count_of(const json_t *v)
{
	return json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= MAX_COUNT;
}

static int check_known(const json_t *doc, char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)doc, key, v)
	{
		bool known = false;
		for (size_t i = 0; i < sizeof(FIELDS) / sizeof(FIELDS[0]); i++)
			known = known || strcmp(key, FIELDS[i]) == 0;
		if (!known) {
			snprintf(err, errlen,
			         "unknown field \"%.40s\" (id, name, email, bio, tags, visits, counters)",
			         key);
			return -1;
		}
	}
	for (size_t i = 0; i < sizeof(REQUIRED) / sizeof(REQUIRED[0]); i++)
		if (!json_object_get(doc, REQUIRED[i])) {
			snprintf(err, errlen,
			         "missing field \"%s\": a user has name, email, tags and visits (PUT "
			         "replaces the "
			         "whole user; to change one field, PATCH it)",
			         REQUIRED[i]);
			return -1;
		}
	return 0;
}

static int check_lists(const json_t *doc, char *err, size_t errlen)
{
	const json_t *tags = json_object_get(doc, "tags"), *counters = json_object_get(doc, "counters");
	size_t i;
	json_t *v;
	const char *key;
	if (!json_is_array(tags) || json_array_size(tags) > MAX_TAGS) {
		snprintf(err, errlen, "tags must be an array of at most %d strings", MAX_TAGS);
		return -1;
	}
	json_array_foreach(tags, i, v)
	{
		if (!string_of(v, 1, MAX_TAG)) {
			snprintf(err, errlen, "tags[%zu] must be a string of 1..%d characters", i, MAX_TAG);
			return -1;
		}
	}
	if (!counters || json_is_null(counters))
		return 0;
	if (!json_is_object(counters) || json_object_size(counters) > MAX_COUNTERS) {
		snprintf(err, errlen, "counters must be an object of at most %d whole numbers", MAX_COUNTERS);
		return -1;
	}
	json_object_foreach((json_t *)counters, key, v)
	{
		if (strlen(key) == 0 || strlen(key) > MAX_COUNTER || !count_of(v)) {
			snprintf(err, errlen,
			         "counters.%.32s must be a whole number in 0..%lld (names of 1..%d "
			         "characters)",
			         key, MAX_COUNT, MAX_COUNTER);
			return -1;
		}
	}
	return 0;
}

int pp_user_check(const json_t *doc, long long id, char *err, size_t errlen)
{
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "a user is a JSON object");
		return -1;
	}
	if (check_known(doc, err, errlen) < 0)
		return -1;
	const json_t *jid = json_object_get(doc, "id"), *bio = json_object_get(doc, "bio");
	const json_t *email = json_object_get(doc, "email");
	if (jid && (!json_is_integer(jid) || json_integer_value(jid) != id)) {
		snprintf(err, errlen, "id is read-only: the body says something else than the path (%lld)",
		         id);
		return -1;
	}
	if (!string_of(json_object_get(doc, "name"), 1, MAX_NAME)) {
		snprintf(err, errlen, "name must be a string of 1..%d characters", MAX_NAME);
		return -1;
	}
	if (!string_of(email, 3, MAX_EMAIL) || !strchr(json_string_value(email), '@')) {
		snprintf(err, errlen, "email must be a string of 3..%d characters with an @", MAX_EMAIL);
		return -1;
	}
	if (bio && !json_is_null(bio) && !string_of(bio, 0, MAX_BIO)) {
		snprintf(err, errlen, "bio must be a string of at most %d characters, or null", MAX_BIO);
		return -1;
	}
	if (!count_of(json_object_get(doc, "visits"))) {
		snprintf(err, errlen, "visits must be a whole number in 0..%lld", MAX_COUNT);
		return -1;
	}
	return check_lists(doc, err, errlen);
}

/* The next entity tag of an If-Match list at *p: 1 with [*start, *end) the tag (quotes included)
 * and *weak, 0 at the end, -1 when malformed. */
static int next_etag(const char **p, const char **start, const char **end, bool *weak)
{
	const char *s = *p;
	while (*s == ' ' || *s == '\t' || *s == ',')
		s++;
	if (!*s)
		return 0;
	*weak = strncmp(s, "W/", 2) == 0;
	if (*weak)
		s += 2;
	if (*s != '"')
		return -1;
	/* etagc (RFC 9110 section 8.8.3): 0x21, 0x23-0x7E and obs-text; no space, no control */
	const char *close = s + 1;
	while (*close == 0x21 || ((unsigned char)*close >= 0x23 && (unsigned char)*close != 0x7F))
		close++;
	if (*close != '"')
		return -1;
	*start = s;
	*end = close + 1;
	s = close + 1;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s && *s != ',')
		return -1;
	*p = s;
	return 1;
}

int pp_if_match(const char *list, const char *etag)
{
	const char *p = list, *start, *end;
	bool weak, any = false, match = false;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strcmp(p, "*") == 0)
		return 1;
	int r;
	while ((r = next_etag(&p, &start, &end, &weak)) == 1) {
		any = true;
		match = match || (!weak && etag && strlen(etag) == (size_t)(end - start) &&
		                  memcmp(etag, start, (size_t)(end - start)) == 0);
	}
	if (r < 0 || !any)
		return -1;
	return match ? 1 : 0;
}

int pp_media_type(const char *value, char *out, size_t outlen)
{
	size_t n = 0;
	while (*value == ' ' || *value == '\t')
		value++;
	for (; *value && *value != ';' && *value != ' ' && *value != '\t'; value++)
		if (n + 1 < outlen)
			out[n++] = (char)tolower((unsigned char)*value);
	out[n] = '\0';
	/* after the type only parameters may follow: "application/json; charset=utf-8", not
	 * "application/json garbage" */
	while (*value == ' ' || *value == '\t')
		value++;
	return *value == '\0' || *value == ';' ? 0 : -1;
}
