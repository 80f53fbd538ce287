/*
 * hist.h — the clock and the latency recorder every lab measures with.
 *
 * A histogram with fixed memory (about 9 KiB) over microseconds: log-linear buckets, exact
 * below 64 us and within 1/32 (about 3%) above, up to 2^40 us (about 12.7 days). Samples
 * past that share one overflow bucket whose bound is max_us; min, max, count and sum stay
 * exact whatever the sample. Fixed memory matters:
 * a pool's wait-time distribution under `--serve` runs for hours, and a load generator at
 * 40k req/s would otherwise keep millions of samples.
 *
 * Not thread-safe: one recorder per thread, merged after the threads are done.
 */
#ifndef LAB_HIST_H
#define LAB_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 5
/* one per value below 64 us, 32 per power of two from 2^6 to 2^40 us, one past 2^40 us */
#define HIST_TOP_BIT 40
#define HIST_BUCKETS ((HIST_TOP_BIT - HIST_SUB_BITS + 1) * (1 << HIST_SUB_BITS) + 1)

struct hist {
	uint64_t count;
	uint64_t sum_us;
	uint64_t min_us; /* UINT64_MAX while empty */
	uint64_t max_us;
	uint64_t buckets[HIST_BUCKETS];
};

/* Microseconds on a monotonic clock (CLOCK_MONOTONIC). This function can't fail. */
uint64_t hist_now_us(void);
/* The same clock in milliseconds, for deadlines counted in ms. This function can't fail. */
double hist_now_ms(void);
/* Sleeps us microseconds, the whole of them even when a signal interrupts; nothing for us <= 0. */
void hist_sleep_us(int64_t us);

/* Empties h. This function can't fail. */
void hist_init(struct hist *h);

/* Records one sample of us microseconds. This function can't fail. */
void hist_record(struct hist *h, uint64_t us);

/* Adds every sample of from into into. This function can't fail. */
void hist_merge(struct hist *into, const struct hist *from);

/*
 * The value at percentile p (0..100) in microseconds: the upper bound of the bucket that holds
 * it, never above max_us, so within 1/32 of the true value (exact below 64 us). 0 for an empty
 * histogram. p=100 returns max_us exactly; p <= 0 the bound of the lowest sample's bucket.
 */
uint64_t hist_percentile(const struct hist *h, double p);

/* Mean in microseconds, 0 for an empty histogram. */
double hist_mean_us(const struct hist *h);

#endif
