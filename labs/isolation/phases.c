/*
 * phases.c — lab-isolation's phases 1 to 3: the matrix (the driver on every script at every
 * level), write skew with real concurrent clients and its three fixes, and atomicity (a backend
 * terminated between the two statements of a transfer).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "pg.h"

#define CFG(c) ((const struct isolation_config *)(c))

static PGconn *session(const char *url, char *err, size_t errlen)
{
	PGconn *c = pg_connect(url, err, errlen);
	/* lock_timeout: the driver's own bound on a blocked step, so the server gives up too */
	if (c && pg_exec(c,
	                 "set search_path = " SCHEMA "; set lock_timeout = '5s';"
	                 " set client_min_messages = error",
	                 err, errlen) < 0) {
		PQfinish(c);
		return NULL;
	}
	return c;
}

int iso_phase_matrix(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct isolation_config *cfg = cfgv;
	struct isolation_result *r = result;
	PGconn *s[ISO_MAX_SESSIONS + 1] = {0};
	int ret = -1;
	for (int i = 0; i <= ISO_MAX_SESSIONS; i++)
		if (!(s[i] = session(cfg->pg_url, err, errlen)))
			goto out;
	for (int t = 0; t < ISO_TESTS; t++)
		for (int l = 0; l < ISO_LEVELS; l++) {
			if (lab_interrupted())
				goto out;
			struct iso_cell *c = &r->cells[t][l];
			memset(c, 0, sizeof(*c));
			c->expected_prevented = iso_hermitage[t][l];
			if (iso_drive(s, s[ISO_MAX_SESSIONS], &iso_scripts[t], iso_level_names[l],
			              cfg->block_ms, c, err, errlen) < 0)
				goto out;
			r->ncells++;
			if (cfg->progress_cb)
				cfg->progress_cb("anomaly tests",
				                 (double)r->ncells / (ISO_TESTS * ISO_LEVELS),
				                 cfg->progress_arg);
		}
	ret = 0;
out:
	for (int i = 0; i <= ISO_MAX_SESSIONS; i++)
		PQfinish(s[i]);
	return ret;
}

/* ---- write skew: doctors on call ---- */

enum { WS_PLAIN, WS_SERIALIZABLE, WS_FOR_UPDATE, WS_CONSTRAINT };
static const char *const WS_NAMES[ISO_WS_MODES] = {
        "REPEATABLE READ, check then update", "SERIALIZABLE + retry on 40001",
        "SELECT ... FOR UPDATE (READ COMMITTED)", "materialized conflict + CHECK (READ COMMITTED)"};
/* the decision the doctor's client makes: go off call only if someone else stays on */
static const char *const WS_CHECK[ISO_WS_MODES] = {
        "select count(*) from doctors where shift = $1 and on_call",
        "select count(*) from doctors where shift = $1 and on_call",
        "select count(*) from (select 1 from doctors where shift = $1 and on_call for update) d",
        "select count(*) from doctors where shift = $1 and on_call"};
static const char *const WS_BEGIN[ISO_WS_MODES] = {
        "begin isolation level repeatable read", "begin isolation level serializable",
        /* READ COMMITTED: FOR UPDATE waits, then re-reads the latest row (REPEATABLE READ would
         * answer 40001 instead, a fix of its own) */
        "begin isolation level read committed", "begin isolation level read committed"};

struct ws_client {
	const struct isolation_config *cfg;
	int mode, pair, who;
	pthread_barrier_t *barrier; /* the pair's: both doctors click at the same moment */
	pthread_barrier_t *decided; /* the pair's: both have made their decision, neither has written */
	bool to_meet;               /* this round's meeting at decided is still ahead */
	PGconn *conn;
	uint64_t attempts, off_call, declined, retries, refused;
	char err[LAB_ERRLEN];
};

/* Runs sql; 0 when it answered want, else -1 with its SQLSTATE in state and its message in c->err. */
static int ws_exec(struct ws_client *c, const char *sql, int n, const char *const *p, ExecStatusType want,
                   long *count, char state[8])
{
	PGresult *res = PQexecParams(c->conn, sql, n, NULL, p, NULL, NULL, 0);
	bool ok = PQresultStatus(res) == want;
	if (ok && count)
		*count = atol(PQgetvalue(res, 0, 0));
	/* COMMIT of a transaction that failed answers ROLLBACK: a serialization failure at commit */
	if (ok && strcmp(sql, "commit") == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0)
		ok = false, snprintf(state, 8, "40001");
	else if (!ok) {
		const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		snprintf(state, 8, "%s", code ? code : "?");
		pg_message_line(c->err, sizeof(c->err), PQresultErrorMessage(res));
	}
	PQclear(res);
	return ok ? 0 : -1;
}

/*
 * The pair meets once a round, so that both decide before either writes: then every shift is a
 * race, under REPEATABLE READ every one is broken, and a fix is tested on the same races rather
 * than on requests the scheduler happened to serialize. FOR UPDATE meets before its locking read
 * instead (after it, the one waiting for the lock could never meet the one holding it). A retry
 * after 40001 does not meet again: its partner has gone on.
 */
