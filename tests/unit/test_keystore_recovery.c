/*
 * Every operation on a token recovers once from what a token may lose under
 * it: the session (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED), the
 * login (CKR_USER_NOT_LOGGED_IN) or an object handle
 * (CKR_OBJECT_HANDLE_INVALID). The token is SoftHSM behind the PKCS#11 shim
 * (tests/p11shim), which makes the one call fail; the tests count the calls
 * the shim saw. An operation that keeps meeting the loss fails after one
 * more try, and key generation never makes a second key pair.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mtlsks/keystore.h>

#include "cert_fixture.h"
#include "p11shim.h"
#include "softhsm_fixture.h"

#define TOKEN "pkcs11:token=ks-recover"

static softhsm_fixture token;
static mks_ctx *ctx;
static mtlsks_shim_count_fn *shim_count;
static mtlsks_shim_set_faults_fn *shim_set_faults;

static int setup(void **state)
{
    mks_config cfg = {.pkcs11_module = MTLSKS_SHIM_PATH};
    mks_object *objs = NULL;
    size_t n = 0;
    void *h;

    if (softhsm_make(&token, "/tmp/mtlsks-recover-XXXXXX", "ks-recover") != 0)
        return -1;
    setenv("MTLSKS_SHIM_MODULE", SOFTHSM_MODULE, 1);
    unsetenv("MTLSKS_SHIM_FAULTS");
    unsetenv("MTLSKS_SHIM_CONTROL");
    cfg.pin_source = token.pin_source;
    /* The module loads at first use, and the search logs in: the tests
     * count the logins their faults cost, and reach the shim's switch. */
    if (mks_ctx_new(&cfg, &ctx) != MKS_OK ||
        mks_objects_find(ctx, TOKEN, MKS_OBJ_ANY, NULL, &objs, &n) != MKS_OK)
        return -1;
    mks_objects_free(objs, n);
    h = dlopen(MTLSKS_SHIM_PATH, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL)
        return -1;
    shim_count = (mtlsks_shim_count_fn *)dlsym(h, "mtlsks_shim_count");
    shim_set_faults = (mtlsks_shim_set_faults_fn *)dlsym(h, "mtlsks_shim_set_faults");
    return shim_count != NULL && shim_set_faults != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    mks_ctx_free(ctx);
    return softhsm_remove(&token);
}

static void faults(const char *rules)
{
    assert_int_equal(shim_set_faults(rules), 0);
}

static size_t count_objects(const char *uri)
{
    mks_object *objs = NULL;
    size_t n = 0;

    if (mks_objects_find(ctx, uri, MKS_OBJ_ANY, NULL, &objs, &n) != MKS_OK)
        fail_msg("find %s: %s", uri, mks_last_error());
    mks_objects_free(objs, n);
    return n;
}

static mks_key *keygen(const char *label)
{
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", label};
    mks_key *key = NULL;

    if (mks_keygen(ctx, TOKEN, &kp, NULL, &key) != MKS_OK)
        fail_msg("keygen %s: %s", label, mks_last_error());
    return key;
}

/* A certificate for the key's public half, signed by a software key. */
static unsigned char *cert_for(const mks_key *key, const char *cn, int ca, size_t *len)
{
    size_t spki_len;
    const unsigned char *spki = mks_key_get0_spki(key, &spki_len);
    EVP_PKEY *pub = d2i_PUBKEY(NULL, &spki, (long)spki_len), *signer = EVP_EC_gen("P-256");
    unsigned char *der;

    assert_non_null(pub);
    der = make_cert(pub, signer, cn, ca, len);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(signer);
    return der;
}

/* ---- one loss, recovered ------------------------------------------------------ */

/* Each kind of loss, met by key generation's own call: one more run on a
 * fresh session (and a new login), one key pair. */
