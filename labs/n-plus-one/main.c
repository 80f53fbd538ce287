/*
 * lab-n-plus-one — "What is the N+1 query problem?"
 *
 * What you will see: the same users and orders loaded three ways, an ORM's lazy loop (1 + N
 * statements), one JOIN, and a batched load (users, then their orders with = ANY($1)), each
 * counted by PostgreSQL itself (pg_stat_statements) and proven to return the same data; then
 * the three through a latency proxy at 0, 0.5 and 2 ms of round trip, where the loop grows with
 * RTT x N and the JOIN does not; what the JOIN pays instead (repeated columns, multiplied rows
 * across two has-many relations) and when the batched load wins; and a detector on the server's
 * counts that flags the loop and stays silent for both fixes.
 *
 * This file only tells: the experiment and its verdict are n_plus_one.c's (docs/architecture.md).
 * Run it: make lab-n-plus-one (ARGS="--quick", "--json", "--step", "--seed 7").
 * Limits: one machine; the network is the proxy's added delay over loopback, not a real link.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"
#include "n_plus_one.h"
#include "pg.h"

#define QUESTION "What is the N+1 query problem?"

/* A round trip the proxy adds: "0", "+0.5 ms", "+2 ms". */
static const char *fmt_rtt(char *buf, int rtt_us)
{
	if (rtt_us == 0)
		snprintf(buf, TERM_FMT_LEN, "0");
	else
		snprintf(buf, TERM_FMT_LEN, "+%g ms", rtt_us / 1000.0);
	return buf;
}

/* A bandwidth in bytes per second as a link is named: "100 Mbit/s". */
static const char *fmt_link(char *buf, double bytes_per_s)
{
	double mbit = bytes_per_s * 8 / 1e6;
	if (mbit >= 1000)
		snprintf(buf, TERM_FMT_LEN, "%g Gbit/s", mbit / 1000);
	else
		snprintf(buf, TERM_FMT_LEN, "%.3g Mbit/s", mbit);
	return buf;
}

/* As TERM_US: into a buffer of the enclosing block. */
#define RTT(us) fmt_rtt((char[TERM_FMT_LEN]){0}, (us))
#define LINK(v) fmt_link((char[TERM_FMT_LEN]){0}, (double)(v))

/* ---- the --json document ---- */

/* One load; the digest as hex (a JSON integer cannot hold all 64 bits). */
static json_t *load_json(const struct n_plus_one_load *l)
{
	char hex[17];
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)l->digest);
	return json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:s,s:i}", "strategy",
	                 n_plus_one_strategy_name(l->strategy), "users", l->users, "statements_server",
	                 (json_int_t)l->statements, "statements_predicted", (json_int_t)l->predicted,
	                 "statements_client", (json_int_t)l->client_statements, "rows", (json_int_t)l->rows,
	                 "bytes_socket", (json_int_t)l->wire_bytes, "bytes_protocol",
	                 (json_int_t)l->protocol_bytes, "bytes_repeated", (json_int_t)l->repeated_bytes,
	                 "bytes_proxy", (json_int_t)l->proxy_bytes, "wall_ms", l->wall_us / 1000.0,
	                 "wall_median_ms", l->wall_median_us / 1000.0, "wall_max_ms", l->wall_max_us / 1000.0,
	                 "digest", hex, "repeats", l->repeats);
}

static json_t *unit_json(const struct n_plus_one_unit *u)
{
	json_t *shapes = json_array();
	for (int i = 0; i < u->nshapes; i++)
		json_array_append_new(shapes,
		                      json_pack("{s:I,s:I,s:s}", "queryid", (json_int_t)u->shape[i].queryid,
		                                "calls", (json_int_t)u->shape[i].calls, "query",
		                                u->shape[i].query));
	return json_pack("{s:I,s:i,s:i,s:b,s:o}", "statements", (json_int_t)u->statements, "shapes",
	                 u->shapes, "threshold", u->threshold, "flagged", u->flagged > 0, "top_shapes",
	                 shapes);
}

static json_t *data_json(const struct n_plus_one_data *d)
{
	return json_pack("{s:I,s:I,s:I,s:I}", "users", (json_int_t)d->users, "orders", (json_int_t)d->orders,
	                 "addresses", (json_int_t)d->addresses, "users_without_orders",
	                 (json_int_t)d->users_without_orders);
}

