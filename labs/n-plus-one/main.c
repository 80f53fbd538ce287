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
 * Run it: make lab-n-plus-one (ARGS="--quick", "--json", "--step", "--seed 7").
 * Limits: one machine; the network is the proxy's added delay over loopback, not a real link.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lab.h"
#include "n_plus_one.h"
#include "pg.h"

#define QUESTION "What is the N+1 query problem?"

/* What the largest round trip added to each strategy (its time there minus its time with no
 * added delay) must look like (N + 1) round trips for the loop and 1 for the JOIN. Margins for a
 * busy machine, which slows the loop at no added delay (each of its round trips waits for the
 * scheduler) and the JOIN anywhere: the loop must have gained at least half of (N + 1) x what the
 * delay added to a bare round trip, and at least 10 times what the JOIN gained. */
#define MIN_LOOP_TRIPS_SHARE    0.5
#define MIN_LOOP_OVER_JOIN_GAIN 10.0

static const char *us(char *buf, double v)
{
	return term_fmt_us(buf, 32, v);
}

static const char *num(char *buf, double v, int decimals)
{
	return term_fmt_num(buf, 32, v, decimals);
}

/* "512 B", "12.3 kB", "1.25 MB": three significant digits, powers of 1000. */
static const char *bytes(char *buf, double v)
{
	if (v < 1000)
		snprintf(buf, 32, "%.0f B", v);
	else if (v < 1e6)
		snprintf(buf, 32, v < 1e4 ? "%.2f kB" : v < 1e5 ? "%.1f kB" : "%.0f kB", v / 1e3);
	else
		snprintf(buf, 32, v < 1e7 ? "%.2f MB" : v < 1e8 ? "%.1f MB" : "%.0f MB", v / 1e6);
	return buf;
}

/* A round trip the proxy adds: "0", "+0.5 ms", "+2 ms". */
static const char *rtt(char *buf, int rtt_us)
{
	if (rtt_us == 0)
		snprintf(buf, 32, "0");
	else
		snprintf(buf, 32, "+%g ms", rtt_us / 1000.0);
	return buf;
}

/* A bandwidth in bytes per second as a link is named: "100 Mbit/s". */
static const char *link_speed(char *buf, double bytes_per_s)
{
	double mbit = bytes_per_s * 8 / 1e6;
	if (mbit >= 1000)
		snprintf(buf, 32, "%g Gbit/s", mbit / 1000);
	else
		snprintf(buf, 32, "%.3g Mbit/s", mbit);
	return buf;
}

/* What a load received: the kernel's count when the connection is TCP, else the protocol's. */
static int64_t received(const struct n_plus_one_load *l)
{
	return l->wire_bytes >= 0 ? l->wire_bytes : l->protocol_bytes;
}

/* One load in the --json document; the digest as hex (a JSON integer cannot hold all 64 bits). */
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

static const struct term_col load_cols[] = {{"", 16, 'l'},    {"statements", 10, 'r'}, {"predicted", 9, 'r'},
                                            {"rows", 7, 'r'}, {"received", 9, 'r'},    {"wall time", 9, 'r'}};

static void print_load_row(const struct term *t, const struct n_plus_one_load *l)
{
	char b[5][32];
	const char *row[] = {n_plus_one_strategy_name(l->strategy), num(b[0], (double)l->statements, 0),
	                     num(b[1], (double)l->predicted, 0),    num(b[2], (double)l->rows, 0),
	                     bytes(b[3], (double)received(l)),      us(b[4], (double)l->wall_us)};
	term_table_row(t, 2, load_cols, 6, row);
}

static void print_loads(const struct term *t, const struct n_plus_one_load *loads, int n)
{
	term_table_header(t, 2, load_cols, 6);
	for (int i = 0; i < n; i++)
		print_load_row(t, &loads[i]);
}

/* The statement shapes the server ran in the load, most called first. */
static void print_shapes(const struct term *t, const struct n_plus_one_unit *u)
{
	for (int i = 0; i < u->nshapes; i++)
		term_printf(t, "  %s%6lld x%s %s\n", term_bold(t), (long long)u->shape[i].calls,
		            term_reset(t), u->shape[i].query);
}

