/*
 * rng.h — the suite's one random number generator: splitmix64, seeded from --seed, so a run's
 * data and choices repeat on every machine; one state per thread (no locks, no sharing).
 * Not for secrets: rng_token reads the kernel's generator for those.
 */
#ifndef LAB_RNG_H
#define LAB_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The next 64 random bits; advances *state. This function can't fail. */
uint64_t rng_next(uint64_t *state);

/* Uniform in (0, 1]: never 0, so ln() of it is finite. */
double rng_unit(uint64_t *state);

/* Uniform in [lo, hi] (lo <= hi). */
int rng_between(uint64_t *state, int lo, int hi);

/* An independent state for stream id (a thread, a client) of the same seed. */
uint64_t rng_stream(uint64_t seed, int id);

/*
 * A token nobody else can guess (a lock owner's): bytes random bytes from the kernel, in hex,
 * into out (2 * bytes + 1 chars at least). -1 when the kernel could not give them or out is
 * too small.
 */
int rng_token(char *out, size_t outlen, size_t bytes);

#endif
