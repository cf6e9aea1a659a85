/*
 * The keystore against a real SoftHSM token made in a temp dir: slots, key
 * generation, signing and decryption checked with OpenSSL, certificates,
 * PIN handling, key reference files and fork().
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
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <mtlsks/keystore.h>

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

static char dir[256];
static char pin_source[320];
static char token_uri[512];

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static int make_token(void **state)
{
    char path[300], conf[600], cmd[1024];

    snprintf(dir, sizeof(dir), "/tmp/mtlsks-unit-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/tokens", dir);
    mkdir(path, 0700);
    snprintf(conf, sizeof(conf),
             "directories.tokendir = %s/tokens\nobjectstore.backend = file\n"
             "log.level = ERROR\n",
             dir);
    snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
    write_file(path, conf, 0600);
    setenv("SOFTHSM2_CONF", path, 1);
    snprintf(cmd, sizeof(cmd),
             "softhsm2-util --init-token --free --label ks-unit --pin 1234 --so-pin 5678 "
             ">/dev/null");
    if (system(cmd) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/pin", dir);
    write_file(path, "1234\n", 0600);
    snprintf(pin_source, sizeof(pin_source), "file:%s", path);
    snprintf(path, sizeof(path), "%s/wrong-pin", dir);
    write_file(path, "9999\n", 0600);
    return 0;
}

static int remove_token(void **state)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static mks_ctx *new_ctx(const char *pin)
{
    mks_config cfg = {.pkcs11_module = SOFTHSM_MODULE, .pin_source = pin};
    mks_ctx *ctx = NULL;

    assert_int_equal(mks_ctx_new(&cfg, &ctx), MKS_OK);
    return ctx;
}

static EVP_PKEY *pubkey_of(const mks_key *key)
{
    size_t len;
    const unsigned char *der = mks_key_get0_spki(key, &len);
    EVP_PKEY *pk = d2i_PUBKEY(NULL, &der, (long)len);

    assert_non_null(pk);
    return pk;
}

static void test_slots_and_token(void **state)
{
    mks_ctx *ctx = new_ctx(NULL);
    mks_slot_info *slots = NULL;
    size_t n = 0, i;
    int found = 0;

    assert_int_equal(mks_slots_list(ctx, &slots, &n), MKS_OK);
    for (i = 0; i < n; i++) {
        if (strcmp(slots[i].token_label, "ks-unit") == 0) {
            assert_int_equal(slots[i].index, 0);
            assert_non_null(slots[i].token_uri);
            assert_non_null(strstr(slots[i].token_uri, "token=ks-unit"));
            snprintf(token_uri, sizeof(token_uri), "%s", slots[i].token_uri);
            found = 1;
        } else {
            /* SoftHSM's spare slot holds an uninitialised token: not usable. */
            assert_int_equal(slots[i].index, -1);
        }
    }
    assert_true(found);
    mks_slots_free(slots, n);
    mks_ctx_free(ctx);
}

static mks_key *gen(mks_ctx *ctx, mks_key_type t, int bits, const char *curve, const char *label)
{
    mks_keygen_params kp = {t, bits, curve, label};
    mks_key *key = NULL;
    mks_rv rv = mks_keygen(ctx, token_uri, &kp, NULL, &key);

    if (rv != MKS_OK)
        fail_msg("keygen %s: %s", label, mks_last_error());
    return key;
}

/* The URI a key reports is the one mks_uri_object builds from its parts. */
static void uri_names_key(const mks_key *key, const char *label)
{
    mks_uri_parts parts;
    const unsigned char *id;
    size_t idlen;
    char *uri = NULL;

    assert_int_equal(mks_uri_parse(mks_key_get0_uri(key), &parts), MKS_OK);
    assert_string_equal(parts.label, label);
    assert_string_equal(parts.token_label, "ks-unit");
    assert_int_equal(parts.cls, MKS_OBJ_PRIVATE_KEY);
    id = mks_key_get0_id(key, &idlen);
    assert_int_equal(parts.id_len, idlen);
    assert_memory_equal(parts.id, id, idlen);
    assert_string_equal(parts.token_uri, token_uri);
    assert_int_equal(mks_uri_object(parts.token_uri, label, id, idlen, MKS_OBJ_PRIVATE_KEY, &uri),
                     MKS_OK);
    assert_string_equal(uri, mks_key_get0_uri(key));
    mks_free(uri);
    mks_uri_parts_clear(&parts);
}

