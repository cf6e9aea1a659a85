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
#include "pin.h"
#include "util.h"

/* The global options; commands accept them too (after the command name). */
typedef struct cli_globals {
    const char *config;     /* --config FILE */
    const char *module;     /* --module PATH */
    const char *pin_source; /* --pin-source file:PATH */
    const char *tcti;       /* --tcti STRING: the TPM's TCTI */
} cli_globals;

/* getopt_long values of the global options inside a command's table. */
enum { CLI_OPT_CONFIG = 0x1000, CLI_OPT_MODULE, CLI_OPT_PIN_SOURCE, CLI_OPT_TCTI };

#define CLI_GLOBAL_LONGOPTS                                                                        \
    {"config", required_argument, NULL, CLI_OPT_CONFIG},                                           \
        {"module", required_argument, NULL, CLI_OPT_MODULE},                                       \
        {"pin-source", required_argument, NULL, CLI_OPT_PIN_SOURCE},                               \
    {                                                                                              \
        "tcti", required_argument, NULL, CLI_OPT_TCTI                                              \
    }

/* The TCTI when neither --tcti nor the config's tpm2-tcti names one. */
#define CLI_DEFAULT_TCTI "device:/dev/tpmrm0"

/* Stores a global option met while parsing a command's options; 1 when c was one. */
int cli_globals_opt(cli_globals *g, int c, const char *arg);

/* Checks the global options' values (usage errors); 1 when fine. */
int cli_globals_check(const cli_globals *g, const char *cmd);

/*
 * A TPM key's password (its auth value). It comes from --password-source
 * file:PATH or an echo-off prompt on the terminal, is asked for once per
 * run and remembered, so that the keystore and the provider (which opens the
 * key again to sign) do not ask twice, and is wiped when the session closes.
 */
typedef struct cli_tpm_auth {
    const char *source;   /* --password-source file:PATH; NULL = prompt */
    const char *key_name; /* names the key in the prompt and in messages */
    int interactive;      /* may prompt (standard input is a terminal) */
    int asked;            /* the keystore or provider asked for it */
    int have;             /* pw/len hold the password */
    char pw[CLI_PIN_MAX];
    size_t len;
} cli_tpm_auth;

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
    UI_METHOD *ui_method;     /* PINs, from pin */
    UI_METHOD *tpm_ui_method; /* TPM key passwords, from tpm_auth */
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

/* Checks a --password-source value (file:PATH only; usage error otherwise). */
int cli_password_source_check(const char *cmd, const char *source);

/*
 * The password for a new TPM key: read from --password-source (set in
 * s->tpm_auth.source), or asked twice on the terminal with echo off (an
 * empty answer means no password). Without either there is none. Returns 1
 * (s->tpm_auth.have says whether there is a password), or 0 after printing
 * why not.
 */
int cli_session_tpm_new_password(cli_session *s);

/*
 * Makes a key in the TPM (mks_tpm_keygen) with the password in s->tpm_auth,
 * if any, and remembers its TSS2 PEM for cli_session_make_csr. *pem is the
 * TSS2 PRIVATE KEY PEM to write (malloc'd). Prints the error itself; returns
 * 1 with *key, or 0.
 */
int cli_session_tpm_keygen(cli_session *s, const mks_keygen_params *kp, uint32_t persist,
                           char **pem, size_t *pem_len, mks_key **key);

/* What a --key argument names, read before the session opens. */
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
 * Reads a --key argument: a pkcs11: or tpmkey: URI, a key reference file
 * (PKCS#11 PROVIDER URI PEM) or a TPM key file (TSS2 PRIVATE KEY PEM).
 * Touches no token or TPM. Returns 1, or 0 with err saying what is wrong.
 */
int cli_key_arg_parse(const char *arg, cli_key_arg *out, cli_err *err);
void cli_key_arg_clear(cli_key_arg *ka);

/*
 * Opens the key a parsed --key argument names (asking for a PIN or TPM key
 * password as needed; a TPM key's password is checked with one signature so
 * a wrong one fails here, clearly). Prints the error itself; returns 1 with
 * *out, or 0.
 */
int cli_session_open_key(cli_session *s, const cli_key_arg *ka, mks_key **out);

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

/* Frees everything: library context first (its keys hold the keystore), then the keystore. */
void cli_session_close(cli_session *s);

#endif
