/*
 * replay_main.c — the main of every fuzz_replay_<name> (the normal and ASan builds, gcc): runs
 * the harness's LLVMFuzzerTestOneInput once on every file of the directories it is given (the
 * committed seed corpus fuzz/corpus/<name>/ and the crash reproducers fuzz/regressions/<name>/;
 * a directory that does not exist holds nothing), as libFuzzer would replay them, so every
 * input ever committed is run again on every `make test`. A harness's broken invariant aborts
 * (ASan or abort()), which fails the test; so does running no input at all (a corpus lost).
 *
 *   fuzz_replay_json_patch fuzz/corpus/json_patch fuzz/regressions/json_patch
 *
 * Prints one line: "fuzz_replay_<name>: N inputs (C corpus, R regressions)".
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* optional in a harness: weak, so a harness without one links and it is NULL here */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Reads path whole into a malloc'd buffer (*size bytes); NULL on error (said on stderr). */
static uint8_t *read_whole(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
		return NULL;
	}
	size_t cap = 4096, n = 0;
	uint8_t *buf = malloc(cap);
	while (buf) {
		n += fread(buf + n, 1, cap - n, f);
		if (n < cap)
			break;
		uint8_t *more = realloc(buf, cap * 2);
		if (!more) {
			free(buf);
			buf = NULL;
			break;
		}
		buf = more;
		cap *= 2;
	}
	if (buf && ferror(f)) {
		fprintf(stderr, "replay: cannot read %s\n", path);
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*size = n;
	return buf;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Runs the harness on each regular file of dir, in name order (so a failure repeats). Returns
 * how many ran; -1 when a file could not be read. A missing dir ran none.
 */
static long replay_dir(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : (fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno)), -1);
	char **names = NULL;
	size_t n = 0, cap = 0;
	long ran = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue; /* ., .., and dot files (a README would be .README) */
		if (n == cap) {
			char **more = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));
			if (!more)
				goto fail;
			names = more;
		}
		if (!(names[n] = strdup(e->d_name)))
			goto fail;
		n++;
	}
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n && ran >= 0; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		size_t size = 0;
		uint8_t *data = read_whole(path, &size);
		if (!data) {
			ran = -1;
			break;
		}
		LLVMFuzzerTestOneInput(data, size);
		free(data);
		ran++;
	}
	goto done;
fail:
	fprintf(stderr, "replay: out of memory listing %s\n", dir);
	ran = -1;
done:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return ran;
}

int main(int argc, char **argv)
{
	const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR [REGRESSIONS_DIR ...]\n", prog);
		return 2;
	}
	if (LLVMFuzzerInitialize && LLVMFuzzerInitialize(&argc, &argv) != 0)
		return 1;
	long total = 0, counts[2] = {0, 0};
	for (int i = 1; i < argc; i++) {
		long ran = replay_dir(argv[i]);
		if (ran < 0)
			return 1;
		total += ran;
		counts[i == 1 ? 0 : 1] += ran;
	}
	printf("%s: %ld inputs (%ld corpus, %ld regressions)\n", prog, total, counts[0], counts[1]);
	if (total == 0) {
		fprintf(stderr, "%s: no input to replay in %s: the seed corpus is missing\n", prog, argv[1]);
		return 1;
	}
	return 0;
}
