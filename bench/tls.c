/*
 * Mutual-TLS handshakes per second in one process: a client and a server
 * SSL over a memory BIO pair, TLS 1.3, full handshakes (no tickets, no
 * resumption), each side verifying the other's certificate. The keys come
 * from the row's path (our provider by URI or key file, tpm2-openssl,
 * libp11's engine, or software); their certificates are issued in memory
 * by a throwaway CA, so any key that signs can be measured.
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

typedef struct tls_arg {
    SSL_CTX *sctx, *cctx;
} tls_arg;

X509 *bench_make_cert(EVP_PKEY *pub, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                      long serial)
{
    X509 *x = X509_new_ex(NULL, "provider=default");
    X509_NAME *name = X509_NAME_new();
    int ok = x != NULL && name != NULL && X509_set_version(x, X509_VERSION_3) &&
             ASN1_INTEGER_set(X509_get_serialNumber(x), serial) &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1,
                                        0) &&
             X509_set_subject_name(x, name) &&
             X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name) &&
             X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
             X509_gmtime_adj(X509_getm_notAfter(x), 86400) && X509_set_pubkey(x, pub);

    if (ok && issuer == NULL) {
        X509V3_CTX v3;
        X509_EXTENSION *ext;
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
        ok = ext != NULL && X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    ok = ok && X509_sign(x, issuer_key, EVP_sha256()) > 0;
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        bench_report_errors("issuing a certificate");
        return NULL;
    }
    return x;
}

SSL_CTX *bench_side_ctx(int server, EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *ca_key,
                        long serial)
{
    SSL_CTX *ctx = SSL_CTX_new_ex(NULL, NULL, server ? TLS_server_method() : TLS_client_method());
    EVP_PKEY *pub = bench_public_copy(key);
    X509 *cert = pub != NULL ? bench_make_cert(pub, cn, ca, ca_key, serial) : NULL;
    int ok = ctx != NULL && cert != NULL && SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) &&
             SSL_CTX_use_certificate(ctx, cert) == 1 && SSL_CTX_use_PrivateKey(ctx, key) == 1 &&
             SSL_CTX_check_private_key(ctx) == 1 &&
             X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca) == 1;

    if (ok) {
        SSL_CTX_set_verify(
            ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
            NULL);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        if (server)
            SSL_CTX_set_num_tickets(ctx, 0);
    }
    EVP_PKEY_free(pub);
    X509_free(cert);
    if (!ok) {
        bench_report_errors(server ? "server SSL_CTX" : "client SSL_CTX");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* 1: finished, 0: wants more, -1: failed. */
