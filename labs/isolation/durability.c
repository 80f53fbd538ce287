/*
 * durability.c — phase 4: a throwaway PostgreSQL cluster (initdb into a child_tmpdir directory,
 * started before phase 1 in a thread that phase 4 joins; postgres started through child.h on a
 * free port, 127.0.0.1 and a unix socket in that directory only, fsync on), loaded by clients that
 * count the commits acknowledged to them, then every one of its processes killed with SIGKILL at
 * once (the postmaster's process group: WAL still in its shared buffers dies with them), restarted
 * (crash recovery), and the acknowledged rows counted. First with synchronous_commit = off in the
 * clients' sessions, then on. As root, initdb and postgres run as cfg->os_user (they refuse root),
 * the user scripts/labenv runs its own cluster as.
 */
#include <dirent.h>
#include <glob.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "hist.h"
#include "internal.h"
#include "pg.h"

static char dir[PATH_MAX]; /* the child_tmpdir: log, socket, data/ */
static char bindir[PATH_MAX];

static bool has_postgres(const char *d)
{
	char p[PATH_MAX + 16];
	snprintf(p, sizeof(p), "%s/postgres", d);
	return access(p, X_OK) == 0;
}

/* pg_config --bindir, else the newest /usr/lib/postgresql/<n>/bin */
static int find_bindir(char *err, size_t errlen)
{
	FILE *f = popen("pg_config --bindir 2>/dev/null", "r");
	if (f) {
		if (fgets(bindir, sizeof(bindir), f))
			bindir[strcspn(bindir, "\n")] = '\0';
		pclose(f);
	}
	if (bindir[0] && has_postgres(bindir))
		return 0;
	glob_t g;
	bindir[0] = '\0';
	if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
		for (size_t i = g.gl_pathc; i-- > 0 && !bindir[0];)
			if (has_postgres(g.gl_pathv[i]))
				snprintf(bindir, sizeof(bindir), "%s", g.gl_pathv[i]);
		globfree(&g);
	}
	if (bindir[0])
		return 0;
	snprintf(err, errlen,
	         "no PostgreSQL server binaries (pg_config --bindir, /usr/lib/postgresql/*/bin)");
	return -1;
}

/* Runs argv as a child (as the user when root) until it exits; 0 when it exited 0. */
static int run_to_end(const char *name, const char *const *argv, const char *user, char *err, size_t errlen)
{
	struct child c;
	struct child_spec spec = {.name = name, .argv = argv, .dir = dir, .user = user};
	if (child_start(&c, &spec, err, errlen) < 0)
		return -1;
	for (uint64_t t0 = hist_now_us(); child_running(&c) && hist_now_us() - t0 < 60000000;)
		hist_sleep_us(10000);
	if (child_running(&c))
		child_stop(&c, 0);
	if (WIFEXITED(c.exit_status) && WEXITSTATUS(c.exit_status) == 0)
		return 0;
	char tail[400];
	child_log_tail(&c, tail, sizeof(tail));
	snprintf(err, errlen, "%s failed: %s", name, tail);
	return -1;
}

/*
 * initdb runs in a thread of its own while phases 1 to 3 run, and phase 4 waits for it: it costs
 * a second or two of CPU (more wall time on a loaded machine) that phases 1 to 3, which mostly wait
 * on PostgreSQL's round trips and locks, would otherwise wait for first. Nothing they measure
 * depends on time: a blocked step is one pg_stat_activity shows waiting on a lock (driver.c), the
 * doctors meet at barriers.
 */
static pthread_t initdb_thread;
static bool initdb_running; /* started, not joined yet */
static const char *initdb_user;
static int initdb_ret;
static char initdb_err[LAB_ERRLEN];

static void *initdb_main(void *arg)
{
	(void)arg;
	char initdb[PATH_MAX + 16], data[PATH_MAX + 16];
	snprintf(initdb, sizeof(initdb), "%s/initdb", bindir);
	snprintf(data, sizeof(data), "%s/data", dir);
	/* --no-sync: the files initdb writes reach the page cache, which a process kill keeps */
	const char *argv[] = {initdb,         "-D", data,   "-U",        "lab",
	                      "--auth=trust", "-E", "UTF8", "--no-sync", NULL};
	initdb_ret = run_to_end("initdb", argv, initdb_user, initdb_err, sizeof(initdb_err));
	return NULL;
}

