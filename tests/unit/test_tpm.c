/*
 * The TPM backend against a real swtpm started on free loopback ports:
 * key creation, TSS2 key files, signing and decryption checked with OpenSSL,
 * persistent keys, passwords, command counts and fork().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <mtlsks/keystore.h>

#include "swtpm_fixture.h"

static swtpm_fixture tpm;

static int start_swtpm(void **state)
{
    if (swtpm_start(&tpm, "/tmp/mtlsks-tpm-XXXXXX") != 0)
        return -1;
    setenv("MTLSKS_TEST_TCTI", tpm.tcti, 1);
    return 0;
}

static int stop_swtpm(void **state)
{
    return swtpm_stop(&tpm);
}

/* A keystore on the swtpm; hold is tpm2-hold-objects (NULL: auto, which on
 * the swtpm TCTI means no), sessions tpm2-sessions. */
static mks_ctx *new_ctx_with(const char *hold, const char *sessions)
{
    mks_config cfg = {.pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so",
                      .tpm2_tcti = tpm.tcti,
                      .tpm2_hold_objects = hold,
                      .tpm2_sessions = sessions};
    mks_ctx *ctx = NULL;

    if (mks_ctx_new(&cfg, &ctx) != MKS_OK)
        fail_msg("mks_ctx_new: %s", mks_last_error());
    return ctx;
}

static mks_ctx *new_ctx(void)
{
    return new_ctx_with(NULL, NULL);
}

static EVP_PKEY *pubkey_of(const mks_key *key)
{
    size_t len;
    const unsigned char *der = mks_key_get0_spki(key, &len);
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &der, (long)len);

    assert_non_null(pk);
    return pk;
}

static int verify_ecdsa(EVP_PKEY *pk, const unsigned char *hash, size_t hlen,
                        const unsigned char *sig, size_t siglen)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    unsigned char der[160], *p = der;
    EVP_PKEY_CTX *v = EVP_PKEY_CTX_new(pk, NULL);
    int n, ok;

    ECDSA_SIG_set0(es, BN_bin2bn(sig, (int)siglen / 2, NULL),
                   BN_bin2bn(sig + siglen / 2, (int)siglen / 2, NULL));
    n = i2d_ECDSA_SIG(es, &p);
    ok = EVP_PKEY_verify_init(v) == 1 && EVP_PKEY_verify(v, der, (size_t)n, hash, hlen) == 1;
    ECDSA_SIG_free(es);
    EVP_PKEY_CTX_free(v);
    return ok;
}

static int pem_to_der(const char *pem, unsigned char **der, long *len)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    char *name = NULL, *header = NULL;
    int ok =
        PEM_read_bio(b, &name, &header, der, len) == 1 && strcmp(name, MKS_TSS2_PEM_LABEL) == 0;

    OPENSSL_free(name);
    OPENSSL_free(header);
    BIO_free(b);
    return ok;
}

