/*
 * proxy.c — the latency and fault proxy of proxy.h: raw non-blocking sockets and evbuffers on a
 * libevent loop of its own, in a thread of its own.
 *
 * This file holds the public API (proxy_start, the control functions, proxy_free), the loop's
 * thread and the calls that run a control function on it, the upstream's resolution and the
 * listener. proxy_relay.c holds an accepted connection's relay, with how it works;
 * proxy_internal.h the structures the two share.
 */
#include "proxy.h"
#include "hist.h"
#include "proxy_internal.h"
#include "loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Out of descriptors: try accepting again after this long, not in a busy loop. */
#define PROXY_ACCEPT_PAUSE_MS 10

static void proxy_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct proxy *p = arg;
	if (p->listener)
		evconnlistener_enable(p->listener);
}

static void proxy_accept_error_cb(struct evconnlistener *l, void *arg)
{
	/*
	 * Out of descriptors (EMFILE) or memory: the connection stays in the backlog, and the
	 * listener, still readable, would spin the loop. Pause accepting for a moment instead.
	 */
	struct proxy *p = arg;
	struct timeval tv = {.tv_sec = 0, .tv_usec = PROXY_ACCEPT_PAUSE_MS * 1000};
	/* without the timer that resumes it, a paused listener would never accept again: keep it */
	if (evtimer_add(p->accept_resume_ev, &tv) == 0)
		evconnlistener_disable(l);
}

