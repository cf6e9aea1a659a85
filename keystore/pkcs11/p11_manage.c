/*
 * PKCS#11 objects as things an operator manages: relabelling and destroying
 * what a URI names (key renewal hands a label from one key pair to the
 * next; deletion removes a pair), and storing CA certificates of a key's
 * chain beside it.
 */
#include "p11.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define MANAGE_MAX 256

/* The order objects are changed in: the private key first. */
static const struct {
    mks_obj_class cls;
    CK_OBJECT_CLASS ck;
    const char *name;
} class_order[] = {
    {MKS_OBJ_PRIVATE_KEY, CKO_PRIVATE_KEY, "private key"},
    {MKS_OBJ_PUBLIC_KEY, CKO_PUBLIC_KEY, "public key"},
    {MKS_OBJ_CERTIFICATE, CKO_CERTIFICATE, "certificate"},
};

#define NCLASSES (sizeof(class_order) / sizeof(class_order[0]))

typedef enum manage_op { MANAGE_SET_LABEL, MANAGE_DESTROY } manage_op;

/* The classes a URI allows: `classes`, narrowed by its type= when present.
 * Returns 0 when the URI has no id= and no object=. */
static int uri_scope(P11KitUri *uri, unsigned classes, unsigned *out)
{
    CK_ULONG n = 0, i;
    CK_ATTRIBUTE *a = p11_kit_uri_get_attributes(uri, &n);
    int names_objects = 0;

    *out = classes;
    for (i = 0; i < n; i++) {
        if (a[i].type == CKA_ID || a[i].type == CKA_LABEL)
            names_objects = 1;
        if (a[i].type == CKA_CLASS && a[i].ulValueLen == sizeof(CK_OBJECT_CLASS)) {
            CK_OBJECT_CLASS c = *(CK_OBJECT_CLASS *)a[i].pValue;
            unsigned only = 0;
            size_t k;

            for (k = 0; k < NCLASSES; k++)
                if (class_order[k].ck == c)
                    only = class_order[k].cls;
            *out &= only;
        }
    }
    return names_objects;
}

/* The URI's attributes without its class, plus CKA_CLASS = *cls, in t[]
 * (room for nmax). */
static CK_ULONG class_template(P11KitUri *uri, CK_OBJECT_CLASS *cls, CK_ATTRIBUTE *t, CK_ULONG nmax)
{
    CK_ULONG n = 0, i, m = 0;
    CK_ATTRIBUTE *a = p11_kit_uri_get_attributes(uri, &n);

    for (i = 0; i < n && m + 1 < nmax; i++)
        if (a[i].type != CKA_CLASS)
            t[m++] = a[i];
    t[m].type = CKA_CLASS;
    t[m].pValue = cls;
    t[m].ulValueLen = sizeof(*cls);
    return m + 1;
}

/* One token: every matching object of the allowed classes, changed in class order. */
typedef struct manage_token_op {
    p11_op op;
    P11KitUri *uri;
    unsigned classes;
    manage_op what;
    const char *new_label;
    size_t *count;
    int runs;
} manage_token_op;

/* In a run after a loss: 1 when the object carries new_label already (an
 * earlier run relabelled and counted it). */
static int relabelled(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      const char *new_label)
{
    unsigned char *v = NULL;
    size_t len = 0;
    int same = p11_get_attr(tok, s, h, CKA_LABEL, &v, &len) == MKS_OK && len == strlen(new_label) &&
               memcmp(v, new_label, len) == 0;

    free(v);
    return same;
}

static mks_rv change(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, manage_op what,
                     const char *new_label)
{
    CK_ATTRIBUTE la;
    CK_RV crv;

    if (what == MANAGE_DESTROY) {
        crv = P11(tok->mod, C_DestroyObject, s, h);
        return crv == CKR_OK ? MKS_OK : p11_fail(crv, "C_DestroyObject", tok);
    }
    la.type = CKA_LABEL;
    la.pValue = (void *)new_label;
    la.ulValueLen = strlen(new_label);
    crv = P11(tok->mod, C_SetAttributeValue, s, h, &la, 1);
    return crv == CKR_OK ? MKS_OK : p11_fail(crv, "C_SetAttributeValue(CKA_LABEL)", tok);
}

/* Destroyed objects are not found again after a loss; relabelled ones may be
 * (a URI without object=) and are skipped then, so that none counts twice. */
