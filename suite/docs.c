/* docs.c — a lab's docs page read for the drill (docs.h). */
#include "docs.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum block_kind { BLOCK_PARA, BLOCK_BULLET, BLOCK_OTHER };

struct block {
	enum block_kind kind;
	char *text; /* the block's lines joined by one space, the bullet's "- " removed */
};

struct blocks {
	struct block *v;
	size_t n, cap;
};

static bool starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_fence(const char *line)
{
	while (*line == ' ')
		line++;
	return starts(line, "```");
}

char *docs_section(const char *text, const char *heading)
{
	size_t hl = strlen(heading);
	const char *p = text, *body = NULL;
	bool code = false;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (is_fence(p)) {
			code = !code;
		} else if (!code && starts(p, "## ")) {
			if (body)
				break;
			if (len == hl && !strncmp(p, heading, hl))
				body = eol ? eol + 1 : p + len;
		}
		p = eol ? eol + 1 : p + len;
	}
	if (!body)
		return NULL;
	return strndup(body, (size_t)(p - body));
}

static int blocks_add(struct blocks *b, enum block_kind kind)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 16;
		struct block *v = realloc(b->v, cap * sizeof *v);
		if (!v)
			return -1;
		b->v = v, b->cap = cap;
	}
	b->v[b->n].kind = kind;
	b->v[b->n].text = strdup("");
	if (!b->v[b->n].text)
		return -1;
	b->n++;
	return 0;
}

/* Appends len bytes of line to the last block's text, a space between lines. */
static int blocks_append(struct blocks *b, const char *line, size_t len)
{
	struct block *k = &b->v[b->n - 1];
	size_t have = strlen(k->text);
	char *t = realloc(k->text, have + len + 2);
	if (!t)
		return -1;
	if (have)
		t[have++] = ' ';
	memcpy(t + have, line, len);
	t[have + len] = '\0';
	k->text = t;
	return 0;
}

static void blocks_free(struct blocks *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->v[i].text);
	free(b->v);
	b->v = NULL, b->n = b->cap = 0;
}

/* One line of a section into the blocks; *open says whether the last block takes more lines. */
static int blocks_line(struct blocks *b, const char *line, size_t len, bool *open)
{
	if (len == 0) {
		*open = false;
		return 0;
	}
	bool bullet = (starts(line, "- ") || starts(line, "* ")) && len > 2;
	bool other = line[0] == '|' || line[0] == '#' || line[0] == '>';
	if (bullet || other || !*open) {
		if (blocks_add(b, bullet ? BLOCK_BULLET : other ? BLOCK_OTHER : BLOCK_PARA) < 0)
			return -1;
		*open = !other;
		if (bullet)
			line += 2, len -= 2;
	}
	while (len && (*line == ' ' || *line == '\t'))
		line++, len--;
	while (len && (line[len - 1] == ' ' || line[len - 1] == '\r'))
		len--;
	return blocks_append(b, line, len);
}

/* Splits a section into paragraphs and bullets; code blocks, tables and headings are skipped. */
static int blocks_split(const char *section, struct blocks *b)
{
	bool code = false, open = false;
	const char *p = section;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (is_fence(p)) {
			code = !code;
			open = false;
		} else if (!code && blocks_line(b, p, len, &open) < 0) {
			blocks_free(b);
			return -1;
		}
		p = eol ? eol + 1 : p + len;
	}
	return 0;
}

/* "e.g." and its kind end no sentence. */
static bool abbreviation(const char *md, size_t dot)
{
	static const char *const ABBR[] = {"e.g", "i.e", "vs", "etc", "cf"};
	for (size_t i = 0; i < sizeof ABBR / sizeof ABBR[0]; i++) {
		size_t l = strlen(ABBR[i]);
		if (dot >= l && !strncmp(md + dot - l, ABBR[i], l) &&
		    (dot == l || !isalpha((unsigned char)md[dot - l - 1])))
			return true;
	}
	return false;
}

