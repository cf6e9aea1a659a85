#include "stress_ossl.h"
#include "stress_util.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/store.h>
#include <openssl/x509.h>

void stress_print_errors(const char *what)
{
    unsigned long e;
    const char *file, *data;
    int line, flags;
    char buf[256];

    while ((e = ERR_get_error_all(&file, &line, NULL, &data, &flags)) != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
        fprintf(stderr, "  %s: %s%s%s\n", what, buf, (flags & ERR_TXT_STRING) ? ": " : "",
                (flags & ERR_TXT_STRING) ? data : "");
    }
}

EVP_PKEY *stress_load_key(OSSL_LIB_CTX *libctx, const char *uri, const char *propq)
{
    OSSL_STORE_CTX *sc;
    EVP_PKEY *key = NULL;
    int n = 0;

    sc = OSSL_STORE_open_ex(uri, libctx, propq, NULL, NULL, NULL, NULL, NULL);
    if (sc == NULL) {
        stress_print_errors("OSSL_STORE_open");
        stress_fail("cannot open %s", uri);
    }
    if (!OSSL_STORE_expect(sc, OSSL_STORE_INFO_PKEY))
        stress_fail("OSSL_STORE_expect failed");
    while (!OSSL_STORE_eof(sc)) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sc);

        if (info == NULL) {
            if (OSSL_STORE_error(sc)) {
                stress_print_errors("OSSL_STORE_load");
                stress_fail("cannot load %s", uri);
            }
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY) {
            n++;
            if (key == NULL)
                key = OSSL_STORE_INFO_get1_PKEY(info);
        }
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(sc);
    if (key == NULL || n != 1)
        stress_fail("%s: %d private keys, expected 1", uri, n);
    return key;
}

EVP_PKEY *stress_public_copy(const EVP_PKEY *key, OSSL_LIB_CTX *plain)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_PUBKEY(key, &der);
    EVP_PKEY *pub;

    if (len <= 0) {
        stress_print_errors("i2d_PUBKEY");
        stress_fail("cannot export the public key");
    }
    p = der;
    pub = d2i_PUBKEY_ex(NULL, &p, len, plain, NULL);
    OPENSSL_free(der);
    if (pub == NULL) {
        stress_print_errors("d2i_PUBKEY_ex");
        stress_fail("cannot import the public key");
    }
    return pub;
}

int stress_sign_verify(OSSL_LIB_CTX *libctx, EVP_PKEY *key, EVP_PKEY *pub, OSSL_LIB_CTX *plain,
                       const char *tag, int n)
{
    int i, failures = 0;

    for (i = 0; i < n; i++) {
        EVP_MD_CTX *sctx = EVP_MD_CTX_new(), *vctx = EVP_MD_CTX_new();
        unsigned char sig[1024], msg[128];
        size_t siglen = sizeof(sig);
        int msglen = snprintf((char *)msg, sizeof(msg), "%s message %d", tag, i), ok;

        ok = sctx != NULL && vctx != NULL &&
             EVP_DigestSignInit_ex(sctx, NULL, "SHA256", libctx, NULL, key, NULL) == 1 &&
             EVP_DigestSign(sctx, sig, &siglen, msg, (size_t)msglen) == 1;
        if (ok)
            ok = EVP_DigestVerifyInit_ex(vctx, NULL, "SHA256", plain, NULL, pub, NULL) == 1 &&
                 EVP_DigestVerify(vctx, sig, siglen, msg, (size_t)msglen) == 1;
        if (!ok) {
            if (failures == 0) {
                fprintf(stderr, "%s: signature %d failed\n", tag, i);
                stress_print_errors(tag);
            }
            ERR_clear_error();
            failures++;
        }
        EVP_MD_CTX_free(sctx);
        EVP_MD_CTX_free(vctx);
    }
    return failures;
}
