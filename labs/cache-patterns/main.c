/*
 * lab-cache-patterns — "What caching patterns do you know? Cache-aside, write-through,
 * write-behind: each has different consistency and failure implications."
 *
 * What you will see: a product's price in PostgreSQL cached in Redis, read and written by
 * concurrent clients through each pattern; cache-aside's stale-for-good race scripted and under
 * load, and its three fixes; update-on-write's two writers; write-through's second write failing
 * in both orders; write-behind's latency, coalescing, and a crash of a throwaway redis-server with
 * and without AOF; then one table of every pattern.
 *
 * Run it: make lab-cache-patterns (ARGS="--quick", "--json", "--step", "--seed 7").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_patterns.h"
#include "lab.h"
#include "pg.h"
#include "redis.h"

#define QUESTION                                                                                             \
	"What caching patterns do you know? Cache-aside, write-through, write-behind: each has different "   \
	"consistency and failure implications."

static const struct term_col LOAD_COLS[] = {
        {"under load", 22, 'l'}, {"read p50", 9, 'r'},     {"write p50", 9, 'r'},   {"reads", 6, 'r'},
        {"misses", 6, 'r'},      {"stale reads", 11, 'r'}, {"keys stale", 10, 'r'}, {"later", 5, 'r'}};
#define NLOAD_COLS 8

static void load_row(struct lab *lab, enum cp_pattern p, const struct cp_load_result *l)
{
	char stale[32], later[16];
	snprintf(stale, sizeof(stale), "%d/%d", l->stale_keys, l->keys);
	snprintf(later, sizeof(later), "%d", l->stale_keys_later);
	const char *row[] = {cp_pattern_name(p),
	                     TERM_US((double)hist_percentile(&l->read_lat, 50)),
	                     TERM_US((double)hist_percentile(&l->write_lat, 50)),
	                     TERM_NUM((double)l->reads, 0),
	                     TERM_NUM((double)l->misses, 0),
	                     TERM_NUM((double)l->stale_reads, 0),
	                     stale,
	                     later};
	term_table_row(&lab->term, 2, LOAD_COLS, NLOAD_COLS, row);
}

static json_t *load_json(const struct cp_load_result *l)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:i,s:i,s:f,s:f}", "reads", (json_int_t)l->reads,
	                 "writes", (json_int_t)l->writes, "misses", (json_int_t)l->misses, "stale_reads",
	                 (json_int_t)l->stale_reads, "rejected_sets", (json_int_t)l->rejected, "db_writes",
	                 (json_int_t)l->db_writes, "keys", l->keys, "stale_keys", l->stale_keys,
	                 "stale_keys_later", l->stale_keys_later, "read_p50_ms",
	                 hist_percentile(&l->read_lat, 50) / 1000.0, "write_p50_ms",
	                 hist_percentile(&l->write_lat, 50) / 1000.0);
}

static json_t *scripted_json(const struct cp_scripted *s)
{
	return json_pack("{s:i,s:i,s:i}", "races", s->races, "stale", s->stale, "stale_later",
	                 s->stale_later);
}

/* ---- 1. cache-aside ---- */

static void aside_before(struct lab *lab, const void *c)
{
	const struct cache_patterns_config *cfg = c;
	lab_phase(lab, "cache-aside: a %d ms gap injected between a miss's DB read and its SET", cfg->gap_ms);
}

