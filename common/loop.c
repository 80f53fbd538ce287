/*
 * loop.c — process-wide libevent set-up and the cross-thread call of loop.h.
 */
#include "loop.h"

#include <event2/thread.h>
#include <signal.h>
#include <stdbool.h>

static pthread_once_t loop_threads_once = PTHREAD_ONCE_INIT;
static int loop_threads_rc = -1;
static pthread_once_t loop_sigpipe_once = PTHREAD_ONCE_INIT;

static void loop_threads_cb(void)
{
	loop_threads_rc = evthread_use_pthreads();
}

int loop_threads_init(void)
{
	if (pthread_once(&loop_threads_once, loop_threads_cb) != 0)
		return -1;
	return loop_threads_rc == 0 ? 0 : -1;
}

static void loop_sigpipe_cb(void)
{
	/* a handler the program installed itself is left alone */
	struct sigaction old;
	if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
		signal(SIGPIPE, SIG_IGN);
}

void loop_sigpipe_ignore(void)
{
	pthread_once(&loop_sigpipe_once, loop_sigpipe_cb);
}

/* What loop_call hands to the loop thread: lives on the caller's stack until done. */
struct loop_call {
	void (*fn)(void *);
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool done;
};

static void loop_call_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct loop_call *c = arg;
	c->fn(c->arg);
	pthread_mutex_lock(&c->mu);
	c->done = true;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

int loop_call(struct event_base *base, pthread_t loop_tid, void (*fn)(void *), void *arg)
{
	const struct timeval now = {0, 0};
	struct loop_call c = {.fn = fn, .arg = arg};
	int ret = -1;

	if (!base || !fn)
		return -1;
	/* from the loop thread itself, waiting for the loop would wait forever */
	if (pthread_equal(pthread_self(), loop_tid)) {
		fn(arg);
		return 0;
	}
	pthread_mutex_init(&c.mu, NULL);
	pthread_cond_init(&c.cond, NULL);
	if (event_base_once(base, -1, EV_TIMEOUT, loop_call_cb, &c, &now) == 0) {
		pthread_mutex_lock(&c.mu);
		while (!c.done)
			pthread_cond_wait(&c.cond, &c.mu);
		pthread_mutex_unlock(&c.mu);
		ret = 0;
	}
	pthread_cond_destroy(&c.cond);
	pthread_mutex_destroy(&c.mu);
	return ret;
}
