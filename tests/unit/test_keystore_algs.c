/*
 * The algorithm facts both backends take from one table: each DigestInfo
 * prefix is the start of the DigestInfo OpenSSL encodes for that digest,
 * sizes and names are OpenSSL's, a DigestInfo is read back to its digest,
 * and each curve's group name, NID and field size agree with OpenSSL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "internal.h"

static const mks_hash all_hashes[] = {MKS_HASH_SHA1, MKS_HASH_SHA224, MKS_HASH_SHA256,
                                      MKS_HASH_SHA384, MKS_HASH_SHA512};

static void test_digest_info_is_openssls(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(all_hashes) / sizeof(all_hashes[0]); i++) {
        const mks_hash_def *hd = mks_hash_get(all_hashes[i]);
        const EVP_MD *md;
        unsigned char hash[64], di[MKS_DIGEST_INFO_MAX], *ref = NULL;
        size_t dilen = 0;
        X509_SIG *xs = X509_SIG_new();
        X509_ALGOR *alg;
        ASN1_OCTET_STRING *digest;
        int reflen;

        assert_non_null(hd);
        assert_int_equal(hd->hash, all_hashes[i]);
        md = EVP_get_digestbyname(hd->name);
        assert_non_null(md);
        assert_int_equal((size_t)EVP_MD_get_size(md), hd->size);
        assert_ptr_equal(mks_hash_by_size(hd->size), hd);

        memset(hash, 0xa5, sizeof(hash));
        X509_SIG_getm(xs, &alg, &digest);
        X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL, NULL);
        ASN1_OCTET_STRING_set(digest, hash, (int)hd->size);
        reflen = i2d_X509_SIG(xs, &ref);
        assert_int_equal(mks_digest_info(hd, hash, hd->size, di, &dilen), MKS_OK);
        assert_int_equal(dilen, (size_t)reflen);
        assert_memory_equal(di, ref, dilen);
        assert_ptr_equal(mks_digest_info_split(di, dilen), hd);
        /* One byte more or less is no DigestInfo of this digest. */
        assert_null(mks_digest_info_split(di, dilen - 1));
        assert_int_equal(mks_digest_info(hd, hash, hd->size + 1, di, &dilen), MKS_ERR_ARG);
        OPENSSL_free(ref);
        X509_SIG_free(xs);
    }
    assert_null(mks_hash_get(MKS_HASH_NONE));
    assert_null(mks_hash_by_size(16));
    assert_null(mks_digest_info_split((const unsigned char *)"", 0));
}

static void test_curves_are_openssls(void **state)
{
    static const struct {
        const char *name, *group;
        int bits;
    } cases[] = {
        {"P-256", "prime256v1", 256},
        {"P-384", "secp384r1", 384},
        {"P-521", "secp521r1", 521},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const mks_curve_def *cd = mks_curve_by_name(cases[i].name);
        EC_GROUP *g;

        assert_non_null(cd);
        assert_string_equal(cd->group, cases[i].group);
        assert_int_equal(cd->bits, cases[i].bits);
        assert_ptr_equal(mks_curve_by_name(cases[i].group), cd);
        assert_int_equal(OBJ_sn2nid(cd->group), cd->nid);
        assert_ptr_equal(mks_curve_by_nid(cd->nid), cd);
        g = EC_GROUP_new_by_curve_name(cd->nid);
        assert_non_null(g);
        assert_int_equal(EC_GROUP_get_degree(g), cd->bits);
        EC_GROUP_free(g);
    }
    assert_null(mks_curve_by_name("P-192"));
    assert_null(mks_curve_by_name(NULL));
    assert_null(mks_curve_by_nid(NID_secp256k1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_digest_info_is_openssls),
        cmocka_unit_test(test_curves_are_openssls),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
