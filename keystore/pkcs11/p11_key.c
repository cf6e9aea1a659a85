/*
 * PKCS#11 objects: finding them by URI, keys (open, sign, decrypt, generate,
 * destroy) and certificates.
 */
#include "p11.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

/* The PKCS#11 part of a key. */
typedef struct p11_key {
    p11_token *tok;
    char *pin_source;     /* the URI's pin-source, if any */
    pthread_mutex_t lock; /* guards handle and gen */
    CK_OBJECT_HANDLE handle;
    unsigned long gen;
} p11_key;

#define P11K(key) ((p11_key *)(key)->be)

static const mks_key_ops p11_key_ops;

static const mks_curve_def *curve_by_params(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    ASN1_OBJECT *oid = d2i_ASN1_OBJECT(NULL, &p, (long)len);
    int nid;

    if (oid == NULL)
        return NULL;
    nid = OBJ_obj2nid(oid);
    ASN1_OBJECT_free(oid);
    return mks_curve_by_nid(nid);
}

/* ---- URIs -------------------------------------------------------------- */

static mks_rv parse_uri(const char *s, P11KitUri **out)
{
    P11KitUri *uri;
    int r;

    *out = NULL;
    if (s == NULL || strncmp(s, "pkcs11:", 7) != 0)
        return mks_error(MKS_ERR_ARG, "'%s' is not a pkcs11: URI", s != NULL ? s : "(null)");
    uri = p11_kit_uri_new();
    if (uri == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    r = p11_kit_uri_parse(s, P11_KIT_URI_FOR_ANY, uri);
    if (r != P11_KIT_URI_OK) {
        p11_kit_uri_free(uri);
        return mks_error(MKS_ERR_ARG, "malformed PKCS#11 URI '%s': %s", s, p11_kit_uri_message(r));
    }
    if (p11_kit_uri_any_unrecognized(uri)) {
        p11_kit_uri_free(uri);
        return mks_error(MKS_ERR_ARG,
                         "PKCS#11 URI '%s' has an attribute this keystore does "
                         "not know; refusing to guess which object it means",
                         s);
    }
    *out = uri;
    return MKS_OK;
}

/* URI naming one object: the token's identity, id, label and class. */
static char *object_uri(const CK_TOKEN_INFO *tinfo, CK_OBJECT_CLASS cls, const unsigned char *id,
                        size_t id_len, const char *label)
{
    P11KitUri *uri = p11_kit_uri_new();
    CK_ATTRIBUTE a;
    char *s = NULL;

    if (uri == NULL)
        return NULL;
    memcpy(p11_kit_uri_get_token_info(uri), tinfo, sizeof(*tinfo));
    if (id != NULL && id_len > 0) {
        a.type = CKA_ID;
        a.pValue = (void *)id;
        a.ulValueLen = id_len;
        p11_kit_uri_set_attribute(uri, &a);
    }
    if (label != NULL && *label != '\0') {
        a.type = CKA_LABEL;
        a.pValue = (void *)label;
        a.ulValueLen = strlen(label);
        p11_kit_uri_set_attribute(uri, &a);
    }
    a.type = CKA_CLASS;
    a.pValue = &cls;
    a.ulValueLen = sizeof(cls);
    p11_kit_uri_set_attribute(uri, &a);
    if (p11_kit_uri_format(uri, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s) != P11_KIT_URI_OK)
        s = NULL;
    p11_kit_uri_free(uri);
    return s;
}

/* ---- attributes and searches ------------------------------------------- */

mks_rv p11_get_attr(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                    unsigned char **val, size_t *len)
{
    CK_ATTRIBUTE a = {type, NULL, 0};
    CK_RV crv;

    *val = NULL;
    *len = 0;
    crv = P11(tok->mod, C_GetAttributeValue, s, o, &a, 1);
    if (crv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        return p11_fail(crv == CKR_OK ? CKR_ATTRIBUTE_TYPE_INVALID : crv, "C_GetAttributeValue",
                        tok);
    a.pValue = malloc(a.ulValueLen + 1);
    if (a.pValue == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    crv = P11(tok->mod, C_GetAttributeValue, s, o, &a, 1);
    if (crv != CKR_OK) {
        free(a.pValue);
        return p11_fail(crv, "C_GetAttributeValue", tok);
    }
    ((unsigned char *)a.pValue)[a.ulValueLen] = '\0';
    *val = a.pValue;
    *len = a.ulValueLen;
    return MKS_OK;
}

/* Reads a CK_ULONG attribute (class, key type). A token failure is reported
 * as one: a device error must not pass for "no such key". */
static mks_rv get_ulong(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                        CK_ATTRIBUTE_TYPE type, CK_ULONG *out)
{
    CK_ATTRIBUTE a = {type, out, sizeof(*out)};
    CK_RV crv = P11(tok->mod, C_GetAttributeValue, s, o, &a, 1);

    if (crv != CKR_OK)
        return p11_fail(crv, "C_GetAttributeValue", tok);
    return MKS_OK;
}

static int get_bool(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type)
{
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE a = {type, &v, sizeof(v)};

    if (P11(tok->mod, C_GetAttributeValue, s, o, &a, 1) != CKR_OK)
        return -1;
    return v == CK_TRUE;
}

#define FIND_MAX 256

static mks_rv find_handles(p11_token *tok, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                           CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *count)
{
    CK_RV crv;

    *count = 0;
    crv = P11(tok->mod, C_FindObjectsInit, s, tmpl, n);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_FindObjectsInit", tok);
    crv = P11(tok->mod, C_FindObjects, s, out, max, count);
    P11(tok->mod, C_FindObjectsFinal, s);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_FindObjects", tok);
    return MKS_OK;
}

/* ---- public halves ------------------------------------------------------ */

static mks_rv spki_rsa(mks_ctx *ctx, const unsigned char *n, size_t nlen, const unsigned char *e,
                       size_t elen, unsigned char **spki, size_t *len, int *bits)
{
    mks_rv rv = mks_spki_rsa(mks_ctx_libctx(ctx), n, nlen, e, elen, spki, len, bits);

    if (rv != MKS_OK)
        mks_error_prefix("RSA key on the token");
    return rv;
}

static mks_rv spki_ec(mks_ctx *ctx, const mks_curve_def *cd, const unsigned char *point,
                      size_t plen, unsigned char **spki, size_t *len)
{
    mks_rv rv;
    const unsigned char *pt = point;
    ASN1_OCTET_STRING *os = NULL;
    size_t field = ((size_t)cd->bits + 7) / 8;

    /* CKA_EC_POINT is a DER OCTET STRING; some tokens give the raw point. */
    if (!(plen == 2 * field + 1 && point[0] == 0x04)) {
        os = d2i_ASN1_OCTET_STRING(NULL, &pt, (long)plen);
        if (os == NULL)
            return mks_error(MKS_ERR_GENERAL, "the token's EC point is not an OCTET STRING");
        point = ASN1_STRING_get0_data(os);
        plen = (size_t)ASN1_STRING_length(os);
    }
    rv = mks_spki_ec(mks_ctx_libctx(ctx), cd->name, point, plen, spki, len);
    ASN1_OCTET_STRING_free(os);
    return rv;
}

/* SPKI DER of a certificate (DER), with its key type, bits and curve. */
static mks_rv spki_from_cert(mks_ctx *ctx, const unsigned char *der, size_t len,
                             unsigned char **spki, size_t *spki_len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    unsigned char *out = NULL;
    int n;

    if (x == NULL)
        return mks_error(MKS_ERR_ARG, "not an X.509 certificate (DER)");
    n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &out);
    X509_free(x);
    if (n <= 0)
        return mks_error(MKS_ERR_ARG, "the certificate's public key cannot be encoded");
    *spki = out;
    *spki_len = (size_t)n;
    return MKS_OK;
}

/* Key type, bits and curve of an SPKI. */
static mks_rv spki_describe(mks_ctx *ctx, const unsigned char *spki, size_t len, mks_key_type *type,
                            int *bits, char *curve, size_t curvesz)
{
    const unsigned char *p = spki;
    EVP_PKEY *pkey = d2i_PUBKEY_ex(NULL, &p, (long)len, mks_ctx_libctx(ctx), NULL);
    char group[64];

    if (pkey == NULL)
        return mks_error(MKS_ERR_ARG, "malformed public key");
    *bits = EVP_PKEY_get_bits(pkey);
    curve[0] = '\0';
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        *type = MKS_KEY_RSA;
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        const mks_curve_def *cd;
        *type = MKS_KEY_EC;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                           NULL) &&
            (cd = mks_curve_by_name(group)) != NULL)
            snprintf(curve, curvesz, "%s", cd->name);
    } else {
        *type = MKS_KEY_NONE;
    }
    EVP_PKEY_free(pkey);
    return MKS_OK;
}

