/*
 * n_plus_one_phases.c — the phases of lab-n-plus-one (see n_plus_one.h): each opens its own
 * connections (direct, or through common/proxy with a round trip and a bandwidth), measures
 * loads with n_plus_one_measure, and closes everything before it returns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "n_plus_one_internal.h"
#include "pg.h"
#include "proxy.h"

/*
 * A terminated backend's FATAL reaches an idle connection (the observer's, during a load) as a
 * notice, which libpq's default receiver prints: on Ctrl-C, when common/lab.c ends the lab's
 * backends, that line would follow the lab's own. The connection's next use fails with the
 * same message anyway; every other notice goes to libpq's receiver as before.
 */
/* libpq's default receiver, the same for every connection; set by the first npo_connect */
static PQnoticeReceiver libpq_receiver;

static void notice_cb(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	if (severity && !strcmp(severity, "FATAL"))
		return;
	if (libpq_receiver)
		libpq_receiver(arg, res);
}

PGconn *npo_connect(const char *pg_url, const char *const *keys, const char *const *vals, char *err,
                    size_t errlen)
{
	PGconn *conn = pg_connect_with(pg_url, keys, vals, err, errlen);
	if (conn) {
		PQnoticeReceiver was = PQsetNoticeReceiver(conn, notice_cb, NULL);
		if (was != notice_cb)
			libpq_receiver = was;
	}
	return conn;
}

PGconn *n_plus_one_connect_via(const char *pg_url, int port, char *err, size_t errlen)
{
	char portbuf[16];
	snprintf(portbuf, sizeof(portbuf), "%d", port);
	/* these override the URL's host: the user, password and database stay the URL's */
	const char *const keys[] = {"host", "hostaddr", "port", NULL};
	const char *const vals[] = {"127.0.0.1", "127.0.0.1", portbuf, NULL};
	return npo_connect(pg_url, keys, vals, err, errlen);
}

static void progress(const struct n_plus_one_config *cfg, const char *what, double done)
{
	if (cfg->progress_cb)
		cfg->progress_cb(what, done, cfg->progress_arg);
}

int n_plus_one_strategy_run(const struct n_plus_one_config *cfg, enum n_plus_one_strategy s,
                            struct n_plus_one_load *out, char *err, size_t errlen)
{
	PGconn *conn = npo_connect(cfg->pg_url, NULL, NULL, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	struct n_plus_one_watch *watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch)
		goto out;
	ret = n_plus_one_measure(conn, watch, s, cfg->users, cfg->repeats, cfg->threshold, out, err, errlen);
out:
	n_plus_one_watch_close(watch);
	PQfinish(conn);
	return ret;
}

int n_plus_one_detect_run(const struct n_plus_one_config *cfg, struct n_plus_one_detect *res, char *err,
                          size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->threshold = cfg->threshold;
	PGconn *conn = npo_connect(cfg->pg_url, NULL, NULL, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	struct n_plus_one_watch *watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch)
		goto out;
	for (int s = 0; s < NPO_STRATEGIES; s++) {
		struct n_plus_one_load load;
		if (n_plus_one_measure(conn, watch, (enum n_plus_one_strategy)s, cfg->users, 1,
		                       cfg->threshold, &load, err, errlen) < 0)
			goto out;
		res->units[s] = load.unit;
	}
	ret = 0;
out:
	n_plus_one_watch_close(watch);
	PQfinish(conn);
	return ret;
}

/* A proxy in front of the lab's server, and the lab's connection through it. */
static struct proxy *proxy_in_front(const struct n_plus_one_config *cfg, int delay_us, int64_t bandwidth,
                                    PGconn **conn, char *err, size_t errlen)
{
	char host[64];
	struct proxy_config pc;
	memset(&pc, 0, sizeof(pc));
	if (pg_url_endpoint(cfg->pg_url, host, sizeof(host), &pc.upstream_port, err, errlen) < 0) {
		char why[LAB_ERRLEN];
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "the latency proxy needs PostgreSQL over TCP (LAB_PG_URL): %s", why);
		return NULL;
	}
	pc.upstream_host = host;
	/* half the round trip each way */
	pc.delay_up_us = delay_us / 2;
	pc.delay_down_us = delay_us - delay_us / 2;
	pc.bandwidth_bps = bandwidth;
	struct proxy *p = proxy_start(&pc, err, errlen);
	if (!p)
		return NULL;
	*conn = n_plus_one_connect_via(cfg->pg_url, proxy_port(p), err, errlen);
	if (!*conn) {
		char why[LAB_ERRLEN];
		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "connecting through the latency proxy: %s", why);
		proxy_free(p);
		return NULL;
	}
	return p;
}

/* Up to net_repeats loads through proxy p within net_budget_us, with the bytes the proxy
 * delivered for one load. */
static int measure_via(const struct n_plus_one_config *cfg, struct proxy *p, PGconn *conn,
                       struct n_plus_one_watch *watch, enum n_plus_one_strategy s, int users,
                       struct n_plus_one_load *out, char *err, size_t errlen)
{
	struct proxy_stats before, after;
	proxy_stats(p, &before);
	if (npo_measure_budget(conn, watch, s, users, cfg->net_repeats, cfg->net_budget_us, cfg->threshold,
	                       out, err, errlen) < 0)
		return -1;
	proxy_stats(p, &after);
	out->proxy_bytes = (int64_t)(after.bytes_down - before.bytes_down) / out->repeats;
	return 0;
}