static mks_rv manage_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    manage_token_op *m = (manage_token_op *)op;
    int again = m->runs++ > 0 && m->what == MANAGE_SET_LABEL;
    mks_rv rv = MKS_OK;
    size_t k;

    for (k = 0; rv == MKS_OK && k < NCLASSES; k++) {
        CK_OBJECT_CLASS ck = class_order[k].ck;
        CK_ATTRIBUTE t[16];
        CK_OBJECT_HANDLE found[MANAGE_MAX];
        CK_ULONG nt, nfound = 0, i;

        if (!(m->classes & class_order[k].cls))
            continue;
        nt = class_template(m->uri, &ck, t, sizeof(t) / sizeof(t[0]));
        rv = p11_find_objects(tok, s, t, nt, found, MANAGE_MAX, &nfound);
        for (i = 0; rv == MKS_OK && i < nfound; i++) {
            if (again && relabelled(tok, s, found[i], m->new_label))
                continue;
            rv = change(tok, s, found[i], m->what, m->new_label);
            if (rv != MKS_OK)
                mks_error_prefix("%s %zu of %lu", class_order[k].name, (size_t)i + 1,
                                 (unsigned long)nfound);
            else
                (*m->count)++;
        }
    }
    return rv;
}

static mks_rv manage_on_token(p11_token *tok, P11KitUri *uri, unsigned classes, manage_op what,
                              const char *new_label, const mks_pin_ui *pin, size_t *count)
{
    manage_token_op m = {.op = {.login = 1,
                                .pin_source = p11_kit_uri_get_pin_source(uri),
                                .pin = pin,
                                .run = manage_run},
                         .uri = uri,
                         .classes = classes,
                         .what = what,
                         .new_label = new_label,
                         .count = count};

    return p11_session_run(tok, &m.op);
}

static mks_rv manage(mks_ctx *ctx, const char *uristr, unsigned classes, manage_op op,
                     const char *new_label, const mks_pin_ui *pin, size_t *count)
{
    P11KitUri *uri = NULL;
    p11_token **toks = NULL;
    size_t ntok = 0, i, done = 0;
    unsigned scope;
    mks_rv rv;

    if (count != NULL)
        *count = 0;
    if (op == MANAGE_SET_LABEL && (new_label == NULL || *new_label == '\0'))
        return mks_error(MKS_ERR_ARG, "the new label is empty");
    rv = p11_uri_parse(uristr, &uri);
    if (rv != MKS_OK)
        return rv;
    if (!uri_scope(uri, classes, &scope)) {
        rv = mks_error(MKS_ERR_ARG,
                       "'%s' names no objects (id= or object= is needed); refusing to %s "
                       "everything on a token",
                       uristr, op == MANAGE_DESTROY ? "destroy" : "relabel");
        goto done;
    }
    if (scope == 0)
        goto done;
    rv = p11_uri_tokens(ctx, uri, &toks, &ntok);
    for (i = 0; rv == MKS_OK && i < ntok; i++)
        rv = manage_on_token(toks[i], uri, scope, op, new_label, pin, &done);
    if (count != NULL)
        *count = done;
    if (rv == MKS_OK)
        mks_error_clear();
done:
    free(toks);
    p11_kit_uri_free(uri);
    return rv;
}

mks_rv mks_objects_set_label(mks_ctx *ctx, const char *uri, unsigned classes, const char *new_label,
                             const mks_pin_ui *pin, size_t *count)
{
    return manage(ctx, uri, classes, MANAGE_SET_LABEL, new_label, pin, count);
}

mks_rv mks_objects_destroy(mks_ctx *ctx, const char *uri, unsigned classes, const mks_pin_ui *pin,
                           size_t *count)
{
    return manage(ctx, uri, classes, MANAGE_DESTROY, NULL, pin, count);
}

/* ---- CA certificates ------------------------------------------------------ */

/* 1 when a certificate labelled `label` with exactly this DER is on the token. */
static mks_rv cert_present(p11_token *tok, CK_SESSION_HANDLE s, const char *label,
                           const unsigned char *der, size_t der_len, int *present)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_ATTRIBUTE t[2] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE found[MANAGE_MAX];
    CK_ULONG n = 0, i;
    mks_rv rv;

    *present = 0;
    rv = p11_find_objects(tok, s, t, 2, found, MANAGE_MAX, &n);
    for (i = 0; rv == MKS_OK && i < n && !*present; i++) {
        unsigned char *v = NULL;
        size_t vlen = 0;

        rv = p11_get_attr(tok, s, found[i], CKA_VALUE, &v, &vlen);
        if (rv == MKS_OK && vlen == der_len && memcmp(v, der, der_len) == 0)
            *present = 1;
        free(v);
    }
    return rv;
}

