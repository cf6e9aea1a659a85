/*
 * TPM keys: creation under the standard storage primary, loading from TSS2
 * PRIVATE KEY files or persistent handles, signing (one TPM2_Sign once
 * loaded) and RSA decryption.
 */
#include "tpm2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <tss2/tss2_mu.h>

#define TPM2_OWNER 0x40000001u
#define PERSISTENT_FIRST 0x81000000u
#define PERSISTENT_LAST 0x81ffffffu

#define TK(key) ((tpm2_key *)(key)->be)

static const mks_key_ops tpm2_key_ops;

/* ---- helpers ---------------------------------------------------------------- */

mks_rv mks_tpm_parse_handle(const char *s, uint32_t *handle)
{
    char *end = NULL;
    unsigned long v;

    if (s == NULL || *s == '\0')
        return mks_error(MKS_ERR_ARG, "empty TPM handle");
    errno = 0;
    v = strtoul(s, &end, 0);
    if (errno != 0 || *end != '\0' || v < PERSISTENT_FIRST || v > PERSISTENT_LAST)
        return mks_error(MKS_ERR_ARG,
                         "'%s' is not a persistent TPM handle (0x81000000 to 0x81FFFFFF)", s);
    *handle = (uint32_t)v;
    return MKS_OK;
}

/* The TPM's IDs of the curves the keystore knows; keys are made on the
 * first two only (P-521 is rare in TPMs). */
static const struct {
    TPMI_ECC_CURVE id;
    const char *name;
    int keygen;
} tpm_curves[] = {
    {TPM2_ECC_NIST_P256, "P-256", 1},
    {TPM2_ECC_NIST_P384, "P-384", 1},
    {TPM2_ECC_NIST_P521, "P-521", 0},
};

static const char *curve_name(TPMI_ECC_CURVE c, int *bits)
{
    const mks_curve_def *cd;
    size_t i;

    for (i = 0; i < sizeof(tpm_curves) / sizeof(tpm_curves[0]); i++)
        if (tpm_curves[i].id == c && (cd = mks_curve_by_name(tpm_curves[i].name)) != NULL) {
            *bits = cd->bits;
            return cd->name;
        }
    return NULL;
}

/* The TPM's ID of a curve keys can be made on; TPM2_ECC_NONE for others. */
static TPMI_ECC_CURVE curve_for_keygen(const char *name)
{
    size_t i;

    for (i = 0; i < sizeof(tpm_curves) / sizeof(tpm_curves[0]); i++)
        if (tpm_curves[i].keygen && strcmp(tpm_curves[i].name, name) == 0)
            return tpm_curves[i].id;
    return TPM2_ECC_NONE;
}

