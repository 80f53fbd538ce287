/*
 * test_term.c — term.h draws what the labs show on a shared screen. Pure: no servers.
 *
 * Tables are rendered into a memory stream and compared byte for byte, with UTF-8 cells
 * ("µs", "█", "✔") that a byte-counting pad would misalign. Colour and the progress line are
 * checked on a real pseudo-terminal (openpty), so "no escape codes off a terminal or with
 * NO_COLOR" is a claim that could fail, not one that holds because nothing is ever a terminal.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <pty.h> /* openpty: glibc; the suite is Linux only (docs/architecture.md) */
#include <stdlib.h>
#include <sys/ioctl.h>
#include <string.h>
#include <unistd.h>

#include "term.h"

/* A term bound to a memory stream; render() closes it and hands back what was written. */
struct capture {
	FILE *f;
	char *buf;
	size_t len;
	struct term t;
};

static void capture_open(struct capture *c)
{
	memset(c, 0, sizeof(*c));
	c->f = open_memstream(&c->buf, &c->len);
	assert_non_null(c->f);
	term_init(&c->t, c->f);
}

static char *capture_close(struct capture *c)
{
	fclose(c->f);
	return c->buf;
}

static const struct term_col cols[] = {
        {"", 16, 'l'},
        {"p50", 8, 'r'},
        {"p99", 8, 'r'},
        {"note", 4, 'l'},
};

static void test_table_pads_by_display_columns_not_bytes(void **state)
{
	(void)state;
	struct capture c;
	capture_open(&c);
	const char *micro[] = {"pooled", "87 µs", "412 µs", "✔"};
	const char *plain[] = {"per request", "1.24 ms", "23.1 ms", "x"};
	const char *chart[] = {"█████", "▁▂▃", "2.00 s", "✔ ok"};
	term_table_header(&c.t, 2, cols, 4);
	term_table_row(&c.t, 2, cols, 4, micro);
	term_table_row(&c.t, 2, cols, 4, plain);
	term_table_row(&c.t, 2, cols, 4, chart);
	char *out = capture_close(&c);
	assert_string_equal(out, "                         p50       p99  note\n"
	                         "  pooled               87 µs    412 µs  ✔\n"
	                         "  per request        1.24 ms   23.1 ms  x\n"
	                         "  █████                  ▁▂▃    2.00 s  ✔ ok\n");
	free(out);
}

static void test_table_prints_a_cell_wider_than_its_column_whole(void **state)
{
	(void)state;
	struct capture c;
	capture_open(&c);
	const struct term_col narrow[] = {{"n", 3, 'r'}, {"name", 4, 'l'}, {"end", 3, 'r'}};
	const char *row[] = {"123456", "longer", "1"};
	term_table_row(&c.t, 0, narrow, 3, row);
	char *out = capture_close(&c);
	assert_string_equal(out, "123456  longer    1\n");
	free(out);
}

static void test_table_lines_never_end_in_blanks(void **state)
{
	(void)state;
	struct capture c;
	capture_open(&c);
	/* a chart column with no title, and a short last cell, both left-aligned */
	const struct term_col chart[] = {{"", 8, 'l'}, {"p99", 7, 'r'}, {"", 10, 'l'}};
	const char *row[] = {"pooled", "2.2 ms", "██"};
	const char *empty_tail[] = {"per req", "41 ms", ""};
	term_table_header(&c.t, 2, chart, 3);
	term_table_row(&c.t, 2, chart, 3, row);
	term_table_row(&c.t, 2, chart, 3, empty_tail);
	char *out = capture_close(&c);
	assert_string_equal(out, "                p99\n"
	                         "  pooled     2.2 ms  ██\n"
	                         "  per req     41 ms\n");
	free(out);
}

static void test_width_counts_code_points(void **state)
{
	(void)state;
	assert_int_equal(term_width(""), 0);
	assert_int_equal(term_width("ms"), 2);
	assert_int_equal(term_width("µs"), 2);
	assert_int_equal(term_width("█▉▏"), 3);
	assert_int_equal(term_width("✔ demonstrated"), 14);
}

