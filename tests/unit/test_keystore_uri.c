/*
 * pkcs11: URIs as the keystore builds and reads them: a token's URI out of
 * any URI, object URIs from token, label, id and class, and URIs taken
 * apart; labels with characters that URIs reserve come back unchanged. And
 * the object arrays mks_objects_find hands out: cleared and appended by the
 * keystore, never by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mtlsks/keystore.h>

#define TOK "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=1;token=a%3Bb"

static void test_token_of_uri(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {TOK ";id=%01%02;object=web;type=private", TOK},
        {TOK ";object=web;type=cert?pin-source=file:/x", TOK},
        {"pkcs11:id=%01;object=web;type=cert", "pkcs11:"},
        {TOK, TOK},
        {"pkcs11:object=web;token=t", "pkcs11:token=t"},
        {"pkcs11:token=t?pin-value=1234&module-path=/m.so", "pkcs11:token=t"},
        {"pkcs11:", "pkcs11:"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = NULL;

        if (mks_uri_token(cases[i].in, &s) != MKS_OK)
            fail_msg("%s: %s", cases[i].in, mks_last_error());
        assert_string_equal(s, cases[i].out);
        mks_free(s);
    }
}

static void test_token_of_bad_uri(void **state)
{
    static const struct {
        const char *in;
        mks_rv rv;
    } cases[] = {
        {"file:/etc/x", MKS_ERR_ARG},
        {NULL, MKS_ERR_ARG},
        {"pkcs11:token=t;color=blue", MKS_ERR_ARG},
        {"pkcs11:id=%zz", MKS_ERR_ARG},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = (char *)"untouched";

        assert_int_equal(mks_uri_token(cases[i].in, &s), cases[i].rv);
        assert_null(s);
        assert_true(mks_last_error()[0] != '\0');
    }
}

static void test_object_uri(void **state)
{
    static const unsigned char id[] = {0xab, 0x01, 0x7f};
    static const struct {
        const char *token, *label;
        size_t id_len;
        unsigned cls;
        const char *out;
    } cases[] = {
        {NULL, "web", 0, MKS_OBJ_PRIVATE_KEY, "pkcs11:object=web;type=private"},
        {TOK, "a b;c.next", 3, MKS_OBJ_CERTIFICATE,
         TOK ";id=%AB%01%7F;object=a%20b%3Bc.next;type=cert"},
        {TOK, NULL, 1, 0, TOK ";id=%AB"},
        {NULL, NULL, 0, MKS_OBJ_CERTIFICATE, "pkcs11:type=cert"},
        {NULL, NULL, 0, MKS_OBJ_PUBLIC_KEY, "pkcs11:type=public"},
        {NULL, NULL, 0, 0, "pkcs11:"},
        {NULL, "", 0, 0, "pkcs11:object="},
        /* The token URI's own object attributes are replaced, its query kept. */
        {"pkcs11:token=t;object=old;type=cert", "new", 0, MKS_OBJ_PRIVATE_KEY,
         "pkcs11:token=t;object=new;type=private"},
        {"pkcs11:token=t?pin-source=file:/run/pin", "k", 0, 0,
         "pkcs11:token=t;object=k?pin-source=file%3A%2Frun%2Fpin"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *s = NULL;

        if (mks_uri_object(cases[i].token, cases[i].label, cases[i].id_len > 0 ? id : NULL,
                           cases[i].id_len, cases[i].cls, &s) != MKS_OK)
            fail_msg("case %zu: %s", i, mks_last_error());
        assert_string_equal(s, cases[i].out);
        mks_free(s);
    }
}

static void test_object_uri_refused(void **state)
{
    char *s = (char *)"untouched";

    assert_int_equal(mks_uri_object(NULL, "web", NULL, 0, MKS_OBJ_ANY, &s), MKS_ERR_ARG);
    assert_null(s);
    assert_int_equal(mks_uri_object("file:/etc/x", "web", NULL, 0, 0, &s), MKS_ERR_ARG);
    assert_null(s);
    assert_int_equal(mks_uri_object("pkcs11:colour=red", "web", NULL, 0, 0, &s), MKS_ERR_ARG);
    assert_null(s);
}

/* Labels a user may type: each one, put into a URI and read back, is itself,
 * and the URI carries it in unreserved characters and %XX only. */
