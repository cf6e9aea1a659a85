/*
 * One run of a command: the configuration, the keystore context, the PIN
 * prompt state and, for commands that sign, an OpenSSL library context with
 * the default provider and the mtlsks provider built in, sharing the
 * keystore context (one login for both).
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
} cli_globals;

/* getopt_long values of the global options inside a command's table. */
enum { CLI_OPT_CONFIG = 0x1000, CLI_OPT_MODULE, CLI_OPT_PIN_SOURCE };

#define CLI_GLOBAL_LONGOPTS                                                                        \
    {"config", required_argument, NULL, CLI_OPT_CONFIG},                                           \
        {"module", required_argument, NULL, CLI_OPT_MODULE},                                       \
    {                                                                                              \
        "pin-source", required_argument, NULL, CLI_OPT_PIN_SOURCE                                  \
    }

/* Stores a global option met while parsing a command's options; 1 when c was one. */
int cli_globals_opt(cli_globals *g, int c, const char *arg);

/* Checks the global options' values (usage errors); 1 when fine. */
int cli_globals_check(const cli_globals *g, const char *cmd);

typedef struct cli_session {
    const char *cmd;
    cli_config conf;
    mks_config kscfg; /* strings point into conf or the globals */
    mks_ctx *ks;
    cli_pin pin;
    mks_pin_ui pin_ui;
    OSSL_LIB_CTX *libctx;
    OSSL_PROVIDER *prov_default;
    OSSL_PROVIDER *prov_mks;
    UI_METHOD *ui_method;
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

/*
 * Loads the private key `uri` names through the mtlsks provider (OSSL_STORE
 * in the session's library context, set up on first use). Prints the error
 * itself; returns 1 with *out, or 0.
 */
int cli_session_load_pkey(cli_session *s, const char *uri, EVP_PKEY **out);

/*
 * Makes the CSR for a token key: loads it through the provider, signs the
 * request built from req with it (SHA-384 for P-384, else SHA-256) and
 * verifies it. Prints the error itself; returns 1 with *pem (malloc'd), or 0.
 */
int cli_session_make_csr(cli_session *s, mks_key *key, const cli_csr_req *req, char **pem,
                         size_t *pem_len);

/*
 * Finds the token that --slot INDEX (slot_index >= 0) or --token LABEL names
 * among the slots that can hold keys. An unknown index or label, or a label
 * that several tokens carry, is reported with the slots to choose from.
 * Returns 1 with *token_uri (malloc'd) and token_label filled, or 0.
 */
int cli_session_find_token(cli_session *s, int slot_index, const char *label, char **token_uri,
                           char token_label[33]);

/* Frees everything: library context first (its keys hold the keystore), then the keystore. */
void cli_session_close(cli_session *s);

#endif
