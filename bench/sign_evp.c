/*
 * EVP_DigestSign rows: our provider (loaded from openssl.cnf, key loaded once
 * by URI or key file through OSSL_STORE), tpm2-openssl, libp11's engine and a
 * software key in the default provider all sign through the same loop, the
 * way libssl signs a CertificateVerify: a new EVP_MD_CTX, DigestSignInit with
 * the digest name, padding for RSA, one DigestSign of a 128-byte message.
 * Also the start-up row: provider load to first signature, and VmRSS.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/ui.h>
#include <openssl/x509.h>

/* The signed message: about what a TLS 1.3 CertificateVerify signs. */
static const unsigned char message[128] = "mtlsks-bench message to sign";

int bench_load_config(const char *path)
{
    OPENSSL_INIT_SETTINGS *s = NULL;
    uint64_t flags = OPENSSL_INIT_NO_LOAD_CONFIG;
    int ok;

    if (path != NULL) {
        s = OPENSSL_INIT_new();
        if (s == NULL || !OPENSSL_INIT_set_config_filename(s, path))
            return 0;
        /* A provider that fails to load must fail the row, not be skipped. */
        OPENSSL_INIT_set_config_file_flags(s, 0);
        flags = OPENSSL_INIT_LOAD_CONFIG;
    }
    ok = OPENSSL_init_crypto(flags, s);
    OPENSSL_INIT_free(s);
    if (!ok)
        bench_report_errors("loading the configuration");
    return ok;
}

int bench_load_tpm2_provider(void)
{
    /*
     * As `openssl -provider tpm2 -provider default` loads them, the way
     * tpm2-openssl documents. Then tpm2's digests and RAND win every fetch
     * without properties (libssl hashes its transcript in the TPM). The other
     * order does not sign: the default provider's ECDSA is fetched, tpm2
     * exports only the public half to it, and it fails with "missing private
     * key" (openssl#16614, tpm2-openssl#81).
     */
    if (OSSL_PROVIDER_load(NULL, "tpm2") == NULL || OSSL_PROVIDER_load(NULL, "default") == NULL) {
        bench_report_errors("loading the tpm2 provider");
        return 0;
    }
    return 1;
}

int bench_load_providers(const bench_opts *o)
{
    /* Our provider comes from openssl.cnf (--config), loaded before anything
     * else; tpm2 before anything fetches from the default provider. A path
     * that does not need the config may still load it, to measure what the
     * loaded provider costs others in the process. */
    return bench_load_config(o->config) &&
           (strstr(o->impl, "tpm2-openssl") == NULL || bench_load_tpm2_provider());
}

int bench_read_pass(const char *file, char *buf, int size)
{
    FILE *f = fopen(file, "r");
    int n;

    if (f == NULL || fgets(buf, size, f) == NULL) {
        if (f != NULL)
            fclose(f);
        fprintf(stderr, "mtlsks-bench: cannot read the password file %s\n", file);
        return -1;
    }
    fclose(f);
    n = (int)strcspn(buf, "\r\n");
    buf[n] = '\0';
    return n;
}

static int pass_cb(char *buf, int size, int rwflag, void *file)
{
    (void)rwflag;
    return bench_read_pass(file, buf, size);
}

