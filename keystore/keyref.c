/*
 * Key reference files: a PEM "PKCS#11 PROVIDER URI" block holding
 *   SEQUENCE { desc VisibleString "PKCS#11 Provider URI v1.0", uri UTF8String }
 * the format pkcs11-provider writes, so files are interchangeable with it.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

typedef struct mks_keyref_st {
    ASN1_VISIBLESTRING *desc;
    ASN1_UTF8STRING *uri;
} MKS_KEYREF;

DECLARE_ASN1_FUNCTIONS(MKS_KEYREF)

ASN1_SEQUENCE(MKS_KEYREF) =
    {
        ASN1_SIMPLE(MKS_KEYREF, desc, ASN1_VISIBLESTRING),
        ASN1_SIMPLE(MKS_KEYREF, uri, ASN1_UTF8STRING),
} ASN1_SEQUENCE_END(MKS_KEYREF)

        IMPLEMENT_ASN1_FUNCTIONS(MKS_KEYREF)

            mks_rv mks_keyref_encode_pem(const char *uri, char **pem, size_t *pem_len)
{
    mks_rv rv = MKS_ERR_NOMEM;
    MKS_KEYREF *ref = NULL;
    unsigned char *der = NULL;
    int der_len;

    if (uri == NULL || strncmp(uri, "pkcs11:", 7) != 0)
        return mks_error(MKS_ERR_ARG, "key reference needs a pkcs11: URI");
    ref = MKS_KEYREF_new();
    if (ref == NULL)
        goto done;
    if (!ASN1_STRING_set(ref->desc, MKS_KEYREF_DESC, (int)strlen(MKS_KEYREF_DESC)) ||
        !ASN1_STRING_set(ref->uri, uri, (int)strlen(uri)))
        goto done;
    der_len = i2d_MKS_KEYREF(ref, &der);
    if (der_len <= 0)
        goto done;
    rv = mks_pem_encode(MKS_KEYREF_PEM_LABEL, der, (size_t)der_len, pem, pem_len);
    if (rv != MKS_OK)
        goto done;
    rv = MKS_OK;
done:
    if (rv != MKS_OK)
        mks_error(rv, "cannot encode the key reference");
    OPENSSL_free(der);
    MKS_KEYREF_free(ref);
    return rv;
}

mks_rv mks_keyref_decode_der(const unsigned char *der, size_t der_len, char **uri)
{
    mks_rv rv = MKS_ERR_ARG;
    const unsigned char *p = der;
    MKS_KEYREF *ref = NULL;
    const unsigned char *u;
    int ulen;

    *uri = NULL;
    if (der == NULL || der_len == 0 || der_len > 65536)
        return mks_error(MKS_ERR_ARG, "key reference: empty or oversized DER");
    ref = d2i_MKS_KEYREF(NULL, &p, (long)der_len);
    if (ref == NULL || p != der + der_len) {
        rv = mks_error(MKS_ERR_ARG, "key reference: not a SEQUENCE { VisibleString, "
                                    "UTF8String } (malformed DER: the file is damaged or cut "
                                    "short; 'mtls-keystore import-cert --key-ref FILE' writes "
                                    "it again)");
        goto done;
    }
    if (ASN1_STRING_length(ref->desc) != (int)strlen(MKS_KEYREF_DESC) ||
        memcmp(ASN1_STRING_get0_data(ref->desc), MKS_KEYREF_DESC, strlen(MKS_KEYREF_DESC)) != 0) {
        rv = mks_error(MKS_ERR_ARG, "key reference: description is not '%s'", MKS_KEYREF_DESC);
        goto done;
    }
    u = ASN1_STRING_get0_data(ref->uri);
    ulen = ASN1_STRING_length(ref->uri);
    if (ulen < 7 || memcmp(u, "pkcs11:", 7) != 0 || memchr(u, '\0', (size_t)ulen) != NULL) {
        rv = mks_error(MKS_ERR_ARG, "key reference: the URI is not a pkcs11: URI");
        goto done;
    }
    *uri = malloc((size_t)ulen + 1);
    if (*uri == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(*uri, u, (size_t)ulen);
    (*uri)[ulen] = '\0';
    rv = MKS_OK;
done:
    MKS_KEYREF_free(ref);
    return rv;
}