static int step(SSL *s)
{
    int r = SSL_do_handshake(s), e;

    if (r == 1)
        return 1;
    e = SSL_get_error(s, r);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

static int handshake_op(void *p, int thread)
{
    tls_arg *a = p;
    SSL *c = SSL_new(a->cctx), *s = SSL_new(a->sctx);
    BIO *cb = NULL, *sb = NULL;
    int cdone = 0, sdone = 0, i, ok = 0;
    X509 *peer;

    if (c == NULL || s == NULL || !BIO_new_bio_pair(&cb, 0, &sb, 0))
        goto done;
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    for (i = 0; i < 32 && !(cdone && sdone); i++) {
        if (!cdone && (cdone = step(c)) < 0)
            goto done;
        if (!sdone && (sdone = step(s)) < 0)
            goto done;
    }
    peer = SSL_get0_peer_certificate(s);
    ok = cdone && sdone && peer != NULL && SSL_get_verify_result(s) == X509_V_OK &&
         SSL_get_verify_result(c) == X509_V_OK && SSL_version(c) == TLS1_3_VERSION;
done:
    if (!ok)
        bench_report_errors("a handshake");
    SSL_free(c);
    SSL_free(s);
    return ok;
}

/* The two keys of a TLS path, by impl; the configuration is loaded. */
static int tls_keys(const bench_opts *o, const char *impl, EVP_PKEY **skey, EVP_PKEY **ckey)
{
    *skey = *ckey = NULL;
    if (strcmp(impl, "soft") == 0) {
        *skey = bench_soft_key(o->alg);
        *ckey = bench_soft_key(o->alg);
    } else if (strcmp(impl, "provider") == 0 || strcmp(impl, "p11prov") == 0 ||
               strcmp(impl, "tpm2-openssl") == 0 || strcmp(impl, "engine") == 0) {
        void *e = NULL;
        if (o->key == NULL || o->key2 == NULL) {
            fprintf(stderr, "mtlsks-bench: tls needs --key (server) and --key2 (client)\n");
            return 0;
        }
        if (strcmp(impl, "engine") == 0 && (e = bench_engine_open(o->module, o->pin_file)) == NULL)
            return 0;
        *skey = e != NULL ? bench_engine_load(e, o->key)
                          : bench_store_load(o->key, bench_impl_propq(impl), o->pass_file);
        *ckey = e != NULL ? bench_engine_load(e, o->key2)
                          : bench_store_load(o->key2, bench_impl_propq(impl), o->pass_file);
    } else {
        fprintf(stderr, "mtlsks-bench: tls: unknown impl '%s'\n", impl);
    }
    return *skey != NULL && *ckey != NULL;
}

/*
 * tls --impl A[,B...]: handshakes per second through each path's keys.
 * Several paths run in one process, taking turns (bench_run_paths).
 */
int cmd_tls(const bench_opts *o)
{
    static tls_arg a[BENCH_MAX_PATHS];
    static EVP_PKEY *keys[BENCH_MAX_PATHS][2];
    bench_path paths[BENCH_MAX_PATHS];
    bench_result r[BENCH_MAX_PATHS];
    char list[256], *name, *save = NULL;
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    int n = 0, k, ok = 0;

    snprintf(list, sizeof(list), "%s", o->impl);
    if (!bench_load_providers(o))
        return 0;
    ca_key = bench_soft_key(BENCH_EC);
    ca = ca_key != NULL ? bench_make_cert(ca_key, "mtlsks-bench CA", NULL, ca_key, 1) : NULL;
    if (ca == NULL)
        goto done;
    for (name = strtok_r(list, ",", &save); name != NULL; name = strtok_r(NULL, ",", &save)) {
        if (n == BENCH_MAX_PATHS || !tls_keys(o, name, &keys[n][0], &keys[n][1]))
            goto done;
        a[n].sctx = bench_side_ctx(1, keys[n][0], "server", ca, ca_key, 2 + 2 * n);
        a[n].cctx = bench_side_ctx(0, keys[n][1], "client", ca, ca_key, 3 + 2 * n);
        paths[n].name = name;
        paths[n].op = handshake_op;
        paths[n].arg = &a[n];
        n++;
        if (a[n - 1].sctx == NULL || a[n - 1].cctx == NULL || !handshake_op(&a[n - 1], 0))
            goto done;
    }
    if (n == 0 || (n > 1 && o->count > 0)) {
        fprintf(stderr, "mtlsks-bench: --count takes one --impl\n");
        goto done;
    }
    if (o->shim != NULL && !shim_attach(o->shim))
        goto done;
    ok = bench_run_paths(o, paths, n, shim_reset, r);
    for (k = 0; k < n; k++) {
        bench_opts po = *o;
        po.impl = paths[k].name;
        json_begin(&po, "tls");
        if (n > 1) {
            json_int("paths", n);
            json_num("slice", o->slice);
        }
        json_result(&r[k]);
        if (n == 1)
            shim_json_per_op("calls_per_handshake", r[k].ops);
        json_end();
    }
done:
    /* Freed as a program would: TPM keys must leave the TPM's few slots. */
    for (k = 0; k < n; k++) {
        SSL_CTX_free(a[k].sctx);
        SSL_CTX_free(a[k].cctx);
        EVP_PKEY_free(keys[k][0]);
        EVP_PKEY_free(keys[k][1]);
    }
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return ok;
}
