/*
 * What the two halves of renew share: the options, read and checked in
 * cmd_renew.c, which renews token keys itself and hands TPM keys to
 * renew_tpm.c, and the request copied from the current certificate.
 */
#ifndef MTLSKS_CLI_RENEW_H
#define MTLSKS_CLI_RENEW_H

#include <openssl/x509.h>

#include "cli.h"
#include "csr.h"

#define CMD "renew"

typedef struct renew_opts {
    const char *label, *token;        /* token keys */
    const char *cert, *key, *key_out; /* TPM keys (--tpm) */
    const char *password_source;
    const char *out, *key_type;
    int same_key, force, tpm;
} renew_opts;

/* The request renew makes: what the current certificate says (subject, SANs,
 * usage). 0 when out of memory. */
int renew_req_from_cert(X509 *x, cli_csr_req *req);

/* renew --tpm, after the options were checked. */
int renew_tpm(cli_globals *g, const renew_opts *o);

#endif
