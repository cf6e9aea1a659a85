/*
 * The measuring part: threads that run one operation in a loop, a warm-up
 * that is not counted, a measured interval read from CLOCK_MONOTONIC, and
 * the JSON line each row prints.
 */
#include "bench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Per-thread, per-path counters, one cache line each so that threads do not
 * share one. */
typedef struct thread_slot {
    atomic_ulong ok, failed;
    atomic_ulong cpu_ns; /* CPU time this thread spent on the path */
    char pad[64 - 3 * sizeof(atomic_ulong)];
} thread_slot;

typedef struct run_state {
    const bench_path *paths;
    atomic_int phase; /* index of the path the threads run now */
    atomic_int epoch; /* bumped when the measurement starts */
    atomic_int stop;
    atomic_int seen[BENCH_MAX_THREADS]; /* epoch each thread has charged its CPU time up to */
    thread_slot slot[BENCH_MAX_THREADS][BENCH_MAX_PATHS];
} run_state;

typedef struct thread_arg {
    run_state *rs;
    int index;
} thread_arg;

static unsigned long thread_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec;
}

/*
 * Runs the current path's operation until told to stop. The thread's CPU
 * time is read when the path or the epoch changes (not per operation: the
 * clock is a system call) and charged to the path that used it; the thread
 * then acknowledges the epoch, so that the measurement starts with the
 * warm-up's CPU time charged. CPU time per operation does not depend on what
 * else the machine runs, wall time does.
 */
