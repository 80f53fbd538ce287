/*
 * test_hist.c — the latency recorder of hist.h against the plain truth: a sorted array of the
 * same samples. Percentiles land within their bucket's relative error (exact below 64 us,
 * within 1/32 above), merging equals recording everything in one, the range reaches 2^40 us
 * and what lies past it is clamped without losing max, count or sum. Pure: no server.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hist.h"
#include "rng.h"

#define N_SAMPLES 100000

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The sample at percentile p of sorted[0..n): the same rank rule hist.h states (rounded up). */
static uint64_t true_percentile(const uint64_t *sorted, size_t n, double p)
{
	size_t rank = (size_t)ceil(p * (double)n / 100.0 - 1e-9);
	if (rank < 1)
		rank = 1;
	return sorted[rank - 1];
}

/* Log-uniform over [1, max_us]: every decade of latencies gets samples, as real ones do. */
static uint64_t *log_uniform_samples(uint64_t seed, size_t n, double max_us)
{
	uint64_t st = seed, *v = malloc(n * sizeof(*v));
	if (!v)
		return NULL;
	for (size_t i = 0; i < n; i++)
		v[i] = (uint64_t)exp(rng_unit(&st) * log(max_us));
	return v;
}

static void test_sleep_lasts_at_least_what_was_asked_and_nothing_for_zero(void **state)
{
	(void)state;
	uint64_t t0 = hist_now_us();
	hist_sleep_us(2000);
	assert_true(hist_now_us() - t0 >= 2000); /* nanosleep never returns early but by a signal, retried */
	double m0 = hist_now_ms();
	hist_sleep_us(0);
	hist_sleep_us(-5);
	assert_true(hist_now_ms() >= m0);
}

static void test_an_empty_histogram_answers_zero(void **state)
{
	(void)state;
	struct hist h;
	hist_init(&h);
	assert_int_equal(h.count, 0);
	assert_int_equal(h.min_us, UINT64_MAX);
	assert_int_equal(h.max_us, 0);
	assert_int_equal(hist_percentile(&h, 50), 0);
	assert_int_equal(hist_percentile(&h, 100), 0);
	assert_true(hist_mean_us(&h) == 0.0);

	/* merging an empty one changes nothing, min included */
	struct hist g;
	hist_init(&g);
	hist_record(&g, 7);
	hist_merge(&g, &h);
	assert_int_equal(g.count, 1);
	assert_int_equal(g.min_us, 7);
	assert_int_equal(hist_percentile(&g, 50), 7);
}

static void test_values_below_64_us_are_exact(void **state)
{
	(void)state;
	struct hist h;
	hist_init(&h);
	for (uint64_t v = 0; v < 64; v++)
		hist_record(&h, v);
	/* 64 samples 0..63: the sample at rank r is r - 1 */
	for (int r = 1; r <= 64; r++)
		assert_int_equal(hist_percentile(&h, 100.0 * r / 64.0), (uint64_t)(r - 1));
	assert_int_equal(h.min_us, 0);
	assert_int_equal(h.max_us, 63);
	assert_true(fabs(hist_mean_us(&h) - 31.5) < 1e-9);
}

static void test_percentiles_land_within_their_buckets_relative_error(void **state)
{
	(void)state;
	static const double ps[] = {0.1, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100};
	uint64_t *v = log_uniform_samples(42, N_SAMPLES, 1e9);
	assert_non_null(v);
	struct hist h;
	hist_init(&h);
	uint64_t sum = 0;
	for (size_t i = 0; i < N_SAMPLES; i++) {
		hist_record(&h, v[i]);
		sum += v[i];
	}
	qsort(v, N_SAMPLES, sizeof(*v), cmp_u64);
	assert_int_equal(h.count, N_SAMPLES);
	assert_int_equal(h.sum_us, sum);
	assert_int_equal(h.min_us, v[0]);
	assert_int_equal(h.max_us, v[N_SAMPLES - 1]);
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		uint64_t want = true_percentile(v, N_SAMPLES, ps[i]);
		uint64_t got = hist_percentile(&h, ps[i]);
		/* the bound of the sample's own bucket: never below it, less than 1/32 above it */
		if (got < want || got - want > want / 32)
			fail_msg("p%g: the sorted samples say %llu us, the histogram %llu us", ps[i],
			         (unsigned long long)want, (unsigned long long)got);
	}
	assert_int_equal(hist_percentile(&h, 100), v[N_SAMPLES - 1]);
	free(v);
}

static void test_merging_equals_recording_everything_in_one(void **state)
{
	(void)state;
	uint64_t *a = log_uniform_samples(1, N_SAMPLES / 2, 1e7);
	uint64_t *b = log_uniform_samples(2, N_SAMPLES / 2, 1e10);
	assert_non_null(a);
	assert_non_null(b);
	struct hist ha, hb, all;
	hist_init(&ha);
	hist_init(&hb);
	hist_init(&all);
	for (size_t i = 0; i < N_SAMPLES / 2; i++) {
		hist_record(&ha, a[i]);
		hist_record(&all, a[i]);
		hist_record(&hb, b[i]);
		hist_record(&all, b[i]);
	}
	hist_merge(&ha, &hb);
	assert_int_equal(ha.count, all.count);
	assert_int_equal(ha.sum_us, all.sum_us);
	assert_int_equal(ha.min_us, all.min_us);
	assert_int_equal(ha.max_us, all.max_us);
	assert_memory_equal(ha.buckets, all.buckets, sizeof(all.buckets));
	for (double p = 0; p <= 100; p += 12.5)
		assert_int_equal(hist_percentile(&ha, p), hist_percentile(&all, p));
	free(a);
	free(b);
}

static void test_the_range_reaches_2_to_the_40_us_and_clamps_past_it(void **state)
{
	(void)state;
	const uint64_t top = (1ull << HIST_TOP_BIT) - 1; /* about 12.7 days */
	struct hist h;

	/* the largest value inside the range keeps its 1/32 */
	hist_init(&h);
	hist_record(&h, top - top / 20);
	hist_record(&h, top);
	uint64_t p50 = hist_percentile(&h, 50);
	assert_true(p50 >= top - top / 20 && p50 - (top - top / 20) <= (top - top / 20) / 32);

	/* past it: one overflow bucket, answered by max_us (an upper bound), totals exact */
	hist_init(&h);
	hist_record(&h, 1000);
	hist_record(&h, 1ull << 45);
	hist_record(&h, 1ull << 50);
	hist_record(&h, UINT64_MAX / 4);
	assert_int_equal(h.count, 4);
	assert_int_equal(h.max_us, UINT64_MAX / 4);
	assert_int_equal(h.min_us, 1000);
	assert_int_equal(h.buckets[HIST_BUCKETS - 1], 3);
	assert_int_equal(hist_percentile(&h, 100), UINT64_MAX / 4);
	assert_int_equal(hist_percentile(&h, 50), UINT64_MAX / 4);
	/* the sample below the range is untouched by its neighbours above it */
	uint64_t p25 = hist_percentile(&h, 25);
	assert_true(p25 >= 1000 && p25 - 1000 <= 1000 / 32);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_sleep_lasts_at_least_what_was_asked_and_nothing_for_zero),
	        cmocka_unit_test(test_an_empty_histogram_answers_zero),
	        cmocka_unit_test(test_values_below_64_us_are_exact),
	        cmocka_unit_test(test_percentiles_land_within_their_buckets_relative_error),
	        cmocka_unit_test(test_merging_equals_recording_everything_in_one),
	        cmocka_unit_test(test_the_range_reaches_2_to_the_40_us_and_clamps_past_it),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
