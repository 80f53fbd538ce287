/*
 * driver.c — the step driver: runs one script (scripts.c) at one level on two or three sessions,
 * as Hermitage's instructions are followed by hand in two or three psql windows.
 *
 * Each step is sent with PQsendQuery and waited for block_ms. A step that has not returned by
 * then, and whose backend pg_stat_activity shows waiting on a Lock, is blocked: the script goes
 * on with the other sessions, and the step's result is collected when it comes (right after the
 * step that ends the other transaction, or before its session's next step). A step slow for any
 * other reason (a busy machine) is simply waited for. 40001 (serialization failure) and 40P01
 * (deadlock) are recorded and the session's transaction rolled back; its later steps are skipped,
 * as Hermitage's "abort; -- there's nothing else we can do".
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "hist.h"
#include "internal.h"
#include "pg.h"

/* a step never waits longer than this (a lock held by a transaction that never ends is a bug);
 * the sessions' lock_timeout is the same, so the server gives up too */
#define STUCK_MS 5000

struct sess {
	PGconn *conn;
	bool busy;    /* a step was sent and its result not collected */
	int line;     /* its trace line */
	bool blocked; /* it was seen waiting on a lock */
	bool aborted; /* rolled back after an error */
	bool committed;
};

struct drive {
	struct sess s[ISO_MAX_SESSIONS];
	PGconn *mon;
	const struct iso_script *script;
	struct iso_cell *cell;
	int bad_seen, bad_steps, aborts, blocks;
	bool dirty, error;
};

/* 1 when conn's result is ready, 0 when still busy after ms, -1 when the connection failed */
static int wait_ready(PGconn *conn, int ms)
{
	uint64_t end = hist_now_us() + (uint64_t)ms * 1000;
	for (;;) {
		if (PQconsumeInput(conn) == 0)
			return -1;
		if (!PQisBusy(conn))
			return 1;
		uint64_t now = hist_now_us();
		if (now >= end)
			return 0;
		struct pollfd p = {.fd = PQsocket(conn), .events = POLLIN};
		poll(&p, 1, (int)((end - now) / 1000) + 1);
	}
}

/* "1=>10,2=>20" or "(none)" */
static void rows_text(const PGresult *res, char *out, size_t len)
{
	size_t used = 0;
	out[0] = '\0';
	for (int i = 0; i < PQntuples(res) && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s=>%s", i ? "," : "",
		                         PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
	if (PQntuples(res) == 0)
		snprintf(out, len, "(none)");
}

/* What a session's step returned, checked against the step's flags; errors roll the session back. */
static void finish(struct drive *d, int si, int stepno)
{
	struct sess *s = &d->s[si];
	const struct iso_step *st = &d->script->steps[stepno];
	struct iso_trace_line *tl = &d->cell->trace[s->line];
	char got[ISO_TEXT_LEN] = "", state[8] = "";
	PGresult *res;
	bool failed = false;
	while ((res = PQgetResult(s->conn))) {
		ExecStatusType t = PQresultStatus(res);
		if (t == PGRES_TUPLES_OK && (st->flags & STEP_READ))
			rows_text(res, got, sizeof(got));
		else if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK)
			snprintf(got, sizeof(got), "%s", PQcmdStatus(res));
		else {
			failed = true;
			const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			snprintf(state, sizeof(state), "%s", code ? code : "?");
			char msg[ISO_TEXT_LEN];
			pg_message_line(msg, sizeof(msg), PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
			snprintf(got, sizeof(got), "ERROR %s %.60s", state, msg);
		}
		PQclear(res);
	}
	s->busy = false;
	size_t n = strlen(tl->got);
	snprintf(tl->got + n, sizeof(tl->got) - n, "%s%s", n ? " → " : "", got);
	if (failed) {
		if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
			d->aborts++;
		else
			d->error = true;
		PGresult *rb = PQexec(s->conn, "rollback");
		/* a session that cannot roll back is in no state for the next cell */
		d->error = d->error || PQresultStatus(rb) != PGRES_COMMAND_OK;
		PQclear(rb);
		s->aborted = true;
		return;
	}
	if (strncmp(st->sql, "commit", 6) == 0) {
		/* COMMIT of a failed transaction answers ROLLBACK */
		s->committed = strcmp(got, "COMMIT") == 0;
		s->aborted = !s->committed;
		d->aborts += s->aborted;
	}
	if ((st->flags & STEP_MUST_WAIT) && !s->blocked)
		d->dirty = true;
	if ((st->flags & STEP_READ) && st->bad && strcmp(got, st->bad) == 0) {
		d->bad_seen++;
		snprintf(d->cell->why, sizeof(d->cell->why), "T%d read %.70s", si + 1, got);
	}
}

/* Whether pg_stat_activity shows the session's backend waiting on a lock; the wait into out. */
static bool waits_on_lock(struct drive *d, PGconn *conn, char *out, size_t len)
{
	char pid[16], e[LAB_ERRLEN];
	snprintf(pid, sizeof(pid), "%d", PQbackendPID(conn));
	const char *p[] = {pid};
	PGresult *res = pg_query(d->mon,
	                         "select coalesce(wait_event_type, ''), coalesce(wait_event, '')"
	                         " from pg_stat_activity where pid = $1",
	                         1, p, e, sizeof(e));
	bool lock = res && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "Lock") == 0;
	if (lock)
		snprintf(out, len, "blocked (waits on %s)", PQgetvalue(res, 0, 1));
	PQclear(res);
	return lock;
}

