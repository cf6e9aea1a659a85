/*
 * TPM keys through the mtlsks provider, built in as the CLI builds it
 * (mks_provider_builtin_init), against a real swtpm on free loopback ports:
 * 8 threads signing with one TPM key at once, a forked child signing with
 * the key its parent loaded, the TPM commands a signature and a mutual-TLS
 * handshake cost, and signatures per second on swtpm (printed, not
 * asserted). Twice: with objects held (tpm2-hold-objects = yes, the path
 * behind a resource manager: one TPM2_Sign per signature, one per side of a
 * handshake) and as on the bare swtpm (each signature ContextLoad, Sign,
 * FlushContext: three commands).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <mtlsks/keystore.h>

#include "builtin_provider.h"
#include "swtpm_fixture.h"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define THREADS 8
#define SIGNS_PER_THREAD 50
#define CHILD_SIGNS 20

static swtpm_fixture tpm;

/* The keystore and a library context with the default provider and ours. */
static mks_ctx *ks;
static const char *hold_objects; /* tpm2-hold-objects of this group */
static unsigned long per_sign;   /* TPM commands per signature once loaded */
static builtin_provider bp;
static OSSL_LIB_CTX *libctx; /* bp's */

/* ---- swtpm ------------------------------------------------------------------ */

static int start_swtpm(void)
{
    char conf[128];
    FILE *f;

    if (swtpm_start(&tpm, "/tmp/mtlsks-tpmprov-XXXXXX") != 0)
        return -1;
    /* An empty SoftHSM as the configured PKCS#11 module: TPM keys must not
     * need a token. */
    snprintf(conf, sizeof(conf), "%s/softhsm2.conf", tpm.dir);
    f = fopen(conf, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
            tpm.dir);
    fclose(f);
    setenv("SOFTHSM2_CONF", conf, 1);
    return 0;
}

static void stop_swtpm(void)
{
    if (swtpm_stop(&tpm) != 0)
        fprintf(stderr, "cannot remove %s\n", tpm.dir);
}

static int setup(void **state)
{
    mks_config cfg = {.pkcs11_module = SOFTHSM_MODULE};

    if (start_swtpm() != 0)
        return -1;
    cfg.tpm2_tcti = tpm.tcti;
    cfg.tpm2_hold_objects = hold_objects;
    if (builtin_provider_start(&cfg, &ks, &bp) != 0)
        return -1;
    libctx = bp.libctx;
    return 0;
}

static int setup_held(void **state)
{
    hold_objects = "yes";
    per_sign = 1;
    return setup(state);
}

static int setup_bare(void **state)
{
    hold_objects = NULL; /* auto: the swtpm TCTI has no resource manager */
    per_sign = 3;
    return setup(state);
}

static int teardown(void **state)
{
    builtin_provider_stop(ks, &bp);
    stop_swtpm();
    return 0;
}

/* ---- keys ---------------------------------------------------------------------- */

/* A new TPM key (not persistent, no password), loaded through the provider's
 * decoder from its TSS2 PEM as any program reading the file would; *pub gets
 * its public half as a software key. */
static EVP_PKEY *tpm_pkey(mks_key_type type, EVP_PKEY **pub)
{
    mks_tpm_keygen_params kp = {
        {type, type == MKS_KEY_RSA ? 2048 : 0, type == MKS_KEY_EC ? "P-256" : NULL, NULL},
        NULL,
        0,
        0};
    mks_key *key = NULL;
    char *pem = NULL;
    size_t pem_len = 0, spki_len = 0;
    const unsigned char *p, *spki;
    OSSL_DECODER_CTX *dctx;
    EVP_PKEY *pkey = NULL;

    if (mks_tpm_keygen(ks, &kp, &pem, &pem_len, &key) != MKS_OK)
        fail_msg("keygen: %s", mks_last_error());
    spki = mks_key_get0_spki(key, &spki_len);
    *pub = d2i_PUBKEY(NULL, &spki, (long)spki_len);
    assert_non_null(*pub);
    mks_key_free(key);

    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, OSSL_KEYMGMT_SELECT_PRIVATE_KEY,
                                         libctx, "?provider=" MKS_PROVIDER_NAME);
    assert_non_null(dctx);
    p = (const unsigned char *)pem;
    if (!OSSL_DECODER_from_data(dctx, &p, &pem_len) || pkey == NULL) {
        ERR_print_errors_fp(stderr);
        fail_msg("the provider does not decode the TSS2 key");
    }
    OSSL_DECODER_CTX_free(dctx);
    free(pem);
    assert_string_equal(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey)), MKS_PROVIDER_NAME);
    return pkey;
}

