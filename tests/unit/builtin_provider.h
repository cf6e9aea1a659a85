/*
 * The mtlsks provider built into a test program as the CLI builds it
 * (mks_provider_builtin_init), over a keystore context the test made, in a
 * library context of its own with the default provider beside it.
 * Included by the unit tests that drive the provider (not a test itself).
 */
#ifndef MTLSKS_BUILTIN_PROVIDER_H
#define MTLSKS_BUILTIN_PROVIDER_H

#include <stdio.h>

#include <openssl/err.h>
#include <openssl/provider.h>

#include <mtlsks/keystore.h>

#include "mtlsks_provider.h"

typedef struct builtin_provider {
    OSSL_LIB_CTX *libctx;
    OSSL_PROVIDER *deflt, *mks;
} builtin_provider;

/* Opens the keystore from cfg into *ks and loads both providers; 0 on
 * success, -1 with the reason on stderr. */
static int builtin_provider_start(const mks_config *cfg, mks_ctx **ks, builtin_provider *bp)
{
    if (mks_ctx_new(cfg, ks) != MKS_OK) {
        fprintf(stderr, "mks_ctx_new: %s\n", mks_last_error());
        return -1;
    }
    bp->libctx = OSSL_LIB_CTX_new();
    mks_provider_builtin_set_keystore(*ks);
    if (bp->libctx == NULL ||
        !OSSL_PROVIDER_add_builtin(bp->libctx, MKS_PROVIDER_NAME, mks_provider_builtin_init) ||
        (bp->deflt = OSSL_PROVIDER_load(bp->libctx, "default")) == NULL ||
        (bp->mks = OSSL_PROVIDER_load(bp->libctx, MKS_PROVIDER_NAME)) == NULL) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    return 0;
}

static void builtin_provider_stop(mks_ctx *ks, builtin_provider *bp)
{
    OSSL_PROVIDER_unload(bp->mks);
    OSSL_PROVIDER_unload(bp->deflt);
    OSSL_LIB_CTX_free(bp->libctx);
    mks_provider_builtin_set_keystore(NULL);
    mks_ctx_free(ks);
}

#endif
