/*
 * STORE "pkcs11" and "tpmkey": OSSL_STORE_open("pkcs11:...") lists the keys
 * and certificates a PKCS#11 URI names, one object per load;
 * OSSL_STORE_open("tpmkey:handle=0x81000100") gives the persistent TPM key.
 *
 * The search runs at the first load, when OpenSSL hands us its passphrase
 * callback (the PIN prompt). Keys go out as references to our key objects;
 * certificates as DER.
 *
 * OSSL_STORE_find criteria narrow what a load returns: an alias (the
 * object's label, keys and certificates alike), and for certificates the
 * subject, the issuer and serial number, or the fingerprint (a digest of the
 * certificate, as `openssl x509 -fingerprint` shows it).
 */
#include "prov.h"

#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/store.h>
#include <openssl/x509.h>

static OSSL_FUNC_store_open_fn mks_pkcs11_store_open;
static OSSL_FUNC_store_open_fn mks_tpmkey_store_open;
static OSSL_FUNC_store_settable_ctx_params_fn mks_store_settable_ctx_params;
static OSSL_FUNC_store_set_ctx_params_fn mks_store_set_ctx_params;
static OSSL_FUNC_store_load_fn mks_store_load;
static OSSL_FUNC_store_eof_fn mks_store_eof;
static OSSL_FUNC_store_close_fn mks_store_close;
static OSSL_FUNC_store_export_object_fn mks_store_export_object;

typedef struct mks_store {
    mks_prov *prov;
    int tpm; /* a tpmkey: URI: one key, no search */
    char *uri;
    int expect; /* OSSL_STORE_INFO_* or 0 for anything */
    int searched;
    mks_object *objs;
    size_t count;
    size_t next;
    /* OSSL_STORE_find criteria; NULL: not given. */
    char *alias, *digest;
    unsigned char *subject, *issuer, *fingerprint;
    size_t subject_len, issuer_len, fingerprint_len;
    BIGNUM *serial;
} mks_store;

static void *store_open(mks_prov *prov, const char *uri, const char *scheme, int tpm)
{
    mks_store *st = NULL;
    size_t n = strlen(scheme);

    /* Only our schemes reach us (they are the algorithm names), but a loader
     * may be asked directly. */
    if (uri == NULL || strncasecmp(uri, scheme, n) != 0)
        return NULL;
    st = OPENSSL_zalloc(sizeof(*st));
    if (st == NULL || (st->uri = OPENSSL_strdup(uri)) == NULL) {
        OPENSSL_free(st);
        mks_raise(prov, MKS_R_NOMEM, "cannot open %s", uri);
        return NULL;
    }
    st->prov = prov;
    st->tpm = tpm;
    return st;
}

static void *mks_pkcs11_store_open(void *provctx, const char *uri)
{
    return store_open(provctx, uri, "pkcs11:", 0);
}

static void *mks_tpmkey_store_open(void *provctx, const char *uri)
{
    return store_open(provctx, uri, MKS_TPM_URI_SCHEME, 1);
}

static const OSSL_PARAM store_settable[] = {
    OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
    OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_ALIAS, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_STORE_PARAM_SUBJECT, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_STORE_PARAM_ISSUER, NULL, 0),
    OSSL_PARAM_BN(OSSL_STORE_PARAM_SERIAL, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_DIGEST, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_STORE_PARAM_FINGERPRINT, NULL, 0),
    OSSL_PARAM_END,
};

/* Copies an octet-string parameter (replacing an earlier value); 0 on failure. */
static int get_octets(const OSSL_PARAM *p, unsigned char **out, size_t *len)
{
    OPENSSL_free(*out);
    *out = NULL;
    *len = 0;
    return OSSL_PARAM_get_octet_string(p, (void **)out, 0, len);
}

/* Copies a UTF-8 parameter (replacing an earlier value); 0 on failure. */
static int get_utf8(const OSSL_PARAM *p, char **out)
{
    OPENSSL_free(*out);
    *out = NULL;
    return OSSL_PARAM_get_utf8_string(p, out, 0);
}

static const OSSL_PARAM *mks_store_settable_ctx_params(void *provctx)
{
    return store_settable;
}

static int mks_store_set_ctx_params(void *loaderctx, const OSSL_PARAM params[])
{
    mks_store *st = loaderctx;
    const OSSL_PARAM *p;

    if (params == NULL)
        return 1;
    p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT);
    if (p != NULL) {
        if (!OSSL_PARAM_get_int(p, &st->expect)) {
            mks_raise(st->prov, MKS_R_BAD_ARGUMENT, "bad value for '%s'", p->key);
            return 0;
        }
        if (!st->tpm && st->searched && st->next == 0) {
            /* Not loaded anything yet: search again with the new expectation. */
            mks_objects_free(st->objs, st->count);
            st->objs = NULL;
            st->count = 0;
            st->searched = 0;
        }
    }
    if (((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_ALIAS)) != NULL &&
         !get_utf8(p, &st->alias)) ||
        ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_SUBJECT)) != NULL &&
         !get_octets(p, &st->subject, &st->subject_len)) ||
        ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_ISSUER)) != NULL &&
         !get_octets(p, &st->issuer, &st->issuer_len)) ||
        ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_SERIAL)) != NULL &&
         !OSSL_PARAM_get_BN(p, &st->serial)) ||
        ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_DIGEST)) != NULL &&
         !get_utf8(p, &st->digest)) ||
        ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_FINGERPRINT)) != NULL &&
         !get_octets(p, &st->fingerprint, &st->fingerprint_len))) {
        mks_raise(st->prov, MKS_R_BAD_ARGUMENT, "bad value for the search criterion '%s'", p->key);
        return 0;
    }
    return 1;
}