/*
 * The public half of a key object: for RSA from the object itself; for EC
 * from CKA_EC_POINT, which private keys lack, so from the public key object
 * or certificate with the same CKA_ID.
 */
static mks_rv key_public(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o,
                         CK_OBJECT_CLASS cls, mks_key_type *type, int *bits, char *curve,
                         size_t curvesz, unsigned char **spki, size_t *spki_len)
{
    mks_ctx *ctx = tok->ctx;
    mks_rv rv;
    CK_KEY_TYPE kt = (CK_ULONG)-1;
    unsigned char *a = NULL, *b = NULL, *id = NULL;
    size_t alen, blen, idlen;
    const mks_curve_def *cd;
    CK_OBJECT_HANDLE found[2];
    CK_ULONG nfound;

    *spki = NULL;
    curve[0] = '\0';
    rv = get_ulong(tok, s, o, CKA_KEY_TYPE, &kt);
    if (rv != MKS_OK)
        return rv;
    if (kt == CKK_RSA) {
        *type = MKS_KEY_RSA;
        rv = p11_get_attr(tok, s, o, CKA_MODULUS, &a, &alen);
        if (rv == MKS_OK)
            rv = p11_get_attr(tok, s, o, CKA_PUBLIC_EXPONENT, &b, &blen);
        if (rv == MKS_OK)
            rv = spki_rsa(ctx, a, alen, b, blen, spki, spki_len, bits);
        goto done;
    }
    if (kt != CKK_EC) {
        rv = mks_error(MKS_ERR_UNSUPPORTED, "key type 0x%lx is neither RSA nor EC",
                       (unsigned long)kt);
        goto done;
    }
    *type = MKS_KEY_EC;
    rv = p11_get_attr(tok, s, o, CKA_EC_PARAMS, &a, &alen);
    if (rv != MKS_OK)
        goto done;
    cd = curve_by_params(a, alen);
    if (cd == NULL) {
        rv = mks_error(MKS_ERR_UNSUPPORTED, "EC key on a curve other than P-256, P-384, P-521");
        goto done;
    }
    snprintf(curve, curvesz, "%s", cd->name);
    *bits = cd->bits;
    if (cls == CKO_PUBLIC_KEY) {
        rv = p11_get_attr(tok, s, o, CKA_EC_POINT, &b, &blen);
        if (rv == MKS_OK)
            rv = spki_ec(ctx, cd, b, blen, spki, spki_len);
        goto done;
    }
    rv = p11_get_attr(tok, s, o, CKA_ID, &id, &idlen);
    if (rv != MKS_OK || idlen == 0) {
        rv = mks_error(MKS_ERR_NOT_FOUND,
                       "EC private key without CKA_ID: cannot find its "
                       "public half (token '%s')",
                       tok->label);
        goto done;
    }
    {
        CK_OBJECT_CLASS pub = CKO_PUBLIC_KEY, crt = CKO_CERTIFICATE;
        CK_ATTRIBUTE t[2] = {{CKA_CLASS, &pub, sizeof(pub)}, {CKA_ID, id, idlen}};

        rv = find_handles(tok, s, t, 2, found, 2, &nfound);
        if (rv != MKS_OK)
            goto done;
        if (nfound > 0) {
            rv = p11_get_attr(tok, s, found[0], CKA_EC_POINT, &b, &blen);
            if (rv == MKS_OK)
                rv = spki_ec(ctx, cd, b, blen, spki, spki_len);
            goto done;
        }
        t[0].pValue = &crt;
        rv = find_handles(tok, s, t, 2, found, 2, &nfound);
        if (rv != MKS_OK)
            goto done;
        if (nfound > 0) {
            rv = p11_get_attr(tok, s, found[0], CKA_VALUE, &b, &blen);
            if (rv == MKS_OK)
                rv = spki_from_cert(ctx, b, blen, spki, spki_len);
            goto done;
        }
    }
    rv = mks_error(MKS_ERR_NOT_FOUND,
                   "no public key object or certificate with the EC "
                   "private key's CKA_ID on token '%s': its public half "
                   "is unknown",
                   tok->label);
done:
    free(a);
    free(b);
    free(id);
    return rv;
}

/* ---- finding objects ------------------------------------------------------ */

typedef struct obj_list {
    mks_object *v;
    size_t n, cap;
} obj_list;

static mks_rv obj_list_add(obj_list *l, mks_object **out)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        mks_object *v = realloc(l->v, cap * sizeof(*v));
        if (v == NULL)
            return mks_error(MKS_ERR_NOMEM, "out of memory");
        l->v = v;
        l->cap = cap;
    }
    *out = &l->v[l->n++];
    memset(*out, 0, sizeof(**out));
    return MKS_OK;
}