/*
 * Phase 4 runs one proxy per round trip, each with the lab's connection through it, and makes
 * the loads at the different round trips take turns: a load at no added delay, one at 0.5 ms,
 * one at 2 ms, then again. What a delay adds is then the difference between loads made under the
 * same conditions, not between one moment of a busy machine and another a second later.
 */
struct via {
	struct proxy *p;
	PGconn *conn;
};

static void vias_close(struct via *v, int n)
{
	for (int i = 0; i < n; i++) {
		PQfinish(v[i].conn);
		proxy_free(v[i].p);
	}
}

static int vias_open(const struct n_plus_one_config *cfg, struct via *v, char *err, size_t errlen)
{
	memset(v, 0, sizeof(*v) * (size_t)cfg->nrtts);
	for (int ri = 0; ri < cfg->nrtts; ri++) {
		v[ri].p = proxy_in_front(cfg, cfg->rtts_us[ri], 0, &v[ri].conn, err, errlen);
		if (!v[ri].p) {
			vias_close(v, ri);
			return -1;
		}
	}
	return 0;
}

/* SELECT 1 this many times at each delay for a measured round trip: 21 x 2 ms is only 42 ms */
#define ROUNDTRIP_SAMPLES 21

/* The median of ROUNDTRIP_SAMPLES bare round trips at each delay (SELECT 1, outside the schema,
 * so no unit of work counts it), the delays taking turns. */
static int roundtrips_measure(const struct via *v, int n, uint64_t *out, char *err, size_t errlen)
{
	uint64_t samples[N_PLUS_ONE_MAX_RTTS][ROUNDTRIP_SAMPLES];
	for (int i = 0; i < ROUNDTRIP_SAMPLES; i++)
		for (int ri = 0; ri < n; ri++) {
			uint64_t t0 = hist_now_us();
			PGresult *res = pg_query(v[ri].conn, "SELECT 1", 0, NULL, err, errlen);
			if (!res)
				return -1;
			samples[ri][i] = hist_now_us() - t0;
			PQclear(res);
		}
	for (int ri = 0; ri < n; ri++) {
		qsort(samples[ri], ROUNDTRIP_SAMPLES, sizeof(samples[ri][0]), npo_cmp_u64);
		out[ri] = samples[ri][ROUNDTRIP_SAMPLES / 2];
	}
	return 0;
}

/* Strategy k at size si at every delay, the delays taking turns: rounds of one load each, 2 at
 * least, then as many as fit in net_budget_us a cell (up to net_repeats). */
static int network_strategy(const struct n_plus_one_config *cfg, const struct via *v,
                            struct n_plus_one_watch *watch, struct n_plus_one_network *res, int si,
                            enum n_plus_one_strategy k, char *err, size_t errlen)
{
	struct npo_series sr[N_PLUS_ONE_MAX_RTTS];
	struct proxy_stats before[N_PLUS_ONE_MAX_RTTS], after;
	for (int ri = 0; ri < cfg->nrtts; ri++) {
		struct n_plus_one_load *load = &res->cells[si][ri].load[k];
		if (npo_series_start(&sr[ri], load, k, cfg->sizes[si], err, errlen) < 0)
			return -1;
		/* phases 1-3 showed two counted loads agree; here one count a cell shows the network
		 * changes nothing, for half the snapshots (18 cells in a quick run) */
		sr[ri].counted = 1;
		proxy_stats(v[ri].p, &before[ri]);
	}
	uint64_t started = hist_now_us(), budget = cfg->net_budget_us * (uint64_t)cfg->nrtts;
	for (int round = 0; round < cfg->net_repeats; round++) {
		for (int ri = 0; ri < cfg->nrtts; ri++)
			if (npo_series_add(&sr[ri], v[ri].conn, watch, cfg->threshold, err, errlen) < 0)
				return -1;
		if (round >= 1 && hist_now_us() - started >= budget)
			break;
	}
	for (int ri = 0; ri < cfg->nrtts; ri++) {
		npo_series_end(&sr[ri]);
		proxy_stats(v[ri].p, &after);
		sr[ri].out->proxy_bytes = (int64_t)(after.bytes_down - before[ri].bytes_down) / sr[ri].made;
	}
	return 0;
}

/* The cells of size si: what the delay predicts from the cell with none, the loop over the JOIN. */
static void network_predict(struct n_plus_one_network *res, int si)
{
	const struct n_plus_one_cell *base = &res->cells[si][0];
	for (int ri = 0; ri < res->nrtts; ri++) {
		struct n_plus_one_cell *cell = &res->cells[si][ri];
		/* what the delay added to a bare round trip, times the round trips each strategy makes */
		double added = (double)res->rtt_measured_us[ri] - (double)res->rtt_measured_us[0];
		double n = cell->users;
		cell->predicted_loop_us = base->load[NPO_LOOP].wall_us + (n + 1) * added;
		cell->predicted_join_us = base->load[NPO_JOIN].wall_us + 1.0 * added;
		cell->predicted_batched_us = base->load[NPO_BATCHED].wall_us + 2.0 * added;
		uint64_t join = cell->load[NPO_JOIN].wall_us;
		cell->loop_over_join = (double)cell->load[NPO_LOOP].wall_us / (double)(join ? join : 1);
	}
}