static void config_json(struct lab *lab, const struct n_plus_one_config *cfg)
{
	lab_config_set(lab, "data_users", json_integer(n_plus_one_max_users(cfg)));
	lab_config_set(lab, "users", json_integer(cfg->users));
	lab_config_set(lab, "orders_per_user", json_pack("[i,i]", 0, cfg->orders_max));
	lab_config_set(lab, "addresses_per_user", json_pack("[i,i]", 1, cfg->addresses_max));
	lab_config_set(lab, "bio_bytes", json_integer(cfg->bio_bytes));
	lab_config_set(lab, "repeats", json_integer(cfg->repeats));
	lab_config_set(lab, "network_repeats_max", json_integer(cfg->net_repeats));
	lab_config_set(lab, "network_budget_ms", json_real(cfg->net_budget_us / 1000.0));
	json_t *sizes = json_array(), *rtts = json_array();
	for (int i = 0; i < cfg->nsizes; i++)
		json_array_append_new(sizes, json_integer(cfg->sizes[i]));
	for (int i = 0; i < cfg->nrtts; i++)
		json_array_append_new(rtts, json_real(cfg->rtts_us[i] / 1000.0));
	lab_config_set(lab, "network_users", sizes);
	lab_config_set(lab, "network_rtt_ms", rtts);
	lab_config_set(lab, "detector_threshold", json_integer(cfg->threshold));
}

/* ---- tables ---- */

static const struct term_col load_cols[] = {{"", 16, 'l'},    {"statements", 10, 'r'}, {"predicted", 9, 'r'},
                                            {"rows", 7, 'r'}, {"received", 9, 'r'},    {"wall time", 9, 'r'}};

static void print_loads(const struct term *t, const struct n_plus_one_load *loads, int n)
{
	term_table_header(t, 2, load_cols, 6);
	for (int i = 0; i < n; i++) {
		const struct n_plus_one_load *l = &loads[i];
		const char *row[] = {n_plus_one_strategy_name(l->strategy),
		                     TERM_NUM(l->statements, 0),
		                     TERM_NUM(l->predicted, 0),
		                     TERM_NUM(l->rows, 0),
		                     TERM_BYTES(n_plus_one_received(l)),
		                     TERM_US(l->wall_us)};
		term_table_row(t, 2, load_cols, 6, row);
	}
}

/* "received" is the kernel's count; say so, and whether the protocol's own sum agrees. */
static void print_received_note(const struct term *t, const struct n_plus_one_load *loads, int n)
{
	bool tcp = true, agree = true;
	for (int i = 0; i < n; i++) {
		if (loads[i].wire_bytes < 0)
			tcp = false;
		else if (loads[i].wire_bytes != loads[i].protocol_bytes)
			agree = false;
	}
	if (!tcp)
		term_printf(t,
		            "  %sreceived: the sizes of the protocol messages the results came in (not a TCP "
		            "socket, so no kernel count)%s\n",
		            term_dim(t), term_reset(t));
	else
		term_printf(t, "  %sreceived: the kernel's count on the socket (TCP_INFO), %s%s\n",
		            term_dim(t),
		            agree ? "equal to the protocol messages' sum to the byte"
		                  : "not equal to the protocol messages' sum (see --json)",
		            term_reset(t));
}

/* ---- phases 1-3: the loop, the JOIN, the batched load ---- */

static void before_loop(struct lab *lab, const void *cfg)
{
	const struct n_plus_one_config *c = cfg;
	lab_phase(lab, "The ORM-style loop: %d users, then each user's orders in its own query", c->users);
}

static void after_loop(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct n_plus_one_result *r = result;
	const struct term *t = &lab->term;
	const struct n_plus_one_load *loop = &r->loads[NPO_LOOP];
	print_loads(t, loop, 1);
	term_printf(t,
	            "  %sstatements: the server's count (pg_stat_statements, diffed around the load); time: "
	            "best of %d loads%s\n",
	            term_dim(t), loop->repeats, term_reset(t));
	term_printf(t, "  one entry per statement shape (constants become $1), calls in this load:\n");
	for (int i = 0; i < loop->unit.nshapes; i++)
		term_printf(t, "  %s%6lld x%s %s\n", term_bold(t), (long long)loop->unit.shape[i].calls,
		            term_reset(t), loop->unit.shape[i].query);
	lab_phase_metrics(lab, "loop",
	                  json_pack("{s:o,s:o,s:o}", "data", data_json(&r->data), "load", load_json(loop),
	                            "server", unit_json(&loop->unit)));
}