static void *thread_main(void *p)
{
    thread_arg *ta = p;
    run_state *rs = ta->rs;
    int last = -1, last_epoch = -1;
    unsigned long cpu0 = thread_cpu_ns(), cpu;

    while (!atomic_load_explicit(&rs->stop, memory_order_relaxed)) {
        int k = atomic_load_explicit(&rs->phase, memory_order_relaxed);
        int e = atomic_load(&rs->epoch);
        thread_slot *s = &rs->slot[ta->index][k];
        if (k != last || e != last_epoch) {
            cpu = thread_cpu_ns();
            if (last >= 0)
                atomic_fetch_add(&rs->slot[ta->index][last].cpu_ns, cpu - cpu0);
            cpu0 = cpu;
            last = k;
            last_epoch = e;
            atomic_store(&rs->seen[ta->index], e);
        }
        if (rs->paths[k].op(rs->paths[k].arg, ta->index))
            atomic_fetch_add_explicit(&s->ok, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
    }
    if (last >= 0)
        atomic_fetch_add(&rs->slot[ta->index][last].cpu_ns, thread_cpu_ns() - cpu0);
    return NULL;
}

static void totals(run_state *rs, int threads, int k, unsigned long *ok, unsigned long *failed,
                   unsigned long *cpu_ns)
{
    int i;

    *ok = *failed = *cpu_ns = 0;
    for (i = 0; i < threads; i++) {
        *ok += atomic_load(&rs->slot[i][k].ok);
        *failed += atomic_load(&rs->slot[i][k].failed);
        *cpu_ns += atomic_load(&rs->slot[i][k].cpu_ns);
    }
}

/*
 * Joins the threads. A thread still inside an operation long after the end
 * (a library that deadlocked under two threads) cannot be stopped, and the
 * objects it uses cannot be freed: the rows are printed as hung and the
 * process leaves without running exit handlers.
 */
static void join_or_exit(const bench_opts *o, pthread_t *th, int n, const bench_path *paths,
                         int npaths, const bench_result *r)
{
    struct timespec deadline;
    int i, k;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 1 + (time_t)(5 * o->seconds);
    for (i = 0; i < n; i++) {
        if (pthread_timedjoin_np(th[i], NULL, &deadline) == 0)
            continue;
        fprintf(stderr, "mtlsks-bench: thread %d still inside an operation; giving up\n", i);
        for (k = 0; k < npaths; k++) {
            bench_opts po = *o;
            po.impl = paths[k].name;
            json_begin(&po, o->cmd);
            json_result(&r[k]);
            json_int("hung", 1);
            json_end();
        }
        _exit(3);
    }
}

/* Fixed number of operations on this thread, for counting what one costs. */
static int run_count(const bench_opts *o, const bench_path *p, void (*before)(void),
                     bench_result *r)
{
    double t0;
    long k;
    int i;

    for (i = 0; i < 3; i++)
        if (!p->op(p->arg, 0))
            r->errors++;
    if (before != NULL)
        before();
    t0 = bench_now();
    for (k = 0; k < o->count; k++) {
        if (p->op(p->arg, 0))
            r->ops++;
        else
            r->errors++;
    }
    r->seconds = bench_now() - t0;
    r->ops_per_s = r->seconds > 0 ? (double)r->ops / r->seconds : 0;
    return r->errors == 0;
}

int bench_run_paths(const bench_opts *o, const bench_path *paths, int npaths, void (*before)(void),
                    bench_result *r)
{
    static run_state rs;
    pthread_t th[BENCH_MAX_THREADS];
    thread_arg ta[BENCH_MAX_THREADS];
    unsigned long ok0[BENCH_MAX_PATHS], failed0[BENCH_MAX_PATHS], cpu0[BENCH_MAX_PATHS], ok1,
        failed1, cpu1;
    double slice, t, end;
    int i, k, n = o->threads, ok = 1;

    memset(r, 0, (size_t)npaths * sizeof(*r));
    if (o->count > 0)
        return npaths == 1 && run_count(o, &paths[0], before, &r[0]);
    memset(&rs, 0, sizeof(rs));
    rs.paths = paths;
    for (i = 0; i < n; i++) {
        ta[i].rs = &rs;
        ta[i].index = i;
        if (pthread_create(&th[i], NULL, thread_main, &ta[i]) != 0) {
            fprintf(stderr, "mtlsks-bench: cannot start thread %d\n", i);
            atomic_store(&rs.stop, 1);
            n = i;
            ok = 0;
            break;
        }
    }
    /* Several paths take turns in slices (one, when there is one path),
     * warm-up included, so that load from other processes falls on each
     * path alike and the ratios between them hold. */
    slice = npaths > 1 ? o->slice : o->seconds;
    for (end = bench_now() + o->warmup, k = 0; ok && bench_now() < end; k = (k + 1) % npaths) {
        atomic_store(&rs.phase, k);
        sleep_s(npaths > 1 ? o->slice : o->warmup);
    }
    /* Measurement starts: every thread charges its warm-up first. */
    atomic_store(&rs.phase, 0);
    atomic_fetch_add(&rs.epoch, 1);
    for (i = 0, end = bench_now() + 5; ok && i < n && bench_now() < end;)
        if (atomic_load(&rs.seen[i]) == atomic_load(&rs.epoch))
            i++;
        else
            sleep_s(0.0005);
    if (ok && before != NULL)
        before();
    for (k = 0; k < npaths; k++)
        totals(&rs, n, k, &ok0[k], &failed0[k], &cpu0[k]);
    for (end = bench_now() + o->seconds, k = 0; ok && bench_now() < end; k = (k + 1) % npaths) {
        atomic_store(&rs.phase, k);
        t = bench_now();
        sleep_s(slice);
        r[k].seconds += bench_now() - t;
    }
    atomic_store(&rs.stop, 1);
    for (k = 0; k < npaths; k++) {
        totals(&rs, n, k, &ok1, &failed1, &cpu1);
        r[k].ops = ok1 - ok0[k];
        r[k].errors = failed1 - failed0[k];
    }
    join_or_exit(o, th, n, paths, npaths, r);
    /* Operations that ended after the stop: counted, as they ran in the
     * measured time of their slice. */
    for (k = 0; k < npaths; k++) {
        totals(&rs, n, k, &ok1, &failed1, &cpu1);
        r[k].ops = ok1 - ok0[k];
        r[k].errors = failed1 - failed0[k];
        r[k].ops_per_s = r[k].seconds > 0 ? (double)r[k].ops / r[k].seconds : 0;
        r[k].cpu_seconds = (double)(cpu1 - cpu0[k]) / 1e9;
        r[k].ops_per_cpu_s = r[k].cpu_seconds > 0 ? (double)r[k].ops / r[k].cpu_seconds : 0;
        if (r[k].errors != 0 || r[k].ops == 0)
            ok = 0;
    }
    return ok;
}

long bench_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

void bench_report_errors(const char *what)
{
    static atomic_int reported;

    if (atomic_exchange(&reported, 1) == 0) {
        fprintf(stderr, "mtlsks-bench: %s failed:\n", what);
        ERR_print_errors_fp(stderr);
    }
    ERR_clear_error();
}

int bench_read_pin(const char *path, char *buf, size_t size)
{
    FILE *f;
    size_t len;

    if (path == NULL || (f = fopen(path, "r")) == NULL)
        return 0;
    if (fgets(buf, (int)size, f) == NULL)
        buf[0] = '\0';
    fclose(f);
    len = strcspn(buf, "\r\n");
    buf[len] = '\0';
    return len > 0;
}

/* ---- JSON --------------------------------------------------------------------- */

static void json_escaped(const char *s)
{
    putchar('"');
    for (; *s != '\0'; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

void json_begin(const bench_opts *o, const char *bench)
{
    printf("{\"bench\":");
    json_escaped(bench);
    if (o->impl != NULL)
        json_str("impl", o->impl);
    if (o->alg_name != NULL)
        json_str("alg", o->alg_name);
    json_int("threads", o->count > 0 ? 1 : o->threads);
    if (o->note != NULL)
        json_str("note", o->note);
}

void json_str(const char *key, const char *val)
{
    printf(",");
    json_escaped(key);
    printf(":");
    json_escaped(val != NULL ? val : "");
}

void json_num(const char *key, double val)
{
    printf(",");
    json_escaped(key);
    printf(":%.6g", val);
}

void json_int(const char *key, long val)
{
    printf(",");
    json_escaped(key);
    printf(":%ld", val);
}

void json_raw(const char *key, const char *val)
{
    printf(",");
    json_escaped(key);
    printf(":%s", val);
}

void json_result(const bench_result *r)
{
    json_int("ops", (long)r->ops);
    json_int("errors", (long)r->errors);
    json_num("seconds", r->seconds);
    json_num("ops_per_s", r->ops_per_s);
    if (r->cpu_seconds > 0) {
        json_num("cpu_seconds", r->cpu_seconds);
        json_num("ops_per_cpu_s", r->ops_per_cpu_s);
    }
}

void json_end(void)
{
    printf("}\n");
    fflush(stdout);
}
