/*
 * TSS2 PRIVATE KEY files (draft-bottomley-tpm2-keys), the loadable-key form:
 *
 *   TPMKey ::= SEQUENCE {
 *       type        OBJECT IDENTIFIER,              -- id-loadablekey 2.23.133.10.1.3
 *       emptyAuth   [0] EXPLICIT BOOLEAN OPTIONAL,
 *       policy      [1] EXPLICIT SEQUENCE OF TPMPolicy OPTIONAL,
 *       secret      [2] EXPLICIT OCTET STRING OPTIONAL,
 *       parent      INTEGER,
 *       pubkey      OCTET STRING,                   -- TPM2B_PUBLIC
 *       privkey     OCTET STRING                    -- TPM2B_PRIVATE
 *   }
 *
 * Keys with policies or an import secret are refused with a clear error: the
 * keystore does not satisfy policies.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/asn1t.h>
#include <openssl/bio.h>
#include <openssl/pem.h>

#define OID_LOADABLE_KEY "2.23.133.10.1.3"
#define TPM2_RH_OWNER_HANDLE 0x40000001u

typedef struct mks_tssprivkey_st {
    ASN1_OBJECT *type;
    ASN1_BOOLEAN empty_auth;
    ASN1_TYPE *policy;
    ASN1_OCTET_STRING *secret;
    ASN1_INTEGER *parent;
    ASN1_OCTET_STRING *pubkey;
    ASN1_OCTET_STRING *privkey;
} MKS_TSSPRIVKEY;

DECLARE_ASN1_FUNCTIONS(MKS_TSSPRIVKEY)

ASN1_SEQUENCE(MKS_TSSPRIVKEY) =
    {
        ASN1_SIMPLE(MKS_TSSPRIVKEY, type, ASN1_OBJECT),
        ASN1_EXP_OPT(MKS_TSSPRIVKEY, empty_auth, ASN1_FBOOLEAN, 0),
        ASN1_EXP_OPT(MKS_TSSPRIVKEY, policy, ASN1_ANY, 1),
        ASN1_EXP_OPT(MKS_TSSPRIVKEY, secret, ASN1_OCTET_STRING, 2),
        ASN1_SIMPLE(MKS_TSSPRIVKEY, parent, ASN1_INTEGER),
        ASN1_SIMPLE(MKS_TSSPRIVKEY, pubkey, ASN1_OCTET_STRING),
        ASN1_SIMPLE(MKS_TSSPRIVKEY, privkey, ASN1_OCTET_STRING),
} ASN1_SEQUENCE_END(MKS_TSSPRIVKEY)

        IMPLEMENT_ASN1_FUNCTIONS(MKS_TSSPRIVKEY)

            void mks_tss2_key_clear(mks_tss2_key * key)
{
    if (key == NULL)
        return;
    free(key->pub);
    if (key->priv != NULL)
        mks_cleanse(key->priv, key->priv_len);
    free(key->priv);
    memset(key, 0, sizeof(*key));
}

static unsigned char *dup_octets(const ASN1_OCTET_STRING *os, size_t *len)
{
    size_t n = (size_t)ASN1_STRING_length(os);
    unsigned char *p = malloc(n > 0 ? n : 1);

    if (p != NULL)
        memcpy(p, ASN1_STRING_get0_data(os), n);
    *len = n;
    return p;
}

mks_rv mks_tss2_decode_der(const unsigned char *der, size_t der_len, mks_tss2_key *out)
{
    mks_rv rv = MKS_ERR_ARG;
    const unsigned char *p = der;
    MKS_TSSPRIVKEY *k = NULL;
    char oid[64];
    uint64_t parent = 0;

    memset(out, 0, sizeof(*out));
    if (der == NULL || der_len == 0 || der_len > 65536)
        return mks_error(MKS_ERR_ARG, "TSS2 key: empty or oversized DER");
    k = d2i_MKS_TSSPRIVKEY(NULL, &p, (long)der_len);
    if (k == NULL || p != der + der_len) {
        rv = mks_error(MKS_ERR_ARG, "TSS2 key: malformed DER (not a TPMKey SEQUENCE)");
        goto done;
    }
    if (OBJ_obj2txt(oid, sizeof(oid), k->type, 1) <= 0 || strcmp(oid, OID_LOADABLE_KEY) != 0) {
        rv = mks_error(MKS_ERR_UNSUPPORTED,
                       "TSS2 key: type %s is not a loadable key (" OID_LOADABLE_KEY ")", oid);
        goto done;
    }
    if (k->policy != NULL || k->secret != NULL) {
        rv = mks_error(MKS_ERR_UNSUPPORTED, "TSS2 key: keys with %s are not supported",
                       k->policy != NULL ? "policies" : "an import secret");
        goto done;
    }
    if (!ASN1_INTEGER_get_uint64(&parent, k->parent) || parent > 0xffffffffu) {
        rv = mks_error(MKS_ERR_ARG, "TSS2 key: parent handle out of range");
        goto done;
    }
    out->parent = parent == 0 ? TPM2_RH_OWNER_HANDLE : (uint32_t)parent;
    out->empty_auth = k->empty_auth > 0;
    out->pub = dup_octets(k->pubkey, &out->pub_len);
    out->priv = dup_octets(k->privkey, &out->priv_len);
    if (out->pub == NULL || out->priv == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    rv = MKS_OK;
done:
    if (rv != MKS_OK)
        mks_tss2_key_clear(out);
    MKS_TSSPRIVKEY_free(k);
    return rv;
}

mks_rv mks_tss2_encode_pem(const mks_tss2_key *key, char **pem, size_t *pem_len)
{
    mks_rv rv = MKS_ERR_NOMEM;
    MKS_TSSPRIVKEY *k = MKS_TSSPRIVKEY_new();
    unsigned char *der = NULL;
    int der_len;

    *pem = NULL;
    if (k == NULL)
        goto done;
    k->type = OBJ_txt2obj(OID_LOADABLE_KEY, 1);
    k->empty_auth = key->empty_auth ? 0xff : 0; /* FALSE is left out (DEFAULT) */
    if (k->type == NULL || !ASN1_INTEGER_set_uint64(k->parent, key->parent) ||
        !ASN1_OCTET_STRING_set(k->pubkey, key->pub, (int)key->pub_len) ||
        !ASN1_OCTET_STRING_set(k->privkey, key->priv, (int)key->priv_len))
        goto done;
    der_len = i2d_MKS_TSSPRIVKEY(k, &der);
    if (der_len <= 0)
        goto done;
    rv = mks_pem_encode(MKS_TSS2_PEM_LABEL, der, (size_t)der_len, pem, pem_len);
    if (rv != MKS_OK)
        goto done;
    rv = MKS_OK;
done:
    if (rv != MKS_OK)
        mks_error(rv, "cannot encode the TSS2 key");
    OPENSSL_free(der);
    MKS_TSSPRIVKEY_free(k);
    return rv;
}
