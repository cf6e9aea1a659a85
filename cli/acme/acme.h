/*
 * ACME (RFC 8555) for mtls-keystore: certificates from a CA without a
 * person, with the certificate key and the ACME account key both in
 * hardware. Every JWS the client sends is signed through the mtlsks
 * provider, like the CSR.
 *
 *   http.c       HTTPS to the CA (libcurl): one connection, kept open
 *   jws.c        base64url, JWK and its thumbprint, JWS (ES256, ES384,
 *                RS256) and the external account binding (HS256)
 *   client.c     directory, nonces (badNonce retried), problem documents,
 *                the account (registered, found again, re-registered when
 *                the CA forgot it)
 *   order.c      order, authorizations, challenges, polling, finalize,
 *                download, leaf-matches-key check
 *   responder.c  the challenge responders: http-01 (libmicrohttpd),
 *                --webroot, --dns-01-hook
 *   state.c      the per-label state file (JSON, 0600, atomic, no secrets)
 *   status.c     the status line on a terminal while the CA works
 *   keys.c       the account key and the certificate key: made, found,
 *                loaded through the provider; issued certificates
 *                installed through import-cert's hand-over
 *   enroll.c, renew.c, check.c   enroll --acme, renew --label, check --renew
 *
 * Errors travel in a cli_err up to the command, which prints it once.
 */
#ifndef MTLSKS_CLI_ACME_H
#define MTLSKS_CLI_ACME_H

#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>

#include "session.h"
#include "util.h"

#define ACME_DEFAULT_STATE_DIR "/var/lib/mtls-keystore"
#define ACME_ACCOUNT_LABEL "acme-account"
#define ACME_ACCOUNT_TPM_FILE "acme-account.key.pem"
#define ACME_DEFAULT_TIMEOUT 30

/* ------------------------------------------------------------------------ */
/* Command entry points (the hooks in cmd_enroll.c, cmd_renew.c, cmd_check.c) */

/* 1 when argv (after argv[0]) holds --opt or --opt=... before any "--". */
int acme_argv_has(int argc, char **argv, const char *opt);

/* renew: --state-dir, or --label without --out and --tpm. */
int acme_renew_wanted(int argc, char **argv);
/* check: --renew or --renew-before. */
int acme_check_renew_wanted(int argc, char **argv);

/* enroll --acme ...: called by cmd_enroll with its argv. */
int acme_cmd_enroll(cli_globals *g, int argc, char **argv);
/* renew --label L without --out: the ACME renewal of what enroll recorded. */
int acme_cmd_renew(cli_globals *g, int argc, char **argv);
/* check --renew [...]. */
int acme_cmd_check_renew(cli_globals *g, int argc, char **argv);

/* The outcome of one renewal, for check --renew. */
typedef struct acme_renewal {
    int renewed;
    cli_err err; /* why not, when it failed */
    char not_after[24];
} acme_renewal;

/*
 * Renews the certificate that enroll --acme recorded for label in dir: a
 * new key (NAME.next, or KEY.next for a TPM key) unless same_key, the
 * order, the hand-over through import-cert, the state updated, the deploy
 * hook run. Prints what it does; res says how it ended.
 */
int acme_renew_label(cli_globals *g, const char *cmd, const char *dir, const char *label,
                     int same_key, acme_renewal *res);

/* ------------------------------------------------------------------------ */
/* State: what enroll recorded for a label                                   */

typedef enum acme_chal_type {
    ACME_CHAL_NONE = 0,
    ACME_CHAL_HTTP01,  /* value: ADDR:PORT of the built-in responder */
    ACME_CHAL_WEBROOT, /* value: the web server's root directory */
    ACME_CHAL_DNS01,   /* value: the hook command */
} acme_chal_type;

typedef struct acme_state {
    char *label;
    char *directory; /* the directory URL */
    char *ca_bundle; /* --acme-ca-bundle, or NULL (system CAs) */
    char *account_url;
    char *account_key; /* a pkcs11: URI, or a TPM key file */
    char *contact;     /* mailto:..., or NULL */
    char *eab_kid, *eab_hmac_file;
    acme_chal_type chal;
    char *chal_value;
    char **sans; /* "DNS:name", "IP:address" */
    size_t nsans;
    char *key_type;        /* "ec:P-256", ... */
    char *usage;           /* NULL = both */
    int tpm;               /* the certificate key is a TPM key (key_ref is its file) */
    char *token;           /* token label (token keys) */
    char *password_source; /* TPM: file:PATH of the key's password, or NULL */
    char *key_ref, *cert_out, *chain_out;
    char *deploy_hook;
    int timeout;          /* seconds per request */
    char *revoked_serial; /* set by revoke: the current certificate is revoked */
} acme_state;

void acme_state_clear(acme_state *st);

/* The state directory: --state-dir, else $MTLSKS_STATE_DIR, else the default. */
const char *acme_state_dir(const char *opt);

