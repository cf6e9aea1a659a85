/*
 * Shared by the stress programs (tests/stress/): a SoftHSM token of their
 * own in a temp directory, made with softhsm2-util; an openssl.cnf that
 * loads mtlsks.so; keys made by `mtls-keystore enroll`; results and skips in
 * ctest's terms (exit 0 passed, 1 failed, 77 skipped).
 *
 * Nothing here calls OpenSSL: a program that loads the provider from
 * openssl.cnf sets OPENSSL_CONF first (stress_token_use_config) and only then
 * initialises OpenSSL, as a server started with OPENSSL_CONF does.
 */
#ifndef MTLSKS_STRESS_UTIL_H
#define MTLSKS_STRESS_UTIL_H

#include <stddef.h>

#define STRESS_SKIP 77
#define STRESS_PIN "1234"
#define STRESS_SO_PIN "5678"

typedef struct stress_token {
    char dir[256];          /* the temp directory; removed by stress_token_cleanup */
    char softhsm_conf[320]; /* SOFTHSM2_CONF (exported) */
    char pin_file[320];     /* 0600, the user PIN */
    char pin_source[330];   /* "file:" pin_file */
    char openssl_cnf[320];  /* default + mtlsks.so, module, PIN source */
    char label[33];
} stress_token;

/* Prints "SKIP: why" and exits 77. */
void stress_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Prints "FAIL: why" and exits 1 (after removing the token directory). */
void stress_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The SoftHSM module (MTLSKS_SOFTHSM_MODULE or Debian's path). */
const char *stress_softhsm_module(void);

/*
 * Makes a temp directory named after `name`, a SoftHSM configuration for a
 * token directory in it (exported as SOFTHSM2_CONF; `reset_on_fork` sets
 * SoftHSM's library.reset_on_fork), one initialised token labelled `label`,
 * the PIN file and an openssl.cnf loading the default provider and
 * `provider_path` (NULL: no mtlsks section). Skips when softhsm2-util or the
 * module is missing; fails on anything else.
 */
void stress_token_init(stress_token *t, const char *name, const char *label, int reset_on_fork,
                       const char *provider_path);

/* Removes the token directory (unless MTLSKS_KEEP_TMP=1). Idempotent. */
void stress_token_cleanup(void);

/* Exports OPENSSL_CONF=t->openssl_cnf (before OpenSSL is initialised). */
void stress_token_use_config(const stress_token *t);

/*
 * Runs `mtls-keystore --config openssl_cnf enroll` (the CLI at cli_path) for
 * a key `label` of `key_type` ("ec:P-256") in the token; writes the key
 * reference to t->dir/label.key.pem and returns the URI the CLI printed in
 * uri (malloc'd). Fails the test on error.
 */
char *stress_enroll(const stress_token *t, const char *cli_path, const char *label,
                    const char *key_type);

/* Monotonic seconds. */
double stress_now(void);

#endif
