/*
 * KEYMGMT "RSA" and "EC": key objects whose private half stays in hardware.
 *
 * A key object holds the keystore key and a public-only EVP_PKEY (from the
 * key's SubjectPublicKeyInfo) in the provider's private library context.
 * Everything public is answered by that EVP_PKEY; export never hands out a
 * private half, because OpenSSL would otherwise copy the public half into
 * the default provider and fail there with "missing private key"
 * (openssl#16614).
 */
#include "prov.h"

#include <stdatomic.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/x509.h>

#define MKS_OBJREF_MAGIC UINT64_C(0x6d746c736b736b31) /* "mtlskssk1" */

struct mks_keyobj {
    atomic_int refs;
    mks_prov *prov;
    mks_key_type type;
    mks_key *key; /* NULL: public key imported from software */
    EVP_PKEY *pub;
    int bits;
    mks_rv failed; /* MKS_OK, or why the key could not be opened (failed_msg) */
    char *failed_msg;
};

static OSSL_FUNC_keymgmt_new_fn mks_rsa_keymgmt_new;
static OSSL_FUNC_keymgmt_new_fn mks_ec_keymgmt_new;
static OSSL_FUNC_keymgmt_free_fn mks_keymgmt_free;
static OSSL_FUNC_keymgmt_load_fn mks_rsa_keymgmt_load;
static OSSL_FUNC_keymgmt_load_fn mks_ec_keymgmt_load;
static OSSL_FUNC_keymgmt_has_fn mks_keymgmt_has;
static OSSL_FUNC_keymgmt_match_fn mks_keymgmt_match;
static OSSL_FUNC_keymgmt_import_fn mks_keymgmt_import;
static OSSL_FUNC_keymgmt_import_types_fn mks_rsa_keymgmt_import_types;
static OSSL_FUNC_keymgmt_import_types_fn mks_ec_keymgmt_import_types;
static OSSL_FUNC_keymgmt_export_fn mks_keymgmt_export;
static OSSL_FUNC_keymgmt_export_types_fn mks_rsa_keymgmt_export_types;
static OSSL_FUNC_keymgmt_export_types_fn mks_ec_keymgmt_export_types;
static OSSL_FUNC_keymgmt_get_params_fn mks_keymgmt_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn mks_rsa_keymgmt_gettable_params;
static OSSL_FUNC_keymgmt_gettable_params_fn mks_ec_keymgmt_gettable_params;
static OSSL_FUNC_keymgmt_query_operation_name_fn mks_rsa_keymgmt_query_operation_name;
static OSSL_FUNC_keymgmt_query_operation_name_fn mks_ec_keymgmt_query_operation_name;
static OSSL_FUNC_keymgmt_dup_fn mks_keymgmt_dup;

/* ---- the key object ------------------------------------------------------ */

static mks_keyobj *keyobj_new(mks_prov *prov, mks_key_type type)
{
    mks_keyobj *k = OPENSSL_zalloc(sizeof(*k));

    if (k == NULL) {
        mks_raise(prov, MKS_R_NOMEM, "cannot allocate a key object");
        return NULL;
    }
    atomic_init(&k->refs, 1);
    k->prov = prov;
    k->type = type;
    return k;
}

/* What to call a keystore key in messages: its URI, else its label (TPM keys
 * from a file have no URI: the file is their name). */
static const char *key_name(const mks_key *key)
{
    const char *s = mks_key_get0_uri(key);

    if (s == NULL || *s == '\0')
        s = mks_key_get0_label(key);
    return s != NULL && *s != '\0' ? s : "the TPM key";
}

mks_keyobj *mks_keyobj_from_key(mks_prov *prov, mks_key *key)
{
    mks_keyobj *k = NULL, *ret = NULL;
    const unsigned char *spki, *p;
    size_t spki_len = 0;
    mks_key_type type = mks_key_get_type(key);

    if (type != MKS_KEY_RSA && type != MKS_KEY_EC) {
        mks_raise(prov, MKS_R_UNSUPPORTED, "key %s is neither RSA nor EC", key_name(key));
        goto done;
    }
    k = keyobj_new(prov, type);
    if (k == NULL)
        goto done;
    spki = mks_key_get0_spki(key, &spki_len);
    p = spki;
    if (spki == NULL || spki_len == 0 || spki_len > 0x7fffffff ||
        (k->pub = d2i_PUBKEY_ex(NULL, &p, (long)spki_len, prov->libctx, NULL)) == NULL ||
        p != spki + spki_len) {
        mks_raise(prov, MKS_R_OPENSSL, "cannot decode the public key of %s", key_name(key));
        goto done;
    }
    if (!EVP_PKEY_is_a(k->pub, type == MKS_KEY_RSA ? "RSA" : "EC")) {
        mks_raise(prov, MKS_R_WRONG_KEY_TYPE, "the public key of %s is not of the key's type",
                  key_name(key));
        goto done;
    }
    k->bits = EVP_PKEY_get_bits(k->pub);
    k->key = key;
    key = NULL;
    ret = k;
    k = NULL;
done:
    ERR_set_mark();
    mks_key_free(key);
    ERR_pop_to_mark();
    mks_keyobj_free(k);
    return ret;
}

