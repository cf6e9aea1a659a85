/*
 * libFuzzer target: URIs as the provider receives them, on a real token
 * (SoftHSM, made at start with a key and a certificate; keystore/fuzz/
 * fuzz_token.h). The first byte picks the door:
 *   even  OSSL_STORE_open("pkcs11:..." or "tpmkey:...") and load everything
 *         the URI names, as `openssl storeutl URI` and `s_server -key URI`;
 *   odd   the URI in a key-reference PEM file, decoded as a private key, as
 *         `PEM_read_bio_PrivateKey` on a key file does.
 * The rest is the URI (without a pkcs11: or tpmkey: scheme, "pkcs11:" is put
 * in front). Never a crash or a leak; a key that loads has a public half that
 * exports (or, when it is a stand-in for a key that could not be opened, an
 * error that says why), and its private half never exports.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/store.h>

#include <mtlsks/keystore.h>

#include "fuzz_token.h"
#include "mtlsks_provider.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PROPQ "provider=" MKS_PROVIDER_NAME

static OSSL_LIB_CTX *libctx;
static mks_ctx *ks;
static mks_key *token_key; /* kept: the token stays logged in */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_token_setup(&ks, &token_key);
    mks_provider_builtin_set_keystore(ks);
    libctx = OSSL_LIB_CTX_new();
    if (libctx == NULL ||
        !OSSL_PROVIDER_add_builtin(libctx, MKS_PROVIDER_NAME, mks_provider_builtin_init) ||
        OSSL_PROVIDER_load(libctx, "default") == NULL ||
        OSSL_PROVIDER_load(libctx, MKS_PROVIDER_NAME) == NULL) {
        ERR_print_errors_fp(stderr);
        abort();
    }
    return 0;
}

static void check_pkey(EVP_PKEY *pkey)
{
    OSSL_PARAM *params = NULL;

    /* The public half exports; or, for a key reference whose key could not
     * be opened (loaded as a stand-in), the export fails and says why. */
    ERR_clear_error();
    if (EVP_PKEY_todata(pkey, EVP_PKEY_PUBLIC_KEY, &params) != 1 && ERR_peek_error() == 0)
        __builtin_trap();
    OSSL_PARAM_free(params);
    params = NULL;
    if (EVP_PKEY_todata(pkey, EVP_PKEY_KEYPAIR, &params) == 1 &&
        (OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL ||
         OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_RSA_D) != NULL))
        __builtin_trap(); /* private key material left the token */
    OSSL_PARAM_free(params);
}

static void via_store(const char *uri, int expect)
{
    OSSL_STORE_CTX *st = OSSL_STORE_open_ex(uri, libctx, PROPQ, NULL, NULL, NULL, NULL, NULL);
    int i;

    if (st == NULL)
        return;
    if (expect != 0)
        (void)OSSL_STORE_expect(st, expect);
    for (i = 0; i < 16 && !OSSL_STORE_eof(st); i++) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(st);

        if (info == NULL) {
            if (OSSL_STORE_error(st))
                break;
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY)
            check_pkey(OSSL_STORE_INFO_get0_PKEY(info));
        OSSL_STORE_INFO_free(info);
    }
    OSSL_STORE_close(st);
}

static void via_keyref(const char *uri)
{
    char *pem = NULL;
    size_t len = 0;
    EVP_PKEY *pkey = NULL;
    OSSL_DECODER_CTX *dctx;
    const unsigned char *p;

    if (mks_keyref_encode_pem(uri, &pem, &len) != MKS_OK)
        return;
    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, EVP_PKEY_KEYPAIR, libctx, NULL);
    p = (const unsigned char *)pem;
    if (dctx != NULL && OSSL_DECODER_from_data(dctx, &p, &len) && pkey != NULL)
        check_pkey(pkey);
    EVP_PKEY_free(pkey);
    OSSL_DECODER_CTX_free(dctx);
    free(pem);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int expects[4] = {0, OSSL_STORE_INFO_PKEY, OSSL_STORE_INFO_PUBKEY,
                                   OSSL_STORE_INFO_CERT};
    char *uri;
    size_t off = 0;

    if (size < 1 || size > 4096)
        return 0;
    uri = malloc(size + 8);
    if (uri == NULL)
        return 0;
    if (!((size - 1 >= 7 && strncasecmp((const char *)data + 1, "pkcs11:", 7) == 0) ||
          (size - 1 >= 7 && strncasecmp((const char *)data + 1, "tpmkey:", 7) == 0))) {
        memcpy(uri, "pkcs11:", 7);
        off = 7;
    }
    memcpy(uri + off, data + 1, size - 1);
    uri[off + size - 1] = '\0';
    if (data[0] & 1)
        via_keyref(uri);
    else
        via_store(uri, expects[(data[0] >> 1) & 3]);
    ERR_clear_error();
    free(uri);
    return 0;
}