/* Fills the common key fields from the TPM's public area. */
static mks_rv describe_public(mks_key *key, const TPMT_PUBLIC *pub)
{
    OSSL_LIB_CTX *libctx = mks_ctx_libctx(key->ctx);
    unsigned char id[20];
    mks_rv rv;

    if (!(pub->objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT))
        return mks_error(MKS_ERR_UNSUPPORTED, "the TPM key is not a signing key");
    if (pub->objectAttributes & TPMA_OBJECT_RESTRICTED)
        return mks_error(MKS_ERR_UNSUPPORTED,
                         "the TPM key is restricted (it signs only TPM-made digests)");
    if (pub->type == TPM2_ALG_RSA) {
        unsigned char e[4];
        uint32_t exp =
            pub->parameters.rsaDetail.exponent ? pub->parameters.rsaDetail.exponent : 65537;
        e[0] = (unsigned char)(exp >> 24);
        e[1] = (unsigned char)(exp >> 16);
        e[2] = (unsigned char)(exp >> 8);
        e[3] = (unsigned char)exp;
        key->type = MKS_KEY_RSA;
        rv = mks_spki_rsa(libctx, pub->unique.rsa.buffer, pub->unique.rsa.size, e, sizeof(e),
                          &key->spki, &key->spki_len, &key->bits);
        key->sig_len = ((size_t)key->bits + 7) / 8;
        key->can_decrypt = (pub->objectAttributes & TPMA_OBJECT_DECRYPT) != 0;
    } else if (pub->type == TPM2_ALG_ECC) {
        unsigned char point[1 + 2 * 66];
        const char *curve = curve_name(pub->parameters.eccDetail.curveID, &key->bits);
        size_t field = ((size_t)key->bits + 7) / 8;
        if (curve == NULL)
            return mks_error(MKS_ERR_UNSUPPORTED, "TPM key on an unsupported curve (0x%x)",
                             pub->parameters.eccDetail.curveID);
        if (pub->unique.ecc.x.size > field || pub->unique.ecc.y.size > field)
            return mks_error(MKS_ERR_ARG, "TPM key: EC point larger than its curve");
        /* Left-pad x and y to the field size: the TPM may drop leading zeros. */
        memset(point, 0, sizeof(point));
        point[0] = 0x04;
        memcpy(point + 1 + field - pub->unique.ecc.x.size, pub->unique.ecc.x.buffer,
               pub->unique.ecc.x.size);
        memcpy(point + 1 + 2 * field - pub->unique.ecc.y.size, pub->unique.ecc.y.buffer,
               pub->unique.ecc.y.size);
        key->type = MKS_KEY_EC;
        snprintf(key->curve, sizeof(key->curve), "%s", curve);
        rv = mks_spki_ec(libctx, curve, point, 1 + 2 * field, &key->spki, &key->spki_len);
        key->sig_len = 2 * field;
    } else {
        return mks_error(MKS_ERR_UNSUPPORTED, "TPM key of type 0x%x is neither RSA nor EC",
                         pub->type);
    }
    if (rv != MKS_OK)
        return rv;
    rv = mks_spki_id(libctx, key->spki, key->spki_len, id);
    if (rv != MKS_OK)
        return rv;
    key->id = malloc(sizeof(id));
    if (key->id == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    memcpy(key->id, id, sizeof(id));
    key->id_len = sizeof(id);
    key->is_private = 1;
    snprintf(key->token_label, sizeof(key->token_label), "TPM");
    return MKS_OK;
}

static void tpm2_key_free_be(mks_key *key)
{
    tpm2_key *tk = TK(key);

    if (tk == NULL)
        return;
    tpm2_key_forget(key->ctx, tk);
    mks_tss2_key_clear(&tk->file);
    mks_cleanse(tk, sizeof(*tk));
    free(tk);
}

static mks_rv new_key(mks_ctx *ctx, mks_key **out)
{
    mks_key *key = mks_key_alloc(ctx, &tpm2_key_ops);
    tpm2_key *tk = calloc(1, sizeof(*tk));

    if (key == NULL || tk == NULL) {
        free(tk);
        mks_key_free(key);
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    }
    key->be = tk;
    *out = key;
    return MKS_OK;
}

static mks_rv get_auth(tpm2_key *tk, const mks_pin_ui *pin)
{
    size_t len = 0;

    if (pin != NULL && pin->cb != NULL &&
        pin->cb(tk->auth, sizeof(tk->auth), &len, MKS_PIN_FOR_TPM_KEY, pin->arg) == 1 && len > 0 &&
        len < sizeof(tk->auth)) {
        tk->auth_len = len;
        return MKS_OK;
    }
    mks_cleanse(tk->auth, sizeof(tk->auth));
    return mks_error(MKS_ERR_PIN_REQUIRED, "the TPM key needs its password and none was given");
}

/* ---- opening keys ---------------------------------------------------------- */

/* Opens a key file; with `ask` set, a key that needs a password gets it from pin. */
static mks_rv open_der(mks_ctx *ctx, const unsigned char *der, size_t der_len,
                       const mks_pin_ui *pin, int ask, mks_key **out)
{
    mks_key *key = NULL;
    tpm2_key *tk;
    TPM2B_PUBLIC pub2b;
    size_t off = 0;
    mks_rv rv;

    *out = NULL;
    rv = new_key(ctx, &key);
    if (rv != MKS_OK)
        return rv;
    tk = TK(key);
    rv = mks_tss2_decode_der(der, der_len, &tk->file);
    if (rv != MKS_OK)
        goto done;
    memset(&pub2b, 0, sizeof(pub2b));
    if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(tk->file.pub, tk->file.pub_len, &off, &pub2b) !=
        TSS2_RC_SUCCESS) {
        rv = mks_error(MKS_ERR_ARG, "TSS2 key: malformed public part");
        goto done;
    }
    tk->pub = pub2b.publicArea;
    rv = describe_public(key, &tk->pub);
    if (rv != MKS_OK)
        goto done;
    if (ask && !tk->file.empty_auth) {
        rv = get_auth(tk, pin);
        if (rv != MKS_OK)
            goto done;
    }
    key->label = strdup("");
    if (key->label == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    *out = key;
    key = NULL;
done:
    mks_key_free(key);
    return rv;
}

mks_rv mks_tpm_key_open_der(mks_ctx *ctx, const unsigned char *der, size_t der_len,
                            const mks_pin_ui *pin, mks_key **out)
{
    return open_der(ctx, der, der_len, pin, 1, out);
}

mks_rv mks_tpm_key_open_uri(mks_ctx *ctx, const char *uri, const mks_pin_ui *pin, mks_key **out)
{
    mks_key *key = NULL;
    tpm2_key *tk;
    tpm2_state *st;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR h = ESYS_TR_NONE;
    const char *p;
    mks_rv rv;
    TSS2_RC rc;

    *out = NULL;
    if (uri == NULL || strncmp(uri, MKS_TPM_URI_SCHEME "handle=", 14) != 0)
        return mks_error(MKS_ERR_ARG, "'%s' is not a TPM key URI (tpmkey:handle=0x81......)",
                         uri != NULL ? uri : "(null)");
    p = uri + 14;
    rv = new_key(ctx, &key);
    if (rv != MKS_OK)
        return rv;
    tk = TK(key);
    rv = mks_tpm_parse_handle(p, &tk->persistent);
    if (rv != MKS_OK)
        goto done;
    rv = tpm2_lock(ctx, &st);
    if (rv != MKS_OK)
        goto done;
    rc = TPM2(Esys_TR_FromTPMPublic, st->esys, tk->persistent, ESYS_TR_NONE, ESYS_TR_NONE,
              ESYS_TR_NONE, &h);
    if (rc == TSS2_RC_SUCCESS)
        rc = TPM2(Esys_ReadPublic, st->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub,
                  NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        rv = tpm2_fail(rc, "TPM2_ReadPublic");
        if (rv == MKS_ERR_NOT_FOUND || (rc & 0xfff) == (TPM2_RC_HANDLE | TPM2_RC_1))
            rv = mks_error(MKS_ERR_NOT_FOUND, "no key at TPM handle 0x%08x", tk->persistent);
    } else {
        tk->pub = pub->publicArea;
    }
    if (h != ESYS_TR_NONE)
        Esys_TR_Close(st->esys, &h);
    tpm2_unlock(st);
    Esys_Free(pub);
    if (rv != MKS_OK)
        goto done;
    rv = describe_public(key, &tk->pub);
    if (rv != MKS_OK)
        goto done;
    if (!(tk->pub.objectAttributes & TPMA_OBJECT_NODA)) {
        /* A key under dictionary-attack protection has a password (ours are
         * noDA exactly when they have none). Without it, refuse now: a
         * signature attempt would cost a lockout strike. */
        rv = get_auth(tk, pin);
        if (rv != MKS_OK)
            goto done;
    }
    key->label = strdup("");
    key->uri = strdup(uri);
    if (key->label == NULL || key->uri == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    *out = key;
    key = NULL;
done:
    mks_key_free(key);
    return rv;
}

/* ---- operations ---------------------------------------------------------------- */

static TPMI_ALG_HASH hash_alg(mks_hash h)
{
    switch (h) {
    case MKS_HASH_SHA1:
        return TPM2_ALG_SHA1;
    case MKS_HASH_SHA256:
        return TPM2_ALG_SHA256;
    case MKS_HASH_SHA384:
        return TPM2_ALG_SHA384;
    case MKS_HASH_SHA512:
        return TPM2_ALG_SHA512;
    default:
        return TPM2_ALG_NULL;
    }
}

/* TPMs pick the PSS salt length themselves (the digest length on current
 * ones, the maximum on some older ones): check the signature has the salt
 * length asked for, so a mismatch is a clear error, not a failed handshake. */
static mks_rv check_pss_salt(mks_key *key, const mks_hash_def *hd, const unsigned char *hash,
                             size_t hlen, const unsigned char *sig, size_t siglen, size_t salt)
{
    OSSL_LIB_CTX *libctx = mks_ctx_libctx(key->ctx);
    const unsigned char *p = key->spki;
    EVP_PKEY *pk = d2i_PUBKEY_ex(NULL, &p, (long)key->spki_len, libctx, NULL);
    EVP_PKEY_CTX *vctx = pk ? EVP_PKEY_CTX_new_from_pkey(libctx, pk, NULL) : NULL;
    EVP_MD *md = EVP_MD_fetch(libctx, hd->name, NULL);
    int ok = vctx != NULL && md != NULL && EVP_PKEY_verify_init(vctx) == 1 &&
             EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_signature_md(vctx, md) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(vctx, (int)salt) == 1 &&
             EVP_PKEY_verify(vctx, sig, siglen, hash, hlen) == 1;

    EVP_MD_free(md);
    EVP_PKEY_CTX_free(vctx);
    EVP_PKEY_free(pk);
    if (!ok)
        return mks_error(MKS_ERR_UNSUPPORTED,
                         "the TPM made an RSA-PSS signature whose salt length is not the %zu "
                         "bytes asked for (this TPM fixes the salt length itself)",
                         salt);
    return MKS_OK;
}

static void copy_padded(unsigned char *dst, size_t width, const unsigned char *src, size_t n)
{
    memset(dst, 0, width);
    memcpy(dst + width - n, src, n);
}

typedef struct sign_args {
    const TPM2B_DIGEST *digest;
    const TPMT_SIG_SCHEME *scheme;
    TPMT_SIGNATURE **sig;
} sign_args;

static TSS2_RC sign_op(ESYS_CONTEXT *esys, ESYS_TR key, ESYS_TR session, void *arg)
{
    const TPMT_TK_HASHCHECK ticket = {.tag = TPM2_ST_HASHCHECK, .hierarchy = TPM2_RH_NULL};
    sign_args *a = arg;

    return TPM2(Esys_Sign, esys, key, session, ESYS_TR_NONE, ESYS_TR_NONE, a->digest, a->scheme,
                &ticket, a->sig);
}

static mks_rv tpm2_key_sign(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                            size_t inlen, unsigned char *out, size_t *outlen)
{
    tpm2_key *tk = TK(key);
    TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_NULL};
    TPM2B_DIGEST digest = {0};
    TPMT_SIGNATURE *sig = NULL;
    const unsigned char *hash = in;
    size_t hlen = inlen;
    const mks_hash_def *hd = NULL;
    TPMI_ALG_HASH alg;
    mks_rv rv;

    if (out == NULL) {
        *outlen = key->sig_len;
        return MKS_OK;
    }
    if (*outlen < key->sig_len)
        return mks_error(MKS_ERR_ARG, "signature buffer too small");
    switch (p->mech) {
    case MKS_MECH_ECDSA:
        if (key->type != MKS_KEY_EC)
            goto unsupported;
        hd = mks_hash_by_size(inlen);
        scheme.scheme = TPM2_ALG_ECDSA;
        break;
    case MKS_MECH_RSA_PKCS1:
        if (key->type != MKS_KEY_RSA)
            goto unsupported;
        /* TPM2_Sign builds the DigestInfo from the hash itself. A caller
         * that built one (no hash named) gets it read back. */
        hd = p->hash != MKS_HASH_NONE ? mks_hash_get(p->hash) : mks_digest_info_split(in, inlen);
        if (hd == NULL && p->hash == MKS_HASH_NONE)
            return mks_error(MKS_ERR_UNSUPPORTED, "the TPM signs PKCS#1 v1.5 only over a "
                                                  "SHA-1/256/384/512 DigestInfo");
        if (hd != NULL && p->hash == MKS_HASH_NONE) {
            hash = in + hd->prefix_len;
            hlen = hd->size;
        }
        if (hd != NULL && hlen != hd->size)
            return mks_error(MKS_ERR_ARG, "%zu bytes to sign, but a %s hash has %zu", hlen,
                             hd->name, hd->size);
        scheme.scheme = TPM2_ALG_RSASSA;
        break;
    case MKS_MECH_RSA_PSS:
        if (key->type != MKS_KEY_RSA)
            goto unsupported;
        hd = mks_hash_get(p->hash);
        if (p->mgf1_hash != MKS_HASH_NONE && p->mgf1_hash != p->hash)
            return mks_error(MKS_ERR_UNSUPPORTED, "the TPM uses the message hash for MGF1");
        scheme.scheme = TPM2_ALG_RSAPSS;
        break;
    default:
        goto unsupported;
    }
    alg = hd != NULL ? hash_alg(hd->hash) : TPM2_ALG_NULL;
    if (alg == TPM2_ALG_NULL || hlen > sizeof(digest.buffer))
        return mks_error(MKS_ERR_UNSUPPORTED, "the TPM signs SHA-1/256/384/512 digests only");
    scheme.details.any.hashAlg = alg;
    digest.size = (UINT16)hlen;
    memcpy(digest.buffer, hash, hlen);

    rv = tpm2_key_run(key->ctx, tk, 0, sign_op, &(sign_args){&digest, &scheme, &sig}, "TPM2_Sign");
    if (rv != MKS_OK) {
        Esys_Free(sig);
        if (rv == MKS_ERR_PIN_INCORRECT)
            mks_error_prefix("the TPM rejected the key password");
        return rv;
    }
    if (key->type == MKS_KEY_EC) {
        size_t field = key->sig_len / 2;
        const TPMS_SIGNATURE_ECDSA *e = &sig->signature.ecdsa;
        if (e->signatureR.size > field || e->signatureS.size > field) {
            Esys_Free(sig);
            return mks_error(MKS_ERR_TOKEN, "TPM2_Sign returned an oversized ECDSA signature");
        }
        copy_padded(out, field, e->signatureR.buffer, e->signatureR.size);
        copy_padded(out + field, field, e->signatureS.buffer, e->signatureS.size);
        *outlen = 2 * field;
    } else {
        const TPM2B_PUBLIC_KEY_RSA *s = scheme.scheme == TPM2_ALG_RSAPSS
                                            ? &sig->signature.rsapss.sig
                                            : &sig->signature.rsassa.sig;
        if (s->size > key->sig_len) {
            Esys_Free(sig);
            return mks_error(MKS_ERR_TOKEN, "TPM2_Sign returned an oversized RSA signature");
        }
        copy_padded(out, key->sig_len, s->buffer, s->size);
        *outlen = key->sig_len;
    }
    Esys_Free(sig);
    if (scheme.scheme == TPM2_ALG_RSAPSS)
        return check_pss_salt(key, hd, hash, hlen, out, *outlen, p->salt_len);
    return MKS_OK;
unsupported:
    return mks_error(MKS_ERR_UNSUPPORTED, "mechanism not supported for this TPM %s key",
                     key->type == MKS_KEY_RSA ? "RSA" : "EC");
}

typedef struct decrypt_args {
    const TPM2B_PUBLIC_KEY_RSA *ct;
    const TPMT_RSA_DECRYPT *scheme;
    TPM2B_PUBLIC_KEY_RSA **msg;
} decrypt_args;

static TSS2_RC decrypt_op(ESYS_CONTEXT *esys, ESYS_TR key, ESYS_TR session, void *arg)
{
    const TPM2B_DATA label = {0};
    decrypt_args *a = arg;

    return TPM2(Esys_RSA_Decrypt, esys, key, session, ESYS_TR_NONE, ESYS_TR_NONE, a->ct, a->scheme,
                &label, a->msg);
}

static mks_rv tpm2_key_decrypt(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                               size_t inlen, unsigned char *out, size_t *outlen)
{
    tpm2_key *tk = TK(key);
    TPMT_RSA_DECRYPT scheme = {.scheme = TPM2_ALG_RSAES};
    TPM2B_PUBLIC_KEY_RSA ct = {0};
    TPM2B_PUBLIC_KEY_RSA *msg = NULL;
    mks_rv rv;

    if (key->type != MKS_KEY_RSA || !key->can_decrypt)
        return mks_error(MKS_ERR_UNSUPPORTED, "this TPM key may not decrypt");
    if (out == NULL) {
        *outlen = key->sig_len;
        return MKS_OK;
    }
    if (p->mech == MKS_MECH_RSA_OAEP) {
        scheme.scheme = TPM2_ALG_OAEP;
        scheme.details.oaep.hashAlg = hash_alg(p->hash);
        if (scheme.details.oaep.hashAlg == TPM2_ALG_NULL ||
            (p->mgf1_hash != MKS_HASH_NONE && p->mgf1_hash != p->hash))
            return mks_error(MKS_ERR_UNSUPPORTED, "the TPM's OAEP uses one hash for both");
        if (p->label_len > 0)
            return mks_error(MKS_ERR_UNSUPPORTED, "OAEP labels are not supported for TPM keys");
    } else if (p->mech != MKS_MECH_RSA_PKCS1) {
        return mks_error(MKS_ERR_UNSUPPORTED, "mechanism not supported for TPM decryption");
    }
    if (inlen > sizeof(ct.buffer))
        return mks_error(MKS_ERR_ARG, "ciphertext larger than the key");
    ct.size = (UINT16)inlen;
    memcpy(ct.buffer, in, inlen);
    /* The plaintext comes back encrypted in the session (when there is one). */
    rv = tpm2_key_run(key->ctx, tk, TPMA_SESSION_DECRYPT | TPMA_SESSION_ENCRYPT, decrypt_op,
                      &(decrypt_args){&ct, &scheme, &msg}, "TPM2_RSA_Decrypt");
    if (rv != MKS_OK)
        return rv;
    if (msg->size > *outlen) {
        mks_cleanse(msg, sizeof(*msg));
        Esys_Free(msg);
        return mks_error(MKS_ERR_ARG, "output buffer too small");
    }
    memcpy(out, msg->buffer, msg->size);
    *outlen = msg->size;
    mks_cleanse(msg, sizeof(*msg));
    Esys_Free(msg);
    return MKS_OK;
}

static mks_rv tpm2_key_destroy(mks_key *key)
{
    tpm2_key *tk = TK(key);

    if (tk->persistent == 0)
        return mks_error(MKS_ERR_UNSUPPORTED, "a TPM key file is destroyed by deleting the file");
    return mks_tpm_evict(key->ctx, tk->persistent);
}

static const mks_key_ops tpm2_key_ops = {
    .backend = "tpm2",
    .kind = MKS_BACKEND_TPM,
    .sign = tpm2_key_sign,
    .decrypt = tpm2_key_decrypt,
    .destroy = tpm2_key_destroy,
    .cert_import = NULL,
    .free_be = tpm2_key_free_be,
};

/* ---- creation, persistence ---------------------------------------------------- */

/* The template and sensitive part of a new key (both zeroed by the caller):
 * type, size or curve, attributes, password. */
static mks_rv keygen_template(const mks_tpm_keygen_params *params, TPM2B_PUBLIC *tmpl,
                              TPM2B_SENSITIVE_CREATE *sens)
{
    const mks_keygen_params *kp = &params->key;

    if (params->persist != 0 &&
        (params->persist < PERSISTENT_FIRST || params->persist > PERSISTENT_LAST))
        return mks_error(MKS_ERR_ARG, "0x%08x is not a persistent handle", params->persist);
    if (params->auth_len >= sizeof(sens->sensitive.userAuth.buffer))
        return mks_error(MKS_ERR_ARG, "the key password is too long");
    tmpl->publicArea.nameAlg = TPM2_ALG_SHA256;
    tmpl->publicArea.objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                        TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                        TPMA_OBJECT_SIGN_ENCRYPT;
    /* Without a password there is nothing to guess: keep the key out of the
     * dictionary-attack counter. With one, wrong guesses count. */
    if (params->auth == NULL || params->auth_len == 0)
        tmpl->publicArea.objectAttributes |= TPMA_OBJECT_NODA;
    if (kp->type == MKS_KEY_EC) {
        const char *c = kp->curve != NULL ? kp->curve : "P-256";
        tmpl->publicArea.type = TPM2_ALG_ECC;
        tmpl->publicArea.parameters.eccDetail.symmetric.algorithm = TPM2_ALG_NULL;
        tmpl->publicArea.parameters.eccDetail.scheme.scheme = TPM2_ALG_NULL;
        tmpl->publicArea.parameters.eccDetail.kdf.scheme = TPM2_ALG_NULL;
        tmpl->publicArea.parameters.eccDetail.curveID = curve_for_keygen(c);
        if (tmpl->publicArea.parameters.eccDetail.curveID == TPM2_ECC_NONE)
            return mks_error(MKS_ERR_UNSUPPORTED,
                             "TPM keys: curve %s not supported (P-256, "
                             "P-384)",
                             c);
    } else if (kp->type == MKS_KEY_RSA) {
        if (kp->bits != 2048 && kp->bits != 3072)
            return mks_error(MKS_ERR_UNSUPPORTED, "TPM keys: RSA %d not supported (2048, 3072)",
                             kp->bits);
        tmpl->publicArea.type = TPM2_ALG_RSA;
        tmpl->publicArea.objectAttributes |= TPMA_OBJECT_DECRYPT;
        tmpl->publicArea.parameters.rsaDetail.symmetric.algorithm = TPM2_ALG_NULL;
        tmpl->publicArea.parameters.rsaDetail.scheme.scheme = TPM2_ALG_NULL;
        tmpl->publicArea.parameters.rsaDetail.keyBits = (TPMI_RSA_KEY_BITS)kp->bits;
    } else {
        return mks_error(MKS_ERR_UNSUPPORTED, "key type must be RSA or EC");
    }
    if (params->auth_len > 0) {
        sens->sensitive.userAuth.size = (UINT16)params->auth_len;
        memcpy(sens->sensitive.userAuth.buffer, params->auth, params->auth_len);
    }
    return MKS_OK;
}

/* The mks_key of the key just made: at its persistent handle, or read back
 * from the PEM written for it. */
static mks_rv key_of_new(mks_ctx *ctx, const mks_tpm_keygen_params *params, const char *pem,
                         const TPM2B_PUBLIC *pub, mks_key **out)
{
    mks_key *key = NULL;
    mks_rv rv;

    if (params->persist != 0) {
        char uri[40];
        snprintf(uri, sizeof(uri), MKS_TPM_URI_SCHEME "handle=0x%08x", params->persist);
        rv = new_key(ctx, &key);
        if (rv == MKS_OK) {
            TK(key)->persistent = params->persist;
            TK(key)->pub = pub->publicArea;
            rv = describe_public(key, &TK(key)->pub);
        }
        if (rv == MKS_OK && (key->uri = strdup(uri)) == NULL)
            rv = mks_error(MKS_ERR_NOMEM, "out of memory");
    } else {
        unsigned char *der = NULL;
        BIO *b = BIO_new_mem_buf(pem, (int)strlen(pem));
        char *name = NULL, *header = NULL;
        long derlen = 0;
        if (b == NULL || !PEM_read_bio(b, &name, &header, &der, &derlen))
            rv = mks_error(MKS_ERR_GENERAL, "cannot read back the TSS2 key just written");
        else
            rv = open_der(ctx, der, (size_t)derlen, NULL, 0, &key);
        BIO_free(b);
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(der);
    }
    if (rv == MKS_OK && key->label == NULL && (key->label = strdup("")) == NULL)
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
    if (rv == MKS_OK && params->auth_len > 0) {
        memcpy(TK(key)->auth, params->auth, params->auth_len);
        TK(key)->auth_len = params->auth_len;
    }
    if (rv == MKS_OK) {
        *out = key;
        key = NULL;
    }
    mks_key_free(key);
    return rv;
}

mks_rv mks_tpm_keygen(mks_ctx *ctx, const mks_tpm_keygen_params *params, char **pem,
                      size_t *pem_len, mks_key **out)
{
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_PUBLIC tmpl = {0};
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    unsigned char pubbuf[sizeof(TPM2B_PUBLIC)], privbuf[sizeof(TPM2B_PRIVATE)];
    size_t publen = 0, privlen = 0;
    mks_tss2_key file = {0};
    mks_rv rv;

    *pem = NULL;
    *out = NULL;
    rv = keygen_template(params, &tmpl, &sens);
    if (rv != MKS_OK)
        return rv;
    rv = tpm2_create_key(ctx, &sens, &tmpl, params->persist, &priv, &pub);
    if (rv != MKS_OK)
        goto done;
    if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, pubbuf, sizeof(pubbuf), &publen) != TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_PRIVATE_Marshal(priv, privbuf, sizeof(privbuf), &privlen) !=
            TSS2_RC_SUCCESS) {
        rv = mks_error(MKS_ERR_GENERAL, "cannot marshal the new TPM key");
        goto done;
    }
    file.empty_auth = params->auth_len == 0;
    file.parent = TPM2_OWNER;
    file.pub = pubbuf;
    file.pub_len = publen;
    file.priv = privbuf;
    file.priv_len = privlen;
    rv = mks_tss2_encode_pem(&file, pem, pem_len);
    if (rv == MKS_OK)
        rv = key_of_new(ctx, params, *pem, pub, out);
