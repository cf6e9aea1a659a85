/*
 * The algorithm facts the backends share, written once: digests (OpenSSL's
 * name, size, the DigestInfo prefix PKCS#1 v1.5 signs) and the EC curves the
 * keystore knows (its name, OpenSSL's group name and NID, field bits).
 */
#include "internal.h"

#include <string.h>

#include <openssl/obj_mac.h>

/* DigestInfo prefixes: RFC 8017, section 9.2, note 1. */
static const mks_hash_def hashes[] = {
    {MKS_HASH_SHA1,
     "SHA1",
     20,
     15,
     {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14}},
    {MKS_HASH_SHA224,
     "SHA224",
     28,
     19,
     {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04,
      0x05, 0x00, 0x04, 0x1c}},
    {MKS_HASH_SHA256,
     "SHA256",
     32,
     19,
     {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
      0x05, 0x00, 0x04, 0x20}},
    {MKS_HASH_SHA384,
     "SHA384",
     48,
     19,
     {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
      0x05, 0x00, 0x04, 0x30}},
    {MKS_HASH_SHA512,
     "SHA512",
     64,
     19,
     {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
      0x05, 0x00, 0x04, 0x40}},
};

#define NHASHES (sizeof(hashes) / sizeof(hashes[0]))

const mks_hash_def *mks_hash_get(mks_hash h)
{
    size_t i;

    for (i = 0; i < NHASHES; i++)
        if (hashes[i].hash == h)
            return &hashes[i];
    return NULL;
}

const mks_hash_def *mks_hash_by_size(size_t size)
{
    size_t i;

    for (i = 0; i < NHASHES; i++)
        if (hashes[i].size == size)
            return &hashes[i];
    return NULL;
}

const mks_hash_def *mks_digest_info_split(const unsigned char *in, size_t inlen)
{
    size_t i;

    for (i = 0; i < NHASHES; i++)
        if (inlen == hashes[i].prefix_len + hashes[i].size &&
            memcmp(in, hashes[i].prefix, hashes[i].prefix_len) == 0)
            return &hashes[i];
    return NULL;
}

mks_rv mks_digest_info(const mks_hash_def *hd, const unsigned char *hash, size_t hlen,
                       unsigned char out[MKS_DIGEST_INFO_MAX], size_t *outlen)
{
    if (hlen != hd->size)
        return mks_error(MKS_ERR_ARG, "%zu bytes to sign, but a %s hash has %zu", hlen, hd->name,
                         hd->size);
    memcpy(out, hd->prefix, hd->prefix_len);
    memcpy(out + hd->prefix_len, hash, hlen);
    *outlen = hd->prefix_len + hlen;
    return MKS_OK;
}

static const mks_curve_def curves[] = {
    {"P-256", "prime256v1", NID_X9_62_prime256v1, 256},
    {"P-384", "secp384r1", NID_secp384r1, 384},
    {"P-521", "secp521r1", NID_secp521r1, 521},
};

#define NCURVES (sizeof(curves) / sizeof(curves[0]))

const mks_curve_def *mks_curve_by_name(const char *name)
{
    size_t i;

    for (i = 0; name != NULL && i < NCURVES; i++)
        if (strcmp(curves[i].name, name) == 0 || strcmp(curves[i].group, name) == 0)
            return &curves[i];
    return NULL;
}

const mks_curve_def *mks_curve_by_nid(int nid)
{
    size_t i;

    for (i = 0; i < NCURVES; i++)
        if (curves[i].nid == nid)
            return &curves[i];
    return NULL;
}