EVP_PKEY *bench_store_load(const char *uri, const char *pass_file)
{
    UI_METHOD *ui = pass_file != NULL ? UI_UTIL_wrap_read_pem_callback(pass_cb, 0) : NULL;
    OSSL_STORE_CTX *st =
        OSSL_STORE_open_ex(uri, NULL, NULL, ui, (void *)pass_file, NULL, NULL, NULL);
    EVP_PKEY *pkey = NULL;

    if (st == NULL) {
        UI_destroy_method(ui);
        bench_report_errors("OSSL_STORE_open");
        return NULL;
    }
    OSSL_STORE_expect(st, OSSL_STORE_INFO_PKEY);
    while (pkey == NULL && !OSSL_STORE_eof(st)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(st);
        if (info != NULL && OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
        if (info == NULL && OSSL_STORE_error(st))
            break;
    }
    OSSL_STORE_close(st);
    UI_destroy_method(ui);
    if (pkey == NULL)
        bench_report_errors("loading the key");
    return pkey;
}

EVP_PKEY *bench_soft_key(bench_alg alg)
{
    /* provider=default: a provider that also generates keys (tpm2) must not. */
    EVP_PKEY *k = alg == BENCH_EC
                      ? EVP_PKEY_Q_keygen(NULL, "provider=default", "EC", "P-256")
                      : EVP_PKEY_Q_keygen(NULL, "provider=default", "RSA", (size_t)2048);

    if (k == NULL)
        bench_report_errors("software key generation");
    return k;
}

static int set_padding(EVP_PKEY_CTX *pctx, bench_alg alg)
{
    if (alg == BENCH_EC)
        return 1;
    if (alg == BENCH_RSA_PKCS1)
        return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0;
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0;
}

int bench_evp_sign(EVP_PKEY *pkey, bench_alg alg, unsigned char *sig, size_t *siglen)
{
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = m != NULL && EVP_DigestSignInit_ex(m, &pctx, "SHA256", NULL, NULL, pkey, NULL) == 1 &&
             set_padding(pctx, alg) &&
             EVP_DigestSign(m, sig, siglen, message, sizeof(message)) == 1;

    EVP_MD_CTX_free(m);
    if (!ok)
        bench_report_errors("EVP_DigestSign");
    return ok;
}

EVP_PKEY *bench_public_copy(EVP_PKEY *pkey)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int n = i2d_PUBKEY(pkey, &der);
    EVP_PKEY *pub = NULL;

    if (n > 0) {
        p = der;
        pub = d2i_PUBKEY_ex(NULL, &p, n, NULL, "provider=default");
    }
    OPENSSL_free(der);
    if (pub == NULL)
        bench_report_errors("copying the public key");
    return pub;
}

int bench_evp_verify(EVP_PKEY *pkey, bench_alg alg, const unsigned char *sig, size_t siglen)
{
    EVP_PKEY *pub = bench_public_copy(pkey);
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok =
        pub != NULL && m != NULL &&
        EVP_DigestVerifyInit_ex(m, &pctx, "SHA256", NULL, "provider=default", pub, NULL) == 1 &&
        set_padding(pctx, alg) && EVP_DigestVerify(m, sig, siglen, message, sizeof(message)) == 1;

    EVP_MD_CTX_free(m);
    EVP_PKEY_free(pub);
    if (!ok)
        bench_report_errors("verifying a signature");
    return ok;
}

typedef struct evp_arg {
    EVP_PKEY *pkey;
    bench_alg alg;
} evp_arg;

static int evp_op(void *p, int thread)
{
    evp_arg *a = p;
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);

    return bench_evp_sign(a->pkey, a->alg, sig, &siglen);
}

/* Diagnostic: only what precedes the signature (context, DigestSignInit,
 * padding), so that a gap to the ceiling can be split between OpenSSL's
 * per-operation set-up and the signing itself. */
static int evp_init_op(void *p, int thread)
{
    evp_arg *a = p;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = m != NULL &&
             EVP_DigestSignInit_ex(m, &pctx, "SHA256", NULL, NULL, a->pkey, NULL) == 1 &&
             set_padding(pctx, a->alg);

    EVP_MD_CTX_free(m);
    return ok;
}

/* The key an EVP path uses; NULL when it cannot be had. The configuration
 * (our provider) is loaded already. */
static EVP_PKEY *path_key(const bench_opts *o, const char *impl)
{
    if (strcmp(impl, "provider") == 0)
        return bench_store_load(o->key, o->pass_file);
    if (strcmp(impl, "tpm2-openssl") == 0)
        return bench_store_load(o->key, o->pass_file);
    if (strcmp(impl, "engine") == 0) {
        void *e = bench_engine_open(o->module, o->pin_file);
        return e != NULL ? bench_engine_load(e, o->key) : NULL;
    }
    if (strcmp(impl, "soft") == 0)
        return o->key != NULL && strncmp(o->key, "pkcs11:", 7) != 0 ? bench_store_load(o->key, NULL)
                                                                    : bench_soft_key(o->alg);
    fprintf(stderr, "mtlsks-bench: unknown impl '%s'\n", impl);
    return NULL;
}

typedef struct path_state {
    bench_path path;
    evp_arg evp;
    int verified; /* EVP paths: the first signature verified; -1: not checked */
    int keystore;
} path_state;

