/*
 * html.c — the page of `labsuite report` (report.h): one self-contained file, no script, no
 * fetch (its Content-Security-Policy forbids both), every string from a document escaped.
 * A summary table at the top, then a section per lab: the question, the verdict, the key chart
 * (svg.c), each phase's metrics (metrics.c), and the lab's questions in <details>.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "report.h"

#define STDERR_TAIL 1500 /* bytes of a lab's stderr shown when it left no document */
/* integers from here on are identifiers (2^53: past it a double, and grouping, lose digits) */
#define ID_DIGITS_FROM 9007199254740992LL

void suite_esc(FILE *f, const char *s)
{
	for (; s && *s; s++)
		switch (*s) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		case '\'':
			fputs("&#39;", f);
			break;
		default:
			fputc(*s, f);
		}
}

char *suite_fmt_num(char *buf, size_t len, double v)
{
	double a = fabs(v);
	if (!isfinite(v))
		snprintf(buf, len, "–");
	else if (v == floor(v) && a < 1e15)
		term_fmt_num(buf, len, v, 0);
	else if (a >= 100)
		term_fmt_num(buf, len, v, 0);
	else if (a >= 10)
		term_fmt_num(buf, len, v, 1);
	else if (a >= 1)
		term_fmt_num(buf, len, v, 2);
	else
		snprintf(buf, len, "%.3g", v);
	return buf;
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), m = strlen(tail);
	return n >= m && !strcmp(s + n - m, tail);
}

char *suite_fmt_value(char *buf, size_t len, const char *key, const json_t *v)
{
	if (json_is_string(v)) {
		snprintf(buf, len, "%s", json_string_value(v));
		return buf;
	}
	if (json_is_boolean(v) || !json_is_number(v)) {
		snprintf(buf, len, "%s", json_is_true(v) ? "yes" : json_is_false(v) ? "no" : "–");
		return buf;
	}
	/* an integer past a double's exact range is an identifier (a queryid): its digits, ungrouped */
	if (json_is_integer(v) && llabs(json_integer_value(v)) >= ID_DIGITS_FROM) {
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
		return buf;
	}
	double x = json_number_value(v);
	key = key ? key : "";
	if (ends_with(key, "_per_s")) {
		suite_fmt_num(buf, len, x);
		strncat(buf, "/s", len - strlen(buf) - 1);
	} else if (ends_with(key, "_us") || !strcmp(key, "us"))
		term_fmt_us(buf, len, x);
	else if (ends_with(key, "_ms") || !strcmp(key, "ms"))
		term_fmt_us(buf, len, x * 1000);
	else if (ends_with(key, "_s"))
		term_fmt_us(buf, len, x * 1e6);
	else if (ends_with(key, "_bytes"))
		term_fmt_bytes(buf, len, x);
	else
		suite_fmt_num(buf, len, x);
	return buf;
}

static void phases(FILE *f, const json_t *doc)
{
	const json_t *ps = json_object_get(doc, "phases"), *p;
	size_t i, n = json_array_size(ps);
	if (!n)
		return;
	fputs("<h3>What each phase measured</h3>\n", f);
	json_array_foreach(ps, i, p)
	{
		fprintf(f, "<div class=\"phase\"><h4><span class=\"step\">%zu/%zu</span> ", i + 1, n);
		suite_key_text(f, json_string_value(json_object_get(p, "name")));
		fputs("</h4>\n", f);
		suite_html_metrics(f, json_object_get(p, "metrics"));
		fputs("</div>\n", f);
	}
}

