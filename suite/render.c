/* render.c — markdown of a docs page on a terminal (render.h). */
#include "render.h"

#include "term.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RENDER_MAX_WIDTH 100
#define RENDER_MIN_WIDTH 40

int render_width(FILE *f)
{
	int w = term_columns(f);
	if (w <= 0)
		w = 80;
	if (w > RENDER_MAX_WIDTH)
		w = RENDER_MAX_WIDTH;
	return w < RENDER_MIN_WIDTH ? RENDER_MIN_WIDTH : w;
}

/* A single '*' that opens (or, when open, closes) an emphasis, not a product or a wildcard. */
static bool emphasis(const char *md, size_t i, bool open)
{
	char prev = i ? md[i - 1] : ' ', next = md[i + 1];
	if (open)
		return prev != ' ';
	return next && next != ' ' && strchr(" (\"'", prev);
}

/* md without its markup into vis, and whether each byte is bold; returns vis's length. */
static size_t inline_plain(const char *md, char *vis, unsigned char *bold)
{
	size_t n = 0;
	bool b = false, code = false, em = false;
	for (size_t i = 0; md[i]; i++) {
		char c = md[i];
		if (c == '`') {
			code = !code;
			continue;
		}
		if (!code && c == '*' && md[i + 1] == '*') {
			b = !b, i++;
			continue;
		}
		if (!code && c == '*' && emphasis(md, i, em)) {
			em = !em;
			continue;
		}
		vis[n] = c, bold[n++] = b;
	}
	vis[n] = '\0';
	return n;
}

/* Display columns of s[0..len): one per UTF-8 code point. */
static int columns(const char *s, size_t len)
{
	int cols = 0;
	for (size_t i = 0; i < len; i++)
		cols += ((unsigned char)s[i] & 0xC0) != 0x80;
	return cols;
}

struct pen {
	const struct term *t;
	bool bold;
};

static void pen_put(struct pen *p, char c, bool bold)
{
	if (bold != p->bold)
		fputs(bold ? term_bold(p->t) : term_reset(p->t), p->t->out);
	p->bold = bold;
	fputc(c, p->t->out);
}

static void pen_newline(struct pen *p, int indent)
{
	if (p->bold)
		fputs(term_reset(p->t), p->t->out);
	p->bold = false;
	fprintf(p->t->out, "\n%*s", indent, "");
}

void render_wrap(const struct term *t, const char *prefix, int width, const char *md)
{
	size_t mdlen = strlen(md);
	char *vis = malloc(mdlen + 1);
	unsigned char *bold = malloc(mdlen + 1);
	if (!vis || !bold) {
		free(vis), free(bold);
		fprintf(t->out, "%s%s\n", prefix, md);
		return;
	}
	size_t n = inline_plain(md, vis, bold);
	int indent = term_width(prefix), col = indent;
	struct pen pen = {t, false};
	fputs(prefix, t->out);
	for (size_t i = 0; i < n;) {
		while (i < n && vis[i] == ' ')
			i++;
		size_t j = i;
		while (j < n && vis[j] != ' ')
			j++;
		if (j == i)
			break;
		int w = columns(vis + i, j - i);
		if (col > indent && col + 1 + w > width) {
			pen_newline(&pen, indent);
			col = indent;
		} else if (col > indent) {
			pen_put(&pen, ' ', pen.bold && bold[i]);
			col++;
		}
		for (size_t k = i; k < j; k++)
			pen_put(&pen, vis[k], bold[k]);
		col += w;
		i = j;
	}
	if (pen.bold)
		fputs(term_reset(t), t->out);
	fputc('\n', t->out);
	free(vis), free(bold);
}