/* Waits for a busy session's step: up to ms when it is blocked, else until it returns. */
static int collect(struct drive *d, int si, int ms, char *err, size_t errlen)
{
	struct sess *s = &d->s[si];
	int step = d->cell->trace[s->line].step;
	uint64_t start = hist_now_us();
	for (;;) {
		int w = wait_ready(s->conn, ms);
		if (w < 0) {
			pg_conn_error(s->conn, err, errlen);
			return -1;
		}
		if (w == 1) {
			finish(d, si, step);
			return 1;
		}
		char how[ISO_TEXT_LEN];
		if (waits_on_lock(d, s->conn, how, sizeof(how))) {
			if (!s->blocked)
				snprintf(d->cell->trace[s->line].got, sizeof(d->cell->trace[s->line].got),
				         "%s", how);
			d->blocks += !s->blocked;
			s->blocked = true;
			if ((hist_now_us() - start) / 1000 >= (uint64_t)ms)
				return 0;
		}
		if ((hist_now_us() - start) / 1000 > STUCK_MS) {
			snprintf(err, errlen, "T%d stuck on step %d for %d ms", si + 1, step + 1, STUCK_MS);
			return -1;
		}
	}
}

static int run_step(struct drive *d, int k, int block_ms, char *err, size_t errlen)
{
	const struct iso_step *st = &d->script->steps[k];
	struct sess *s = &d->s[st->s];
	struct iso_cell *c = d->cell;
	if (s->busy && collect(d, st->s, STUCK_MS, err, errlen) < 0)
		return -1;
	if (s->busy) {
		snprintf(err, errlen, "T%d still blocked before step %d", st->s + 1, k + 1);
		return -1;
	}
	if (c->ntrace >= ISO_TRACE_MAX) {
		/* a step never run would decide the cell on half a script */
		snprintf(err, errlen, "a script longer than its trace (%d steps)", ISO_TRACE_MAX);
		return -1;
	}
	struct iso_trace_line *tl = &c->trace[c->ntrace];
	*tl = (struct iso_trace_line){.step = k, .session = st->s};
	snprintf(tl->sql, sizeof(tl->sql), "%s", st->sql);
	if (s->aborted) {
		snprintf(tl->got, sizeof(tl->got), "skipped: T%d was rolled back", st->s + 1);
		c->ntrace++;
		return 0;
	}
	s->line = c->ntrace++;
	s->blocked = false;
	if (!PQsendQuery(s->conn, st->sql)) {
		pg_conn_error(s->conn, err, errlen);
		return -1;
	}
	s->busy = true;
	if (collect(d, st->s, block_ms, err, errlen) < 0)
		return -1;
	/* a transaction ended: whoever waited for its locks goes on now */
	if (!s->busy && (strncmp(st->sql, "commit", 6) == 0 || strncmp(st->sql, "rollback", 8) == 0))
		for (int i = 0; i < d->script->nsessions; i++)
			if (d->s[i].busy && collect(d, i, block_ms, err, errlen) < 0)
				return -1;
	return 0;
}