static void question_answer(FILE *f, const json_t *q)
{
	const json_t *m = json_object_get(q, "measured"), *choices = json_object_get(q, "choices");
	char buf[64];
	fputs("<p class=\"answer\">measured: <strong>", f);
	if (!json_is_number(m))
		fputs("not decided by this run", f);
	else if (json_is_array(choices) && json_number_value(m) >= 0 &&
	         json_number_value(m) < (double)json_array_size(choices) && json_array_size(choices) <= 26) {
		long c = lround(json_number_value(m));
		fprintf(f, "%c) ", (char)('a' + c));
		suite_esc(f, json_string_value(json_array_get(choices, (size_t)c)));
	} else if (json_is_array(choices))
		fprintf(f, "choice %g, which is none of these", json_number_value(m));
	else {
		suite_esc(f, suite_fmt_num(buf, sizeof(buf), json_number_value(m)));
		fputs(" ", f);
		suite_esc(f, json_string_value(json_object_get(q, "unit")));
	}
	fputs("</strong>", f);
	const char *margin = json_string_value(json_object_get(q, "margin"));
	if (margin && *margin) {
		fputs(" <span class=\"dim\">(right within ", f);
		suite_esc(f, margin);
		fputs(")</span>", f);
	}
	fputs("</p>", f);
}

static void questions(FILE *f, const json_t *doc)
{
	const json_t *qs = json_object_get(doc, "questions"), *q;
	size_t i, n = json_array_size(qs);
	if (!n)
		return;
	fprintf(f,
	        "<details class=\"questions\"><summary>%zu question%s to guess first: open for what "
	        "this run measured</summary><ol>\n",
	        n, n == 1 ? "" : "s");
	json_array_foreach(qs, i, q)
	{
		fputs("<li><p><span class=\"step\">", f);
		suite_key_text(f, json_string_value(json_object_get(q, "phase")));
		fputs("</span> ", f);
		suite_esc(f, json_string_value(json_object_get(q, "question")));
		fputs("</p>", f);
		const json_t *choices = json_object_get(q, "choices"), *c;
		size_t j;
		if (json_array_size(choices)) {
			fputs("<ul class=\"choices\">", f);
			json_array_foreach(choices, j, c)
			{
				fprintf(f, "<li>%c) ", (char)('a' + (j < 26 ? j : 0)));
				suite_esc(f, json_string_value(c));
				fputs("</li>", f);
			}
			fputs("</ul>", f);
		}
		question_answer(f, q);
		fputs("</li>\n", f);
	}
	fputs("</ol></details>\n", f);
}

/* ---- the section of one lab ---- */

/* The verdict box: from the document, or how the lab ended without one and its stderr's tail. */
static void verdict(FILE *f, const struct suite_run *r)
{
	bool ok = suite_run_ok(r);
	const json_t *v = json_object_get(r->doc, "verdict");
	const char *claim = json_string_value(json_object_get(v, "claim"));
	fprintf(f, "<div class=\"verdict %s\"><p><span class=\"mark\">%s</span> <strong>%s</strong>",
	        ok ? "ok" : "bad", ok ? "✔" : "✘", ok ? "demonstrated:" : "not demonstrated:");
	if (claim) {
		fputs(" ", f);
		suite_esc(f, claim);
	}
	fputs("</p>\n<p class=\"evidence\">", f);
	char summary[SUITE_SUMMARY_LEN];
	suite_run_summary(r, summary, sizeof(summary));
	suite_esc(f, summary);
	fputs("</p>\n", f);
	if (!r->doc && r->err_text && *r->err_text) {
		size_t n = strlen(r->err_text);
		const char *tail = r->err_text + (n > STDERR_TAIL ? n - STDERR_TAIL : 0);
		fputs("<pre class=\"stderr\">", f);
		suite_esc(f, tail);
		fputs("</pre>\n", f);
	}
	fputs("</div>\n", f);
}

void suite_html_section(FILE *f, const struct suite_run *r)
{
	char t[32];
	fputs("<section class=\"lab\" id=\"lab-", f);
	suite_esc(f, r->name);
	fprintf(f, "\" data-verdict=\"%s\">\n<h2>lab-",
	        suite_run_ok(r) ? "demonstrated" : "not-demonstrated");
	suite_esc(f, r->name);
	fprintf(f, " <span class=\"time\">%s</span></h2>\n", suite_fmt_ms(t, sizeof(t), r->ms));
	const char *q = json_string_value(json_object_get(r->doc, "question"));
	if (q) {
		fputs("<p class=\"question\">", f);
		suite_esc(f, q);
		fputs("</p>\n", f);
	}
	verdict(f, r);
	if (r->doc)
		suite_svg_chart(f, json_object_get(r->doc, "chart"));
	phases(f, r->doc);
	questions(f, r->doc);
	fputs("<p class=\"top\"><a href=\"#top\">↑ summary</a></p>\n</section>\n", f);
}

