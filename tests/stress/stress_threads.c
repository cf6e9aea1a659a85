/*
 * stress_threads: concurrent handshakes share the token's keys, each
 * signature on a session of its own from the keystore's pool.
 *
 * 1. 8 threads run 1000 mutual-TLS handshakes in all, in one process: TLS 1.3
 *    only, the server's and the client's private keys both in the token
 *    (loaded through the built-in provider by URI), the server requires and
 *    verifies the client's certificate, the client verifies the server's
 *    (and its name). Each handshake is a client SSL and a server SSL joined
 *    by a BIO pair in memory, driven with SSL_do_handshake until both are
 *    done; no session resumption, so every handshake costs two signatures in
 *    the token. 0 failures allowed.
 * 2. 48 threads (more than the pool's P11_POOL_MAX sessions) sign 20 times
 *    each with the server key: the pool makes the extra threads wait.
 *
 * Sessions open (C_OpenSession - C_CloseSession, the keystore's own call
 * counters, sampled by a monitor thread and after every operation) never
 * exceed P11_POOL_MAX. The provider is built in, so that the keystore and
 * its counters are the program's own (with mtlsks.so they would be the
 * module's copy). Prints handshakes, failures, handshakes/s, signatures,
 * logins and sessions open at peak; no timed assertions.
 */
#include "stress_builtin.h"
#include "stress_ossl.h"
#include "stress_util.h"

#include "mtlsks_provider.h"
#include "pkcs11/p11.h" /* P11_POOL_MAX */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define HS_THREADS 8
#define HS_TOTAL 1000
#define SIGN_THREADS 48
#define SIGN_EACH 20

static SSL_CTX *server_ctx, *client_ctx;
static EVP_PKEY *srv_key, *srv_pub;
static stress_builtin b;
static OSSL_LIB_CTX *plain;

static atomic_int next_hs, hs_ok, hs_failed, sign_failed, monitor_stop;
static atomic_long peak_open;

static long sessions_open(void)
{
    return (long)mks_pkcs11_call_count("C_OpenSession") -
           (long)mks_pkcs11_call_count("C_CloseSession");
}

static void sample_sessions(void)
{
    long now = sessions_open(), peak = atomic_load(&peak_open);

    while (now > peak && !atomic_compare_exchange_weak(&peak_open, &peak, now))
        ;
}

static void *monitor(void *arg)
{
    while (!atomic_load(&monitor_stop)) {
        sample_sessions();
        usleep(200);
    }
    return NULL;
}

/* ---- certificates: a software CA issues for the token keys -------------- */

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;

    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL || !X509_add_ext(x, ext, -1))
        stress_fail("cannot add extension %s", value);
    X509_EXTENSION_free(ext);
}

static X509 *issue(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *issuer_key,
                   const char *eku)
{
    static long serial = 1;
    X509 *x = X509_new_ex(b.libctx, NULL);
    X509_NAME *name = X509_NAME_new();

    if (x == NULL || name == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_version(x, X509_VERSION_3) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(x), serial++) ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 86400) == NULL || !X509_set_subject_name(x, name) ||
        !X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name) ||
        !X509_set_pubkey(x, pub))
        stress_fail("cannot build the certificate for %s", cn);
    X509_NAME_free(name);
    if (issuer == NULL) {
        add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, x, NID_key_usage, "critical,keyCertSign");
        add_ext(x, x, NID_subject_key_identifier, "hash");
    } else {
        add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(x, issuer, NID_ext_key_usage, eku);
        add_ext(x, issuer, NID_subject_alt_name, "DNS:localhost");
        add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    }
    if (X509_sign(x, issuer_key, EVP_sha256()) <= 0) {
        stress_print_errors("X509_sign");
        stress_fail("cannot sign the certificate for %s", cn);
    }
    return x;
}

static SSL_CTX *tls_ctx(int server, EVP_PKEY *key, X509 *cert, X509 *ca)
{
    SSL_CTX *ctx =
        SSL_CTX_new_ex(b.libctx, NULL, server ? TLS_server_method() : TLS_client_method());

    if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1 ||
        !X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca)) {
        stress_print_errors("SSL_CTX");
        stress_fail("cannot set up the %s SSL_CTX with the token key",
                    server ? "server" : "client");
    }
    /* Every handshake a full one: two signatures in the token. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (server) {
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

/* ---- one handshake over a BIO pair ----------------------------------------- */