static void aside_after(struct lab *lab, const void *c, const void *result)
{
	const struct cache_patterns_config *cfg = c;
	const struct cache_patterns_result *r = result;
	const struct term *t = &lab->term;
	term_printf(t,
	            "  scripted: the lab holds the reader in its gap while the writer's UPDATE+DEL runs:\n"
	            "    %s%d/%d keys stale%s, still %d after %d ms (no TTL: stale for good)\n",
	            term_red(t), r->aside_race.stale, r->aside_race.races, term_reset(t),
	            r->aside_race.stale_later, cfg->ttl_ms + CP_TTL_MARGIN_MS);
	term_printf(
	        t,
	        "  update-on-write: writer 1 held between COMMIT and SET while writer 2 commits and SETs:\n"
	        "    %s%d/%d keys stale%s (the older value written last)\n",
	        term_red(t), r->update_race.stale, r->update_race.races, term_reset(t));
	term_table_header(t, 2, LOAD_COLS, NLOAD_COLS);
	load_row(lab, CP_ASIDE, &r->load[CP_ASIDE]);
	load_row(lab, CP_UPDATE, &r->load[CP_UPDATE]);
	term_printf(t,
	            "  %s(p50s carry the injected %d ms: cache-aside's reads that miss, update-on-write's "
	            "writes.\n  Keys stale under random load: luck, shown, not judged.)%s\n",
	            term_dim(t), cfg->gap_ms, term_reset(t));
	lab_phase_metrics(lab, "aside",
	                  json_pack("{s:o,s:o,s:o,s:o}", "scripted", scripted_json(&r->aside_race),
	                            "update_scripted", scripted_json(&r->update_race), "load",
	                            load_json(&r->load[CP_ASIDE]), "update_load",
	                            load_json(&r->load[CP_UPDATE])));
}

/* ---- 2. the fixes ---- */

static void fixes_before(struct lab *lab, const void *c)
{
	const struct cache_patterns_config *cfg = c;
	lab_phase(lab, "the fixes, the same race: TTL %d ms, a second DEL %d ms later, a versioned set (Lua)",
	          cfg->ttl_ms, cfg->dd_delay_ms);
}

static void fixes_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct cache_patterns_result *r = result;
	const struct term *t = &lab->term;
	static const char *const names[3] = {"short TTL", "delayed second DEL", "versioned set + tombstone"};
	term_printf(
	        t, "  scripted races, keys stale:  right after  ·  a moment later (TTL expired / 2nd DEL)\n");
	for (int f = 0; f < 3; f++)
		term_printf(t, "    %-26s %s%4d/%d%s  ·  %s%d%s\n", names[f],
		            r->fix[f].stale ? term_yellow(t) : "", r->fix[f].stale, r->fix[f].races,
		            term_reset(t), term_green(t), r->fix[f].stale_later, term_reset(t));
	term_table_header(t, 2, LOAD_COLS, NLOAD_COLS);
	for (int p = CP_ASIDE_TTL; p <= CP_ASIDE_VERSION; p++)
		load_row(lab, (enum cp_pattern)p, &r->load[p]);
	term_printf(t, "  versioned set: %s older SETs refused by the script\n",
	            TERM_NUM((double)r->load[CP_ASIDE_VERSION].rejected, 0));
	json_t *m = json_object();
	static const char *const ids[3] = {"ttl", "double_delete", "versioned"};
	for (int f = 0; f < 3; f++)
		json_object_set_new(m, ids[f],
		                    json_pack("{s:o,s:o}", "scripted", scripted_json(&r->fix[f]), "load",
		                              load_json(&r->load[CP_ASIDE_TTL + f])));
	lab_phase_metrics(lab, "fixes", m);
}

/* ---- 3. write-through ---- */

static void through_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab, "write-through: its cost, and the second of its two writes failing");
}

