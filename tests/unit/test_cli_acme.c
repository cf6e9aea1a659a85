/*
 * The ACME client's pure parts: base64url (RFC 4648 section 5, no
 * padding), the JWK thumbprint of RFC 7638's own example, JWS a verifier
 * accepts (ES256 as r||s, the protected header with kid or jwk), the
 * external account binding's HS256, the state file (round trip, mode
 * 0600, labels escaped in file names, damaged files refused), and how the
 * commands hand over to their ACME forms.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include "acme/acme.h"

/* ---- base64url --------------------------------------------------------------- */

static void test_b64url_round_trip(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"f", "Zg"},
        {"fo", "Zm8"},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg"},
        {"fooba", "Zm9vYmE"},
        {"foobar", "Zm9vYmFy"},
        {"\xfb\xff\xfe", "-__-"}, /* the two characters base64url changes */
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *enc = acme_b64url((const unsigned char *)cases[i].in, strlen(cases[i].in));
        unsigned char *dec = NULL;
        size_t len = 0;

        assert_non_null(enc);
        assert_string_equal(enc, cases[i].out);
        assert_true(acme_b64url_decode(enc, &dec, &len));
        assert_int_equal(len, strlen(cases[i].in));
        assert_memory_equal(dec, cases[i].in, len);
        free(enc);
        OPENSSL_free(dec);
    }
}

static void test_b64url_decode_refuses_base64(void **state)
{
    unsigned char *dec = NULL;
    size_t len = 0;

    /* Padding and a line end are tolerated (a MAC key file), '+' and '/' are not. */
    assert_true(acme_b64url_decode("Zm9vYg==\n", &dec, &len));
    assert_int_equal(len, 4);
    OPENSSL_free(dec);
    assert_false(acme_b64url_decode("+/8=", &dec, &len));
    assert_false(acme_b64url_decode("Z", &dec, &len));
}

/* ---- JWK and JWS ------------------------------------------------------------------ */

/* An RSA public key from base64url n and e, with its SPKI DER. */
static EVP_PKEY *rsa_from_jwk(const char *n64, const char *e64, unsigned char **spki, int *len)
{
    unsigned char *n = NULL, *e = NULL;
    size_t nl = 0, el = 0;
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM *p = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pkey = NULL;

    assert_true(acme_b64url_decode(n64, &n, &nl));
    assert_true(acme_b64url_decode(e64, &e, &el));
    bn = BN_bin2bn(n, (int)nl, NULL);
    be = BN_bin2bn(e, (int)el, NULL);
    assert_true(OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, bn));
    assert_true(OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, be));
    p = OSSL_PARAM_BLD_to_param(b);
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, p), 1);
    *spki = NULL;
    *len = i2d_PUBKEY(pkey, spki);
    assert_true(*len > 0);
    OSSL_PARAM_free(p);
    OSSL_PARAM_BLD_free(b);
    EVP_PKEY_CTX_free(ctx);
    BN_free(bn);
    BN_free(be);
    OPENSSL_free(n);
    OPENSSL_free(e);
    return pkey;
}