static void before_join(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab, "The JOIN: users LEFT JOIN orders, one statement");
}

static void after_join(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct n_plus_one_result *r = result;
	print_loads(&lab->term, r->loads, 2);
	term_printf(
	        &lab->term,
	        "  %s rows: one per order, and one for each of the %lld users without orders (LEFT JOIN)\n",
	        TERM_NUM(r->loads[NPO_JOIN].rows, 0), (long long)r->page.users_without_orders);
	lab_phase_metrics(lab, "join", json_pack("{s:o}", "load", load_json(&r->loads[NPO_JOIN])));
}

static void before_batched(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(
	        lab,
	        "The batched load (prefetch_related, includes): users, then orders WHERE user_id = ANY($1)");
}

static void after_batched(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct n_plus_one_load *loads = ((const struct n_plus_one_result *)result)->loads;
	const struct term *t = &lab->term;
	print_loads(t, loads, 3);
	print_received_note(t, loads, 3);
	double max = 0;
	for (int i = 0; i < 3; i++)
		if (loads[i].wall_us > max)
			max = (double)loads[i].wall_us;
	term_printf(t, "\n");
	for (int i = 0; i < 3; i++) {
		char bar[256];
		term_printf(t, "  %-16s %s %s\n", n_plus_one_strategy_name(loads[i].strategy),
		            term_bar(bar, sizeof(bar), (double)loads[i].wall_us, max, 40),
		            TERM_US(loads[i].wall_us));
	}
	bool same = loads[0].digest == loads[1].digest && loads[1].digest == loads[2].digest;
	term_printf(t, "  %s%s%s: digest %016llx %s (%d users and %s orders built as objects)\n",
	            same ? term_green(t) : term_red(t), same ? "✔ same data" : "✘ different data",
	            term_reset(t), (unsigned long long)loads[0].digest, same ? "for all three" : "differs",
	            loads[0].users, TERM_NUM(loads[0].orders, 0));
	lab_phase_metrics(lab, "batched",
	                  json_pack("{s:o,s:b}", "load", load_json(&loads[2]), "same_data", same));
}

/* ---- phase 4: through the latency proxy ---- */

static void before_network(struct lab *lab, const void *cfg)
{
	const struct n_plus_one_config *c = cfg;
	char rtts[64] = "";
	for (int i = 0; i < c->nrtts; i++)
		snprintf(rtts + strlen(rtts), sizeof(rtts) - strlen(rtts), "%s%g", i ? ", " : "",
		         c->rtts_us[i] / 1000.0);
	lab_phase(lab, "A real round trip: the three through a latency proxy adding %s ms of RTT", rtts);
}

/* The chart: the largest size, the loop against the JOIN, at each round trip. */
static void network_chart(const struct term *t, const struct n_plus_one_network *n)
{
	int si = n->nsizes - 1;
	double max = 0;
	for (int ri = 0; ri < n->nrtts; ri++)
		if ((double)n->cells[si][ri].load[NPO_LOOP].wall_us > max)
			max = (double)n->cells[si][ri].load[NPO_LOOP].wall_us;
	term_printf(t, "\n  %s users, wall time of one load:\n", TERM_NUM(n->cells[si][0].users, 0));
	for (int ri = 0; ri < n->nrtts; ri++) {
		const struct n_plus_one_cell *c = &n->cells[si][ri];
		char bar[256];
		term_printf(t, "  %-7s N+1   %s %s\n", RTT(c->rtt_us),
		            term_bar(bar, sizeof(bar), (double)c->load[NPO_LOOP].wall_us, max, 40),
		            TERM_US(c->load[NPO_LOOP].wall_us));
		term_printf(t, "  %-7s JOIN  %s %s\n", "",
		            term_bar(bar, sizeof(bar), (double)c->load[NPO_JOIN].wall_us, max, 40),
		            TERM_US(c->load[NPO_JOIN].wall_us));
	}
}