static mks_obj_class class_of(CK_OBJECT_CLASS c)
{
    switch (c) {
    case CKO_PRIVATE_KEY:
        return MKS_OBJ_PRIVATE_KEY;
    case CKO_PUBLIC_KEY:
        return MKS_OBJ_PUBLIC_KEY;
    case CKO_CERTIFICATE:
        return MKS_OBJ_CERTIFICATE;
    default:
        return 0;
    }
}

static mks_rv describe_object(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                              CK_OBJECT_CLASS cls, mks_object *o)
{
    mks_rv rv;
    unsigned char *label = NULL;
    size_t len;

    o->cls = class_of(cls);
    o->sensitive = -1;
    o->extractable = -1;
    snprintf(o->token_label, sizeof(o->token_label), "%s", tok->label);
    if (p11_get_attr(tok, s, h, CKA_LABEL, &label, &len) != MKS_OK) {
        label = (unsigned char *)strdup("");
        if (label == NULL)
            return mks_error(MKS_ERR_NOMEM, "out of memory");
    }
    o->label = (char *)label;
    if (p11_get_attr(tok, s, h, CKA_ID, &o->id, &o->id_len) != MKS_OK) {
        o->id = NULL;
        o->id_len = 0;
    }
    if (cls == CKO_CERTIFICATE) {
        rv = p11_get_attr(tok, s, h, CKA_VALUE, &o->der, &o->der_len);
        if (rv == MKS_OK) {
            unsigned char *spki = NULL;
            size_t spki_len = 0;
            if (spki_from_cert(tok->ctx, o->der, o->der_len, &spki, &spki_len) == MKS_OK) {
                (void)spki_describe(tok->ctx, spki, spki_len, &o->key_type, &o->bits, o->curve,
                                    sizeof(o->curve));
                OPENSSL_free(spki);
            }
        }
    } else {
        unsigned char *spki = NULL;
        size_t spki_len = 0;
        /* A key whose public half is unknown is still listed, without DER. */
        if (key_public(tok, s, h, cls, &o->key_type, &o->bits, o->curve, sizeof(o->curve), &spki,
                       &spki_len) == MKS_OK) {
            o->der = malloc(spki_len);
            if (o->der != NULL) {
                memcpy(o->der, spki, spki_len);
                o->der_len = spki_len;
            }
            OPENSSL_free(spki);
        }
        if (cls == CKO_PRIVATE_KEY) {
            o->sensitive = get_bool(tok, s, h, CKA_SENSITIVE);
            o->extractable = get_bool(tok, s, h, CKA_EXTRACTABLE);
        }
    }
    o->uri = object_uri(&tok->info, cls, o->id, o->id_len, o->label);
    if (o->uri == NULL)
        return mks_error(MKS_ERR_NOMEM, "cannot format the object's URI");
    mks_error_clear();
    return MKS_OK;
}

/* A search on one token, objects added to out from out->n == first on. */
typedef struct find_op {
    p11_op op;
    P11KitUri *uri;
    unsigned classes;
    int login_wanted;
    obj_list *out;
    size_t first;
} find_op;

static mks_rv find_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    find_op *f = (find_op *)op;
    CK_ULONG nattrs = 0, nfound = 0, i;
    CK_ATTRIBUTE *attrs = p11_kit_uri_get_attributes(f->uri, &nattrs);
    CK_OBJECT_HANDLE found[FIND_MAX];
    unsigned classes = f->classes;
    mks_rv rv;

    /* No PIN to be had: the public objects still. */
    if (f->login_wanted && !op->login)
        classes &= ~(unsigned)MKS_OBJ_PRIVATE_KEY;
    /* A run after a loss starts again from where this token's objects began. */
    while (f->out->n > f->first)
        mks_object_clear(&f->out->v[--f->out->n]);
    rv = find_handles(tok, s, attrs, nattrs, found, FIND_MAX, &nfound);
    for (i = 0; rv == MKS_OK && i < nfound; i++) {
        CK_OBJECT_CLASS cls = (CK_ULONG)-1;
        mks_object *o = NULL;

        rv = get_ulong(tok, s, found[i], CKA_CLASS, &cls);
        if (rv != MKS_OK)
            break;
        if (!(class_of(cls) & classes))
            continue;
        rv = obj_list_add(f->out, &o);
        if (rv == MKS_OK)
            rv = describe_object(tok, s, found[i], cls, o);
    }
    return rv;
}

/* Searches one token. */
static mks_rv find_on_token(p11_token *tok, P11KitUri *uri, unsigned classes, const mks_pin_ui *pin,
                            obj_list *out)
{
    find_op f = {
        .op = {.run = find_run}, .uri = uri, .classes = classes, .out = out, .first = out->n};

    f.op.pin_source = p11_kit_uri_get_pin_source(uri);
    f.op.pin = pin;
    if ((classes & MKS_OBJ_PRIVATE_KEY) && p11_token_login_required(tok)) {
        /* Listing public objects never forces a prompt; asking for keys does. */
        f.op.login = classes == MKS_OBJ_PRIVATE_KEY ||
                     p11_token_pin_available(tok, f.op.pin_source) ||
                     (pin != NULL && pin->cb != NULL);
        if (!f.op.login)
            f.classes &= ~(unsigned)MKS_OBJ_PRIVATE_KEY;
        f.op.login_optional = classes != MKS_OBJ_PRIVATE_KEY;
        f.login_wanted = f.op.login;
    }
    return p11_session_run(tok, &f.op);
}

/* Visits the tokens a URI names. */
static mks_rv tokens_for_uri(mks_ctx *ctx, P11KitUri *uri, p11_token ***out, size_t *count)
{
    mks_rv rv;
    CK_SLOT_ID *slots = NULL;
    size_t n = 0, i, m = 0;
    p11_token **toks = NULL;

    *out = NULL;
    *count = 0;
    rv = p11_match_slots(ctx, uri, &slots, &n);
    if (rv != MKS_OK)
        return rv;
    toks = calloc(n + 1, sizeof(*toks));
    if (toks == NULL) {
        free(slots);
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    }
    for (i = 0; i < n; i++) {
        CK_TOKEN_INFO tinfo;
        if (P11(mks_ctx_p11(ctx), C_GetTokenInfo, slots[i], &tinfo) != CKR_OK)
            continue;
        rv = p11_token_for_slot(ctx, slots[i], &tinfo, &toks[m]);
        if (rv != MKS_OK)
            break;
        m++;
    }
    free(slots);
    if (rv != MKS_OK) {
        free(toks);
        return rv;
    }
    *out = toks;
    *count = m;
    return MKS_OK;
}

/* Non-static doors to the helpers above, for p11_manage.c (declared in p11.h). */
mks_rv p11_uri_parse(const char *s, P11KitUri **out)
{
    return parse_uri(s, out);
}