/* ---- the page ---- */

static const char STYLE[] =
        ":root{--ink:#1f2328;--dim:#656d76;--line:#d0d7de;--soft:#f6f8fa;--ok:#1a7f37;--bad:#cf222e}"
        "*{box-sizing:border-box}"
        "body{margin:0;background:#fff;color:var(--ink);font:15px/1.5 system-ui,-apple-system,'Segoe UI',"
        "Roboto,'DejaVu Sans',sans-serif}"
        "main{max-width:1080px;margin:0 auto;padding:28px 28px 60px}"
        "h1{font-size:28px;margin:0 0 4px}h2{font-size:21px;margin:0 0 6px}"
        "h3{font-size:15px;margin:22px 0 8px;color:var(--dim);text-transform:uppercase;letter-spacing:.04em}"
        "h4{font-size:15px;margin:14px 0 6px}h5{font-size:13px;margin:10px 0 4px;color:var(--dim)}"
        ".sub{color:var(--dim);margin:0 0 20px}"
        "a{color:#0969da;text-decoration:none}a:hover{text-decoration:underline}"
        "table{border-collapse:collapse;width:100%}"
        "th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}"
        "th{background:var(--soft);font-weight:600;font-size:13px}"
        "table.summary td.mark{font-weight:700;text-align:center}table.summary "
        "td:first-child{white-space:nowrap}"
        "table.summary tr.bad td{background:#fff5f5}"
        "table.summary td.time,td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}"
        "table.summary td.evidence{font-size:13.5px;color:#333}"
        ".ok .mark,td.mark.ok{color:var(--ok)}.bad .mark,td.mark.bad{color:var(--bad)}"
        "section.lab{border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin:28px 0;"
        "background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.04)}"
        "section.lab h2 .time{font-size:13px;font-weight:400;color:var(--dim);margin-left:8px}"
        ".question{font-size:17px;font-style:italic;margin:4px 0 14px}"
        ".question:before{content:'\\201C'}.question:after{content:'\\201D'}"
        ".verdict{border-left:4px solid var(--ok);background:#f0fbf3;padding:10px 14px;border-radius:6px}"
        ".verdict.bad{border-color:var(--bad);background:#fff2f2}"
        ".verdict p{margin:2px 0}.verdict .mark{font-weight:700}"
        ".evidence{color:#333;font-size:14px}"
        "pre.stderr{white-space:pre-wrap;font-size:12.5px;background:#fff;border:1px solid var(--line);"
        "padding:8px;border-radius:6px;max-height:240px;overflow:auto}"
        "figure.chart{margin:18px 0 4px}figure.chart "
        "svg{width:100%;max-width:760px;height:auto;display:block}"
        "svg text{font-family:inherit;fill:var(--ink)}svg .title{font-size:15px;font-weight:600}"
        "svg .tick,svg .unit{font-size:11px;fill:var(--dim)}svg .label{font-size:12px}"
        "svg .value{font-size:10.5px;fill:#444}svg .legend{font-size:12px}"
        "svg .grid{stroke:#eaeef2}svg .base{stroke:#8c959f}"
        "svg .series-line{fill:none;stroke-width:2.5;stroke-dasharray:7 4}"
        ".nochart{color:var(--dim);font-style:italic}"
        "dl.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(230px,1fr));gap:2px "
        "18px;margin:4px 0}"
        "dl.kv div{display:flex;justify-content:space-between;gap:10px;border-bottom:1px dotted var(--line);"
        "padding:2px 0}"
        "dl.kv div.wide{grid-column:1/-1}dl.kv div.wide dd{text-align:left}"
        "dl.kv dt{color:var(--dim);font-size:13px}dl.kv "
        "dd{margin:0;font-variant-numeric:tabular-nums;text-align:right;white-space:nowrap}"
        "dl.kv div.wide dd{white-space:normal;overflow-wrap:anywhere}"
        ".scroll{overflow-x:auto}table.metrics{font-size:13px;width:auto;min-width:60%}th.num{text-align:"
        "right}table.metrics td{min-width:40px}"
        "table.mini{font-size:12px;width:auto;min-width:0;margin:2px 0;background:#fff}"
        "table.mini th,table.mini td{padding:2px 6px}table.mini th{font-weight:600}"
        "details.cell summary{cursor:pointer;color:#0969da;font-size:12.5px;white-space:nowrap}"
        ".field{white-space:nowrap;margin-right:2px}.hex{font-family:monospace;font-size:12px}"
        ".phase{margin:0 0 8px}.step{color:var(--dim);font-weight:400;margin-right:4px;font-size:13px}"
        "code{font-size:12px;white-space:normal;overflow-wrap:anywhere}"
        "details.questions{margin-top:18px;background:var(--soft);border-radius:8px;padding:10px 14px}"
        "details.questions summary{cursor:pointer;font-weight:600}"
        ".answer{color:var(--ok)}.dim{color:var(--dim);font-weight:400}"
        "p.top{text-align:right;margin:10px 0 0;font-size:13px}";

