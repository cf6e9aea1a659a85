/*
 * SIGNATURE "ECDSA" and "RSA" (PKCS#1 v1.5 and PSS): hash in software, sign
 * in hardware, one token call per signature.
 *
 * The digest runs in the provider's private library context with a digest
 * fetched once per init (common ones come from the provider's cache).
 * Verification never needs the token: it is delegated to the public half in
 * the private library context.
 */
#include "prov.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* Salt length values other than a byte count (OpenSSL's numbering). */
#define SALT_DIGEST (-1) /* RSA_PSS_SALTLEN_DIGEST: what TLS 1.3 uses */
#define SALT_AUTO (-2)   /* signing: maximum; verifying: whatever the signature has */
#define SALT_MAX (-3)

enum { OP_NONE, OP_SIGN, OP_VERIFY };

typedef struct mks_sigctx {
    mks_prov *prov;
    mks_key_type alg; /* the algorithm this context implements */
    mks_keyobj *key;
    int op;
    EVP_MD *md;      /* message digest; NULL: not set */
    EVP_MD *mgf1_md; /* PSS MGF1 digest; NULL: same as md */
    int allow_md;    /* 0 once a DigestSign/Verify has started */
    EVP_MD_CTX *mdctx;
    int md_used; /* mdctx holds data or a finished hash: start it again first */
    int pad;     /* RSA_PKCS1_PADDING or RSA_PKCS1_PSS_PADDING */
    int saltlen; /* bytes, or SALT_* */
} mks_sigctx;

static OSSL_FUNC_signature_newctx_fn mks_ecdsa_newctx;
static OSSL_FUNC_signature_newctx_fn mks_rsa_sig_newctx;
static OSSL_FUNC_signature_freectx_fn mks_sig_freectx;
static OSSL_FUNC_signature_dupctx_fn mks_sig_dupctx;
static OSSL_FUNC_signature_sign_init_fn mks_sig_sign_init;
static OSSL_FUNC_signature_sign_fn mks_sig_sign;
static OSSL_FUNC_signature_verify_init_fn mks_sig_verify_init;
static OSSL_FUNC_signature_verify_fn mks_sig_verify;
static OSSL_FUNC_signature_digest_sign_init_fn mks_sig_digest_sign_init;
static OSSL_FUNC_signature_digest_sign_update_fn mks_sig_digest_update;
static OSSL_FUNC_signature_digest_sign_final_fn mks_sig_digest_sign_final;
static OSSL_FUNC_signature_digest_sign_fn mks_sig_digest_sign;
static OSSL_FUNC_signature_digest_verify_init_fn mks_sig_digest_verify_init;
static OSSL_FUNC_signature_digest_verify_update_fn mks_sig_digest_verify_update;
static OSSL_FUNC_signature_digest_verify_final_fn mks_sig_digest_verify_final;
static OSSL_FUNC_signature_digest_verify_fn mks_sig_digest_verify;
static OSSL_FUNC_signature_get_ctx_params_fn mks_sig_get_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn mks_ecdsa_gettable_ctx_params;
static OSSL_FUNC_signature_gettable_ctx_params_fn mks_rsa_sig_gettable_ctx_params;
static OSSL_FUNC_signature_set_ctx_params_fn mks_sig_set_ctx_params;
static OSSL_FUNC_signature_settable_ctx_params_fn mks_ecdsa_settable_ctx_params;
static OSSL_FUNC_signature_settable_ctx_params_fn mks_rsa_sig_settable_ctx_params;

/* ---- context ---------------------------------------------------------------- */

static void *sig_newctx(void *provctx, const char *propq, mks_key_type alg)
{
    mks_prov *prov = provctx;
    mks_sigctx *c = OPENSSL_zalloc(sizeof(*c));

    if (c == NULL) {
        mks_raise(prov, MKS_R_NOMEM, "cannot allocate a signature context");
        return NULL;
    }
    c->prov = prov;
    c->alg = alg;
    c->pad = RSA_PKCS1_PADDING;
    c->saltlen = SALT_DIGEST;
    c->allow_md = 1;
    return c;
}

static void *mks_ecdsa_newctx(void *provctx, const char *propq)
{
    return sig_newctx(provctx, propq, MKS_KEY_EC);
}

static void *mks_rsa_sig_newctx(void *provctx, const char *propq)
{
    return sig_newctx(provctx, propq, MKS_KEY_RSA);
}