static void test_keygen_recovers(void **state)
{
    static const struct {
        const char *rule;
        unsigned long logins;
    } cases[] = {
        {"C_GenerateKeyPair=CKR_SESSION_HANDLE_INVALID@1", 0},
        {"C_GenerateKeyPair=CKR_SESSION_CLOSED@1", 0},
        {"C_GenerateKeyPair=CKR_USER_NOT_LOGGED_IN@1", 1},
        {"C_FindObjectsInit=CKR_SESSION_HANDLE_INVALID@1", 0},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char label[32], uri[96];
        unsigned long gen0 = shim_count("C_GenerateKeyPair"), login0 = shim_count("C_Login");
        mks_key *key;

        snprintf(label, sizeof(label), "gen-%zu", i);
        faults(cases[i].rule);
        key = keygen(label);
        faults("");
        assert_int_equal(shim_count("C_Login") - login0, cases[i].logins);
        assert_int_equal(shim_count("C_GenerateKeyPair") - gen0,
                         strstr(cases[i].rule, "GenerateKeyPair") != NULL ? 2 : 1);
        snprintf(uri, sizeof(uri), TOKEN ";object=%s", label);
        assert_int_equal(count_objects(uri), 2); /* one private, one public key */
        mks_key_free(key);
    }
}

static void test_cert_import_recovers(void **state)
{
    mks_key *key = keygen("imp");
    size_t len;
    unsigned char *der = cert_for(key, "imp", 0, &len);
    unsigned long create0 = shim_count("C_CreateObject");

    faults("C_CreateObject=CKR_SESSION_HANDLE_INVALID@1");
    if (mks_cert_import(key, "imp", der, len) != MKS_OK)
        fail_msg("import: %s", mks_last_error());
    faults("");
    assert_int_equal(shim_count("C_CreateObject") - create0, 2);
    assert_int_equal(count_objects(TOKEN ";object=imp;type=cert"), 1);
    OPENSSL_free(der);
    mks_key_free(key);
}

static void test_authority_recovers(void **state)
{
    mks_key *key = keygen("ca-key");
    size_t len;
    unsigned char *der = cert_for(key, "ca", 1, &len);
    unsigned long login0 = shim_count("C_Login");

    faults("C_CreateObject=CKR_USER_NOT_LOGGED_IN@1");
    if (mks_cert_store_authority(ctx, TOKEN, "imp.chain", der, len, NULL) != MKS_OK)
        fail_msg("store: %s", mks_last_error());
    faults("");
    assert_int_equal(shim_count("C_Login") - login0, 1);
    assert_int_equal(count_objects(TOKEN ";object=imp.chain;type=cert"), 1);
    OPENSSL_free(der);
    mks_key_free(key);
}

/* The second object's change meets the loss: the run after it changes what
 * is left, and no object is counted twice (the URI names them by id, so
 * the relabelled ones are found again). */
static void test_relabel_and_destroy_recover(void **state)
{
    mks_key *key = keygen("pair");
    const unsigned char *id;
    size_t idlen, n = 0, len;
    unsigned char *der = cert_for(key, "pair", 0, &len);
    char *uri = NULL;
    unsigned long set0;

    assert_int_equal(mks_cert_import(key, "pair", der, len), MKS_OK);
    id = mks_key_get0_id(key, &idlen);
    assert_int_equal(mks_uri_object(TOKEN, NULL, id, idlen, 0, &uri), MKS_OK);

    set0 = shim_count("C_SetAttributeValue");
    faults("C_SetAttributeValue=CKR_SESSION_CLOSED@2");
    if (mks_objects_set_label(ctx, uri, MKS_OBJ_ANY, "pair.old", NULL, &n) != MKS_OK)
        fail_msg("relabel: %s", mks_last_error());
    faults("");
    assert_int_equal(n, 3);
    assert_int_equal(shim_count("C_SetAttributeValue") - set0, 4);
    assert_int_equal(count_objects(TOKEN ";object=pair.old"), 3);
    assert_int_equal(count_objects(TOKEN ";object=pair"), 0);

    faults("C_DestroyObject=CKR_SESSION_HANDLE_INVALID@2");
    if (mks_objects_destroy(ctx, uri, MKS_OBJ_ANY, NULL, &n) != MKS_OK)
        fail_msg("destroy: %s", mks_last_error());
    faults("");
    assert_int_equal(n, 3);
    assert_int_equal(count_objects(uri), 0);
    mks_free(uri);
    OPENSSL_free(der);
    mks_key_free(key);
}

