/*
 * pkcs11: URIs for the keystore's users: the token part of a URI, a URI for
 * objects on a token, and a URI taken apart. p11-kit formats and parses, so
 * these URIs escape labels exactly as mks_objects_find reads them.
 */
#include "p11.h"

#include <stdlib.h>
#include <string.h>

void mks_free(void *p)
{
    free(p);
}

static const struct {
    unsigned cls;
    CK_OBJECT_CLASS ckc;
} classes[] = {
    {MKS_OBJ_PRIVATE_KEY, CKO_PRIVATE_KEY},
    {MKS_OBJ_PUBLIC_KEY, CKO_PUBLIC_KEY},
    {MKS_OBJ_CERTIFICATE, CKO_CERTIFICATE},
};

/* Drops what names objects and what is not part of a name (the query). */
static void keep_token_part(P11KitUri *uri)
{
    p11_kit_uri_clear_attributes(uri);
    p11_kit_uri_set_pin_source(uri, NULL);
    p11_kit_uri_set_pin_value(uri, NULL);
    p11_kit_uri_set_module_name(uri, NULL);
    p11_kit_uri_set_module_path(uri, NULL);
}

static mks_rv format_uri(P11KitUri *uri, char **out)
{
    int r = p11_kit_uri_format(uri, P11_KIT_URI_FOR_ANY, out);

    if (r == P11_KIT_URI_OK)
        return MKS_OK;
    *out = NULL;
    if (r == P11_KIT_URI_NO_MEMORY)
        return mks_error(MKS_ERR_NOMEM, "out of memory writing a pkcs11: URI");
    return mks_error(MKS_ERR_ARG, "cannot write a pkcs11: URI: %s", p11_kit_uri_message(r));
}

static mks_rv set_attr(P11KitUri *uri, CK_ATTRIBUTE_TYPE type, const void *val, size_t len)
{
    CK_ATTRIBUTE a = {type, (void *)val, (CK_ULONG)len};

    if (p11_kit_uri_set_attribute(uri, &a) != P11_KIT_URI_OK)
        return mks_error(MKS_ERR_NOMEM, "out of memory building a pkcs11: URI");
    return MKS_OK;
}

mks_rv mks_uri_token(const char *uristr, char **out)
{
    P11KitUri *uri = NULL;
    mks_rv rv;

    *out = NULL;
    rv = p11_uri_parse(uristr, &uri);
    if (rv != MKS_OK)
        return rv;
    keep_token_part(uri);
    rv = format_uri(uri, out);
    p11_kit_uri_free(uri);
    return rv;
}

mks_rv mks_uri_object(const char *token_uri, const char *label, const unsigned char *id,
                      size_t id_len, unsigned cls, char **out)
{
    P11KitUri *uri = NULL;
    CK_OBJECT_CLASS ckc = (CK_OBJECT_CLASS)-1;
    size_t i;
    mks_rv rv;

    *out = NULL;
    for (i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (classes[i].cls == cls)
            ckc = classes[i].ckc;
    if (cls != 0 && ckc == (CK_OBJECT_CLASS)-1)
        return mks_error(MKS_ERR_ARG, "an object URI names one class of objects, not 0x%x", cls);
    rv = p11_uri_parse(token_uri != NULL ? token_uri : "pkcs11:", &uri);
    if (rv != MKS_OK)
        return rv;
    p11_kit_uri_clear_attributes(uri);
    if (id != NULL && id_len > 0 && (rv = set_attr(uri, CKA_ID, id, id_len)) != MKS_OK)
        goto done;
    if (label != NULL && (rv = set_attr(uri, CKA_LABEL, label, strlen(label))) != MKS_OK)
        goto done;
    if (cls != 0 && (rv = set_attr(uri, CKA_CLASS, &ckc, sizeof(ckc))) != MKS_OK)
        goto done;
    rv = format_uri(uri, out);
done:
    p11_kit_uri_free(uri);
    return rv;
}

/* Copies attribute `type` of the URI into a NUL-terminated malloc'd buffer. */
static mks_rv dup_attr(P11KitUri *uri, CK_ATTRIBUTE_TYPE type, unsigned char **val, size_t *len)
{
    CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(uri, type);

    *val = NULL;
    if (a == NULL)
        return MKS_OK;
    *val = malloc(a->ulValueLen + 1);
    if (*val == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory reading a pkcs11: URI");
    if (a->ulValueLen > 0)
        memcpy(*val, a->pValue, a->ulValueLen);
    (*val)[a->ulValueLen] = '\0';
    if (len != NULL)
        *len = a->ulValueLen;
    return MKS_OK;
}

static mks_rv class_of_uri(P11KitUri *uri, const char *uristr, unsigned *cls)
{
    CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(uri, CKA_CLASS);
    CK_OBJECT_CLASS ckc;
    size_t i;

    *cls = 0;
    if (a == NULL)
        return MKS_OK;
    if (a->ulValueLen != sizeof(ckc))
        return mks_error(MKS_ERR_ARG, "malformed type= in PKCS#11 URI '%s'", uristr);
    memcpy(&ckc, a->pValue, sizeof(ckc));
    for (i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (classes[i].ckc == ckc) {
            *cls = classes[i].cls;
            return MKS_OK;
        }
    return mks_error(MKS_ERR_UNSUPPORTED,
                     "PKCS#11 URI '%s' names objects of a type the keystore does not keep "
                     "(it keeps type=private, public and cert)",
                     uristr);
}

mks_rv mks_uri_parse(const char *uristr, mks_uri_parts *out)
{
    P11KitUri *uri = NULL;
    const CK_TOKEN_INFO *ti;
    const char *pin_source;
    mks_rv rv;

    memset(out, 0, sizeof(*out));
    rv = p11_uri_parse(uristr, &uri);
    if (rv != MKS_OK)
        return rv;
    ti = p11_kit_uri_get_token_info(uri);
    mks_copy_padded(out->token_label, sizeof(out->token_label), ti->label, sizeof(ti->label));
    if ((rv = class_of_uri(uri, uristr, &out->cls)) != MKS_OK ||
        (rv = dup_attr(uri, CKA_LABEL, (unsigned char **)&out->label, NULL)) != MKS_OK ||
        (rv = dup_attr(uri, CKA_ID, &out->id, &out->id_len)) != MKS_OK)
        goto done;
    pin_source = p11_kit_uri_get_pin_source(uri);
    if (pin_source != NULL && (out->pin_source = strdup(pin_source)) == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory reading a pkcs11: URI");
        goto done;
    }
    keep_token_part(uri);
    rv = format_uri(uri, &out->token_uri);
done:
    p11_kit_uri_free(uri);
    if (rv != MKS_OK)
        mks_uri_parts_clear(out);
    return rv;
}

void mks_uri_parts_clear(mks_uri_parts *parts)
{
    if (parts == NULL)
        return;
    free(parts->token_uri);
    free(parts->label);
    free(parts->id);
    free(parts->pin_source);
    memset(parts, 0, sizeof(*parts));
}
