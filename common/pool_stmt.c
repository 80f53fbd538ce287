/*
 * pool_stmt.c — the bookkeeping of pool_query_prepared (pool.h): which named statements a pooled
 * connection has prepared, what a statement that ran tells about them, and the copy of the
 * parameters of a statement whose prepare goes first. pool_conn.c sends and reads.
 */
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

bool stmt_sqlstate_is(const PGresult *res, const char *code)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	return state && strcmp(state, code) == 0;
}

/* 1 when s (or its name with the same SQL) is prepared on c, 0 when not, -1 when its name is
 * taken by other SQL. */
int stmt_find(const struct pool_conn *c, const struct pool_stmt *s)
{
	for (int i = 0; i < c->nstmts; i++) {
		const struct pool_stmt *k = c->stmts[i];
		if (k == s)
			return 1;
		if (strcmp(k->name, s->name) == 0)
			return strcmp(k->sql, s->sql) == 0 ? 1 : -1;
	}
	return 0;
}

int stmt_remember(struct pool_conn *c, const struct pool_stmt *s)
{
	if (c->nstmts == c->stmts_cap) {
		int cap = c->stmts_cap ? 2 * c->stmts_cap : 8;
		const struct pool_stmt **grown = realloc(c->stmts, (size_t)cap * sizeof(*grown));
		if (!grown)
			return -1;
		c->stmts = grown;
		c->stmts_cap = cap;
	}
	c->stmts[c->nstmts++] = s;
	return 0;
}

/* s is not (or no longer) prepared on c: its next use prepares it again. */
void stmt_forget(struct pool_conn *c, const struct pool_stmt *s)
{
	for (int i = 0; i < c->nstmts; i++)
		if (c->stmts[i] == s || strcmp(c->stmts[i]->name, s->name) == 0) {
			c->stmts[i] = c->stmts[--c->nstmts];
			return;
		}
}

/*
 * What a statement that succeeded tells about the session's prepared statements: DISCARD ALL
 * and DEALLOCATE drop them (sql-injection's reset runs the first), so all are forgotten and
 * prepared again on their next use (one that survived answers 42P05, taken as prepared).
 */
void stmts_after(struct pool_conn *c, const PGresult *res)
{
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return;
	const char *cmd = PQcmdStatus((PGresult *)res);
	if (strcmp(cmd, "DISCARD ALL") == 0 || strncmp(cmd, "DEALLOCATE", 10) == 0)
		c->nstmts = 0;
}

/* The parameters of a statement that is prepared first: one block, freed by conn_query_clear. */
char **params_copy(const char *const *params, int n)
{
	size_t bytes = (size_t)n * sizeof(char *);
	for (int i = 0; i < n; i++)
		bytes += params[i] ? strlen(params[i]) + 1 : 0;
	char **out = malloc(bytes);
	if (!out)
		return NULL;
	char *at = (char *)(out + n);
	for (int i = 0; i < n; i++) {
		out[i] = NULL;
		if (params[i]) {
			size_t len = strlen(params[i]) + 1;
			memcpy(at, params[i], len);
			out[i] = at;
			at += len;
		}
	}
	return out;
}
