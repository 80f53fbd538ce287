/*
 * faults_matrix.c — the fault matrix (faults.h): every API lab served and driven at once against
 * the private servers, the faults one at a time, each lab's answers in each fault's window read
 * off its timeline, its writes counted, then SIGINT; the table; `labsuite faults`.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"
#include "lab.h"
#include "term.h"

/* before the first fault, every lab answers FAULTS_STEADY 2xx in a row within this */
#define FAULTS_WARM_MS 10000

const char *const faults_fault_names[FAULTS_N] = {"pg restart", "backends killed", "redis restart",
                                                  "pg network cut"};

static void say(const struct faults_options *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct faults_options *o, const char *fmt, ...)
{
	if (!o->log)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(o->log, fmt, ap);
	va_end(ap);
	fflush(o->log);
}

/*
 * The cell of lab l for the window [from, to) of a fault lifted at lifted, read from its event
 * first on (the timeline's length before from: events come in at_ms order): what came back, and
 * when the steady 2xx began. Returns whether the lab has recovered (FAULTS_STEADY 2xx in a row
 * after its last error and after the fault's end).
 */
static bool window_cell(struct faults_lab *l, size_t first, double from, double to, double lifted,
                        struct faults_cell *c)
{
	memset(c, 0, sizeof(*c));
	size_t n = faults_events_count(l);
	struct faults_event *ev = n > first ? malloc((n - first) * sizeof(*ev)) : NULL;
	n = ev ? faults_events(l, first, ev, n - first) : 0;
	double first_ok_after = -1;
	int steady = 0;
	for (size_t i = 0; i < n; i++) {
		if (ev[i].at_ms < from || ev[i].at_ms >= to)
			continue;
		c->answers++;
		if (ev[i].kind == FAULTS_OK) {
			c->ok++;
			if (first_ok_after < 0)
				first_ok_after = ev[i].at_ms;
			steady += ev[i].at_ms >= lifted;
			continue;
		}
		c->clear += ev[i].kind == FAULTS_CLEAR;
		c->bad += ev[i].kind == FAULTS_BAD;
		c->none += ev[i].kind == FAULTS_NONE;
		if (ev[i].kind == FAULTS_NONE && !c->first_bad[0])
			snprintf(c->first_bad, sizeof(c->first_bad),
			         "no answer (reset, refused or timed out) %.0f ms into the fault",
			         ev[i].at_ms - from);
		else if (ev[i].kind == FAULTS_BAD && !c->first_bad[0])
			snprintf(c->first_bad, sizeof(c->first_bad),
			         "%u (or a 5xx without {\"error\"}) %.0f ms into the fault", ev[i].status,
			         ev[i].at_ms - from);
		first_ok_after = -1;
		steady = 0;
	}
	free(ev);
	bool errors = c->clear + c->bad + c->none > 0;
	bool recovered = steady >= FAULTS_STEADY;
	c->recovered_ms = !recovered                ? -1
	                  : !errors                 ? 0
	                  : first_ok_after > lifted ? first_ok_after - lifted
	                                            : 0;
	return recovered;
}

/* Injects fault f; lifted (the moment it ends) into *lifted. -1 and err. */
static int inject(struct faults_env *e, enum faults_fault f, double *lifted, char *err, size_t errlen)
{
	int rc = 0;
	switch (f) {
	case FAULT_PG_RESTART:
		rc = faults_pg_restart(e, err, errlen);
		break;
	case FAULT_BACKEND_KILL:
		rc = faults_backends_kill(e, err, errlen) < 0 ? -1 : 0;
		break;
	case FAULT_REDIS_RESTART:
		rc = faults_redis_stop(e, err, errlen);
		if (rc == 0) {
			hist_sleep_us(FAULTS_HOLD_MS * 1000);
			rc = faults_redis_start(e, err, errlen);
		}
		break;
	case FAULT_NET_CUT:
		rc = faults_net_cut(e, true, err, errlen);
		hist_sleep_us(FAULTS_HOLD_MS * 1000);
		if (faults_net_cut(e, false, err, errlen) < 0)
			rc = -1;
		break;
	default:
		break;
	}
	*lifted = hist_now_ms();
	return rc;
}