/* Waits for the initdb iso_dur_prepare started: 0 when it made the cluster, else -1 and err. */
static int initdb_wait(char *err, size_t errlen)
{
	if (!initdb_running)
		return 0;
	pthread_join(initdb_thread, NULL);
	initdb_running = false;
	if (initdb_ret == 0)
		return 0;
	snprintf(err, errlen, "%s", initdb_err);
	return -1;
}

int iso_dur_prepare(const struct isolation_config *cfg, struct isolation_result *r, char *err, size_t errlen)
{
	if (geteuid() == 0 && !getpwnam(cfg->os_user)) {
		snprintf(err, errlen,
		         "no user %s to run the throwaway PostgreSQL as (initdb and postgres refuse root): "
		         "run "
		         "make up, which creates it (or set LAB_PG_OS_USER)",
		         cfg->os_user);
		return -1;
	}
	if (find_bindir(err, errlen) < 0 || child_tmpdir("isolation", dir, sizeof(dir), err, errlen) < 0)
		return -1;
	snprintf(r->pg_bindir, sizeof(r->pg_bindir), "%s", bindir);
	initdb_user = cfg->os_user;
	initdb_ret = -1;
	initdb_err[0] = '\0';
	if (pthread_create(&initdb_thread, NULL, initdb_main, NULL) == 0) {
		initdb_running = true;
		return 0;
	}
	/* no thread: initdb now, as phase 4 would have waited for it anyway */
	initdb_main(NULL);
	if (initdb_ret < 0)
		snprintf(err, errlen, "%s", initdb_err);
	return initdb_ret;
}

void iso_dur_cleanup(void)
{
	char e[LAB_ERRLEN];
	initdb_wait(e, sizeof(e)); /* its directory is removed below: never under a running initdb */
	if (dir[0])
		child_rmtree(dir, e, sizeof(e));
	dir[0] = '\0';
}

static int start_pg(const struct isolation_config *cfg, struct child *pg, char *url, size_t urllen, char *err,
                    size_t errlen)
{
	char exe[PATH_MAX + 16], data[PATH_MAX + 16], pidf[PATH_MAX + 32], port[16], sock[PATH_MAX + 40];
	int p = child_free_port(err, errlen);
	if (p < 0)
		return -1;
	snprintf(exe, sizeof(exe), "%s/postgres", bindir);
	snprintf(data, sizeof(data), "%s/data", dir);
	snprintf(pidf, sizeof(pidf), "%s/postmaster.pid", data);
	snprintf(port, sizeof(port), "%d", p);
	snprintf(sock, sizeof(sock), "unix_socket_directories=%s", dir);
	const char *argv[] = {exe,
	                      "-D",
	                      data,
	                      "-p",
	                      port,
	                      "-c",
	                      "listen_addresses=127.0.0.1",
	                      "-c",
	                      sock,
	                      "-c",
	                      "fsync=on",
	                      "-c",
	                      "shared_buffers=16MB",
	                      "-c",
	                      "max_connections=20",
	                      NULL};
	struct child_spec spec = {.name = "postgres",
	                          .argv = argv,
	                          .dir = dir,
	                          .port = p,
	                          .ready_file = pidf,
	                          .ready_timeout_ms = 20000,
	                          .user = cfg->os_user};
	if (child_start(pg, &spec, err, errlen) < 0)
		return -1;
	snprintf(url, urllen, "postgres://lab@127.0.0.1:%d/postgres", p);
	return 0;
}

struct dur_client {
	const char *url;
	int id;
	bool on;
	volatile bool *stop;
	uint64_t acked;       /* seq 1..acked were acknowledged, in order, on one connection (atomic) */
	bool done;            /* the thread has finished (atomic) */
	char err[LAB_ERRLEN]; /* it could not connect or set synchronous_commit */
};