mks_keyobj *mks_keyobj_up_ref(mks_keyobj *k)
{
    if (k != NULL)
        atomic_fetch_add(&k->refs, 1);
    return k;
}

void mks_keyobj_free(mks_keyobj *k)
{
    if (k == NULL || atomic_fetch_sub(&k->refs, 1) != 1)
        return;
    EVP_PKEY_free(k->pub);
    OPENSSL_free(k->failed_msg);
    ERR_set_mark();
    mks_key_free(k->key);
    ERR_pop_to_mark();
    OPENSSL_clear_free(k, sizeof(*k));
}

mks_key_type mks_keyobj_type(const mks_keyobj *k)
{
    return k->type;
}

mks_key *mks_keyobj_key(const mks_keyobj *k)
{
    return k->key;
}

int mks_keyobj_has_private(const mks_keyobj *k)
{
    return k != NULL && k->key != NULL && mks_key_is_private(k->key);
}

EVP_PKEY *mks_keyobj_pub(const mks_keyobj *k)
{
    return k->pub;
}

int mks_keyobj_bits(const mks_keyobj *k)
{
    return k->bits;
}

const char *mks_keyobj_name(const mks_keyobj *k)
{
    return k->key != NULL ? key_name(k->key) : "software public key";
}

/* ---- references ------------------------------------------------------------ */

int mks_objref_pass(mks_keyobj *key, const char *desc, OSSL_CALLBACK *cb, void *cbarg)
{
    mks_objref ref;
    OSSL_PARAM params[5], *p = params;
    int objtype = OSSL_OBJECT_PKEY;
    int ok;

    ref.magic = MKS_OBJREF_MAGIC;
    ref.key = key;
    *p++ = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &objtype);
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
                                            key->type == MKS_KEY_RSA ? "RSA" : "EC", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &ref, sizeof(ref));
    if (desc != NULL && *desc != '\0')
        *p++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, (char *)desc, 0);
    *p = OSSL_PARAM_construct_end();
    ok = cb(params, cbarg);
    /* Not taken by a KEYMGMT load (the caller skipped the object): ours to free. */
    mks_keyobj_free(ref.key);
    return ok;
}

static mks_keyobj *objref_get(const void *reference, size_t reference_sz)
{
    const mks_objref *ref = reference;

    if (ref == NULL || reference_sz != sizeof(*ref) || ref->magic != MKS_OBJREF_MAGIC)
        return NULL;
    return ref->key;
}