static void test_keygen_ec_sign(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = gen(ctx, MKS_KEY_EC, 0, "P-256", "ec-one"), *again = NULL;
    mks_mech_params mp = {MKS_MECH_ECDSA};
    unsigned char hash[32], sig[64], der[80], *p = der;
    size_t siglen = sizeof(sig), idlen;
    ECDSA_SIG *es = ECDSA_SIG_new();
    EVP_PKEY *pk = pubkey_of(key);
    EVP_PKEY_CTX *vctx = EVP_PKEY_CTX_new(pk, NULL);
    int derlen;

    assert_int_equal(mks_key_get_type(key), MKS_KEY_EC);
    assert_string_equal(mks_key_get0_curve(key), "P-256");
    assert_int_equal(mks_key_get_bits(key), 256);
    assert_non_null(mks_key_get0_id(key, &idlen));
    assert_int_equal(idlen, 20);
    assert_non_null(strstr(mks_key_get0_uri(key), "object=ec-one"));
    assert_non_null(strstr(mks_key_get0_uri(key), "type=private"));
    assert_int_equal(mks_key_backend(key), MKS_BACKEND_PKCS11);
    uri_names_key(key, "ec-one");

    memset(hash, 0x5a, sizeof(hash));
    assert_int_equal(mks_key_sign(key, &mp, hash, sizeof(hash), sig, &siglen), MKS_OK);
    assert_int_equal(siglen, 64);
    ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
    derlen = i2d_ECDSA_SIG(es, &p);
    assert_true(EVP_PKEY_verify_init(vctx) == 1);
    assert_int_equal(EVP_PKEY_verify(vctx, der, (size_t)derlen, hash, sizeof(hash)), 1);
    hash[0] ^= 1;
    assert_int_not_equal(EVP_PKEY_verify(vctx, der, (size_t)derlen, hash, sizeof(hash)), 1);

    /* The same key, opened again by the URI it reports. */
    assert_int_equal(mks_key_open(ctx, mks_key_get0_uri(key), NULL, &again), MKS_OK);
    assert_string_equal(mks_key_get0_uri(again), mks_key_get0_uri(key));

    ECDSA_SIG_free(es);
    EVP_PKEY_CTX_free(vctx);
    EVP_PKEY_free(pk);
    mks_key_free(again);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_label_exists(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", "ec-one"};
    mks_key *key = NULL;

    assert_int_equal(mks_keygen(ctx, token_uri, &kp, NULL, &key), MKS_ERR_EXISTS);
    assert_null(key);
    assert_non_null(strstr(mks_last_error(), "ec-one"));
    mks_ctx_free(ctx);
}

static void test_rsa_sign_decrypt(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = gen(ctx, MKS_KEY_RSA, 2048, NULL, "rsa-one");
    EVP_PKEY *pk = pubkey_of(key);
    EVP_PKEY_CTX *pctx;
    unsigned char hash[32], sig[256], ct[256], pt[256];
    size_t siglen = sizeof(sig), ctlen = sizeof(ct), ptlen = sizeof(pt);
    mks_mech_params pss = {MKS_MECH_RSA_PSS, MKS_HASH_SHA256, MKS_HASH_SHA256, 32, NULL, 0};
    /* SoftHSM 2.6 decrypts OAEP with SHA-1 only. */
    mks_mech_params oaep = {MKS_MECH_RSA_OAEP, MKS_HASH_SHA1, MKS_HASH_SHA1, 0, NULL, 0};

    assert_int_equal(mks_key_get_bits(key), 2048);
    assert_true(mks_key_can_decrypt(key));
    memset(hash, 0x33, sizeof(hash));
    assert_int_equal(mks_key_sign(key, &pss, hash, sizeof(hash), sig, &siglen), MKS_OK);
    assert_int_equal(siglen, 256);
    pctx = EVP_PKEY_CTX_new(pk, NULL);
    assert_int_equal(EVP_PKEY_verify_init(pctx), 1);
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
    EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256());
    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32);
    assert_int_equal(EVP_PKEY_verify(pctx, sig, siglen, hash, sizeof(hash)), 1);
    EVP_PKEY_CTX_free(pctx);

    pctx = EVP_PKEY_CTX_new(pk, NULL);
    assert_int_equal(EVP_PKEY_encrypt_init(pctx), 1);
    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha1());
    EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha1());
    assert_int_equal(EVP_PKEY_encrypt(pctx, ct, &ctlen, (const unsigned char *)"secret", 6), 1);
    EVP_PKEY_CTX_free(pctx);
    if (mks_key_decrypt(key, &oaep, ct, ctlen, pt, &ptlen) != MKS_OK)
        fail_msg("OAEP decrypt: %s", mks_last_error());
    assert_int_equal(ptlen, 6);
    assert_memory_equal(pt, "secret", 6);

    EVP_PKEY_free(pk);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