static void test_ec_key_file(void **state)
{
    mks_ctx *ctx = new_ctx();
    mks_tpm_keygen_params kp = {{MKS_KEY_EC, 0, "P-256", NULL}, NULL, 0, 0};
    mks_key *key = NULL, *again = NULL;
    char *pem = NULL;
    size_t pem_len = 0, siglen;
    unsigned char hash[32], sig[64], *der = NULL;
    long derlen = 0;
    mks_mech_params mp = {MKS_MECH_ECDSA};
    EVP_PKEY *pk;
    unsigned long before;
    int i;

    if (mks_tpm_keygen(ctx, &kp, &pem, &pem_len, &key) != MKS_OK)
        fail_msg("keygen: %s", mks_last_error());
    assert_non_null(strstr(pem, "-----BEGIN TSS2 PRIVATE KEY-----"));
    assert_int_equal(mks_key_get_type(key), MKS_KEY_EC);
    assert_string_equal(mks_key_get0_curve(key), "P-256");
    assert_int_equal(mks_key_backend(key), MKS_BACKEND_TPM);
    pk = pubkey_of(key);
    memset(hash, 7, sizeof(hash));
    siglen = sizeof(sig);
    if (mks_key_sign(key, &mp, hash, sizeof(hash), sig, &siglen) != MKS_OK)
        fail_msg("sign: %s", mks_last_error());
    assert_true(verify_ecdsa(pk, hash, sizeof(hash), sig, siglen));

    /* On the bare swtpm, once the key's context is saved, a signature is
     * ContextLoad, Sign, FlushContext. */
    before = mks_tpm_command_count();
    for (i = 0; i < 5; i++) {
        siglen = sizeof(sig);
        assert_int_equal(mks_key_sign(key, &mp, hash, sizeof(hash), sig, &siglen), MKS_OK);
    }
    assert_int_equal(mks_tpm_command_count() - before, 3 * 5);

    /* The file opens again and names the same key. */
    assert_true(pem_to_der(pem, &der, &derlen));
    assert_int_equal(mks_tpm_key_open_der(ctx, der, (size_t)derlen, NULL, &again), MKS_OK);
    siglen = sizeof(sig);
    assert_int_equal(mks_key_sign(again, &mp, hash, sizeof(hash), sig, &siglen), MKS_OK);
    assert_true(verify_ecdsa(pk, hash, sizeof(hash), sig, siglen));

    /* Malformed files are refused with a message. */
    assert_int_equal(mks_tss2_decode_der(der, (size_t)derlen - 3, &(mks_tss2_key){0}), MKS_ERR_ARG);

    OPENSSL_free(der);
    EVP_PKEY_free(pk);
    mks_key_free(again);
    mks_key_free(key);
    free(pem);
    mks_ctx_free(ctx);
}

/* Signs once with a new P-256 key of ctx (key file, no persistent handle)
 * and returns the TPM commands the next n signatures took, and in *freeing
 * what freeing the key took. */
static unsigned long commands_for(mks_ctx *ctx, const char *password, int n, unsigned long *freeing)
{
    mks_tpm_keygen_params kp = {
        {MKS_KEY_EC, 0, "P-256", NULL}, password, password != NULL ? strlen(password) : 0, 0};
    mks_key *key = NULL;
    char *pem = NULL;
    size_t pem_len = 0, siglen;
    unsigned char hash[32] = {4}, sig[64];
    mks_mech_params mp = {MKS_MECH_ECDSA};
    unsigned long before, used;
    int i;

    if (mks_tpm_keygen(ctx, &kp, &pem, &pem_len, &key) != MKS_OK)
        fail_msg("keygen: %s", mks_last_error());
    siglen = sizeof(sig);
    if (mks_key_sign(key, &mp, hash, sizeof(hash), sig, &siglen) != MKS_OK)
        fail_msg("first signature: %s", mks_last_error());
    before = mks_tpm_command_count();
    for (i = 0; i < n; i++) {
        siglen = sizeof(sig);
        assert_int_equal(mks_key_sign(key, &mp, hash, sizeof(hash), sig, &siglen), MKS_OK);
    }
    used = mks_tpm_command_count() - before;
    before = mks_tpm_command_count();
    mks_key_free(key);
    *freeing = mks_tpm_command_count() - before;
    free(pem);
    return used;
}

/* The commands a signature costs, by tpm2-hold-objects and password (a
 * password brings a salted HMAC session: held and reused with held
 * objects, one per operation without). */
static void test_commands_by_policy(void **state)
{
    static const struct {
        const char *hold, *sessions, *password;
        unsigned long per_sign, freeing;
    } cases[] = {
        /* held (as behind a resource manager): TPM2_Sign; flushed when freed */
        {"yes", NULL, NULL, 1, 1},
        {"yes", NULL, "pw", 1, 1},
        {"yes", "always", NULL, 1, 1},
        /* not held (a bare TPM): ContextLoad, Sign, FlushContext; with a
         * session also ContextLoad of the primary, StartAuthSession and
         * FlushContext of the primary */
        {NULL, NULL, NULL, 3, 0},
        {"no", NULL, NULL, 3, 0},
        {NULL, NULL, "pw", 6, 0},
        {NULL, "always", NULL, 6, 0},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mks_ctx *ctx = new_ctx_with(cases[i].hold, cases[i].sessions);
        unsigned long freeing = 0, used = commands_for(ctx, cases[i].password, 10, &freeing);

        printf("# hold-objects %s, sessions %s, %s: %.1f TPM commands per signature, %lu to "
               "free the key\n",
               cases[i].hold ? cases[i].hold : "auto",
               cases[i].sessions ? cases[i].sessions : "auto",
               cases[i].password ? "password" : "no password", used / 10.0, freeing);
        assert_int_equal(used, 10 * cases[i].per_sign);
        assert_int_equal(freeing, cases[i].freeing);
        mks_ctx_free(ctx);
    }
}