/* The end of the sentence that starts at md (one past its closing mark and emphasis). */
static size_t sentence_end(const char *md)
{
	int depth = 0;
	bool code = false;
	for (size_t i = 0; md[i]; i++) {
		char c = md[i];
		if (c == '`')
			code = !code;
		if (code)
			continue;
		if (c == '(')
			depth++;
		else if (c == ')' && depth > 0)
			depth--;
		if (depth || (c != '.' && c != '?' && c != '!') || abbreviation(md, i))
			continue;
		size_t j = i + 1;
		while (md[j] == '*' || md[j] == '"')
			j++;
		if (md[j] && md[j] != ' ')
			continue;
		size_t k = j;
		while (md[k] == ' ')
			k++;
		if (!md[k] || !islower((unsigned char)md[k]))
			return j;
	}
	return strlen(md);
}

/* A sentence that is only a bold label, perhaps with a parenthesis: "**URL path** (`/v1`)." */
static bool bold_label(const char *md, size_t len)
{
	if (len < 4 || !starts(md, "**"))
		return false;
	const char *close = strstr(md + 2, "**");
	if (!close || (size_t)(close - md) + 2 > len || close - md - 2 >= 60)
		return false;
	const char *r = close + 2, *end = md + len;
	while (r < end && *r == ' ')
		r++;
	if (r < end && *r == '(') {
		const char *paren = memchr(r, ')', (size_t)(end - r));
		if (!paren)
			return false;
		r = paren + 1;
	}
	while (r < end && (*r == '.' || *r == ':' || *r == ' '))
		r++;
	return r == end;
}

size_t docs_first_sentence(const char *md)
{
	size_t len = sentence_end(md);
	if (md[len] && (len < DOCS_SENTENCE_SHORT || bold_label(md, len))) {
		size_t next = len;
		while (md[next] == ' ')
			next++;
		len = next + sentence_end(md + next);
	}
	return len;
}

static int point_add(struct docs_point **v, size_t *n, const char *text, size_t len, int level)
{
	struct docs_point *nv = realloc(*v, (*n + 1) * sizeof *nv);
	if (!nv)
		return -1;
	*v = nv;
	nv[*n].text = strndup(text, len);
	nv[*n].level = level;
	if (!nv[*n].text)
		return -1;
	(*n)++;
	return 0;
}

/* Key points (docs.h): each block's first sentence, or the block when it is short. */
static int page_points(struct docs_page *page, const struct blocks *b)
{
	bool para_seen = false;
	for (size_t i = 0; i < b->n; i++) {
		const struct block *k = &b->v[i];
		if (k->kind == BLOCK_OTHER || !k->text[0])
			continue;
		size_t len = strlen(k->text);
		if (len > DOCS_POINT_WHOLE)
			len = docs_first_sentence(k->text);
		int level = k->kind == BLOCK_BULLET && para_seen ? 1 : 0;
		para_seen = para_seen || k->kind == BLOCK_PARA;
		if (point_add(&page->points, &page->npoints, k->text, len, level) < 0)
			return -1;
	}
	return 0;
}

/* Each follow-up bullet's bold lead ("**How big should the pool be?**"), else its first sentence. */
static int page_followups(struct docs_page *page, const struct blocks *b)
{
	for (size_t i = 0; i < b->n; i++) {
		const char *t = b->v[i].text;
		if (b->v[i].kind != BLOCK_BULLET)
			continue;
		const char *close = starts(t, "**") ? strstr(t + 2, "**") : NULL;
		char *q = close ? strndup(t + 2, (size_t)(close - t - 2)) : strndup(t, sentence_end(t));
		char **v = q ? realloc(page->followups, (page->nfollowups + 1) * sizeof *v) : NULL;
		if (!v) {
			free(q);
			return -1;
		}
		page->followups = v;
		v[page->nfollowups++] = q;
	}
	return 0;
}

static int page_story(struct docs_page *page, const struct blocks *b)
{
	for (size_t i = 0; i < b->n; i++) {
		const struct block *k = &b->v[i];
		if (k->kind == BLOCK_OTHER || !k->text[0])
			continue;
		if (point_add(&page->story, &page->nstory, k->text, strlen(k->text),
		              k->kind == BLOCK_BULLET) < 0)
			return -1;
	}
	return 0;
}

