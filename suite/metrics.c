/*
 * metrics.c — a phase's metrics on the report's page (report.h), rendered generically for a
 * person: scalars as a key/value list, an array of objects as a table with its keys as columns,
 * an object of like objects as a table with a row per key, and whatever sits inside a cell drawn
 * small: a list joined by commas, a few fields on a line, a small table, folded in <details> (no
 * script needed) when it is long. Never raw JSON: a digest shows its first digits, the whole of
 * it in a tooltip.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

/* object_metrics: nested objects get a heading of their own this deep; deeper, a cell */
#define MAX_DEPTH 3
/* a text value longer than this many columns gets a row of its own in the key/value list */
#define WIDE_TEXT 30
/* an array of scalars in a cell shows this many items, then how many more */
#define CELL_ITEMS 8
/* an array of objects in a cell stands open as a small table up to this many rows, folded past */
#define CELL_ROWS 4
/* an object in a cell: its fields on one line up to this many, folded into a table past */
#define CELL_FIELDS 6
/* tables inside table cells this deep; deeper, only "n items" */
#define CELL_DEPTH 2
/* a hex string this long is a digest or a token (a sha256, an md5; not a 16-digit id): its first
 * HEX_SHOWN digits, the whole in a tooltip */
#define HEX_LONG  24
#define HEX_SHOWN 8

static bool scalar(const json_t *v)
{
	return !json_is_object(v) && !json_is_array(v);
}

void suite_key_text(FILE *f, const char *key)
{
	for (const char *k = key ? key : ""; *k; k++) {
		char one[2] = {*k == '_' ? ' ' : *k, 0};
		suite_esc(f, one);
	}
}

static bool array_of_scalars(const json_t *a)
{
	size_t i;
	const json_t *e;
	json_array_foreach(a, i, e) if (!scalar(e)) return false;
	return json_is_array(a);
}

/* An object whose values are all scalars or arrays of them: one row of a table. */
static bool flat_object(const json_t *o)
{
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)o, k, v) if (!scalar(v) && !array_of_scalars(v)) return false;
	return json_is_object(o);
}

static bool array_of_objects(const json_t *a)
{
	if (!json_is_array(a) || json_array_size(a) == 0)
		return false;
	size_t i;
	const json_t *e;
	json_array_foreach(a, i, e) if (!json_is_object(e)) return false;
	return true;
}

/* An object of two or more flat objects ({"v1": {...}, "v2": {...}}): a table, a row per key. */
static bool object_of_rows(const json_t *o)
{
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)o, k, v) if (!flat_object(v)) return false;
	return json_is_object(o) && json_object_size(o) >= 2;
}

static bool long_hex(const char *s)
{
	size_t n = strspn(s, "0123456789abcdefABCDEF");
	return n >= HEX_LONG && !s[n];
}

static void scalar_cell(FILE *f, const char *key, const json_t *v)
{
	const char *s = json_string_value(v);
	if (s && long_hex(s)) {
		fputs("<span class=\"hex\" title=\"", f);
		suite_esc(f, s);
		fprintf(f, "\">%.*s…</span>", HEX_SHOWN, s);
	} else if (s)
		suite_esc(f, s);
	else {
		char buf[64];
		suite_esc(f, suite_fmt_value(buf, sizeof(buf), key, v));
	}
}

static void rows_table(FILE *f, const json_t *rows, int depth);
static void value_cell(FILE *f, const char *key, const json_t *v, int depth);

/* "500, 201, 201", or the first CELL_ITEMS and "+n more". */
static void list_cell(FILE *f, const char *key, const json_t *a)
{
	size_t i, n = json_array_size(a);
	const json_t *e;
	json_array_foreach(a, i, e)
	{
		if (i == CELL_ITEMS) {
			fprintf(f, " <span class=\"dim\">+%zu more</span>", n - i);
			break;
		}
		fputs(i ? ", " : "", f);
		scalar_cell(f, key, e);
	}
}

/* A few fields on a line: "node Index Scan · buffers 3 · rows 1". */
static void fields_cell(FILE *f, const json_t *o, int depth)
{
	const char *k;
	const json_t *v;
	bool first = true;
	json_object_foreach((json_t *)o, k, v)
	{
		fputs(first ? "<span class=\"field\">" : " · <span class=\"field\">", f);
		first = false;
		fputs("<span class=\"dim\">", f);
		suite_key_text(f, k);
		fputs("</span> ", f);
		value_cell(f, k, v, depth);
		fputs("</span>", f);
	}
}

/* An array of this and that: each item as a cell would show it, commas between. */
static void mixed_cell(FILE *f, const char *key, const json_t *a, int depth)
{
	size_t i;
	const json_t *e;
	json_array_foreach(a, i, e)
	{
		fputs(i ? ", " : "", f);
		value_cell(f, key, e, depth + 1);
	}
}

/* Any value in a table cell or a key/value list, depth tables deep. */
static void value_cell(FILE *f, const char *key, const json_t *v, int depth)
{
	if (scalar(v)) {
		scalar_cell(f, key, v);
		return;
	}
	size_t n = json_is_array(v) ? json_array_size(v) : json_object_size(v);
	const char *what = json_is_array(v) ? "items" : "fields";
	if (n == 0)
		fputs("<span class=\"dim\">none</span>", f);
	else if (array_of_scalars(v))
		list_cell(f, key, v);
	else if (depth >= CELL_DEPTH)
		fprintf(f, "<span class=\"dim\">%zu %s</span>", n, what);
	else if (json_is_array(v) && !array_of_objects(v))
		mixed_cell(f, key, v, depth);
	else if (flat_object(v) && n <= CELL_FIELDS)
		fields_cell(f, v, depth);
	else {
		bool fold = n > (json_is_array(v) ? CELL_ROWS : CELL_FIELDS);
		if (fold)
			fprintf(f, "<details class=\"cell\"><summary>%zu %s</summary>", n, what);
		rows_table(f, v, depth + 1);
		fputs(fold ? "</details>" : "", f);
	}
}

