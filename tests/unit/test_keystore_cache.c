/*
 * The key cache (keystore/pkcs11/p11_cache.c) against a SoftHSM token seen
 * through the PKCS#11 shim (MTLSKS_SHIM, set by CMake), which counts the
 * calls that reach the token and makes it refuse C_CopyObject or lose a
 * session or the login on demand: the copy is made once per login and
 * checked, a token that refuses is signed with directly, and fork, a new
 * login and a lost session make the copy again.
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
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <mtlsks/keystore.h>

#include "p11shim.h"

#include "softhsm_fixture.h"

#define KEY_URI "pkcs11:token=ks-cache;object=cache-ec;type=private"
#define EXTRACTABLE_URI "pkcs11:token=ks-cache;object=cache-extractable;type=private"

static softhsm_fixture token;
static const char *shim_path;
static mtlsks_shim_count_fn *shim_count;
static mtlsks_shim_set_faults_fn *shim_set_faults;

/* Our key, made by the keystore as enroll makes one. */
static int make_key(void)
{
    mks_config cfg = {.pkcs11_module = SOFTHSM_MODULE, .pin_source = token.pin_source};
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", "cache-ec"};
    mks_ctx *ctx = NULL;
    mks_key *key = NULL;
    int ok = mks_ctx_new(&cfg, &ctx) == MKS_OK &&
             mks_keygen(ctx, "pkcs11:token=ks-cache", &kp, NULL, &key) == MKS_OK;

    if (!ok)
        fprintf(stderr, "cannot make the key: %s\n", mks_last_error());
    mks_key_free(key);
    mks_ctx_free(ctx);
    return ok ? 0 : -1;
}

/* A token with two EC keys: ours (sensitive, never extractable) and one
 * made extractable by pkcs11-tool, whose copy must not be used. */
static int make_token(void **state)
{
    char cmd[600];

    shim_path = getenv("MTLSKS_SHIM");
    if (shim_path == NULL || access(shim_path, R_OK) != 0) {
        printf("SKIP: MTLSKS_SHIM (the PKCS#11 shim) is not set or not built\n");
        exit(77);
    }
    setenv("MTLSKS_SHIM_MODULE", SOFTHSM_MODULE, 1);
    if (softhsm_make(&token, "/tmp/mtlsks-cache-XXXXXX", "ks-cache") != 0)
        return -1;
    snprintf(cmd, sizeof(cmd),
             "pkcs11-tool --module %s --token-label ks-cache --login --pin 1234 --keypairgen "
             "--key-type EC:prime256v1 --label cache-extractable --id 0e --extractable "
             ">/dev/null 2>&1",
             SOFTHSM_MODULE);
    if (system(cmd) != 0)
        return -1;
    return make_key();
}

static int remove_token(void **state)
{
    return softhsm_remove(&token);
}