mks_rv p11_uri_tokens(mks_ctx *ctx, P11KitUri *uri, p11_token ***out, size_t *count)
{
    return tokens_for_uri(ctx, uri, out, count);
}

mks_rv p11_find_objects(p11_token *tok, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                        CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *count)
{
    return find_handles(tok, s, tmpl, n, out, max, count);
}

mks_rv mks_objects_find(mks_ctx *ctx, const char *uristr, unsigned classes, const mks_pin_ui *pin,
                        mks_object **out, size_t *count)
{
    mks_rv rv;
    P11KitUri *uri = NULL;
    p11_token **toks = NULL;
    size_t ntok = 0, i;
    obj_list list = {0};

    *out = NULL;
    *count = 0;
    rv = parse_uri(uristr, &uri);
    if (rv != MKS_OK)
        return rv;
    rv = tokens_for_uri(ctx, uri, &toks, &ntok);
    for (i = 0; rv == MKS_OK && i < ntok; i++)
        rv = find_on_token(toks[i], uri, classes, pin, &list);
    if (rv != MKS_OK) {
        mks_objects_free(list.v, list.n);
        goto done;
    }
    *out = list.v;
    *count = list.n;
done:
    free(toks);
    p11_kit_uri_free(uri);
    return rv;
}

/* ---- keys ----------------------------------------------------------------- */

static mks_rv key_new(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_OBJECT_CLASS cls,
                      unsigned long gen, const char *pin_source, mks_key **out)
{
    mks_rv rv;
    mks_key *key = mks_key_alloc(tok->ctx, &p11_key_ops);
    p11_key *pk = calloc(1, sizeof(*pk));
    unsigned char *label = NULL;
    size_t len;

    if (key == NULL || pk == NULL) {
        free(pk);
        mks_key_free(key);
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    }
    key->be = pk;
    pthread_mutex_init(&pk->lock, NULL);
    pk->tok = tok;
    pk->handle = h;
    pk->gen = gen;
    key->is_private = cls == CKO_PRIVATE_KEY;
    snprintf(key->token_label, sizeof(key->token_label), "%s", tok->label);
    rv = key_public(tok, s, h, cls, &key->type, &key->bits, key->curve, sizeof(key->curve),
                    &key->spki, &key->spki_len);
    if (rv != MKS_OK)
        goto done;
    if (p11_get_attr(tok, s, h, CKA_LABEL, &label, &len) != MKS_OK)
        label = (unsigned char *)strdup("");
    key->label = (char *)label;
    if (p11_get_attr(tok, s, h, CKA_ID, &key->id, &key->id_len) != MKS_OK) {
        key->id = NULL;
        key->id_len = 0;
    }
    if (key->type == MKS_KEY_RSA) {
        key->sig_len = ((size_t)key->bits + 7) / 8;
        key->can_decrypt = key->is_private && get_bool(tok, s, h, CKA_DECRYPT) == 1;
    } else {
        key->sig_len = 2 * (((size_t)key->bits + 7) / 8);
    }
    key->uri = object_uri(&tok->info, cls, key->id, key->id_len, key->label);
    if (key->label == NULL || key->uri == NULL ||
        (pin_source != NULL && (pk->pin_source = strdup(pin_source)) == NULL)) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    mks_error_clear();
    *out = key;
    key = NULL;
done:
    mks_key_free(key);
    return rv;
}

static void p11_key_free_be(mks_key *key)
{
    p11_key *pk = P11K(key);

    if (pk == NULL)
        return;
    free(pk->pin_source);
    pthread_mutex_destroy(&pk->lock);
    free(pk);
}

/* The key objects a URI names on one token (two are enough to tell one from several). */
typedef struct key_find_op {
    p11_op op;
    P11KitUri *uri;
    CK_OBJECT_HANDLE found[2];
    CK_ULONG nfound;
} key_find_op;

static mks_rv key_find_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    key_find_op *f = (key_find_op *)op;
    CK_ULONG nattrs = 0;
    CK_ATTRIBUTE *attrs = p11_kit_uri_get_attributes(f->uri, &nattrs);

    return find_handles(tok, s, attrs, nattrs, f->found, 2, &f->nfound);
}

/* The mks_key for the object found. */
typedef struct key_new_op {
    p11_op op;
    CK_OBJECT_HANDLE h;
    CK_OBJECT_CLASS cls;
    unsigned long gen; /* of the session the object was found on */
    mks_key **out;
} key_new_op;

static mks_rv key_new_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    key_new_op *k = (key_new_op *)op;

    return key_new(tok, s, k->h, k->cls, k->gen, op->pin_source, k->out);
}