static void test_jwk_thumbprint_rfc7638(void **state)
{
    /* RFC 7638 section 3.1: the key and its SHA-256 thumbprint. */
    static const char n[] =
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
        "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    unsigned char *spki = NULL;
    int len = 0;
    EVP_PKEY *pkey = rsa_from_jwk(n, "AQAB", &spki, &len);
    acme_signer sg;
    cli_err err;

    assert_true(acme_signer_init(&sg, NULL, pkey, spki, (size_t)len, &err));
    assert_string_equal(sg.alg, "RS256");
    assert_string_equal(sg.thumbprint, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    assert_non_null(strstr(sg.jwk, "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"0vx7"));
    acme_signer_clear(&sg);
    EVP_PKEY_free(pkey);
    OPENSSL_free(spki);
}

/* The decoded string of a base64url member of a JSON object. */
static char *member(json_object *o, const char *key, size_t *len)
{
    json_object *v;
    unsigned char *d = NULL;

    assert_true(json_object_object_get_ex(o, key, &v));
    assert_true(acme_b64url_decode(json_object_get_string(v), &d, len));
    return (char *)d;
}

static void test_jws_es256_verifies(void **state)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    unsigned char *spki = NULL, *sig = NULL, der[80], *p;
    int spki_len = i2d_PUBKEY(key, &spki);
    acme_signer sg;
    cli_err err;
    char *jws = NULL, *hdr, *pay, *input = NULL;
    size_t hl, pl, sl, derlen;
    json_object *o, *h, *v;
    ECDSA_SIG *es;
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    assert_true(acme_signer_init(&sg, NULL, key, spki, (size_t)spki_len, &err));
    assert_string_equal(sg.alg, "ES256");
    assert_true(acme_jws(&sg, "https://ca.test/acct/1", "nonce-1", "https://ca.test/new-order",
                         "{\"x\":1}", &jws, &err));
    assert_int_equal(sg.signatures, 1);
    o = json_tokener_parse(jws);
    assert_non_null(o);
    hdr = member(o, "protected", &hl);
    pay = member(o, "payload", &pl);
    sig = (unsigned char *)member(o, "signature", &sl);
    assert_string_equal(pay, "{\"x\":1}");
    h = json_tokener_parse(hdr);
    assert_true(json_object_object_get_ex(h, "kid", &v));
    assert_string_equal(json_object_get_string(v), "https://ca.test/acct/1");
    assert_false(json_object_object_get_ex(h, "jwk", NULL));
    assert_true(json_object_object_get_ex(h, "nonce", &v));
    assert_string_equal(json_object_get_string(v), "nonce-1");
    /* r || s, 32 bytes each, over "protected.payload" (as transmitted). */
    assert_int_equal(sl, 64);
    es = ECDSA_SIG_new();
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    p = der;
    derlen = (size_t)i2d_ECDSA_SIG(es, &p);
    assert_true(asprintf(&input, "%s.%s",
                         json_object_get_string(json_object_object_get(o, "protected")),
                         json_object_get_string(json_object_object_get(o, "payload"))) > 0);
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestVerify(md, der, derlen, (unsigned char *)input, strlen(input)), 1);
    free(jws);
    /* Without a kid the header carries the JWK (newAccount, revocation by key). */
    assert_true(acme_jws(&sg, NULL, "n2", "https://ca.test/new-acct", NULL, &jws, &err));
    json_object_put(o);
    o = json_tokener_parse(jws);
    free(hdr);
    hdr = member(o, "protected", &hl);
    assert_non_null(strstr(hdr, "\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\""));
    assert_null(strstr(hdr, "\"kid\""));
    free(pay);
    pay = member(o, "payload", &pl);
    assert_int_equal(pl, 0); /* POST-as-GET */
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    json_object_put(h);
    json_object_put(o);
    free(input);
    free(jws);
    free(hdr);
    free(pay);
    free(sig);
    acme_signer_clear(&sg);
    EVP_PKEY_free(key);
    OPENSSL_free(spki);
}

static void test_eab_hs256(void **state)
{
    static const unsigned char mac[] = "0123456789abcdef0123456789abcdef";
    unsigned char md[32], *sig = NULL;
    size_t sl = 0, mdlen = 0;
    char *jws = NULL, *input = NULL, *hdr;
    json_object *o;
    cli_err err;

    assert_true(
        acme_eab_jws("kid-1", mac, 32, "{\"kty\":\"EC\"}", "https://ca.test/new-acct", &jws, &err));
    o = json_tokener_parse(jws);
    hdr = member(o, "protected", &sl);
    assert_string_equal(
        hdr, "{\"alg\":\"HS256\",\"kid\":\"kid-1\",\"url\":\"https://ca.test/new-acct\"}");
    free(hdr);
    assert_true(asprintf(&input, "%s.%s",
                         json_object_get_string(json_object_object_get(o, "protected")),
                         json_object_get_string(json_object_object_get(o, "payload"))) > 0);
    assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, mac, 32, (unsigned char *)input,
                              strlen(input), md, sizeof(md), &mdlen));
    sig = (unsigned char *)member(o, "signature", &sl);
    assert_int_equal(sl, 32);
    assert_memory_equal(sig, md, 32);
    free(sig);
    free(input);
    free(jws);
    json_object_put(o);
}

/* ---- state --------------------------------------------------------------------------- */

static char dir[] = "/tmp/test_cli_acme.XXXXXX";

