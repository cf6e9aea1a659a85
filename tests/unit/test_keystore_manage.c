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

#include "cert_fixture.h"
#include "softhsm_fixture.h"

#define TOKEN "pkcs11:token=ks-manage"

static softhsm_fixture token;
static const char *pin_source = token.pin_source;

static int make_token(void **state)
{
    return softhsm_make(&token, "/tmp/mtlsks-manage-XXXXXX", "ks-manage");
}

static int remove_token(void **state)
{
    return softhsm_remove(&token);
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