static void print_phase1(struct lab *lab, const struct n_plus_one_load *loop)
{
	const struct term *t = &lab->term;
	print_loads(t, loop, 1);
	term_printf(t,
	            "  %sstatements: the server's count (pg_stat_statements, diffed around the load); time: "
	            "best of %d loads%s\n",
	            term_dim(t), loop->repeats, term_reset(t));
	term_printf(t, "  one entry per statement shape (constants become $1), calls in this load:\n");
	print_shapes(t, &loop->unit);
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

static void print_phase3(struct lab *lab, const struct n_plus_one_load *loads)
{
	const struct term *t = &lab->term;
	print_loads(t, loads, 3);
	print_received_note(t, loads, 3);
	double max = 0;
	for (int i = 0; i < 3; i++)
		if (loads[i].wall_us > max)
			max = (double)loads[i].wall_us;
	term_printf(t, "\n");
	for (int i = 0; i < 3; i++) {
		char bar[256], b[32];
		term_printf(t, "  %-16s %s %s\n", n_plus_one_strategy_name(loads[i].strategy),
		            term_bar(bar, sizeof(bar), (double)loads[i].wall_us, max, 40),
		            us(b, (double)loads[i].wall_us));
	}
	bool same = loads[0].digest == loads[1].digest && loads[1].digest == loads[2].digest;
	char b[32];
	term_printf(t, "  %s%s%s: digest %016llx %s (%d users and %s orders built as objects)\n",
	            same ? term_green(t) : term_red(t), same ? "✔ same data" : "✘ different data",
	            term_reset(t), (unsigned long long)loads[0].digest, same ? "for all three" : "differs",
	            loads[0].users, num(b, loads[0].orders, 0));
}

static void print_network(struct lab *lab, const struct n_plus_one_config *cfg,
                          const struct n_plus_one_network *n)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"users", 5, 'r'},    {"RTT added", 9, 'r'},  {"measured", 8, 'r'},
	                          {"N+1 loop", 9, 'r'}, {"predicted", 9, 'r'},  {"JOIN", 9, 'r'},
	                          {"batched", 9, 'r'},  {"N+1 / JOIN", 10, 'r'}};
	term_table_header(t, 2, cols, 8);
	for (int si = 0; si < n->nsizes; si++) {
		for (int ri = 0; ri < n->nrtts; ri++) {
			const struct n_plus_one_cell *c = &n->cells[si][ri];
			char b[8][32];
			snprintf(b[7], 32, "%.0fx", c->loop_over_join);
			const char *row[] = {ri == 0 ? num(b[0], c->users, 0) : "",
			                     rtt(b[1], c->rtt_us),
			                     us(b[2], (double)n->rtt_measured_us[ri]),
			                     us(b[3], (double)c->load[NPO_LOOP].wall_us),
			                     ri == 0 ? "" : us(b[4], c->predicted_loop_us),
			                     us(b[5], (double)c->load[NPO_JOIN].wall_us),
			                     us(b[6], (double)c->load[NPO_BATCHED].wall_us),
			                     b[7]};
			term_table_row(t, 2, cols, 8, row);
		}
	}
	/* the chart: the largest size, the loop against the JOIN, at each round trip */
	int si = n->nsizes - 1;
	double max = 0;
	for (int ri = 0; ri < n->nrtts; ri++)
		if ((double)n->cells[si][ri].load[NPO_LOOP].wall_us > max)
			max = (double)n->cells[si][ri].load[NPO_LOOP].wall_us;
	term_printf(t, "\n  %s users, wall time of one load:\n",
	            num((char[32]){0}, n->cells[si][0].users, 0));
	for (int ri = 0; ri < n->nrtts; ri++) {
		const struct n_plus_one_cell *c = &n->cells[si][ri];
		char bar[256], b[2][32];
		term_printf(t, "  %-7s N+1   %s %s\n", rtt(b[0], c->rtt_us),
		            term_bar(bar, sizeof(bar), (double)c->load[NPO_LOOP].wall_us, max, 40),
		            us(b[1], (double)c->load[NPO_LOOP].wall_us));
		term_printf(t, "  %-7s JOIN  %s %s\n", "",
		            term_bar(bar, sizeof(bar), (double)c->load[NPO_JOIN].wall_us, max, 40),
		            us(b[1], (double)c->load[NPO_JOIN].wall_us));
	}
	term_printf(t,
	            "  %smeasured: a bare round trip through the proxy (median of 21 SELECT 1). predicted: "
	            "the loop with no\n  added delay + (N + 1) x what the delay added to that round trip. "
	            "Best of as many loads as\n  fit in %s a cell, 2 to %d.%s\n",
	            term_dim(t), us((char[32]){0}, (double)cfg->net_budget_us), cfg->net_repeats,
	            term_reset(t));
}