/* A context on the shim; the shim's counters once it is loaded. */
static mks_ctx *new_ctx(int no_key_cache)
{
    mks_config cfg = {
        .pkcs11_module = shim_path, .pin_source = token.pin_source, .no_key_cache = no_key_cache};
    mks_ctx *ctx = NULL;
    mks_slot_info *slots = NULL;
    size_t n = 0;
    void *h;

    assert_int_equal(mks_ctx_new(&cfg, &ctx), MKS_OK);
    assert_int_equal(mks_slots_list(ctx, &slots, &n), MKS_OK);
    mks_slots_free(slots, n);
    h = dlopen(shim_path, RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(h);
    shim_count = (mtlsks_shim_count_fn *)dlsym(h, "mtlsks_shim_count");
    shim_set_faults = (mtlsks_shim_set_faults_fn *)dlsym(h, "mtlsks_shim_set_faults");
    assert_non_null(shim_count);
    assert_non_null(shim_set_faults);
    return ctx;
}

static mks_key *open_key(mks_ctx *ctx, const char *uri)
{
    mks_key *key = NULL;

    if (mks_key_open(ctx, uri, NULL, &key) != MKS_OK)
        fail_msg("%s: %s", uri, mks_last_error());
    return key;
}

/* Signs and checks the signature with the key's public half. */
static void sign_ok(mks_key *key)
{
    mks_mech_params mp = {MKS_MECH_ECDSA};
    unsigned char hash[32], sig[64], der[80], *p = der;
    size_t siglen = sizeof(sig), len;
    const unsigned char *spki = mks_key_get0_spki(key, &len);
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &spki, (long)len);
    EVP_PKEY_CTX *vctx = EVP_PKEY_CTX_new(pk, NULL);
    ECDSA_SIG *es = ECDSA_SIG_new();
    int derlen;

    memset(hash, 0x3c, sizeof(hash));
    if (mks_key_sign(key, &mp, hash, sizeof(hash), sig, &siglen) != MKS_OK)
        fail_msg("mks_key_sign: %s", mks_last_error());
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    derlen = i2d_ECDSA_SIG(es, &p);
    assert_int_equal(EVP_PKEY_verify_init(vctx), 1);
    assert_int_equal(EVP_PKEY_verify(vctx, der, (size_t)derlen, hash, sizeof(hash)), 1);
    ECDSA_SIG_free(es);
    EVP_PKEY_CTX_free(vctx);
    EVP_PKEY_free(pk);
}

/* Calls that reached the token for n signatures in steady state. */
static void steady_state(mks_key *key, int n)
{
    unsigned long all = shim_count(NULL), init = shim_count("C_SignInit");
    unsigned long sign = shim_count("C_Sign");
    int i;

    for (i = 0; i < n; i++)
        sign_ok(key);
    assert_int_equal(shim_count("C_SignInit") - init, n);
    assert_int_equal(shim_count("C_Sign") - sign, n);
    assert_int_equal(shim_count(NULL) - all, 2 * n);
}

static void test_copy_made_once_and_destroyed_with_the_key(void **state)
{
    mks_ctx *ctx = new_ctx(0);
    mks_key *key = open_key(ctx, KEY_URI);
    mks_object *objs = NULL;
    size_t n = 0;
    unsigned long copies = shim_count("C_CopyObject"), destroys;

    sign_ok(key);
    assert_int_equal(shim_count("C_CopyObject") - copies, 1);
    steady_state(key, 10);
    assert_int_equal(shim_count("C_CopyObject") - copies, 1);
    /* A session object: the token's objects are as they were, and the key's
     * URI still names one key. */
    assert_int_equal(mks_objects_find(ctx, "pkcs11:token=ks-cache;object=cache-ec;type=private",
                                      MKS_OBJ_PRIVATE_KEY, NULL, &objs, &n),
                     MKS_OK);
    assert_int_equal(n, 1);
    mks_objects_free(objs, n);
    destroys = shim_count("C_DestroyObject");
    mks_key_free(key);
    assert_int_equal(shim_count("C_DestroyObject") - destroys, 1);
    mks_ctx_free(ctx);
}

static void test_extractable_copy_is_not_used(void **state)
{
    mks_ctx *ctx = new_ctx(0);
    mks_key *key = open_key(ctx, EXTRACTABLE_URI);
    unsigned long copies = shim_count("C_CopyObject"), destroys = shim_count("C_DestroyObject");

    /* Copied, checked (CKA_EXTRACTABLE is TRUE), destroyed at once; the
     * token object signs, and no copy is tried again. */
    sign_ok(key);
    assert_int_equal(shim_count("C_CopyObject") - copies, 1);
    assert_int_equal(shim_count("C_DestroyObject") - destroys, 1);
    steady_state(key, 5);
    assert_int_equal(shim_count("C_CopyObject") - copies, 1);
    mks_key_free(key);
    assert_int_equal(shim_count("C_DestroyObject") - destroys, 1);
    mks_ctx_free(ctx);
}