static void ws_meet(struct ws_client *c)
{
	if (c->to_meet)
		pthread_barrier_wait(c->decided);
	c->to_meet = false;
}

/* One doctor's request on shift: 1 done (off call, declined or refused), 0 to retry (40001), -1 failed. */
static int ws_once(struct ws_client *c, const char *shift)
{
	const char *p[] = {shift, c->who ? "b" : "a"};
	char state[8] = "";
	long on = 0;
	if (ws_exec(c, WS_BEGIN[c->mode], 0, NULL, PGRES_COMMAND_OK, NULL, state) < 0)
		goto failed;
	if (c->mode == WS_FOR_UPDATE)
		ws_meet(c);
	if (ws_exec(c, WS_CHECK[c->mode], 1, p, PGRES_TUPLES_OK, &on, state) < 0)
		goto failed;
	ws_meet(c);
	if (on < 2) {
		c->declined++;
		return ws_exec(c, "commit", 0, NULL, PGRES_COMMAND_OK, NULL, state) < 0 ? -1 : 1;
	}
	if (c->mode == WS_CONSTRAINT && ws_exec(c, "update shifts set on_call = on_call - 1 where shift = $1",
	                                        1, p, PGRES_COMMAND_OK, NULL, state) < 0)
		goto failed;
	if (ws_exec(c, "update doctors set on_call = false where shift = $1 and name = $2", 2, p,
	            PGRES_COMMAND_OK, NULL, state) < 0 ||
	    ws_exec(c, "commit", 0, NULL, PGRES_COMMAND_OK, NULL, state) < 0)
		goto failed;
	c->off_call++;
	return 1;
failed:
	PQclear(PQexec(c->conn, "rollback"));
	if (c->mode == WS_CONSTRAINT && strcmp(state, "23514") == 0) {
		c->err[0] = '\0';
		c->refused++;
		return 1;
	}
	if (c->mode == WS_SERIALIZABLE && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
		c->err[0] = '\0';
		c->retries++;
		return 0;
	}
	if (!c->err[0])
		snprintf(c->err, sizeof(c->err), "SQLSTATE %s", state);
	return -1;
}

static void *ws_client_main(void *arg)
{
	struct ws_client *c = arg;
	bool failed = false;
	for (int round = 0; round < c->cfg->ws_rounds; round++) {
		char shift[24];
		snprintf(shift, sizeof(shift), "%d", c->pair * c->cfg->ws_rounds + round);
		/* a failed client still meets its partner, so neither waits forever */
		pthread_barrier_wait(c->barrier);
		c->to_meet = true;
		if (failed || lab_interrupted()) {
			ws_meet(c);
			continue;
		}
		int rc;
		while ((rc = ws_once(c, shift)) == 0)
			;
		/* a request that failed before the meeting still meets its partner */
		ws_meet(c);
		c->attempts++;
		failed = rc < 0;
	}
	return NULL;
}

#define WS_SETUP                                                                                             \
	"drop table if exists doctors, shifts;"                                                              \
	" create table doctors (shift int, name text, on_call bool not null, primary key (shift, name));"    \
	" create table shifts (shift int primary key, on_call int not null check (on_call >= 1));"           \
	" insert into doctors select s, n, true from generate_series(0, %d) s, (values ('a'), ('b')) v(n);"  \
	" insert into shifts select s, 2 from generate_series(0, %d) s"

