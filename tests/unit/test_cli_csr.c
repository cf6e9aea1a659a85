/*
 * CSRs as a CA sees them: subject, the key as the keystore reports it
 * (named curve, byte for byte), the requested extensions by usage and key
 * type, the digest by key size, a signature that verifies, and refusal
 * when the signer is not the key. Software keys stand in for token keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "csr.h"

typedef struct keys {
    EVP_PKEY *p256, *p384, *rsa, *other;
} keys;

static int setup(void **state)
{
    keys *k = calloc(1, sizeof(*k));

    if (k == NULL)
        return -1;
    k->p256 = EVP_EC_gen("P-256");
    k->p384 = EVP_EC_gen("P-384");
    k->rsa = EVP_RSA_gen(2048);
    k->other = EVP_EC_gen("P-256");
    *state = k;
    return k->p256 && k->p384 && k->rsa && k->other ? 0 : -1;
}

static int teardown(void **state)
{
    keys *k = *state;

    EVP_PKEY_free(k->p256);
    EVP_PKEY_free(k->p384);
    EVP_PKEY_free(k->rsa);
    EVP_PKEY_free(k->other);
    free(k);
    return 0;
}

static X509_REQ *make(EVP_PKEY *pub, EVP_PKEY *signer, const char *digest, const char *subject,
                      const char **sans, size_t nsans, const char *usage, unsigned char **spki_out,
                      int *spki_len_out)
{
    cli_csr_args args = {.subject = subject, .usage = usage};
    cli_csr_req req;
    cli_err err = {{0}};
    unsigned char *spki = NULL;
    char *pem = NULL;
    size_t pem_len = 0, i;
    int spki_len = i2d_PUBKEY(pub, &spki);
    BIO *bio;
    X509_REQ *x;

    assert_true(spki_len > 0);
    for (i = 0; i < nsans; i++)
        assert_true(cli_csr_args_add_san(&args, sans[i]));
    if (!cli_csr_req_from_args(&args, &req, &err))
        fail_msg("arguments refused: %s", err.msg);
    if (!cli_csr_make(NULL, &req, spki, (size_t)spki_len, signer, digest, &pem, &pem_len, &err))
        fail_msg("cli_csr_make: %s", err.msg);
    assert_int_equal(strlen(pem), pem_len);
    assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE REQUEST-----"));
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    x = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    assert_non_null(x);
    BIO_free(bio);
    free(pem);
    cli_csr_req_clear(&req);
    cli_csr_args_clear(&args);
    if (spki_out != NULL) {
        *spki_out = spki;
        *spki_len_out = spki_len;
    } else {
        OPENSSL_free(spki);
    }
    return x;
}

static X509_EXTENSION *find_ext(STACK_OF(X509_EXTENSION) * exts, int nid)
{
    int i;

    for (i = 0; i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == nid)
            return e;
    }
    return NULL;
}

/* keyUsage bits and extendedKeyUsage of a request, as flags. */
static void usages(X509_REQ *x, int *ku_sig, int *ku_kenc, int *ku_critical, int *eku_server,
                   int *eku_client, int *ca_false)
{
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(x);
    X509_EXTENSION *e;
    ASN1_BIT_STRING *ku;
    EXTENDED_KEY_USAGE *eku;
    BASIC_CONSTRAINTS *bc;
    int i;

    assert_non_null(exts);
    e = find_ext(exts, NID_key_usage);
    assert_non_null(e);
    *ku_critical = X509_EXTENSION_get_critical(e);
    ku = X509V3_EXT_d2i(e);
    assert_non_null(ku);
    *ku_sig = ASN1_BIT_STRING_get_bit(ku, 0);
    *ku_kenc = ASN1_BIT_STRING_get_bit(ku, 2);
    ASN1_BIT_STRING_free(ku);

    e = find_ext(exts, NID_ext_key_usage);
    assert_non_null(e);
    eku = X509V3_EXT_d2i(e);
    assert_non_null(eku);
    *eku_server = *eku_client = 0;
    for (i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
        int nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));

        *eku_server |= nid == NID_server_auth;
        *eku_client |= nid == NID_client_auth;
    }
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);

    e = find_ext(exts, NID_basic_constraints);
    assert_non_null(e);
    bc = X509V3_EXT_d2i(e);
    assert_non_null(bc);
    *ca_false = !bc->ca;
    BASIC_CONSTRAINTS_free(bc);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
}