static int setup(void **state)
{
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_state_round_trip(void **state)
{
    char *sans[] = {"DNS:web.example", "IP:192.0.2.1"};
    acme_state st = {0}, back;
    char *path, **labels = NULL;
    size_t n = 0;
    struct stat sb;
    cli_err err;

    st.label = "web/one";
    st.directory = "https://ca.test/dir";
    st.account_url = "https://ca.test/acct/7";
    st.account_key = "pkcs11:token=t;object=acme-account;type=private";
    st.chal = ACME_CHAL_DNS01;
    st.chal_value = "/usr/local/bin/dns-hook --zone example";
    st.sans = sans;
    st.nsans = 2;
    st.token = "t";
    st.key_ref = "/etc/mtls/web.key.pem";
    st.cert_out = "/etc/mtls/web.crt";
    st.eab_kid = "kid";
    st.eab_hmac_file = "/etc/mtls/eab";
    st.timeout = 12;
    assert_true(acme_state_save(dir, &st, &err));
    path = acme_state_path(dir, "web/one");
    /* '/' escaped: the file stays in the directory; mode 0600. */
    assert_non_null(strstr(path, "/web%2Fone.json"));
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(acme_state_load(path, &back, &err), 1);
    assert_string_equal(back.label, "web/one");
    assert_string_equal(back.directory, st.directory);
    assert_string_equal(back.account_url, st.account_url);
    assert_int_equal(back.chal, ACME_CHAL_DNS01);
    assert_string_equal(back.chal_value, st.chal_value);
    assert_int_equal(back.nsans, 2);
    assert_string_equal(back.sans[1], "IP:192.0.2.1");
    assert_string_equal(back.eab_hmac_file, "/etc/mtls/eab");
    assert_int_equal(back.timeout, 12);
    assert_false(back.tpm);
    assert_true(acme_state_list(dir, &labels, &n, &err));
    assert_int_equal(n, 1);
    assert_string_equal(labels[0], "web/one");
    acme_strv_free(labels, n);
    acme_state_clear(&back);
    free(path);
}

static void test_state_missing_and_damaged(void **state)
{
    acme_state st;
    cli_err err;
    char path[256];
    FILE *f;

    snprintf(path, sizeof(path), "%s/none.json", dir);
    assert_int_equal(acme_state_load(path, &st, &err), -1);
    snprintf(path, sizeof(path), "%s/bad.json", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"label\":\"bad\",\"directory\":\"https://ca.test/dir\"}\n", f);
    fclose(f);
    assert_int_equal(acme_state_load(path, &st, &err), 0);
    assert_non_null(strstr(err.msg, "is damaged"));
    f = fopen(path, "w");
    fputs("not json", f);
    fclose(f);
    assert_int_equal(acme_state_load(path, &st, &err), 0);
    assert_non_null(strstr(err.msg, "not an ACME state file"));
}

/* ---- the hand-over from the existing commands ------------------------------------------ */

static void test_commands_hand_over(void **state)
{
    char *enroll[] = {"enroll", "--token", "t", "--acme=https://ca/dir", NULL};
    char *plain[] = {"enroll", "--token", "t", "--label", "--acme-ish", NULL};
    char *after[] = {"enroll", "--", "--acme", NULL};
    char *renew_acme[] = {"renew", "--label", "web", NULL};
    char *renew_csr[] = {"renew", "--label", "web", "--out", "x.csr", NULL};
    char *renew_tpm[] = {"renew", "--tpm", "--cert", "c", "--label", "x", NULL};
    char *check[] = {"check", "--renew-before", "30d", NULL};
    char *check_plain[] = {"check", "--days", "30", NULL};

    assert_true(acme_argv_has(4, enroll, "acme"));
    assert_false(acme_argv_has(5, plain, "acme"));
    assert_false(acme_argv_has(3, after, "acme"));
    assert_true(acme_renew_wanted(3, renew_acme));
    assert_false(acme_renew_wanted(5, renew_csr));
    assert_false(acme_renew_wanted(6, renew_tpm));
    assert_true(acme_check_renew_wanted(3, check));
    assert_false(acme_check_renew_wanted(3, check_plain));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_round_trip),
        cmocka_unit_test(test_b64url_decode_refuses_base64),
        cmocka_unit_test(test_jwk_thumbprint_rfc7638),
        cmocka_unit_test(test_jws_es256_verifies),
        cmocka_unit_test(test_eab_hs256),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_state_missing_and_damaged),
        cmocka_unit_test(test_commands_hand_over),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