done:
    if (rv != MKS_OK) {
        free(*pem);
        *pem = NULL;
    }
    mks_cleanse(&sens, sizeof(sens));
    mks_cleanse(privbuf, sizeof(privbuf));
    Esys_Free(priv);
    Esys_Free(pub);
    return rv;
}

mks_rv mks_tpm_evict(mks_ctx *ctx, uint32_t handle)
{
    tpm2_state *st;
    ESYS_TR h = ESYS_TR_NONE, none = ESYS_TR_NONE;
    mks_rv rv;
    TSS2_RC rc;

    rv = tpm2_lock(ctx, &st);
    if (rv != MKS_OK)
        return rv;
    rc =
        TPM2(Esys_TR_FromTPMPublic, st->esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &h);
    if (rc == TSS2_RC_SUCCESS)
        rc = TPM2(Esys_EvictControl, st->esys, ESYS_TR_RH_OWNER, h, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                  ESYS_TR_NONE, handle, &none);
    rv = rc == TSS2_RC_SUCCESS ? MKS_OK : tpm2_fail(rc, "TPM2_EvictControl");
    tpm2_unlock(st);
    return rv;
}

mks_rv mks_tpm_list_persistent(mks_ctx *ctx, mks_tpm_persistent **out, size_t *count)
{
    tpm2_state *st;
    TPMS_CAPABILITY_DATA *cap = NULL;
    TPMI_YES_NO more = TPM2_NO;
    mks_tpm_persistent *v = NULL;
    size_t n = 0;
    UINT32 i;
    mks_rv rv;
    TSS2_RC rc;

    *out = NULL;
    *count = 0;
    rv = tpm2_lock(ctx, &st);
    if (rv != MKS_OK)
        return rv;
    rc = TPM2(Esys_GetCapability, st->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
              TPM2_CAP_HANDLES, PERSISTENT_FIRST, TPM2_MAX_CAP_HANDLES, &more, &cap);
    if (rc != TSS2_RC_SUCCESS) {
        rv = tpm2_fail(rc, "TPM2_GetCapability(handles)");
        goto done;
    }
    v = calloc(cap->data.handles.count + 1, sizeof(*v));
    if (v == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < cap->data.handles.count; i++) {
        TPM2_HANDLE th = cap->data.handles.handle[i];
        ESYS_TR h = ESYS_TR_NONE;
        TPM2B_PUBLIC *pub = NULL;
        mks_tpm_persistent *e = &v[n];
        if (th > PERSISTENT_LAST)
            break;
        rc =
            TPM2(Esys_TR_FromTPMPublic, st->esys, th, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &h);
        if (rc == TSS2_RC_SUCCESS)
            rc = TPM2(Esys_ReadPublic, st->esys, h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub,
                      NULL, NULL);
        if (h != ESYS_TR_NONE)
            Esys_TR_Close(st->esys, &h);
        if (rc != TSS2_RC_SUCCESS)
            continue;
        /* Storage keys (restricted decrypt) are parents, not mTLS keys. */
        if ((pub->publicArea.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) &&
            !(pub->publicArea.objectAttributes & TPMA_OBJECT_RESTRICTED)) {
            e->handle = th;
            snprintf(e->uri, sizeof(e->uri), MKS_TPM_URI_SCHEME "handle=0x%08x", th);
            if (pub->publicArea.type == TPM2_ALG_RSA) {
                e->type = MKS_KEY_RSA;
                e->bits = pub->publicArea.parameters.rsaDetail.keyBits;
            } else if (pub->publicArea.type == TPM2_ALG_ECC) {
                const char *c = curve_name(pub->publicArea.parameters.eccDetail.curveID, &e->bits);
                e->type = MKS_KEY_EC;
                snprintf(e->curve, sizeof(e->curve), "%s", c != NULL ? c : "?");
            }
            n++;
        }
        Esys_Free(pub);
    }
    *out = v;
    *count = n;
    v = NULL;
    rv = MKS_OK;
done:
    tpm2_unlock(st);
    free(v);
    Esys_Free(cap);
    return rv;
}