/* PKCS#1 v1.5 takes the hash and names its digest; the keystore signs the
 * DigestInfo. The same DigestInfo built by the caller (no hash named) gives
 * the same signature: PKCS#1 v1.5 is deterministic. */
static void test_rsa_pkcs1_over_hash(void **state)
{
    static const struct {
        mks_hash hash;
        const char *md;
        size_t len;
    } cases[] = {
        {MKS_HASH_SHA1, "SHA1", 20},     {MKS_HASH_SHA224, "SHA224", 28},
        {MKS_HASH_SHA256, "SHA256", 32}, {MKS_HASH_SHA384, "SHA384", 48},
        {MKS_HASH_SHA512, "SHA512", 64},
    };
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = NULL;
    EVP_PKEY *pk;
    size_t i;

    assert_int_equal(
        mks_key_open(ctx, "pkcs11:token=ks-unit;object=rsa-one;type=private", NULL, &key), MKS_OK);
    pk = pubkey_of(key);
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mks_mech_params mp = {MKS_MECH_RSA_PKCS1, cases[i].hash, MKS_HASH_NONE, 0, NULL, 0};
        mks_mech_params raw = {MKS_MECH_RSA_PKCS1, MKS_HASH_NONE, MKS_HASH_NONE, 0, NULL, 0};
        unsigned char hash[64], sig[256], sig2[256], *di = NULL;
        size_t siglen = sizeof(sig), siglen2 = sizeof(sig2);
        X509_SIG *xs = X509_SIG_new();
        X509_ALGOR *alg;
        ASN1_OCTET_STRING *digest;
        EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(pk, NULL);
        int dilen;

        memset(hash, (int)i + 1, sizeof(hash));
        if (mks_key_sign(key, &mp, hash, cases[i].len, sig, &siglen) != MKS_OK)
            fail_msg("%s: %s", cases[i].md, mks_last_error());
        assert_int_equal(EVP_PKEY_verify_init(pctx), 1);
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING);
        EVP_PKEY_CTX_set_signature_md(pctx, EVP_get_digestbyname(cases[i].md));
        assert_int_equal(EVP_PKEY_verify(pctx, sig, siglen, hash, cases[i].len), 1);
        EVP_PKEY_CTX_free(pctx);

        /* OpenSSL's own DigestInfo, signed as it is. */
        X509_SIG_getm(xs, &alg, &digest);
        X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(EVP_get_digestbyname(cases[i].md))),
                        V_ASN1_NULL, NULL);
        ASN1_OCTET_STRING_set(digest, hash, (int)cases[i].len);
        dilen = i2d_X509_SIG(xs, &di);
        assert_true(dilen > 0);
        assert_int_equal(mks_key_sign(key, &raw, di, (size_t)dilen, sig2, &siglen2), MKS_OK);
        assert_int_equal(siglen2, siglen);
        assert_memory_equal(sig2, sig, siglen);
        OPENSSL_free(di);
        X509_SIG_free(xs);

        /* A hash of another size than the digest named is refused. */
        siglen = sizeof(sig);
        assert_int_equal(mks_key_sign(key, &mp, hash, cases[i].len - 1, sig, &siglen), MKS_ERR_ARG);
    }
    EVP_PKEY_free(pk);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_find_objects_and_sensitivity(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_object *objs = NULL;
    size_t n = 0, i;
    int priv = 0, pub = 0;

    assert_int_equal(
        mks_objects_find(ctx, "pkcs11:token=ks-unit;object=ec-one", MKS_OBJ_ANY, NULL, &objs, &n),
        MKS_OK);
    for (i = 0; i < n; i++) {
        if (objs[i].cls == MKS_OBJ_PRIVATE_KEY) {
            priv++;
            assert_int_equal(objs[i].sensitive, 1);
            assert_int_equal(objs[i].extractable, 0);
            assert_non_null(objs[i].der); /* public half known via the public object */
        } else if (objs[i].cls == MKS_OBJ_PUBLIC_KEY) {
            pub++;
        }
        assert_string_equal(objs[i].curve, "P-256");
    }
    assert_int_equal(priv, 1);
    assert_int_equal(pub, 1);
    mks_objects_free(objs, n);

    /* Without a PIN, only public objects are listed. */
    mks_ctx_free(ctx);
    ctx = new_ctx(NULL);
    assert_int_equal(
        mks_objects_find(ctx, "pkcs11:token=ks-unit;object=ec-one", MKS_OBJ_ANY, NULL, &objs, &n),
        MKS_OK);
    for (i = 0; i < n; i++)
        assert_int_not_equal(objs[i].cls, MKS_OBJ_PRIVATE_KEY);
    mks_objects_free(objs, n);
    assert_int_equal(mks_objects_find(ctx, "pkcs11:token=ks-unit;type=private", MKS_OBJ_PRIVATE_KEY,
                                      NULL, &objs, &n),
                     MKS_ERR_PIN_REQUIRED);
    mks_ctx_free(ctx);
}