static void *proxy_thread_main(void *arg)
{
	struct proxy *p = arg;
	/* by name in top -H, perf and bench_proxy's count of the thread's wake-ups */
	pthread_setname_np(pthread_self(), PROXY_THREAD_NAME);
	event_base_loop(p->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static void proxy_call_cb(void *arg)
{
	struct proxy_call *call = arg;
	call->ret = call->fn(call->p, call->arg);
}

/* Runs fn on the loop thread and returns its result; -1 when the loop cannot be reached. */
static int proxy_call(struct proxy *p, int (*fn)(struct proxy *, void *), void *arg)
{
	struct proxy_call call = {.p = p, .fn = fn, .arg = arg, .ret = -1};
	if (!p->thread_started || loop_call(p->base, p->tid, proxy_call_cb, &call) != 0)
		return -1;
	return call.ret;
}

static int proxy_noop_fn(struct proxy *p, void *arg)
{
	(void)p;
	(void)arg;
	return 0;
}

/*
 * Sets p->upstream from host: a numeric IPv4 or IPv6 address as it is, a host name resolved
 * once, here, to its first IPv4 address (the labs' servers listen on 127.0.0.1, and "localhost"
 * may list ::1 first), or its first IPv6 address when it has none. -1 and err when it does not
 * resolve.
 */
static int proxy_resolve_upstream(struct proxy *p, const char *host, int port, char *err, size_t errlen)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)&p->upstream;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&p->upstream;
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;

	memset(&p->upstream, 0, sizeof(p->upstream));
	if (evutil_inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		p->upstream_len = sizeof(*in4);
	} else if (evutil_inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		p->upstream_len = sizeof(*in6);
	} else {
		int rc = getaddrinfo(host, NULL, &hints, &res);
		if (rc != 0) {
			snprintf(err, errlen, "proxy: cannot resolve upstream host \"%.64s\": %s", host,
			         rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
			return -1;
		}
		const struct addrinfo *pick = NULL;
		for (const struct addrinfo *ai = res; ai; ai = ai->ai_next)
			if ((ai->ai_family == AF_INET && (!pick || pick->ai_family != AF_INET)) ||
			    (ai->ai_family == AF_INET6 && !pick))
				pick = ai;
		if (!pick || pick->ai_addrlen > sizeof(p->upstream)) {
			freeaddrinfo(res);
			snprintf(err, errlen, "proxy: upstream host \"%.64s\" has no IPv4 or IPv6 address",
			         host);
			return -1;
		}
		memcpy(&p->upstream, pick->ai_addr, pick->ai_addrlen);
		p->upstream_len = (socklen_t)pick->ai_addrlen;
		freeaddrinfo(res);
	}
	if (p->upstream.ss_family == AF_INET)
		in4->sin_port = htons((uint16_t)port);
	else
		in6->sin6_port = htons((uint16_t)port);
	return 0;
}

/* Frees what p holds once its loop no longer runs (or never ran), and p. */
static void proxy_release(struct proxy *p)
{
	while (p->conns)
		proxy_conn_close(p->conns);
	if (p->accept_resume_ev)
		event_free(p->accept_resume_ev);
	if (p->timer_ev)
		event_free(p->timer_ev);
	if (p->timer_fd >= 0)
		close(p->timer_fd);
	if (p->listener)
		evconnlistener_free(p->listener);
	if (p->base)
		event_base_free(p->base);
	free(p);
}

/* The config's values in range; -1 and err naming the first one that is not. */
static int proxy_check_config(const struct proxy_config *cfg, char *err, size_t errlen)
{
	if (!cfg) {
		snprintf(err, errlen, "proxy_start: no config");
		return -1;
	}
	if (cfg->upstream_port <= 0 || cfg->upstream_port > 65535) {
		snprintf(err, errlen, "proxy: upstream port %d is not in 1..65535", cfg->upstream_port);
		return -1;
	}
	if (cfg->listen_port < 0 || cfg->listen_port > 65535) {
		snprintf(err, errlen, "proxy: listen port %d is not in 0..65535", cfg->listen_port);
		return -1;
	}
	if (cfg->delay_up_us < 0 || cfg->delay_down_us < 0 || cfg->bandwidth_bps < 0) {
		snprintf(err, errlen, "proxy: delays and bandwidth must not be negative");
		return -1;
	}
	return 0;
}

/* p's base, its timerfd (proxy_timer_open) and its listener on 127.0.0.1:listen_port; -1 and err. */
static int proxy_listen(struct proxy *p, int listen_port, char *err, size_t errlen)
{
	/*
	 * No EVENT_BASE_FLAG_PRECISE_TIMER: its epoll backend calls timerfd_settime on every turn
	 * of the loop, two syscalls more per round trip at zero delay. The delays and the bucket
	 * use the proxy's own timerfd instead (proxy_timer_open), precise to the microsecond and
	 * set only when the next wake moves earlier; libevent's own timers (the accept pause, the
	 * connect timeout, the control calls) need no precision.
	 */
	p->base = event_base_new();
	if (!p->base || proxy_timer_open(p) != 0) {
		snprintf(err, errlen, "proxy: cannot make its event loop or timer: %s", strerror(errno));
		return -1;
	}
	/* 127.0.0.1 only: the proxy forwards to a database with a known password */
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)listen_port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->listener =
	        evconnlistener_new_bind(p->base, proxy_accept_cb, p,
	                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	                                SOMAXCONN, (struct sockaddr *)&sin, sizeof(sin));
	if (!p->listener) {
		snprintf(err, errlen, "proxy: cannot listen on 127.0.0.1:%d: %s", listen_port,
		         evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		return -1;
	}
	p->accept_resume_ev = evtimer_new(p->base, proxy_accept_resume_cb, p);
	if (!p->accept_resume_ev) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	evconnlistener_set_error_cb(p->listener, proxy_accept_error_cb);
	struct sockaddr_in bound;
	socklen_t boundlen = sizeof(bound);
	if (getsockname(evconnlistener_get_fd(p->listener), (struct sockaddr *)&bound, &boundlen) != 0) {
		snprintf(err, errlen, "proxy: getsockname on the listening socket: %s", strerror(errno));
		return -1;
	}
	p->port = ntohs(bound.sin_port);
	return 0;
}

struct proxy *proxy_start(const struct proxy_config *cfg, char *err, size_t errlen)
{
	if (proxy_check_config(cfg, err, errlen) != 0)
		return NULL;
	if (loop_threads_init() != 0) {
		snprintf(err, errlen, "proxy: cannot enable libevent's pthreads locking");
		return NULL;
	}
	loop_sigpipe_ignore();
	struct proxy *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->timer_fd = -1;
	const char *host = cfg->upstream_host ? cfg->upstream_host : "127.0.0.1";
	if (proxy_resolve_upstream(p, host, cfg->upstream_port, err, errlen) != 0 ||
	    proxy_listen(p, cfg->listen_port, err, errlen) != 0) {
		proxy_release(p);
		return NULL;
	}
	p->delay_up_us = cfg->delay_up_us;
	p->delay_down_us = cfg->delay_down_us;
	p->bandwidth_bps = cfg->bandwidth_bps;

	int rc = pthread_create(&p->tid, NULL, proxy_thread_main, p);
	if (rc != 0) {
		snprintf(err, errlen, "proxy: pthread_create: %s", strerror(rc));
		proxy_release(p);
		return NULL;
	}
	p->thread_started = true;
	/* the loop answers before anyone may rely on it */
	if (proxy_call(p, proxy_noop_fn, NULL) != 0) {
		snprintf(err, errlen, "proxy: the loop thread did not answer");
		proxy_free(p);
		return NULL;
	}
	return p;
}

int proxy_port(const struct proxy *p)
{
	return p->port;
}

struct proxy_delays {
	int up_us, down_us;
};

static int proxy_set_delay_fn(struct proxy *p, void *arg)
{
	struct proxy_delays *d = arg;
	p->delay_up_us = d->up_us;
	p->delay_down_us = d->down_us;
	return 0;
}

int proxy_set_delay(struct proxy *p, int delay_up_us, int delay_down_us)
{
	struct proxy_delays d = {delay_up_us, delay_down_us};
	if (!p || delay_up_us < 0 || delay_down_us < 0)
		return -1;
	return proxy_call(p, proxy_set_delay_fn, &d);
}

static int proxy_set_bandwidth_fn(struct proxy *p, void *arg)
{
	int64_t bps = *(int64_t *)arg;
	uint64_t now = hist_now_us();
	p->bandwidth_bps = bps;
	for (struct proxy_conn *c = p->conns, *next; c; c = next) {
		next = c->next;
		if (c->connect_ev)
			continue; /* not forwarding yet: proxy_connected_cb starts the pipes */
		struct proxy_pipe *pipes[2] = {&c->up, &c->down};
		for (int i = 0; i < 2; i++) {
			/* for bytes read from now on: an empty bucket at the new rate, checked at the next
			 * read */
			pipes[i]->tokens = 0;
			pipes[i]->tokens_at_us = now;
			pipes[i]->bw_paused = false;
		}
		if (proxy_pipe_rearm(&c->up, now) != 0 || proxy_pipe_rearm(&c->down, now) != 0)
			proxy_conn_close(c);
	}
	return 0;
}

int proxy_set_bandwidth(struct proxy *p, int64_t bandwidth_bps)
{
	if (!p || bandwidth_bps < 0)
		return -1;
	return proxy_call(p, proxy_set_bandwidth_fn, &bandwidth_bps);
}

static int proxy_refuse_fn(struct proxy *p, void *arg)
{
	p->refuse = *(bool *)arg;
	return 0;
}

int proxy_refuse(struct proxy *p, bool refuse)
{
	if (!p)
		return -1;
	return proxy_call(p, proxy_refuse_fn, &refuse);
}

static int proxy_cut_fn(struct proxy *p, void *arg)
{
	(void)arg;
	int n = 0;
	while (p->conns) {
		proxy_conn_close(p->conns);
		p->stats.cut++;
		n++;
	}
	return n;
}

int proxy_cut(struct proxy *p)
{
	if (!p)
		return -1;
	return proxy_call(p, proxy_cut_fn, NULL);
}

static int proxy_stats_fn(struct proxy *p, void *arg)
{
	*(struct proxy_stats *)arg = p->stats;
	return 0;
}

void proxy_stats(struct proxy *p, struct proxy_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (p)
		proxy_call(p, proxy_stats_fn, out);
}

static int proxy_stop_fn(struct proxy *p, void *arg)
{
	(void)arg;
	while (p->conns)
		proxy_conn_close(p->conns);
	evconnlistener_free(p->listener);
	p->listener = NULL;
	event_free(p->accept_resume_ev);
	p->accept_resume_ev = NULL;
	/* from inside the loop: a break cannot be lost the way one sent before the loop starts can */
	event_base_loopbreak(p->base);
	return 0;
}

void proxy_free(struct proxy *p)
{
	if (!p)
		return;
	if (p->thread_started) {
		if (proxy_call(p, proxy_stop_fn, NULL) != 0)
			event_base_loopbreak(p->base); /* no memory for the call: stop it the blunt way */
		pthread_join(p->tid, NULL);
	}
	proxy_release(p);
}