/* Signs msg with pkey (SHA-256; RSA-PSS with salt = digest length) and
 * verifies the signature with pub in software. 1 when both worked. */
static int sign_verify(EVP_PKEY *pkey, EVP_PKEY *pub, const unsigned char *msg, size_t len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new(), *vmd = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL, *vctx = NULL;
    unsigned char sig[512];
    size_t siglen = sizeof(sig);
    int rsa = EVP_PKEY_is_a(pub, "RSA"), ok;

    ok = md != NULL && vmd != NULL &&
         EVP_DigestSignInit_ex(md, &pctx, "SHA256", libctx, NULL, pkey, NULL) == 1 &&
         (!rsa || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                   EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1)) &&
         EVP_DigestSign(md, sig, &siglen, msg, len) == 1 &&
         EVP_DigestVerifyInit_ex(vmd, &vctx, "SHA256", NULL, NULL, pub, NULL) == 1 &&
         (!rsa || (EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                   EVP_PKEY_CTX_set_rsa_pss_saltlen(vctx, RSA_PSS_SALTLEN_DIGEST) == 1)) &&
         EVP_DigestVerify(vmd, sig, siglen, msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_MD_CTX_free(vmd);
    return ok;
}

/* ---- threads and fork ------------------------------------------------------------ */

typedef struct thread_arg {
    EVP_PKEY *pkey, *pub;
    int id;
    int failures;
} thread_arg;

static void *signer(void *p)
{
    thread_arg *a = p;
    char msg[64];
    int i;

    for (i = 0; i < SIGNS_PER_THREAD; i++) {
        snprintf(msg, sizeof(msg), "thread %d, signature %d", a->id, i);
        if (!sign_verify(a->pkey, a->pub, (const unsigned char *)msg, strlen(msg))) {
            a->failures++;
            ERR_print_errors_fp(stderr);
        }
        ERR_clear_error();
    }
    return NULL;
}

static void test_threads_sign_one_key(void **state)
{
    EVP_PKEY *pub = NULL, *pkey = tpm_pkey(MKS_KEY_EC, &pub);
    pthread_t t[THREADS];
    thread_arg args[THREADS];
    unsigned long before;
    int i, failures = 0;

    /* Load it once: then every signature costs per_sign TPM commands. */
    assert_true(sign_verify(pkey, pub, (const unsigned char *)"warm", 4));
    before = mks_tpm_command_count();
    for (i = 0; i < THREADS; i++) {
        args[i] = (thread_arg){pkey, pub, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, signer, &args[i]), 0);
    }
    for (i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        failures += args[i].failures;
    }
    assert_int_equal(failures, 0);
    assert_int_equal(mks_tpm_command_count() - before, per_sign * THREADS * SIGNS_PER_THREAD);
    printf("# %d threads x %d signatures with one TPM key: no failure, %lu TPM commands\n", THREADS,
           SIGNS_PER_THREAD, mks_tpm_command_count() - before);
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(pub);
}

