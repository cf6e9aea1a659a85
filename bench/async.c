/*
 * tls-async: what SSL_MODE_ASYNC does for an event-loop server on one
 * thread with a slow token. --inflight mutual-TLS 1.3 handshakes over
 * memory BIO pairs run at once on the calling thread, as an event loop runs
 * its connections; each finished one is replaced by a new one. The
 * server's key is in the token (our provider from --config, whose module is
 * the PKCS#11 shim: --latency-ms is added to every C_Sign), the client's is
 * in software.
 *
 *   async  the server's SSL_CTX has SSL_MODE_ASYNC: a server waiting for its
 *          signature returns SSL_ERROR_WANT_ASYNC, the loop goes on with the
 *          others and polls the wait fds when nothing else can move
 *   sync   the same loop without it: each server signs where it stands, and
 *          the thread waits for the token
 *
 * Several --impl (async,sync) run one after the other, --seconds each after
 * --warmup, one JSON line each: handshakes per second of wall time and per
 * CPU second of the process (the keystore's worker threads included), and
 * the most C_Sign calls the shim saw in progress at once.
 */
#include "bench.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_INFLIGHT 1024

typedef struct conn {
    SSL *s, *c;
    int sdone, cdone;
    int waiting; /* the server waits for the token */
} conn;

typedef struct loop {
    SSL_CTX *sctx, *cctx;
    conn *conns;
    int n;
    unsigned long done, failed;
} loop;

static int conn_open(loop *l, conn *k)
{
    BIO *sb = NULL, *cb = NULL;

    memset(k, 0, sizeof(*k));
    k->s = SSL_new(l->sctx);
    k->c = SSL_new(l->cctx);
    if (k->s == NULL || k->c == NULL || !BIO_new_bio_pair(&sb, 0, &cb, 0)) {
        SSL_free(k->s);
        SSL_free(k->c);
        return 0;
    }
    SSL_set_bio(k->s, sb, sb);
    SSL_set_bio(k->c, cb, cb);
    SSL_set_accept_state(k->s);
    SSL_set_connect_state(k->c);
    return 1;
}

static void conn_close(conn *k)
{
    SSL_free(k->s);
    SSL_free(k->c);
    k->s = k->c = NULL;
}

