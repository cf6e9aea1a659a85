/*
 * ASYM_CIPHER "RSA": decryption in hardware (PKCS#1 v1.5 and OAEP, and the
 * TLS 1.2 RSA key exchange variant), encryption with the public half in
 * software.
 */
#include "prov.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#define TLS_PREMASTER_LEN 48

enum { OP_NONE, OP_ENCRYPT, OP_DECRYPT };

typedef struct mks_cipherctx {
    mks_prov *prov;
    mks_keyobj *key;
    int op;
    int pad;         /* RSA_PKCS1_PADDING, RSA_PKCS1_OAEP_PADDING, RSA_PKCS1_WITH_TLS_PADDING */
    EVP_MD *oaep_md; /* NULL: SHA-1, OAEP's default */
    EVP_MD *mgf1_md; /* NULL: the OAEP digest */
    unsigned char *label;
    size_t label_len;
    unsigned int client_version;
    unsigned int negotiated_version;
} mks_cipherctx;

static OSSL_FUNC_asym_cipher_newctx_fn mks_rsa_cipher_newctx;
static OSSL_FUNC_asym_cipher_freectx_fn mks_rsa_cipher_freectx;
static OSSL_FUNC_asym_cipher_dupctx_fn mks_rsa_cipher_dupctx;
static OSSL_FUNC_asym_cipher_encrypt_init_fn mks_rsa_cipher_encrypt_init;
static OSSL_FUNC_asym_cipher_encrypt_fn mks_rsa_cipher_encrypt;
static OSSL_FUNC_asym_cipher_decrypt_init_fn mks_rsa_cipher_decrypt_init;
static OSSL_FUNC_asym_cipher_decrypt_fn mks_rsa_cipher_decrypt;
static OSSL_FUNC_asym_cipher_get_ctx_params_fn mks_rsa_cipher_get_ctx_params;
static OSSL_FUNC_asym_cipher_gettable_ctx_params_fn mks_rsa_cipher_gettable_ctx_params;
static OSSL_FUNC_asym_cipher_set_ctx_params_fn mks_rsa_cipher_set_ctx_params;
static OSSL_FUNC_asym_cipher_settable_ctx_params_fn mks_rsa_cipher_settable_ctx_params;

static void *mks_rsa_cipher_newctx(void *provctx)
{
    mks_cipherctx *c = OPENSSL_zalloc(sizeof(*c));

    if (c == NULL) {
        mks_raise(provctx, MKS_R_NOMEM, "cannot allocate a cipher context");
        return NULL;
    }
    c->prov = provctx;
    c->pad = RSA_PKCS1_PADDING;
    return c;
}

static void mks_rsa_cipher_freectx(void *ctx)
{
    mks_cipherctx *c = ctx;

    if (c == NULL)
        return;
    mks_keyobj_free(c->key);
    EVP_MD_free(c->oaep_md);
    EVP_MD_free(c->mgf1_md);
    OPENSSL_clear_free(c->label, c->label_len);
    OPENSSL_clear_free(c, sizeof(*c));
}

static void *mks_rsa_cipher_dupctx(void *ctx)
{
    const mks_cipherctx *src = ctx;
    mks_cipherctx *c = OPENSSL_memdup(src, sizeof(*src));

    if (c == NULL)
        goto fail;
    c->key = NULL;
    c->oaep_md = c->mgf1_md = NULL;
    c->label = NULL;
    if (src->label != NULL && (c->label = OPENSSL_memdup(src->label, src->label_len)) == NULL)
        goto fail;
    if (src->oaep_md != NULL && !EVP_MD_up_ref(src->oaep_md))
        goto fail;
    c->oaep_md = src->oaep_md;
    if (src->mgf1_md != NULL && !EVP_MD_up_ref(src->mgf1_md))
        goto fail;
    c->mgf1_md = src->mgf1_md;
    c->key = mks_keyobj_up_ref(src->key);
    return c;
fail:
    mks_rsa_cipher_freectx(c);
    mks_raise(src->prov, MKS_R_NOMEM, "cannot duplicate a cipher context");
    return NULL;
}

/* ---- parameters ----------------------------------------------------------------- */

static int set_digest(mks_cipherctx *c, const OSSL_PARAM *p, EVP_MD **slot)
{
    const char *name = NULL;
    EVP_MD *md;

    if (!OSSL_PARAM_get_utf8_string_ptr(p, &name)) {
        mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "bad '%s' parameter", p->key);
        return 0;
    }
    /* Digest properties are meant for the caller's library context; the
     * private one has only the default provider. */
    md = mks_md_fetch(c->prov, name, NULL);
    if (md == NULL)
        return 0;
    if (mks_md_to_hash(md) == MKS_HASH_NONE) {
        mks_raise(c->prov, MKS_R_UNSUPPORTED, "digest %s is not supported for OAEP", name);
        EVP_MD_free(md);
        return 0;
    }
    EVP_MD_free(*slot);
    *slot = md;
    return 1;
}