static void mks_sig_freectx(void *ctx)
{
    mks_sigctx *c = ctx;

    if (c == NULL)
        return;
    EVP_MD_CTX_free(c->mdctx);
    EVP_MD_free(c->md);
    EVP_MD_free(c->mgf1_md);
    mks_keyobj_free(c->key);
    OPENSSL_clear_free(c, sizeof(*c));
}

/* EVP_DigestSignFinal duplicates the context before finishing it. */
static void *mks_sig_dupctx(void *ctx)
{
    const mks_sigctx *src = ctx;
    mks_sigctx *c = OPENSSL_memdup(src, sizeof(*src));

    if (c == NULL)
        goto fail;
    c->mdctx = NULL;
    c->key = NULL;
    c->md = NULL;
    c->mgf1_md = NULL;
    if (src->md != NULL && !EVP_MD_up_ref(src->md))
        goto fail;
    c->md = src->md;
    if (src->mgf1_md != NULL && !EVP_MD_up_ref(src->mgf1_md))
        goto fail;
    c->mgf1_md = src->mgf1_md;
    c->key = mks_keyobj_up_ref(src->key);
    if (src->mdctx != NULL) {
        c->mdctx = EVP_MD_CTX_new();
        if (c->mdctx == NULL || !EVP_MD_CTX_copy_ex(c->mdctx, src->mdctx))
            goto fail;
    }
    return c;
fail:
    mks_sig_freectx(c);
    mks_raise(src->prov, MKS_R_NOMEM, "cannot duplicate a signature context");
    return NULL;
}

/* ---- parameters --------------------------------------------------------------- */

/*
 * Property queries that come with a digest name are meant for the caller's
 * library context; the private one holds only the default provider, so
 * digests are fetched there by name alone.
 */
static int set_md(mks_sigctx *c, const char *name)
{
    EVP_MD *md = mks_md_fetch(c->prov, name, NULL);

    if (md == NULL)
        return 0;
    /* PKCS#1 v1.5 and PSS need the token to know the hash; ECDSA signs any. */
    if (c->alg == MKS_KEY_RSA && mks_md_to_hash(md) == MKS_HASH_NONE) {
        mks_raise(c->prov, MKS_R_UNSUPPORTED, "digest %s is not supported for RSA", name);
        EVP_MD_free(md);
        return 0;
    }
    EVP_MD_free(c->md);
    c->md = md;
    return 1;
}

static int get_pad_mode(mks_sigctx *c, const OSSL_PARAM *p, int *pad)
{
    const char *s = NULL;

    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
            return 0;
        if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PKCSV15) == 0)
            *pad = RSA_PKCS1_PADDING;
        else if (strcmp(s, OSSL_PKEY_RSA_PAD_MODE_PSS) == 0)
            *pad = RSA_PKCS1_PSS_PADDING;
        else
            *pad = -1;
    } else if (!OSSL_PARAM_get_int(p, pad)) {
        return 0;
    }
    if (*pad != RSA_PKCS1_PADDING && *pad != RSA_PKCS1_PSS_PADDING) {
        mks_raise(c->prov, MKS_R_UNSUPPORTED,
                  "RSA signatures support pad-mode pkcs1 and pss only (got %s)",
                  s != NULL ? s : "a number");
        return 0;
    }
    return 1;
}

static int get_saltlen(mks_sigctx *c, const OSSL_PARAM *p, int *saltlen)
{
    const char *s = NULL;

    if (p->data_type == OSSL_PARAM_UTF8_STRING) {
        char *end = NULL;
        long v;

        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s))
            return 0;
        if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST) == 0) {
            *saltlen = SALT_DIGEST;
            return 1;
        }
        if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_MAX) == 0) {
            *saltlen = SALT_MAX;
            return 1;
        }
        if (strcmp(s, OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO) == 0) {
            *saltlen = SALT_AUTO;
            return 1;
        }
        /* OpenSSL's ctrl translation sends numbers as decimal strings. */
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || v < SALT_MAX || v > INT_MAX)
            goto bad;
        *saltlen = (int)v;
        return 1;
    }
    if (!OSSL_PARAM_get_int(p, saltlen) || *saltlen < SALT_MAX)
        goto bad;
    return 1;
bad:
    mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "bad PSS salt length '%s'", s != NULL ? s : "?");
    return 0;
}