/* Values the two settings do not take are refused, naming the choices. */
static void test_bad_settings(void **state)
{
    mks_config cfg = {.pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so", .tpm2_tcti = tpm.tcti};
    mks_ctx *ctx = NULL;

    cfg.tpm2_hold_objects = "maybe";
    assert_int_equal(mks_ctx_new(&cfg, &ctx), MKS_ERR_ARG);
    assert_non_null(strstr(mks_last_error(), "tpm2-hold-objects = 'maybe'"));
    assert_non_null(strstr(mks_last_error(), "auto"));
    cfg.tpm2_hold_objects = NULL;
    cfg.tpm2_sessions = "never";
    assert_int_equal(mks_ctx_new(&cfg, &ctx), MKS_ERR_ARG);
    assert_non_null(strstr(mks_last_error(), "tpm2-sessions = 'never'"));
}

static void test_rsa_pss_pkcs1_decrypt(void **state)
{
    mks_ctx *ctx = new_ctx();
    mks_tpm_keygen_params kp = {{MKS_KEY_RSA, 2048, NULL, NULL}, NULL, 0, 0};
    mks_key *key = NULL;
    char *pem = NULL;
    size_t pem_len, siglen = 256, ctlen = 256, ptlen = 256;
    unsigned char hash[32], sig[256], ct[256], pt[256];
    static const unsigned char sha256_prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                  0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                  0x01, 0x05, 0x00, 0x04, 0x20};
    unsigned char di[sizeof(sha256_prefix) + 32];
    mks_mech_params pss = {MKS_MECH_RSA_PSS, MKS_HASH_SHA256, MKS_HASH_SHA256, 32, NULL, 0};
    mks_mech_params pkcs1 = {MKS_MECH_RSA_PKCS1, MKS_HASH_NONE, MKS_HASH_NONE, 0, NULL, 0};
    mks_mech_params oaep = {MKS_MECH_RSA_OAEP, MKS_HASH_SHA256, MKS_HASH_SHA256, 0, NULL, 0};
    EVP_PKEY *pk;
    EVP_PKEY_CTX *c;

    if (mks_tpm_keygen(ctx, &kp, &pem, &pem_len, &key) != MKS_OK)
        fail_msg("keygen: %s", mks_last_error());
    assert_int_equal(mks_key_get_bits(key), 2048);
    pk = pubkey_of(key);
    memset(hash, 9, sizeof(hash));

    if (mks_key_sign(key, &pss, hash, 32, sig, &siglen) != MKS_OK)
        fail_msg("PSS: %s", mks_last_error());
    c = EVP_PKEY_CTX_new(pk, NULL);
    assert_int_equal(EVP_PKEY_verify_init(c), 1);
    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_signature_md(c, EVP_sha256());
    EVP_PKEY_CTX_set_rsa_pss_saltlen(c, 32);
    assert_int_equal(EVP_PKEY_verify(c, sig, siglen, hash, 32), 1);
    EVP_PKEY_CTX_free(c);

    memcpy(di, sha256_prefix, sizeof(sha256_prefix));
    memcpy(di + sizeof(sha256_prefix), hash, 32);
    siglen = sizeof(sig);
    if (mks_key_sign(key, &pkcs1, di, sizeof(di), sig, &siglen) != MKS_OK)
        fail_msg("PKCS1: %s", mks_last_error());
    c = EVP_PKEY_CTX_new(pk, NULL);
    assert_int_equal(EVP_PKEY_verify_init(c), 1);
    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING);
    EVP_PKEY_CTX_set_signature_md(c, EVP_sha256());
    assert_int_equal(EVP_PKEY_verify(c, sig, siglen, hash, 32), 1);
    EVP_PKEY_CTX_free(c);

    /* The hash with its digest named: the TPM signs it directly, and the
     * signature is the one over the caller's DigestInfo. */
    {
        mks_mech_params named = {MKS_MECH_RSA_PKCS1, MKS_HASH_SHA256, MKS_HASH_NONE, 0, NULL, 0};
        unsigned char sig2[256];
        size_t siglen2 = sizeof(sig2);

        if (mks_key_sign(key, &named, hash, 32, sig2, &siglen2) != MKS_OK)
            fail_msg("PKCS1 over the hash: %s", mks_last_error());
        assert_int_equal(siglen2, siglen);
        assert_memory_equal(sig2, sig, siglen);
        named.hash = MKS_HASH_SHA224; /* no SHA-224 in the TPM */
        siglen2 = sizeof(sig2);
        assert_int_equal(mks_key_sign(key, &named, hash, 28, sig2, &siglen2), MKS_ERR_UNSUPPORTED);
        named.hash = MKS_HASH_SHA384;
        siglen2 = sizeof(sig2);
        assert_int_equal(mks_key_sign(key, &named, hash, 32, sig2, &siglen2), MKS_ERR_ARG);
    }

    c = EVP_PKEY_CTX_new(pk, NULL);
    assert_int_equal(EVP_PKEY_encrypt_init(c), 1);
    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256());
    EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256());
    assert_int_equal(EVP_PKEY_encrypt(c, ct, &ctlen, (const unsigned char *)"tpm!", 4), 1);
    EVP_PKEY_CTX_free(c);
    if (mks_key_decrypt(key, &oaep, ct, ctlen, pt, &ptlen) != MKS_OK)
        fail_msg("OAEP: %s", mks_last_error());
    assert_int_equal(ptlen, 4);
    assert_memory_equal(pt, "tpm!", 4);

    EVP_PKEY_free(pk);
    mks_key_free(key);
    free(pem);
    mks_ctx_free(ctx);
}