static int mks_rsa_cipher_set_ctx_params(void *ctx, const OSSL_PARAM params[])
{
    mks_cipherctx *c = ctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE);
    if (p != NULL) {
        const char *s = NULL;
        int pad = -1;

        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
                return 0;
            if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
                pad = RSA_PKCS1_PADDING;
            else if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_OAEP) == 0)
                pad = RSA_PKCS1_OAEP_PADDING;
        } else if (!OSSL_PARAM_get_int(p, &pad)) {
            return 0;
        }
        if (pad != RSA_PKCS1_PADDING && pad != RSA_PKCS1_OAEP_PADDING &&
            pad != RSA_PKCS1_WITH_TLS_PADDING) {
            mks_raise(c->prov, MKS_R_UNSUPPORTED,
                      "RSA decryption supports pad-mode pkcs1 and oaep only (got %s)",
                      s != NULL ? s : "a number");
            return 0;
        }
        c->pad = pad;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST);
    if (p != NULL && !set_digest(c, p, &c->oaep_md))
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST);
    if (p != NULL && !set_digest(c, p, &c->mgf1_md))
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL);
    if (p != NULL) {
        void *label = NULL;
        size_t len = 0;

        if (!OSSL_PARAM_get_octet_string(p, &label, 0, &len)) {
            mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "bad OAEP label");
            return 0;
        }
        OPENSSL_clear_free(c->label, c->label_len);
        c->label = label;
        c->label_len = len;
    }
    p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION);
    if (p != NULL && !OSSL_PARAM_get_uint(p, &c->client_version))
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION);
    if (p != NULL && !OSSL_PARAM_get_uint(p, &c->negotiated_version))
        return 0;
    return 1;
}

static const OSSL_PARAM cipher_settable[] = {
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST_PROPS, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST_PROPS, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, NULL),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, NULL),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *mks_rsa_cipher_settable_ctx_params(void *ctx, void *provctx)
{
    return cipher_settable;
}

static const EVP_MD *oaep_md(const mks_cipherctx *c)
{
    return c->oaep_md != NULL ? c->oaep_md : c->prov->md[MKS_MD_SHA1];
}

static int mks_rsa_cipher_get_ctx_params(void *ctx, OSSL_PARAM params[])
{
    mks_cipherctx *c = ctx;
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_PAD_MODE);
    if (p != NULL) {
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            const char *s = c->pad == RSA_PKCS1_OAEP_PADDING ? OSSL_PKEY_RSA_PAD_MODE_OAEP
                                                             : OSSL_PKEY_RSA_PAD_MODE_PKCSV15;

            if (!OSSL_PARAM_set_utf8_string(p, s))
                return 0;
        } else if (!OSSL_PARAM_set_int(p, c->pad)) {
            return 0;
        }
    }
    p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST);
    if (p != NULL && !OSSL_PARAM_set_utf8_string(p, EVP_MD_get0_name(oaep_md(c))))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST);
    if (p != NULL && !OSSL_PARAM_set_utf8_string(
                         p, EVP_MD_get0_name(c->mgf1_md != NULL ? c->mgf1_md : oaep_md(c))))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL);
    if (p != NULL && !OSSL_PARAM_set_octet_ptr(p, c->label, c->label_len))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION);
    if (p != NULL && !OSSL_PARAM_set_uint(p, c->client_version))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION);
    if (p != NULL && !OSSL_PARAM_set_uint(p, c->negotiated_version))
        return 0;
    return 1;
}

static const OSSL_PARAM cipher_gettable[] = {
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_octet_ptr(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, NULL),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, NULL),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *mks_rsa_cipher_gettable_ctx_params(void *ctx, void *provctx)
{
    return cipher_gettable;
}

/* ---- operations -------------------------------------------------------------------- */