static int mks_sig_set_ctx_params(void *ctx, const OSSL_PARAM params[])
{
    mks_sigctx *c = ctx;
    const OSSL_PARAM *p;
    const char *name = NULL;

    if (params == NULL)
        return 1;
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_DIGEST);
    if (p != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &name)) {
            mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "bad digest parameter");
            return 0;
        }
        if (!c->allow_md && (c->md == NULL || !EVP_MD_is_a(c->md, name))) {
            mks_raise(c->prov, MKS_R_BAD_STATE,
                      "the digest cannot change once a digest-sign has started");
            return 0;
        }
        if (c->allow_md && !set_md(c, name))
            return 0;
    }
    if (c->alg != MKS_KEY_RSA)
        return 1;

    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
    if (p != NULL && !get_pad_mode(c, p, &c->pad))
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
    if (p != NULL && !get_saltlen(c, p, &c->saltlen))
        return 0;
    p = OSSL_PARAM_locate_const(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
    if (p != NULL) {
        EVP_MD *md;

        if (!OSSL_PARAM_get_utf8_string_ptr(p, &name)) {
            mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "bad mgf1-digest parameter");
            return 0;
        }
        md = mks_md_fetch(c->prov, name, NULL);
        if (md == NULL)
            return 0;
        if (mks_md_to_hash(md) == MKS_HASH_NONE) {
            mks_raise(c->prov, MKS_R_UNSUPPORTED, "MGF1 digest %s is not supported", name);
            EVP_MD_free(md);
            return 0;
        }
        EVP_MD_free(c->mgf1_md);
        c->mgf1_md = md;
    }
    return 1;
}

static const OSSL_PARAM ecdsa_settable[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM rsa_settable[] = {
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *mks_ecdsa_settable_ctx_params(void *ctx, void *provctx)
{
    return ecdsa_settable;
}

static const OSSL_PARAM *mks_rsa_sig_settable_ctx_params(void *ctx, void *provctx)
{
    return rsa_settable;
}

/* ---- sizes, salts, algorithm identifiers ------------------------------------------- */

static size_t sig_max_size(const mks_sigctx *c)
{
    int n = EVP_PKEY_get_size(mks_keyobj_pub(c->key));

    return n > 0 ? (size_t)n : 0;
}

/* The PSS salt in bytes for a hash of hlen bytes; -1 when impossible. */
static int pss_salt(const mks_sigctx *c, int hlen)
{
    int em_len = (mks_keyobj_bits(c->key) - 1 + 7) / 8;
    int max = em_len - hlen - 2;

    if (max < 0)
        return -1;
    switch (c->saltlen) {
    case SALT_DIGEST:
        return hlen <= max ? hlen : -1;
    case SALT_MAX:
    case SALT_AUTO:
        return max;
    default:
        return c->saltlen <= max ? c->saltlen : -1;
    }
}

/* The message digest: the one set, or (raw PSS signing) the one tbs fits. */
static const EVP_MD *md_for(const mks_sigctx *c, size_t tbslen)
{
    int i;

    if (c->md != NULL)
        return c->md;
    if (c->alg != MKS_KEY_RSA || c->pad != RSA_PKCS1_PSS_PADDING)
        return NULL;
    for (i = 0; i < MKS_MD_COUNT; i++)
        if ((size_t)EVP_MD_get_size(c->prov->md[i]) == tbslen)
            return c->prov->md[i];
    return NULL;
}

static int hash_alg(X509_ALGOR **alg, const EVP_MD *md)
{
    /* Hash AlgorithmIdentifiers inside PSS parameters carry NULL, byte for
     * byte what OpenSSL writes (SHA-1, the default, is left out entirely). */
    *alg = X509_ALGOR_new();
    return *alg != NULL &&
           X509_ALGOR_set0(*alg, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL, NULL);
}

static ASN1_STRING *pss_params_der(const mks_sigctx *c, int salt)
{
    const EVP_MD *mgf1 = c->mgf1_md != NULL ? c->mgf1_md : c->md;
    RSA_PSS_PARAMS *pss = RSA_PSS_PARAMS_new();
    X509_ALGOR *mgf1_hash = NULL;
    ASN1_STRING *mgf1_der = NULL, *ret = NULL;

    if (pss == NULL)
        goto done;
    if (EVP_MD_get_type(c->md) != NID_sha1 && !hash_alg(&pss->hashAlgorithm, c->md))
        goto done;
    if (EVP_MD_get_type(mgf1) != NID_sha1) {
        if (!hash_alg(&mgf1_hash, mgf1) ||
            (mgf1_der = ASN1_item_pack(mgf1_hash, ASN1_ITEM_rptr(X509_ALGOR), NULL)) == NULL ||
            (pss->maskGenAlgorithm = X509_ALGOR_new()) == NULL ||
            !X509_ALGOR_set0(pss->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE,
                             mgf1_der))
            goto done;
        mgf1_der = NULL;
    }
    if (salt != 20) {
        pss->saltLength = ASN1_INTEGER_new();
        if (pss->saltLength == NULL || !ASN1_INTEGER_set(pss->saltLength, salt))
            goto done;
    }
    ret = ASN1_item_pack(pss, ASN1_ITEM_rptr(RSA_PSS_PARAMS), NULL);
done:
    ASN1_STRING_free(mgf1_der);
    X509_ALGOR_free(mgf1_hash);
    RSA_PSS_PARAMS_free(pss);
    return ret;
}

/*
 * The signature's AlgorithmIdentifier DER (X509_REQ_sign_ex and X509_sign
 * ask for it): ecdsa-with-SHA* without parameters (not even NULL),
 * sha*WithRSAEncryption with NULL, RSASSA-PSS with its parameters.
 */
static int algorithm_id(const mks_sigctx *c, unsigned char **der, int *der_len)
{
    X509_ALGOR *alg = X509_ALGOR_new();
    ASN1_STRING *pss = NULL;
    int sig_nid = NID_undef, ok = 0;

    *der = NULL;
    if (alg == NULL || c->md == NULL || c->key == NULL)
        goto done;
    if (c->alg == MKS_KEY_EC) {
        if (!OBJ_find_sigid_by_algs(&sig_nid, EVP_MD_get_type(c->md), NID_X9_62_id_ecPublicKey) ||
            !X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), V_ASN1_UNDEF, NULL))
            goto done;
    } else if (c->pad == RSA_PKCS1_PADDING) {
        if (!OBJ_find_sigid_by_algs(&sig_nid, EVP_MD_get_type(c->md), NID_rsaEncryption) ||
            !X509_ALGOR_set0(alg, OBJ_nid2obj(sig_nid), V_ASN1_NULL, NULL))
            goto done;
    } else {
        int salt = pss_salt(c, EVP_MD_get_size(c->md));

        if (salt < 0 || (pss = pss_params_der(c, salt)) == NULL ||
            !X509_ALGOR_set0(alg, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, pss))
            goto done;
        pss = NULL;
    }
    *der_len = i2d_X509_ALGOR(alg, der);
    ok = *der_len > 0;
done:
    ASN1_STRING_free(pss);
    X509_ALGOR_free(alg);
    return ok;
}