static void print_network(const struct term *t, const struct n_plus_one_config *cfg,
                          const struct n_plus_one_network *n)
{
	struct term_col cols[] = {{"users", 5, 'r'},    {"RTT added", 9, 'r'},  {"measured", 8, 'r'},
	                          {"N+1 loop", 9, 'r'}, {"predicted", 9, 'r'},  {"JOIN", 9, 'r'},
	                          {"batched", 9, 'r'},  {"N+1 / JOIN", 10, 'r'}};
	term_table_header(t, 2, cols, 8);
	for (int si = 0; si < n->nsizes; si++) {
		for (int ri = 0; ri < n->nrtts; ri++) {
			const struct n_plus_one_cell *c = &n->cells[si][ri];
			char ratio[32];
			snprintf(ratio, sizeof(ratio), "%.0fx", c->loop_over_join);
			const char *row[] = {ri == 0 ? TERM_NUM(c->users, 0) : "",
			                     RTT(c->rtt_us),
			                     TERM_US(n->rtt_measured_us[ri]),
			                     TERM_US(c->load[NPO_LOOP].wall_us),
			                     ri == 0 ? "" : TERM_US(c->predicted_loop_us),
			                     TERM_US(c->load[NPO_JOIN].wall_us),
			                     TERM_US(c->load[NPO_BATCHED].wall_us),
			                     ratio};
			term_table_row(t, 2, cols, 8, row);
		}
	}
	network_chart(t, n);
	term_printf(
	        t,
	        "  %smeasured: a bare round trip through the proxy (median of 21 SELECT 1). predicted: "
	        "the loop with no\n  added delay + (N + 1) x what the delay added to that round trip. "
	        "The delays take turns,\n  load by load; best of as many as fit in %s a cell, 2 to %d.%s\n",
	        term_dim(t), TERM_US(cfg->net_budget_us), cfg->net_repeats, term_reset(t));
}

static void after_network(struct lab *lab, const void *cfg, const void *result)
{
	const struct n_plus_one_network *n = &((const struct n_plus_one_result *)result)->network;
	print_network(&lab->term, cfg, n);
	json_t *cells = json_array(), *measured = json_array();
	for (int si = 0; si < n->nsizes; si++)
		for (int ri = 0; ri < n->nrtts; ri++) {
			const struct n_plus_one_cell *c = &n->cells[si][ri];
			json_array_append_new(cells,
			                      json_pack("{s:i,s:f,s:o,s:o,s:o,s:f,s:f,s:f,s:f}", "users",
			                                c->users, "rtt_ms", c->rtt_us / 1000.0, "loop",
			                                load_json(&c->load[NPO_LOOP]), "join",
			                                load_json(&c->load[NPO_JOIN]), "batched",
			                                load_json(&c->load[NPO_BATCHED]), "predicted_loop_ms",
			                                c->predicted_loop_us / 1000.0, "predicted_join_ms",
			                                c->predicted_join_us / 1000.0, "predicted_batched_ms",
			                                c->predicted_batched_us / 1000.0, "loop_over_join",
			                                c->loop_over_join));
		}
	for (int ri = 0; ri < n->nrtts; ri++)
		json_array_append_new(measured, json_real(n->rtt_measured_us[ri] / 1000.0));
	lab_phase_metrics(lab, "network",
	                  json_pack("{s:o,s:o}", "rtt_measured_ms", measured, "cells", cells));
}

/* ---- phase 5: what the JOIN pays instead ---- */

static void before_width(struct lab *lab, const void *cfg)
{
	(void)cfg;
	lab_phase(lab,
	          "What the JOIN pays instead: repeated columns, and rows multiplied across two has-many");
}