/* Beyond dur_load_ms, the kill waits (at most this long) until every client has had a commit
 * acknowledged: on a loaded machine connecting and the first fsync can outlast the load itself,
 * and a mode with nothing acknowledged would measure nothing. */
#define DUR_FIRST_ACK_MS 5000

static void *dur_client_main(void *arg)
{
	struct dur_client *c = arg;
	PGconn *conn = pg_connect(c->url, c->err, sizeof(c->err));
	if (!conn || pg_exec(conn, c->on ? "set synchronous_commit = on" : "set synchronous_commit = off",
	                     c->err, sizeof(c->err)) < 0) {
		PQfinish(conn);
		__atomic_store_n(&c->done, true, __ATOMIC_RELEASE);
		return NULL;
	}
	char id[16], seq[24];
	snprintf(id, sizeof(id), "%d", c->id);
	const char *p[] = {id, seq};
	while (!*c->stop) {
		snprintf(seq, sizeof(seq), "%llu", (unsigned long long)c->acked + 1);
		PGresult *res = PQexecParams(conn,
		                             c->on ? "insert into t_on values ($1, $2)"
		                                   : "insert into t_off values ($1, $2)",
		                             2, NULL, p, NULL, NULL, 0);
		bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		if (!ok)
			break; /* the server was killed: what was acknowledged so far is the claim */
		__atomic_store_n(&c->acked, c->acked + 1, __ATOMIC_RELEASE);
	}
	PQfinish(conn);
	__atomic_store_n(&c->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/* Whether every client has had a commit acknowledged, or has given up. */
static bool all_acked(struct dur_client *c, int n)
{
	for (int i = 0; i < n; i++)
		if (__atomic_load_n(&c[i].acked, __ATOMIC_ACQUIRE) == 0 &&
		    !__atomic_load_n(&c[i].done, __ATOMIC_ACQUIRE))
			return false;
	return true;
}

/*
 * SIGKILL to the postmaster and every process it forked, as close to at once as a user process can:
 * its backends call setsid() (each in a session of its own), so the postmaster's group is not
 * theirs. The postmaster is stopped first, so it forks nothing while its children are found in
 * /proc and killed; then it is killed. Returns the processes killed.
 */
static int kill_cluster(pid_t pm)
{
	if (pm <= 1)
		return 0;
	kill(pm, SIGSTOP);
	int n = 0;
	DIR *d = opendir("/proc");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], buf[512];
		long pid = strtol(e->d_name, NULL, 10);
		if (pid <= 1)
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t len = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[len] = '\0';
		/* "pid (comm) state ppid ...": comm may hold spaces, so read after the last ')' */
		char *close = strrchr(buf, ')');
		char state;
		long ppid;
		if (close && sscanf(close + 1, " %c %ld", &state, &ppid) == 2 && ppid == pm)
			n += kill((pid_t)pid, SIGKILL) == 0;
	}
	if (d)
		closedir(d);
	kill(-pm, SIGKILL);
	n += kill(pm, SIGKILL) == 0;
	return n;
}

/*
 * Loads the running cluster with dur_clients sessions of each kind at once (off and on side by side,
 * so one kill lands on both at the same moment), kills it mid-load, restarts it. c holds
 * 2 * dur_clients clients: off first, then on.
 */