static int mks_sig_get_ctx_params(void *ctx, OSSL_PARAM params[])
{
    mks_sigctx *c = ctx;
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID);
    if (p != NULL) {
        unsigned char *der = NULL;
        int der_len = 0, ok;

        /* Without a digest there is no identifier to give: left unset. */
        if (c->md != NULL) {
            if (!algorithm_id(c, &der, &der_len)) {
                mks_raise(c->prov, MKS_R_OPENSSL, "cannot encode the signature algorithm");
                return 0;
            }
            ok = OSSL_PARAM_set_octet_string(p, der, (size_t)der_len);
            OPENSSL_free(der);
            if (!ok)
                return 0;
        }
    }
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST);
    if (p != NULL && c->md != NULL && !OSSL_PARAM_set_utf8_string(p, EVP_MD_get0_name(c->md)))
        return 0;
    if (c->alg != MKS_KEY_RSA)
        return 1;

    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
    if (p != NULL) {
        const char *s = c->pad == RSA_PKCS1_PSS_PADDING ? OSSL_PKEY_RSA_PAD_MODE_PSS
                                                        : OSSL_PKEY_RSA_PAD_MODE_PKCSV15;

        if (p->data_type == OSSL_PARAM_UTF8_STRING ? !OSSL_PARAM_set_utf8_string(p, s)
                                                   : !OSSL_PARAM_set_int(p, c->pad))
            return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
    if (p != NULL) {
        if (p->data_type == OSSL_PARAM_UTF8_STRING) {
            char buf[16];
            const char *s = buf;

            if (c->saltlen == SALT_DIGEST)
                s = OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST;
            else if (c->saltlen == SALT_MAX)
                s = OSSL_PKEY_RSA_PSS_SALT_LEN_MAX;
            else if (c->saltlen == SALT_AUTO)
                s = OSSL_PKEY_RSA_PSS_SALT_LEN_AUTO;
            else
                snprintf(buf, sizeof(buf), "%d", c->saltlen);
            if (!OSSL_PARAM_set_utf8_string(p, s))
                return 0;
        } else if (!OSSL_PARAM_set_int(p, c->saltlen)) {
            return 0;
        }
    }
    p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
    if (p != NULL) {
        const EVP_MD *mgf1 = c->mgf1_md != NULL ? c->mgf1_md : c->md;

        if (mgf1 != NULL && !OSSL_PARAM_set_utf8_string(p, EVP_MD_get0_name(mgf1)))
            return 0;
    }
    return 1;
}

