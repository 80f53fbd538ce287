/*
 * svg.c — a lab's key chart as inline SVG (report.h): the --json document's "chart" (lab.h's
 * shape) drawn as grouped bars, "line" series as polylines over the groups' centres, on a linear
 * or a log scale with round ticks, each bar's value above it, and a legend. Light theme.
 */
#include <math.h>
#include <string.h>

#include "report.h"

#define W        760.0
#define H        320.0
#define LEFT     70.0
#define RIGHT    16.0
#define TOP      40.0
#define BOTTOM   70.0
#define MAX_SER  8
#define MAX_LAB  40
#define BAR_FILL 0.8 /* of a group's width, the rest a gap between groups */

static const char *const PALETTE[MAX_SER] = {"#4c78a8", "#f58518", "#54a24b", "#b279a2",
                                             "#72b7b2", "#e45756", "#9d755d", "#eeca3b"};

struct chart {
	const json_t *labels, *series[MAX_SER];
	int nlabels, nseries, nbars; /* nbars: series drawn as bars */
	bool log, line[MAX_SER];
	double lo, hi; /* the axis' ends (values, not pixels) */
	double ticks[24];
	int nticks;
};

/* The value of series s at label i, or NAN (null, missing, not a number, <= 0 on a log scale). */
static double value_at(const struct chart *c, int s, int i)
{
	const json_t *v = json_array_get(json_object_get(c->series[s], "values"), (size_t)i);
	if (!json_is_number(v))
		return NAN;
	double x = json_number_value(v);
	return (c->log && x <= 0) || !isfinite(x) ? NAN : x;
}

static double nice_step(double span, int want)
{
	double raw = span / want, mag = pow(10, floor(log10(raw))), f = raw / mag;
	return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
}

/* The axis: from 0 (or the lowest value) to a round top, ticks at round steps; decades on log. */
static void scale(struct chart *c)
{
	double lo = INFINITY, hi = -INFINITY;
	for (int s = 0; s < c->nseries; s++)
		for (int i = 0; i < c->nlabels; i++) {
			double v = value_at(c, s, i);
			if (!isnan(v)) {
				lo = fmin(lo, v);
				hi = fmax(hi, v);
			}
		}
	if (c->log) {
		c->lo = isfinite(lo) ? pow(10, floor(log10(lo))) : 1;
		c->hi = isfinite(hi) ? pow(10, ceil(log10(hi))) : 10;
		if (c->hi <= c->lo)
			c->hi = c->lo * 10;
		for (double t = c->lo; t <= c->hi * 1.001 && c->nticks < 24; t *= 10)
			c->ticks[c->nticks++] = t;
		return;
	}
	lo = isfinite(lo) ? fmin(lo, 0) : 0;
	hi = isfinite(hi) ? fmax(hi, 0) : 1;
	if (hi - lo <= 0)
		hi = lo + 1;
	double step = nice_step(hi - lo, 5);
	c->lo = floor(lo / step) * step;
	c->hi = ceil(hi / step) * step;
	for (double t = c->lo; t <= c->hi + step / 2 && c->nticks < 24; t += step)
		c->ticks[c->nticks++] = fabs(t) < step / 1e6 ? 0 : t;
}

static double y_of(const struct chart *c, double v)
{
	double f = c->log ? (log10(v) - log10(c->lo)) / (log10(c->hi) - log10(c->lo))
	                  : (v - c->lo) / (c->hi - c->lo);
	return TOP + (H - TOP - BOTTOM) * (1 - f);
}

static double group_w(const struct chart *c)
{
	return (W - LEFT - RIGHT) / c->nlabels;
}

/* Reads the chart into c; NULL, or why it cannot be drawn. */
static const char *parse(const json_t *chart, struct chart *c)
{
	memset(c, 0, sizeof(*c));
	if (!json_is_object(chart))
		return "";
	c->labels = json_object_get(chart, "labels");
	const json_t *series = json_object_get(chart, "series");
	c->nlabels = (int)json_array_size(c->labels);
	if (c->nlabels == 0 || c->nlabels > MAX_LAB)
		return " (its labels are missing or too many)";
	if (json_array_size(series) == 0)
		return " (it has no series)";
	for (size_t s = 0; s < json_array_size(series) && c->nseries < MAX_SER; s++) {
		const json_t *one = json_array_get(series, s);
		if (!json_is_object(one) || !json_is_array(json_object_get(one, "values")))
			return " (a series without values)";
		c->line[c->nseries] = json_is_true(json_object_get(one, "line"));
		c->nbars += !c->line[c->nseries];
		c->series[c->nseries++] = one;
	}
	c->log = json_is_true(json_object_get(chart, "log"));
	scale(c);
	return NULL;
}

static void text(FILE *f, double x, double y, const char *anchor, const char *cls, const char *s)
{
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" class=\"%s\">", x, y, anchor, cls);
	suite_esc(f, s);
	fputs("</text>", f);
}

