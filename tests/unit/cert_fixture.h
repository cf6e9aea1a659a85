/*
 * Certificates made in software for the keystore tests: a self-issued leaf
 * or CA certificate for a public key. Included by the tests (not a test
 * itself); the includer includes cmocka first.
 */
#ifndef MTLSKS_CERT_FIXTURE_H
#define MTLSKS_CERT_FIXTURE_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* A certificate for `pub`, issued by `issuer_key` (self-issued name); CA or leaf. */
static unsigned char *make_cert(EVP_PKEY *pub, EVP_PKEY *issuer_key, const char *cn, int ca,
                                size_t *len)
{
    X509 *x = X509_new();
    X509V3_CTX v3;
    X509_EXTENSION *e;
    unsigned char *der = NULL;
    int n;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 42);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pub);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (ca) {
        e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_key_identifier, "hash");
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    n = i2d_X509(x, &der);
    assert_true(n > 0);
    *len = (size_t)n;
    X509_free(x);
    return der;
}

#endif
