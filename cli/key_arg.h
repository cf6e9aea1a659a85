/*
 * What a --key argument names: a pkcs11: or tpmkey: URI, a key reference
 * file (PKCS#11 PROVIDER URI PEM) or a TPM key file (TSS2 PRIVATE KEY PEM).
 * It is read before the session opens; cli_session_open_key opens the key.
 */
#ifndef MTLSKS_CLI_KEY_ARG_H
#define MTLSKS_CLI_KEY_ARG_H

#include <stddef.h>

#include "util.h"

typedef enum cli_key_kind {
    CLI_KEY_PKCS11,     /* a pkcs11: URI, or a key reference file holding one */
    CLI_KEY_TPM_HANDLE, /* a tpmkey:handle=0x81... URI (persistent TPM key) */
    CLI_KEY_TPM_FILE,   /* a TSS2 PRIVATE KEY file (ours or tpm2-openssl's) */
} cli_key_kind;

typedef struct cli_key_arg {
    cli_key_kind kind;
    const char *arg; /* as given */
    char *uri;       /* PKCS11 and TPM_HANDLE: the URI; NULL for TPM files */
    char *pem;       /* TPM_FILE: the file's TSS2 PEM block */
    size_t pem_len;
    unsigned char *der; /* TPM_FILE: its DER */
    size_t der_len;
    int needs_password; /* TPM_FILE: the file says the key has a password */
} cli_key_arg;

/*
 * Reads a --key argument. Touches no token or TPM. Returns 1, or 0 with err
 * saying what is wrong.
 */
int cli_key_arg_parse(const char *arg, cli_key_arg *out, cli_err *err);
void cli_key_arg_clear(cli_key_arg *ka);

#endif