static void test_ec_both_with_sans(void **state)
{
    keys *k = *state;
    const char *sans[] = {"DNS:web.example", "IP:192.0.2.1", "URI:spiffe://example.org/web",
                          "email:ops@example.org"};
    unsigned char *spki = NULL, *got = NULL;
    int spki_len = 0, got_len, sig, kenc, crit, srv, cli, ca_false;
    X509_REQ *x = make(k->p256, k->p256, "SHA256", "CN=web.example,O=Example", sans, 4, NULL, &spki,
                       &spki_len);
    STACK_OF(X509_EXTENSION) * exts;
    GENERAL_NAMES *gens;
    char buf[256];
    int type;

    assert_int_equal(X509_REQ_verify(x, k->p256), 1);
    assert_int_equal(X509_REQ_get_version(x), 0);
    /* The key exactly as given: named curve, same bytes. */
    got_len = i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(x), &got);
    assert_int_equal(got_len, spki_len);
    assert_memory_equal(got, spki, (size_t)spki_len);
    /* Subject: CN last in the encoding (RFC 4514 reversed). */
    assert_int_equal(X509_NAME_entry_count(X509_REQ_get_subject_name(x)), 2);
    X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(x), NID_commonName, buf, sizeof(buf));
    assert_string_equal(buf, "web.example");
    assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(
                         X509_NAME_get_entry(X509_REQ_get_subject_name(x), 1))),
                     NID_commonName);
    /* ECDSA with SHA-256. */
    {
        const X509_ALGOR *alg = NULL;

        X509_REQ_get0_signature(x, NULL, &alg);
        assert_int_equal(OBJ_obj2nid(alg->algorithm), NID_ecdsa_with_SHA256);
    }

    exts = X509_REQ_get_extensions(x);
    gens = X509V3_EXT_d2i(find_ext(exts, NID_subject_alt_name));
    assert_non_null(gens);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 4);
    GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 0), &type);
    assert_int_equal(type, GEN_DNS);
    GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 1), &type);
    assert_int_equal(type, GEN_IPADD);
    GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 2), &type);
    assert_int_equal(type, GEN_URI);
    GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(gens, 3), &type);
    assert_int_equal(type, GEN_EMAIL);
    assert_int_equal(X509_EXTENSION_get_critical(find_ext(exts, NID_subject_alt_name)), 0);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);

    usages(x, &sig, &kenc, &crit, &srv, &cli, &ca_false);
    assert_true(sig);
    assert_false(kenc); /* EC keys never encipher */
    assert_true(crit);
    assert_true(srv);
    assert_true(cli);
    assert_true(ca_false);

    OPENSSL_free(got);
    OPENSSL_free(spki);
    X509_REQ_free(x);
}

static void test_named_curve_in_request(void **state)
{
    keys *k = *state;
    X509_REQ *x = make(k->p256, k->p256, "SHA256", "CN=c", NULL, 0, "client", NULL, NULL);
    const ASN1_OBJECT *alg = NULL;
    const void *param = NULL;
    int ptype = -1;

    {
        X509_ALGOR *a = NULL;

        assert_true(X509_PUBKEY_get0_param(NULL, NULL, NULL, &a, X509_REQ_get_X509_PUBKEY(x)));
        X509_ALGOR_get0(&alg, &ptype, &param, a);
    }
    assert_int_equal(OBJ_obj2nid(alg), NID_X9_62_id_ecPublicKey);
    assert_int_equal(ptype, V_ASN1_OBJECT); /* a curve OID, not explicit parameters */
    assert_int_equal(OBJ_obj2nid(param), NID_X9_62_prime256v1);
    X509_REQ_free(x);
}

static void test_usage_flags(void **state)
{
    static const struct {
        const char *usage;
        int rsa;
        int kenc, srv, cli;
    } rows[] = {
        {"client", 0, 0, 0, 1}, {"server", 0, 0, 1, 0}, {"both", 0, 0, 1, 1},
        {"client", 1, 0, 0, 1}, {"server", 1, 1, 1, 0}, {"both", 1, 1, 1, 1},
    };
    keys *k = *state;
    size_t i;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        EVP_PKEY *key = rows[i].rsa ? k->rsa : k->p256;
        X509_REQ *x = make(key, key, "SHA256", "CN=u", NULL, 0, rows[i].usage, NULL, NULL);
        STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(x);
        int sig, kenc, crit, srv, cli, ca_false;

        assert_null(find_ext(exts, NID_subject_alt_name)); /* none asked for */
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        usages(x, &sig, &kenc, &crit, &srv, &cli, &ca_false);
        assert_true(sig);
        if (kenc != rows[i].kenc || srv != rows[i].srv || cli != rows[i].cli)
            fail_msg("%s %s: keyEncipherment %d serverAuth %d clientAuth %d", rows[i].usage,
                     rows[i].rsa ? "rsa" : "ec", kenc, srv, cli);
        assert_int_equal(X509_REQ_verify(x, key), 1);
        X509_REQ_free(x);
    }
}

