/*
 * pkey_export CONFIG KEY: the private half of a token key never leaves the
 * token. Loads KEY (key-reference file or pkcs11: URI) through the provider
 * of CONFIG, then:
 *   - EVP_PKEY_todata with EVP_PKEY_KEYPAIR (and EVP_PKEY_PRIVATE_KEY) fails,
 *     or at least carries no private component;
 *   - PEM_write_bio_PrivateKey / i2d_PrivateKey write no private key;
 *   - the public half exports (EVP_PKEY_todata PUBLIC_KEY, i2d_PUBKEY), as
 *     EVP_PKEY_eq needs when a server checks its key against its
 *     certificate.
 * Prints one line per check; exit 0 when all pass, 1 when one fails, 2 when
 * the key cannot be loaded.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/store.h>
#include <openssl/x509.h>

static int failures;

static void check(int ok, const char *fmt, ...)
{
    va_list ap;

    printf("%s ", ok ? "ok  " : "FAIL");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!ok)
        failures++;
}

static int has_private_param(const OSSL_PARAM *params)
{
    static const char *const priv[] = {
        OSSL_PKEY_PARAM_PRIV_KEY,         OSSL_PKEY_PARAM_RSA_D,
        OSSL_PKEY_PARAM_RSA_FACTOR1,      OSSL_PKEY_PARAM_RSA_FACTOR2,
        OSSL_PKEY_PARAM_RSA_EXPONENT1,    OSSL_PKEY_PARAM_RSA_EXPONENT2,
        OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
    };
    size_t i;

    for (i = 0; params != NULL && i < sizeof(priv) / sizeof(priv[0]); i++)
        if (OSSL_PARAM_locate_const(params, priv[i]) != NULL)
            return 1;
    return 0;
}

static EVP_PKEY *load(OSSL_LIB_CTX *libctx, const char *ref)
{
    OSSL_STORE_CTX *st = OSSL_STORE_open_ex(ref, libctx, NULL, NULL, NULL, NULL, NULL, NULL);
    EVP_PKEY *pkey = NULL;

    if (st == NULL)
        return NULL;
    (void)OSSL_STORE_expect(st, OSSL_STORE_INFO_PKEY);
    while (pkey == NULL && !OSSL_STORE_eof(st)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(st);
        if (info == NULL) {
            if (OSSL_STORE_error(st))
                break;
            continue;
        }
        pkey = OSSL_STORE_INFO_get1_PKEY(info);
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(st);
    return pkey;
}

int main(int argc, char **argv)
{
    OSSL_LIB_CTX *libctx;
    EVP_PKEY *pkey;
    OSSL_PARAM *params = NULL;
    BIO *bio;
    unsigned char *der = NULL;
    char *pem = NULL;
    long len;
    int r, n;

    if (argc != 3) {
        fprintf(stderr, "usage: pkey_export CONFIG KEY\n");
        return 2;
    }
    libctx = OSSL_LIB_CTX_new();
    if (libctx == NULL || !OSSL_LIB_CTX_load_config(libctx, argv[1]) ||
        (pkey = load(libctx, argv[2])) == NULL) {
        fprintf(stderr, "pkey_export: cannot load %s\n", argv[2]);
        ERR_print_errors_fp(stderr);
        return 2;
    }
    printf("-- %s key, %d bits, from provider %s\n", EVP_PKEY_get0_type_name(pkey),
           EVP_PKEY_get_bits(pkey), OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pkey)));

    r = EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params);
    check(r != 1 || !has_private_param(params), "EVP_PKEY_todata(EVP_PKEY_KEYPAIR) %s",
          r != 1 ? "fails" : "carries no private part");
    check(r != 1, "EVP_PKEY_todata(EVP_PKEY_KEYPAIR) fails (does not pass off the public half "
                  "as the whole key)");
    OSSL_PARAM_free(params);
    params = NULL;
    ERR_clear_error();

    r = EVP_PKEY_todata(pkey, EVP_PKEY_PRIVATE_KEY, &params);
    check(r != 1 || !has_private_param(params), "EVP_PKEY_todata(EVP_PKEY_PRIVATE_KEY) %s",
          r != 1 ? "fails" : "carries no private part");
    OSSL_PARAM_free(params);
    params = NULL;
    ERR_clear_error();

    bio = BIO_new(BIO_s_mem());
    r = bio != NULL ? PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) : 0;
    len = bio != NULL ? BIO_get_mem_data(bio, &pem) : 0;
    check(r != 1 && (len == 0 || strstr(pem, "PRIVATE KEY") == NULL),
          "PEM_write_bio_PrivateKey fails and writes no PRIVATE KEY block (%ld bytes written)",
          len);
    BIO_free(bio);
    ERR_clear_error();

    n = i2d_PrivateKey(pkey, &der);
    check(n <= 0, "i2d_PrivateKey fails (%d)", n);
    OPENSSL_free(der);
    der = NULL;
    ERR_clear_error();

    r = EVP_PKEY_todata(pkey, EVP_PKEY_PUBLIC_KEY, &params);
    check(r == 1 && !has_private_param(params),
          "EVP_PKEY_todata(EVP_PKEY_PUBLIC_KEY) gives the public half");
    OSSL_PARAM_free(params);
    n = i2d_PUBKEY(pkey, &der);
    check(n > 0, "i2d_PUBKEY gives the SubjectPublicKeyInfo (%d bytes)", n);
    OPENSSL_free(der);
    ERR_clear_error();

    EVP_PKEY_free(pkey);
    OSSL_LIB_CTX_free(libctx);
    printf("pkey_export: %d check%s failed\n", failures, failures == 1 ? "" : "s");
    return failures == 0 ? 0 : 1;
}