static int ws_mode(const struct isolation_config *cfg, PGconn *mon, int mode, struct iso_ws_row *row,
                   char *err, size_t errlen)
{
	char sql[1024];
	int nshifts = cfg->ws_pairs * cfg->ws_rounds;
	snprintf(sql, sizeof(sql), WS_SETUP, nshifts - 1, nshifts - 1);
	if (pg_exec(mon, sql, err, errlen) < 0)
		return -1;
	int n = cfg->ws_pairs * 2;
	struct ws_client c[ISO_MAX_CLIENTS] = {0};
	pthread_barrier_t bar[ISO_MAX_CLIENTS / 2], dec[ISO_MAX_CLIENTS / 2];
	pthread_t th[ISO_MAX_CLIENTS];
	int ret = 0, started = 0;
	for (int i = 0; i < n && ret == 0; i++) {
		c[i] = (struct ws_client){.cfg = cfg,
		                          .mode = mode,
		                          .pair = i / 2,
		                          .who = i % 2,
		                          .barrier = &bar[i / 2],
		                          .decided = &dec[i / 2]};
		if (!(c[i].conn = session(cfg->pg_url, err, errlen)))
			ret = -1;
	}
	for (int p = 0; p < cfg->ws_pairs; p++) {
		pthread_barrier_init(&bar[p], NULL, 2);
		pthread_barrier_init(&dec[p], NULL, 2);
	}
	uint64_t t0 = hist_now_us();
	for (int i = 0; i < n && ret == 0; i++) {
		if (pthread_create(&th[i], NULL, ws_client_main, &c[i]) != 0) {
			snprintf(err, errlen, "cannot start a client thread");
			ret = -1;
		} else
			started++;
	}
	/* a client whose partner could not start would wait forever at the barrier: stand in for it */
	if (ret < 0 && started % 2)
		for (int k = 0; k < cfg->ws_rounds; k++) {
			pthread_barrier_wait(&bar[started / 2]);
			pthread_barrier_wait(&dec[started / 2]);
		}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	*row = (struct iso_ws_row){.what = WS_NAMES[mode],
	                           .shifts = (uint64_t)nshifts,
	                           .elapsed_s = (double)(hist_now_us() - t0) / 1e6};
	for (int i = 0; i < n; i++) {
		row->attempts += c[i].attempts, row->off_call += c[i].off_call,
		        row->declined += c[i].declined;
		row->retries += c[i].retries, row->refused += c[i].refused;
		if (c[i].err[0] && ret == 0) {
			snprintf(err, errlen, "%s: %s", WS_NAMES[mode], c[i].err);
			ret = -1;
		}
		PQfinish(c[i].conn);
	}
	for (int p = 0; p < cfg->ws_pairs; p++) {
		pthread_barrier_destroy(&bar[p]);
		pthread_barrier_destroy(&dec[p]);
	}
	int64_t v = 0;
	if (ret == 0 && pg_query_int64(mon,
	                               "select count(*) from (select shift from doctors group by shift"
	                               " having count(*) filter (where on_call) = 0) s",
	                               0, NULL, &v, err, errlen) < 0)
		ret = -1;
	row->violated = (uint64_t)v;
	return ret;
}

int iso_phase_write_skew(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct isolation_config *cfg = cfgv;
	struct isolation_result *r = result;
	PGconn *mon = session(cfg->pg_url, err, errlen);
	if (!mon)
		return -1;
	int ret = 0;
	for (int m = 0; m < ISO_WS_MODES && ret == 0 && !lab_interrupted(); m++) {
		ret = ws_mode(cfg, mon, m, &r->ws[m], err, errlen);
		r->nws += ret == 0;
		if (cfg->progress_cb)
			cfg->progress_cb("doctors on call", (double)(m + 1) / ISO_WS_MODES,
			                 cfg->progress_arg);
	}
	PQfinish(mon);
	return ret;
}

/* ---- atomicity ---- */

int iso_phase_atomicity(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct isolation_config *cfg = cfgv;
	struct isolation_result *r = result;
	PGconn *mon = session(cfg->pg_url, err, errlen), *tx = mon ? session(cfg->pg_url, err, errlen) : NULL;
	int ret = -1;
	char pid[16];
	const char *p[] = {pid};
	if (!tx || pg_exec(mon,
	                   "drop table if exists accounts, ledger;"
	                   " create table accounts (id int primary key, balance int not null);"
	                   " insert into accounts values (1, 100), (2, 100);"
	                   " create table ledger (id serial primary key, account int, amount int)",
	                   err, errlen) < 0)
		goto out;
	/* the transfer's first half: the debit and its ledger line */
	if (pg_exec(tx,
	            "begin; update accounts set balance = balance - 50 where id = 1;"
	            " insert into ledger (account, amount) values (1, -50)",
	            err, errlen) < 0 ||
	    pg_query_int64(tx, "select count(*) from ledger", 0, NULL, &r->atom_seen_inside, err, errlen) < 0)
		goto out;
	snprintf(pid, sizeof(pid), "%d", PQbackendPID(tx));
	int64_t ended = 0, left = 1;
	if (pg_query_int64(mon, "select pg_terminate_backend($1)::int", 1, p, &ended, err, errlen) < 0)
		goto out;
	/* the second half never runs: the connection is gone */
	if (pg_exec(tx,
	            "update accounts set balance = balance + 50 where id = 2;"
	            " insert into ledger (account, amount) values (2, 50); commit",
	            r->atom_error, sizeof(r->atom_error)) == 0) {
		snprintf(err, errlen, "the transfer's second half ran after its backend was terminated");
		goto out;
	}
	/* libpq's second sentence ("This probably means...") adds nothing here */
	char *cut = strstr(r->atom_error, " This probably");
	if (cut)
		*cut = '\0';
	for (uint64_t t0 = hist_now_us(); left > 0 && hist_now_us() - t0 < 2000000;)
		if (pg_query_int64(mon, "select count(*) from pg_stat_activity where pid = $1", 1, p, &left,
		                   err, errlen) < 0)
			goto out;
	if (pg_query_int64(mon, "select count(*) from ledger", 0, NULL, &r->atom_rows_after, err, errlen) <
	            0 ||
	    pg_query_int64(mon, "select balance from accounts where id = 1", 0, NULL, &r->atom_balance_after,
	                   err, errlen) < 0)
		goto out;
	r->atom_ran = ended == 1 && left == 0;
	ret = 0;
out:
	PQfinish(tx);
	PQfinish(mon);
	return ret;
}
