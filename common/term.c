/*
 * term.c — tables, numbers and charts for a shared screen. Every width here is counted in
 * display columns (code points), because the units and charts the labs print ("µs", "█", "✔")
 * take more bytes than columns and a byte count would shift every column after them.
 */
#include "term.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

void term_init(struct term *t, FILE *out)
{
	t->out = out;
	int fd = out ? fileno(out) : -1;
	t->tty = fd >= 0 && isatty(fd);
	/* no-color.org: NO_COLOR present and not empty turns colour off, whatever its value */
	const char *no_color = getenv("NO_COLOR");
	const char *term = getenv("TERM");
	t->color = t->tty && !(no_color && *no_color) && !(term && !strcmp(term, "dumb"));
}

static const char *esc(const struct term *t, const char *seq)
{
	return t->color ? seq : "";
}

const char *term_bold(const struct term *t)
{
	return esc(t, "\033[1m");
}

const char *term_dim(const struct term *t)
{
	return esc(t, "\033[2m");
}

const char *term_green(const struct term *t)
{
	return esc(t, "\033[32m");
}

const char *term_red(const struct term *t)
{
	return esc(t, "\033[31m");
}

const char *term_yellow(const struct term *t)
{
	return esc(t, "\033[33m");
}

const char *term_reset(const struct term *t)
{
	return esc(t, "\033[0m");
}

void term_printf(const struct term *t, const char *fmt, ...)
{
	if (!t->out)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(t->out, fmt, ap);
	va_end(ap);
}

int term_width(const char *s)
{
	int cols = 0;
	for (const unsigned char *p = (const unsigned char *)s; p && *p; p++)
		if ((*p & 0xC0) != 0x80) /* a continuation byte belongs to the code point before it */
			cols++;
	return cols;
}

/*
 * A row is written with its blanks held back until text follows them, so no line ends in
 * blanks (an empty or short last cell would otherwise leave a ragged tail of spaces).
 */
struct row_writer {
	FILE *out;
	int blanks;
};

static void row_text(struct row_writer *w, const char *text)
{
	if (!*text)
		return;
	for (; w->blanks > 0; w->blanks--)
		fputc(' ', w->out);
	fputs(text, w->out);
}

static void row_cell(struct row_writer *w, const struct term_col *col, const char *text)
{
	if (!text)
		text = "";
	int fill = col->width - term_width(text);
	if (fill < 0)
		fill = 0;
	if (col->align == 'r')
		w->blanks += fill;
	row_text(w, text);
	if (col->align != 'r')
		w->blanks += fill;
}

static void put_row(const struct term *t, int indent, const struct term_col *cols, int ncols,
                    const char *const *cells, bool titles)
{
	if (!t->out)
		return;
	struct row_writer w = {.out = t->out, .blanks = indent};
	for (int i = 0; i < ncols; i++) {
		if (i > 0)
			w.blanks += 2;
		row_cell(&w, &cols[i], titles ? cols[i].title : cells[i]);
	}
	fputc('\n', t->out);
}

void term_table_header(const struct term *t, int indent, const struct term_col *cols, int ncols)
{
	put_row(t, indent, cols, ncols, NULL, true);
}

void term_table_row(const struct term *t, int indent, const struct term_col *cols, int ncols,
                    const char *const *cells)
{
	put_row(t, indent, cols, ncols, cells, false);
}

/*
 * Formats v with the most decimals (of max_dec down to 0) whose printed value stays below
 * limit[dec]; snprintf's own rounding decides, so 9.996 becomes "10.0", never "10.00".
 * Returns false when even 0 decimals reach limit[0].
 */
static bool fit_digits(char *buf, size_t len, double v, int max_dec, const double *limit)
{
	for (int dec = max_dec; dec >= 0; dec--) {
		char tmp[64];
		snprintf(tmp, sizeof(tmp), "%.*f", dec, v);
		if (strtod(tmp, NULL) < limit[dec]) {
			snprintf(buf, len, "%s", tmp);
			return true;
		}
	}
	return false;
}

char *term_fmt_us(char *buf, size_t len, double us)
{
	/* limit[dec]: with dec decimals, three significant digits hold values below this */
	static const double limit[] = {1000.0, 100.0, 10.0};
	char num[64];
	const char *sign = "";
	if (len == 0)
		return buf;
	if (isnan(us)) {
		snprintf(buf, len, "-");
		return buf;
	}
	if (us < 0) {
		sign = "-";
		us = -us;
	}
	/* microseconds are whole: the clocks behind them do not resolve less */
	if (fit_digits(num, sizeof(num), us, 0, limit)) {
		snprintf(buf, len, "%s%s µs", sign, num);
	} else if (fit_digits(num, sizeof(num), us / 1e3, 2, limit)) {
		snprintf(buf, len, "%s%s ms", sign, num);
	} else {
		if (!fit_digits(num, sizeof(num), us / 1e6, 2, limit))
			snprintf(num, sizeof(num), "%.0f", us / 1e6); /* past 1000 s: all the digits */
		snprintf(buf, len, "%s%s s", sign, num);
	}
	return buf;
}