static void test_persistent(void **state)
{
    mks_ctx *ctx = new_ctx();
    mks_tpm_keygen_params kp = {{MKS_KEY_EC, 0, "P-384", NULL}, NULL, 0, 0x81000123};
    mks_key *key = NULL, *again = NULL;
    mks_tpm_persistent *list = NULL;
    char *pem = NULL;
    size_t pem_len, n = 0, i, siglen = 96;
    unsigned char hash[48] = {3}, sig[96];
    mks_mech_params mp = {MKS_MECH_ECDSA};
    int found = 0;

    if (mks_tpm_keygen(ctx, &kp, &pem, &pem_len, &key) != MKS_OK)
        fail_msg("keygen: %s", mks_last_error());
    assert_string_equal(mks_key_get0_uri(key), "tpmkey:handle=0x81000123");
    /* The handle is taken now. */
    free(pem);
    assert_int_equal(mks_tpm_keygen(ctx, &kp, &pem, &pem_len, &again), MKS_ERR_EXISTS);
    assert_non_null(strstr(mks_last_error(), "0x81000123"));

    assert_int_equal(mks_tpm_key_open_uri(ctx, "tpmkey:handle=0x81000123", NULL, &again), MKS_OK);
    assert_int_equal(mks_key_sign(again, &mp, hash, 48, sig, &siglen), MKS_OK);
    assert_int_equal(mks_tpm_list_persistent(ctx, &list, &n), MKS_OK);
    for (i = 0; i < n; i++)
        if (list[i].handle == 0x81000123) {
            found = 1;
            assert_string_equal(list[i].curve, "P-384");
        }
    assert_true(found);
    free(list);
    mks_key_free(again);
    again = NULL;

    assert_int_equal(mks_key_destroy(key), MKS_OK);
    assert_int_equal(mks_tpm_key_open_uri(ctx, "tpmkey:handle=0x81000123", NULL, &again),
                     MKS_ERR_NOT_FOUND);
    assert_int_equal(mks_tpm_key_open_uri(ctx, "tpmkey:handle=0x1234", NULL, &again), MKS_ERR_ARG);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static int give_password(char *buf, size_t size, size_t *len, const char *what, void *arg)
{
    const char *pw = arg;

    snprintf(buf, size, "%s", pw);
    *len = strlen(pw);
    return 1;
}

static void test_password(void **state)
{
    mks_ctx *ctx = new_ctx();
    mks_tpm_keygen_params kp = {{MKS_KEY_EC, 0, "P-256", NULL}, "s3cret", 6, 0};
    mks_key *key = NULL, *wrong = NULL, *right = NULL;
    char *pem = NULL;
    unsigned char *der = NULL, hash[32] = {5}, sig[64];
    long derlen = 0;
    size_t pem_len, siglen = 64;
    mks_mech_params mp = {MKS_MECH_ECDSA};
    mks_pin_ui bad = {give_password, "guess"}, good = {give_password, "s3cret"};

    if (mks_tpm_keygen(ctx, &kp, &pem, &pem_len, &key) != MKS_OK)
        fail_msg("keygen: %s", mks_last_error());
    assert_true(pem_to_der(pem, &der, &derlen));
    /* Without a password source the file is refused up front. */
    assert_int_equal(mks_tpm_key_open_der(ctx, der, (size_t)derlen, NULL, &wrong),
                     MKS_ERR_PIN_REQUIRED);
    assert_int_equal(mks_tpm_key_open_der(ctx, der, (size_t)derlen, &bad, &wrong), MKS_OK);
    assert_int_equal(mks_key_sign(wrong, &mp, hash, 32, sig, &siglen), MKS_ERR_PIN_INCORRECT);
    assert_non_null(strstr(mks_last_error(), "password"));
    assert_null(strstr(mks_last_error(), "guess"));
    assert_int_equal(mks_tpm_key_open_der(ctx, der, (size_t)derlen, &good, &right), MKS_OK);
    siglen = sizeof(sig);
    if (mks_key_sign(right, &mp, hash, 32, sig, &siglen) != MKS_OK)
        fail_msg("sign with the right password: %s", mks_last_error());
    /* One failure counts toward swtpm's lockout; clear it for later runs. */
    assert_int_equal(system("tpm2_dictionarylockout -c -T \"$MTLSKS_TEST_TCTI\" >/dev/null 2>&1 "
                            "|| true"),
                     0);
    OPENSSL_free(der);
    mks_key_free(right);
    mks_key_free(wrong);
    mks_key_free(key);
    free(pem);
    mks_ctx_free(ctx);
}

static void test_fork_child_signs(void **state)
{
    mks_ctx *ctx = new_ctx();
    mks_tpm_keygen_params kp = {{MKS_KEY_EC, 0, "P-256", NULL}, NULL, 0, 0};
    mks_key *key = NULL;
    char *pem = NULL;
    size_t pem_len, siglen = 64;
    unsigned char hash[32] = {1}, sig[64];
    mks_mech_params mp = {MKS_MECH_ECDSA};
    pid_t pid;
    int status = 0;

    assert_int_equal(mks_tpm_keygen(ctx, &kp, &pem, &pem_len, &key), MKS_OK);
    assert_int_equal(mks_key_sign(key, &mp, hash, 32, sig, &siglen), MKS_OK);
    pid = fork();
    if (pid == 0) {
        int i, ok = 1;
        for (i = 0; i < 10 && ok; i++) {
            siglen = sizeof(sig);
            ok = mks_key_sign(key, &mp, hash, 32, sig, &siglen) == MKS_OK;
        }
        if (!ok)
            fprintf(stderr, "child: %s\n", mks_last_error());
        mks_key_free(key); /* flushes the child's own copy of the key */
        mks_ctx_free(ctx);
        free(pem);
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    siglen = sizeof(sig);
    assert_int_equal(mks_key_sign(key, &mp, hash, 32, sig, &siglen), MKS_OK);
    mks_key_free(key);
    free(pem);
    mks_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ec_key_file),      cmocka_unit_test(test_commands_by_policy),
        cmocka_unit_test(test_bad_settings),     cmocka_unit_test(test_rsa_pss_pkcs1_decrypt),
        cmocka_unit_test(test_persistent),       cmocka_unit_test(test_password),
        cmocka_unit_test(test_fork_child_signs),
    };

    if (system("command -v swtpm >/dev/null 2>&1") != 0) {
        printf("SKIP: swtpm is not installed (Debian package swtpm)\n");
        return 77;
    }
    setenv("TSS2_LOG", "all+none", 1);
    return cmocka_run_group_tests(tests, start_swtpm, stop_swtpm);
}