static const OSSL_PARAM ecdsa_gettable[] = {
    OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM rsa_gettable[] = {
    OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *mks_ecdsa_gettable_ctx_params(void *ctx, void *provctx)
{
    return ecdsa_gettable;
}

static const OSSL_PARAM *mks_rsa_sig_gettable_ctx_params(void *ctx, void *provctx)
{
    return rsa_gettable;
}

/* ---- init --------------------------------------------------------------------- */

static int sig_init(mks_sigctx *c, void *provkey, int op)
{
    mks_keyobj *k = provkey;

    if (k == NULL && c->key == NULL) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "no key given");
        return 0;
    }
    if (k != NULL) {
        if (mks_keyobj_type(k) != c->alg) {
            mks_raise(c->prov, MKS_R_WRONG_KEY_TYPE, "%s is not an %s key", mks_keyobj_name(k),
                      c->alg == MKS_KEY_RSA ? "RSA" : "EC");
            return 0;
        }
        mks_keyobj_free(c->key);
        c->key = mks_keyobj_up_ref(k);
    }
    if (!mks_keyobj_usable(c->key))
        return 0;
    if (op == OP_SIGN && !mks_keyobj_has_private(c->key)) {
        mks_raise(c->prov, MKS_R_NO_PRIVATE_KEY, "%s has no private key in hardware to sign with",
                  mks_keyobj_name(c->key));
        return 0;
    }
    c->op = op;
    EVP_MD_free(c->md);
    c->md = NULL;
    EVP_MD_free(c->mgf1_md);
    c->mgf1_md = NULL;
    EVP_MD_CTX_free(c->mdctx);
    c->mdctx = NULL;
    c->md_used = 0;
    c->allow_md = 1;
    c->pad = RSA_PKCS1_PADDING;
    c->saltlen = SALT_DIGEST;
    return 1;
}

static int mks_sig_sign_init(void *ctx, void *provkey, const OSSL_PARAM params[])
{
    return sig_init(ctx, provkey, OP_SIGN) && mks_sig_set_ctx_params(ctx, params);
}

static int mks_sig_verify_init(void *ctx, void *provkey, const OSSL_PARAM params[])
{
    return sig_init(ctx, provkey, OP_VERIFY) && mks_sig_set_ctx_params(ctx, params);
}

static int digest_init(mks_sigctx *c, const char *mdname, void *provkey, const OSSL_PARAM params[],
                       int op)
{
    if (!sig_init(c, provkey, op))
        return 0;
    /* OpenSSL passes the key's default digest when the caller named none. */
    if (!set_md(c, mdname != NULL && *mdname != '\0' ? mdname : "SHA256"))
        return 0;
    if (!mks_sig_set_ctx_params(c, params))
        return 0;
    c->allow_md = 0;
    c->mdctx = EVP_MD_CTX_new();
    if (c->mdctx == NULL || !EVP_DigestInit_ex2(c->mdctx, c->md, NULL)) {
        mks_raise(c->prov, MKS_R_OPENSSL, "cannot start %s", EVP_MD_get0_name(c->md));
        return 0;
    }
    return 1;
}

static int mks_sig_digest_sign_init(void *ctx, const char *mdname, void *provkey,
                                    const OSSL_PARAM params[])
{
    return digest_init(ctx, mdname, provkey, params, OP_SIGN);
}

static int mks_sig_digest_verify_init(void *ctx, const char *mdname, void *provkey,
                                      const OSSL_PARAM params[])
{
    return digest_init(ctx, mdname, provkey, params, OP_VERIFY);
}

/* ---- signing --------------------------------------------------------------------- */

/* Appends a DER INTEGER holding the unsigned big-endian n[0..len). */
static size_t der_uint(unsigned char *out, const unsigned char *n, size_t len)
{
    size_t o = 0;

    while (len > 1 && n[0] == 0) {
        n++;
        len--;
    }
    out[o++] = 0x02;
    out[o++] = (unsigned char)(len + (n[0] & 0x80 ? 1 : 0));
    if (n[0] & 0x80)
        out[o++] = 0x00;
    memcpy(out + o, n, len);
    return o + len;
}