static void through_after(struct lab *lab, const void *c, const void *result)
{
	(void)c;
	const struct cache_patterns_result *r = result;
	const struct term *t = &lab->term;
	term_table_header(t, 2, LOAD_COLS, NLOAD_COLS);
	load_row(lab, CP_ASIDE, &r->load[CP_ASIDE]);
	load_row(lab, CP_THROUGH, &r->load[CP_THROUGH]);
	struct term_col cols[] = {{"order", 12, 'l'},
	                          {"fails", 22, 'l'},
	                          {"told ok", 7, 'r'},
	                          {"cache≠DB", 8, 'r'},
	                          {"what is left", 36, 'l'}};
	static const char *const order[] = {"cache first", "DB first"};
	static const char *const fault[] = {"PostgreSQL refuses", "Redis cut (proxy)"};
	static const char *const left[2][2] = {
	        {"cache holds a value never committed", "nothing written: consistent"},
	        {"nothing written: consistent", "row committed, cache stale (old)"}};
	term_printf(t, "\n");
	term_table_header(t, 2, cols, 5);
	json_t *m = json_object();
	for (int o = 0; o < CP_ORDERS; o++)
		for (int f = 0; f < CP_FAULTS; f++) {
			const struct cp_through_cell *x = &r->through[o][f];
			char ok[16], inc[16];
			snprintf(ok, sizeof(ok), "%d/%d", x->told_ok, x->writes);
			snprintf(inc, sizeof(inc), "%d", x->inconsistent);
			const char *row[] = {order[o], fault[f], ok, inc, left[o][f]};
			term_table_row(t, 2, cols, 5, row);
			char id[64];
			snprintf(id, sizeof(id), "%s_%s", o ? "db_first" : "cache_first",
			         f ? "redis_cut" : "db_refuses");
			json_object_set_new(m, id,
			                    json_pack("{s:i,s:i,s:i}", "writes", x->writes, "told_ok",
			                              x->told_ok, "inconsistent", x->inconsistent));
		}
	json_object_set_new(m, "load", load_json(&r->load[CP_THROUGH]));
	json_object_set_new(m, "connections_cut", json_integer(r->connections_cut));
	lab_phase_metrics(lab, "through", m);
}

/* ---- 4. write-behind, and the table ---- */

static void behind_before(struct lab *lab, const void *c)
{
	(void)c;
	lab_phase(lab, "write-behind: SET + XADD, a worker flushes; then the worker and Redis crash");
}

/* The delay the lab injects into a pattern's path: its p50 carries it (0: none). */
static const char *injected(enum cp_pattern p, int gap_ms, char *buf, size_t len)
{
	if (p <= CP_ASIDE_VERSION)
		snprintf(buf, len, "+%d ms a miss", gap_ms);
	else if (p == CP_UPDATE)
		snprintf(buf, len, "+%d ms a write", gap_ms);
	else
		snprintf(buf, len, "none");
	return buf;
}

static void print_summary(struct lab *lab, const struct cache_patterns_config *cfg,
                          const struct cache_patterns_result *r)
{
	const struct term *t = &lab->term;
	struct term_col cols[] = {{"pattern", 22, 'l'},   {"injected", 13, 'l'},    {"read p50", 9, 'r'},
	                          {"write p50", 9, 'r'},  {"stale reads", 11, 'r'}, {"keys stale", 10, 'r'},
	                          {"acked lost", 14, 'r'}};
	term_printf(t, "\n");
	term_table_header(t, 2, cols, 7);
	for (int p = 0; p < CP_PATTERNS; p++) {
		const struct cp_load_result *l = &r->load[p];
		char stale[16], lost[48] = "0 (DB first)", inj[32];
		snprintf(stale, sizeof(stale), "%d/%d",
		         p == CP_ASIDE_TTL ? l->stale_keys_later : l->stale_keys, l->keys);
		if (p == CP_BEHIND)
			snprintf(lost, sizeof(lost), "%d · AOF %d", r->crash[0].lost, r->crash[1].lost);
		const char *row[] = {cp_pattern_name((enum cp_pattern)p),
		                     injected((enum cp_pattern)p, cfg->gap_ms, inj, sizeof(inj)),
		                     TERM_US((double)hist_percentile(&l->read_lat, 50)),
		                     TERM_US((double)hist_percentile(&l->write_lat, 50)),
		                     TERM_NUM((double)l->stale_reads, 0),
		                     stale,
		                     lost};
		term_table_row(t, 2, cols, 7, row);
	}
	term_printf(
	        t,
	        "  %sp50s carry the injected delay where there is one (no row measures that pattern's own "
	        "cost"
	        "\n  with it). Keys stale: random load, luck, shown not judged (TTL row: once expired).%s\n",
	        term_dim(t), term_reset(t));
	term_printf(t, "  read-through: cache-aside with the miss path inside the cache library (same race, "
	               "one owner)\n  refresh-ahead: re-read hot keys before their TTL ends (no miss "
	               "latency; stale up to the refresh period)\n");
}