static int cipher_init(mks_cipherctx *c, void *provkey, const OSSL_PARAM params[], int op)
{
    mks_keyobj *k = provkey;

    if (k != NULL) {
        if (mks_keyobj_type(k) != MKS_KEY_RSA) {
            mks_raise(c->prov, MKS_R_WRONG_KEY_TYPE, "%s is not an RSA key", mks_keyobj_name(k));
            return 0;
        }
        mks_keyobj_free(c->key);
        c->key = mks_keyobj_up_ref(k);
    }
    if (c->key == NULL) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "no key given");
        return 0;
    }
    if (!mks_keyobj_usable(c->key))
        return 0;
    if (op == OP_DECRYPT && !mks_keyobj_has_private(c->key)) {
        mks_raise(c->prov, MKS_R_NO_PRIVATE_KEY,
                  "%s has no private key in hardware to decrypt with", mks_keyobj_name(c->key));
        return 0;
    }
    c->op = op;
    c->pad = RSA_PKCS1_PADDING;
    EVP_MD_free(c->oaep_md);
    EVP_MD_free(c->mgf1_md);
    c->oaep_md = c->mgf1_md = NULL;
    OPENSSL_clear_free(c->label, c->label_len);
    c->label = NULL;
    c->label_len = 0;
    c->client_version = c->negotiated_version = 0;
    return mks_rsa_cipher_set_ctx_params(c, params);
}

static int mks_rsa_cipher_encrypt_init(void *ctx, void *provkey, const OSSL_PARAM params[])
{
    return cipher_init(ctx, provkey, params, OP_ENCRYPT);
}

static int mks_rsa_cipher_decrypt_init(void *ctx, void *provkey, const OSSL_PARAM params[])
{
    return cipher_init(ctx, provkey, params, OP_DECRYPT);
}

static int mks_rsa_cipher_encrypt(void *ctx, unsigned char *out, size_t *outlen, size_t outsize,
                                  const unsigned char *in, size_t inlen)
{
    mks_cipherctx *c = ctx;
    EVP_PKEY_CTX *e = NULL;
    unsigned char *label = NULL;
    int ok = 0;

    if (c->key == NULL || c->op != OP_ENCRYPT) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "encrypt called without encrypt init");
        return 0;
    }
    if (c->pad == RSA_PKCS1_WITH_TLS_PADDING) {
        mks_raise(c->prov, MKS_R_UNSUPPORTED, "TLS padding is for decryption only");
        return 0;
    }
    e = EVP_PKEY_CTX_new_from_pkey(c->prov->libctx, mks_keyobj_pub(c->key), NULL);
    if (e == NULL || EVP_PKEY_encrypt_init(e) != 1 || EVP_PKEY_CTX_set_rsa_padding(e, c->pad) != 1)
        goto done;
    if (c->pad == RSA_PKCS1_OAEP_PADDING) {
        if (EVP_PKEY_CTX_set_rsa_oaep_md(e, oaep_md(c)) != 1 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md(e, c->mgf1_md != NULL ? c->mgf1_md : oaep_md(c)) != 1)
            goto done;
        if (c->label != NULL) {
            label = OPENSSL_memdup(c->label, c->label_len);
            if (label == NULL || EVP_PKEY_CTX_set0_rsa_oaep_label(e, label, (int)c->label_len) != 1)
                goto done;
            label = NULL;
        }
    }
    *outlen = outsize;
    ok = EVP_PKEY_encrypt(e, out, outlen, in, inlen) == 1;
done:
    if (!ok)
        mks_raise(c->prov, MKS_R_OPENSSL, "cannot encrypt with the public half of %s",
                  mks_keyobj_name(c->key));
    OPENSSL_free(label);
    EVP_PKEY_CTX_free(e);
    return ok;
}

/*
 * TLS 1.2 RSA key exchange: whatever goes wrong with the ciphertext, answer
 * with a random premaster secret (RFC 5246, 7.4.7.1) so that no padding
 * oracle appears. Failures that do not depend on the ciphertext (no token,
 * no PIN) still fail.
 */