static mks_rv open_one(mks_ctx *ctx, const char *uristr, CK_OBJECT_CLASS cls, const mks_pin_ui *pin,
                       mks_key **out)
{
    mks_rv rv;
    P11KitUri *uri = NULL;
    p11_token **toks = NULL;
    size_t ntok = 0, i;
    p11_token *match_tok = NULL;
    CK_OBJECT_HANDLE match = CK_INVALID_HANDLE;
    unsigned long gen = 0;
    size_t matches = 0;
    const char *pin_source;
    const char *what = cls == CKO_PRIVATE_KEY ? "private key" : "public key";

    *out = NULL;
    rv = parse_uri(uristr, &uri);
    if (rv != MKS_OK)
        return rv;
    pin_source = p11_kit_uri_get_pin_source(uri);
    {
        CK_ULONG n = 0;
        CK_ATTRIBUTE *a = p11_kit_uri_get_attributes(uri, &n);
        for (i = 0; i < n; i++)
            if (a[i].type == CKA_CLASS && a[i].ulValueLen == sizeof(CK_OBJECT_CLASS) &&
                *(CK_OBJECT_CLASS *)a[i].pValue != cls) {
                rv = mks_error(MKS_ERR_ARG, "'%s' names no %s (its type= says otherwise)", uristr,
                               what);
                goto done;
            }
    }
    {
        CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};
        if (p11_kit_uri_set_attribute(uri, &a) != P11_KIT_URI_OK) {
            rv = mks_error(MKS_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    rv = tokens_for_uri(ctx, uri, &toks, &ntok);
    if (rv != MKS_OK)
        goto done;
    if (ntok == 0) {
        rv = mks_error(MKS_ERR_NOT_FOUND, "no token matches '%s'", uristr);
        goto done;
    }
    for (i = 0; i < ntok; i++) {
        key_find_op f = {.op = {.login = cls == CKO_PRIVATE_KEY,
                                .pin_source = pin_source,
                                .pin = pin,
                                .run = key_find_run},
                         .uri = uri};

        rv = p11_session_run(toks[i], &f.op);
        if (rv != MKS_OK)
            goto done;
        if (f.nfound > 0 && matches == 0) {
            match_tok = toks[i];
            match = f.found[0];
            gen = f.op.gen;
        }
        matches += f.nfound;
    }
    if (matches == 0) {
        rv = mks_error(MKS_ERR_NOT_FOUND, "no %s matches '%s'", what, uristr);
        goto done;
    }
    if (matches > 1) {
        rv = mks_error(MKS_ERR_AMBIGUOUS,
                       "'%s' matches more than one %s; add token=, id= or "
                       "object= to name one (see mtls-keystore list)",
                       uristr, what);
        goto done;
    }
    {
        key_new_op k = {.op = {.login = cls == CKO_PRIVATE_KEY,
                               .pin_source = pin_source,
                               .pin = pin,
                               .run = key_new_run},
                        .h = match,
                        .cls = cls,
                        .gen = gen,
                        .out = out};

        rv = p11_session_run(match_tok, &k.op);
    }
done:
    free(toks);
    p11_kit_uri_free(uri);
    return rv;
}

mks_rv mks_key_open(mks_ctx *ctx, const char *uri, const mks_pin_ui *pin, mks_key **out)
{
    return open_one(ctx, uri, CKO_PRIVATE_KEY, pin, out);
}

mks_rv mks_pubkey_open(mks_ctx *ctx, const char *uri, mks_key **out)
{
    return open_one(ctx, uri, CKO_PUBLIC_KEY, NULL, out);
}

/* The key's object handle valid for this generation of the token's handles:
 * after fork or a lost token, the object is found again by class and CKA_ID. */
static CK_RV key_handle(mks_key *key, CK_SESSION_HANDLE s, unsigned long gen, CK_OBJECT_HANDLE *h)
{
    CK_OBJECT_CLASS cls = key->is_private ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, key->id, key->id_len}};
    CK_OBJECT_HANDLE found[2];
    CK_ULONG n = 0;
    CK_RV crv;

    p11_key *pk = P11K(key);

    pthread_mutex_lock(&pk->lock);
    if (pk->gen == gen) {
        *h = pk->handle;
        pthread_mutex_unlock(&pk->lock);
        return CKR_OK;
    }
    pthread_mutex_unlock(&pk->lock);
    if (key->id_len == 0) {
        t[1].type = CKA_LABEL;
        t[1].pValue = key->label;
        t[1].ulValueLen = strlen(key->label);
    }
    crv = P11(pk->tok->mod, C_FindObjectsInit, s, t, 2);
    if (crv != CKR_OK)
        return crv;
    crv = P11(pk->tok->mod, C_FindObjects, s, found, 2, &n);
    P11(pk->tok->mod, C_FindObjectsFinal, s);
    if (crv != CKR_OK)
        return crv;
    if (n != 1)
        return CKR_KEY_HANDLE_INVALID;
    pthread_mutex_lock(&pk->lock);
    pk->handle = found[0];
    pk->gen = gen;
    pthread_mutex_unlock(&pk->lock);
    *h = found[0];
    return CKR_OK;
}

static void key_forget_handle(mks_key *key)
{
    p11_key *pk = P11K(key);

    pthread_mutex_lock(&pk->lock);
    pk->gen = 0;
    pthread_mutex_unlock(&pk->lock);
}

static CK_MECHANISM_TYPE hash_mech(mks_hash h)
{
    switch (h) {
    case MKS_HASH_SHA1:
        return CKM_SHA_1;
    case MKS_HASH_SHA224:
        return CKM_SHA224;
    case MKS_HASH_SHA256:
        return CKM_SHA256;
    case MKS_HASH_SHA384:
        return CKM_SHA384;
    case MKS_HASH_SHA512:
        return CKM_SHA512;
    default:
        return (CK_MECHANISM_TYPE)-1;
    }
}

static CK_RSA_PKCS_MGF_TYPE mgf_of(mks_hash h)
{
    switch (h) {
    case MKS_HASH_SHA1:
        return CKG_MGF1_SHA1;
    case MKS_HASH_SHA224:
        return CKG_MGF1_SHA224;
    case MKS_HASH_SHA256:
        return CKG_MGF1_SHA256;
    case MKS_HASH_SHA384:
        return CKG_MGF1_SHA384;
    case MKS_HASH_SHA512:
        return CKG_MGF1_SHA512;
    default:
        return 0;
    }
}

typedef struct mech_buf {
    CK_MECHANISM mech;
    CK_RSA_PKCS_PSS_PARAMS pss;
    CK_RSA_PKCS_OAEP_PARAMS oaep;
} mech_buf;

static mks_rv mech_for(const mks_key *key, const mks_mech_params *p, int decrypt, mech_buf *m)
{
    memset(m, 0, sizeof(*m));
    switch (p->mech) {
    case MKS_MECH_ECDSA:
        if (key->type != MKS_KEY_EC || decrypt)
            break;
        m->mech.mechanism = CKM_ECDSA;
        return MKS_OK;
    case MKS_MECH_RSA_PKCS1:
        if (key->type != MKS_KEY_RSA)
            break;
        m->mech.mechanism = CKM_RSA_PKCS;
        return MKS_OK;
    case MKS_MECH_RSA_PSS:
        if (key->type != MKS_KEY_RSA || decrypt || hash_mech(p->hash) == (CK_ULONG)-1)
            break;
        m->pss.hashAlg = hash_mech(p->hash);
        m->pss.mgf = mgf_of(p->mgf1_hash != MKS_HASH_NONE ? p->mgf1_hash : p->hash);
        m->pss.sLen = p->salt_len;
        m->mech.mechanism = CKM_RSA_PKCS_PSS;
        m->mech.pParameter = &m->pss;
        m->mech.ulParameterLen = sizeof(m->pss);
        return MKS_OK;
    case MKS_MECH_RSA_OAEP:
        if (key->type != MKS_KEY_RSA || !decrypt || hash_mech(p->hash) == (CK_ULONG)-1)
            break;
        m->oaep.hashAlg = hash_mech(p->hash);
        m->oaep.mgf = mgf_of(p->mgf1_hash != MKS_HASH_NONE ? p->mgf1_hash : p->hash);
        m->oaep.source = CKZ_DATA_SPECIFIED;
        m->oaep.pSourceData = p->label_len > 0 ? (void *)p->label : NULL;
        m->oaep.ulSourceDataLen = p->label_len;
        m->mech.mechanism = CKM_RSA_PKCS_OAEP;
        m->mech.pParameter = &m->oaep;
        m->mech.ulParameterLen = sizeof(m->oaep);
        return MKS_OK;
    }
    return mks_error(MKS_ERR_UNSUPPORTED, "mechanism not supported for this %s key",
                     key->type == MKS_KEY_RSA ? "RSA" : "EC");
}

/* One private-key operation (sign or decrypt) on a session. */
typedef struct key_op_call {
    p11_op op;
    mks_key *key;
    mech_buf *m;
    int decrypt;
    const unsigned char *in;
    size_t inlen;
    unsigned char *out;
    size_t *outlen;
} key_op_call;

