/*
 * Keystore internals shared between the front (keystore.c, keyref.c) and the
 * PKCS#11 backend (pkcs11/). Not installed.
 */
#ifndef MTLSKS_INTERNAL_H
#define MTLSKS_INTERNAL_H

#include <mtlsks/keystore.h>

#include <stdarg.h>

#if defined(__GNUC__) || defined(__clang__)
#define MKS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MKS_PRINTF(a, b)
#endif

/*
 * Records the calling thread's error message and returns rv, so that a
 * failure reads `return mks_error(MKS_ERR_ARG, "bad id in '%s'", uri);`.
 * The message must never contain a PIN.
 */
mks_rv mks_error(mks_rv rv, const char *fmt, ...) MKS_PRINTF(2, 3);

/* Prefixes the current error message with "what: " (adds context on the way up). */
void mks_error_prefix(const char *fmt, ...) MKS_PRINTF(1, 2);

/* Clears the calling thread's error message. */
void mks_error_clear(void);

/* strdup that reports MKS_ERR_NOMEM through *rv. */
char *mks_strdup(const char *s);

/* Copies a blank-padded PKCS#11 string field into a NUL-terminated C string. */
void mks_copy_padded(char *dst, size_t dstsize, const unsigned char *src, size_t srclen);

#endif
