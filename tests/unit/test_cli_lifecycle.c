/*
 * What the lifecycle commands build on: the labels of a renewal, certificate
 * facts (days left rounded up, also below zero; SANs, usages, key),
 * certificate files, and the JSON writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "json.h"
#include "lifecycle.h"

/* ---- labels ----------------------------------------------------------------- */

static void test_label_roles(void **state)
{
    static const struct {
        const char *label;
        cli_role role;
    } cases[] = {
        {"web", CLI_ROLE_CURRENT},          {"web.next", CLI_ROLE_PENDING},
        {"web.old", CLI_ROLE_RETIRED},      {"web.chain", CLI_ROLE_CHAIN},
        {".next", CLI_ROLE_CURRENT},        {"web.next.old", CLI_ROLE_RETIRED},
        {"web.nextx", CLI_ROLE_CURRENT},    {"", CLI_ROLE_CURRENT},
        {"web.old.next", CLI_ROLE_PENDING},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(cli_label_role(cases[i].label), cases[i].role);
    assert_string_equal(cli_role_name(CLI_ROLE_PENDING), "pending");
    assert_string_equal(cli_role_name(CLI_ROLE_RETIRED), "retired");
    assert_string_equal(cli_role_name(CLI_ROLE_CHAIN), "chain");
    assert_string_equal(cli_role_name(CLI_ROLE_CURRENT), "current");
}

static void test_label_join(void **state)
{
    char *s = cli_label_join("web", CLI_SUFFIX_NEXT);

    assert_string_equal(s, "web.next");
    free(s);
}

/* ---- certificates ----------------------------------------------------------- */

/* A self-signed certificate valid from now-1d to now+secs, DER (OPENSSL_free). */
static unsigned char *make_cert(time_t now, long secs, int ca, EVP_PKEY **key, size_t *len)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    X509V3_CTX v3;
    X509_EXTENSION *e;
    unsigned char *der = NULL;
    int l;

    assert_non_null(pk);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 0x1abc);
    X509_time_adj_ex(X509_getm_notBefore(x), -1, 0, &now);
    X509_time_adj_ex(X509_getm_notAfter(x), 0, secs, &now);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"web", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"Ex, Inc", -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_set_pubkey(x, pk);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                            "DNS:web.example,IP:192.0.2.1,IP:2001:db8::1,email:a@b.example");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_ext_key_usage, "serverAuth,clientAuth,1.2.3.4");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_key_usage,
                            ca ? "critical,keyCertSign" : "critical,digitalSignature");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    l = i2d_X509(x, &der);
    assert_true(l > 0);
    *len = (size_t)l;
    X509_NAME_free(n);
    X509_free(x);
    if (key != NULL)
        *key = pk;
    else
        EVP_PKEY_free(pk);
    return der;
}

