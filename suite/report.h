/*
 * report.h — the parts of `labsuite report` (report.c): the page (html.c), a phase's metrics on it
 * (metrics.c), its charts (svg.c) and the check of the page in headless Chromium (browser.c). Each
 * writes to a FILE * so tests can read what it wrote (open_memstream).
 */
#ifndef SUITE_REPORT_H
#define SUITE_REPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "run.h"

/* What every page carries: nothing may be fetched, no script may run. */
#define SUITE_CSP "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

/* ---- html.c ---- */

/* s with & < > " ' escaped for HTML text and attributes (and SVG, which is XML). NULL: nothing. */
void suite_esc(FILE *f, const char *s);

/*
 * A number for a person: counts with grouping ("7,900"), others with three significant digits
 * ("0.0123", "4.56", "218"). Returns buf.
 */
char *suite_fmt_num(char *buf, size_t len, double v);

/*
 * A value under its key for a person: a duration when the key ends in _us, _ms or _s, a size for
 * _bytes, a rate for _per_s, else suite_fmt_num; strings as they are (not escaped), true/false as
 * yes/no, null as "–". Returns buf.
 */
char *suite_fmt_value(char *buf, size_t len, const char *key, const json_t *v);

/* A key for a person, escaped: "p99_ms" -> "p99 ms". */
void suite_key_text(FILE *f, const char *key);

/* ---- metrics.c ---- */

/*
 * A phase's "metrics" for a person: scalars as a key/value list, an array of objects or an object
 * of like objects as a table, nested values in a cell drawn small (a list, a line of fields, a
 * small table folded in <details>), a long hex string cut to its first digits. Never raw JSON.
 */
void suite_html_metrics(FILE *f, const json_t *m);

/* One lab's section: <section id="lab-<name>" data-verdict="demonstrated|not-demonstrated">. */
void suite_html_section(FILE *f, const struct suite_run *r);

/* The whole page: head (CSP, style), the summary table, a section per lab. */
void suite_html_page(FILE *f, const struct suite_batch *b);

/* ---- svg.c ---- */

/*
 * The chart (lab.h's shape) as inline SVG: grouped bars, a "line" series as a polyline over the
 * groups, a log scale when "log", round ticks, the labels, each bar's value and a legend. A null
 * or malformed chart prints <p class="nochart">no chart…</p>. Returns true when it drew one.
 */
bool suite_svg_chart(FILE *f, const json_t *chart);

/* ---- browser.c ---- */

/*
 * Opens dir/index.html in headless Chromium (a child of common/child.h) and checks it: the DOM
 * comes back whole, every lab of b has its section with its verdict in it, and the browser logged
 * no console message (a page with no script only gets them for errors: a CSP block, a failed
 * load). Saves dir/screenshot.png, and what Chromium printed (the DOM dump, then or among its
 * log lines) as dir/chromium.log. Returns 0; 1 with one line in err when a check failed; 2 with
 * err naming what was tried when there is no Chromium; SUITE_INTERRUPTED after a Ctrl-C caught by
 * suite_signals_catch (Chromium stopped).
 */
int suite_browser_check(const char *dir, const struct suite_batch *b, char *err, size_t errlen);

/*
 * The checks on what Chromium wrote (its DOM dump and its log together), for the tests: 0, or 1
 * with err.
 */
int suite_browser_verify(const char *log, const struct suite_batch *b, char *err, size_t errlen);

#endif