static mks_rv key_op_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    key_op_call *c = (key_op_call *)op;
    const char *call = "C_FindObjects";
    CK_OBJECT_HANDLE h;
    CK_ULONG len = *c->outlen;
    mks_rv rv;
    CK_RV crv;

    crv = key_handle(c->key, s, op->gen, &h);
    if (crv == CKR_OK) {
        call = c->decrypt ? "C_DecryptInit" : "C_SignInit";
        crv = c->decrypt ? P11(tok->mod, C_DecryptInit, s, &c->m->mech, h)
                         : P11(tok->mod, C_SignInit, s, &c->m->mech, h);
    }
    if (crv == CKR_OK) {
        call = c->decrypt ? "C_Decrypt" : "C_Sign";
        crv = c->decrypt ? P11(tok->mod, C_Decrypt, s, (CK_BYTE_PTR)c->in, c->inlen, c->out, &len)
                         : P11(tok->mod, C_Sign, s, (CK_BYTE_PTR)c->in, c->inlen, c->out, &len);
    }
    if (crv == CKR_OK) {
        *c->outlen = len;
        return MKS_OK;
    }
    if (crv == CKR_KEY_HANDLE_INVALID || crv == CKR_OBJECT_HANDLE_INVALID)
        key_forget_handle(c->key); /* found again on the next run */
    rv = p11_fail(crv, call, tok);
    mks_error_prefix("key '%s'", c->key->label);
    return rv;
}

/* One private-key operation (sign or decrypt); a lost session, login or
 * handle is restored and the operation run once more (p11_session_run). */
static mks_rv key_op(mks_key *key, const mks_mech_params *p, int decrypt, const unsigned char *in,
                     size_t inlen, unsigned char *out, size_t *outlen)
{
    mech_buf m;
    key_op_call c = {.op = {.login = 1, .pin_source = P11K(key)->pin_source, .run = key_op_run},
                     .key = key,
                     .m = &m,
                     .decrypt = decrypt,
                     .in = in,
                     .inlen = inlen,
                     .out = out,
                     .outlen = outlen};
    mks_rv rv;

    if (!key->is_private)
        return mks_error(MKS_ERR_UNSUPPORTED, "%s is a public key; it cannot %s", key->uri,
                         decrypt ? "decrypt" : "sign");
    if (decrypt && !key->can_decrypt)
        return mks_error(MKS_ERR_UNSUPPORTED, "key %s may not decrypt (CKA_DECRYPT is false)",
                         key->uri);
    rv = mech_for(key, p, decrypt, &m);
    if (rv != MKS_OK)
        return rv;
    if (out == NULL) {
        *outlen = key->sig_len;
        return MKS_OK;
    }
    if (!decrypt && *outlen < key->sig_len)
        return mks_error(MKS_ERR_ARG, "signature buffer too small (%zu < %zu)", *outlen,
                         key->sig_len);
    return p11_session_run(P11K(key)->tok, &c.op);
}

static mks_rv p11_key_sign(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                           size_t inlen, unsigned char *sig, size_t *siglen)
{
    unsigned char di[MKS_DIGEST_INFO_MAX];
    const mks_hash_def *hd;
    mks_rv rv;

    /* PKCS#1 v1.5 over a hash: CKM_RSA_PKCS signs DigestInfo { algorithm, hash }. */
    if (p->mech == MKS_MECH_RSA_PKCS1 && p->hash != MKS_HASH_NONE && sig != NULL) {
        hd = mks_hash_get(p->hash);
        if (hd == NULL)
            return mks_error(MKS_ERR_UNSUPPORTED, "no DigestInfo for hash %d", (int)p->hash);
        rv = mks_digest_info(hd, in, inlen, di, &inlen);
        if (rv != MKS_OK)
            return rv;
        in = di;
    }
    return key_op(key, p, 0, in, inlen, sig, siglen);
}

static mks_rv p11_key_decrypt(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                              size_t inlen, unsigned char *out, size_t *outlen)
{
    return key_op(key, p, 1, in, inlen, out, outlen);
}

/* ---- key generation --------------------------------------------------------- */

mks_rv p11_one_token(mks_ctx *ctx, const char *uristr, P11KitUri **uri_out, p11_token **out)
{
    mks_rv rv;
    P11KitUri *uri = NULL;
    p11_token **toks = NULL;
    size_t n = 0;

    rv = parse_uri(uristr, &uri);
    if (rv != MKS_OK)
        return rv;
    rv = tokens_for_uri(ctx, uri, &toks, &n);
    if (rv == MKS_OK && n == 0)
        rv = mks_error(MKS_ERR_NOT_FOUND, "no initialised token matches '%s'", uristr);
    else if (rv == MKS_OK && n > 1)
        rv = mks_error(MKS_ERR_AMBIGUOUS, "'%s' matches %zu tokens; name one (token=, serial=)",
                       uristr, n);
    if (rv == MKS_OK)
        *out = toks[0];
    free(toks);
    if (rv == MKS_OK && uri_out != NULL) {
        *uri_out = uri;
        uri = NULL;
    }
    p11_kit_uri_free(uri);
    return rv;
}