/* Every lab started, ready and driven (faults_labs_start), or the row says why not. */
static void labs_start(const struct faults_options *o, struct faults_env *e, struct faults_lab **labs,
                       struct faults_matrix *m)
{
	char errs[FAULTS_LABS][FAULTS_ERR_LEN];
	faults_labs_start(o->bin_dir, e, o->log, labs, errs);
	for (int i = 0; i < FAULTS_LABS; i++) {
		struct faults_row *r = &m->rows[m->nrows++];
		snprintf(r->name, sizeof(r->name), "%s", faults_lab_name_at(i));
		snprintf(r->start_err, sizeof(r->start_err), "%s", errs[i]);
		r->started = labs[i] != NULL;
		r->writes = labs[i] && faults_lab_writes(labs[i]);
		r->redis = labs[i] && faults_lab_uses_redis(labs[i]);
	}
}

/* Each lab's timeline length now: taken just before a window's from, what watch reads from. */
static void events_now(struct faults_lab **labs, size_t first[FAULTS_LABS])
{
	for (int i = 0; i < FAULTS_LABS; i++)
		first[i] = labs[i] ? faults_events_count(labs[i]) : 0;
}

/*
 * Waits until every lab answers steadily after lifted, or the bound; fills the cells of fault f
 * (each lab's events read from first[i], its count before from, not its whole timeline each poll).
 */
static void watch(struct faults_lab **labs, struct faults_matrix *m, enum faults_fault f,
                  const size_t first[FAULTS_LABS], double from, double lifted)
{
	double bound = lifted + FAULTS_RECOVER_BOUND_MS + FAULTS_STEADY * (FAULTS_THINK_MS + 20) + 500;
	for (;;) {
		double now = hist_now_ms();
		bool all = true;
		for (int i = 0; i < FAULTS_LABS; i++)
			if (labs[i])
				all &= window_cell(labs[i], first[i], from, now, lifted,
				                   &m->rows[i].cells[f]);
		if (all || now > bound)
			return;
		hist_sleep_us(50000);
	}
}

/* After the load: writes counted, SIGINT to all at once (faults_labs_stop), each exit, what is left,
 * sanitizers. */
static void labs_finish(struct faults_env *e, struct faults_lab **labs, struct faults_matrix *m)
{
	for (int i = 0; i < FAULTS_LABS; i++)
		if (labs[i])
			faults_drive_stop(labs[i]);
	for (int i = 0; i < FAULTS_LABS; i++) {
		struct faults_row *r = &m->rows[i];
		int status;
		if (labs[i] && !faults_lab_alive(labs[i], &status))
			r->died = true;
		if (labs[i] && r->writes &&
		    faults_lab_count_writes(labs[i], e->pg_url, &r->w, r->count_err, sizeof(r->count_err)) <
		            0 &&
		    !r->count_err[0])
			snprintf(r->count_err, sizeof(r->count_err), "could not count");
	}
	int exit_code[FAULTS_LABS] = {0};
	double stop_ms[FAULTS_LABS] = {0};
	faults_labs_stop(labs, exit_code, stop_ms);
	for (int i = 0; i < FAULTS_LABS; i++) {
		struct faults_row *r = &m->rows[i];
		if (!labs[i])
			continue;
		r->exit_code = exit_code[i];
		r->stop_ms = stop_ms[i];
		r->sanitizer = faults_lab_sanitizer_report(labs[i]);
		faults_lab_stderr_tail(labs[i], r->stderr_tail, sizeof(r->stderr_tail));
		char err[256];
		if (faults_leftovers(r->name, e->pg_url, e->redis_url, &r->schemas_left, &r->keys_left, err,
		                     sizeof(err)) < 0)
			r->schemas_left = -1;
		faults_lab_free(labs[i]);
		labs[i] = NULL;
	}
}

int faults_matrix_run(const struct faults_options *o, struct faults_matrix *m, char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	double start = hist_now_ms();
	struct faults_env env;
	say(o, "fault matrix: private servers (%s)\n", o->state_dir);
	if (faults_env_up(&env, o->labenv, o->state_dir, err, errlen) < 0) {
		faults_env_down(&env);
		return -1;
	}
	struct faults_lab *labs[FAULTS_LABS] = {0};
	labs_start(o, &env, labs, m);
	/* warm: every lab answers steadily before the first fault */
	size_t first[FAULTS_LABS];
	events_now(labs, first);
	double warm = hist_now_ms();
	watch(labs, m, FAULT_PG_RESTART, first, warm, warm);
	for (int f = 0; f < FAULTS_N; f++) {
		events_now(labs, first);
		double from = hist_now_ms(), lifted = from;
		char ferr[512];
		say(o, "  %s ...\n", faults_fault_names[f]);
		if (inject(&env, (enum faults_fault)f, &lifted, ferr, sizeof(ferr)) < 0) {
			snprintf(err, errlen, "%s: %s", faults_fault_names[f], ferr);
			labs_finish(&env, labs, m);
			faults_env_down(&env);
			return -1;
		}
		m->fault_ms[f] = lifted - from;
		watch(labs, m, (enum faults_fault)f, first, from, lifted);
	}
	say(o, "  SIGINT ...\n");
	labs_finish(&env, labs, m);
	faults_env_down(&env);
	m->total_ms = hist_now_ms() - start;
	return 0;
}

