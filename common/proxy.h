/*
 * proxy.h — a latency and fault proxy on loopback, so a lab can show what a real network does:
 * N+1 over a 1 ms round trip is not N+1 over 30 us, and a cache that goes away mid-run must be
 * survived, not crashed on.
 *
 * The proxy listens on 127.0.0.1 only and forwards each accepted connection to an upstream
 * host:port (a PostgreSQL or a Redis server), byte for byte, in both directions. It can add a
 * delay to each direction (every byte read is held until its own arrival time + delay, so a
 * round trip costs delay_up + delay_down and throughput is not cut by the delay alone), limit
 * each direction's bandwidth, refuse new connections, and cut every open connection at once
 * (both sides closed: the client sees its server go away).
 *
 * It runs its own libevent loop in a thread of its own (its delays precise to the microsecond:
 * a timerfd of its own), so it works beside any lab and any blocking client. That
 * thread is named PROXY_THREAD_NAME. At zero delay a read is written on at once, from the read
 * itself: a round trip costs the proxy's thread two wake-ups and no timer.
 *
 * Threads: every function but proxy_free may be called from any thread, several at once; each
 * runs on the proxy's loop and returns after it took effect there (stats are a consistent
 * snapshot). proxy_free must be the last call: join or stop every thread that uses p before it,
 * for a call that starts or is still waiting while p is freed would wait forever or use freed
 * memory. Errors: NULL or -1 and one line in err (errlen bytes).
 */
#ifndef LAB_PROXY_H
#define LAB_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct proxy;

/* The name of every proxy's loop thread (/proc/self/task/TID/comm). */
#define PROXY_THREAD_NAME "lab-proxy"

struct proxy_config {
	/*
	 * A numeric IPv4 or IPv6 address, or a host name resolved once by proxy_start (its first
	 * IPv4 address, else its first IPv6 one); "127.0.0.1" when NULL.
	 */
	const char *upstream_host;
	int upstream_port;
	int listen_port;       /* 0 = a free port (see proxy_port) */
	int delay_up_us;       /* client to upstream */
	int delay_down_us;     /* upstream to client */
	int64_t bandwidth_bps; /* bytes per second per direction per connection; 0 = unlimited */
};

struct proxy_stats {
	uint64_t accepted;        /* connections accepted */
	uint64_t active;          /* open now */
	uint64_t refused;         /* closed at accept because of proxy_refuse */
	uint64_t cut;             /* closed by proxy_cut */
	uint64_t upstream_errors; /* the upstream refused or failed */
	uint64_t bytes_up;        /* delivered to the upstream */
	uint64_t bytes_down;      /* delivered to clients */
};

/* Starts the proxy and its thread. NULL and err when it cannot listen or start. */
struct proxy *proxy_start(const struct proxy_config *cfg, char *err, size_t errlen);

/* The port it listens on (127.0.0.1). */
int proxy_port(const struct proxy *p);

/* Changes the delays for bytes read from now on. -1 if the proxy's loop did not answer. */
int proxy_set_delay(struct proxy *p, int delay_up_us, int delay_down_us);

/* Changes the bandwidth limit (0 = unlimited) for bytes read from now on. */
int proxy_set_bandwidth(struct proxy *p, int64_t bandwidth_bps);

/* refuse: new connections are accepted and closed at once (a server that went away). */
int proxy_refuse(struct proxy *p, bool refuse);

/* Closes every open connection, both sides, now. Returns how many were cut, -1 on failure. */
int proxy_cut(struct proxy *p);

/* A snapshot of the counters. */
void proxy_stats(struct proxy *p, struct proxy_stats *out);

/* Stops the thread, closes every connection, frees p. NULL is a no-op. */
void proxy_free(struct proxy *p);

#endif