static void test_refusing_token_signs_with_the_token_object(void **state)
{
    static const char *const faults[] = {"C_CopyObject=CKR_FUNCTION_NOT_SUPPORTED",
                                         "C_CopyObject=CKR_ATTRIBUTE_READ_ONLY"};
    size_t i;

    for (i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        mks_ctx *ctx = new_ctx(0);
        mks_key *key = open_key(ctx, KEY_URI), *other;
        unsigned long copies = shim_count("C_CopyObject");

        assert_int_equal(shim_set_faults(faults[i]), 0);
        sign_ok(key);
        assert_int_equal(shim_count("C_CopyObject") - copies, 1);
        steady_state(key, 5);
        /* The token said no for every key: a second key is not copied. */
        other = open_key(ctx, KEY_URI);
        sign_ok(other);
        assert_int_equal(shim_count("C_CopyObject") - copies, 1);
        assert_int_equal(shim_set_faults(NULL), 0);
        mks_key_free(other);
        mks_key_free(key);
        mks_ctx_free(ctx);
    }
}

static void test_copy_made_again_after_fork(void **state)
{
    mks_ctx *ctx = new_ctx(0);
    mks_key *key = open_key(ctx, KEY_URI);
    pid_t pid;
    int status = 0;

    sign_ok(key);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The parent's copy is not the child's: the child makes its own,
         * once, and signs with it. */
        unsigned long copies = shim_count("C_CopyObject"), login = shim_count("C_Login");
        int i, ok = 1;
        mks_mech_params mp = {MKS_MECH_ECDSA};
        unsigned char hash[32] = {7}, sig[64];

        for (i = 0; i < 5 && ok; i++) {
            size_t siglen = sizeof(sig);
            ok = mks_key_sign(key, &mp, hash, sizeof(hash), sig, &siglen) == MKS_OK;
        }
        ok = ok && shim_count("C_CopyObject") - copies == 1 && shim_count("C_Login") - login == 1;
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    steady_state(key, 3);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

/* The token loses the login (or a session) once: the signature succeeds,
 * the copy is made again, then signatures cost two calls again. */
static void copy_made_again_after(const char *fault, long logins)
{
    mks_ctx *ctx = new_ctx(0);
    mks_key *key = open_key(ctx, KEY_URI);
    unsigned long copies, login;

    sign_ok(key);
    copies = shim_count("C_CopyObject");
    login = shim_count("C_Login");
    assert_int_equal(shim_set_faults(fault), 0);
    sign_ok(key);
    assert_int_equal(shim_set_faults(NULL), 0);
    assert_int_equal(shim_count("C_CopyObject") - copies, 1);
    assert_int_equal(shim_count("C_Login") - login, logins);
    steady_state(key, 5);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_copy_made_again_after_relogin(void **state)
{
    copy_made_again_after("C_Sign=CKR_USER_NOT_LOGGED_IN@1", 1);
}

static void test_copy_made_again_after_session_loss(void **state)
{
    copy_made_again_after("C_SignInit=CKR_SESSION_HANDLE_INVALID@1", 0);
}

static void test_cache_off_signs_with_the_token_object(void **state)
{
    mks_ctx *ctx = new_ctx(1);
    mks_key *key = open_key(ctx, KEY_URI);
    unsigned long copies = shim_count("C_CopyObject");

    sign_ok(key);
    steady_state(key, 5);
    assert_int_equal(shim_count("C_CopyObject") - copies, 0);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_made_once_and_destroyed_with_the_key),
        cmocka_unit_test(test_extractable_copy_is_not_used),
        cmocka_unit_test(test_refusing_token_signs_with_the_token_object),
        cmocka_unit_test(test_copy_made_again_after_fork),
        cmocka_unit_test(test_copy_made_again_after_relogin),
        cmocka_unit_test(test_copy_made_again_after_session_loss),
        cmocka_unit_test(test_cache_off_signs_with_the_token_object),
    };
    return cmocka_run_group_tests(tests, make_token, remove_token);
}