/* The > "..." line(s) under the title: their text joined, without the quotes. */
static char *page_question(const char *text)
{
	const char *p = strstr(text, "\n> \"");
	struct blocks b = {0};
	if (!p || blocks_add(&b, BLOCK_PARA) < 0)
		return NULL;
	for (p++; *p == '>';) {
		const char *eol = strchr(p, '\n');
		size_t len = (eol ? (size_t)(eol - p) : strlen(p)) - 1;
		const char *line = p + 1;
		while (len && *line == ' ')
			line++, len--;
		while (len && line[len - 1] == ' ')
			len--;
		if (blocks_append(&b, line, len) < 0) {
			blocks_free(&b);
			return NULL;
		}
		if (!eol)
			break;
		p = eol + 1;
	}
	char *q = NULL;
	size_t len = strlen(b.v[0].text);
	if (len >= 2 && b.v[0].text[0] == '"' && b.v[0].text[len - 1] == '"')
		q = strndup(b.v[0].text + 1, len - 2);
	blocks_free(&b);
	return q;
}

/* The section's blocks handed to fill; -1 with err when the section is missing or fill fails. */
static int page_section(const char *text, const char *heading, struct docs_page *page,
                        int (*fill)(struct docs_page *, const struct blocks *), char *err, size_t errlen)
{
	char *body = docs_section(text, heading);
	if (!body) {
		snprintf(err, errlen, "no \"%s\" section", heading);
		return -1;
	}
	struct blocks b = {0};
	int rc = blocks_split(body, &b) < 0 || fill(page, &b) < 0 ? -1 : 0;
	if (rc < 0)
		snprintf(err, errlen, "out of memory reading \"%s\"", heading);
	blocks_free(&b);
	free(body);
	return rc;
}

int docs_parse(const char *text, struct docs_page *page, char *err, size_t errlen)
{
	memset(page, 0, sizeof *page);
	page->question = page_question(text);
	if (!page->question) {
		snprintf(err, errlen, "no question (a > \"...\" line under the title)");
		return -1;
	}
	if (page_section(text, DOCS_ANSWER, page, page_points, err, errlen) < 0 ||
	    page_section(text, DOCS_FOLLOWUPS, page, page_followups, err, errlen) < 0 ||
	    page_section(text, DOCS_STORY, page, page_story, err, errlen) < 0) {
		docs_free(page);
		return -1;
	}
	const char *empty = !page->npoints      ? DOCS_ANSWER
	                    : !page->nfollowups ? DOCS_FOLLOWUPS
	                    : !page->nstory     ? DOCS_STORY
	                                        : NULL;
	if (empty) {
		snprintf(err, errlen, "\"%s\" is empty", empty);
		docs_free(page);
		return -1;
	}
	return 0;
}

int docs_load(const char *dir, const char *lab, struct docs_page *page, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s.md", dir, lab);
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s: cannot open it", path);
		return -1;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&text, &len);
	char buf[8192];
	size_t n;
	while (mem && (n = fread(buf, 1, sizeof buf, f)) > 0)
		fwrite(buf, 1, n, mem);
	bool bad = ferror(f) || !mem;
	fclose(f);
	if (mem)
		fclose(mem);
	char why[256] = "";
	int rc = bad ? -1 : docs_parse(text, page, why, sizeof why);
	if (rc < 0)
		snprintf(err, errlen, "%s: %s", path, bad ? "cannot read it" : why);
	free(text);
	return rc;
}

void docs_free(struct docs_page *page)
{
	free(page->question);
	for (size_t i = 0; i < page->npoints; i++)
		free(page->points[i].text);
	free(page->points);
	for (size_t i = 0; i < page->nfollowups; i++)
		free(page->followups[i]);
	free(page->followups);
	for (size_t i = 0; i < page->nstory; i++)
		free(page->story[i].text);
	free(page->story);
	memset(page, 0, sizeof *page);
}
