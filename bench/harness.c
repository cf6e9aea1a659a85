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
    char pad[64 - 2 * sizeof(atomic_ulong)];
} thread_slot;

typedef struct run_state {
    const bench_path *paths;
    atomic_int phase; /* index of the path the threads run now */
    atomic_int stop;
    thread_slot slot[BENCH_MAX_THREADS][BENCH_MAX_PATHS];
} run_state;

typedef struct thread_arg {
    run_state *rs;
    int index;
} thread_arg;

static void *thread_main(void *p)
{
    thread_arg *ta = p;
    run_state *rs = ta->rs;

    while (!atomic_load_explicit(&rs->stop, memory_order_relaxed)) {
        int k = atomic_load_explicit(&rs->phase, memory_order_relaxed);
        thread_slot *s = &rs->slot[ta->index][k];
        if (rs->paths[k].op(rs->paths[k].arg, ta->index))
            atomic_fetch_add_explicit(&s->ok, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&s->failed, 1, memory_order_relaxed);
    }
    return NULL;
}

static void totals(run_state *rs, int threads, int k, unsigned long *ok, unsigned long *failed)
{
    int i;

    *ok = *failed = 0;
    for (i = 0; i < threads; i++) {
        *ok += atomic_load(&rs->slot[i][k].ok);
        *failed += atomic_load(&rs->slot[i][k].failed);
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
    deadline.tv_sec += 10 + (time_t)(5 * o->seconds);
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
    unsigned long ok0[BENCH_MAX_PATHS], failed0[BENCH_MAX_PATHS], ok1, failed1;
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
    if (ok && before != NULL)
        before();
    for (k = 0; k < npaths; k++)
        totals(&rs, n, k, &ok0[k], &failed0[k]);
    for (end = bench_now() + o->seconds, k = 0; ok && bench_now() < end; k = (k + 1) % npaths) {
        atomic_store(&rs.phase, k);
        t = bench_now();
        sleep_s(slice);
        r[k].seconds += bench_now() - t;
    }
    atomic_store(&rs.stop, 1);
    for (k = 0; k < npaths; k++) {
        totals(&rs, n, k, &ok1, &failed1);
        r[k].ops = ok1 - ok0[k];
        r[k].errors = failed1 - failed0[k];
    }
    join_or_exit(o, th, n, paths, npaths, r);
    /* Operations that ended after the stop: counted, as they ran in the
     * measured time of their slice. */
    for (k = 0; k < npaths; k++) {
        totals(&rs, n, k, &ok1, &failed1);
        r[k].ops = ok1 - ok0[k];
        r[k].errors = failed1 - failed0[k];
        r[k].ops_per_s = r[k].seconds > 0 ? (double)r[k].ops / r[k].seconds : 0;
        if (r[k].errors != 0 || r[k].ops == 0)
            ok = 0;
    }
    return ok;
}

int bench_run(const bench_opts *o, bench_op_fn *op, void *arg, void (*before)(void),
              bench_result *r)
{
    bench_path p = {o->impl, op, arg};

    return bench_run_paths(o, &p, 1, before, r);
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
}

void json_end(void)
{
    printf("}\n");
    fflush(stdout);
}