static void test_fmt_us_keeps_three_significant_digits_and_switches_unit_at_1000(void **state)
{
	(void)state;
	char buf[32];
	static const struct {
		double us;
		const char *text;
	} cases[] = {
	        {0, "0 µs"},         {87, "87 µs"},        {87.4, "87 µs"},      {999, "999 µs"},
	        {999.4, "999 µs"},   {1000, "1.00 ms"},    {1240, "1.24 ms"},    {9990, "9.99 ms"},
	        {9999, "10.0 ms"},   {23100, "23.1 ms"},   {99940, "99.9 ms"},   {99990, "100 ms"},
	        {412000, "412 ms"},  {999000, "999 ms"},   {999900, "1.00 s"},   {1000000, "1.00 s"},
	        {2000000, "2.00 s"}, {12345678, "12.3 s"}, {123456789, "123 s"}, {2500000000.0, "2500 s"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_string_equal(term_fmt_us(buf, sizeof(buf), cases[i].us), cases[i].text);
}

static void test_fmt_us_truncates_to_the_buffer(void **state)
{
	(void)state;
	char buf[4];
	assert_ptr_equal(term_fmt_us(buf, sizeof(buf), 412000), buf);
	assert_string_equal(buf, "412");
}

static void test_fmt_bytes_keeps_three_significant_digits_in_powers_of_1000(void **state)
{
	(void)state;
	char buf[TERM_FMT_LEN];
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 0), "0 B");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 512), "512 B");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 999.6), "1.00 kB");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 12345), "12.3 kB");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 246000), "246 kB");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 999700), "1.00 MB");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 1250000), "1.25 MB");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 2.1e9), "2.10 GB");
	assert_string_equal(term_fmt_bytes(buf, sizeof(buf), 5e15), "5000 TB");
	assert_string_equal(TERM_BYTES(42), "42 B");
}

static void test_fmt_num_groups_thousands_with_commas(void **state)
{
	(void)state;
	char buf[64];
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 0, 0), "0");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 248, 0), "248");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 999, 0), "999");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 1000, 0), "1,000");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 7900, 0), "7,900");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 123456, 0), "123,456");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 1234567, 0), "1,234,567");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 12.5, 1), "12.5");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 1234.5, 2), "1,234.50");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 999.7, 0), "1,000");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), -1234567.25, 1), "-1,234,567.2");
	assert_string_equal(term_fmt_num(buf, sizeof(buf), -0.01, 1), "0.0");
}

static void test_fmt_num_truncates_to_the_buffer(void **state)
{
	(void)state;
	char buf[4];
	assert_string_equal(term_fmt_num(buf, sizeof(buf), 7900, 0), "7,9");
}

static void test_bar_scales_to_width_in_eighth_blocks(void **state)
{
	(void)state;
	char buf[128];
	assert_string_equal(term_bar(buf, sizeof(buf), 10, 10, 4), "████");
	assert_string_equal(term_bar(buf, sizeof(buf), 5, 10, 4), "██");
	assert_string_equal(term_bar(buf, sizeof(buf), 1, 32, 4), "▏");
	assert_string_equal(term_bar(buf, sizeof(buf), 3, 8, 1), "▍");
	assert_string_equal(term_bar(buf, sizeof(buf), 7, 8, 1), "▉");
	assert_string_equal(term_bar(buf, sizeof(buf), 13, 16, 2), "█▋");
	assert_string_equal(term_bar(buf, sizeof(buf), 50, 10, 3), "███");
}

static void test_bar_is_empty_for_zero_and_never_empty_above_zero(void **state)
{
	(void)state;
	char buf[128];
	assert_string_equal(term_bar(buf, sizeof(buf), 0, 10, 8), "");
	assert_string_equal(term_bar(buf, sizeof(buf), -3, 10, 8), "");
	assert_string_equal(term_bar(buf, sizeof(buf), 0.001, 1000, 8), "▏");
}

static void test_bar_never_cuts_a_block_in_half(void **state)
{
	(void)state;
	char buf[8]; /* room for two 3-byte blocks and the NUL, not three */
	assert_string_equal(term_bar(buf, sizeof(buf), 1, 1, 4), "██");
}

static void test_sparkline_maps_values_onto_eight_levels(void **state)
{
	(void)state;
	char buf[128];
	const double ramp[] = {0, 1, 2, 3, 4, 5, 6, 7};
	assert_string_equal(term_sparkline(buf, sizeof(buf), ramp, 8, 7), "▁▂▃▄▅▆▇█");
	const double some[] = {0, 2, 4, 14};
	assert_string_equal(term_sparkline(buf, sizeof(buf), some, 4, 0), "▁▂▃█");
	const double over[] = {28, 8, 40};
	assert_string_equal(term_sparkline(buf, sizeof(buf), over, 3, 28), "█▃█");
	const double flat[] = {0, 0};
	assert_string_equal(term_sparkline(buf, sizeof(buf), flat, 2, 0), "▁▁");
	assert_string_equal(term_sparkline(buf, sizeof(buf), ramp, 0, 7), "");
}

static void test_no_escape_codes_off_a_terminal(void **state)
{
	(void)state;
	struct capture c;
	capture_open(&c);
	assert_false(c.t.tty);
	assert_false(c.t.color);
	term_printf(&c.t, "%s%s%s%s%s%s", term_bold(&c.t), term_dim(&c.t), term_green(&c.t), term_red(&c.t),
	            term_yellow(&c.t), term_reset(&c.t));
	term_progress(&c.t, "step %d", 3);
	term_progress_clear(&c.t);
	char *out = capture_close(&c);
	assert_string_equal(out, "");
	free(out);
}

