/*
 * What the two halves of import-cert share: the options, the certificate
 * and chain read from the files, the warning about extensions a CA dropped.
 * cmd_import_cert.c reads and checks them and hands over to import_token.c
 * (the certificate goes on the token, beside its key) or import_tpm.c (a
 * TPM stores no certificates: files only).
 */
#ifndef MTLSKS_CLI_IMPORT_CERT_H
#define MTLSKS_CLI_IMPORT_CERT_H

#include <stddef.h>

#include <openssl/x509.h>

#include "cli.h"

#define CMD "import-cert"

typedef struct import_opts {
    const char *label, *token, *key_ref, *chain, *cert_out, *cert_path;
    const char *next; /* --tpm: the pending key file */
    int tpm;
} import_opts;

/* The certificate being imported and the chain given with --chain. */
typedef struct import_input {
    X509 *x;
    unsigned char *der, *spki; /* the certificate's DER and SubjectPublicKeyInfo */
    size_t der_len, spki_len;
    STACK_OF(X509) * chain; /* --chain, in file order; NULL without */
} import_input;

/* Reads the certificate file and --chain (only CA certificates, not the
 * certificate itself); prints why not. */
int import_read_input(const import_opts *o, import_input *in);
void import_input_clear(import_input *in);

/*
 * The CSR itself is not kept, so import-cert compares with what it knows the
 * CSR asked for: renew's CSR copies the SANs and TLS usages of the current
 * certificate (prev_der: NAME's on the token, or --cert-out's with --tpm),
 * so a new certificate must have them; a first certificate (prev_der NULL)
 * must have an extendedKeyUsage, which every CSR mtls-keystore makes asks
 * for. A certificate that lacks them was issued without the CSR's
 * extensions: said, with the CA step's fix. It is imported all the same.
 */
void import_warn_lost_extensions(const import_opts *o, const import_input *in,
                                 const unsigned char *prev_der, size_t prev_len);

/* import-cert of a token key's certificate, after the options were checked. */
int import_token(cli_globals *g, const import_opts *o);

/* import-cert --tpm, after the options were checked. */
int import_tpm(cli_globals *g, const import_opts *o);

#endif