/* DER of a certificate's name equals want. */
static int name_is(const X509_NAME *name, const unsigned char *want, size_t want_len)
{
    unsigned char *der = NULL;
    int n = i2d_X509_NAME(name, &der);
    int same = n > 0 && (size_t)n == want_len && memcmp(der, want, want_len) == 0;

    OPENSSL_free(der);
    return same;
}

/* 1 when the object meets the OSSL_STORE_find criteria. */
static int meets_criteria(const mks_store *st, const mks_object *o)
{
    const unsigned char *p;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    X509 *x;
    int ok;

    if (st->alias != NULL && (o->label == NULL || strcmp(o->label, st->alias) != 0))
        return 0;
    if (st->subject == NULL && st->issuer == NULL && st->serial == NULL && st->fingerprint == NULL)
        return 1;
    /* The other criteria describe certificates. */
    if (o->cls != MKS_OBJ_CERTIFICATE || o->der == NULL)
        return 0;
    if (st->fingerprint != NULL) {
        EVP_MD *md_alg = mks_md_fetch(st->prov, st->digest != NULL ? st->digest : "SHA1", NULL);

        ok = md_alg != NULL && EVP_Digest(o->der, o->der_len, md, &mdlen, md_alg, NULL) &&
             mdlen == st->fingerprint_len && memcmp(md, st->fingerprint, mdlen) == 0;
        EVP_MD_free(md_alg);
        if (!ok)
            return 0;
    }
    if (st->subject == NULL && st->issuer == NULL && st->serial == NULL)
        return 1;
    p = o->der;
    x = X509_new_ex(st->prov->libctx, NULL);
    if (x == NULL || d2i_X509(&x, &p, (long)o->der_len) == NULL) {
        X509_free(x);
        return 0;
    }
    ok = (st->subject == NULL || name_is(X509_get_subject_name(x), st->subject, st->subject_len)) &&
         (st->issuer == NULL || name_is(X509_get_issuer_name(x), st->issuer, st->issuer_len));
    if (ok && st->serial != NULL) {
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);

        ok = bn != NULL && BN_cmp(bn, st->serial) == 0;
        BN_free(bn);
    }
    X509_free(x);
    return ok;
}

static unsigned classes_for(int expect)
{
    switch (expect) {
    case 0:
        return MKS_OBJ_ANY;
    case OSSL_STORE_INFO_PKEY:
        return MKS_OBJ_PRIVATE_KEY;
    case OSSL_STORE_INFO_PUBKEY:
        return MKS_OBJ_PUBLIC_KEY;
    case OSSL_STORE_INFO_CERT:
        return MKS_OBJ_CERTIFICATE;
    default:
        return 0; /* names, parameters, CRLs: a token holds none */
    }
}

static int search(mks_store *st, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    mks_pw pw = {pw_cb, pw_cbarg};
    mks_pin_ui ui = mks_pin_ui_from_pw(&pw);
    unsigned classes = classes_for(st->expect);
    mks_ctx *ks;
    mks_rv rv;

    st->searched = 1;
    if (classes == 0)
        return 1;
    ks = mks_prov_keystore(st->prov);
    if (ks == NULL)
        return 0;
    ERR_set_mark();
    rv = mks_objects_find(ks, st->uri, classes, &ui, &st->objs, &st->count);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        st->objs = NULL;
        st->count = 0;
        mks_raise_ks(st->prov, rv);
        return 0;
    }
    if (st->count == 0 && st->expect == OSSL_STORE_INFO_PKEY) {
        /* The caller needs a private key and there is none: say so here, where
         * the URI is known, rather than leave a bare "could not read". An
         * empty list of anything else is just empty. */
        mks_raise(st->prov, MKS_R_NOT_FOUND, "no private key matches %s", st->uri);
        return 0;
    }
    return 1;
}

static int emit_cert(const mks_object *o, OSSL_CALLBACK *cb, void *cbarg)
{
    OSSL_PARAM params[4], *p = params;
    int objtype = OSSL_OBJECT_CERT;

    *p++ = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &objtype);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, o->der, o->der_len);
    if (o->label != NULL && *o->label != '\0')
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, o->label, 0);
    *p = OSSL_PARAM_construct_end();
    return cb(params, cbarg);
}