static int load_and_kill(const struct isolation_config *cfg, struct child *pg, char *url, size_t urllen,
                         struct dur_client *c, struct isolation_result *r, char *err, size_t errlen)
{
	volatile bool stop = false;
	pthread_t th[2 * ISO_MAX_CLIENTS];
	int n = 0, want = 2 * cfg->dur_clients;
	for (; n < want; n++) {
		c[n] = (struct dur_client){
		        .url = url, .id = n % cfg->dur_clients, .on = n >= cfg->dur_clients, .stop = &stop};
		if (pthread_create(&th[n], NULL, dur_client_main, &c[n]) != 0)
			break;
	}
	uint64_t t0 = hist_now_us();
	hist_sleep_us(1000LL * cfg->dur_load_ms);
	while (!all_acked(c, n) &&
	       hist_now_us() - t0 < (uint64_t)(cfg->dur_load_ms + DUR_FIRST_ACK_MS) * 1000)
		hist_sleep_us(10000);
	int killed = kill_cluster(pg->pid);
	double load_s = (double)(hist_now_us() - t0) / 1e6;
	stop = true;
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	child_stop(pg, 0);
	for (int m = 0; m < ISO_DUR_MODES; m++)
		r->dur[m] = (struct iso_dur_row){.what = m ? "synchronous_commit = on"
		                                           : "synchronous_commit = off",
		                                 .killed = killed,
		                                 .load_s = load_s};
	for (int i = 0; i < n; i++)
		r->dur[c[i].on].acked += c[i].acked;
	if (n < want) {
		snprintf(err, errlen, "cannot start a client thread");
		return -1;
	}
	/* a client that never connected would count as one that lost nothing */
	for (int i = 0; i < n; i++)
		if (c[i].err[0]) {
			snprintf(err, errlen, "a durability client: %s", c[i].err);
			return -1;
		}
	return start_pg(cfg, pg, url, urllen, err, errlen);
}

static int count_rows(PGconn *conn, bool on, const struct dur_client *c, int n, struct iso_dur_row *row,
                      char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		char id[16], ack[24], sql[160];
		snprintf(id, sizeof(id), "%d", i);
		snprintf(ack, sizeof(ack), "%llu", (unsigned long long)c[i].acked);
		const char *p[] = {id, ack};
		int64_t present = 0, all = 0;
		snprintf(sql, sizeof(sql), "select count(*) from %s where client = $1 and seq <= $2",
		         on ? "t_on" : "t_off");
		if (pg_query_int64(conn, sql, 2, p, &present, err, errlen) < 0)
			return -1;
		snprintf(sql, sizeof(sql), "select count(*) from %s where client = $1",
		         on ? "t_on" : "t_off");
		if (pg_query_int64(conn, sql, 1, p, &all, err, errlen) < 0)
			return -1;
		row->present += (uint64_t)present;
		row->extra += (uint64_t)(all - present);
	}
	row->lost = row->acked - row->present;
	return 0;
}

/* Connects once recovery is done: the port accepts while the server still replays its WAL. */
static PGconn *connect_recovered(const char *url, char *err, size_t errlen)
{
	for (uint64_t t0 = hist_now_us();;) {
		PGconn *conn = pg_connect(url, err, errlen);
		if (conn || (!strstr(err, "starting up") && !strstr(err, "not yet accepting")) ||
		    hist_now_us() - t0 > 20000000)
			return conn;
		hist_sleep_us(20000);
	}
}

int iso_phase_durability(const void *cfgv, void *result, char *err, size_t errlen)
{
	const struct isolation_config *cfg = cfgv;
	struct isolation_result *r = result;
	struct child pg = {0};
	char url[128];
	struct dur_client c[2 * ISO_MAX_CLIENTS];
	PGconn *conn = NULL;
	int ret = -1;
	if (initdb_wait(err, errlen) < 0 || start_pg(cfg, &pg, url, sizeof(url), err, errlen) < 0)
		return -1;
	if (!(conn = connect_recovered(url, err, errlen)) ||
	    pg_exec(conn,
	            "create table t_off (client int, seq int, primary key (client, seq));"
	            " create table t_on (client int, seq int, primary key (client, seq))",
	            err, errlen) < 0)
		goto out;
	PQfinish(conn);
	conn = NULL;
	if (load_and_kill(cfg, &pg, url, sizeof(url), c, r, err, errlen) < 0 ||
	    !(conn = connect_recovered(url, err, errlen)) ||
	    count_rows(conn, false, c, cfg->dur_clients, &r->dur[0], err, errlen) < 0 ||
	    count_rows(conn, true, c + cfg->dur_clients, cfg->dur_clients, &r->dur[1], err, errlen) < 0)
		goto out;
	r->ndur = ISO_DUR_MODES;
	ret = lab_interrupted() ? -1 : 0;
out:
	PQfinish(conn);
	child_stop(&pg, 0);
	return ret;
}