static void test_key_destroy_recovers(void **state)
{
    mks_key *key = keygen("gone");
    unsigned long login0 = shim_count("C_Login");

    faults("C_DestroyObject=CKR_USER_NOT_LOGGED_IN@1");
    if (mks_key_destroy(key) != MKS_OK)
        fail_msg("destroy: %s", mks_last_error());
    faults("");
    assert_int_equal(shim_count("C_Login") - login0, 1);
    assert_int_equal(count_objects(TOKEN ";object=gone"), 0);
    mks_key_free(key);
}

/* A handle that went stale between the search and the read: the search is
 * run again and finds every object. */
static void test_find_recovers_stale_handle(void **state)
{
    unsigned long find0 = shim_count("C_FindObjectsInit"), plain, faulted;
    size_t before = count_objects(TOKEN), after;

    plain = shim_count("C_FindObjectsInit") - find0;
    faults("C_GetAttributeValue=CKR_OBJECT_HANDLE_INVALID@1");
    after = count_objects(TOKEN);
    faults("");
    faulted = shim_count("C_FindObjectsInit") - find0 - plain;
    assert_true(before > 0);
    assert_int_equal(after, before);
    assert_int_equal(faulted, plain + 1); /* the search, once more */
}

/* ---- a loss that stays ----------------------------------------------------- */

static void test_lasting_loss_fails_after_one_more_try(void **state)
{
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", "never"};
    mks_key *key = NULL;
    unsigned long gen0 = shim_count("C_GenerateKeyPair");
    mks_rv rv;

    faults("C_GenerateKeyPair=CKR_SESSION_HANDLE_INVALID");
    rv = mks_keygen(ctx, TOKEN, &kp, NULL, &key);
    faults("");
    assert_int_equal(rv, MKS_ERR_TOKEN);
    assert_null(key);
    assert_non_null(
        strstr(mks_last_error(), "C_GenerateKeyPair failed: CKR_SESSION_HANDLE_INVALID"));
    assert_int_equal(shim_count("C_GenerateKeyPair") - gen0, 2);
    assert_int_equal(count_objects(TOKEN ";object=never"), 0);
}

/* Once the pair exists, a loss is not recovered by making another pair: the
 * operation fails, the pair is undone. */
static void test_keygen_never_makes_two_pairs(void **state)
{
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", "once"};
    mks_key *key = NULL;
    unsigned long gen0 = shim_count("C_GenerateKeyPair");
    mks_rv rv;

    faults("C_SetAttributeValue=CKR_SESSION_HANDLE_INVALID@1");
    rv = mks_keygen(ctx, TOKEN, &kp, NULL, &key);
    faults("");
    assert_int_not_equal(rv, MKS_OK);
    assert_null(key);
    assert_non_null(strstr(mks_last_error(), "key generation undone"));
    assert_int_equal(shim_count("C_GenerateKeyPair") - gen0, 1);
    assert_int_equal(count_objects(TOKEN ";object=once"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen_recovers),
        cmocka_unit_test(test_cert_import_recovers),
        cmocka_unit_test(test_authority_recovers),
        cmocka_unit_test(test_relabel_and_destroy_recover),
        cmocka_unit_test(test_key_destroy_recovers),
        cmocka_unit_test(test_find_recovers_stale_handle),
        cmocka_unit_test(test_lasting_loss_fails_after_one_more_try),
        cmocka_unit_test(test_keygen_never_makes_two_pairs),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