/*
 * r||s from PKCS#11 -> ECDSA-Sig-Value DER (SEQUENCE { r INTEGER, s INTEGER })
 * for X.509 and TLS, written directly: no BIGNUMs on the signing path.
 * Returns the length, or 0 when it does not fit in outsize.
 */
static size_t ecdsa_raw_to_der(const unsigned char *raw, size_t raw_len, unsigned char *out,
                               size_t outsize)
{
    unsigned char body[2 * (3 + 66)];
    size_t half = raw_len / 2, blen, o = 0;

    if (half == 0 || half > 66)
        return 0;
    blen = der_uint(body, raw, half);
    blen += der_uint(body + blen, raw + half, half);
    if (outsize < blen + (blen > 127 ? 3 : 2))
        return 0;
    out[o++] = 0x30;
    if (blen > 127)
        out[o++] = 0x81;
    out[o++] = (unsigned char)blen;
    memcpy(out + o, body, blen);
    return o + blen;
}

static int ecdsa_sign(mks_sigctx *c, unsigned char *sig, size_t *siglen, size_t sigsize,
                      const unsigned char *tbs, size_t tbslen)
{
    mks_mech_params mp = {.mech = MKS_MECH_ECDSA};
    unsigned char raw[2 * 66];
    size_t raw_len = sizeof(raw), der_len;
    mks_rv rv;

    ERR_set_mark();
    rv = mks_prov_key_sign(mks_keyobj_key(c->key), &mp, tbs, tbslen, raw, &raw_len);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        mks_raise_ks(c->prov, rv);
        return 0;
    }
    if (raw_len == 0 || raw_len % 2 != 0 || raw_len > sizeof(raw)) {
        mks_raise(c->prov, MKS_R_TOKEN, "the token returned a %zu-byte ECDSA signature", raw_len);
        return 0;
    }
    der_len = ecdsa_raw_to_der(raw, raw_len, sig, sigsize);
    if (der_len == 0) {
        mks_raise(c->prov, MKS_R_BUFFER_TOO_SMALL, "ECDSA signature does not fit in %zu bytes",
                  sigsize);
        return 0;
    }
    *siglen = der_len;
    return 1;
}

static int rsa_sign(mks_sigctx *c, unsigned char *sig, size_t *siglen, size_t sigsize,
                    const unsigned char *tbs, size_t tbslen)
{
    const EVP_MD *md = md_for(c, tbslen);
    mks_mech_params mp = {.mech = MKS_MECH_RSA_PKCS1};
    size_t len = sigsize;
    mks_rv rv;

    if (md != NULL && (size_t)EVP_MD_get_size(md) != tbslen) {
        mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "%zu bytes to sign, but a %s hash has %d", tbslen,
                  EVP_MD_get0_name(md), EVP_MD_get_size(md));
        return 0;
    }
    if (c->pad == RSA_PKCS1_PSS_PADDING) {
        int salt;

        if (md == NULL) {
            mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "RSA-PSS needs a digest");
            return 0;
        }
        salt = pss_salt(c, EVP_MD_get_size(md));
        if (salt < 0) {
            mks_raise(c->prov, MKS_R_BAD_ARGUMENT, "PSS salt length %d does not fit a %d-bit key",
                      c->saltlen, mks_keyobj_bits(c->key));
            return 0;
        }
        mp.mech = MKS_MECH_RSA_PSS;
        mp.hash = mks_md_to_hash(md);
        mp.mgf1_hash = mks_md_to_hash(c->mgf1_md != NULL ? c->mgf1_md : md);
        mp.salt_len = (size_t)salt;
    } else if (md != NULL) {
        /* PKCS#1 v1.5 over the hash: the keystore signs DigestInfo { md, hash }. */
        mp.hash = mks_md_to_hash(md);
        if (mp.hash == MKS_HASH_NONE) {
            mks_raise(c->prov, MKS_R_UNSUPPORTED, "no DigestInfo for %s", EVP_MD_get0_name(md));
            return 0;
        }
    }
    /* else: raw PKCS#1 v1.5, the caller built what is signed (a DigestInfo). */
    ERR_set_mark();
    rv = mks_prov_key_sign(mks_keyobj_key(c->key), &mp, tbs, tbslen, sig, &len);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        mks_raise_ks(c->prov, rv);
        return 0;
    }
    *siglen = len;
    return 1;
}

static int do_sign(mks_sigctx *c, unsigned char *sig, size_t *siglen, size_t sigsize,
                   const unsigned char *tbs, size_t tbslen)
{
    return c->alg == MKS_KEY_EC ? ecdsa_sign(c, sig, siglen, sigsize, tbs, tbslen)
                                : rsa_sign(c, sig, siglen, sigsize, tbs, tbslen);
}