static void test_fork_child_signs(void **state)
{
    EVP_PKEY *pub = NULL, *pkey = tpm_pkey(MKS_KEY_EC, &pub);
    pid_t pid;
    int status = 0;

    /* The parent loads the key and signs; the child inherits it loaded. */
    assert_true(sign_verify(pkey, pub, (const unsigned char *)"parent", 6));
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int i, ok = 1;

        for (i = 0; i < CHILD_SIGNS && ok; i++)
            ok = sign_verify(pkey, pub, (const unsigned char *)"child", 5);
        if (!ok)
            ERR_print_errors_fp(stderr);
        EVP_PKEY_free(pkey); /* flushes the child's own copy of the key */
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The parent's key still works after the child is gone. */
    assert_true(sign_verify(pkey, pub, (const unsigned char *)"parent again", 12));
    EVP_PKEY_free(pkey);
    EVP_PKEY_free(pub);
}

/* ---- what it costs ------------------------------------------------------------------ */

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void measure_signatures(mks_key_type type, const char *what)
{
    enum { N = 200 };
    EVP_PKEY *pub = NULL, *pkey;
    unsigned long c0, c1, c2;
    double t0, t1;
    int i;

    c0 = mks_tpm_command_count();
    pkey = tpm_pkey(type, &pub);
    c1 = mks_tpm_command_count();
    /* The first signature loads the key: standard primary, load, flush the
     * primary, sign (and without held objects: save its context, flush it). */
    assert_true(sign_verify(pkey, pub, (const unsigned char *)"first", 5));
    c2 = mks_tpm_command_count();
    printf("# %s: key creation %lu TPM commands; first signature %lu (loads the key)\n", what,
           c1 - c0, c2 - c1);

    t0 = now();
    for (i = 0; i < N; i++)
        assert_true(sign_verify(pkey, pub, (const unsigned char *)&i, sizeof(i)));
    t1 = now();
    assert_int_equal(mks_tpm_command_count() - c2, per_sign * N);
    printf("# %s: %d signatures, %lu TPM commands (%.2f per signature), %.0f signatures/s on "
           "swtpm (signing through the provider and verifying in software)\n",
           what, N, mks_tpm_command_count() - c2, (double)(mks_tpm_command_count() - c2) / N,
           N / (t1 - t0));
    c0 = mks_tpm_command_count();
    EVP_PKEY_free(pkey);
    printf("# %s: freeing the key %lu TPM commands (flush, when held)\n", what,
           mks_tpm_command_count() - c0);
    EVP_PKEY_free(pub);
}

static void test_commands_per_signature(void **state)
{
    measure_signatures(MKS_KEY_EC, "EC P-256 ECDSA");
    measure_signatures(MKS_KEY_RSA, "RSA 2048 PSS");
}

/* A certificate for pub, issued by ca_key (self-signed when issuer is NULL). */
static X509 *make_cert(const char *cn, EVP_PKEY *pub, X509 *issuer, EVP_PKEY *ca_key)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX v3;
    X509_EXTENSION *ext;

    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(rand() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(x, pub);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints,
                              issuer != NULL ? "critical,CA:FALSE" : "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (issuer != NULL) {
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost");
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
    X509_NAME_free(name);
    return x;
}

static SSL_CTX *tls_ctx(int server, X509 *cert, EVP_PKEY *key, X509 *ca, int version)
{
    SSL_CTX *ctx = SSL_CTX_new_ex(libctx, NULL, server ? TLS_server_method() : TLS_client_method());

    assert_non_null(ctx);
    SSL_CTX_set_min_proto_version(ctx, version);
    SSL_CTX_set_max_proto_version(ctx, version);
    assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        ERR_print_errors_fp(stderr);
        fail_msg("SSL_CTX_use_PrivateKey with the TPM key");
    }
    assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return ctx;
}

/* One mutual-TLS handshake over a BIO pair, in process. 1 when both sides
 * finished and verified each other. */