static mks_rv label_taken(p11_token *tok, CK_SESSION_HANDLE s, const char *label)
{
    CK_ATTRIBUTE t[1] = {{CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE found[FIND_MAX];
    CK_ULONG n = 0, i;
    mks_rv rv = find_handles(tok, s, t, 1, found, FIND_MAX, &n);

    if (rv != MKS_OK)
        return rv;
    for (i = 0; i < n; i++) {
        CK_OBJECT_CLASS c = (CK_ULONG)-1;
        rv = get_ulong(tok, s, found[i], CKA_CLASS, &c);
        if (rv != MKS_OK)
            return rv;
        if (c == CKO_PRIVATE_KEY || c == CKO_PUBLIC_KEY || c == CKO_CERTIFICATE)
            return mks_error(MKS_ERR_EXISTS, "token '%s' already holds an object labelled '%s'",
                             tok->label, label);
    }
    return MKS_OK;
}

/* The key pair, made from the templates, its CKA_ID set from its public key. */
typedef struct keygen_op {
    p11_op op;
    const char *label;
    CK_MECHANISM *mech;
    CK_ATTRIBUTE *pubt, *privt;
    CK_ULONG npub, npriv;
    mks_key **out;
} keygen_op;

static mks_rv keygen_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    keygen_op *g = (keygen_op *)op;
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    unsigned char *spki = NULL, id[20];
    size_t spki_len = 0;
    mks_key_type t;
    int b;
    char c[16];
    mks_rv rv;
    CK_RV crv;

    rv = label_taken(tok, s, g->label);
    if (rv != MKS_OK)
        return rv;
    crv = P11(tok->mod, C_GenerateKeyPair, s, g->mech, g->pubt, g->npub, g->privt, g->npriv, &pub,
              &priv);
    if (crv != CKR_OK) {
        rv = p11_fail(crv, "C_GenerateKeyPair", tok);
        if (rv == MKS_ERR_NO_SPACE)
            mks_error_prefix("the token has no room for another key");
        return rv;
    }
    /* The pair exists now: a second run would make another one. */
    op->no_retry = 1;
    /* The ID comes from the public key, known only now: set it on both halves.
     * If that fails the pair is destroyed, never left without its ID. */
    rv = key_public(tok, s, pub, CKO_PUBLIC_KEY, &t, &b, c, sizeof(c), &spki, &spki_len);
    if (rv == MKS_OK)
        rv = mks_spki_id(mks_ctx_libctx(tok->ctx), spki, spki_len, id);
    if (rv == MKS_OK) {
        CK_ATTRIBUTE ida = {CKA_ID, id, sizeof(id)};
        crv = P11(tok->mod, C_SetAttributeValue, s, pub, &ida, 1);
        if (crv == CKR_OK)
            crv = P11(tok->mod, C_SetAttributeValue, s, priv, &ida, 1);
        if (crv != CKR_OK)
            rv = p11_fail(crv, "C_SetAttributeValue(CKA_ID)", tok);
    }
    if (rv == MKS_OK)
        rv = key_new(tok, s, priv, CKO_PRIVATE_KEY, op->gen, NULL, g->out);
    if (rv != MKS_OK) {
        P11(tok->mod, C_DestroyObject, s, priv);
        P11(tok->mod, C_DestroyObject, s, pub);
        mks_error_prefix("key generation undone");
    }
    OPENSSL_free(spki);
    return rv;
}

mks_rv mks_keygen(mks_ctx *ctx, const char *token_uri, const mks_keygen_params *kp,
                  const mks_pin_ui *pin, mks_key **out)
{
    mks_rv rv;
    p11_token *tok = NULL;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = 0;
    CK_BYTE e65537[] = {0x01, 0x00, 0x01};
    unsigned char ecparams[16];
    const mks_curve_def *cd = NULL;
    CK_MECHANISM mech = {0, NULL, 0};
    CK_ATTRIBUTE pubt[12], privt[12];
    CK_ULONG npub = 0, npriv = 0;
    size_t label_len;
    keygen_op g = {.op = {.login = 1, .pin = pin, .run = keygen_run}, .mech = &mech, .out = out};

    *out = NULL;
    if (kp == NULL || kp->label == NULL || *kp->label == '\0')
        return mks_error(MKS_ERR_ARG, "a key needs a label");
    label_len = strlen(kp->label);
    if (kp->type == MKS_KEY_EC) {
        unsigned char *p = ecparams;
        ASN1_OBJECT *oid;
        int n;
        cd = kp->curve != NULL ? mks_curve_by_name(kp->curve) : mks_curve_by_name("P-256");
        if (cd == NULL || cd->bits == 521)
            return mks_error(MKS_ERR_UNSUPPORTED, "EC curve '%s' is not supported (P-256, P-384)",
                             kp->curve);
        oid = OBJ_nid2obj(cd->nid);
        n = i2d_ASN1_OBJECT(oid, NULL);
        if (n <= 0 || (size_t)n > sizeof(ecparams))
            return mks_error(MKS_ERR_GENERAL, "cannot encode the curve OID");
        n = i2d_ASN1_OBJECT(oid, &p);
        mech.mechanism = CKM_EC_KEY_PAIR_GEN;
        pubt[npub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, ecparams, (CK_ULONG)n};
        pubt[npub++] = (CK_ATTRIBUTE){CKA_VERIFY, &yes, sizeof(yes)};
        pubt[npub++] = (CK_ATTRIBUTE){CKA_ENCRYPT, &no, sizeof(no)};
        /* Tokens default some usages to TRUE (SoftHSM: decrypt, unwrap,
         * derive); an mTLS key signs and nothing else. */
        privt[npriv++] = (CK_ATTRIBUTE){CKA_DECRYPT, &no, sizeof(no)};
        privt[npriv++] = (CK_ATTRIBUTE){CKA_DERIVE, &no, sizeof(no)};
    } else if (kp->type == MKS_KEY_RSA) {
        if (kp->bits != 2048 && kp->bits != 3072 && kp->bits != 4096)
            return mks_error(MKS_ERR_UNSUPPORTED, "RSA size %d is not supported (2048, 3072, 4096)",
                             kp->bits);
        bits = (CK_ULONG)kp->bits;
        mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
        pubt[npub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof(bits)};
        pubt[npub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, e65537, sizeof(e65537)};
        pubt[npub++] = (CK_ATTRIBUTE){CKA_VERIFY, &yes, sizeof(yes)};
        pubt[npub++] = (CK_ATTRIBUTE){CKA_ENCRYPT, &yes, sizeof(yes)};
        privt[npriv++] = (CK_ATTRIBUTE){CKA_DECRYPT, &yes, sizeof(yes)};
    } else {
        return mks_error(MKS_ERR_UNSUPPORTED, "key type must be RSA or EC");
    }
    pubt[npub++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    pubt[npub++] = (CK_ATTRIBUTE){CKA_PRIVATE, &no, sizeof(no)};
    pubt[npub++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)kp->label, label_len};
    privt[npriv++] = (CK_ATTRIBUTE){CKA_TOKEN, &yes, sizeof(yes)};
    privt[npriv++] = (CK_ATTRIBUTE){CKA_PRIVATE, &yes, sizeof(yes)};
    privt[npriv++] = (CK_ATTRIBUTE){CKA_SENSITIVE, &yes, sizeof(yes)};
    privt[npriv++] = (CK_ATTRIBUTE){CKA_EXTRACTABLE, &no, sizeof(no)};
    privt[npriv++] = (CK_ATTRIBUTE){CKA_SIGN, &yes, sizeof(yes)};
    privt[npriv++] = (CK_ATTRIBUTE){CKA_UNWRAP, &no, sizeof(no)};
    pubt[npub++] = (CK_ATTRIBUTE){CKA_WRAP, &no, sizeof(no)};
    privt[npriv++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)kp->label, label_len};

    rv = p11_one_token(ctx, token_uri, NULL, &tok);
    if (rv != MKS_OK)
        return rv;
    g.label = kp->label;
    g.pubt = pubt;
    g.privt = privt;
    g.npub = npub;
    g.npriv = npriv;
    return p11_session_run(tok, &g.op);
}

/* The key pair's objects, private then public, found by the key's CKA_ID. */
typedef struct destroy_op {
    p11_op op;
    mks_key *key;
} destroy_op;