/* Common checks; 0 = fail, 1 = proceed, 2 = size query answered. */
static int sign_prepare(mks_sigctx *c, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    size_t max;

    if (c->key == NULL || c->op != OP_SIGN) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "sign called without sign init");
        return 0;
    }
    max = sig_max_size(c);
    if (sig == NULL) {
        *siglen = max;
        return 2;
    }
    if (sigsize < max) {
        mks_raise(c->prov, MKS_R_BUFFER_TOO_SMALL, "signature buffer %zu < %zu", sigsize, max);
        return 0;
    }
    return 1;
}

static int mks_sig_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                        const unsigned char *tbs, size_t tbslen)
{
    mks_sigctx *c = ctx;
    int r = sign_prepare(c, sig, siglen, sigsize);

    if (r != 1)
        return r != 0;
    return do_sign(c, sig, siglen, sigsize, tbs, tbslen);
}

static int mks_sig_digest_update(void *ctx, const unsigned char *data, size_t datalen)
{
    mks_sigctx *c = ctx;

    if (c->mdctx == NULL) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "digest update without digest init");
        return 0;
    }
    c->md_used = 1;
    return EVP_DigestUpdate(c->mdctx, data, datalen);
}

/* The hash of what the updates fed in (tbs == NULL), or of tbs alone (one-shot). */
static int digest_finish(mks_sigctx *c, const unsigned char *tbs, size_t tbslen,
                         unsigned char *hash, unsigned int *hlen)
{
    int ok;

    if (tbs != NULL && c->md_used && !EVP_DigestInit_ex2(c->mdctx, c->md, NULL))
        ok = 0;
    else
        ok = (tbs == NULL || EVP_DigestUpdate(c->mdctx, tbs, tbslen)) &&
             EVP_DigestFinal_ex(c->mdctx, hash, hlen);
    c->md_used = 1;
    if (!ok)
        mks_raise(c->prov, MKS_R_OPENSSL, "cannot hash with %s", EVP_MD_get0_name(c->md));
    return ok;
}

static int digest_sign(mks_sigctx *c, unsigned char *sig, size_t *siglen, size_t sigsize,
                       const unsigned char *tbs, size_t tbslen)
{
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;
    int r, ok;

    if (c->mdctx == NULL) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "digest sign without digest sign init");
        return 0;
    }
    r = sign_prepare(c, sig, siglen, sigsize);
    if (r != 1)
        return r != 0;
    if (!digest_finish(c, tbs, tbslen, hash, &hlen))
        return 0;
    ok = do_sign(c, sig, siglen, sigsize, hash, hlen);
    OPENSSL_cleanse(hash, sizeof(hash));
    return ok;
}

static int mks_sig_digest_sign_final(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize)
{
    return digest_sign(ctx, sig, siglen, sigsize, NULL, 0);
}

/*
 * EVP_DigestSign in one call, as libssl signs: the hash and the signature
 * without the update/final round and the context copy OpenSSL makes before
 * a final. A size query (sig == NULL) hashes nothing.
 */
static int mks_sig_digest_sign(void *ctx, unsigned char *sig, size_t *siglen, size_t sigsize,
                               const unsigned char *tbs, size_t tbslen)
{
    static const unsigned char empty[1];

    return digest_sign(ctx, sig, siglen, sigsize, tbs != NULL ? tbs : empty, tbslen);
}

/* ---- verification (software, public half) ------------------------------------------ */

static int mks_sig_verify(void *ctx, const unsigned char *sig, size_t siglen,
                          const unsigned char *tbs, size_t tbslen)
{
    mks_sigctx *c = ctx;
    const EVP_MD *md;
    EVP_PKEY_CTX *v = NULL;
    int ok = 0;

    if (c->key == NULL || c->op != OP_VERIFY) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "verify called without verify init");
        return 0;
    }
    md = md_for(c, tbslen);
    v = EVP_PKEY_CTX_new_from_pkey(c->prov->libctx, mks_keyobj_pub(c->key), NULL);
    if (v == NULL || EVP_PKEY_verify_init(v) != 1 ||
        (md != NULL && EVP_PKEY_CTX_set_signature_md(v, md) != 1))
        goto fail;
    if (c->alg == MKS_KEY_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(v, c->pad) != 1)
            goto fail;
        if (c->pad == RSA_PKCS1_PSS_PADDING &&
            (EVP_PKEY_CTX_set_rsa_pss_saltlen(v, c->saltlen) != 1 ||
             (c->mgf1_md != NULL && EVP_PKEY_CTX_set_rsa_mgf1_md(v, c->mgf1_md) != 1)))
            goto fail;
    }
    /* 0: the signature does not verify; the default provider said why. */
    ok = EVP_PKEY_verify(v, sig, siglen, tbs, tbslen) == 1;
    EVP_PKEY_CTX_free(v);
    return ok;