/* DIR/LABEL.json (the label percent-encoded where it is not [A-Za-z0-9._-]). */
char *acme_state_path(const char *dir, const char *label);

/* Reads a state file. Returns 1, 0 with err (-1 when it does not exist). */
int acme_state_load(const char *path, acme_state *st, cli_err *err);

/* Writes it, 0600, atomically (the directory is made 0700 when missing). */
int acme_state_save(const char *dir, const acme_state *st, cli_err *err);

/* Makes the state directory (0700) when missing; 1, or 0 with err. */
int acme_state_dir_make(const char *dir, cli_err *err);

/* The labels with a state file in dir, sorted; *labels malloc'd. */
int acme_state_list(const char *dir, char ***labels, size_t *n, cli_err *err);
void acme_strv_free(char **v, size_t n);

/* ------------------------------------------------------------------------ */
/* HTTPS                                                                     */

typedef struct acme_http acme_http;

typedef struct acme_resp {
    long status;
    char *body; /* NUL-terminated */
    size_t body_len;
    char content_type[128];
    char nonce[256];
    char location[1024];
    long retry_after; /* seconds; -1 when absent */
} acme_resp;

void acme_resp_clear(acme_resp *r);

/* ca_bundle NULL = the system's CAs; timeout in seconds per request. */
int acme_http_new(const char *ca_bundle, int timeout, acme_http **out, cli_err *err);
void acme_http_free(acme_http *h);

/* GET (body NULL, head 0), HEAD (head 1) or POST of a JWS (body). A failure
 * to get any answer (connection, TLS, timeout) returns 0 with err naming
 * the URL and what to do; an HTTP error status is an answer (returns 1). */
int acme_http_do(acme_http *h, const char *url, const char *body, int head, const char *accept,
                 acme_resp *r, cli_err *err);

/* ------------------------------------------------------------------------ */
/* JWS                                                                       */

/* base64url without padding; malloc'd. */
char *acme_b64url(const unsigned char *p, size_t len);
/* Decodes base64url (padding and surrounding white space tolerated). */
int acme_b64url_decode(const char *s, unsigned char **out, size_t *len);

typedef struct acme_signer {
    EVP_PKEY *pkey; /* the hardware key, through the mtlsks provider */
    OSSL_LIB_CTX *libctx;
    const char *alg;    /* "ES256", "ES384", "RS256" */
    const char *digest; /* "SHA256", "SHA384" */
    size_t ec_size;     /* EC: bytes of r and of s; 0 for RSA */
    char *jwk;          /* canonical JWK (RFC 7638 member order) */
    char thumbprint[64];
    unsigned long signatures; /* made so far */
} acme_signer;

/* Sets up a signer for pkey (whose public half is spki). */
int acme_signer_init(acme_signer *sg, OSSL_LIB_CTX *libctx, EVP_PKEY *pkey,
                     const unsigned char *spki, size_t spki_len, cli_err *err);
void acme_signer_clear(acme_signer *sg);

/* The flattened JWS JSON for url with nonce; kid NULL puts the JWK in the
 * header. payload NULL is a POST-as-GET (empty payload). malloc'd. */
int acme_jws(acme_signer *sg, const char *kid, const char *nonce, const char *url,
             const char *payload, char **out, cli_err *err);

/* The externalAccountBinding JWS (HS256 over the account JWK) as JSON. */
int acme_eab_jws(const char *kid, const unsigned char *mac, size_t mac_len, const char *account_jwk,
                 const char *url, char **out, cli_err *err);

/* ------------------------------------------------------------------------ */
/* Client                                                                    */

typedef struct acme_client {
    acme_http *http;
    const acme_state *st;
    char *new_nonce, *new_account, *new_order, *revoke_cert;
    int eab_required;
    char nonce[256];
    acme_signer *account; /* the account key */
    char *account_url;    /* kid; NULL until registered or found */
    int account_created;  /* newAccount answered 201 */
    unsigned long requests;
    unsigned long bad_nonces; /* badNonce answers, retried */
    char problem[160];        /* the type of the last problem document, or "" */
    int account_gone;         /* the CA answered accountDoesNotExist */
} acme_client;

struct json_object;

/* The string member key of a JSON object; NULL when absent or not a string. */
const char *acme_jstr(struct json_object *o, const char *key);

/* Connects, reads the directory (account may be set later, before a POST). */
int acme_client_open(acme_client *c, const acme_state *st, acme_signer *account, cli_err *err);
void acme_client_close(acme_client *c);

/*
 * A signed POST (payload NULL: POST-as-GET) to url, as the account (kid) or,
 * with use_jwk, with the key's JWK. badNonce is retried with the fresh nonce.
 * An error status fails with the problem document's type and detail and
 * `what` (the request). Returns 1 with r filled (status < 400), else 0.
 */
int acme_post(acme_client *c, acme_signer *sg, int use_jwk, const char *url, const char *payload,
              const char *accept, const char *what, acme_resp *r, cli_err *err);