static void print_width(struct lab *lab, const struct n_plus_one_config *cfg,
                        const struct n_plus_one_width *w, const struct n_plus_one_data *d)
{
	const struct term *t = &lab->term;
	char net[48], b[8][32];
	snprintf(net, sizeof(net), "%s, %s", rtt(b[0], w->rtt_us), link_speed(b[1], (double)w->bandwidth));
	struct term_col cols[] = {{"", 23, 'l'},        {"statements", 10, 'r'}, {"rows", 6, 'r'},
	                          {"received", 9, 'r'}, {"repeated", 9, 'r'},    {"loopback", 8, 'r'},
	                          {net, 17, 'r'}};
	term_table_header(t, 2, cols, 7);
	for (int i = 0; i < 4; i++) {
		const struct n_plus_one_load *l = &w->direct[i], *nl = &w->network[i];
		const char *row[] = {n_plus_one_strategy_name(l->strategy),
		                     num(b[0], (double)l->statements, 0),
		                     num(b[1], (double)l->rows, 0),
		                     bytes(b[2], (double)received(l)),
		                     l->repeated_bytes ? bytes(b[3], (double)l->repeated_bytes) : "0",
		                     us(b[4], (double)l->wall_us),
		                     nl->repeats ? us(b[5], (double)nl->wall_us) : "—"};
		term_table_row(t, 2, cols, 7, row);
	}
	const struct n_plus_one_load *join = &w->direct[0], *batched = &w->direct[1], *join2 = &w->direct[2],
	                             *batched2 = &w->direct[3];
	term_printf(
	        t,
	        "  the JOIN sends each user's columns (a %d-byte bio among them) again on every order row: "
	        "%s of its %s\n",
	        cfg->bio_bytes, bytes(b[0], (double)join->repeated_bytes),
	        bytes(b[1], (double)received(join)));
	term_printf(t,
	            "  two has-many: orders x addresses per user = %s rows for %s orders and %s addresses "
	            "(%s batched)\n",
	            num(b[0], (double)join2->rows, 0), num(b[1], (double)d->orders, 0),
	            num(b[2], (double)d->addresses, 0), num(b[3], (double)batched2->rows, 0));
	if (w->break_even_bandwidth > 0)
		term_printf(
		        t,
		        "  batched wins when the JOIN's extra %s take longer to arrive than one more round "
		        "trip: "
		        "at %s,\n  on links under %s (predicted); measured at %s, %s: JOIN %s, batched %s\n",
		        bytes(b[0], (double)(received(join) - received(batched))), rtt(b[1], w->rtt_us),
		        link_speed(b[2], w->break_even_bandwidth), rtt(b[3], w->rtt_us),
		        link_speed(b[4], (double)w->bandwidth), us(b[5], (double)w->network[0].wall_us),
		        us(b[6], (double)w->network[1].wall_us));
}