static int step(SSL *ssl, int *done)
{
    int r, e;

    if (*done)
        return 1;
    r = SSL_do_handshake(ssl);
    if (r == 1) {
        *done = 1;
        return 1;
    }
    e = SSL_get_error(ssl, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

static int handshake(char *why, size_t whylen)
{
    SSL *s = SSL_new(server_ctx), *c = SSL_new(client_ctx);
    BIO *bs = NULL, *bc = NULL;
    X509 *peer = NULL;
    int sdone = 0, cdone = 0, rounds, ok = 0;

    why[0] = '\0';
    if (s == NULL || c == NULL || !BIO_new_bio_pair(&bs, 0, &bc, 0)) {
        snprintf(why, whylen, "SSL_new/BIO_new_bio_pair failed");
        goto done;
    }
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    if (!SSL_set1_host(c, "localhost")) {
        snprintf(why, whylen, "SSL_set1_host failed");
        goto done;
    }
    for (rounds = 0; rounds < 64 && !(sdone && cdone); rounds++) {
        if (!step(c, &cdone)) {
            snprintf(why, whylen, "client handshake failed");
            goto done;
        }
        if (!step(s, &sdone)) {
            snprintf(why, whylen, "server handshake failed");
            goto done;
        }
    }
    if (!(sdone && cdone)) {
        snprintf(why, whylen, "handshake not done after %d rounds", rounds);
        goto done;
    }
    peer = SSL_get1_peer_certificate(s);
    if (SSL_version(c) != TLS1_3_VERSION || SSL_version(s) != TLS1_3_VERSION)
        snprintf(why, whylen, "not TLS 1.3");
    else if (SSL_get_verify_result(c) != X509_V_OK)
        snprintf(why, whylen, "client: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(c)));
    else if (peer == NULL || SSL_get_verify_result(s) != X509_V_OK)
        snprintf(why, whylen, "server: no verified client certificate");
    else
        ok = 1;
done:
    X509_free(peer);
    SSL_free(s);
    SSL_free(c);
    return ok;
}

static void *hs_thread(void *arg)
{
    char why[160];

    while (atomic_fetch_add(&next_hs, 1) < HS_TOTAL) {
        if (handshake(why, sizeof(why))) {
            atomic_fetch_add(&hs_ok, 1);
        } else if (atomic_fetch_add(&hs_failed, 1) < 5) {
            fprintf(stderr, "handshake failed: %s\n", why);
            stress_print_errors("handshake");
        }
        ERR_clear_error();
        sample_sessions();
    }
    return NULL;
}

static void *sign_thread(void *arg)
{
    char tag[32];
    int i;

    snprintf(tag, sizeof(tag), "sign thread %d", (int)(long)arg);
    for (i = 0; i < SIGN_EACH; i++) {
        atomic_fetch_add(&sign_failed,
                         stress_sign_verify(b.libctx, srv_key, srv_pub, plain, tag, 1));
        sample_sessions();
    }
    return NULL;
}

static void run_threads(int n, void *(*fn)(void *))
{
    pthread_t th[SIGN_THREADS], mon;
    int i;

    atomic_store(&monitor_stop, 0);
    if (pthread_create(&mon, NULL, monitor, NULL) != 0)
        stress_fail("pthread_create failed");
    for (i = 0; i < n; i++)
        if (pthread_create(&th[i], NULL, fn, (void *)(long)i) != 0)
            stress_fail("pthread_create failed");
    for (i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    atomic_store(&monitor_stop, 1);
    pthread_join(mon, NULL);
    sample_sessions();
}

int main(void)
{
    stress_token t;
    char *srv_uri, *cli_uri;
    EVP_PKEY *cli_key, *cli_pub, *ca_key;
    X509 *ca, *srv_cert, *cli_cert;
    unsigned long sign0, login0, open0, sign1;
    long peak_hs;
    double t0, t1, t2;

    setvbuf(stdout, NULL, _IOLBF, 0);
    stress_token_init(&t, "stress_threads", "stress", 0, NULL);
    stress_builtin_init(&b, &t);
    plain = OSSL_LIB_CTX_new();
    if (plain == NULL)
        stress_fail("OSSL_LIB_CTX_new failed");
    srv_uri = stress_builtin_keygen(&b, &t, "tls-server");
    cli_uri = stress_builtin_keygen(&b, &t, "tls-client");
    srv_key = stress_load_key(b.libctx, srv_uri, "?provider=" MKS_PROVIDER_NAME);
    cli_key = stress_load_key(b.libctx, cli_uri, "?provider=" MKS_PROVIDER_NAME);
    /* Software copies of the public halves, for the certificates. */
    srv_pub = stress_public_copy(srv_key, plain);
    cli_pub = stress_public_copy(cli_key, plain);

    ca_key = EVP_PKEY_Q_keygen(b.libctx, "provider=default", "EC", "P-256");
    if (ca_key == NULL)
        stress_fail("cannot make the CA key");
    ca = issue("stress CA", ca_key, NULL, ca_key, NULL);
    srv_cert = issue("localhost", srv_pub, ca, ca_key, "serverAuth");
    cli_cert = issue("stress client", cli_pub, ca, ca_key, "clientAuth");
    server_ctx = tls_ctx(1, srv_key, srv_cert, ca);
    client_ctx = tls_ctx(0, cli_key, cli_cert, ca);

    /* 1. 8 threads, 1000 handshakes. */
    atomic_store(&peak_open, sessions_open());
    printf("-- sessions open before: %ld (pool maximum %d per token)\n", sessions_open(),
           P11_POOL_MAX);
    sign0 = mks_pkcs11_call_count("C_Sign");
    login0 = mks_pkcs11_call_count("C_Login");
    open0 = mks_pkcs11_call_count("C_OpenSession");
    t0 = stress_now();
    run_threads(HS_THREADS, hs_thread);
    t1 = stress_now();
    peak_hs = atomic_load(&peak_open);
    sign1 = mks_pkcs11_call_count("C_Sign");
    printf("-- %d threads: %d mutual-TLS 1.3 handshakes, %d failures, %.2f s, %.0f handshakes/s; "
           "C_Sign %lu, C_Login %lu, C_OpenSession %lu; sessions open at peak %ld\n",
           HS_THREADS, atomic_load(&hs_ok) + atomic_load(&hs_failed), atomic_load(&hs_failed),
           t1 - t0, (double)atomic_load(&hs_ok) / (t1 - t0), sign1 - sign0,
           mks_pkcs11_call_count("C_Login") - login0,
           mks_pkcs11_call_count("C_OpenSession") - open0, peak_hs);

    /* 2. More threads than sessions. */
    run_threads(SIGN_THREADS, sign_thread);
    t2 = stress_now();
    printf("-- %d threads x %d signatures: %d failures, %.2f s; sessions open at peak %ld\n",
           SIGN_THREADS, SIGN_EACH, atomic_load(&sign_failed), t2 - t1, atomic_load(&peak_open));

    if (atomic_load(&hs_ok) != HS_TOTAL || atomic_load(&hs_failed) != 0)
        stress_fail("%d of %d handshakes failed", atomic_load(&hs_failed), HS_TOTAL);
    if (sign1 - sign0 != 2UL * HS_TOTAL)
        stress_fail("%lu C_Sign calls for %d handshakes, expected 2 per handshake", sign1 - sign0,
                    HS_TOTAL);
    if (atomic_load(&sign_failed) != 0)
        stress_fail("%d of %d signatures failed", atomic_load(&sign_failed),
                    SIGN_THREADS * SIGN_EACH);
    if (atomic_load(&peak_open) > P11_POOL_MAX)
        stress_fail("%ld sessions open at peak, more than the pool's %d", atomic_load(&peak_open),
                    P11_POOL_MAX);

    SSL_CTX_free(server_ctx);
    SSL_CTX_free(client_ctx);
    X509_free(ca);
    X509_free(srv_cert);
    X509_free(cli_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);
    EVP_PKEY_free(srv_pub);
    EVP_PKEY_free(cli_key);
    EVP_PKEY_free(cli_pub);
    free(srv_uri);
    free(cli_uri);
    stress_builtin_free(&b);
    OSSL_LIB_CTX_free(plain);
    printf("PASS: %d handshakes in %d threads and %d signatures in %d threads, 0 failures, "
           "at most %ld sessions open (pool %d)\n",
           HS_TOTAL, HS_THREADS, SIGN_THREADS * SIGN_EACH, SIGN_THREADS, atomic_load(&peak_open),
           P11_POOL_MAX);
    return 0;
}
