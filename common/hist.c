/*
 * hist.c — log-linear buckets: values below 2^(HIST_SUB_BITS+1) = 64 us each have a bucket of
 * their own; above, every power of two is split into 32 equal sub-buckets, so a bucket's width
 * is at most 1/32 of its lower bound, up to 2^HIST_TOP_BIT us. The last bucket takes every
 * sample past that: its upper bound is open, so a percentile that lands there answers max_us.
 */
#include <errno.h>
#include "hist.h"

#include <math.h>
#include <string.h>
#include <time.h>

#define SUB_COUNT (1u << HIST_SUB_BITS)

uint64_t hist_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

double hist_now_ms(void)
{
	return hist_now_us() / 1000.0;
}

void hist_sleep_us(int64_t us)
{
	if (us <= 0)
		return;
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

void hist_init(struct hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min_us = UINT64_MAX;
}

static int bucket_of(uint64_t v)
{
	if (v < 2 * SUB_COUNT)
		return (int)v;
	if (v >> HIST_TOP_BIT)
		return HIST_BUCKETS - 1;
	int msb = 63 - __builtin_clzll(v); /* >= HIST_SUB_BITS + 1 */
	int shift = msb - HIST_SUB_BITS;   /* keep the top HIST_SUB_BITS+1 bits */
	uint64_t top = v >> shift;         /* in [SUB_COUNT, 2*SUB_COUNT) */
	return (shift + 1) * (int)SUB_COUNT + (int)(top - SUB_COUNT);
}

/* The largest value that falls into bucket idx. */
static uint64_t bucket_upper(int idx)
{
	if (idx == HIST_BUCKETS - 1)
		return UINT64_MAX; /* past 2^HIST_TOP_BIT: only max_us knows how far they went */
	if (idx < (int)(2 * SUB_COUNT))
		return (uint64_t)idx;
	int shift = idx / (int)SUB_COUNT - 1;
	uint64_t top = (uint64_t)(idx % (int)SUB_COUNT) + SUB_COUNT;
	return ((top + 1) << shift) - 1;
}

void hist_record(struct hist *h, uint64_t us)
{
	h->buckets[bucket_of(us)]++;
	h->count++;
	h->sum_us += us;
	if (us < h->min_us)
		h->min_us = us;
	if (us > h->max_us)
		h->max_us = us;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	for (int i = 0; i < HIST_BUCKETS; i++)
		into->buckets[i] += from->buckets[i];
	into->count += from->count;
	into->sum_us += from->sum_us;
	if (from->min_us < into->min_us)
		into->min_us = from->min_us;
	if (from->max_us > into->max_us)
		into->max_us = from->max_us;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
	if (h->count == 0)
		return 0;
	if (p >= 100.0)
		return h->max_us;
	if (p < 0.0)
		p = 0.0;
	/*
	 * The rank of the sample at p, 1-based, rounded up: p50 of 2 samples is the first. The
	 * relative nudge keeps 0.99 x 100 = 99.00000000000001 from rounding up to rank 100.
	 */
	double x = p * (double)h->count / 100.0;
	uint64_t rank = (uint64_t)ceil(x - x * 1e-12);
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (int i = 0; i < HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t upper = bucket_upper(i);
			return upper < h->max_us ? upper : h->max_us;
		}
	}
	return h->max_us;
}

double hist_mean_us(const struct hist *h)
{
	return h->count ? (double)h->sum_us / (double)h->count : 0.0;
}