static int export_public(const mks_keyobj *k, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    OSSL_PARAM *params = NULL;
    int ok;

    if (k->pub == NULL)
        return 0;
    if (!EVP_PKEY_todata(k->pub,
                         (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0
                             ? EVP_PKEY_PUBLIC_KEY
                             : EVP_PKEY_KEY_PARAMETERS,
                         &params))
        return 0;
    ok = cb(params, cbarg);
    OSSL_PARAM_free(params);
    return ok;
}

int mks_objref_export(mks_prov *prov, const void *ref, size_t ref_sz, OSSL_CALLBACK *cb,
                      void *cbarg)
{
    const mks_keyobj *k = objref_get(ref, ref_sz);

    /* A private key stays where it is: OpenSSL then loads it into our own
     * KEYMGMT instead of a public-only copy elsewhere. No error raised: this
     * refusal is an expected step of OpenSSL's fallback. */
    if (k == NULL || mks_keyobj_has_private(k))
        return 0;
    return export_public(k, OSSL_KEYMGMT_SELECT_PUBLIC_KEY, cb, cbarg);
}

/* ---- KEYMGMT functions -------------------------------------------------------- */

static void *mks_rsa_keymgmt_new(void *provctx)
{
    return keyobj_new(provctx, MKS_KEY_RSA);
}

static void *mks_ec_keymgmt_new(void *provctx)
{
    return keyobj_new(provctx, MKS_KEY_EC);
}

static void mks_keymgmt_free(void *keydata)
{
    mks_keyobj_free(keydata);
}

/* Takes the key object out of the reference: ownership passes exactly once. */
static void *keymgmt_load(const void *reference, size_t reference_sz, mks_key_type type)
{
    mks_objref *ref = (mks_objref *)reference;
    mks_keyobj *k = objref_get(reference, reference_sz);

    if (k == NULL || k->type != type)
        return NULL;
    /* A key that could not be opened is taken too: its failure is raised
     * when it is used (mks_keyobj_usable), where the user sees it. */
    ref->key = NULL;
    return k;
}

int mks_keyobj_usable(const mks_keyobj *k)
{
    if (k == NULL)
        return 0;
    if (k->failed != MKS_OK) {
        mks_raise(k->prov, mks_reason_of(k->failed), "%s", k->failed_msg);
        return 0;
    }
    return 1;
}

mks_keyobj *mks_keyobj_failed(mks_prov *prov, mks_key_type type, mks_rv rv, const char *msg)
{
    mks_keyobj *k = OPENSSL_zalloc(sizeof(*k));

    if (k == NULL)
        return NULL;
    atomic_init(&k->refs, 1);
    k->prov = prov;
    k->type = type;
    k->failed = rv;
    k->failed_msg = OPENSSL_strdup(msg != NULL && *msg != '\0' ? msg : mks_rv_name(rv));
    if (k->failed_msg == NULL) {
        OPENSSL_free(k);
        return NULL;
    }
    return k;
}

static void *mks_rsa_keymgmt_load(const void *reference, size_t reference_sz)
{
    return keymgmt_load(reference, reference_sz, MKS_KEY_RSA);
}

static void *mks_ec_keymgmt_load(const void *reference, size_t reference_sz)
{
    return keymgmt_load(reference, reference_sz, MKS_KEY_EC);
}

static int mks_keymgmt_has(const void *keydata, int selection)
{
    const mks_keyobj *k = keydata;
    int ok = 1;

    if (k == NULL)
        return 0;
    /* A key that could not be opened stands for one that should be there:
     * it is accepted, and its first use reports why it cannot serve. */
    if (k->failed != MKS_OK)
        return 1;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0)
        ok = ok && k->pub != NULL;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
        ok = ok && mks_keyobj_has_private(k);
    if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0)
        ok = ok && k->pub != NULL;
    return ok;
}

static int mks_keymgmt_match(const void *keydata1, const void *keydata2, int selection)
{
    const mks_keyobj *k1 = keydata1, *k2 = keydata2;

    if (!mks_keyobj_usable(k1) || !mks_keyobj_usable(k2))
        return 0;
    if (k1 == NULL || k2 == NULL || k1->type != k2->type || k1->pub == NULL || k2->pub == NULL)
        return 0;
    /* A matching public half implies the matching private half. */
    if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0)
        return EVP_PKEY_eq(k1->pub, k2->pub) == 1;
    if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) != 0)
        return EVP_PKEY_parameters_eq(k1->pub, k2->pub) == 1;
    return 1;
}

/*
 * Public-only import, so that EVP_PKEY_eq(certificate key, our key) can
 * compare (OpenSSL copies the certificate's key into our KEYMGMT). The
 * result signs nothing. Private halves are never imported: keys are made in
 * hardware.
 */
static int mks_keymgmt_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    mks_keyobj *k = keydata;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    int ok = 0;

    if (k == NULL)
        return 0;
    if (k->pub != NULL || k->key != NULL) {
        mks_raise(k->prov, MKS_R_BAD_STATE, "cannot import into a key object that has a key");
        goto done;
    }
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) == 0) {
        mks_raise(k->prov, MKS_R_UNSUPPORTED, "only public keys can be imported");
        goto done;
    }
    if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL ||
        OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL) {
        mks_raise(k->prov, MKS_R_UNSUPPORTED,
                  "private keys cannot be imported; create them in hardware");
        goto done;
    }
    pctx = EVP_PKEY_CTX_new_from_name(k->prov->libctx, k->type == MKS_KEY_RSA ? "RSA" : "EC", NULL);
    if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, (OSSL_PARAM *)params) != 1) {
        mks_raise(k->prov, MKS_R_OPENSSL, "cannot import the public key");
        goto done;
    }
    k->pub = pkey;
    k->bits = EVP_PKEY_get_bits(pkey);
    pkey = NULL;
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(pctx);
    return ok;
}

