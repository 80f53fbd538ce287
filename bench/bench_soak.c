/*
 * bench_soak — every API lab's --serve under steady load for a long while (issue 16's soak):
 * memory and descriptors must stay flat, latency steady, and no request fail without a fault.
 *
 *   bench_soak [--seconds N] [--bin DIR] [--labenv PATH] [--state DIR]
 *
 * The labs, their load and their servers are suite/faults.h's (the same recipes, one client per lab
 * with a pause between requests, PRIVATE servers from scripts/labenv with ports of their own, so a
 * soak never shares a lab's schema with a test running beside it). Every interval (10 s; a
 * thirtieth of a run shorter than 5 minutes, at least 1 s) it samples each lab's RSS (/proc/PID/status
 * VmRSS), open descriptors (/proc/PID/fd) and the p99 latency and errors of the interval. Then per lab: RSS
 * first/last and its slope (least squares, kB a minute, over the samples after the first minute, or after the
 * first third of a run shorter than 3 minutes: allocators and pools settle first), descriptors
 * first/last/max, p99 first/last/max, errors; and a line flat / not flat. A benchmark, not a test: exit 0
 * either way; 2 when the servers or a lab cannot start.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faults.h"
#include "lab.h"
#include "term.h"

/*
 * Flat: an RSS slope under this after the settling part. A leak of 200 bytes per request at the
 * load's ~40 requests a second grows 480 kB a minute and is over it; the noise of malloc's arenas
 * and of libpq's and evhttp's buffers, once warm, is tens of kB a minute.
 */
#define SOAK_RSS_SLOPE_KB_MIN 400.0
/* and descriptors at most this many above where they were after the settling part: a pool of up to
 * 8 connections may be replacing one or two at the moment of a sample */
#define SOAK_FD_SLACK    4
#define SOAK_DEFAULT_S   600
#define SOAK_INTERVAL_S  10
#define SOAK_MAX_SAMPLES 4000

struct sample {
	double t_s;
	long rss_kb;
	int fds;
	double p99_ms;
	uint64_t ok, errors;
};

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6))
			kb = strtol(line + 6, NULL, 10);
	if (f)
		fclose(f);
	return kb;
}