int n_plus_one_network_run(const struct n_plus_one_config *cfg, struct n_plus_one_network *res, char *err,
                           size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->nsizes = cfg->nsizes;
	res->nrtts = cfg->nrtts;
	if (cfg->nrtts < 1 || cfg->nrtts > N_PLUS_ONE_MAX_RTTS || cfg->nsizes < 1 ||
	    cfg->nsizes > N_PLUS_ONE_MAX_SIZES || cfg->rtts_us[0] != 0) {
		snprintf(err, errlen,
		         "bad network phase: 1 to %d sizes, 1 to %d round trips starting at 0 (the base of "
		         "the prediction)",
		         N_PLUS_ONE_MAX_SIZES, N_PLUS_ONE_MAX_RTTS);
		return -1;
	}
	struct via v[N_PLUS_ONE_MAX_RTTS];
	if (vias_open(cfg, v, err, errlen) < 0)
		return -1;
	int ret = -1;
	struct n_plus_one_watch *watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch || roundtrips_measure(v, cfg->nrtts, res->rtt_measured_us, err, errlen) < 0)
		goto out;
	for (int si = 0; si < cfg->nsizes; si++) {
		for (int ri = 0; ri < cfg->nrtts; ri++) {
			res->cells[si][ri].users = cfg->sizes[si];
			res->cells[si][ri].rtt_us = cfg->rtts_us[ri];
		}
		for (int k = 0; k < 3; k++) {
			char what[96];
			snprintf(what, sizeof(what), "%s, %d users",
			         n_plus_one_strategy_name((enum n_plus_one_strategy)k), cfg->sizes[si]);
			progress(cfg, what, (double)(si * 3 + k) / (cfg->nsizes * 3));
			if (network_strategy(cfg, v, watch, res, si, (enum n_plus_one_strategy)k, err,
			                     errlen) < 0)
				goto out;
		}
		network_predict(res, si);
	}
	for (int ri = 0; ri < cfg->nrtts; ri++) {
		struct proxy_stats st;
		proxy_stats(v[ri].p, &st);
		res->proxy_bytes_down += st.bytes_down;
	}
	ret = 0;
out:
	n_plus_one_watch_close(watch);
	vias_close(v, cfg->nrtts);
	return ret;
}

static const enum n_plus_one_strategy width_strategies[4] = {NPO_JOIN, NPO_BATCHED, NPO_JOIN2, NPO_BATCHED2};

int n_plus_one_width_run(const struct n_plus_one_config *cfg, struct n_plus_one_width *res, char *err,
                         size_t errlen)
{
	memset(res, 0, sizeof(*res));
	res->rtt_us = cfg->width_rtt_us;
	res->bandwidth = cfg->width_bandwidth;
	struct proxy *p = NULL;
	PGconn *conn = npo_connect(cfg->pg_url, NULL, NULL, err, errlen);
	if (!conn)
		return -1;
	int ret = -1;
	struct n_plus_one_watch *watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
	if (!watch)
		goto out;
	for (int i = 0; i < 4; i++) {
		progress(cfg, n_plus_one_strategy_name(width_strategies[i]), i / 8.0);
		if (n_plus_one_measure(conn, watch, width_strategies[i], cfg->users, cfg->repeats,
		                       cfg->threshold, &res->direct[i], err, errlen) < 0)
			goto out;
	}
	n_plus_one_watch_close(watch);
	watch = NULL;
	PQfinish(conn);
	conn = NULL;
	if (cfg->width_rtt_us > 0 || cfg->width_bandwidth > 0) {
		p = proxy_in_front(cfg, cfg->width_rtt_us, cfg->width_bandwidth, &conn, err, errlen);
		if (!p)
			goto out;
		watch = n_plus_one_watch_open(cfg->pg_url, err, errlen);
		if (!watch)
			goto out;
		for (int i = 0; i < 4; i++) {
			progress(cfg, n_plus_one_strategy_name(width_strategies[i]), (4 + i) / 8.0);
			if (measure_via(cfg, p, conn, watch, width_strategies[i], cfg->users,
			                &res->network[i], err, errlen) < 0)
				goto out;
		}
	}
	/* one has-many: the batched load pays one more round trip, the JOIN its repeated bytes */
	const struct n_plus_one_load *join = &res->direct[0], *batched = &res->direct[1];
	int64_t jb = n_plus_one_received(join), bb = n_plus_one_received(batched);
	if (res->rtt_us > 0 && jb > bb)
		res->break_even_bandwidth = (double)(jb - bb) / (res->rtt_us / 1e6);
	ret = 0;
out:
	n_plus_one_watch_close(watch);
	PQfinish(conn);
	proxy_free(p);
	return ret;
}
