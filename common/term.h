/*
 * term.h — what a lab looks like on a shared screen: tables, aligned numbers, bar charts and
 * sparklines, and a progress line for phases longer than a second.
 *
 * Colour only when the output is a terminal and NO_COLOR is unset (https://no-color.org);
 * the output reads the same without it. Widths are display columns, not bytes: "µs", "█" and
 * "✔" are one column each, so tables stay aligned with UTF-8 units and charts.
 */
#ifndef LAB_TERM_H
#define LAB_TERM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct term {
	FILE *out;
	bool tty;   /* out is a terminal: progress lines are drawn */
	bool color; /* tty and NO_COLOR unset and TERM is not "dumb" */
};

/* Binds t to out and decides tty and colour. This function can't fail. */
void term_init(struct term *t, FILE *out);

/* Escape sequences, or "" when t has no colour. Never NULL. */
const char *term_bold(const struct term *t);
const char *term_dim(const struct term *t);
const char *term_green(const struct term *t);
const char *term_red(const struct term *t);
const char *term_yellow(const struct term *t);
const char *term_reset(const struct term *t);

/* fprintf to t->out. */
void term_printf(const struct term *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Display columns of a UTF-8 string (one per code point; no wide East Asian characters here). */
int term_width(const char *s);

/*
 * Columns of the terminal f writes to (TIOCGWINSZ), else $COLUMNS, else 0 when neither says: the
 * caller picks its fallback and bounds.
 */
int term_columns(FILE *f);

/*
 * Tables. A column has a title, a width in display columns and an alignment ('l' or 'r').
 * term_table_header prints the titles, term_table_row one row of already formatted cells;
 * both indent by `indent` spaces and separate columns by two spaces. A cell wider than its
 * column is printed whole (the row shifts rather than lose digits).
 */
struct term_col {
	const char *title;
	int width;
	char align;
};
void term_table_header(const struct term *t, int indent, const struct term_col *cols, int ncols);
void term_table_row(const struct term *t, int indent, const struct term_col *cols, int ncols,
                    const char *const *cells);

/*
 * Number formatting into buf (always NUL-terminated, truncated to len). Each returns buf.
 * term_fmt_us: a duration with its unit and three significant digits: "87 µs", "1.24 ms",
 * "23.1 ms", "412 ms", "2.00 s".
 * term_fmt_num: a count or rate with thin grouping for thousands: "7,900", "248", "12.5"
 * (decimals: digits after the point).
 * term_fmt_bytes: a size in powers of 1000 with three significant digits: "512 B", "12.3 kB",
 * "1.25 MB", "412 MB", "2.10 GB".
 */
char *term_fmt_us(char *buf, size_t len, double us);
char *term_fmt_num(char *buf, size_t len, double v, int decimals);
char *term_fmt_bytes(char *buf, size_t len, double bytes);

/*
 * The same into a buffer of the enclosing block (a compound literal), for a table row or a
 * printf argument: term_printf(t, "%s", TERM_US(p99)). The text lives until the block ends.
 */
#define TERM_FMT_LEN    32
#define TERM_US(us)     term_fmt_us((char[TERM_FMT_LEN]){0}, TERM_FMT_LEN, (double)(us))
#define TERM_NUM(v, dp) term_fmt_num((char[TERM_FMT_LEN]){0}, TERM_FMT_LEN, (double)(v), (dp))
#define TERM_BYTES(b)   term_fmt_bytes((char[TERM_FMT_LEN]){0}, TERM_FMT_LEN, (double)(b))

/*
 * A horizontal bar of value/max scaled to width columns, drawn with eighth blocks
 * (▏▎▍▌▋▊▉█) so small differences show. Empty string for value <= 0. Returns buf.
 */
char *term_bar(char *buf, size_t len, double value, double max, int width);

/*
 * A sparkline (▁▂▃▄▅▆▇█), one character per value, scaled to max (or to the largest value
 * when max <= 0). Returns buf.
 */
char *term_sparkline(char *buf, size_t len, const double *values, int n, double max);

/*
 * A progress line: on a terminal, redraws the current line ("\r...\033[K") with the text;
 * elsewhere prints nothing. term_progress_clear erases it before the phase's result is printed.
 */
void term_progress(const struct term *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void term_progress_clear(const struct term *t);

#endif