static void decide(struct drive *d)
{
	struct iso_cell *c = d->cell;
	const struct iso_script *sc = d->script;
	bool all_committed = d->aborts == 0;
	for (int i = 0; i < sc->nsessions; i++)
		all_committed = all_committed && d->s[i].committed;
	if (d->error) {
		c->outcome = ISO_ERROR;
		snprintf(c->why, sizeof(c->why), "a step failed with an unexpected error");
	} else if (d->dirty) {
		c->outcome = ISO_ANOMALY;
		snprintf(c->why, sizeof(c->why), "T2 overwrote T1's uncommitted row without waiting");
	} else if (sc->final_bad && all_committed && strcmp(c->final_rows, sc->final_bad) == 0) {
		c->outcome = ISO_ANOMALY;
		snprintf(c->why, sizeof(c->why), "both committed, final %.60s", c->final_rows);
	} else if (sc->rule == RULE_ANY && d->bad_seen > 0)
		c->outcome = ISO_ANOMALY;
	else if (sc->rule == RULE_ALL_COMMITTED && d->bad_seen == d->bad_steps && all_committed) {
		c->outcome = ISO_ANOMALY;
		snprintf(c->why, sizeof(c->why), "each read the other's before-state, both committed");
	} else {
		c->outcome = d->aborts ? ISO_ABORTED : d->blocks ? ISO_BLOCKED : ISO_READ_OK;
		snprintf(c->why, sizeof(c->why), "%d aborted, %d blocked, %d anomalous reads", d->aborts,
		         d->blocks, d->bad_seen);
	}
}

#define SETUP                                                                                                \
	"drop table if exists test; create table test (id int primary key, value int);"                      \
	" insert into test (id, value) values (1, 10), (2, 20)"

int iso_drive(PGconn *const *sessions, PGconn *monitor, const struct iso_script *script, const char *level,
              int block_ms, struct iso_cell *cell, char *err, size_t errlen)
{
	struct drive d = {.mon = monitor, .script = script, .cell = cell};
	for (int k = 0; k < script->nsteps; k++)
		d.bad_steps += script->steps[k].bad != NULL;
	if (pg_exec(monitor, SETUP, err, errlen) < 0)
		return -1;
	char begin[64];
	snprintf(begin, sizeof(begin), "begin isolation level %s", level);
	for (int i = 0; i < script->nsessions; i++) {
		d.s[i].conn = sessions[i];
		if (pg_exec(sessions[i], begin, err, errlen) < 0)
			return -1;
	}
	int ret = 0;
	for (int k = 0; k < script->nsteps && ret == 0; k++)
		ret = run_step(&d, k, block_ms, err, errlen);
	for (int i = 0; i < script->nsessions && ret == 0; i++)
		if (d.s[i].busy && collect(&d, i, STUCK_MS, err, errlen) < 0)
			ret = -1;
	/* no session leaves a transaction open for the next cell, whatever happened */
	for (int i = 0; i < script->nsessions; i++)
		if (!d.s[i].busy)
			PQclear(PQexec(sessions[i], "rollback"));
	if (ret < 0)
		return -1;
	PGresult *res = pg_query(monitor, "select id, value from test order by id", 0, NULL, err, errlen);
	if (!res)
		return -1;
	rows_text(res, cell->final_rows, sizeof(cell->final_rows));
	PQclear(res);
	decide(&d);
	return 0;
}