/* A pseudo-terminal: slave is what a lab writes to, master reads what a screen would get. */
struct pty {
	int master;
	FILE *slave;
};

static void pty_open(struct pty *p)
{
	int slave_fd = -1;
	assert_int_equal(openpty(&p->master, &slave_fd, NULL, NULL, NULL), 0);
	p->slave = fdopen(slave_fd, "w");
	assert_non_null(p->slave);
}

static void pty_close(struct pty *p)
{
	fclose(p->slave);
	close(p->master);
}

/* Reads what reached the screen so far (the writes are flushed and the pty is local). */
static size_t pty_read(struct pty *p, char *buf, size_t len)
{
	size_t got = 0;
	struct pollfd pfd = {.fd = p->master, .events = POLLIN};
	while (got + 1 < len && poll(&pfd, 1, 200) > 0) {
		ssize_t n = read(p->master, buf + got, len - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	return got;
}

static void test_columns_from_the_terminal_else_columns_else_zero(void **state)
{
	(void)state;
	struct pty p;
	pty_open(&p);
	struct winsize ws = {.ws_row = 24, .ws_col = 123};
	assert_int_equal(ioctl(fileno(p.slave), TIOCSWINSZ, &ws), 0);
	setenv("COLUMNS", "77", 1);
	assert_int_equal(term_columns(p.slave), 123); /* the terminal's own size wins */
	FILE *f = tmpfile();
	assert_non_null(f);
	assert_int_equal(term_columns(f), 77); /* not a terminal: $COLUMNS */
	unsetenv("COLUMNS");
	assert_int_equal(term_columns(f), 0); /* neither says: the caller's fallback */
	fclose(f);
	pty_close(&p);
}

static void test_colour_on_a_terminal_unless_no_color_or_dumb(void **state)
{
	(void)state;
	struct pty p;
	struct term t;
	pty_open(&p);

	unsetenv("NO_COLOR");
	setenv("TERM", "xterm-256color", 1);
	term_init(&t, p.slave);
	assert_true(t.tty);
	assert_true(t.color);
	assert_string_equal(term_bold(&t), "\033[1m");
	assert_string_equal(term_reset(&t), "\033[0m");

	setenv("NO_COLOR", "1", 1);
	term_init(&t, p.slave);
	assert_true(t.tty);
	assert_false(t.color);
	assert_string_equal(term_bold(&t), "");
	assert_string_equal(term_green(&t), "");
	assert_string_equal(term_reset(&t), "");
	unsetenv("NO_COLOR");

	setenv("TERM", "dumb", 1);
	term_init(&t, p.slave);
	assert_true(t.tty);
	assert_false(t.color);
	assert_string_equal(term_red(&t), "");

	pty_close(&p);
}

static void test_progress_redraws_one_line_on_a_terminal_and_clear_erases_it(void **state)
{
	(void)state;
	struct pty p;
	struct term t;
	char screen[256];
	pty_open(&p);
	term_init(&t, p.slave);

	term_progress(&t, "%d/%d requests", 120, 500);
	pty_read(&p, screen, sizeof(screen));
	assert_string_equal(screen, "\r120/500 requests\033[K");

	term_progress_clear(&t);
	pty_read(&p, screen, sizeof(screen));
	assert_string_equal(screen, "\r\033[K");

	pty_close(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_table_pads_by_display_columns_not_bytes),
	        cmocka_unit_test(test_table_prints_a_cell_wider_than_its_column_whole),
	        cmocka_unit_test(test_table_lines_never_end_in_blanks),
	        cmocka_unit_test(test_width_counts_code_points),
	        cmocka_unit_test(test_fmt_us_keeps_three_significant_digits_and_switches_unit_at_1000),
	        cmocka_unit_test(test_fmt_us_truncates_to_the_buffer),
	        cmocka_unit_test(test_fmt_bytes_keeps_three_significant_digits_in_powers_of_1000),
	        cmocka_unit_test(test_fmt_num_groups_thousands_with_commas),
	        cmocka_unit_test(test_fmt_num_truncates_to_the_buffer),
	        cmocka_unit_test(test_bar_scales_to_width_in_eighth_blocks),
	        cmocka_unit_test(test_bar_is_empty_for_zero_and_never_empty_above_zero),
	        cmocka_unit_test(test_bar_never_cuts_a_block_in_half),
	        cmocka_unit_test(test_sparkline_maps_values_onto_eight_levels),
	        cmocka_unit_test(test_no_escape_codes_off_a_terminal),
	        cmocka_unit_test(test_colour_on_a_terminal_unless_no_color_or_dumb),
	        cmocka_unit_test(test_columns_from_the_terminal_else_columns_else_zero),
	        cmocka_unit_test(test_progress_redraws_one_line_on_a_terminal_and_clear_erases_it),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
