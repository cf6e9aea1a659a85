/*
 * Public keys as SubjectPublicKeyInfo DER, built from what a token or TPM
 * reports, in the keystore's own library context.
 */
#include "internal.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

static mks_rv spki_from_pkey(EVP_PKEY *pkey, unsigned char **spki, size_t *len)
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(pkey, &der);

    if (n <= 0)
        return mks_error(MKS_ERR_GENERAL, "cannot encode the public key");
    *spki = der;
    *len = (size_t)n;
    return MKS_OK;
}

mks_rv mks_spki_rsa(OSSL_LIB_CTX *libctx, const unsigned char *n, size_t nlen,
                    const unsigned char *e, size_t elen, unsigned char **spki, size_t *len,
                    int *bits)
{
    mks_rv rv = MKS_ERR_GENERAL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *bn_n = BN_bin2bn(n, (int)nlen, NULL), *bn_e = BN_bin2bn(e, (int)elen, NULL);

    if (bld == NULL || bn_n == NULL || bn_e == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (pctx = EVP_PKEY_CTX_new_from_name(libctx, "RSA", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        rv = mks_error(MKS_ERR_GENERAL, "cannot build an RSA public key from its modulus and "
                                        "exponent");
        goto done;
    }
    *bits = EVP_PKEY_get_bits(pkey);
    rv = spki_from_pkey(pkey, spki, len);
done:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return rv;
}

mks_rv mks_spki_ec(OSSL_LIB_CTX *libctx, const char *curve, const unsigned char *point, size_t plen,
                   unsigned char **spki, size_t *len)
{
    mks_rv rv = MKS_ERR_GENERAL;
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    const mks_curve_def *cd = mks_curve_by_name(curve);

    if (cd == NULL)
        return mks_error(MKS_ERR_UNSUPPORTED, "EC curve %s is not supported", curve);
    /* The named curve goes into the key, so the SPKI carries its OID and
     * never explicit parameters. */
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)cd->group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, plen);
    params[2] = OSSL_PARAM_construct_end();
    if ((pctx = EVP_PKEY_CTX_new_from_name(libctx, "EC", NULL)) == NULL ||
        EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        rv = mks_error(MKS_ERR_GENERAL, "cannot build a %s public key from its point", curve);
        goto done;
    }
    rv = spki_from_pkey(pkey, spki, len);
done:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(pctx);
    return rv;
}

mks_rv mks_spki_id(OSSL_LIB_CTX *libctx, const unsigned char *spki, size_t len,
                   unsigned char id[20])
{
    const unsigned char *p = spki;
    X509_PUBKEY *xpk = d2i_X509_PUBKEY(NULL, &p, (long)len);
    const unsigned char *bits;
    int nbits;
    unsigned int mdlen = 0;
    EVP_MD *sha1 = NULL;
    mks_rv rv = MKS_ERR_GENERAL;

    if (xpk == NULL || !X509_PUBKEY_get0_param(NULL, &bits, &nbits, NULL, xpk))
        goto done;
    sha1 = EVP_MD_fetch(libctx, "SHA1", NULL);
    if (sha1 == NULL || !EVP_Digest(bits, (size_t)nbits, id, &mdlen, sha1, NULL) || mdlen != 20)
        goto done;
    rv = MKS_OK;
done:
    EVP_MD_free(sha1);
    X509_PUBKEY_free(xpk);
    if (rv != MKS_OK)
        mks_error(rv, "cannot derive a key id from the public key");
    return rv;
}