/*
 * A table: rows an array of objects (their keys, in first-seen order, the columns), an object of
 * objects (a first column of its keys), or one object (a row per field: key, value).
 */
static void rows_table(FILE *f, const json_t *rows, int depth)
{
	if (json_is_object(rows) && !object_of_rows(rows)) {
		const char *k;
		const json_t *v;
		fprintf(f, "<table class=\"metrics%s\"><tbody>", depth ? " mini" : "");
		json_object_foreach((json_t *)rows, k, v)
		{
			fputs("<tr><th>", f);
			suite_key_text(f, k);
			fprintf(f, "</th><td%s>", json_is_number(v) ? " class=\"num\"" : "");
			value_cell(f, k, v, depth);
			fputs("</td></tr>", f);
		}
		fputs("</tbody></table>", f);
		return;
	}
	bool keyed = json_is_object(rows);
	json_t *cols = json_object(), *first = NULL;
	const char *k, *name;
	json_t *row, *v;
	size_t i;
	if (keyed) {
		json_object_foreach((json_t *)rows, name, row) json_object_foreach(row, k, v)
		        json_object_set_new(cols, k, json_null());
	} else
		json_array_foreach(rows, i, row) json_object_foreach(row, k, v)
		        json_object_set_new(cols, k, json_null());
	first = keyed ? json_object_iter_value(json_object_iter((json_t *)rows)) : json_array_get(rows, 0);
	fprintf(f, "%s<table class=\"metrics%s\"><thead><tr>%s", depth ? "" : "<div class=\"scroll\">",
	        depth ? " mini" : "", keyed ? "<th></th>" : "");
	json_object_foreach(cols, k, v)
	{
		/* a column of numbers is right-aligned under a right-aligned title */
		fputs(json_is_number(json_object_get(first, k)) ? "<th class=\"num\">" : "<th>", f);
		suite_key_text(f, k);
		fputs("</th>", f);
	}
	fputs("</tr></thead><tbody>", f);
	void *it = keyed ? json_object_iter((json_t *)rows) : NULL;
	for (i = 0; keyed ? it != NULL : i < json_array_size(rows); i++) {
		row = keyed ? json_object_iter_value(it) : json_array_get(rows, i);
		fputs("<tr>", f);
		if (keyed) {
			fputs("<th>", f);
			suite_key_text(f, json_object_iter_key(it));
			fputs("</th>", f);
			it = json_object_iter_next((json_t *)rows, it);
		}
		json_object_foreach(cols, k, v)
		{
			const json_t *cell = json_object_get(row, k);
			fprintf(f, "<td%s>", json_is_number(cell) ? " class=\"num\"" : "");
			value_cell(f, k, cell, depth);
			fputs("</td>", f);
		}
		fputs("</tr>", f);
	}
	fputs(depth ? "</tbody></table>" : "</tbody></table></div>\n", f);
	json_decref(cols);
}

static void metrics(FILE *f, const json_t *m, int depth);

/* One entry of the key/value list. */
static void kv_entry(FILE *f, const char *k, const json_t *v)
{
	/* a long text, or a list, takes the whole row instead of a narrow column */
	bool wide =
	        (json_is_string(v) && term_width(json_string_value(v)) > WIDE_TEXT) || json_array_size(v) > 2;
	fputs(wide ? "<div class=\"wide\"><dt>" : "<div><dt>", f);
	suite_key_text(f, k);
	fputs("</dt><dd>", f);
	value_cell(f, k, v, 0);
	fputs("</dd></div>", f);
}

/* Scalars (and lists of them) as a key/value list; then each nested part under its key. */
static void object_metrics(FILE *f, const json_t *m, int depth)
{
	const char *k;
	const json_t *v;
	bool list = false;
	json_object_foreach((json_t *)m, k, v)
	{
		if (!scalar(v) && !array_of_scalars(v) && depth < MAX_DEPTH)
			continue;
		fputs(list ? "" : "<dl class=\"kv\">", f);
		list = true;
		kv_entry(f, k, v);
	}
	fputs(list ? "</dl>\n" : "", f);
	json_object_foreach((json_t *)m, k, v)
	{
		if (scalar(v) || array_of_scalars(v) || depth >= MAX_DEPTH)
			continue;
		fprintf(f, "<div class=\"sub\"><h5>");
		suite_key_text(f, k);
		fputs("</h5>", f);
		metrics(f, v, depth + 1);
		fputs("</div>\n", f);
	}
}

static void metrics(FILE *f, const json_t *m, int depth)
{
	if (array_of_objects(m) || object_of_rows(m))
		rows_table(f, m, 0);
	else if (json_is_object(m))
		object_metrics(f, m, depth);
	else {
		fputs("<p>", f);
		value_cell(f, "", m, 0);
		fputs("</p>\n", f);
	}
}

void suite_html_metrics(FILE *f, const json_t *m)
{
	metrics(f, m, 0);
}