static void print_detect(struct lab *lab, const struct n_plus_one_detect *d)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"unit of work", 23, 'l'},
	                          {"statements", 10, 'r'},
	                          {"shapes", 6, 'r'},
	                          {"most repeated", 13, 'r'},
	                          {"detector", 10, 'l'}};
	term_table_header(t, 2, cols, 5);
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		const struct n_plus_one_unit *u = &d->units[s];
		char b[3][32], verdict[64];
		snprintf(verdict, sizeof(verdict), "%s%s%s", u->flagged ? term_red(t) : "",
		         u->flagged ? "N+1 flagged" : "silent", u->flagged ? term_reset(t) : "");
		const char *row[] = {n_plus_one_strategy_name((enum n_plus_one_strategy)s),
		                     num(b[0], (double)u->statements, 0), num(b[1], u->shapes, 0),
		                     num(b[2], u->nshapes ? (double)u->shape[0].calls : 0, 0), verdict};
		term_table_row(t, 2, cols, 5, row);
	}
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		const struct n_plus_one_unit *u = &d->units[s];
		if (!u->flagged)
			continue;
		term_printf(
		        t, "  %sflagged%s in \"%s\": one statement shape ran %lld times (threshold %d):\n",
		        term_bold(t), term_reset(t), n_plus_one_strategy_name((enum n_plus_one_strategy)s),
		        (long long)u->shape[0].calls, d->threshold);
		term_printf(t, "    %s\n", u->shape[0].query);
		for (int i = 1; i < u->nshapes; i++)
			term_printf(t, "    beside %lld x %s\n", (long long)u->shape[i].calls,
			            u->shape[i].query);
		term_printf(t, "    fix: load the relation for all of them at once (WHERE user_id = ANY($1), "
		               "or a JOIN)\n");
	}
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

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "n-plus-one", QUESTION, 6, argc, argv) < 0)
		return lab.exit_code;
	struct n_plus_one_config cfg;
	n_plus_one_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.seed = lab.opts.seed;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;

	char err[LAB_ERRLEN];
	PGconn *probe = pg_connect(cfg.pg_url, err, sizeof(err));
	if (!probe)
		return lab_env_error(&lab, "PostgreSQL", cfg.pg_url, err);
	PQfinish(probe);
	if (lab.opts.serve)
		return lab_fail(&lab, "this lab has no API to serve: run it without --serve");

	if (n_plus_one_setup(&cfg, err, sizeof(err)) < 0)
		return lab_fail(&lab, "cannot create schema " N_PLUS_ONE_SCHEMA ": %s", err);
	struct n_plus_one_data data, page;
	if (n_plus_one_data_count(&cfg, n_plus_one_max_users(&cfg), &data, err, sizeof(err)) < 0 ||
	    n_plus_one_data_count(&cfg, cfg.users, &page, err, sizeof(err)) < 0)
		goto setup_failed;

	char url[256], b[8][32];
	pg_url_redact(cfg.pg_url, url, sizeof(url));
	lab_config_set(&lab, "data_users", json_integer(n_plus_one_max_users(&cfg)));
	lab_config_set(&lab, "users", json_integer(cfg.users));
	lab_config_set(&lab, "seed", json_integer((json_int_t)cfg.seed));
	lab_config_set(&lab, "orders_per_user", json_pack("[i,i]", 0, cfg.orders_max));
	lab_config_set(&lab, "addresses_per_user", json_pack("[i,i]", 1, cfg.addresses_max));
	lab_config_set(&lab, "bio_bytes", json_integer(cfg.bio_bytes));
	lab_config_set(&lab, "repeats", json_integer(cfg.repeats));
	lab_config_set(&lab, "network_repeats_max", json_integer(cfg.net_repeats));
	lab_config_set(&lab, "network_budget_ms", json_real(cfg.net_budget_us / 1000.0));
	json_t *sizes = json_array(), *rtts = json_array();
	for (int i = 0; i < cfg.nsizes; i++)
		json_array_append_new(sizes, json_integer(cfg.sizes[i]));
	for (int i = 0; i < cfg.nrtts; i++)
		json_array_append_new(rtts, json_real(cfg.rtts_us[i] / 1000.0));
	lab_config_set(&lab, "network_users", sizes);
	lab_config_set(&lab, "network_rtt_ms", rtts);
	lab_config_set(&lab, "detector_threshold", json_integer(cfg.threshold));
	lab_config_set(&lab, "quick", json_boolean(lab.opts.quick));
	lab_header(&lab, "PostgreSQL %s · %s users, %s orders, %s addresses (seed %llu) · N = %d", url,
	           num(b[0], (double)data.users, 0), num(b[1], (double)data.orders, 0),
	           num(b[2], (double)data.addresses, 0), (unsigned long long)cfg.seed, cfg.users);

	struct n_plus_one_load loads[3];
	struct n_plus_one_network *net = calloc(1, sizeof(*net));
	struct n_plus_one_width *width = calloc(1, sizeof(*width));
	struct n_plus_one_detect det;
	int ret = LAB_EXIT_ENV;
	if (!net || !width) {
		snprintf(err, sizeof(err), "out of memory");
		goto failed;
	}

	lab_phase(&lab, "The ORM-style loop: %d users, then each user's orders in its own query", cfg.users);
	if (n_plus_one_strategy_run(&cfg, NPO_LOOP, &loads[0], err, sizeof(err)) < 0)
		goto failed;
	print_phase1(&lab, &loads[0]);
	lab_phase_metrics(
	        &lab, "loop",
	        json_pack("{s:o,s:o}", "load", load_json(&loads[0]), "server", unit_json(&loads[0].unit)));

	lab_phase(&lab, "The JOIN: users LEFT JOIN orders, one statement");
	if (n_plus_one_strategy_run(&cfg, NPO_JOIN, &loads[1], err, sizeof(err)) < 0)
		goto failed;
	print_loads(&lab.term, loads, 2);
	term_printf(&lab.term,
	            "  %s rows: one per order, and one for each of the %lld users without orders "
	            "(LEFT JOIN)\n",
	            num(b[0], (double)loads[1].rows, 0), (long long)page.users_without_orders);
	lab_phase_metrics(&lab, "join", json_pack("{s:o}", "load", load_json(&loads[1])));

	lab_phase(
	        &lab,
	        "The batched load (prefetch_related, includes): users, then orders WHERE user_id = ANY($1)");
	if (n_plus_one_strategy_run(&cfg, NPO_BATCHED, &loads[2], err, sizeof(err)) < 0)
		goto failed;
	print_phase3(&lab, loads);
	bool same = loads[0].digest == loads[1].digest && loads[1].digest == loads[2].digest;
	lab_phase_metrics(&lab, "batched",
	                  json_pack("{s:o,s:b}", "load", load_json(&loads[2]), "same_data", same));

	char rtts_text[64] = "";
	for (int i = 0; i < cfg.nrtts; i++)
		snprintf(rtts_text + strlen(rtts_text), sizeof(rtts_text) - strlen(rtts_text), "%s%g",
		         i ? ", " : "", cfg.rtts_us[i] / 1000.0);
	lab_phase(&lab, "A real round trip: the three through a latency proxy adding %s ms of RTT",
	          rtts_text);
	if (n_plus_one_network_run(&cfg, net, err, sizeof(err)) < 0)
		goto failed;
	term_progress_clear(&lab.term);
	print_network(&lab, &cfg, net);
	json_t *cells = json_array();
	for (int si = 0; si < net->nsizes; si++)
		for (int ri = 0; ri < net->nrtts; ri++) {
			const struct n_plus_one_cell *c = &net->cells[si][ri];
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
	json_t *measured = json_array();
	for (int ri = 0; ri < net->nrtts; ri++)
		json_array_append_new(measured, json_real(net->rtt_measured_us[ri] / 1000.0));
	lab_phase_metrics(&lab, "network",
	                  json_pack("{s:o,s:o}", "rtt_measured_ms", measured, "cells", cells));

	lab_phase(&lab,
	          "What the JOIN pays instead: repeated columns, and rows multiplied across two has-many");
	if (n_plus_one_width_run(&cfg, width, err, sizeof(err)) < 0)
		goto failed;
	term_progress_clear(&lab.term);
	print_width(&lab, &cfg, width, &page);
	json_t *wd = json_array(), *wn = json_array();
	for (int i = 0; i < 4; i++) {
		json_array_append_new(wd, load_json(&width->direct[i]));
		json_array_append_new(wn, load_json(&width->network[i]));
	}
	lab_phase_metrics(&lab, "width",
	                  json_pack("{s:o,s:o,s:f,s:I,s:f}", "direct", wd, "network", wn, "network_rtt_ms",
	                            width->rtt_us / 1000.0, "network_bandwidth_bytes_per_s",
	                            (json_int_t)width->bandwidth, "break_even_bytes_per_s",
	                            width->break_even_bandwidth));

	lab_phase(&lab,
	          "A detector on the server's counts: the same statement more than %d times in one unit of "
	          "work",
	          cfg.threshold);
	if (n_plus_one_detect_run(&cfg, &det, err, sizeof(err)) < 0)
		goto failed;
	print_detect(&lab, &det);
	json_t *units = json_object();
	for (int s = 0; s < NPO_STRATEGIES; s++)
		json_object_set_new(units, n_plus_one_strategy_name((enum n_plus_one_strategy)s),
		                    unit_json(&det.units[s]));
	lab_phase_metrics(&lab, "detector",
	                  json_pack("{s:i,s:o}", "threshold", det.threshold, "units", units));

	if (n_plus_one_teardown(&cfg, err, sizeof(err)) < 0)
		goto failed;

	/* The verdict: each claim against its numbers. */
	const struct n_plus_one_cell *c0 = &net->cells[net->nsizes - 1][0];
	const struct n_plus_one_cell *cr = &net->cells[net->nsizes - 1][net->nrtts - 1];
	bool detector_right = det.units[NPO_LOOP].flagged > 0;
	for (int s = NPO_JOIN; s < NPO_STRATEGIES; s++)
		if (det.units[s].flagged)
			detector_right = false;
	bool network_counts = true;
	for (int si = 0; si < net->nsizes; si++)
		for (int ri = 0; ri < net->nrtts; ri++)
			for (int k = 0; k < 3; k++)
				if (net->cells[si][ri].load[k].statements !=
				    net->cells[si][ri].load[k].predicted)
					network_counts = false;
	double loop_gain = (double)cr->load[NPO_LOOP].wall_us - (double)c0->load[NPO_LOOP].wall_us;
	double join_gain = (double)cr->load[NPO_JOIN].wall_us - (double)c0->load[NPO_JOIN].wall_us;
	double trip_gain = (double)net->rtt_measured_us[net->nrtts - 1] - (double)net->rtt_measured_us[0];
	char whybuf[256];
	const char *why = NULL;
	if (!network_counts) {
		why = "through the proxy the server counted other statements than predicted (see --json)";
	} else if (loads[0].statements != loads[0].predicted || loads[1].statements != 1 ||
	           loads[2].statements != 2) {
		snprintf(whybuf, sizeof(whybuf),
		         "the server counted %lld, %lld and %lld statements, not %lld, 1 and 2",
		         (long long)loads[0].statements, (long long)loads[1].statements,
		         (long long)loads[2].statements, (long long)loads[0].predicted);
		why = whybuf;
	} else if (!same || width->direct[2].digest != width->direct[3].digest) {
		why = "the strategies did not return the same data";
	} else if (loop_gain < MIN_LOOP_TRIPS_SHARE * (cr->users + 1) * trip_gain ||
	           loop_gain < MIN_LOOP_OVER_JOIN_GAIN * join_gain) {
		snprintf(whybuf, sizeof(whybuf),
		         "at %s RTT the loop gained %s and the JOIN %s: not %d round trips of +%s against 1",
		         rtt(b[0], cr->rtt_us), us(b[5], loop_gain), us(b[6], join_gain), cr->users + 1,
		         us(b[7], trip_gain));
		why = whybuf;
	} else if (width->direct[2].rows <= width->direct[3].rows ||
	           received(&width->direct[0]) <= received(&width->direct[1])) {
		why = "the JOINs did not receive more rows and bytes than the batched loads";
	} else if (!detector_right) {
		why = "the detector did not flag the loop alone";
	}
	int fixes_flagged = 0;
	for (int s = NPO_JOIN; s < NPO_STRATEGIES; s++)
		fixes_flagged += det.units[s].flagged > 0;
	ret = lab_verdict(
	        &lab, why == NULL,
	        "N+1 runs a statement per parent row where a JOIN runs 1 and a batched load 2, each "
	        "paying a round trip",
	        "%s%sserver counts %lld / %lld / %lld, same data (digest %016llx); at %s RTT and %s users "
	        "the loop took %s (+%s = %.0f x the +%s a bare round trip gained), the JOIN %s (+%s); the "
	        "detector flagged "
	        "%s and %d of the %d fixes",
	        why ? why : "", why ? ". " : "", (long long)loads[0].statements,
	        (long long)loads[1].statements, (long long)loads[2].statements,
	        (unsigned long long)loads[0].digest, rtt(b[1], cr->rtt_us), num(b[4], cr->users, 0),
	        us(b[2], (double)cr->load[NPO_LOOP].wall_us), us(b[5], loop_gain > 0 ? loop_gain : 0),
	        trip_gain > 0 ? loop_gain / trip_gain : 0, us(b[6], trip_gain),
	        us(b[3], (double)cr->load[NPO_JOIN].wall_us), us(b[7], join_gain > 0 ? join_gain : 0),
	        det.units[NPO_LOOP].flagged ? "the loop" : "not the loop", fixes_flagged, NPO_STRATEGIES - 1);
	goto out;
setup_failed : {
	char terr[LAB_ERRLEN];
	n_plus_one_teardown(&cfg, terr, sizeof(terr));
}
	return lab_fail(&lab, "%s", err);
failed:
	term_progress_clear(&lab.term);
	{
		char terr[LAB_ERRLEN];
		n_plus_one_teardown(&cfg, terr, sizeof(terr));
	}
	ret = lab_fail(&lab, "%s", err);
out:
	free(net);
	free(width);
	return ret;
}