static int mks_keymgmt_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    const mks_keyobj *k = keydata;

    if (!mks_keyobj_usable(k))
        return 0;
    /* No error raised: OpenSSL tries this export on purpose and falls back
     * to our own operations when it fails. */
    if (k == NULL || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0)
        return 0;
    return export_public(k, selection, cb, cbarg);
}

static const OSSL_PARAM rsa_key_types[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM ec_key_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *mks_rsa_keymgmt_import_types(int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 ? rsa_key_types : NULL;
}

static const OSSL_PARAM *mks_ec_keymgmt_import_types(int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) != 0 ? ec_key_types : NULL;
}

static const OSSL_PARAM *mks_rsa_keymgmt_export_types(int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0 ? rsa_key_types : NULL;
}

static const OSSL_PARAM *mks_ec_keymgmt_export_types(int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0 ? ec_key_types : NULL;
}

static int mks_keymgmt_get_params(void *keydata, OSSL_PARAM params[])
{
    const mks_keyobj *k = keydata;
    OSSL_PARAM *p;

    if (k == NULL || k->pub == NULL)
        return 0;
    /* The public half knows bits, security bits, n/e, group, point, ... */
    if (!EVP_PKEY_get_params(k->pub, params)) {
        mks_raise(k->prov, MKS_R_OPENSSL, "cannot read the parameters of %s", mks_keyobj_name(k));
        return 0;
    }
    p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE);
    if (p != NULL && !OSSL_PARAM_set_int(p, EVP_PKEY_get_size(k->pub)))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST);
    if (p != NULL && !OSSL_PARAM_set_utf8_string(p, "SHA256"))
        return 0;
    return 1;
}

static const OSSL_PARAM rsa_gettable[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM ec_gettable[] = {
    OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, NULL),
    OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, NULL),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_PUB_X, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_EC_PUB_Y, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *mks_rsa_keymgmt_gettable_params(void *provctx)
{
    return rsa_gettable;
}

static const OSSL_PARAM *mks_ec_keymgmt_gettable_params(void *provctx)
{
    return ec_gettable;
}

static const char *mks_rsa_keymgmt_query_operation_name(int operation_id)
{
    return "RSA";
}

static const char *mks_ec_keymgmt_query_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? "ECDSA" : NULL;
}

/* Key objects are immutable once made: a duplicate is another reference. */
static void *mks_keymgmt_dup(const void *keydata_from, int selection)
{
    mks_keyobj *k = (mks_keyobj *)keydata_from;

    if (k == NULL || (k->pub == NULL && k->key == NULL))
        return NULL;
    return mks_keyobj_up_ref(k);
}

const OSSL_DISPATCH mks_rsa_keymgmt_functions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))mks_rsa_keymgmt_new},
    {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))mks_keymgmt_free},
    {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))mks_rsa_keymgmt_load},
    {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))mks_keymgmt_has},
    {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))mks_keymgmt_match},
    {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))mks_keymgmt_import},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))mks_rsa_keymgmt_import_types},
    {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))mks_keymgmt_export},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))mks_rsa_keymgmt_export_types},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))mks_keymgmt_get_params},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))mks_rsa_keymgmt_gettable_params},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))mks_rsa_keymgmt_query_operation_name},
    {OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))mks_keymgmt_dup},
    {0, NULL},
};

const OSSL_DISPATCH mks_ec_keymgmt_functions[] = {
    {OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))mks_ec_keymgmt_new},
    {OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))mks_keymgmt_free},
    {OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))mks_ec_keymgmt_load},
    {OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))mks_keymgmt_has},
    {OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))mks_keymgmt_match},
    {OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))mks_keymgmt_import},
    {OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))mks_ec_keymgmt_import_types},
    {OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))mks_keymgmt_export},
    {OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))mks_ec_keymgmt_export_types},
    {OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))mks_keymgmt_get_params},
    {OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))mks_ec_keymgmt_gettable_params},
    {OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))mks_ec_keymgmt_query_operation_name},
    {OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))mks_keymgmt_dup},
    {0, NULL},
};