static void test_bad_uris(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = NULL;

    assert_int_equal(mks_key_open(ctx, "http://x", NULL, &key), MKS_ERR_ARG);
    assert_int_equal(mks_key_open(ctx, "pkcs11:id=%zz", NULL, &key), MKS_ERR_ARG);
    assert_non_null(strstr(mks_last_error(), "malformed"));
    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit;object=nope", NULL, &key),
                     MKS_ERR_NOT_FOUND);
    assert_int_equal(mks_key_open(ctx, "pkcs11:token=no-such-token", NULL, &key),
                     MKS_ERR_NOT_FOUND);
    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit", NULL, &key), MKS_ERR_AMBIGUOUS);
    assert_null(key);
    mks_ctx_free(ctx);
}

static void test_wrong_pin_tried_once(void **state)
{
    char src[320];
    mks_ctx *ctx;
    mks_key *key = NULL;
    unsigned long before;

    snprintf(src, sizeof(src), "file:%s/wrong-pin", dir);
    ctx = new_ctx(src);
    before = mks_pkcs11_call_count("C_Login");
    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit", NULL, &key), MKS_ERR_PIN_INCORRECT);
    assert_int_equal(mks_pkcs11_call_count("C_Login"), before + 1);
    assert_non_null(strstr(mks_last_error(), "CKR_PIN_INCORRECT"));
    assert_null(strstr(mks_last_error(), "9999"));
    /* A second attempt fails without reaching the token. */
    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit", NULL, &key), MKS_ERR_PIN_INCORRECT);
    assert_int_equal(mks_pkcs11_call_count("C_Login"), before + 1);
    mks_ctx_free(ctx);
}

