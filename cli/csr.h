/*
 * Building and signing a PKCS#10 request. The signer is any EVP_PKEY: in the
 * CLI the token key loaded through the mtlsks provider, in the unit tests a
 * software key. The request carries the public key the keystore reports
 * (SubjectPublicKeyInfo DER, EC with the named curve) and is verified
 * against it after signing, so a request never leaves that a CA would
 * reject for a bad signature.
 */
#ifndef MTLSKS_CLI_CSR_H
#define MTLSKS_CLI_CSR_H

#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "parse.h"
#include "util.h"

/* What the user asked the request to say. */
typedef struct cli_csr_req {
    X509_NAME *subject;
    STACK_OF(GENERAL_NAME) * sans; /* may be NULL */
    cli_usage usage;
} cli_csr_req;

/* The raw --subject, --san and --usage arguments of a command. */
typedef struct cli_csr_args {
    const char *subject;
    const char **sans;
    size_t nsans;
    const char *usage; /* NULL = both */
} cli_csr_args;

/* Appends one --san argument; 0 on allocation failure. */
int cli_csr_args_add_san(cli_csr_args *a, const char *san);
void cli_csr_args_clear(cli_csr_args *a);

/* Parses the arguments into req (cleared first). Returns 1, or 0 with err
 * saying which option was wrong. */
int cli_csr_req_from_args(const cli_csr_args *a, cli_csr_req *req, cli_err *err);
void cli_csr_req_clear(cli_csr_req *req);

/* The digest a key of this type signs CSRs with: "SHA384" for P-384 and
 * larger curves, "SHA256" otherwise. */
const char *cli_csr_digest(mks_key_type type, const char *curve);

/*
 * Builds the request for the public key in `spki` (DER), requests the
 * extensions (subjectAltName, keyUsage critical with digitalSignature and,
 * for RSA keys used by servers, keyEncipherment, extendedKeyUsage,
 * basicConstraints CA:FALSE), signs it with `signer` and `digest` in
 * `libctx` (NULL = default), verifies the signature against spki and
 * returns the PEM in *pem (malloc'd, NUL-terminated). Returns 1, or 0 with
 * err set.
 */
int cli_csr_make(OSSL_LIB_CTX *libctx, const cli_csr_req *req, const unsigned char *spki,
                 size_t spki_len, EVP_PKEY *signer, const char *digest, char **pem, size_t *pem_len,
                 cli_err *err);

#endif