char *term_fmt_bytes(char *buf, size_t len, double v)
{
	static const char *const units[] = {"kB", "MB", "GB", "TB"};
	/* the bounds are where rounding would print a fourth digit: 999.6 B is "1.00 kB" */
	if (v < 999.5) {
		snprintf(buf, len, "%.0f B", v);
		return buf;
	}
	int u = 0;
	v /= 1e3;
	while (v >= 999.5 && u < 3) {
		v /= 1e3;
		u++;
	}
	snprintf(buf, len, v < 9.995 ? "%.2f %s" : v < 99.95 ? "%.1f %s" : "%.0f %s", v, units[u]);
	return buf;
}

char *term_fmt_num(char *buf, size_t len, double v, int decimals)
{
	char plain[400];
	char grouped[520];
	if (len == 0)
		return buf;
	if (!isfinite(v)) {
		snprintf(buf, len, "-");
		return buf;
	}
	if (decimals < 0)
		decimals = 0;
	if (decimals > 9)
		decimals = 9;
	snprintf(plain, sizeof(plain), "%.*f", decimals, v);

	const char *digits = plain;
	size_t out = 0;
	if (*digits == '-') {
		grouped[out++] = '-';
		digits++;
	}
	size_t int_len = strcspn(digits, ".");
	for (size_t i = 0; i < int_len; i++) {
		if (i > 0 && (int_len - i) % 3 == 0)
			grouped[out++] = ',';
		grouped[out++] = digits[i];
	}
	snprintf(grouped + out, sizeof(grouped) - out, "%s", digits + int_len);
	/* a tiny negative rounded to "-0.0" reads as a different number than "0.0" */
	const char *shown = grouped;
	if (grouped[0] == '-' && strspn(grouped + 1, "0.") == strlen(grouped + 1))
		shown++;
	snprintf(buf, len, "%s", shown);
	return buf;
}

/* Appends the UTF-8 character ch to buf only if it fits whole, so buf never ends mid-character. */
static bool append_char(char *buf, size_t len, size_t *used, const char *ch)
{
	size_t n = strlen(ch);
	if (*used + n + 1 > len)
		return false;
	memcpy(buf + *used, ch, n);
	*used += n;
	buf[*used] = '\0';
	return true;
}

char *term_bar(char *buf, size_t len, double value, double max, int width)
{
	/* index = eighths of a column: "▏" is 1/8, "█" is 8/8 */
	static const char *const eighth[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"};
	size_t used = 0;
	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (!(value > 0) || !(max > 0) || width <= 0)
		return buf;
	double frac = value / max;
	if (frac > 1)
		frac = 1;
	long eighths = lround(frac * width * 8);
	if (eighths < 1)
		eighths = 1; /* a value above zero never looks like nothing */
	for (long i = 0; i < eighths / 8; i++)
		if (!append_char(buf, len, &used, eighth[8]))
			return buf;
	append_char(buf, len, &used, eighth[eighths % 8]);
	return buf;
}

char *term_sparkline(char *buf, size_t len, const double *values, int n, double max)
{
	static const char *const level[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
	size_t used = 0;
	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (!(max > 0)) {
		max = 0;
		for (int i = 0; i < n; i++)
			if (values[i] > max)
				max = values[i];
	}
	for (int i = 0; i < n; i++) {
		int lv = 0;
		if (max > 0 && values[i] > 0) {
			double scaled = values[i] / max * 7;
			lv = scaled >= 7 ? 7 : (int)lround(scaled);
		}
		if (!append_char(buf, len, &used, level[lv]))
			break;
	}
	return buf;
}

void term_progress(const struct term *t, const char *fmt, ...)
{
	if (!t->tty || !t->out)
		return;
	va_list ap;
	va_start(ap, fmt);
	fputc('\r', t->out);
	vfprintf(t->out, fmt, ap);
	fputs("\033[K", t->out);
	fflush(t->out);
	va_end(ap);
}

void term_progress_clear(const struct term *t)
{
	if (!t->tty || !t->out)
		return;
	fputs("\r\033[K", t->out);
	fflush(t->out);
}

int term_columns(FILE *f)
{
	struct winsize ws;
	if (f && ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		return ws.ws_col;
	const char *c = getenv("COLUMNS");
	int n = c ? atoi(c) : 0;
	return n > 0 ? n : 0;
}
