/*
 * The provider's section of openssl.cnf, read the way OpenSSL finds it, so
 * that the CLI sees the token the provider in every server sees.
 */
#ifndef MTLSKS_CLI_CONFIG_H
#define MTLSKS_CLI_CONFIG_H

#include "util.h"

typedef struct cli_config {
    char *file;              /* the file read; NULL when none was */
    char *section;           /* the provider's section in it; NULL when not configured */
    char *pkcs11_module;     /* pkcs11-module; NULL = not set */
    char *pin_source;        /* pkcs11-pin-source; NULL = not set */
    char *tpm2_tcti;         /* tpm2-tcti; NULL = not set */
    char *tpm2_hold_objects; /* tpm2-hold-objects; NULL = not set (auto) */
    char *tpm2_sessions;     /* tpm2-sessions; NULL = not set (auto) */
} cli_config;

/*
 * Reads the mtlsks provider's settings. `path` is the --config file; when
 * NULL, $OPENSSL_CONF, else OpenSSL's default openssl.cnf. The section is
 * found as OpenSSL finds it: openssl_conf = INIT, [INIT] providers = LIST,
 * [LIST] mtlsks = SECT (or an entry whose section says identity = mtlsks).
 * No such section, or no default file at all, leaves every value NULL and
 * returns 1. A --config or $OPENSSL_CONF file that cannot be read or parsed
 * returns 0 with err naming the file (and line).
 */
int cli_config_load(const char *path, cli_config *out, cli_err *err);

void cli_config_clear(cli_config *c);

#endif
