/*
 * OpenSSL helpers of the stress programs: load a key the way programs do
 * (OSSL_STORE by URI), sign with it through the EVP API and check every
 * signature in software, in a library context that holds only the default
 * provider.
 */
#ifndef MTLSKS_STRESS_OSSL_H
#define MTLSKS_STRESS_OSSL_H

#include <openssl/evp.h>

/*
 * The one private key that `uri` names, through OSSL_STORE in `libctx`
 * (NULL: the default context) with property query `propq` (may be NULL).
 * The PIN comes from the provider's configuration. Fails the test otherwise.
 */
EVP_PKEY *stress_load_key(OSSL_LIB_CTX *libctx, const char *uri, const char *propq);

/* A software copy of the key's public half in `plain` (a context with only
 * the default provider), to verify with. */
EVP_PKEY *stress_public_copy(const EVP_PKEY *key, OSSL_LIB_CTX *plain);

/*
 * Signs n messages (SHA-256, each naming `tag` and its index) with `key`,
 * fetching in `libctx` (NULL: the default context), and verifies each
 * signature with `pub` in `plain`. Returns the number of failures; the first
 * one's OpenSSL errors go to stderr with `tag`.
 */
int stress_sign_verify(OSSL_LIB_CTX *libctx, EVP_PKEY *key, EVP_PKEY *pub, OSSL_LIB_CTX *plain,
                       const char *tag, int n);

/* Prints OpenSSL's error queue to stderr, prefixed with `what`, and clears it. */
void stress_print_errors(const char *what);

#endif
