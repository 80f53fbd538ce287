/*
 * pgset.h — a fixed set of blocking PostgreSQL connections shared by threads: borrow one, use
 * it alone, return it; a borrower that finds none free waits, at most a timeout.
 *
 * The simplest honest model of an application server's pool when its workers are threads with
 * blocking libpq (an event loop uses pool.h instead). Every connection opens at pgset_open, all
 * at once, and stays open until pgset_close: nothing grows, shrinks, is checked or replaced
 * behind the borrowers' backs. So a connection whose server went away comes back from its
 * borrower broken (PQstatus() == CONNECTION_BAD) and the next borrower's query fails too: the
 * caller decides what a lost server means (a lab ends, see lab_lost).
 *
 * Waiters are woken as connections come back, in no promised order (one mutex, one condition
 * variable). Every function may be called from any thread. Errors: NULL and one line in err
 * (errlen bytes).
 */
#ifndef LAB_PGSET_H
#define LAB_PGSET_H

#include <libpq-fe.h>
#include <stddef.h>

struct pgset;

/*
 * Opens n (>= 1) connections to url with pg_connect_with(url, extra_keys, extra_vals), in
 * parallel (n authentications take about as long as one): extra keys override the URL's
 * (options such as "-c jit=off" for every session, a proxy's host and port), and every
 * connection carries the process's application_name. NULL and err (the first connection's
 * error) when any of them fails; then none is left open.
 */
struct pgset *pgset_open(const char *url, const char *const *extra_keys, const char *const *extra_vals, int n,
                         char *err, size_t errlen);

/* How many connections the set holds (its n). */
int pgset_size(const struct pgset *s);

/*
 * Lends a connection that nobody else holds until it is returned. Waits for one to come back
 * when all are lent, at most timeout_ms (0 or less: does not wait). NULL and err ("no connection free
 * within 200 ms: all 4 lent") when none came back in time.
 */
PGconn *pgset_borrow(struct pgset *s, int timeout_ms, char *err, size_t errlen);

/*
 * Gives back a connection that pgset_borrow lent, as it is, and wakes a waiter. A connection not
 * of this set, or one given back twice, aborts the program: two threads would share it.
 */
void pgset_return(struct pgset *s, PGconn *conn);

/* Closes every connection and frees s; every borrowed connection must have been returned first.
 * NULL is a no-op. */
void pgset_close(struct pgset *s);

#endif
