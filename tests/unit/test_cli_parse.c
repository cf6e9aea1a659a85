/*
 * The CLI's parsers: subjects, subjectAltNames, key types, usages.
 * Table-driven: each row is an input and what must come out (the
 * encoded value) or what the error must name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "parse.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The name as RFC 2253 text (the order the user typed it), malloc'd. */
static char *name_text(const X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *s;
    long n;

    assert_non_null(bio);
    assert_true(X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0);
    n = BIO_get_mem_data(bio, &data);
    s = strndup(data, (size_t)n);
    BIO_free(bio);
    return s;
}

/* ------------------------------------------------------------------------ */
/* Subjects                                                                  */

static const struct {
    const char *in;
    const char *text; /* RFC 2253 rendering */
    int entries;
    int first_nid; /* the first encoded attribute (RFC 4514 reverses) */
} good_subjects[] = {
    {"CN=web.example,O=Example", "CN=web.example,O=Example", 2, NID_organizationName},
    {"CN=web, O=Acme\\, Inc., C=DE", "CN=web,O=Acme\\, Inc.,C=DE", 3, NID_countryName},
    {"cn=lower,o=case", "CN=lower,O=case", 2, NID_organizationName},
    {"commonName=long name", "CN=long name", 1, NID_commonName},
    {"CN=a\\2Cb", "CN=a\\,b", 1, NID_commonName},
    {"CN=  spaced value  ", "CN=spaced value", 1, NID_commonName},
    /* OpenSSL prints "=" unescaped; the value is a+b=c\d. */
    {"CN=a\\+b\\=c\\\\d", "CN=a\\+b=c\\\\d", 1, NID_commonName},
    {"CN=web,OU=a,OU=b,DC=example,DC=org", "CN=web,OU=a,OU=b,DC=example,DC=org", 5,
     NID_domainComponent},
    {"2.5.4.3=by oid", "CN=by oid", 1, NID_commonName},
    {"CN=Jürgen", "CN=Jürgen", 1, NID_commonName},
    {"serialNumber=42,emailAddress=a@b.example", "serialNumber=42,emailAddress=a@b.example", 2,
     NID_pkcs9_emailAddress},
};

static void test_subject_good(void **state)
{
    size_t i;

    for (i = 0; i < N(good_subjects); i++) {
        X509_NAME *name = NULL;
        cli_err err = {{0}};
        char *text;

        if (!cli_parse_subject(good_subjects[i].in, &name, &err))
            fail_msg("'%s' refused: %s", good_subjects[i].in, err.msg);
        text = name_text(name);
        if (strcmp(text, good_subjects[i].text) != 0)
            fail_msg("'%s' gave '%s', expected '%s'", good_subjects[i].in, text,
                     good_subjects[i].text);
        assert_int_equal(X509_NAME_entry_count(name), good_subjects[i].entries);
        assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(X509_NAME_get_entry(name, 0))),
                         good_subjects[i].first_nid);
        free(text);
        X509_NAME_free(name);
    }
}

static void test_subject_multivalued_rdn(void **state)
{
    X509_NAME *name = NULL;
    cli_err err;

    /* "+" joins CN and UID into one RDN, after O in the encoding. */
    assert_true(cli_parse_subject("CN=x+UID=y,O=z", &name, &err));
    assert_int_equal(X509_NAME_entry_count(name), 3);
    assert_int_equal(OBJ_obj2nid(X509_NAME_ENTRY_get_object(X509_NAME_get_entry(name, 0))),
                     NID_organizationName);
    assert_int_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 1)),
                     X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 2)));
    assert_int_not_equal(X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 0)),
                         X509_NAME_ENTRY_set(X509_NAME_get_entry(name, 1)));
    X509_NAME_free(name);
}