static void summary(FILE *f, const struct suite_batch *b)
{
	fputs("<table class=\"summary\"><thead><tr><th>lab</th><th>verdict</th><th>time</th><th>evidence</th>"
	      "</tr></thead><tbody>\n",
	      f);
	for (int i = 0; i < b->n; i++) {
		const struct suite_run *r = &b->runs[i];
		char t[32], s[SUITE_SUMMARY_LEN];
		bool ok = suite_run_ok(r);
		fprintf(f, "<tr%s><td><a href=\"#lab-", ok ? "" : " class=\"bad\"");
		suite_esc(f, r->name);
		fputs("\">", f);
		suite_esc(f, r->name);
		fprintf(f,
		        "</a></td><td class=\"mark %s\">%s</td><td class=\"time\">%s</td><td "
		        "class=\"evidence\">",
		        ok ? "ok" : "bad", ok ? "✔" : "✘", suite_fmt_ms(t, sizeof(t), r->ms));
		suite_run_summary(r, s, sizeof(s));
		suite_esc(f, s);
		fputs("</td></tr>\n", f);
	}
	fputs("</tbody></table>\n", f);
}

void suite_html_page(FILE *f, const struct suite_batch *b)
{
	char when[64] = "", wall[32], total[256];
	time_t now = time(NULL);
	struct tm tm;
	if (localtime_r(&now, &tm))
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
	fprintf(f,
	        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	        "<meta http-equiv=\"Content-Security-Policy\" content=\"%s\">\n"
	        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n"
	        "<title>backend-labs: the proofs</title>\n<style>%s</style></head>\n<body><main "
	        "id=\"top\">\n",
	        SUITE_CSP, STYLE);
	int ok = 0;
	for (int i = 0; i < b->n; i++)
		ok += suite_run_ok(&b->runs[i]);
	fprintf(f, "<h1>backend-labs: the proofs</h1>\n<p class=\"sub\">");
	snprintf(total, sizeof(total),
	         "%d labs · %d ✔ demonstrated · %d ✘ not · each run live with --quick "
	         "against a real PostgreSQL and Redis on %s · wall %s",
	         b->n, ok, b->n - ok, when, suite_fmt_ms(wall, sizeof(wall), b->wall_ms));
	suite_esc(f, total);
	fputs("</p>\n", f);
	summary(f, b);
	for (int i = 0; i < b->n; i++)
		suite_html_section(f, &b->runs[i]);
	fputs("</main></body></html>\n", f);
}
