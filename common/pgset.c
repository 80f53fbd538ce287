/* pgset.c — a fixed set of blocking PostgreSQL connections shared by threads (see pgset.h). */
#include "pgset.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "pg.h"

struct pgset {
	pthread_mutex_t mu;
	pthread_cond_t back; /* a connection came back (on CLOCK_MONOTONIC, for the timeout) */
	PGconn **conns;      /* every connection, for close */
	PGconn **idle;       /* the free ones: a stack of nidle */
	int n, nidle;
};

/* One connection, opened in a thread of its own. */
struct opener {
	const char *url;
	const char *const *keys, *const *vals;
	PGconn *conn;
	pthread_t thread;
	bool started;
	char err[256];
};

static void *open_one_cb(void *arg)
{
	struct opener *o = arg;
	o->conn = pg_connect_with(o->url, o->keys, o->vals, o->err, sizeof(o->err));
	return NULL;
}

/* Opens n connections in parallel into s->conns; -1 and the first error when any failed. */
static int open_all(struct pgset *s, const char *url, const char *const *keys, const char *const *vals,
                    char *err, size_t errlen)
{
	struct opener *o = calloc((size_t)s->n, sizeof(*o));
	if (!o) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (int i = 0; i < s->n; i++) {
		o[i] = (struct opener){.url = url, .keys = keys, .vals = vals};
		if (pthread_create(&o[i].thread, NULL, open_one_cb, &o[i]) == 0)
			o[i].started = true;
		else
			snprintf(o[i].err, sizeof(o[i].err), "cannot start a thread to connect");
	}
	int ret = 0;
	for (int i = 0; i < s->n; i++) {
		if (o[i].started)
			pthread_join(o[i].thread, NULL);
		s->conns[i] = o[i].conn;
		if (o[i].conn)
			s->idle[s->nidle++] = o[i].conn;
		else if (ret == 0) {
			snprintf(err, errlen, "%s", o[i].err);
			ret = -1;
		}
	}
	free(o);
	return ret;
}

struct pgset *pgset_open(const char *url, const char *const *extra_keys, const char *const *extra_vals, int n,
                         char *err, size_t errlen)
{
	if (n < 1) {
		snprintf(err, errlen, "a connection set needs at least one connection, not %d", n);
		return NULL;
	}
	struct pgset *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->back, &ca);
	pthread_condattr_destroy(&ca);
	s->n = n;
	s->conns = calloc((size_t)n, sizeof(*s->conns));
	s->idle = calloc((size_t)n, sizeof(*s->idle));
	if (!s->conns || !s->idle) {
		snprintf(err, errlen, "out of memory");
		pgset_close(s);
		return NULL;
	}
	if (open_all(s, url, extra_keys, extra_vals, err, errlen) < 0) {
		pgset_close(s);
		return NULL;
	}
	return s;
}

int pgset_size(const struct pgset *s)
{
	return s->n;
}

PGconn *pgset_borrow(struct pgset *s, int timeout_ms, char *err, size_t errlen)
{
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	PGconn *c = NULL;
	pthread_mutex_lock(&s->mu);
	int rc = 0;
	while (s->nidle == 0 && timeout_ms > 0 && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&s->back, &s->mu, &until);
	if (s->nidle > 0)
		c = s->idle[--s->nidle];
	pthread_mutex_unlock(&s->mu);
	if (!c)
		snprintf(err, errlen, "no connection free within %d ms: all %d lent", timeout_ms, s->n);
	return c;
}

void pgset_return(struct pgset *s, PGconn *conn)
{
	pthread_mutex_lock(&s->mu);
	/* one of ours, and lent: anything else is a bug that would let two threads share a PGconn */
	bool ours = false, idle = false;
	for (int i = 0; i < s->n; i++)
		ours |= s->conns[i] == conn;
	for (int i = 0; i < s->nidle; i++)
		idle |= s->idle[i] == conn;
	if (!ours || idle || s->nidle >= s->n) {
		fprintf(stderr, "pgset_return: %s\n",
		        !ours ? "not a connection of this set" : "returned twice");
		abort();
	}
	s->idle[s->nidle++] = conn;
	pthread_cond_signal(&s->back);
	pthread_mutex_unlock(&s->mu);
}

void pgset_close(struct pgset *s)
{
	if (!s)
		return;
	for (int i = 0; s->conns && i < s->n; i++)
		if (s->conns[i])
			PQfinish(s->conns[i]);
	free(s->conns);
	free(s->idle);
	pthread_cond_destroy(&s->back);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