/* 1: finished, 0: wants more or waits for the token, -1: failed. */
static int side_step(SSL *s, int *waiting)
{
    int r = SSL_do_handshake(s), e;

    if (r == 1)
        return 1;
    e = SSL_get_error(s, r);
    if (e == SSL_ERROR_WANT_ASYNC) {
        *waiting = 1;
        return 0;
    }
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

/* Moves one connection as far as it goes without waiting (a few rounds of
 * client and server steps), and replaces it with a new one when its
 * handshake is over. */
static void conn_run(loop *l, conn *k)
{
    int round, r, ignored = 0;

    for (round = 0; round < 8 && !k->waiting && !(k->sdone && k->cdone); round++) {
        if (!k->cdone && (r = side_step(k->c, &ignored)) != 0)
            k->cdone = r;
        if (!k->sdone && (r = side_step(k->s, &k->waiting)) != 0)
            k->sdone = r;
        if (k->cdone < 0 || k->sdone < 0)
            break;
    }
    if (!(k->cdone < 0 || k->sdone < 0 || (k->sdone && k->cdone)))
        return;
    if (k->sdone > 0 && k->cdone > 0)
        l->done++;
    else if (l->failed++ == 0)
        bench_report_errors("a handshake");
    conn_close(k);
    if (!conn_open(l, k))
        l->failed++;
}

/* Waits until at least one waiting server's fd is readable. */
static void wait_for_token(loop *l)
{
    struct pollfd p[MAX_INFLIGHT];
    int idx[MAX_INFLIGHT], n = 0, i;

    for (i = 0; i < l->n; i++) {
        OSSL_ASYNC_FD fd;
        size_t nfd = 1;

        if (!l->conns[i].waiting)
            continue;
        if (SSL_get_all_async_fds(l->conns[i].s, &fd, &nfd) && nfd == 1) {
            p[n].fd = fd;
            p[n].events = POLLIN;
            idx[n++] = i;
        } else {
            l->conns[i].waiting = 0; /* resume it and see */
        }
    }
    if (n == 0 || poll(p, (nfds_t)n, 60000) <= 0)
        return;
    for (i = 0; i < n; i++)
        if (p[i].revents != 0)
            l->conns[idx[i]].waiting = 0;
}

/* Runs the loop until `until` (CLOCK_MONOTONIC seconds). */
static void loop_run(loop *l, double until)
{
    while (bench_now() < until && l->failed == 0) {
        int i, waiting = 0;

        for (i = 0; i < l->n; i++)
            if (!l->conns[i].waiting)
                conn_run(l, &l->conns[i]);
        for (i = 0; i < l->n; i++)
            waiting += l->conns[i].waiting;
        if (waiting == l->n)
            wait_for_token(l);
    }
}

static double process_cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* One --impl: async or sync. */
static int run_mode(const bench_opts *o, const char *mode, loop *l)
{
    bench_opts po = *o;
    bench_result r = {0};
    double t0, c0;
    int i, ok = 1;

    if (strcmp(mode, "async") == 0)
        SSL_CTX_set_mode(l->sctx, SSL_MODE_ASYNC);
    else if (strcmp(mode, "sync") == 0)
        SSL_CTX_clear_mode(l->sctx, SSL_MODE_ASYNC);
    else {
        fprintf(stderr, "mtlsks-bench: tls-async: --impl async or sync, not '%s'\n", mode);
        return 0;
    }
    for (i = 0; i < l->n && ok; i++)
        ok = conn_open(l, &l->conns[i]);
    l->done = l->failed = 0;
    loop_run(l, bench_now() + o->warmup);
    shim_reset();
    l->done = 0;
    t0 = bench_now();
    c0 = process_cpu_s();
    loop_run(l, t0 + o->seconds);
    r.seconds = bench_now() - t0;
    r.cpu_seconds = process_cpu_s() - c0;
    r.ops = l->done;
    r.errors = l->failed;
    r.ops_per_s = r.seconds > 0 ? (double)r.ops / r.seconds : 0;
    r.ops_per_cpu_s = r.cpu_seconds > 0 ? (double)r.ops / r.cpu_seconds : 0;
    /* Connections still in flight are freed waiting, as a server drops them. */
    for (i = 0; i < l->n; i++)
        conn_close(&l->conns[i]);
    po.impl = mode;
    json_begin(&po, "tls-async");
    json_int("inflight", l->n);
    json_num("latency_ms", o->latency_ms);
    json_result(&r);
    json_int("sign_peak", (long)shim_peak("C_Sign"));
    json_end();
    return ok && l->failed == 0;
}

int cmd_tls_async(const bench_opts *o)
{
    static loop l;
    char list[64], spec[64], *mode, *save = NULL;
    EVP_PKEY *skey = NULL, *ckey = NULL, *ca_key = NULL;
    X509 *ca = NULL;
    int ok = 0;

    if (o->config == NULL || o->shim == NULL || o->key == NULL || o->inflight > MAX_INFLIGHT) {
        fprintf(stderr, "mtlsks-bench: tls-async needs --config (the shim as the module), "
                        "--shim, --key (the server's) and --inflight up to 1024\n");
        return 0;
    }
    snprintf(list, sizeof(list), "%s", o->impl);
    if (!bench_load_config(o->config) ||
        (skey = bench_store_load(o->key, NULL, o->pass_file)) == NULL || !shim_attach(o->shim))
        goto done;
    snprintf(spec, sizeof(spec), "C_Sign=delay:%.0fus", o->latency_ms * 1000);
    if (!shim_set_faults(o->latency_ms > 0 ? spec : NULL)) {
        fprintf(stderr, "mtlsks-bench: cannot set the shim's delay (%s)\n", spec);
        goto done;
    }
    ckey = bench_soft_key(o->alg);
    ca_key = bench_soft_key(BENCH_EC);
    ca = ca_key != NULL ? bench_make_cert(ca_key, "mtlsks-bench CA", NULL, ca_key, 1) : NULL;
    l.sctx = ca != NULL ? bench_side_ctx(1, skey, "server", ca, ca_key, 2) : NULL;
    l.cctx = ca != NULL ? bench_side_ctx(0, ckey, "client", ca, ca_key, 3) : NULL;
    l.n = o->inflight;
    l.conns = calloc((size_t)l.n, sizeof(*l.conns));
    if (l.sctx == NULL || l.cctx == NULL || l.conns == NULL)
        goto done;
    ok = 1;
    for (mode = strtok_r(list, ",", &save); mode != NULL && ok; mode = strtok_r(NULL, ",", &save))
        ok = run_mode(o, mode, &l);
done:
    free(l.conns);
    SSL_CTX_free(l.sctx);
    SSL_CTX_free(l.cctx);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(ckey);
    EVP_PKEY_free(skey);
    return ok;
}
