/*
 * Managing objects (keystore/pkcs11/p11_manage.c) against a real SoftHSM
 * token made in a temp dir: relabelling what a URI names (a key opened
 * before keeps signing: it is found by CKA_ID), destroying it, the rule that
 * such a URI must name objects and not a whole token, the login it needs,
 * and CA certificates stored as authority objects, once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <mtlsks/keystore.h>

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN "pkcs11:token=ks-manage"

static char dir[256];
static char pin_source[320];

static int make_token(void **state)
{
    char path[300], cmd[1024];
    FILE *f;

    if (access(SOFTHSM_MODULE, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s not found\n", SOFTHSM_MODULE);
        exit(77);
    }
    snprintf(dir, sizeof(dir), "/tmp/mtlsks-manage-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/tokens", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir);
    fclose(f);
    setenv("SOFTHSM2_CONF", path, 1);
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label ks-manage --pin 1234 --so-pin 5678 "
             ">/dev/null");
    if (system(cmd) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/pin", dir);
    f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fputs("1234\n", f);
    fclose(f);
    chmod(path, 0600);
    snprintf(pin_source, sizeof(pin_source), "file:%s", path);
    return 0;
}

static int remove_token(void **state)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static mks_ctx *new_ctx(const char *pin)
{
    mks_config cfg = {.pkcs11_module = SOFTHSM_MODULE, .pin_source = pin};
    mks_ctx *ctx = NULL;

    assert_int_equal(mks_ctx_new(&cfg, &ctx), MKS_OK);
    return ctx;
}

static size_t count(mks_ctx *ctx, const char *uri, unsigned classes)
{
    mks_object *objs = NULL;
    size_t n = 0;

    assert_int_equal(mks_objects_find(ctx, uri, classes, NULL, &objs, &n), MKS_OK);
    mks_objects_free(objs, n);
    return n;
}

/* A certificate for `pub`, issued by `issuer_key` (self-issued name); CA or leaf. */
static unsigned char *make_cert(EVP_PKEY *pub, EVP_PKEY *issuer_key, const char *cn, int ca,
                                size_t *len)
{
    X509 *x = X509_new();
    X509V3_CTX v3;
    X509_EXTENSION *e;
    unsigned char *der = NULL;
    int n;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pub);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (ca) {
        e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    n = i2d_X509(x, &der);
    assert_true(n > 0);
    *len = (size_t)n;
    X509_free(x);
    return der;
}

/* Key pair NAME with its certificate: 3 objects. */
static mks_key *pair(mks_ctx *ctx, const char *name)
{
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", name};
    mks_key *key = NULL;
    EVP_PKEY *pub, *ca = EVP_EC_gen("P-256");
    const unsigned char *spki;
    size_t len = 0;
    unsigned char *der;

    if (mks_keygen(ctx, TOKEN, &kp, NULL, &key) != MKS_OK)
        fail_msg("keygen %s: %s", name, mks_last_error());
    spki = mks_key_get0_spki(key, &len);
    pub = d2i_PUBKEY(NULL, &spki, (long)len);
    assert_non_null(pub);
    der = make_cert(pub, ca, name, 0, &len);
    assert_int_equal(mks_cert_import(key, name, der, len), MKS_OK);
    OPENSSL_free(der);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(ca);
    return key;
}

static int signs(mks_key *key)
{
    unsigned char hash[32] = {1}, sig[128];
    size_t siglen = sizeof(sig);
    mks_mech_params p = {.mech = MKS_MECH_ECDSA};

    return mks_key_sign(key, &p, hash, sizeof(hash), sig, &siglen) == MKS_OK;
}