static void width_notes(const struct term *t, const struct n_plus_one_config *cfg,
                        const struct n_plus_one_width *w, const struct n_plus_one_data *d)
{
	const struct n_plus_one_load *join = &w->direct[0], *batched = &w->direct[1], *join2 = &w->direct[2],
	                             *batched2 = &w->direct[3];
	term_printf(t,
	            "  the JOIN sends each user's columns (a %d-byte bio among them) again on every order "
	            "row: %s of its %s\n",
	            cfg->bio_bytes, TERM_BYTES(join->repeated_bytes), TERM_BYTES(n_plus_one_received(join)));
	term_printf(t,
	            "  two has-many: orders x addresses per user = %s rows for %s orders and %s addresses "
	            "(%s batched)\n",
	            TERM_NUM(join2->rows, 0), TERM_NUM(d->orders, 0), TERM_NUM(d->addresses, 0),
	            TERM_NUM(batched2->rows, 0));
	if (w->break_even_bandwidth > 0)
		term_printf(t,
		            "  batched wins when the JOIN's extra %s take longer to arrive than one more "
		            "round trip: at %s,\n"
		            "  on links under %s (predicted); measured at %s, %s: JOIN %s, batched %s\n",
		            TERM_BYTES(n_plus_one_received(join) - n_plus_one_received(batched)),
		            RTT(w->rtt_us), LINK(w->break_even_bandwidth), RTT(w->rtt_us), LINK(w->bandwidth),
		            TERM_US(w->network[0].wall_us), TERM_US(w->network[1].wall_us));
}

static void after_width(struct lab *lab, const void *cfg, const void *result)
{
	const struct n_plus_one_result *r = result;
	const struct n_plus_one_width *w = &r->width;
	const struct term *t = &lab->term;
	char net[48];
	snprintf(net, sizeof(net), "%s, %s", RTT(w->rtt_us), LINK(w->bandwidth));
	struct term_col cols[] = {{"", 23, 'l'},        {"statements", 10, 'r'}, {"rows", 6, 'r'},
	                          {"received", 9, 'r'}, {"repeated", 9, 'r'},    {"loopback", 8, 'r'},
	                          {net, 17, 'r'}};
	term_table_header(t, 2, cols, 7);
	json_t *wd = json_array(), *wn = json_array();
	for (int i = 0; i < 4; i++) {
		const struct n_plus_one_load *l = &w->direct[i], *nl = &w->network[i];
		const char *row[] = {n_plus_one_strategy_name(l->strategy),
		                     TERM_NUM(l->statements, 0),
		                     TERM_NUM(l->rows, 0),
		                     TERM_BYTES(n_plus_one_received(l)),
		                     l->repeated_bytes ? TERM_BYTES(l->repeated_bytes) : "0",
		                     TERM_US(l->wall_us),
		                     nl->repeats ? TERM_US(nl->wall_us) : "—"};
		term_table_row(t, 2, cols, 7, row);
		json_array_append_new(wd, load_json(l));
		json_array_append_new(wn, load_json(nl));
	}
	width_notes(t, cfg, w, &r->page);
	lab_phase_metrics(lab, "width",
	                  json_pack("{s:o,s:o,s:f,s:I,s:f}", "direct", wd, "network", wn, "network_rtt_ms",
	                            w->rtt_us / 1000.0, "network_bandwidth_bytes_per_s",
	                            (json_int_t)w->bandwidth, "break_even_bytes_per_s",
	                            w->break_even_bandwidth));
}

/* ---- phase 6: the detector ---- */

static void before_detect(struct lab *lab, const void *cfg)
{
	const struct n_plus_one_config *c = cfg;
	lab_phase(lab,
	          "A detector on the server's counts: the same statement more than %d times in one unit of "
	          "work",
	          c->threshold);
}

/* What the detector says of a flagged unit: the shape, what ran beside it, the fix. */
static void print_flagged(const struct term *t, enum n_plus_one_strategy s, const struct n_plus_one_unit *u)
{
	term_printf(t, "  %sflagged%s in \"%s\": one statement shape ran %lld times (threshold %d):\n",
	            term_bold(t), term_reset(t), n_plus_one_strategy_name(s), (long long)u->shape[0].calls,
	            u->threshold);
	term_printf(t, "    %s\n", u->shape[0].query);
	for (int i = 1; i < u->nshapes; i++)
		term_printf(t, "    beside %lld x %s\n", (long long)u->shape[i].calls, u->shape[i].query);
	term_printf(
	        t,
	        "    fix: load the relation for all of them at once (WHERE user_id = ANY($1), or a JOIN)\n");
}