static void behind_after(struct lab *lab, const void *c, const void *result)
{
	const struct cache_patterns_config *cfg = c;
	const struct cache_patterns_result *r = result;
	const struct term *t = &lab->term;
	const struct cp_load_result *b = &r->load[CP_BEHIND];
	term_printf(t, "  write p50 %s (write-through %s); %s client writes became %s row writes\n",
	            TERM_US((double)hist_percentile(&b->write_lat, 50)),
	            TERM_US((double)hist_percentile(&r->load[CP_THROUGH].write_lat, 50)),
	            TERM_NUM((double)b->writes, 0), TERM_NUM((double)b->db_writes, 0));
	term_printf(t,
	            "  crash (redis-server %s, its own port and dir): %d writes acked, the worker flushes a "
	            "batch of %d,\n  dies halfway through the next, Redis is SIGKILLed and restarted:\n",
	            r->redis_server, r->crash[0].acked, cfg->wb_batch);
	for (int i = 0; i < 2; i++) {
		const struct cp_crash *x = &r->crash[i];
		term_printf(t, "    %-28s acked %d · flushed %d · recovered %3d · %slost %d%s\n",
		            i ? "AOF (appendfsync always)" : "no persistence", x->acked, x->flushed_before,
		            x->recovered_entries, i ? term_green(t) : term_red(t), x->lost, term_reset(t));
	}
	term_printf(t, "  coalescing: %d writes to %d keys, one batch: %s%d row writes%s\n",
	            r->coalesce_client_writes, r->coalesce_keys, term_green(t), r->coalesce_db_writes,
	            term_reset(t));
	print_summary(lab, cfg, r);
	json_t *crash = json_array();
	for (int i = 0; i < 2; i++)
		json_array_append_new(
		        crash, json_pack("{s:b,s:i,s:i,s:i,s:i,s:i}", "aof", r->crash[i].aof, "acked",
		                         r->crash[i].acked, "flushed_before", r->crash[i].flushed_before,
		                         "rows_at_kill", r->crash[i].db_rows_at_kill, "recovered",
		                         r->crash[i].recovered_entries, "lost", r->crash[i].lost));
	lab_phase_metrics(lab, "behind",
	                  json_pack("{s:o,s:o,s:i,s:i,s:i,s:s}", "load", load_json(b), "crash", crash,
	                            "coalesce_keys", r->coalesce_keys, "coalesce_client_writes",
	                            r->coalesce_client_writes, "coalesce_db_writes", r->coalesce_db_writes,
	                            "redis_server", r->redis_server));
}

static const struct lab_phase_tell TELLS[CP_PHASES] = {
        [CP_PHASE_ASIDE] = {aside_before, aside_after},
        [CP_PHASE_FIXES] = {fixes_before, fixes_after},
        [CP_PHASE_THROUGH] = {through_before, through_after},
        [CP_PHASE_BEHIND] = {behind_before, behind_after},
};

