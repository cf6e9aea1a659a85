/*
 * What the lifecycle commands (check, renew, import-cert's hand-over,
 * delete, show) share: the labels a key pair's objects carry through a
 * renewal, URIs naming those objects, and certificate facts.
 *
 * Labels. A key pair NAME is a private key, a public key and a certificate
 * labelled NAME with one CKA_ID (enroll, import-cert). Around it:
 *   NAME.next   the pending pair that `renew` makes; its certificate is
 *               stored with that label until import-cert hands NAME over
 *   NAME.old    the pair a hand-over replaced, kept so that servers still
 *               running with it keep signing until they reload; the next
 *               hand-over destroys it, `delete --label NAME.old` earlier
 *   NAME.chain  CA certificates of NAME's chain (import-cert --chain)
 * Servers name NAME only, so `pkcs11:object=NAME;type=private` names the
 * serving key before, during and after a renewal.
 */
#ifndef MTLSKS_CLI_LIFECYCLE_H
#define MTLSKS_CLI_LIFECYCLE_H

#include <stddef.h>
#include <time.h>

#include <openssl/x509.h>

#include <mtlsks/keystore.h>

#include "json.h"
#include "session.h"
#include "util.h"

#define CLI_SUFFIX_NEXT ".next"
#define CLI_SUFFIX_OLD ".old"
#define CLI_SUFFIX_CHAIN ".chain"

typedef enum cli_role {
    CLI_ROLE_CURRENT, /* NAME: serving */
    CLI_ROLE_PENDING, /* NAME.next */
    CLI_ROLE_RETIRED, /* NAME.old */
    CLI_ROLE_CHAIN,   /* NAME.chain */
} cli_role;

/* The role a label's suffix gives an object. */
cli_role cli_label_role(const char *label);
/* "current", "pending", "retired", "chain": the names --json uses. */
const char *cli_role_name(cli_role role);
/* name + suffix, malloc'd; NULL when out of memory. */
char *cli_label_join(const char *name, const char *suffix);

/*
 * mks_uri_object (a URI for the objects on token_uri with that label, id
 * and type, a MKS_OBJ_* class or 0), the error printed for cmd; NULL then.
 * Free with mks_free.
 */
char *cli_uri_object(const char *cmd, const char *token_uri, const char *label,
                     const unsigned char *id, size_t id_len, unsigned type);

/* Same CKA_ID. */
int cli_same_id(const mks_object *o, const unsigned char *id, size_t id_len);

/* mks_objects_find of `classes` on cli_uri_object(...); prints the error for s->cmd. */
int cli_find_objects(cli_session *s, const char *token_uri, const char *label,
                     const unsigned char *id, size_t id_len, unsigned type, unsigned classes,
                     mks_object **out, size_t *n);

/*
 * Relabels (new_label != NULL) or destroys (NULL) the objects of any class
 * that cli_uri_object(token_uri, label, id, id_len, type) names. An error
 * is printed for s->cmd with the hint to run import-cert again.
 */
int cli_relabel(cli_session *s, const char *token_uri, const char *label, const unsigned char *id,
                size_t id_len, unsigned type, const char *new_label);

/* Rewrites the files servers read once the new pair is NAME; 1 when done. */
typedef int cli_handover_files_fn(void *arg);

/*
 * The hand-over that finishes a renewal of NAME, once the new certificate
 * is stored with the new key's id (`id`):
 *   1. the new pair and its certificate, NAME.next with that id, become
 *      NAME. For a moment two pairs carry NAME, told apart by their ids: key
 *      references (which name id and label) keep finding the key they
 *      named, and a URI by label alone is ambiguous, which fails closed;
 *   2. `files` rewrites the key references and certificate files;
 *   3. the objects labelled NAME with other ids (the old pair) become
 *      NAME.old, a previous NAME.old destroyed first. Servers still running
 *      with the old key find it by its id and keep signing until they
 *      reload.
 * Each step can be repeated: run again after an interruption, it finds
 * where it stopped; until step 1 the old pair serves alone. Prints errors
 * for s->cmd; returns 1 with *nretired, the number of ids retired.
 */
int cli_handover(cli_session *s, const char *token_uri, const char *name, const unsigned char *id,
                 size_t id_len, cli_handover_files_fn *files, void *arg, size_t *nretired);

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */

typedef struct cli_strlist {
    char **v;
    size_t n;
} cli_strlist;

typedef struct cli_cert_info {
    char *subject; /* RFC 2253 */
    char *issuer;
    char *serial; /* lower-case hex */
    char not_before[24];
    char not_after[24];        /* ISO 8601, UTC: 2025-01-31T12:00:00Z */
    long long seconds_left;    /* notAfter - now; negative once expired */
    long long days_left;       /* seconds_left / 86400, rounded up */
    cli_strlist sans;          /* "DNS:name", "IP:192.0.2.1", "URI:...", "email:..." */
    cli_strlist key_usage;     /* "digitalSignature", ... */
    cli_strlist ext_key_usage; /* "serverAuth", "clientAuth", or dotted OIDs */
    int is_ca;
    char sha256[65];  /* fingerprint of the DER, lower-case hex */
    char key_type[8]; /* "ec", "rsa", "" */
    int key_bits;
    char curve[16];
} cli_cert_info;

/* Facts of a DER certificate, with the time left counted from now. */
int cli_cert_info_get(const unsigned char *der, size_t len, time_t now, cli_cert_info *ci,
                      cli_err *err);
void cli_cert_info_clear(cli_cert_info *ci);

/* "day" for 1 and -1, else "days": "1 day", "2 days", "0 days". */
const char *cli_days_word(long long days);

/* The cli_cert_info fields as JSON members of the current object. */
void cli_cert_info_json(cli_json *j, const cli_cert_info *ci);

/* Every certificate in a PEM file (or the one in a DER file), in file order. */
int cli_read_certs(const char *path, STACK_OF(X509) * *out, cli_err *err);

/*
 * Writes x followed by the certificates of chain (NULL: none) as PEM to
 * path, with cli_write_replacing (a new file gets 0644): the certificate
 * file a server reads. Prints errors for cmd; returns 1 when written.
 */
int cli_write_certs(const char *cmd, const char *path, X509 *x, STACK_OF(X509) * chain);

/* DER of a certificate, malloc'd (OPENSSL_free). */
int cli_x509_der(X509 *x, unsigned char **der, size_t *len);

/* 1 when the SubjectPublicKeyInfo DERs name the same public key. */
int cli_same_public_key(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen);

/* 1 when the certificate certifies the key whose SubjectPublicKeyInfo is spki. */
int cli_cert_certifies(X509 *x, const unsigned char *spki, size_t len);

/* "ec P-256" / "rsa 2048" of a key object, into buf. */
const char *cli_key_desc(const mks_object *o, char *buf, size_t size);

#endif