static int fd_count(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Least-squares slope of rss over t, in kB a minute, over samples [from, n). */
static double slope_kb_min(const struct sample *s, int from, int n)
{
	double sx = 0, sy = 0, sxx = 0, sxy = 0;
	int k = n - from;
	if (k < 2)
		return 0;
	for (int i = from; i < n; i++) {
		double x = s[i].t_s / 60.0, y = (double)s[i].rss_kb;
		sx += x, sy += y, sxx += x * x, sxy += x * y;
	}
	double den = k * sxx - sx * sx;
	return den > 0 ? (k * sxy - sx * sy) / den : 0;
}

static int usage(FILE *f, int code)
{
	fprintf(f,
	        "usage: bench_soak [--seconds N] [--bin DIR] [--labenv PATH] [--state DIR]\n"
	        "  every API lab under steady load for N seconds (default %d), RSS, descriptors,\n"
	        "  p99 and errors sampled; private servers from scripts/labenv\n",
	        SOAK_DEFAULT_S);
	return code;
}

static void report(struct faults_lab *l, const struct sample *s, int n, int settled)
{
	char a[32], b[32], c[32], d[32], e[32];
	int fd_max = 0;
	double p_max = 0;
	uint64_t errors = 0, ok = 0;
	for (int i = 0; i < n; i++) {
		fd_max = s[i].fds > fd_max ? s[i].fds : fd_max;
		p_max = s[i].p99_ms > p_max ? s[i].p99_ms : p_max;
		errors += s[i].errors;
		ok += s[i].ok;
	}
	double slope = slope_kb_min(s, settled, n);
	printf("  %-13s  %9s  %9s  %+8.0f  %5d %5d %5d  %9s  %9s  %9s  %8llu  %6llu\n", faults_lab_name(l),
	       term_fmt_bytes(a, sizeof(a), s[0].rss_kb * 1000.0),
	       term_fmt_bytes(b, sizeof(b), s[n - 1].rss_kb * 1000.0), slope, s[0].fds, s[n - 1].fds, fd_max,
	       term_fmt_us(c, sizeof(c), s[0].p99_ms * 1000),
	       term_fmt_us(d, sizeof(d), s[n - 1].p99_ms * 1000), term_fmt_us(e, sizeof(e), p_max * 1000),
	       (unsigned long long)ok, (unsigned long long)errors);
}

static void verdict(struct faults_lab *l, const struct sample *s, int n, int settled)
{
	double slope = slope_kb_min(s, settled, n);
	int fd_max = 0;
	uint64_t errors = 0;
	for (int i = settled; i < n; i++)
		fd_max = s[i].fds > fd_max ? s[i].fds : fd_max;
	for (int i = 0; i < n; i++)
		errors += s[i].errors;
	bool flat = slope <= SOAK_RSS_SLOPE_KB_MIN && fd_max <= s[settled].fds + SOAK_FD_SLACK && errors == 0;
	printf("  %s lab-%s: %s (RSS %+.0f kB/min, bound %.0f; fds %d..%d after settling, slack %d; %llu "
	       "errors)\n",
	       flat ? "✔" : "✘", faults_lab_name(l), flat ? "flat" : "NOT flat", slope, SOAK_RSS_SLOPE_KB_MIN,
	       s[settled].fds, fd_max, SOAK_FD_SLACK, (unsigned long long)errors);
}

/* Samples every lab every interval until the run is over. */
static void soak(struct faults_lab **labs, int seconds, int interval_s, struct sample (*s)[SOAK_MAX_SAMPLES],
                 int *n)
{
	double start = hist_now_ms();
	bool tty = isatty(STDERR_FILENO); /* the progress line only on a terminal, not in a log */
	for (int k = 1; *n < SOAK_MAX_SAMPLES; k++) {
		double due = start + k * interval_s * 1000.0;
		while (hist_now_ms() < due)
			hist_sleep_us(50000);
		for (int i = 0; i < FAULTS_LABS; i++) {
			struct sample *x = &s[i][*n];
			struct hist h;
			x->t_s = (hist_now_ms() - start) / 1000.0;
			x->rss_kb = rss_kb(faults_lab_pid(labs[i]));
			x->fds = fd_count(faults_lab_pid(labs[i]));
			faults_interval_take(labs[i], &h, &x->ok, &x->errors);
			x->p99_ms = h.count ? (double)hist_percentile(&h, 99) / 1000.0 : 0;
		}
		(*n)++;
		if (tty)
			fprintf(stderr, "\r  %.0f / %d s", (hist_now_ms() - start) / 1000.0, seconds);
		if (k * interval_s >= seconds)
			break;
	}
	if (tty)
		fprintf(stderr, "\r\033[K");
}

/* The load stopped, SIGINT to every lab at once; a lab that did not exit 0 said; each freed. */
static void stop(struct faults_lab **labs)
{
	for (int i = 0; i < FAULTS_LABS; i++)
		if (labs[i])
			faults_drive_stop(labs[i]);
	int exit_code[FAULTS_LABS] = {0};
	double stop_ms[FAULTS_LABS];
	faults_labs_stop(labs, exit_code, stop_ms);
	for (int i = 0; i < FAULTS_LABS; i++) {
		if (labs[i] && exit_code[i] != 0)
			fprintf(stderr, "bench_soak: lab-%s did not stop cleanly on SIGINT\n",
			        faults_lab_name(labs[i]));
		faults_lab_free(labs[i]);
	}
}

int main(int argc, char **argv)
{
	const char *bin = "build", *labenv = "scripts/labenv", *state = NULL;
	int seconds = SOAK_DEFAULT_S;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return usage(stdout, 0);
		if (i + 1 >= argc)
			return usage(stderr, 2);
		if (!strcmp(argv[i], "--seconds")) {
			char *end;
			long v = strtol(argv[++i], &end, 10);
			if (*end || v < 3 || v > 86400) {
				char shown[LAB_ARG_SHOWN_LEN];
				fprintf(stderr, "bench_soak: --seconds takes 3..86400, got \"%s\"\n",
				        lab_arg_shown(argv[i], shown));
				return 2;
			}
			seconds = (int)v;
		} else if (!strcmp(argv[i], "--bin"))
			bin = argv[++i];
		else if (!strcmp(argv[i], "--labenv"))
			labenv = argv[++i];
		else if (!strcmp(argv[i], "--state"))
			state = argv[++i];
		else
			return usage(stderr, 2);
	}
	int interval_s = seconds >= 30 * SOAK_INTERVAL_S ? SOAK_INTERVAL_S
	                 : seconds / 30 > 1              ? seconds / 30
	                                                 : 1;
	char state_dir[4096], err[1024];
	snprintf(state_dir, sizeof(state_dir), "%s/soak-env", bin);
	if (state)
		snprintf(state_dir, sizeof(state_dir), "%s", state);
	struct faults_env env;
	if (faults_env_up(&env, labenv, state_dir, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench_soak: the private servers: %s\n", err);
		faults_env_down(&env);
		return 2;
	}
	struct faults_lab *labs[FAULTS_LABS];
	char errs[FAULTS_LABS][FAULTS_ERR_LEN];
	int code = 0;
	if (faults_labs_start(bin, &env, NULL, labs, errs) < FAULTS_LABS) {
		for (int i = 0; i < FAULTS_LABS; i++)
			if (!labs[i])
				fprintf(stderr, "bench_soak: %s\n", errs[i]);
		code = 2;
	}
	static struct sample samples[FAULTS_LABS][SOAK_MAX_SAMPLES];
	int n = 0;
	if (!code) {
		printf("soak: %d API labs under steady load (1 client each, %d ms between requests) for %d "
		       "s, "
		       "sampled every %d s\n",
		       FAULTS_LABS, FAULTS_THINK_MS, seconds, interval_s);
		soak(labs, seconds, interval_s, samples, &n);
		/* after the first minute, or the first third of a short run */
		int settled = seconds >= 180 ? 60 / interval_s : n / 3;
		settled = settled < n - 1 ? settled : n - 2 > 0 ? n - 2 : 0;
		printf("  %-13s  %9s  %9s  %8s  %5s %5s %5s  %9s  %9s  %9s  %8s  %6s\n", "lab", "RSS first",
		       "last", "kB/min", "fds", "last", "max", "p99 first", "last", "max", "2xx", "errors");
		for (int i = 0; i < FAULTS_LABS && n > 0; i++)
			report(labs[i], samples[i], n, settled);
		for (int i = 0; i < FAULTS_LABS && n > 0; i++)
			verdict(labs[i], samples[i], n, settled);
	}
	stop(labs);
	faults_env_down(&env);
	return code;
}
