/*
 * render.h — markdown of a docs page, lightly, on a terminal: **bold** in bold when the terminal
 * has colour (term.h), `code` and *emphasis* as plain text, words wrapped to the width.
 */
#ifndef SUITE_RENDER_H
#define SUITE_RENDER_H

#include <stdio.h>

#include "term.h"

/* Columns to wrap to on f: its window's width, else $COLUMNS, else 80; at most 100 (a line
 * longer than that is read slower, not faster). */
int render_width(FILE *f);

/*
 * Prints md (markdown on one line) wrapped to width columns: prefix (e.g. "  • ") before the
 * first line, as many spaces before the others. Ends with a newline.
 */
void render_wrap(const struct term *t, const char *prefix, int width, const char *md);

#endif