static void test_set_label(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = pair(ctx, "web.next"), *again = NULL;
    size_t n = 99, id_len = 0;
    const unsigned char *id = mks_key_get0_id(key, &id_len);
    char uri[256];
    size_t i, w;

    assert_int_equal(count(ctx, TOKEN ";object=web.next", MKS_OBJ_ANY), 3);
    /* Only the certificate, then the rest, by id and label. */
    assert_int_equal(mks_objects_set_label(ctx, TOKEN ";object=web.next;type=cert", MKS_OBJ_ANY,
                                           "web", NULL, &n),
                     MKS_OK);
    assert_int_equal(n, 1);
    w = (size_t)snprintf(uri, sizeof(uri), TOKEN ";id=");
    for (i = 0; i < id_len; i++)
        w += (size_t)snprintf(uri + w, sizeof(uri) - w, "%%%02x", id[i]);
    snprintf(uri + w, sizeof(uri) - w, ";object=web.next");
    assert_int_equal(mks_objects_set_label(ctx, uri, MKS_OBJ_ANY, "web", NULL, &n), MKS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(count(ctx, TOKEN ";object=web.next", MKS_OBJ_ANY), 0);
    assert_int_equal(count(ctx, TOKEN ";object=web", MKS_OBJ_ANY), 3);
    /* Nothing left to relabel: zero, not an error. */
    assert_int_equal(mks_objects_set_label(ctx, uri, MKS_OBJ_ANY, "web", NULL, &n), MKS_OK);
    assert_int_equal(n, 0);
    /* The key opened before keeps signing; the new label opens it too. */
    assert_true(signs(key));
    assert_int_equal(mks_key_open(ctx, TOKEN ";object=web;type=private", NULL, &again), MKS_OK);
    assert_true(signs(again));
    /* classes limits what changes. */
    assert_int_equal(
        mks_objects_set_label(ctx, TOKEN ";object=web", MKS_OBJ_PUBLIC_KEY, "web.pub", NULL, &n),
        MKS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(count(ctx, TOKEN ";object=web.pub", MKS_OBJ_ANY), 1);
    mks_key_free(again);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_refusals(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source), *nopin = new_ctx(NULL);
    size_t n = 99;

    /* A URI that names only a token is refused, for both. */
    assert_int_equal(mks_objects_set_label(ctx, TOKEN, MKS_OBJ_ANY, "x", NULL, &n), MKS_ERR_ARG);
    assert_int_equal(n, 0);
    assert_non_null(strstr(mks_last_error(), "id= or object="));
    assert_int_equal(mks_objects_destroy(ctx, TOKEN ";type=cert", MKS_OBJ_ANY, NULL, &n),
                     MKS_ERR_ARG);
    assert_int_equal(mks_objects_set_label(ctx, TOKEN ";object=web", MKS_OBJ_ANY, "", NULL, &n),
                     MKS_ERR_ARG);
    assert_int_equal(mks_objects_destroy(ctx, "file:/etc/passwd", MKS_OBJ_ANY, NULL, &n),
                     MKS_ERR_ARG);
    /* Changes need a login; without a PIN there is none. */
    assert_int_equal(mks_objects_destroy(nopin, TOKEN ";object=web", MKS_OBJ_ANY, NULL, &n),
                     MKS_ERR_PIN_REQUIRED);
    assert_int_equal(count(ctx, TOKEN ";object=web", MKS_OBJ_ANY), 2);
    mks_ctx_free(nopin);
    mks_ctx_free(ctx);
}

static void test_destroy(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = pair(ctx, "gone"), *again = NULL;
    size_t n = 0;

    assert_int_equal(
        mks_objects_destroy(ctx, TOKEN ";object=gone;type=cert", MKS_OBJ_ANY, NULL, &n), MKS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(mks_objects_destroy(ctx, TOKEN ";object=gone", MKS_OBJ_ANY, NULL, &n), MKS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(count(ctx, TOKEN ";object=gone", MKS_OBJ_ANY), 0);
    assert_int_equal(mks_key_open(ctx, TOKEN ";object=gone", NULL, &again), MKS_ERR_NOT_FOUND);
    /* A key opened before fails cleanly once its object is gone. */
    assert_false(signs(key));
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_store_authority(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    EVP_PKEY *ca = EVP_EC_gen("P-256");
    size_t len = 0, n = 0;
    unsigned char *der = make_cert(ca, ca, "Intermediate", 1, &len);
    mks_object *objs = NULL;
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    const ASN1_OCTET_STRING *ski = X509_get0_subject_key_id(x);

    assert_non_null(ski);
    assert_int_equal(mks_cert_store_authority(ctx, TOKEN, "web.chain", der, len, NULL), MKS_OK);
    /* The same certificate under the same label again: stored once. */
    assert_int_equal(mks_cert_store_authority(ctx, TOKEN, "web.chain", der, len, NULL), MKS_OK);
    assert_int_equal(mks_objects_find(ctx, TOKEN ";object=web.chain", MKS_OBJ_ANY, NULL, &objs, &n),
                     MKS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(objs[0].cls, MKS_OBJ_CERTIFICATE);
    assert_int_equal(objs[0].der_len, len);
    assert_memory_equal(objs[0].der, der, len);
    assert_int_equal(objs[0].id_len, (size_t)ASN1_STRING_length(ski));
    assert_memory_equal(objs[0].id, ASN1_STRING_get0_data(ski), objs[0].id_len);
    mks_objects_free(objs, n);

    assert_int_equal(mks_cert_store_authority(ctx, TOKEN, "web.chain", der, len / 2, NULL),
                     MKS_ERR_ARG);
    assert_int_equal(mks_cert_store_authority(ctx, TOKEN, "", der, len, NULL), MKS_ERR_ARG);
    assert_int_equal(
        mks_cert_store_authority(ctx, "pkcs11:token=no-such-token", "c", der, len, NULL),
        MKS_ERR_NOT_FOUND);
    X509_free(x);
    OPENSSL_free(der);
    EVP_PKEY_free(ca);
    mks_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_label),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_destroy),
        cmocka_unit_test(test_store_authority),
    };

    return cmocka_run_group_tests(tests, make_token, remove_token);
}