static int handshake(SSL_CTX *sctx, SSL_CTX *cctx)
{
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb = NULL, *cb = NULL;
    int sdone = 0, cdone = 0, i, r, ok = 0;

    if (s == NULL || c == NULL || !BIO_new_bio_pair(&sb, 0, &cb, 0))
        goto done;
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    for (i = 0; i < 100 && !(sdone && cdone); i++) {
        if (!cdone) {
            r = SSL_do_handshake(c);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ)
                goto done;
        }
        if (!sdone) {
            r = SSL_do_handshake(s);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ)
                goto done;
        }
    }
    ok = sdone && cdone && SSL_get_verify_result(s) == X509_V_OK &&
         SSL_get_verify_result(c) == X509_V_OK && SSL_get0_peer_certificate(s) != NULL;
done:
    if (!ok)
        ERR_print_errors_fp(stderr);
    SSL_free(s);
    SSL_free(c);
    return ok;
}

static void measure_handshakes(int version, const char *what)
{
    enum { N = 20 };
    EVP_PKEY *spub = NULL, *cpub = NULL, *skey, *ckey, *ca_key;
    X509 *ca, *scert, *ccert;
    SSL_CTX *sctx, *cctx;
    unsigned long c0;
    double t0, t1;
    int i;

    ca_key = EVP_EC_gen("P-256");
    assert_non_null(ca_key);
    skey = tpm_pkey(MKS_KEY_EC, &spub);
    ckey = tpm_pkey(MKS_KEY_EC, &cpub);
    ca = make_cert("test CA", ca_key, NULL, ca_key);
    scert = make_cert("server", spub, ca, ca_key);
    ccert = make_cert("client", cpub, ca, ca_key);
    sctx = tls_ctx(1, scert, skey, ca, version);
    cctx = tls_ctx(0, ccert, ckey, ca, version);

    c0 = mks_tpm_command_count();
    assert_true(handshake(sctx, cctx));
    printf("# %s, both keys in the TPM: first handshake %lu TPM commands (loads both keys)\n", what,
           mks_tpm_command_count() - c0);
    c0 = mks_tpm_command_count();
    t0 = now();
    for (i = 0; i < N; i++)
        assert_true(handshake(sctx, cctx));
    t1 = now();
    /* One signature per side: the server's and the client's
     * CertificateVerify (TLS 1.2: ServerKeyExchange and CertificateVerify). */
    assert_int_equal(mks_tpm_command_count() - c0, per_sign * 2 * N);
    printf("# %s, both keys in the TPM: %d handshakes, %.2f TPM commands per handshake "
           "(one signature per side), %.0f handshakes/s in process on swtpm\n",
           what, N, (double)(mks_tpm_command_count() - c0) / N, N / (t1 - t0));

    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    X509_free(ca);
    X509_free(scert);
    X509_free(ccert);
    EVP_PKEY_free(skey);
    EVP_PKEY_free(ckey);
    EVP_PKEY_free(spub);
    EVP_PKEY_free(cpub);
    EVP_PKEY_free(ca_key);
}

static void test_commands_per_handshake(void **state)
{
    measure_handshakes(TLS1_3_VERSION, "TLS 1.3");
    measure_handshakes(TLS1_2_VERSION, "TLS 1.2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_sign_one_key),
        cmocka_unit_test(test_fork_child_signs),
        cmocka_unit_test(test_commands_per_signature),
        cmocka_unit_test(test_commands_per_handshake),
    };

    if (system("command -v swtpm >/dev/null 2>&1") != 0) {
        printf("SKIP: swtpm is not installed (Debian package swtpm)\n");
        return 77;
    }
    if (access(SOFTHSM_MODULE, R_OK) != 0) {
        printf("SKIP: %s not found (the keystore loads a PKCS#11 module even for TPM keys)\n",
               SOFTHSM_MODULE);
        return 77;
    }
    setenv("TSS2_LOG", "all+none", 1);
    if (cmocka_run_group_tests_name("objects held (as behind a resource manager)", tests,
                                    setup_held, teardown) != 0)
        return 1;
    return cmocka_run_group_tests_name("bare swtpm (load, use, flush)", tests, setup_bare,
                                       teardown);
}