bool faults_row_ok(const struct faults_row *r, char *why, size_t whylen)
{
	if (!r->started)
		return snprintf(why, whylen, "did not start: %s", r->start_err), false;
	if (r->died)
		return snprintf(why, whylen, "exited before SIGINT: %s", r->stderr_tail), false;
	for (int f = 0; f < FAULTS_N; f++) {
		const struct faults_cell *c = &r->cells[f];
		if (c->bad + c->none)
			return snprintf(why, whylen,
			                "%s: %llu answers that were not a 2xx nor a clear 500/503, first %s",
			                faults_fault_names[f], (unsigned long long)(c->bad + c->none),
			                c->first_bad),
			       false;
		if (c->recovered_ms < 0 || c->recovered_ms > FAULTS_RECOVER_BOUND_MS)
			return snprintf(why, whylen,
			                "%s: not answering %d 2xx in a row within %d ms of the fault's end",
			                faults_fault_names[f], FAULTS_STEADY, FAULTS_RECOVER_BOUND_MS),
			       false;
	}
	const struct faults_cell *rc = &r->cells[FAULT_REDIS_RESTART];
	if (!r->redis && rc->clear)
		return snprintf(why, whylen,
		                "served %llu errors while Redis restarted, though its route under load never "
		                "talks to Redis",
		                (unsigned long long)rc->clear),
		       false;
	if (r->writes && r->count_err[0])
		return snprintf(why, whylen, "writes not counted: %s", r->count_err), false;
	if (r->writes && (r->w.lost || r->w.doubled))
		return snprintf(why, whylen, "%lld writes lost and %lld doubled of %lld acknowledged",
		                (long long)r->w.lost, (long long)r->w.doubled, (long long)r->w.acknowledged),
		       false;
	if (r->exit_code != 0)
		return snprintf(why, whylen, "exit %d after SIGINT (%.0f ms): %s", r->exit_code, r->stop_ms,
		                r->stderr_tail),
		       false;
	if (r->schemas_left || r->keys_left)
		return snprintf(why, whylen, "left behind after SIGINT: %d schema, %d keys", r->schemas_left,
		                r->keys_left),
		       false;
	if (r->sanitizer)
		return snprintf(why, whylen, "a sanitizer report on its stderr: %s", r->stderr_tail), false;
	return true;
}

static void cell_text(const struct faults_cell *c, bool no_redis, char *out, size_t outlen)
{
	uint64_t errors = c->clear + c->bad + c->none;
	char rec[32];
	if (c->recovered_ms < 0)
		snprintf(rec, sizeof(rec), "never");
	else
		term_fmt_us(rec, sizeof(rec), c->recovered_ms * 1000);
	if (!errors)
		snprintf(out, outlen, "%s0 err%s", c->recovered_ms < 0 ? "✘ hung · " : "",
		         no_redis ? " (no Redis)" : "");
	else
		snprintf(out, outlen, "%s%llu err · %s", c->bad + c->none ? "✘ " : "",
		         (unsigned long long)errors, rec);
}

