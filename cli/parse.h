/*
 * Parsers for what users type on the command line. Each returns 1 on
 * success and 0 with a message in err that quotes the offending piece, so
 * the command can print "mtls-keystore enroll: --subject: ...".
 */
#ifndef MTLSKS_CLI_PARSE_H
#define MTLSKS_CLI_PARSE_H

#include <stddef.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <mtlsks/keystore.h>

#include "util.h"

/* What the certificate will be used for: extendedKeyUsage and keyUsage follow. */
typedef enum cli_usage {
    CLI_USAGE_CLIENT = 1,
    CLI_USAGE_SERVER = 2,
    CLI_USAGE_BOTH = CLI_USAGE_CLIENT | CLI_USAGE_SERVER,
} cli_usage;

/*
 * "CN=web,O=Acme\, Inc.,C=DE" (RFC 4514: most specific first, so the name
 * is encoded C, O, CN). Escapes: "\," and any of \ " # + ; < = > and space,
 * or two hex digits ("\2C"). "+" joins attributes into one RDN. Spaces
 * around types and values are dropped. Attribute types are the usual short
 * or long names (CN, O, OU, C, ST, L, street, DC, UID, serialNumber,
 * emailAddress, title, GN, SN, ...) or dotted OIDs of those. On success
 * *out is a new X509_NAME owned by the caller.
 */
int cli_parse_subject(const char *s, X509_NAME **out, cli_err *err);

/*
 * One subjectAltName: "DNS:name" (LDH labels, "*." allowed in front),
 * "IP:192.0.2.1" or "IP:2001:db8::1", "URI:scheme:rest", "email:a@b.example".
 * Type names are case-insensitive. *out is a new GENERAL_NAME.
 */
int cli_parse_san(const char *s, GENERAL_NAME **out, cli_err *err);

/*
 * "ec:P-256", "ec:P-384", "rsa:2048", "rsa:3072", "rsa:4096"
 * (case-insensitive). Fills type, bits and curve (a static string) of *p;
 * leaves label alone.
 */
int cli_parse_key_type(const char *s, mks_keygen_params *p, cli_err *err);

/* cli_parse_key_type for a key made in a TPM: not rsa:4096. */
int cli_parse_tpm_key_type(const char *s, mks_keygen_params *p, cli_err *err);

/* "client", "server" or "both". */
int cli_parse_usage(const char *s, cli_usage *out, cli_err *err);

/* 1 when s is a host name of LDH labels (at most 253 characters); a
 * leading "*." is accepted when allow_wildcard. */
int cli_valid_dns_name(const char *s, int allow_wildcard);

/* Parses a non-negative decimal integer that fits an int; 1 on success. */
int cli_parse_uint(const char *s, int *out);

#endif