static void axis(FILE *f, const struct chart *c, const char *unit)
{
	char buf[32];
	for (int i = 0; i < c->nticks; i++) {
		double y = y_of(c, c->ticks[i]);
		fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"%s\"/>", LEFT,
		        W - RIGHT, y, y, c->ticks[i] == 0 || i == 0 ? "base" : "grid");
		text(f, LEFT - 8, y + 4, "end", "tick", suite_fmt_num(buf, sizeof(buf), c->ticks[i]));
	}
	if (unit && *unit) {
		char u[160];
		snprintf(u, sizeof(u), "%s%s", unit, c->log ? " (log scale)" : "");
		text(f, LEFT, TOP - 8, "start", "unit", u);
	}
	for (int i = 0; i < c->nlabels; i++) {
		const json_t *l = json_array_get(c->labels, (size_t)i);
		char cut[96], num[32];
		const char *s = json_is_string(l)   ? json_string_value(l)
		                : json_is_number(l) ? suite_fmt_num(num, sizeof(num), json_number_value(l))
		                                    : "";
		/* about 7 px a character at 12 px */
		suite_cut(s, (int)(group_w(c) / 7) > 3 ? (int)(group_w(c) / 7) : 3, cut, sizeof(cut));
		text(f, LEFT + group_w(c) * (i + 0.5), H - BOTTOM + 18, "middle", "label", cut);
	}
}

static void bars(FILE *f, const struct chart *c)
{
	double gw = group_w(c), bw = c->nbars ? gw * BAR_FILL / c->nbars : 0;
	double base = y_of(c, c->log ? c->lo : (c->lo < 0 && c->hi > 0 ? 0 : c->lo));
	char buf[32];
	for (int s = 0, b = 0; s < c->nseries; s++) {
		if (c->line[s])
			continue;
		for (int i = 0; i < c->nlabels; i++) {
			double v = value_at(c, s, i);
			if (isnan(v))
				continue;
			double x = LEFT + gw * i + gw * (1 - BAR_FILL) / 2 + bw * b, y = y_of(c, v);
			double top = fmin(y, base), h = fabs(base - y);
			fprintf(f,
			        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
			        "rx=\"2\">",
			        x + 1, top, bw > 2 ? bw - 2 : bw, h > 0.5 ? h : 0.5, PALETTE[s]);
			fprintf(f, "<title>");
			suite_esc(f, json_string_value(json_object_get(c->series[s], "name")));
			fprintf(f, ": %s</title></rect>", suite_fmt_num(buf, sizeof(buf), v));
			if (bw >= 18)
				text(f, x + bw / 2, top - 4, "middle", "value", buf);
		}
		b++;
	}
}

/* Each line series: a polyline over the groups' centres, broken where a value is null. */
static void lines(FILE *f, const struct chart *c)
{
	char buf[32];
	for (int s = 0; s < c->nseries; s++) {
		if (!c->line[s])
			continue;
		bool open = false;
		for (int i = 0; i <= c->nlabels; i++) {
			double v = i < c->nlabels ? value_at(c, s, i) : NAN;
			if (isnan(v) && open)
				fputs("\"/>", f);
			open = open && !isnan(v);
			if (isnan(v))
				continue;
			if (!open)
				fprintf(f, "<polyline class=\"series-line\" stroke=\"%s\" points=\"",
				        PALETTE[s]);
			fprintf(f, "%s%.1f,%.1f", open ? " " : "", LEFT + group_w(c) * (i + 0.5), y_of(c, v));
			open = true;
		}
		for (int i = 0; i < c->nlabels; i++) {
			double v = value_at(c, s, i);
			if (isnan(v))
				continue;
			double x = LEFT + group_w(c) * (i + 0.5), y = y_of(c, v);
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>", x, y,
			        PALETTE[s]);
			suite_esc(f, json_string_value(json_object_get(c->series[s], "name")));
			fprintf(f, ": %s</title></circle>", suite_fmt_num(buf, sizeof(buf), v));
		}
	}
}

static void legend(FILE *f, const struct chart *c)
{
	double x = LEFT, y = H - 22;
	for (int s = 0; s < c->nseries; s++) {
		const char *name = json_string_value(json_object_get(c->series[s], "name"));
		char cut[64];
		suite_cut(name ? name : "", 28, cut, sizeof(cut));
		if (c->line[s])
			fprintf(f,
			        "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"series-line\" "
			        "stroke=\"%s\"/>",
			        x, x + 18, y - 4, y - 4, PALETTE[s]);
		else
			fprintf(f,
			        "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"12\" rx=\"2\" "
			        "fill=\"%s\"/>",
			        x + 3, y - 10, PALETTE[s]);
		text(f, x + 24, y, "start", "legend", cut);
		x += 24 + 7.2 * term_width(cut) + 22;
	}
}

bool suite_svg_chart(FILE *f, const json_t *chart)
{
	struct chart c;
	const char *why = parse(chart, &c);
	if (why) {
		fprintf(f, "<p class=\"nochart\">no chart%s</p>\n", why);
		return false;
	}
	const char *title = json_string_value(json_object_get(chart, "title"));
	fprintf(f,
	        "<figure class=\"chart\"><svg viewBox=\"0 0 %.0f %.0f\" "
	        "role=\"img\" aria-label=\"",
	        W, H);
	suite_esc(f, title ? title : "chart");
	fputs("\">", f);
	if (title)
		text(f, W / 2, 16, "middle", "title", title);
	axis(f, &c, json_string_value(json_object_get(chart, "unit")));
	bars(f, &c);
	lines(f, &c);
	legend(f, &c);
	fputs("</svg></figure>\n", f);
	return true;
}