static int tls_premaster(mks_cipherctx *c, unsigned char *out, size_t *outlen, size_t outsize,
                         const unsigned char *in, size_t inlen, unsigned char *tmp, size_t tmplen)
{
    mks_mech_params mp = {.mech = MKS_MECH_RSA_PKCS1};
    unsigned char rnd[TLS_PREMASTER_LEN];
    size_t len = tmplen;
    unsigned int good;
    mks_rv rv;

    if (outsize < TLS_PREMASTER_LEN || c->client_version == 0) {
        mks_raise(c->prov, MKS_R_BAD_ARGUMENT,
                  "TLS decryption needs the client version and "
                  "48 bytes of room");
        return 0;
    }
    if (RAND_bytes_ex(c->prov->libctx, rnd, sizeof(rnd), 0) != 1) {
        mks_raise(c->prov, MKS_R_OPENSSL, "no random bytes");
        return 0;
    }
    ERR_set_mark();
    rv = mks_prov_key_decrypt(mks_keyobj_key(c->key), &mp, in, inlen, tmp, &len);
    ERR_pop_to_mark();
    if (rv == MKS_ERR_PIN_REQUIRED || rv == MKS_ERR_PIN_INCORRECT || rv == MKS_ERR_PIN_LOCKED ||
        rv == MKS_ERR_TOKEN_ABSENT || rv == MKS_ERR_NOMEM) {
        mks_raise_ks(c->prov, rv);
        OPENSSL_cleanse(rnd, sizeof(rnd));
        return 0;
    }
    good = rv == MKS_OK && len == TLS_PREMASTER_LEN;
    if (good) {
        unsigned int v = ((unsigned int)tmp[0] << 8) | tmp[1];

        good = v == c->client_version || (c->negotiated_version != 0 && v == c->negotiated_version);
    }
    memcpy(out, good ? tmp : rnd, TLS_PREMASTER_LEN);
    *outlen = TLS_PREMASTER_LEN;
    OPENSSL_cleanse(rnd, sizeof(rnd));
    return 1;
}

static int mks_rsa_cipher_decrypt(void *ctx, unsigned char *out, size_t *outlen, size_t outsize,
                                  const unsigned char *in, size_t inlen)
{
    mks_cipherctx *c = ctx;
    mks_mech_params mp = {.mech = MKS_MECH_RSA_PKCS1};
    unsigned char *tmp = NULL;
    size_t mod_len, len;
    mks_rv rv;
    int ok = 0;

    if (c->key == NULL || c->op != OP_DECRYPT) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "decrypt called without decrypt init");
        return 0;
    }
    mod_len = (size_t)EVP_PKEY_get_size(mks_keyobj_pub(c->key));
    if (out == NULL) {
        *outlen = c->pad == RSA_PKCS1_WITH_TLS_PADDING ? TLS_PREMASTER_LEN : mod_len;
        return 1;
    }
    /* The token writes up to the modulus size whatever the plaintext's length. */
    tmp = OPENSSL_malloc(mod_len);
    if (tmp == NULL) {
        mks_raise(c->prov, MKS_R_NOMEM, "cannot allocate %zu bytes", mod_len);
        return 0;
    }
    if (c->pad == RSA_PKCS1_WITH_TLS_PADDING) {
        ok = tls_premaster(c, out, outlen, outsize, in, inlen, tmp, mod_len);
        goto done;
    }
    if (c->pad == RSA_PKCS1_OAEP_PADDING) {
        mp.mech = MKS_MECH_RSA_OAEP;
        mp.hash = mks_md_to_hash(oaep_md(c));
        mp.mgf1_hash = mks_md_to_hash(c->mgf1_md != NULL ? c->mgf1_md : oaep_md(c));
        mp.label = c->label;
        mp.label_len = c->label_len;
    }
    len = mod_len;
    ERR_set_mark();
    rv = mks_prov_key_decrypt(mks_keyobj_key(c->key), &mp, in, inlen, tmp, &len);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        mks_raise_ks(c->prov, rv);
        goto done;
    }
    if (len > outsize) {
        mks_raise(c->prov, MKS_R_BUFFER_TOO_SMALL, "plaintext of %zu bytes, room for %zu", len,
                  outsize);
        goto done;
    }
    memcpy(out, tmp, len);
    *outlen = len;
    ok = 1;
done:
    OPENSSL_clear_free(tmp, mod_len);
    return ok;
}

const OSSL_DISPATCH mks_rsa_asym_cipher_functions[] = {
    {OSSL_FUNC_ASYM_CIPHER_NEWCTX, (void (*)(void))mks_rsa_cipher_newctx},
    {OSSL_FUNC_ASYM_CIPHER_FREECTX, (void (*)(void))mks_rsa_cipher_freectx},
    {OSSL_FUNC_ASYM_CIPHER_DUPCTX, (void (*)(void))mks_rsa_cipher_dupctx},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, (void (*)(void))mks_rsa_cipher_encrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT, (void (*)(void))mks_rsa_cipher_encrypt},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, (void (*)(void))mks_rsa_cipher_decrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT, (void (*)(void))mks_rsa_cipher_decrypt},
    {OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, (void (*)(void))mks_rsa_cipher_get_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, (void (*)(void))mks_rsa_cipher_gettable_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, (void (*)(void))mks_rsa_cipher_set_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, (void (*)(void))mks_rsa_cipher_settable_ctx_params},
    {0, NULL},
};