fail:
    mks_raise(c->prov, MKS_R_OPENSSL, "cannot set up verification with %s",
              mks_keyobj_name(c->key));
    EVP_PKEY_CTX_free(v);
    return 0;
}

static int mks_sig_digest_verify_update(void *ctx, const unsigned char *data, size_t datalen)
{
    return mks_sig_digest_update(ctx, data, datalen);
}

static int digest_verify(mks_sigctx *c, const unsigned char *sig, size_t siglen,
                         const unsigned char *tbs, size_t tbslen)
{
    unsigned char hash[EVP_MAX_MD_SIZE];
    unsigned int hlen = 0;

    if (c->mdctx == NULL) {
        mks_raise(c->prov, MKS_R_BAD_STATE, "digest verify without digest verify init");
        return 0;
    }
    return digest_finish(c, tbs, tbslen, hash, &hlen) && mks_sig_verify(c, sig, siglen, hash, hlen);
}

static int mks_sig_digest_verify_final(void *ctx, const unsigned char *sig, size_t siglen)
{
    return digest_verify(ctx, sig, siglen, NULL, 0);
}

static int mks_sig_digest_verify(void *ctx, const unsigned char *sig, size_t siglen,
                                 const unsigned char *tbs, size_t tbslen)
{
    static const unsigned char empty[1];

    return digest_verify(ctx, sig, siglen, tbs != NULL ? tbs : empty, tbslen);
}

/* ---- dispatch --------------------------------------------------------------------- */

const OSSL_DISPATCH mks_ecdsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))mks_ecdsa_newctx},
    {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))mks_sig_freectx},
    {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))mks_sig_dupctx},
    {OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))mks_sig_sign_init},
    {OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))mks_sig_sign},
    {OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))mks_sig_verify_init},
    {OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))mks_sig_verify},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))mks_sig_digest_sign_init},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))mks_sig_digest_update},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))mks_sig_digest_sign_final},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))mks_sig_digest_sign},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))mks_sig_digest_verify_init},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))mks_sig_digest_verify_update},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))mks_sig_digest_verify_final},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))mks_sig_digest_verify},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))mks_sig_get_ctx_params},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))mks_ecdsa_gettable_ctx_params},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))mks_sig_set_ctx_params},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))mks_ecdsa_settable_ctx_params},
    {0, NULL},
};

const OSSL_DISPATCH mks_rsa_signature_functions[] = {
    {OSSL_FUNC_SIGNATURE_NEWCTX, (void (*)(void))mks_rsa_sig_newctx},
    {OSSL_FUNC_SIGNATURE_FREECTX, (void (*)(void))mks_sig_freectx},
    {OSSL_FUNC_SIGNATURE_DUPCTX, (void (*)(void))mks_sig_dupctx},
    {OSSL_FUNC_SIGNATURE_SIGN_INIT, (void (*)(void))mks_sig_sign_init},
    {OSSL_FUNC_SIGNATURE_SIGN, (void (*)(void))mks_sig_sign},
    {OSSL_FUNC_SIGNATURE_VERIFY_INIT, (void (*)(void))mks_sig_verify_init},
    {OSSL_FUNC_SIGNATURE_VERIFY, (void (*)(void))mks_sig_verify},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT, (void (*)(void))mks_sig_digest_sign_init},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE, (void (*)(void))mks_sig_digest_update},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL, (void (*)(void))mks_sig_digest_sign_final},
    {OSSL_FUNC_SIGNATURE_DIGEST_SIGN, (void (*)(void))mks_sig_digest_sign},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT, (void (*)(void))mks_sig_digest_verify_init},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE, (void (*)(void))mks_sig_digest_verify_update},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL, (void (*)(void))mks_sig_digest_verify_final},
    {OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, (void (*)(void))mks_sig_digest_verify},
    {OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS, (void (*)(void))mks_sig_get_ctx_params},
    {OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS, (void (*)(void))mks_rsa_sig_gettable_ctx_params},
    {OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS, (void (*)(void))mks_sig_set_ctx_params},
    {OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS, (void (*)(void))mks_rsa_sig_settable_ctx_params},
    {0, NULL},
};