void faults_matrix_print(const struct faults_matrix *m, FILE *f)
{
	struct term t;
	term_init(&t, f);
	char d[FAULTS_N][32];
	for (int i = 0; i < FAULTS_N; i++)
		term_fmt_us(d[i], sizeof(d[i]), m->fault_ms[i] * 1000);
	term_printf(
	        &t,
	        "fault matrix: %d API labs under steady load, one fault at a time; recovered = fault's end "
	        "to %d 2xx in a row (bound %d ms)\n",
	        m->nrows, FAULTS_STEADY, FAULTS_RECOVER_BOUND_MS);
	term_printf(&t, "  pg restart took %s · backends killed %s · redis down %s · network cut %s\n", d[0],
	            d[1], d[2], d[3]);
	struct term_col cols[] = {
	        {"lab", 13, 'l'},           {"pg restart", 16, 'l'},     {"backends killed", 16, 'l'},
	        {"redis restart", 16, 'l'}, {"pg network cut", 16, 'l'}, {"lost / doubled", 18, 'l'},
	        {"SIGINT", 18, 'l'}};
	int ncols = (int)(sizeof(cols) / sizeof(cols[0]));
	term_table_header(&t, 2, cols, ncols);
	int failed = 0;
	for (int i = 0; i < m->nrows; i++) {
		const struct faults_row *r = &m->rows[i];
		char cells[FAULTS_N][64], w[48], s[48];
		for (int k = 0; k < FAULTS_N; k++)
			cell_text(&r->cells[k], k == FAULT_REDIS_RESTART && !r->redis, cells[k],
			          sizeof(cells[k]));
		if (!r->writes)
			snprintf(w, sizeof(w), "n/a (reads)");
		else
			snprintf(w, sizeof(w), "%lld / %lld of %lld", (long long)r->w.lost,
			         (long long)r->w.doubled, (long long)r->w.acknowledged);
		snprintf(s, sizeof(s), "exit %d · %.0f ms%s", r->exit_code, r->stop_ms,
		         r->schemas_left || r->keys_left || r->sanitizer ? " ✘" : "");
		const char *row[] = {
		        r->name, cells[0], cells[1], cells[2], cells[3], w, r->started ? s : "-"};
		term_table_row(&t, 2, cols, ncols, row);
	}
	for (int i = 0; i < m->nrows; i++) {
		char why[700];
		if (!faults_row_ok(&m->rows[i], why, sizeof(why))) {
			failed++;
			term_printf(&t, "  %s✘ lab-%s%s: %s\n", term_red(&t), m->rows[i].name, term_reset(&t),
			            why);
		}
	}
	char total[32];
	term_fmt_us(total, sizeof(total), m->total_ms * 1000);
	if (failed)
		term_printf(&t, "%s✘ %d of %d labs failed a fault%s (%s)\n", term_red(&t), failed, m->nrows,
		            term_reset(&t), total);
	else
		term_printf(
		        &t,
		        "%s✔ every lab answered clear errors during each fault, recovered within %d ms, lost "
		        "and doubled nothing, and stopped cleanly on SIGINT%s (%s)\n",
		        term_green(&t), FAULTS_RECOVER_BOUND_MS, term_reset(&t), total);
}

static int faults_usage(FILE *f, int code)
{
	fprintf(f, "usage: labsuite faults [--bin DIR] [--labenv PATH] [--state DIR]\n"
	           "  every API lab's --serve under steady load while PostgreSQL restarts, its backends are\n"
	           "  killed, Redis restarts and the network to PostgreSQL is cut, then SIGINT; on PRIVATE\n"
	           "  servers (labenv with a state dir and free ports of their own), never the shared ones.\n"
	           "  --bin DIR      the lab programs (default build)\n"
	           "  --labenv PATH  scripts/labenv (default scripts/labenv)\n"
	           "  --state DIR    the private servers' state (default DIR/fault-env)\n"
	           "  exit 0: every cell passed; 1: one did not; 2: bad usage or no servers\n");
	return code;
}

int suite_faults(int argc, char **argv)
{
	const char *bin = "build", *labenv = "scripts/labenv", *state = NULL;
	for (int i = 1; i < argc; i++) {
		const char **slot = !strcmp(argv[i], "--bin")      ? &bin
		                    : !strcmp(argv[i], "--labenv") ? &labenv
		                    : !strcmp(argv[i], "--state")  ? &state
		                                                   : NULL;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return faults_usage(stdout, 0);
		if (!slot || i + 1 >= argc || !argv[i + 1][0]) {
			char shown[LAB_ARG_SHOWN_LEN];
			fprintf(stderr, "labsuite faults: %s \"%s\"\n",
			        slot ? "no value for" : "unknown flag", lab_arg_shown(argv[i], shown));
			return faults_usage(stderr, 2);
		}
		*slot = argv[++i];
	}
	char state_dir[PATH_MAX];
	snprintf(state_dir, sizeof(state_dir), "%s/fault-env", bin);
	if (state)
		snprintf(state_dir, sizeof(state_dir), "%s", state);
	struct faults_matrix *m = calloc(1, sizeof(*m));
	if (!m)
		return 2;
	struct faults_options o = {.bin_dir = bin, .labenv = labenv, .state_dir = state_dir, .log = stderr};
	char err[1024];
	int code = 0;
	if (faults_matrix_run(&o, m, err, sizeof(err)) < 0) {
		fprintf(stderr, "labsuite faults: %s\n", err);
		code = 2;
	} else {
		faults_matrix_print(m, stdout);
		for (int i = 0; i < m->nrows && !code; i++) {
			char why[700];
			code = faults_row_ok(&m->rows[i], why, sizeof(why)) ? 0 : 1;
		}
	}
	free(m);
	return code;
}