static int emit_key(mks_store *st, const mks_object *o, OSSL_CALLBACK *cb, void *cbarg,
                    OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    mks_pw pw = {pw_cb, pw_cbarg};
    mks_pin_ui ui = mks_pin_ui_from_pw(&pw);
    mks_key *key = NULL;
    mks_keyobj *k;
    mks_ctx *ks = mks_prov_keystore(st->prov);
    mks_rv rv;

    if (ks == NULL)
        return 0;
    ERR_set_mark();
    if (o->cls == MKS_OBJ_PRIVATE_KEY)
        rv = mks_key_open(ks, o->uri, &ui, &key);
    else
        rv = mks_pubkey_open(ks, o->uri, &key);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        mks_raise_ks(st->prov, rv);
        return 0;
    }
    k = mks_keyobj_from_key(st->prov, key);
    if (k == NULL)
        return 0;
    return mks_objref_pass(k, o->label, cb, cbarg);
}

/* A tpmkey: URI names one private key. */
static int load_tpm(mks_store *st, OSSL_CALLBACK *cb, void *cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                    void *pw_cbarg)
{
    mks_pw pw = {pw_cb, pw_cbarg};
    mks_pin_ui ui = mks_pin_ui_from_pw(&pw);
    mks_key *key = NULL;
    mks_keyobj *k;
    mks_ctx *ks;
    mks_rv rv;

    st->searched = 1; /* one object at most: eof from now on */
    if (st->expect != 0 && st->expect != OSSL_STORE_INFO_PKEY)
        return 1;
    ks = mks_prov_keystore(st->prov);
    if (ks == NULL)
        return 0;
    ERR_set_mark();
    rv = mks_tpm_key_open_uri(ks, st->uri, &ui, &key);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        mks_raise_ks(st->prov, rv);
        return 0;
    }
    k = mks_keyobj_from_key(st->prov, key);
    if (k == NULL)
        return 0;
    return mks_objref_pass(k, st->uri, cb, cbarg);
}

static int mks_store_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg,
                          OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    mks_store *st = loaderctx;

    if (st->tpm)
        return st->searched ? 1 : load_tpm(st, object_cb, object_cbarg, pw_cb, pw_cbarg);
    if (!st->searched && !search(st, pw_cb, pw_cbarg))
        return 0;
    while (st->next < st->count) {
        const mks_object *o = &st->objs[st->next++];

        if (!meets_criteria(st, o))
            continue;
        switch (o->cls) {
        case MKS_OBJ_CERTIFICATE:
            if (o->der == NULL || o->der_len == 0)
                continue;
            return emit_cert(o, object_cb, object_cbarg);
        case MKS_OBJ_PRIVATE_KEY:
        case MKS_OBJ_PUBLIC_KEY:
            /* Keys of other types (EdDSA, ...) are not ours to offer. */
            if (o->key_type != MKS_KEY_RSA && o->key_type != MKS_KEY_EC)
                continue;
            return emit_key(st, o, object_cb, object_cbarg, pw_cb, pw_cbarg);
        default:
            continue;
        }
    }
    return 1;
}

static int mks_store_eof(void *loaderctx)
{
    const mks_store *st = loaderctx;

    return st->searched && st->next >= st->count;
}

static int mks_store_close(void *loaderctx)
{
    mks_store *st = loaderctx;

    if (st == NULL)
        return 1;
    mks_objects_free(st->objs, st->count);
    OPENSSL_free(st->uri);
    OPENSSL_free(st->alias);
    OPENSSL_free(st->digest);
    OPENSSL_free(st->subject);
    OPENSSL_free(st->issuer);
    OPENSSL_free(st->fingerprint);
    BN_free(st->serial);
    OPENSSL_free(st);
    return 1;
}

static int mks_store_export_object(void *loaderctx, const void *objref, size_t objref_sz,
                                   OSSL_CALLBACK *export_cb, void *export_cbarg)
{
    const mks_store *st = loaderctx;

    return mks_objref_export(st->prov, objref, objref_sz, export_cb, export_cbarg);
}

const OSSL_DISPATCH mks_pkcs11_store_functions[] = {
    {OSSL_FUNC_STORE_OPEN, (void (*)(void))mks_pkcs11_store_open},
    {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))mks_store_settable_ctx_params},
    {OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))mks_store_set_ctx_params},
    {OSSL_FUNC_STORE_LOAD, (void (*)(void))mks_store_load},
    {OSSL_FUNC_STORE_EOF, (void (*)(void))mks_store_eof},
    {OSSL_FUNC_STORE_CLOSE, (void (*)(void))mks_store_close},
    {OSSL_FUNC_STORE_EXPORT_OBJECT, (void (*)(void))mks_store_export_object},
    {0, NULL},
};

const OSSL_DISPATCH mks_tpmkey_store_functions[] = {
    {OSSL_FUNC_STORE_OPEN, (void (*)(void))mks_tpmkey_store_open},
    {OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))mks_store_settable_ctx_params},
    {OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))mks_store_set_ctx_params},
    {OSSL_FUNC_STORE_LOAD, (void (*)(void))mks_store_load},
    {OSSL_FUNC_STORE_EOF, (void (*)(void))mks_store_eof},
    {OSSL_FUNC_STORE_CLOSE, (void (*)(void))mks_store_close},
    {OSSL_FUNC_STORE_EXPORT_OBJECT, (void (*)(void))mks_store_export_object},
    {0, NULL},
};