static const struct {
    const char *in;
    const char *says; /* the error must contain this */
} bad_subjects[] = {
    {"", "empty"},
    {"   ", "empty"},
    {"XX=1", "unknown attribute 'XX'"},
    {"CN=web,XX=1", "unknown attribute 'XX'"},
    {"CN=", "CN has an empty value"},
    {"CN=  ", "CN has an empty value"},
    {"CN", "'CN' has no '='"},
    {"CN=a,O", "'O' has no '='"},
    {"=x", "type is missing"},
    {"CN=a,,O=b", "empty attribute"},
    {"CN=a,", "ends with ','"},
    {"CN=a+", "ends with '+'"},
    {"C=DEU", "two-letter"},
    {"/CN=a/O=b", "RFC 4514"},
    {"CN=a\\", "lone '\\'"},
    {"CN=a\\q", "unknown escape"},
    {"CN=a\\00b", "NUL"},
    {"CN=a=b", "unexpected '='"},
    {"CN=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "cannot be encoded"},
};

static void test_subject_bad(void **state)
{
    size_t i;

    for (i = 0; i < N(bad_subjects); i++) {
        X509_NAME *name = (X509_NAME *)1;
        cli_err err = {{0}};

        if (cli_parse_subject(bad_subjects[i].in, &name, &err))
            fail_msg("'%s' accepted", bad_subjects[i].in);
        assert_null(name);
        if (strstr(err.msg, bad_subjects[i].says) == NULL)
            fail_msg("'%s': error '%s' does not say '%s'", bad_subjects[i].in, err.msg,
                     bad_subjects[i].says);
    }
}

/* ------------------------------------------------------------------------ */
/* Subject alternative names                                                 */

static const struct {
    const char *in;
    int type;
    const char *value; /* IA5 text, or NULL for IP */
    int ip_len;
    unsigned char ip[16];
} good_sans[] = {
    {"DNS:web.example", GEN_DNS, "web.example", 0, {0}},
    {"dns:Web-1.example", GEN_DNS, "Web-1.example", 0, {0}},
    {"DNS:*.example.com", GEN_DNS, "*.example.com", 0, {0}},
    {"DNS:localhost", GEN_DNS, "localhost", 0, {0}},
    {"DNS:xn--bcher-kva.example", GEN_DNS, "xn--bcher-kva.example", 0, {0}},
    {"IP:192.0.2.1", GEN_IPADD, NULL, 4, {192, 0, 2, 1}},
    {"IP:::1", GEN_IPADD, NULL, 16, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"ip:2001:db8::1",
     GEN_IPADD,
     NULL,
     16,
     {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
    {"URI:spiffe://example.org/web", GEN_URI, "spiffe://example.org/web", 0, {0}},
    {"URI:urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
     GEN_URI,
     "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
     0,
     {0}},
    {"email:a@b.example", GEN_EMAIL, "a@b.example", 0, {0}},
    {"EMAIL:first.last+tag@b.example", GEN_EMAIL, "first.last+tag@b.example", 0, {0}},
};

static void test_san_good(void **state)
{
    size_t i;

    for (i = 0; i < N(good_sans); i++) {
        GENERAL_NAME *gn = NULL;
        cli_err err = {{0}};
        int type;
        const ASN1_STRING *v;

        if (!cli_parse_san(good_sans[i].in, &gn, &err))
            fail_msg("'%s' refused: %s", good_sans[i].in, err.msg);
        v = GENERAL_NAME_get0_value(gn, &type);
        assert_int_equal(type, good_sans[i].type);
        if (good_sans[i].value != NULL) {
            assert_int_equal(ASN1_STRING_length(v), (int)strlen(good_sans[i].value));
            assert_memory_equal(ASN1_STRING_get0_data(v), good_sans[i].value,
                                strlen(good_sans[i].value));
        } else {
            assert_int_equal(ASN1_STRING_length(v), good_sans[i].ip_len);
            assert_memory_equal(ASN1_STRING_get0_data(v), good_sans[i].ip, good_sans[i].ip_len);
        }
        GENERAL_NAME_free(gn);
    }
}

static const struct {
    const char *in;
    const char *says;
} bad_sans[] = {
    {"DNS:", "empty"},
    {"DNS:-bad-", "not a valid DNS name"},
    {"DNS:bad-.example", "not a valid DNS name"},
    {"DNS:a..b", "not a valid DNS name"},
    {"DNS:trailing.dot.", "not a valid DNS name"},
    {"DNS:under_score.example", "not a valid DNS name"},
    {"DNS:sp ace.example", "not a valid DNS name"},
    {"DNS:foo.*.example", "not a valid DNS name"},
    {"DNS:*.", "not a valid DNS name"},
    {"DNS:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example",
     "not a valid DNS name"},
    {"DNS:bücher.example", "not a valid DNS name"},
    {"IP:300.1.1.1", "not an IPv4 or IPv6 address"},
    {"IP:1.2.3", "not an IPv4 or IPv6 address"},
    {"IP:", "not an IPv4 or IPv6 address"},
    {"IP:2001:db8::g", "not an IPv4 or IPv6 address"},
    {"IP:web.example", "not an IPv4 or IPv6 address"},
    {"URI:noscheme", "not a URI with a scheme"},
    {"URI:1http://x", "not a URI with a scheme"},
    {"URI:http:", "not a URI with a scheme"},
    {"URI:", "not a URI with a scheme"},
    {"URI:http://a b", "not a URI with a scheme"},
    {"email:noat", "not an e-mail address"},
    {"email:@b.example", "not an e-mail address"},
    {"email:a@b@c.example", "not an e-mail address"},
    {"email:a@-b.example", "not an e-mail address"},
    {"email:a b@c.example", "not an e-mail address"},
    {"FOO:x", "unknown type 'FOO'"},
    {"nocolon", "has no type"},
    {"", "has no type"},
};

static void test_san_bad(void **state)
{
    size_t i;

    for (i = 0; i < N(bad_sans); i++) {
        GENERAL_NAME *gn = (GENERAL_NAME *)1;
        cli_err err = {{0}};

        if (cli_parse_san(bad_sans[i].in, &gn, &err))
            fail_msg("'%s' accepted", bad_sans[i].in);
        assert_null(gn);
        if (strstr(err.msg, bad_sans[i].says) == NULL)
            fail_msg("'%s': error '%s' does not say '%s'", bad_sans[i].in, err.msg,
                     bad_sans[i].says);
        /* The error quotes what was given, so the user sees which --san. */
        if (bad_sans[i].in[0] != '\0' && strstr(err.msg, bad_sans[i].in) == NULL)
            fail_msg("'%s': error '%s' does not quote the input", bad_sans[i].in, err.msg);
    }
}

static void test_dns_name_length(void **state)
{
    char name[300];
    size_t i;

    /* 4 labels of 63 + 3 dots = 255 > 253: too long even though every label is fine. */
    for (i = 0; i < 4 * 64 - 1; i++)
        name[i] = (i % 64 == 63) ? '.' : 'a';
    name[4 * 64 - 1] = '\0';
    assert_false(cli_valid_dns_name(name, 0));
    name[253] = '\0'; /* "...a" 253 characters, last label 61 long */
    assert_true(cli_valid_dns_name(name, 0));
    assert_false(cli_valid_dns_name("*.example", 0));
    assert_true(cli_valid_dns_name("*.example", 1));
}

/* ------------------------------------------------------------------------ */
/* Key types, usage, numbers                                                 */

static const struct {
    const char *in;
    mks_key_type type;
    int bits;
    const char *curve;
} good_key_types[] = {
    {"ec:P-256", MKS_KEY_EC, 0, "P-256"},  {"ec:P-384", MKS_KEY_EC, 0, "P-384"},
    {"rsa:2048", MKS_KEY_RSA, 2048, NULL}, {"rsa:3072", MKS_KEY_RSA, 3072, NULL},
    {"rsa:4096", MKS_KEY_RSA, 4096, NULL}, {"EC:p-256", MKS_KEY_EC, 0, "P-256"},
    {"RSA:2048", MKS_KEY_RSA, 2048, NULL},
};

static const char *const bad_key_types[] = {
    "ec:P-521", "rsa:1024", "dsa:2048", "", "ec", "rsa", "ec:P-256x", "rsa:2048 ", "ed25519",
};

static void test_key_types(void **state)
{
    size_t i;

    for (i = 0; i < N(good_key_types); i++) {
        mks_keygen_params p = {.label = "keep"};
        cli_err err = {{0}};

        if (!cli_parse_key_type(good_key_types[i].in, &p, &err))
            fail_msg("'%s' refused: %s", good_key_types[i].in, err.msg);
        assert_int_equal(p.type, good_key_types[i].type);
        assert_int_equal(p.bits, good_key_types[i].bits);
        if (good_key_types[i].curve == NULL)
            assert_null(p.curve);
        else
            assert_string_equal(p.curve, good_key_types[i].curve);
        assert_string_equal(p.label, "keep");
    }
    for (i = 0; i < N(bad_key_types); i++) {
        mks_keygen_params p = {0};
        cli_err err = {{0}};

        if (cli_parse_key_type(bad_key_types[i], &p, &err))
            fail_msg("'%s' accepted", bad_key_types[i]);
        assert_non_null(strstr(err.msg, "unsupported key type"));
        assert_non_null(strstr(err.msg, "ec:P-256"));
        assert_int_equal(p.type, MKS_KEY_NONE);
    }
}

static void test_usage(void **state)
{
    static const struct {
        const char *in;
        int ok;
        cli_usage want;
    } rows[] = {
        {"client", 1, CLI_USAGE_CLIENT},
        {"server", 1, CLI_USAGE_SERVER},
        {"both", 1, CLI_USAGE_BOTH},
        {"Client", 1, CLI_USAGE_CLIENT},
        {"", 0, 0},
        {"all", 0, 0},
        {"clientserver", 0, 0},
        {"client,server", 0, 0},
    };
    size_t i;

    for (i = 0; i < N(rows); i++) {
        cli_usage u = 0;
        cli_err err = {{0}};
        int ok = cli_parse_usage(rows[i].in, &u, &err);

        if (ok != rows[i].ok)
            fail_msg("usage '%s': got %d", rows[i].in, ok);
        if (ok)
            assert_int_equal(u, rows[i].want);
        else
            assert_non_null(strstr(err.msg, "client, server or both"));
    }
}

static void test_uint(void **state)
{
    static const struct {
        const char *in;
        int ok, want;
    } rows[] = {
        {"0", 1, 0}, {"12", 1, 12}, {"-1", 0, 0},          {"1x", 0, 0},
        {"", 0, 0},  {" 1", 0, 0},  {"99999999999", 0, 0}, {"+1", 0, 0},
    };
    size_t i;

    for (i = 0; i < N(rows); i++) {
        int v = -7;

        assert_int_equal(cli_parse_uint(rows[i].in, &v), rows[i].ok);
        assert_int_equal(v, rows[i].ok ? rows[i].want : -7);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_subject_good), cmocka_unit_test(test_subject_multivalued_rdn),
        cmocka_unit_test(test_subject_bad),  cmocka_unit_test(test_san_good),
        cmocka_unit_test(test_san_bad),      cmocka_unit_test(test_dns_name_length),
        cmocka_unit_test(test_key_types),    cmocka_unit_test(test_usage),
        cmocka_unit_test(test_uint),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
