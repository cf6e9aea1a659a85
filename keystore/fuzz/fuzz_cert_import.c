/*
 * libFuzzer target: certificate import (mks_cert_import), the path that
 * `mtls-keystore import-cert` gives a file's certificate to. The input is
 * tried as the certificate DER twice: as it is (parsing, the trailing-data
 * check, the public-key comparison) and with its public key replaced by the
 * token key's, so that the rest of the path runs too (names encoded,
 * existing certificates compared, the object stored).
 *
 * Never a crash; a certificate carrying another public key is never stored,
 * and one carrying the key's own public key is never called a mismatch.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include <mtlsks/keystore.h>

#include "fuzz_token.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mks_ctx *ctx;
static mks_key *key;
static EVP_PKEY *key_pub;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    size_t len;
    const unsigned char *spki;

    (void)argc;
    (void)argv;
    fuzz_token_setup(&ctx, &key);
    spki = mks_key_get0_spki(key, &len);
    key_pub = d2i_PUBKEY(NULL, &spki, (long)len);
    if (key_pub == NULL)
        abort();
    return 0;
}

/* 1 when der is exactly one certificate for the token key. */
static int is_own(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    EVP_PKEY *pub = x != NULL ? X509_get0_pubkey(x) : NULL;
    int own = pub != NULL && p == der + len && EVP_PKEY_eq(pub, key_pub) == 1;

    X509_free(x);
    ERR_clear_error();
    return own;
}

static void check(mks_rv rv, int own_key)
{
    if (rv == MKS_ERR_MISMATCH && own_key)
        __builtin_trap(); /* the key's own certificate refused */
    if (rv == MKS_OK && !own_key)
        __builtin_trap(); /* a certificate for another key stored */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const unsigned char *p = data;
    X509 *x;
    unsigned char *der = NULL;
    int len;

    x = d2i_X509(NULL, &p, (long)size);
    check(mks_cert_import(key, "fuzz-import", data, size), is_own(data, (size_t)size));
    if (x != NULL && X509_set_pubkey(x, key_pub) && (len = i2d_X509(x, &der)) > 0)
        check(mks_cert_import(key, "fuzz-import", der, (size_t)len), is_own(der, (size_t)len));
    OPENSSL_free(der);
    X509_free(x);
    ERR_clear_error();
    return 0;
}