static void test_p384_signs_with_sha384(void **state)
{
    keys *k = *state;
    const char *digest = cli_csr_digest(MKS_KEY_EC, "P-384");
    X509_REQ *x;
    const X509_ALGOR *alg = NULL;

    assert_string_equal(digest, "SHA384");
    assert_string_equal(cli_csr_digest(MKS_KEY_EC, "P-256"), "SHA256");
    assert_string_equal(cli_csr_digest(MKS_KEY_RSA, NULL), "SHA256");
    x = make(k->p384, k->p384, digest, "CN=p384", NULL, 0, NULL, NULL, NULL);
    X509_REQ_get0_signature(x, NULL, &alg);
    assert_int_equal(OBJ_obj2nid(alg->algorithm), NID_ecdsa_with_SHA384);
    assert_int_equal(X509_REQ_verify(x, k->p384), 1);
    X509_REQ_free(x);

    x = make(k->rsa, k->rsa, "SHA256", "CN=rsa", NULL, 0, NULL, NULL, NULL);
    X509_REQ_get0_signature(x, NULL, &alg);
    assert_int_equal(OBJ_obj2nid(alg->algorithm), NID_sha256WithRSAEncryption);
    X509_REQ_free(x);
}

static void test_wrong_signer_refused(void **state)
{
    keys *k = *state;
    cli_csr_args args = {.subject = "CN=web"};
    cli_csr_req req;
    cli_err err = {{0}};
    unsigned char *spki = NULL;
    int spki_len = i2d_PUBKEY(k->p256, &spki);
    char *pem = (char *)1;
    size_t pem_len = 7;

    assert_true(cli_csr_req_from_args(&args, &req, &err));
    assert_false(
        cli_csr_make(NULL, &req, spki, (size_t)spki_len, k->other, "SHA256", &pem, &pem_len, &err));
    assert_null(pem);
    assert_int_equal(pem_len, 0);
    assert_non_null(strstr(err.msg, "does not verify"));

    /* Garbage instead of a SubjectPublicKeyInfo. */
    assert_false(cli_csr_make(NULL, &req, (const unsigned char *)"\x30\x03\x02\x01\x00", 5, k->p256,
                              "SHA256", &pem, &pem_len, &err));
    assert_non_null(strstr(err.msg, "SubjectPublicKeyInfo"));
    cli_csr_req_clear(&req);
    OPENSSL_free(spki);
}

static void test_args_errors_name_the_option(void **state)
{
    static const struct {
        const char *subject, *san, *usage, *says;
    } rows[] = {
        {NULL, NULL, NULL, "--subject is required"},
        {"XX=1", NULL, NULL, "--subject: unknown attribute 'XX'"},
        {"CN=a", "DNS:-bad-", NULL, "--san: 'DNS:-bad-'"},
        {"CN=a", NULL, "everything", "--usage: unknown usage 'everything'"},
    };
    size_t i;

    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cli_csr_args args = {.subject = rows[i].subject, .usage = rows[i].usage};
        cli_csr_req req;
        cli_err err = {{0}};

        if (rows[i].san != NULL)
            assert_true(cli_csr_args_add_san(&args, rows[i].san));
        assert_false(cli_csr_req_from_args(&args, &req, &err));
        if (strstr(err.msg, rows[i].says) == NULL)
            fail_msg("error '%s' does not say '%s'", err.msg, rows[i].says);
        assert_null(req.subject);
        assert_null(req.sans);
        cli_csr_args_clear(&args);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ec_both_with_sans),
        cmocka_unit_test(test_named_curve_in_request),
        cmocka_unit_test(test_usage_flags),
        cmocka_unit_test(test_p384_signs_with_sha384),
        cmocka_unit_test(test_wrong_signer_refused),
        cmocka_unit_test(test_args_errors_name_the_option),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
