/*
 * tls-load: clients against a running TLS server (HAProxy in ci/bench and
 * in tests/integration/haproxy.sh). --threads clients at once, each making
 * --count requests, every one on a new connection with a full TLS 1.3
 * handshake (no resumption) and the client's certificate; a request is an
 * HTTP/1.0 GET whose answer must be 200 and contain --expect. The clients
 * sign in software: what the row measures is the server and its token.
 */
#include "bench.h"

#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

typedef struct load_state {
    const bench_opts *o;
    SSL_CTX *ctx;
    struct addrinfo *addr;
    atomic_ulong ok, failed;
    atomic_int reported;
} load_state;

/* Reads the whole answer (the server closes after it) into buf. */
static size_t read_all(SSL *s, char *buf, size_t size)
{
    size_t len = 0, n = 0;

    while (len + 1 < size && SSL_read_ex(s, buf + len, size - 1 - len, &n) == 1)
        len += n;
    buf[len] = '\0';
    return len;
}

static int one_request(load_state *ls, int client, long i)
{
    char req[128], answer[4096] = "";
    const char *failed = "connect";
    SSL *s = NULL;
    int fd;
    size_t w = 0;

    fd = socket(ls->addr->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, ls->addr->ai_addr, ls->addr->ai_addrlen) != 0)
        goto done;
    failed = "the handshake";
    s = SSL_new(ls->ctx);
    if (s == NULL || !SSL_set_fd(s, fd) || SSL_connect(s) != 1)
        goto done;
    failed = "the request";
    snprintf(req, sizeof(req), "GET /c%d/%ld HTTP/1.0\r\nHost: localhost\r\n\r\n", client, i);
    if (SSL_write_ex(s, req, strlen(req), &w) != 1)
        goto done;
    read_all(s, answer, sizeof(answer));
    failed = "the answer";
    if (strncmp(answer, "HTTP/1.", 7) == 0 && strncmp(answer + 8, " 200", 4) == 0 &&
        (ls->o->expect == NULL || strstr(answer, ls->o->expect) != NULL))
        failed = NULL;
done:
    if (failed != NULL && atomic_fetch_add(&ls->reported, 1) == 0) {
        fprintf(stderr, "mtlsks-bench: client %d request %ld: %s failed%s%.200s\n", client, i,
                failed, *answer != '\0' ? ": " : "", answer);
        bench_report_errors(failed);
    }
    SSL_free(s);
    if (fd >= 0)
        close(fd);
    return failed == NULL;
}

typedef struct client_arg {
    load_state *ls;
    int index;
} client_arg;

static void *client_main(void *p)
{
    client_arg *ca = p;
    long i;

    for (i = 0; i < ca->ls->o->count; i++) {
        if (one_request(ca->ls, ca->index, i))
            atomic_fetch_add(&ca->ls->ok, 1);
        else
            atomic_fetch_add(&ca->ls->failed, 1);
    }
    return NULL;
}

static SSL_CTX *client_ctx(const bench_opts *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    EVP_PKEY *key = bench_store_load(o->key, NULL, NULL);

    if (ctx == NULL || key == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_load_verify_file(ctx, o->ca) != 1) {
        bench_report_errors("the client SSL_CTX");
        SSL_CTX_free(ctx);
        ctx = NULL;
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    EVP_PKEY_free(key);
    return ctx;
}

/* tls-load --connect HOST:PORT --cert --key --ca [--expect] --threads --count. */
int cmd_tls_load(const bench_opts *o)
{
    static load_state ls;
    pthread_t th[BENCH_MAX_THREADS];
    client_arg ca[BENCH_MAX_THREADS];
    char host[256], *port;
    double t0, secs;
    int i, n = 0, ok = 0;

    if (o->connect == NULL || o->cert == NULL || o->key == NULL || o->ca == NULL || o->count <= 0) {
        fprintf(stderr, "mtlsks-bench: tls-load needs --connect HOST:PORT, --cert, --key, --ca "
                        "and --count (requests per client)\n");
        return 0;
    }
    snprintf(host, sizeof(host), "%s", o->connect);
    port = strrchr(host, ':');
    if (port == NULL) {
        fprintf(stderr, "mtlsks-bench: --connect %s: no port\n", o->connect);
        return 0;
    }
    *port++ = '\0';
    ls.o = o;
    if (getaddrinfo(host, port, NULL, &ls.addr) != 0 || ls.addr == NULL) {
        fprintf(stderr, "mtlsks-bench: cannot resolve %s\n", o->connect);
        return 0;
    }
    ls.ctx = client_ctx(o);
    if (ls.ctx == NULL)
        goto done;
    t0 = bench_now();
    for (n = 0; n < o->threads; n++) {
        ca[n].ls = &ls;
        ca[n].index = n;
        if (pthread_create(&th[n], NULL, client_main, &ca[n]) != 0)
            break;
    }
    for (i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    secs = bench_now() - t0;
    json_begin(o, "tls-load");
    json_int("clients", o->threads);
    json_int("requests", (long)o->threads * o->count);
    json_int("ok", (long)atomic_load(&ls.ok));
    json_int("ops", (long)atomic_load(&ls.ok));
    json_int("errors", (long)atomic_load(&ls.failed));
    json_num("seconds", secs);
    json_num("ops_per_s", secs > 0 ? (double)atomic_load(&ls.ok) / secs : 0);
    json_end();
    ok = n == o->threads && atomic_load(&ls.failed) == 0;
done:
    SSL_CTX_free(ls.ctx);
    freeaddrinfo(ls.addr);
    return ok;
}
