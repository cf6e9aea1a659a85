/*
 * What the provider module offers to programs that link it in directly
 * rather than loading mtlsks.so from openssl.cnf (the mtls-keystore CLI).
 */
#ifndef MTLSKS_PROVIDER_H
#define MTLSKS_PROVIDER_H

#include <openssl/core.h>
#include <mtlsks/keystore.h>

/* The provider's name, as in openssl.cnf and property queries (provider=mtlsks). */
#define MKS_PROVIDER_NAME "mtlsks"

/*
 * Provider init for OSSL_PROVIDER_add_builtin(libctx, MKS_PROVIDER_NAME,
 * mks_provider_builtin_init). The instance uses the keystore context given to
 * mks_provider_builtin_set_keystore() (taking no ownership; it must outlive
 * the library context) instead of creating one from openssl.cnf, so a
 * program and the provider share one login.
 */
OSSL_provider_init_fn mks_provider_builtin_init;
void mks_provider_builtin_set_keystore(mks_ctx *ks);

#endif