/* A CA certificate, stored unless the same one carries the label already. */
typedef struct authority_op {
    p11_op op;
    const char *label;
    const unsigned char *der;
    size_t der_len;
    CK_ATTRIBUTE *tmpl;
    CK_ULONG ntmpl;
} authority_op;

static mks_rv authority_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    authority_op *a = (authority_op *)op;
    CK_OBJECT_HANDLE h;
    int present = 0;
    mks_rv rv;
    CK_RV crv;

    rv = cert_present(tok, s, a->label, a->der, a->der_len, &present);
    if (rv != MKS_OK || present)
        return rv;
    crv = P11(tok->mod, C_CreateObject, s, a->tmpl, a->ntmpl, &h);
    if (crv == CKR_OK)
        return MKS_OK;
    rv = p11_fail(crv, "C_CreateObject(CA certificate)", tok);
    if (rv == MKS_ERR_NO_SPACE)
        mks_error_prefix("the token has no room for another certificate");
    return rv;
}

mks_rv mks_cert_store_authority(mks_ctx *ctx, const char *token_uri, const char *label,
                                const unsigned char *der, size_t der_len, const mks_pin_ui *pin)
{
    P11KitUri *uri = NULL;
    p11_token *tok = NULL;
    const unsigned char *p = der;
    X509 *x = NULL;
    unsigned char *subj = NULL, *issuer = NULL, *serial = NULL;
    int subj_len, issuer_len, serial_len;
    const ASN1_OCTET_STRING *ski;
    mks_rv rv;

    if (label == NULL || *label == '\0')
        return mks_error(MKS_ERR_ARG, "a certificate needs a label");
    x = der != NULL ? d2i_X509(NULL, &p, (long)der_len) : NULL;
    if (x == NULL || p != der + der_len) {
        rv = mks_error(MKS_ERR_ARG, "not a single X.509 certificate");
        goto done;
    }
    subj_len = i2d_X509_NAME(X509_get_subject_name(x), &subj);
    issuer_len = i2d_X509_NAME(X509_get_issuer_name(x), &issuer);
    serial_len = i2d_ASN1_INTEGER(X509_get_serialNumber(x), &serial);
    if (subj_len <= 0 || issuer_len <= 0 || serial_len <= 0) {
        rv = mks_error(MKS_ERR_ARG, "cannot encode the certificate's names");
        goto done;
    }
    rv = p11_one_token(ctx, token_uri, &uri, &tok);
    if (rv != MKS_OK)
        goto done;
    ski = X509_get0_subject_key_id(x);
    {
        CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
        CK_CERTIFICATE_TYPE ctype = CKC_X_509;
        CK_ULONG category = 2; /* CK_CERTIFICATE_CATEGORY_AUTHORITY */
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        CK_ATTRIBUTE t[] = {
            {CKA_CLASS, &cls, sizeof(cls)},
            {CKA_CERTIFICATE_TYPE, &ctype, sizeof(ctype)},
            {CKA_TOKEN, &yes, sizeof(yes)},
            {CKA_PRIVATE, &no, sizeof(no)},
            {CKA_MODIFIABLE, &yes, sizeof(yes)},
            {CKA_LABEL, (void *)label, strlen(label)},
            {CKA_SUBJECT, subj, (CK_ULONG)subj_len},
            {CKA_ISSUER, issuer, (CK_ULONG)issuer_len},
            {CKA_SERIAL_NUMBER, serial, (CK_ULONG)serial_len},
            {CKA_VALUE, (void *)der, der_len},
            {CKA_CERTIFICATE_CATEGORY, &category, sizeof(category)},
            /* last, so that it can be left out */
            {CKA_ID, NULL, 0},
        };
        authority_op a = {.op = {.login = 1,
                                 .pin_source = p11_kit_uri_get_pin_source(uri),
                                 .pin = pin,
                                 .run = authority_run},
                          .label = label,
                          .der = der,
                          .der_len = der_len,
                          .tmpl = t,
                          .ntmpl = sizeof(t) / sizeof(t[0])};

        if (ski != NULL && ASN1_STRING_length(ski) > 0) {
            t[a.ntmpl - 1].pValue = (void *)ASN1_STRING_get0_data(ski);
            t[a.ntmpl - 1].ulValueLen = (CK_ULONG)ASN1_STRING_length(ski);
        } else {
            a.ntmpl--;
        }
        rv = p11_session_run(tok, &a.op);
    }
done:
    if (rv == MKS_OK)
        mks_error_clear();
    p11_kit_uri_free(uri);
    X509_free(x);
    OPENSSL_free(subj);
    OPENSSL_free(issuer);
    OPENSSL_free(serial);
    return rv;
}
