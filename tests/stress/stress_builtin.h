/*
 * The provider built into the program (as the CLI does it, cli/session.c):
 * one keystore context, shared by the program and the provider, so that the
 * program reads the keystore's own PKCS#11 call counters.
 */
#ifndef MTLSKS_STRESS_BUILTIN_H
#define MTLSKS_STRESS_BUILTIN_H

#include <openssl/types.h>

#include <mtlsks/keystore.h>

#include "stress_util.h"

typedef struct stress_builtin {
    mks_ctx *ks;
    OSSL_LIB_CTX *libctx; /* default provider + mtlsks (built in) */
    OSSL_PROVIDER *deflt, *mtlsks;
} stress_builtin;

/* Keystore context on t's token (SoftHSM module, t's PIN source), and a
 * library context holding the default provider and the built-in mtlsks.
 * Fails the test otherwise. */
void stress_builtin_init(stress_builtin *b, const stress_token *t);

/* Unloads the providers, frees the library context and the keystore. */
void stress_builtin_free(stress_builtin *b);

/* Makes an EC P-256 key pair labelled `label` in the token; returns its URI
 * (malloc'd). */
char *stress_builtin_keygen(stress_builtin *b, const stress_token *t, const char *label);

/* The sum of the keystore's call counters over every PKCS#11 function. */
unsigned long stress_p11_calls_total(void);

/* Writes "C_Name=N" for every function whose counter differs from `before`
 * (an array from stress_p11_calls_snapshot) into buf. Returns the number of
 * functions that differ. */
#define STRESS_P11_FUNCS 68
void stress_p11_calls_snapshot(unsigned long snap[STRESS_P11_FUNCS]);
int stress_p11_calls_diff(const unsigned long before[STRESS_P11_FUNCS], char *buf, size_t buflen);

#endif