static void test_cert_info(void **state)
{
    time_t now = time(NULL);
    size_t len;
    unsigned char *der = make_cert(now, 10 * 86400 + 5, 0, NULL, &len);
    cli_cert_info ci;
    cli_err err;
    unsigned char md[32];
    char hex[65];
    size_t i;

    assert_true(cli_cert_info_get(der, len, now, &ci, &err));
    assert_string_equal(ci.subject, "O=Ex\\, Inc,CN=web");
    assert_string_equal(ci.issuer, ci.subject);
    assert_string_equal(ci.serial, "1abc");
    assert_int_equal(ci.seconds_left, 10 * 86400 + 5);
    assert_int_equal(ci.days_left, 11);
    assert_int_equal(ci.sans.n, 4);
    assert_string_equal(ci.sans.v[0], "DNS:web.example");
    assert_string_equal(ci.sans.v[1], "IP:192.0.2.1");
    assert_string_equal(ci.sans.v[2], "IP:2001:db8::1");
    assert_string_equal(ci.sans.v[3], "email:a@b.example");
    assert_int_equal(ci.ext_key_usage.n, 3);
    assert_string_equal(ci.ext_key_usage.v[0], "serverAuth");
    assert_string_equal(ci.ext_key_usage.v[1], "clientAuth");
    assert_string_equal(ci.ext_key_usage.v[2], "1.2.3.4");
    assert_int_equal(ci.key_usage.n, 1);
    assert_string_equal(ci.key_usage.v[0], "digitalSignature");
    assert_false(ci.is_ca);
    assert_string_equal(ci.key_type, "ec");
    assert_string_equal(ci.curve, "P-256");
    assert_int_equal(ci.key_bits, 256);
    assert_int_equal(strlen(ci.not_after), 20);
    assert_int_equal(ci.not_after[19], 'Z');
    EVP_Digest(der, len, md, NULL, EVP_sha256(), NULL);
    for (i = 0; i < sizeof(md); i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    assert_string_equal(ci.sha256, hex);
    cli_cert_info_clear(&ci);
    OPENSSL_free(der);

    /* Days are rounded up (a day begun counts), also once expired. */
    {
        static const struct {
            long secs;
            long long days;
        } cases[] = {
            {2 * 86400 - 1, 2}, {86401, 2},   {86400, 1},    {86399, 1}, {1, 1}, {0, 0}, {-1, 0},
            {-86400, -1},       {-86401, -1}, {-172800, -2},
        };

        for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            der = make_cert(now, cases[i].secs, 0, NULL, &len);
            assert_true(cli_cert_info_get(der, len, now, &ci, &err));
            assert_int_equal(ci.seconds_left, cases[i].secs);
            assert_int_equal(ci.days_left, cases[i].days);
            cli_cert_info_clear(&ci);
            OPENSSL_free(der);
        }
        assert_string_equal(cli_days_word(1), "day");
        assert_string_equal(cli_days_word(-1), "day");
        assert_string_equal(cli_days_word(0), "days");
        assert_string_equal(cli_days_word(2), "days");
    }

    der = make_cert(now, 86400, 1, NULL, &len);
    assert_true(cli_cert_info_get(der, len, now, &ci, &err));
    assert_true(ci.is_ca);
    assert_string_equal(ci.key_usage.v[0], "keyCertSign");
    cli_cert_info_clear(&ci);
    assert_false(cli_cert_info_get(der, len / 2, now, &ci, &err));
    assert_false(cli_cert_info_get(NULL, 0, now, &ci, &err));
    OPENSSL_free(der);
}

static void test_cert_info_json(void **state)
{
    time_t now = time(NULL);
    size_t len, n = 0;
    unsigned char *der = make_cert(now, 3 * 86400, 0, NULL, &len);
    cli_cert_info ci;
    cli_err err;
    cli_json j;
    char *buf = NULL;
    FILE *f = open_memstream(&buf, &n);

    assert_true(cli_cert_info_get(der, len, now, &ci, &err));
    cli_json_init(&j, f);
    cli_json_obj_begin(&j, NULL);
    cli_cert_info_json(&j, &ci);
    cli_json_obj_end(&j);
    cli_json_end(&j);
    fclose(f);
    assert_non_null(strstr(buf, "\"subject\":\"O=Ex\\\\, Inc,CN=web\","));
    assert_non_null(strstr(buf, "\"days_left\":3,"));
    assert_non_null(strstr(buf, "\"sans\":[\"DNS:web.example\",\"IP:192.0.2.1\","));
    assert_non_null(
        strstr(buf, "\"extended_key_usage\":[\"serverAuth\",\"clientAuth\",\"1.2.3.4\"]"));
    assert_non_null(
        strstr(buf, "\"ca\":false,\"key_type\":\"ec\",\"curve\":\"P-256\",\"bits\":256,"));
    assert_int_equal(buf[strlen(buf) - 1], '\n');
    free(buf);
    cli_cert_info_clear(&ci);
    OPENSSL_free(der);
}

