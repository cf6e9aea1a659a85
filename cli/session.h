/*
 * One run of a command: the configuration, the keystore context, the PIN
 * prompt state, the TPM key password and, for commands that sign, an OpenSSL
 * library context with the default provider and the mtlsks provider built
 * in, sharing the keystore context (one login, one TPM connection for both).
 */
#ifndef MTLSKS_CLI_SESSION_H
#define MTLSKS_CLI_SESSION_H

#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ui.h>

#include <mtlsks/keystore.h>

#include "config.h"
#include "csr.h"
#include "globals.h"
#include "key_arg.h"
#include "pin.h"
#include "tpm_auth.h"
#include "util.h"

typedef struct cli_session {
    const char *cmd;
    cli_config conf;
    mks_config kscfg;        /* strings point into conf or the globals */
    const char *tcti_origin; /* where kscfg.tpm2_tcti came from, for messages */
    mks_ctx *ks;
    cli_pin pin;
    mks_pin_ui pin_ui;
    cli_tpm_auth tpm_auth;
    mks_pin_ui tpm_ui; /* asks tpm_auth */
    char *tpm_pem;     /* TSS2 PEM of the TPM key file in use (the provider decodes it) */
    size_t tpm_pem_len;
    OSSL_LIB_CTX *libctx;
    OSSL_PROVIDER *prov_default;
    OSSL_PROVIDER *prov_mks;
    UI_METHOD *ui_method; /* answers from pin_ui (PINs) or tpm_ui (TPM key passwords) */
} cli_session;

/*
 * Reads the configuration, applies --module/--pin-source over it and
 * creates the keystore context. Prints the error itself; returns 1, or 0
 * with s left empty (cli_session_close on it does nothing).
 */
int cli_session_open(cli_session *s, const cli_globals *g, const char *cmd);

/* The module in use: the configured path or p11-kit-proxy. */
const char *cli_session_module(const cli_session *s);

/* 1 when a PIN source other than the prompt is configured. */
int cli_session_has_pin_source(const cli_session *s);

/* The TCTI the TPM is reached through: --tcti, the config's tpm2-tcti, or
 * CLI_DEFAULT_TCTI. */
const char *cli_session_tcti(const cli_session *s);

/*
 * Reports a failed TPM operation like cli_fail_ks, then what to do about it:
 * for an unreachable TPM the TCTI, where it came from and how to set it; for
 * a rejected, missing or locked-out key password what happened and that it
 * is not retried.
 */
void cli_session_fail_tpm(cli_session *s, mks_rv rv, const char *fmt, ...) CLI_PRINTF(3, 4);

/* Frees everything: library context first (its keys hold the keystore), then the keystore. */
void cli_session_close(cli_session *s);

/* ------------------------------------------------------------------------ */
/* Choosing the token (token.c)                                              */

/*
 * Finds the token that --slot INDEX (slot_index >= 0) or --token LABEL names
 * among the slots that can hold keys. An unknown index or label, or a label
 * that several tokens carry, is reported with the slots to choose from:
 * as --slot and --token when the command takes both (slot_ok), else as
 * --token only. Returns 1 with *token_uri (malloc'd) and token_label
 * filled, or 0.
 */
int cli_session_find_token(cli_session *s, int slot_index, const char *label, int slot_ok,
                           char **token_uri, char token_label[33]);

/*
 * Finds the token for a command on objects labelled labels[0..n): the one
 * --token names (token != NULL), else the one token that can hold keys and
 * has an object (of `classes`) with one of the labels. None, or several,
 * is an error printed for s->cmd. Returns 1 with *token_uri (malloc'd) and
 * token_label, or 0.
 */
int cli_find_label_token(cli_session *s, const char *const *labels, size_t n, unsigned classes,
                         const char *token, char **token_uri, char token_label[33]);

/* ------------------------------------------------------------------------ */
/* Keys named with --key (key_arg.c) and new TPM keys (tpm_keygen.c)         */

/*
 * Opens the key a parsed --key argument names (asking for a PIN or TPM key
 * password as needed; a TPM key's password is checked with one signature so
 * a wrong one fails here, clearly). Prints the error itself; returns 1 with
 * *out, or 0.
 */
int cli_session_open_key(cli_session *s, const cli_key_arg *ka, mks_key **out);

/*
 * Makes a key in the TPM (mks_tpm_keygen) with the password in s->tpm_auth,
 * if any, and remembers its TSS2 PEM for cli_session_make_csr. *pem is the
 * TSS2 PRIVATE KEY PEM to write (malloc'd). Prints the error itself; returns
 * 1 with *key, or 0.
 */
int cli_session_tpm_keygen(cli_session *s, const mks_keygen_params *kp, uint32_t persist,
                           char **pem, size_t *pem_len, mks_key **key);

/* ------------------------------------------------------------------------ */
/* The library context that signs (libctx.c)                                 */

/*
 * Loads the private key `uri` names through the mtlsks provider (OSSL_STORE
 * in the session's library context, set up on first use). Prints the error
 * itself; returns 1 with *out, or 0.
 */
int cli_session_load_pkey(cli_session *s, const char *uri, EVP_PKEY **out);

/*
 * Loads a TPM key file (TSS2 PRIVATE KEY PEM) through the mtlsks provider's
 * decoder in the session's library context. Prints the error itself;
 * returns 1 with *out, or 0.
 */
int cli_session_decode_tpm_pkey(cli_session *s, const char *pem, size_t pem_len, EVP_PKEY **out);

/*
 * Makes the CSR for a token or TPM key: loads it through the provider (by
 * its URI, or for a TPM key file from the TSS2 PEM the session remembers
 * from cli_session_open_key / cli_session_tpm_keygen), signs the request
 * built from req with it (SHA-384 for P-384, else SHA-256) and verifies it.
 * Prints the error itself; returns 1 with *pem (malloc'd), or 0.
 */
int cli_session_make_csr(cli_session *s, mks_key *key, const cli_csr_req *req, char **pem,
                         size_t *pem_len);

#endif