static void test_steady_state_sign_costs_two_calls(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = NULL;
    mks_mech_params mp = {MKS_MECH_ECDSA};
    unsigned char hash[32] = {1}, sig[64];
    size_t siglen = sizeof(sig);
    unsigned long si, s, f, o, l;
    int i;

    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit;object=ec-one", NULL, &key), MKS_OK);
    assert_int_equal(mks_key_sign(key, &mp, hash, 32, sig, &siglen), MKS_OK);
    si = mks_pkcs11_call_count("C_SignInit");
    s = mks_pkcs11_call_count("C_Sign");
    f = mks_pkcs11_call_count("C_FindObjectsInit");
    o = mks_pkcs11_call_count("C_OpenSession");
    l = mks_pkcs11_call_count("C_Login");
    for (i = 0; i < 10; i++) {
        siglen = sizeof(sig);
        assert_int_equal(mks_key_sign(key, &mp, hash, 32, sig, &siglen), MKS_OK);
    }
    assert_int_equal(mks_pkcs11_call_count("C_SignInit"), si + 10);
    assert_int_equal(mks_pkcs11_call_count("C_Sign"), s + 10);
    assert_int_equal(mks_pkcs11_call_count("C_FindObjectsInit"), f);
    assert_int_equal(mks_pkcs11_call_count("C_OpenSession"), o);
    assert_int_equal(mks_pkcs11_call_count("C_Login"), l);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_fork_child_signs(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = NULL;
    mks_mech_params mp = {MKS_MECH_ECDSA};
    unsigned char hash[32] = {2}, sig[64];
    size_t siglen = sizeof(sig);
    pid_t pid;
    int status = 0;

    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit;object=ec-one", NULL, &key), MKS_OK);
    assert_int_equal(mks_key_sign(key, &mp, hash, 32, sig, &siglen), MKS_OK);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int i, ok = 1;
        for (i = 0; i < 20 && ok; i++) {
            siglen = sizeof(sig);
            ok = mks_key_sign(key, &mp, hash, 32, sig, &siglen) == MKS_OK;
        }
        if (!ok)
            fprintf(stderr, "child: %s\n", mks_last_error());
        _exit(ok ? 0 : 1);
    }
    siglen = sizeof(sig);
    assert_int_equal(mks_key_sign(key, &mp, hash, 32, sig, &siglen), MKS_OK);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    siglen = sizeof(sig);
    assert_int_equal(mks_key_sign(key, &mp, hash, 32, sig, &siglen), MKS_OK);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_cert_import(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = NULL, *other = NULL;
    EVP_PKEY *pk, *foreign;
    X509 *x = X509_new();
    unsigned char *der = NULL;
    int derlen;
    mks_object *objs = NULL;
    size_t n = 0;

    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit;object=ec-one", NULL, &key), MKS_OK);
    pk = pubkey_of(key);
    /* A certificate for the token key, signed by a software CA key. */
    foreign = EVP_EC_gen("P-256");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"ec-one", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_sign(x, foreign, EVP_sha256());
    derlen = i2d_X509(x, &der);
    assert_true(derlen > 0);
    assert_int_equal(mks_cert_import(key, "ec-one", der, (size_t)derlen), MKS_OK);
    /* Importing it again is harmless. */
    assert_int_equal(mks_cert_import(key, "ec-one", der, (size_t)derlen), MKS_OK);
    assert_int_equal(mks_objects_find(ctx, "pkcs11:token=ks-unit;object=ec-one;type=cert",
                                      MKS_OBJ_ANY, NULL, &objs, &n),
                     MKS_OK);
    assert_int_equal(n, 1);
    assert_int_equal(objs[0].der_len, (size_t)derlen);
    mks_objects_free(objs, n);
    OPENSSL_free(der);
    der = NULL;

    /* The same certificate, offered for another key, is refused. */
    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit;object=rsa-one", NULL, &other),
                     MKS_OK);
    derlen = i2d_X509(x, &der);
    assert_int_equal(mks_cert_import(other, "rsa-one", der, (size_t)derlen), MKS_ERR_MISMATCH);
    assert_non_null(strstr(mks_last_error(), "rsa-one"));

    OPENSSL_free(der);
    X509_free(x);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(foreign);
    mks_key_free(other);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_destroy(void **state)
{
    mks_ctx *ctx = new_ctx(pin_source);
    mks_key *key = gen(ctx, MKS_KEY_EC, 0, "P-384", "doomed"), *again = NULL;

    assert_string_equal(mks_key_get0_curve(key), "P-384");
    assert_int_equal(mks_key_destroy(key), MKS_OK);
    assert_int_equal(mks_key_open(ctx, "pkcs11:token=ks-unit;object=doomed", NULL, &again),
                     MKS_ERR_NOT_FOUND);
    mks_key_free(key);
    mks_ctx_free(ctx);
}

static void test_keyref_round_trip(void **state)
{
    const char *uri = "pkcs11:token=ks-unit;id=%01%02;object=web;type=private";
    char *pem = NULL, *back = NULL;
    size_t len = 0;
    BIO *b;
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long derlen = 0;

    assert_int_equal(mks_keyref_encode_pem(uri, &pem, &len), MKS_OK);
    assert_non_null(strstr(pem, "-----BEGIN PKCS#11 PROVIDER URI-----"));
    b = BIO_new_mem_buf(pem, (int)len);
    assert_int_equal(PEM_read_bio(b, &name, &header, &der, &derlen), 1);
    assert_string_equal(name, MKS_KEYREF_PEM_LABEL);
    assert_int_equal(mks_keyref_decode_der(der, (size_t)derlen, &back), MKS_OK);
    assert_string_equal(back, uri);
    /* Truncated, or with trailing bytes: refused. */
    free(back);
    back = NULL;
    assert_int_equal(mks_keyref_decode_der(der, (size_t)derlen - 1, &back), MKS_ERR_ARG);
    assert_null(back);
    assert_int_equal(mks_keyref_encode_pem("file:///etc/passwd", &pem, &len) == MKS_OK, 0);
    BIO_free(b);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    free(pem);
}

static void test_pin_from_source(void **state)
{
    char buf[64];
    size_t len = 0;

    assert_int_equal(mks_pin_from_source(pin_source, buf, sizeof(buf), &len), MKS_OK);
    assert_int_equal(len, 4);
    assert_string_equal(buf, "1234");
    assert_int_equal(mks_pin_from_source("file:/nonexistent/pin", buf, sizeof(buf), &len),
                     MKS_ERR_IO);
    assert_non_null(strstr(mks_last_error(), "/nonexistent/pin"));
    assert_int_equal(mks_pin_from_source("env:PIN", buf, sizeof(buf), &len), MKS_ERR_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_and_token),
        /* First: a token logged in by an earlier test would accept any PIN. */
        cmocka_unit_test(test_wrong_pin_tried_once),
        cmocka_unit_test(test_keygen_ec_sign),
        cmocka_unit_test(test_label_exists),
        cmocka_unit_test(test_rsa_sign_decrypt),
        cmocka_unit_test(test_rsa_pkcs1_over_hash),
        cmocka_unit_test(test_find_objects_and_sensitivity),
        cmocka_unit_test(test_bad_uris),
        cmocka_unit_test(test_steady_state_sign_costs_two_calls),
        cmocka_unit_test(test_fork_child_signs),
        cmocka_unit_test(test_cert_import),
        cmocka_unit_test(test_destroy),
        cmocka_unit_test(test_keyref_round_trip),
        cmocka_unit_test(test_pin_from_source),
    };

    if (access(SOFTHSM_MODULE, R_OK) != 0) {
        printf("SKIP: %s missing (install softhsm2)\n", SOFTHSM_MODULE);
        return 77;
    }
    return cmocka_run_group_tests(tests, make_token, remove_token);
}