static int path_setup(const bench_opts *o, const char *impl, path_state *ps)
{
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);

    ps->verified = -1;
    if (strcmp(impl, "raw") == 0)
        return raw_path_setup(o, &ps->path);
    if (strcmp(impl, "keystore") == 0)
        return (ps->keystore = keystore_path_setup(o, &ps->path));
    ps->evp.alg = o->alg;
    ps->evp.pkey = path_key(o, impl);
    if (ps->evp.pkey == NULL)
        return 0;
    ps->verified = bench_evp_sign(ps->evp.pkey, o->alg, sig, &siglen) &&
                   bench_evp_verify(ps->evp.pkey, o->alg, sig, siglen);
    ps->path.name = impl;
    ps->path.op = o->init_only ? evp_init_op : evp_op;
    ps->path.arg = &ps->evp;
    return 1;
}

/*
 * sign --impl A[,B...]: signatures per second through each path. Several
 * paths run in one process, taking turns (bench_run_paths), so that their
 * ratios hold on a busy machine.
 */
int cmd_sign(const bench_opts *o)
{
    static path_state ps[BENCH_MAX_PATHS];
    bench_path paths[BENCH_MAX_PATHS];
    bench_result r[BENCH_MAX_PATHS];
    char list[256], *name, *save = NULL;
    int n = 0, k, ok;

    snprintf(list, sizeof(list), "%s", o->impl);
    if (!bench_load_providers(o))
        return 0;
    for (name = strtok_r(list, ",", &save); name != NULL; name = strtok_r(NULL, ",", &save)) {
        if (n == BENCH_MAX_PATHS || !path_setup(o, name, &ps[n]))
            return 0;
        paths[n] = ps[n].path;
        n++;
    }
    if (n == 0 || (n > 1 && o->count > 0)) {
        fprintf(stderr, "mtlsks-bench: --count takes one --impl\n");
        return 0;
    }
    if (o->shim != NULL && !shim_attach(o->shim))
        return 0;
    ok = bench_run_paths(o, paths, n, shim_reset, r);
    for (k = 0; k < n; k++) {
        bench_opts po = *o;
        po.impl = paths[k].name;
        json_begin(&po, o->init_only ? "sign-init" : "sign");
        if (n > 1) {
            json_int("paths", n);
            json_num("slice", o->slice);
        }
        json_result(&r[k]);
        if (ps[k].verified >= 0)
            json_int("verified", ps[k].verified);
        if (n == 1)
            shim_json_per_op("calls_per_op", r[k].ops);
        json_end();
        ok = ok && ps[k].verified != 0;
    }
    /* Freed as a program would: a TPM key left loaded would hold one of the
     * TPM's few transient slots after the process is gone. */
    for (k = 0; k < n; k++) {
        EVP_PKEY_free(ps[k].evp.pkey);
        if (ps[k].keystore)
            keystore_path_free();
    }
    return ok;
}

/*
 * Start-up: from a process that has not touched OpenSSL to the first
 * signature, in three steps (provider or engine load, key load, first
 * signature), and the resident memory before and after.
 */
int cmd_startup(const bench_opts *o)
{
    double t0, t1, t2, t3;
    long rss0 = bench_rss_kb(), rss1;
    EVP_PKEY *pkey = NULL;
    void *engine = NULL;
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    int ok = 0;

    t0 = bench_now();
    if (strcmp(o->impl, "provider") == 0)
        ok = bench_load_config(o->config);
    else if (strcmp(o->impl, "tpm2-openssl") == 0)
        ok = bench_load_config(NULL) && bench_load_tpm2_provider();
    else if (strcmp(o->impl, "engine") == 0)
        ok =
            bench_load_config(NULL) && (engine = bench_engine_open(o->module, o->pin_file)) != NULL;
    else if (strcmp(o->impl, "soft") == 0)
        ok = bench_load_config(NULL);
    t1 = bench_now();
    if (ok)
        pkey = engine != NULL ? bench_engine_load(engine, o->key)
                              : bench_store_load(o->key, o->pass_file);
    t2 = bench_now();
    ok = pkey != NULL && bench_evp_sign(pkey, o->alg, sig, &siglen);
    t3 = bench_now();
    rss1 = bench_rss_kb();
    EVP_PKEY_free(pkey);
    json_begin(o, "startup");
    json_int("ok", ok);
    json_num("load_ms", (t1 - t0) * 1e3);
    json_num("key_ms", (t2 - t1) * 1e3);
    json_num("first_sign_ms", (t3 - t2) * 1e3);
    json_num("total_ms", (t3 - t0) * 1e3);
    json_int("rss_start_kb", rss0);
    json_int("rss_kb", rss1);
    json_end();
    return ok;
}