static void config_json(struct lab *lab, const struct cache_patterns_config *cfg)
{
	lab_config_set(lab, "keys", json_integer(cfg->keys));
	lab_config_set(lab, "readers", json_integer(cfg->readers));
	lab_config_set(lab, "writers", json_integer(cfg->writers));
	lab_config_set(lab, "run_ms", json_integer(cfg->run_ms));
	lab_config_set(lab, "gap_ms", json_integer(cfg->gap_ms));
	lab_config_set(lab, "ttl_ms", json_integer(cfg->ttl_ms));
	lab_config_set(lab, "dd_delay_ms", json_integer(cfg->dd_delay_ms));
	lab_config_set(lab, "scripted", json_integer(cfg->scripted));
	lab_config_set(lab, "wb_writes", json_integer(cfg->wb_writes));
	lab_config_set(lab, "wb_batch", json_integer(cfg->wb_batch));
	lab_config_set(lab, "quick", json_boolean(lab->opts.quick));
	lab_config_set(lab, "seed", json_integer((json_int_t)cfg->seed));
}

/*
 * The key chart: keys the scripted cache-aside race left stale, of the races played, right after
 * it and a moment later (the TTL expired, the second DEL came), per variant. Plain cache-aside
 * stays stale for good, update-on-write leaves the older value, the TTL and the second DEL bring
 * it to 0 later, the versioned set never lets it in: the claim's first and most asked part at a
 * glance (write-through's and write-behind's failures are counts of other things: their tables).
 */
static void key_chart(struct lab *lab, const struct cache_patterns_result *r)
{
	const struct cp_scripted *a = &r->aside_race, *u = &r->update_race, *f = r->fix;
	/* update-on-write is counted once: no TTL and no second write follow its race */
	lab_chart(lab, json_pack("{s:s,s:s,s:[s,s,s,s,s],s:[{s:s,s:[i,i,i,i,i]},{s:s,s:[i,n,i,i,i]}],s:b}",
	                         "title", "keys left stale by the scripted race, per variant", "unit", "keys",
	                         "labels", "cache-aside (DEL)", "update-on-write (SET)", "+ short TTL",
	                         "+ delayed 2nd DEL", "+ versioned set", "series", "name", "right after",
	                         "values", a->stale, u->stale, f[0].stale, f[1].stale, f[2].stale, "name",
	                         "a moment later", "values", a->stale_later, f[0].stale_later,
	                         f[1].stale_later, f[2].stale_later, "log", 0));
}

int main(int argc, char **argv)
{
	struct lab lab;
	if (lab_init(&lab, "cache-patterns", QUESTION, CP_PHASES, argc, argv) < 0)
		return lab.exit_code;
	if (lab.opts.serve)
		return lab_fail(&lab, "--serve: this lab has no API to serve; run it without --serve");
	if (lab_probe(&lab, true, true) < 0)
		return lab.exit_code;
	struct cache_patterns_config cfg;
	cache_patterns_config_default(&cfg, lab.opts.quick);
	cfg.pg_url = lab.opts.pg_url;
	cfg.redis_url = lab.opts.redis_url;
	cfg.seed = lab.opts.seed;
	cfg.progress_cb = lab_progress_cb;
	cfg.progress_arg = &lab;
	config_json(&lab, &cfg);
	char pgu[256], ru[256];
	pg_url_redact(cfg.pg_url, pgu, sizeof(pgu));
	redis_url_redact(cfg.redis_url, ru, sizeof(ru));
	lab_header(&lab, "PostgreSQL %s · Redis %s\n%d products · %d readers · %d writers · %d ms a load",
	           pgu, ru, cfg.keys, cfg.readers, cfg.writers, cfg.run_ms);
	struct cache_patterns_result *res = calloc(1, sizeof(*res));
	if (!res)
		return lab_fail(&lab, "out of memory");
	struct lab_teller teller = {&lab, TELLS, CP_PHASES, &cfg, res};
	cfg.hooks = lab_teller_hooks(&teller);
	char err[LAB_ERRLEN];
	int rc = cache_patterns_run(&cfg, res, err, sizeof(err));
	if (rc < 0) {
		rc = lab_run_failed(&lab, res->lost_server, err);
		free(res);
		return rc;
	}
	struct lab_verdict verdict;
	cache_patterns_judge(res, &verdict);
	key_chart(&lab, res);
	free(res);
	return lab_finish(&lab, &verdict);
}