static void after_detect(struct lab *lab, const void *cfg, const void *result)
{
	(void)cfg;
	const struct n_plus_one_detect *d = &((const struct n_plus_one_result *)result)->detect;
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"unit of work", 23, 'l'},
	                          {"statements", 10, 'r'},
	                          {"shapes", 6, 'r'},
	                          {"most repeated", 13, 'r'},
	                          {"detector", 10, 'l'}};
	term_table_header(t, 2, cols, 5);
	json_t *units = json_object();
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		const struct n_plus_one_unit *u = &d->units[s];
		char verdict[64];
		snprintf(verdict, sizeof(verdict), "%s%s%s", u->flagged ? term_red(t) : "",
		         u->flagged ? "N+1 flagged" : "silent", u->flagged ? term_reset(t) : "");
		const char *row[] = {n_plus_one_strategy_name((enum n_plus_one_strategy)s),
		                     TERM_NUM(u->statements, 0), TERM_NUM(u->shapes, 0),
		                     TERM_NUM(u->nshapes ? u->shape[0].calls : 0, 0), verdict};
		term_table_row(t, 2, cols, 5, row);
		json_object_set_new(units, n_plus_one_strategy_name((enum n_plus_one_strategy)s),
		                    unit_json(u));
	}
	for (int s = 0; s < NPO_STRATEGIES; s++)
		if (d->units[s].flagged)
			print_flagged(t, (enum n_plus_one_strategy)s, &d->units[s]);
	lab_phase_metrics(lab, "detector", json_pack("{s:i,s:o}", "threshold", d->threshold, "units", units));
}

/*
 * The key chart: what the server ran for each way of loading the same page, beside what each
 * predicts. The claim at a glance: one bar of 1 + N, the fixes flat at 1, 2 and 3.
 */
static json_t *statements_chart(const struct n_plus_one_config *cfg, const struct n_plus_one_result *r)
{
	json_t *labels = json_array(), *counted = json_array(), *predicted = json_array();
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		/* phase 6 ran every strategy once under the detector: the server's count for each */
		json_array_append_new(labels,
		                      json_string(n_plus_one_strategy_name((enum n_plus_one_strategy)s)));
		json_array_append_new(counted, json_integer(r->detect.units[s].statements));
		json_array_append_new(predicted, json_integer(n_plus_one_predicted_statements(
		                                         (enum n_plus_one_strategy)s, cfg->users)));
	}
	char title[96];
	snprintf(title, sizeof(title), "statements per strategy, %d users and their orders", cfg->users);
	return json_pack("{s:s,s:s,s:o,s:[{s:s,s:o},{s:s,s:o,s:b}],s:b}", "title", title, "unit",
	                 "statements", "labels", labels, "series", "name",
	                 "server's count (pg_stat_statements)", "values", counted, "name",
	                 "predicted: 1 + N, 1, 2, 1, 3", "values", predicted, "line", 1, "log", 0);
}

static const struct lab_phase_tell TELLS[N_PLUS_ONE_PHASES] = {
        {before_loop, after_loop},       {before_join, after_join},   {before_batched, after_batched},
        {before_network, after_network}, {before_width, after_width}, {before_detect, after_detect},
};

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "n-plus-one", QUESTION, N_PLUS_ONE_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab.opts.serve)
		return lab_fail(&lab, "this lab has no API to serve: run it without --serve");
	if (lab_probe(&lab, true, false) < 0)
		return lab.exit_code;
	struct n_plus_one_config cfg;
	n_plus_one_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.seed = lab.opts.seed;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	config_json(&lab, &cfg);
	char url[256], err[LAB_ERRLEN];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	lab_header(&lab,
	           "PostgreSQL %s · %s users with 0 to %d orders and 1 to %d addresses (seed %llu) · N = %d",
	           url, TERM_NUM(n_plus_one_max_users(&cfg), 0), cfg.orders_max, cfg.addresses_max,
	           (unsigned long long)cfg.seed, cfg.users);

	/* about 65 kB: the heap, not the stack */
	struct n_plus_one_result *result = calloc(1, sizeof(*result));
	if (!result)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, N_PLUS_ONE_PHASES, &cfg, result};
	cfg.hooks = lab_teller_hooks(&teller);
	if (n_plus_one_run(&cfg, result, err, sizeof(err)) < 0) {
		bool lost = result->server_lost;
		free(result);
		return lab_run_failed(&lab, lost ? "PostgreSQL" : NULL, err);
	}
	struct lab_verdict verdict;
	n_plus_one_judge(result, &verdict);
	lab_chart(&lab, statements_chart(&cfg, result));
	free(result);
	return lab_finish(&lab, &verdict);
}
