/* rng.c — splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators"). */
#include "rng.h"

#include <stdio.h>
#include <sys/random.h>

uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

double rng_unit(uint64_t *state)
{
	/* 53 random bits, shifted up by one so that 0 never comes out */
	return ((rng_next(state) >> 11) + 1) * (1.0 / 9007199254740992.0);
}

int rng_between(uint64_t *state, int lo, int hi)
{
	uint64_t span = (uint64_t)((int64_t)hi - lo) + 1;
	return lo + (int)(rng_next(state) % span);
}

uint64_t rng_stream(uint64_t seed, int id)
{
	uint64_t s = seed ^ ((uint64_t)id * 0xD1B54A32D192ED03ULL);
	return rng_next(&s);
}

int rng_token(char *out, size_t outlen, size_t bytes)
{
	unsigned char b[64];
	if (bytes > sizeof(b) || outlen < 2 * bytes + 1)
		return -1;
	if (getrandom(b, bytes, 0) != (ssize_t)bytes)
		return -1;
	for (size_t i = 0; i < bytes; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	return 0;
}