/* Registers the account, or finds the one the key has (c->account_url). */
int acme_account(acme_client *c, cli_err *err);

/* ------------------------------------------------------------------------ */
/* Orders                                                                    */

typedef struct acme_issued {
    char *chain_pem; /* leaf first, then the intermediates, as the CA sent it */
    unsigned long signatures;
} acme_issued;

/*
 * Orders a certificate for the state's SANs, answers the challenges, waits,
 * finalizes with csr_der and downloads the chain; checks that the leaf
 * certifies spki. Re-registers and starts over once when the CA has
 * forgotten the account.
 */
int acme_order(acme_client *c, const unsigned char *csr_der, size_t csr_len,
               const unsigned char *spki, size_t spki_len, acme_issued *out, cli_err *err);
void acme_issued_clear(acme_issued *is);

/* ------------------------------------------------------------------------ */
/* Challenge responders                                                      */

typedef struct acme_pending {
    char *identifier; /* "DNS:name" or "IP:addr" as the user gave it */
    char *domain;     /* the identifier's value */
    char *token;
    char *key_auth; /* token.thumbprint */
    char *chal_url;
    char *authz_url;
} acme_pending;

typedef struct acme_responder acme_responder;

/* Starts what answers the challenges (the responder listening, the files
 * written, the TXT records set by the hook). */
int acme_responder_start(const acme_state *st, const acme_pending *p, size_t n,
                         acme_responder **out, cli_err *err);
/* Stops and removes all of it; warns (stderr) about what it could not. */
void acme_responder_stop(acme_responder *r);

/* Checks a --http-01 ADDR:PORT; 1, or 0 with err. */
int acme_http01_addr_check(const char *addr, cli_err *err);

/* ------------------------------------------------------------------------ */
/* Status line                                                               */

/* Starts showing `what` with the seconds it has taken (a terminal only). */
void acme_status(const char *fmt, ...) CLI_PRINTF(1, 2);
/* Redraws the line with the time since acme_status. */
void acme_status_tick(void);
void acme_status_clear(void);
/* Sleeps ms milliseconds, redrawing the status line. */
void acme_sleep_ms(long ms);

/* ------------------------------------------------------------------------ */
/* Keys and installation                                                     */

/* The account key: opened, or made at first use (token: ACME_ACCOUNT_LABEL;
 * TPM: DIR/ACME_ACCOUNT_TPM_FILE). st->account_key is set to what it is. */
int acme_account_key(cli_session *s, acme_state *st, const char *state_dir, const char *token_uri,
                     acme_signer *sg, cli_err *err);

/*
 * The CA's part once the certificate key exists (c is open): the CSR signed
 * by key (which is then freed: a bare TPM has three object slots), the
 * account key loaded, the order. st->account_url records the account;
 * is->signatures counts the hardware signatures. Returns 1, or 0 with err.
 */
int acme_issue(cli_session *s, acme_client *c, acme_state *st, const char *state_dir,
               const char *token_uri, mks_key *key, acme_issued *is, cli_err *err);

/*
 * The private key labelled label in the token: opened (*made 0), or when
 * there is none and kp is given, made with kp's type (*made 1). Returns 1,
 * -1 when there is none and kp is NULL, 0 with err.
 */
int acme_token_key(cli_session *s, const char *token_uri, const char *label,
                   const mks_keygen_params *kp, mks_key **out, int *made, cli_err *err);

/*
 * The TPM key in the file path: opened when it exists (*made 0), else made
 * (key_type, no password) and written there at once, 0600 (*made 1): the
 * file is its only name. Returns 1, or 0 with err.
 */
int acme_tpm_key(cli_session *s, const char *path, const char *key_type, mks_key **out, int *made,
                 cli_err *err);

/* The CSR (DER) for key with the state's SANs and usage, signed through the provider. */
int acme_csr(cli_session *s, mks_key *key, const acme_state *st, unsigned char **der, size_t *len);

/*
 * Puts an issued chain in place: writes it to DIR/LABEL.crt.pem (leaf) and
 * DIR/LABEL.chain.pem (CA certificates), then runs import-cert on them with
 * the state's --key-ref and --cert-out (token: --label, which finds the
 * pending key and hands over; TPM: --tpm, with next_key_file for a new
 * key), and writes --chain-out. The session must be closed.
 */
int acme_install(cli_globals *g, const acme_state *st, const char *state_dir,
                 const char *next_key_file, const char *chain_pem);

/* Runs the deploy hook (sh -c) with MTLSKS_LABEL, MTLSKS_CERT, MTLSKS_KEY_REF. */
int acme_deploy_hook(const acme_state *st, cli_err *err);

/* Runs a shell command with arguments ("$@"); 1 when it exited 0. */
int acme_run_sh(const char *cmd, char *const args[], char *const extra_env[], cli_err *err);

#endif