static void test_read_certs_and_keys(void **state)
{
    time_t now = time(NULL);
    char dir[] = "/tmp/test_cli_lifecycle.XXXXXX", path[128];
    size_t len1, len2;
    EVP_PKEY *k1 = NULL, *k2 = NULL;
    unsigned char *d1 = make_cert(now, 86400, 0, &k1, &len1);
    unsigned char *d2 = make_cert(now, 86400, 1, &k2, &len2);
    unsigned char *s1 = NULL, *s2 = NULL;
    const unsigned char *p;
    STACK_OF(X509) *sk = NULL;
    cli_err err;
    FILE *f;
    X509 *x;
    int n1, n2;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/two.pem", dir);
    f = fopen(path, "w");
    p = d1;
    x = d2i_X509(NULL, &p, (long)len1);
    PEM_write_X509(f, x);
    X509_free(x);
    p = d2;
    x = d2i_X509(NULL, &p, (long)len2);
    PEM_write_X509(f, x);
    X509_free(x);
    fclose(f);
    assert_true(cli_read_certs(path, &sk, &err));
    assert_int_equal(sk_X509_num(sk), 2);
    sk_X509_pop_free(sk, X509_free);

    snprintf(path, sizeof(path), "%s/one.der", dir);
    f = fopen(path, "w");
    fwrite(d1, 1, len1, f);
    fclose(f);
    assert_true(cli_read_certs(path, &sk, &err));
    assert_int_equal(sk_X509_num(sk), 1);
    sk_X509_pop_free(sk, X509_free);

    snprintf(path, sizeof(path), "%s/junk", dir);
    f = fopen(path, "w");
    fputs("not a certificate\n", f);
    fclose(f);
    assert_false(cli_read_certs(path, &sk, &err));
    assert_non_null(strstr(err.msg, "no X.509 certificate"));
    unlink(path);
    snprintf(path, sizeof(path), "%s/one.der", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/two.pem", dir);
    unlink(path);
    rmdir(dir);

    n1 = i2d_PUBKEY(k1, &s1);
    n2 = i2d_PUBKEY(k2, &s2);
    assert_true(cli_same_public_key(s1, (size_t)n1, s1, (size_t)n1));
    assert_false(cli_same_public_key(s1, (size_t)n1, s2, (size_t)n2));
    assert_false(cli_same_public_key(NULL, 0, s2, (size_t)n2));
    OPENSSL_free(s1);
    OPENSSL_free(s2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    OPENSSL_free(d1);
    OPENSSL_free(d2);
}

/* ---- JSON writer ------------------------------------------------------------ */

static void test_json_writer(void **state)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    cli_json j;

    cli_json_init(&j, f);
    cli_json_obj_begin(&j, NULL);
    cli_json_int(&j, "a", -1);
    cli_json_arr_begin(&j, "b");
    cli_json_bool(&j, NULL, 1);
    cli_json_bool(&j, NULL, -1);
    cli_json_string(&j, NULL, "x\"y\n");
    cli_json_string(&j, NULL, NULL);
    cli_json_obj_begin(&j, NULL);
    cli_json_obj_end(&j);
    cli_json_arr_end(&j);
    cli_json_obj_begin(&j, "c");
    cli_json_null(&j, "d");
    cli_json_arr_begin(&j, "e");
    cli_json_arr_end(&j);
    cli_json_obj_end(&j);
    cli_json_bool(&j, "f", 0);
    cli_json_obj_end(&j);
    cli_json_end(&j);
    fclose(f);
    assert_string_equal(buf, "{\"a\":-1,\"b\":[true,null,\"x\\\"y\\n\",null,{}],\"c\":{\"d\":null,"
                             "\"e\":[]},\"f\":false}\n");
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_roles),         cmocka_unit_test(test_label_join),
        cmocka_unit_test(test_cert_info),           cmocka_unit_test(test_cert_info_json),
        cmocka_unit_test(test_read_certs_and_keys), cmocka_unit_test(test_json_writer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