static void test_odd_labels_round_trip(void **state)
{
    static const char *const labels[] = {
        "web",    "a b",      "a;b",        "100%",        "%41",       "a/b",
        "x?y=z",  "k&pin=1",  "tab\there",  "caf\xc3\xa9", "\xff\xfe",  "web.next",
        "~tilde", "pkcs11:x", "  spaces  ", "semi;colon;", "quote\"'`", "#hash",
    };
    size_t i;

    for (i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
        char *s = NULL;
        const char *obj;
        mks_uri_parts parts;

        assert_int_equal(mks_uri_object(TOK, labels[i], NULL, 0, MKS_OBJ_PRIVATE_KEY, &s), MKS_OK);
        obj = strstr(s, ";object=");
        assert_non_null(obj);
        obj += strlen(";object=");
        assert_int_equal(strcspn(obj, ";"),
                         strspn(obj, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789-._~%"));
        if (mks_uri_parse(s, &parts) != MKS_OK)
            fail_msg("%s: %s", s, mks_last_error());
        assert_non_null(parts.label);
        assert_string_equal(parts.label, labels[i]);
        assert_int_equal(parts.cls, MKS_OBJ_PRIVATE_KEY);
        assert_string_equal(parts.token_label, "a;b");
        assert_string_equal(parts.token_uri, TOK);
        mks_uri_parts_clear(&parts);
        mks_free(s);
    }
}

static void test_parse(void **state)
{
    mks_uri_parts p;

    assert_int_equal(
        mks_uri_parse(TOK ";id=%01%02;object=a%20b;type=private?pin-source=file:/x", &p), MKS_OK);
    assert_string_equal(p.token_uri, TOK);
    assert_string_equal(p.token_label, "a;b");
    assert_string_equal(p.label, "a b");
    assert_int_equal(p.id_len, 2);
    assert_memory_equal(p.id, "\x01\x02", 2);
    assert_int_equal(p.cls, MKS_OBJ_PRIVATE_KEY);
    assert_string_equal(p.pin_source, "file:/x");
    mks_uri_parts_clear(&p);
    assert_null(p.token_uri);

    /* Absent is not empty: no object= is NULL, "object=" is "". */
    assert_int_equal(mks_uri_parse("pkcs11:", &p), MKS_OK);
    assert_string_equal(p.token_uri, "pkcs11:");
    assert_string_equal(p.token_label, "");
    assert_null(p.label);
    assert_null(p.id);
    assert_int_equal(p.id_len, 0);
    assert_int_equal(p.cls, 0);
    assert_null(p.pin_source);
    mks_uri_parts_clear(&p);
    assert_int_equal(mks_uri_parse("pkcs11:object=;type=cert", &p), MKS_OK);
    assert_non_null(p.label);
    assert_string_equal(p.label, "");
    assert_int_equal(p.cls, MKS_OBJ_CERTIFICATE);
    mks_uri_parts_clear(&p);
}

static void test_parse_refused(void **state)
{
    static const struct {
        const char *in;
        mks_rv rv;
    } cases[] = {
        {"pkcs11:type=data", MKS_ERR_UNSUPPORTED},
        {"pkcs11:object=k;type=secret-key", MKS_ERR_UNSUPPORTED},
        {"pkcs11:type=nonsense", MKS_ERR_ARG},
        {"pkcs11:id=%zz", MKS_ERR_ARG},
        {"pkcs11:token=t;colour=red", MKS_ERR_ARG},
        {"tpmkey:handle=0x81000100", MKS_ERR_ARG},
        {"", MKS_ERR_ARG},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mks_uri_parts p;

        memset(&p, 0x5a, sizeof(p));
        assert_int_equal(mks_uri_parse(cases[i].in, &p), cases[i].rv);
        assert_null(p.token_uri);
        assert_null(p.label);
        assert_null(p.id);
        assert_null(p.pin_source);
    }
    mks_uri_parts_clear(NULL);
}

/* ---- objects ----------------------------------------------------------------- */

static mks_object *objects(size_t n, const char *prefix)
{
    mks_object *v = calloc(n, sizeof(*v));
    size_t i;

    assert_non_null(v);
    for (i = 0; i < n; i++) {
        v[i].cls = MKS_OBJ_CERTIFICATE;
        v[i].label = malloc(32);
        snprintf(v[i].label, 32, "%s%zu", prefix, i);
        v[i].id = malloc(1);
        v[i].id[0] = (unsigned char)i;
        v[i].id_len = 1;
        v[i].uri = strdup("pkcs11:type=cert");
        v[i].der = malloc(4);
        v[i].der_len = 4;
    }
    return v;
}

static void test_objects_append_and_clear(void **state)
{
    mks_object *all = NULL;
    size_t n = 0;

    assert_int_equal(mks_objects_append(&all, &n, objects(2, "a"), 2), MKS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(mks_objects_append(&all, &n, NULL, 0), MKS_OK);
    assert_int_equal(mks_objects_append(&all, &n, calloc(1, sizeof(mks_object)), 0), MKS_OK);
    assert_int_equal(mks_objects_append(&all, &n, objects(3, "b"), 3), MKS_OK);
    assert_int_equal(n, 5);
    assert_string_equal(all[0].label, "a0");
    assert_string_equal(all[1].label, "a1");
    assert_string_equal(all[2].label, "b0");
    assert_string_equal(all[4].label, "b2");

    /* A cleared element holds nothing; freeing the array later is still right. */
    mks_object_clear(&all[1]);
    assert_null(all[1].label);
    assert_null(all[1].id);
    assert_null(all[1].uri);
    assert_null(all[1].der);
    assert_int_equal(all[1].id_len, 0);
    assert_int_equal(all[1].der_len, 0);
    mks_object_clear(NULL);
    mks_objects_free(all, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_of_uri),
        cmocka_unit_test(test_token_of_bad_uri),
        cmocka_unit_test(test_object_uri),
        cmocka_unit_test(test_object_uri_refused),
        cmocka_unit_test(test_odd_labels_round_trip),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_refused),
        cmocka_unit_test(test_objects_append_and_clear),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