static mks_rv destroy_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    mks_key *key = ((destroy_op *)op)->key;
    CK_OBJECT_CLASS classes[2] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY};
    mks_rv rv = MKS_OK;
    CK_RV crv;
    int i;

    for (i = 0; i < 2 && rv == MKS_OK; i++) {
        CK_ATTRIBUTE t[2] = {{CKA_CLASS, &classes[i], sizeof(classes[i])},
                             {CKA_ID, key->id, key->id_len}};
        CK_OBJECT_HANDLE found[FIND_MAX];
        CK_ULONG n = 0, j;
        rv = find_handles(tok, s, t, 2, found, FIND_MAX, &n);
        for (j = 0; rv == MKS_OK && j < n; j++) {
            crv = P11(tok->mod, C_DestroyObject, s, found[j]);
            if (crv != CKR_OK)
                rv = p11_fail(crv, "C_DestroyObject", tok);
        }
    }
    return rv;
}

/* A run after a loss finds what is left of the pair and destroys that. */
static mks_rv p11_key_destroy(mks_key *key)
{
    destroy_op d = {.op = {.login = 1, .pin_source = P11K(key)->pin_source, .run = destroy_run},
                    .key = key};
    mks_rv rv;

    if (key->id_len == 0)
        return mks_error(MKS_ERR_ARG, "key '%s' has no CKA_ID; not destroying by label alone",
                         key->label);
    rv = p11_session_run(P11K(key)->tok, &d.op);
    key_forget_handle(key);
    return rv;
}

/* ---- certificates ------------------------------------------------------------ */

/* The key's certificate, stored unless the same one carries the label already. */
typedef struct cert_op {
    p11_op op;
    const char *label;
    const unsigned char *der;
    size_t der_len;
    CK_ATTRIBUTE *tmpl;
    CK_ULONG ntmpl;
} cert_op;

static mks_rv cert_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    cert_op *c = (cert_op *)op;
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_LABEL, (void *)c->label, strlen(c->label)}};
    CK_OBJECT_HANDLE found[FIND_MAX], h;
    CK_ULONG n = 0, i;
    mks_rv rv;
    CK_RV crv;

    rv = find_handles(tok, s, t, 2, found, FIND_MAX, &n);
    for (i = 0; rv == MKS_OK && i < n; i++) {
        unsigned char *v = NULL;
        size_t vlen = 0;
        int same;
        rv = p11_get_attr(tok, s, found[i], CKA_VALUE, &v, &vlen);
        same = rv == MKS_OK && vlen == c->der_len && memcmp(v, c->der, c->der_len) == 0;
        free(v);
        if (rv == MKS_OK && same)
            return MKS_OK; /* the same certificate is there already */
        if (rv == MKS_OK)
            rv = mks_error(MKS_ERR_EXISTS,
                           "token '%s' already holds a certificate "
                           "labelled '%s'",
                           tok->label, c->label);
    }
    if (rv != MKS_OK)
        return rv;
    crv = P11(tok->mod, C_CreateObject, s, c->tmpl, c->ntmpl, &h);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_CreateObject(certificate)", tok);
    return MKS_OK;
}

static mks_rv p11_cert_import(mks_key *key, const char *label, const unsigned char *der,
                              size_t der_len)
{
    p11_token *tok = P11K(key)->tok;
    mks_ctx *ctx = key->ctx;
    mks_rv rv;
    const unsigned char *p = der;
    X509 *x = NULL;
    unsigned char *subj = NULL, *issuer = NULL, *serial = NULL, *spki = NULL;
    int subj_len, issuer_len, serial_len;
    size_t spki_len = 0;
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ctype = CKC_X_509;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;

    if (label == NULL || *label == '\0')
        return mks_error(MKS_ERR_ARG, "a certificate needs a label");
    x = d2i_X509(NULL, &p, (long)der_len);
    if (x == NULL || p != der + der_len) {
        X509_free(x);
        return mks_error(MKS_ERR_ARG, "not a single X.509 certificate");
    }
    rv = spki_from_cert(ctx, der, der_len, &spki, &spki_len);
    if (rv != MKS_OK)
        goto done;
    {
        const unsigned char *a = spki, *b = key->spki;
        EVP_PKEY *ka = d2i_PUBKEY_ex(NULL, &a, (long)spki_len, mks_ctx_libctx(ctx), NULL);
        EVP_PKEY *kb = d2i_PUBKEY_ex(NULL, &b, (long)key->spki_len, mks_ctx_libctx(ctx), NULL);
        int same = ka != NULL && kb != NULL && EVP_PKEY_eq(ka, kb) == 1;
        EVP_PKEY_free(ka);
        EVP_PKEY_free(kb);
        if (!same) {
            rv = mks_error(MKS_ERR_MISMATCH,
                           "the certificate's public key is not the public "
                           "key of '%s' (token '%s')",
                           key->label, tok->label);
            goto done;
        }
    }
    subj_len = i2d_X509_NAME(X509_get_subject_name(x), &subj);
    issuer_len = i2d_X509_NAME(X509_get_issuer_name(x), &issuer);
    serial_len = i2d_ASN1_INTEGER(X509_get_serialNumber(x), &serial);
    if (subj_len <= 0 || issuer_len <= 0 || serial_len <= 0) {
        rv = mks_error(MKS_ERR_ARG, "cannot encode the certificate's names");
        goto done;
    }
    {
        CK_ATTRIBUTE t[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype)},
            {CKA_TOKEN, &yes, sizeof(yes)},
            {CKA_PRIVATE, &no, sizeof(no)},
            {CKA_MODIFIABLE, &yes, sizeof(yes)},
            {CKA_LABEL, (void *)label, strlen(label)},
            {CKA_ID, key->id, key->id_len},
            {CKA_SUBJECT, subj, (CK_ULONG)subj_len},
            {CKA_ISSUER, issuer, (CK_ULONG)issuer_len},
            {CKA_SERIAL_NUMBER, serial, (CK_ULONG)serial_len},
            {CKA_VALUE, (void *)der, der_len},
        };
        cert_op c = {.op = {.login = 1, .pin_source = P11K(key)->pin_source, .run = cert_run},
                     .label = label,
                     .der = der,
                     .der_len = der_len,
                     .tmpl = t,
                     .ntmpl = sizeof(t) / sizeof(t[0])};

        rv = p11_session_run(tok, &c.op);
    }
done:
    X509_free(x);
    OPENSSL_free(subj);
    OPENSSL_free(issuer);
    OPENSSL_free(serial);
    OPENSSL_free(spki);
    return rv;
}

static const mks_key_ops p11_key_ops = {
    .backend = "pkcs11",
    .kind = MKS_BACKEND_PKCS11,
    .sign = p11_key_sign,
    .decrypt = p11_key_decrypt,
    .destroy = p11_key_destroy,
    .cert_import = p11_cert_import,
    .free_be = p11_key_free_be,
};
