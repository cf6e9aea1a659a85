/*
 * JSON Web Signatures for ACME (RFC 7515, RFC 8555 section 6.2), signed by
 * the account key through the mtlsks provider: ES256 (P-256), ES384
 * (P-384), RS256 (RSA PKCS#1 v1.5). The JWK is written in the member order
 * RFC 7638 fixes, so the same string is the header's "jwk" and the input
 * of the thumbprint that key authorizations carry.
 */
#include "acme.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/x509.h>

char *acme_b64url(const unsigned char *p, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = malloc(len / 3 * 4 + 5), *w = out;
    size_t i;

    if (out == NULL)
        return NULL;
    for (i = 0; i + 2 < len; i += 3) {
        *w++ = tab[p[i] >> 2];
        *w++ = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
        *w++ = tab[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)];
        *w++ = tab[p[i + 2] & 63];
    }
    if (len - i == 1) {
        *w++ = tab[p[i] >> 2];
        *w++ = tab[(p[i] & 3) << 4];
    } else if (len - i == 2) {
        *w++ = tab[p[i] >> 2];
        *w++ = tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)];
        *w++ = tab[(p[i + 1] & 15) << 2];
    }
    *w = '\0';
    return out;
}

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-' || c == '+')
        return 62;
    if (c == '_' || c == '/')
        return 63;
    return -1;
}

int acme_b64url_decode(const char *s, unsigned char **out, size_t *len)
{
    size_t n = strlen(s), k = 0;
    unsigned acc = 0;
    int bits = 0, v;
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    const char *p;

    *out = NULL;
    *len = 0;
    if (buf == NULL)
        return 0;
    for (p = s; *p != '\0'; p++) {
        if (*p == '=' || *p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            continue;
        if ((v = b64_value((unsigned char)*p)) < 0) {
            OPENSSL_clear_free(buf, n / 4 * 3 + 3);
            return 0;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[k++] = (unsigned char)(acc >> bits);
        }
    }
    OPENSSL_cleanse(&acc, sizeof(acc));
    *out = buf;
    *len = k;
    return 1;
}

/* base64url of a big number's big-endian bytes, padded to size (0: as is). */
static char *bn_b64(const BIGNUM *bn, size_t size)
{
    size_t n = size > 0 ? size : (size_t)BN_num_bytes(bn);
    unsigned char *buf = malloc(n > 0 ? n : 1);
    char *s = NULL;

    if (buf != NULL && BN_bn2binpad(bn, buf, (int)n) == (int)n)
        s = acme_b64url(buf, n);
    free(buf);
    return s;
}

/* The JWK of an EC or RSA public key, members in RFC 7638 order. */
static int make_jwk(acme_signer *sg, EVP_PKEY *pub, cli_err *err)
{
    BIGNUM *a = NULL, *b = NULL;
    char *x = NULL, *y = NULL, group[32];
    int ok = 0;

    if (EVP_PKEY_is_a(pub, "EC")) {
        if (!EVP_PKEY_get_utf8_string_param(pub, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            NULL) ||
            !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_X, &a) ||
            !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_EC_PUB_Y, &b)) {
            cli_err_set_ossl(err, "cannot read the account key's EC point");
            goto done;
        }
        if (strcmp(group, "prime256v1") == 0) {
            sg->alg = "ES256";
            sg->digest = "SHA256";
            sg->ec_size = 32;
        } else if (strcmp(group, "secp384r1") == 0) {
            sg->alg = "ES384";
            sg->digest = "SHA384";
            sg->ec_size = 48;
        } else {
            cli_err_set(err, "an account key on curve %s: ACME takes P-256 and P-384", group);
            goto done;
        }
        x = bn_b64(a, sg->ec_size);
        y = bn_b64(b, sg->ec_size);
        if (x != NULL && y != NULL &&
            asprintf(&sg->jwk, "{\"crv\":\"P-%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                     sg->ec_size == 32 ? "256" : "384", x, y) < 0)
            sg->jwk = NULL;
    } else if (EVP_PKEY_is_a(pub, "RSA")) {
        if (!EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_N, &a) ||
            !EVP_PKEY_get_bn_param(pub, OSSL_PKEY_PARAM_RSA_E, &b)) {
            cli_err_set_ossl(err, "cannot read the account key's RSA modulus");
            goto done;
        }
        sg->alg = "RS256";
        sg->digest = "SHA256";
        x = bn_b64(b, 0);
        y = bn_b64(a, 0);
        if (x != NULL && y != NULL &&
            asprintf(&sg->jwk, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", x, y) < 0)
            sg->jwk = NULL;
    } else {
        cli_err_set(err, "the account key is neither EC nor RSA");
        goto done;
    }
    if (sg->jwk == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    ok = 1;
done:
    BN_free(a);
    BN_free(b);
    free(x);
    free(y);
    return ok;
}

int acme_signer_init(acme_signer *sg, OSSL_LIB_CTX *libctx, EVP_PKEY *pkey,
                     const unsigned char *spki, size_t spki_len, cli_err *err)
{
    const unsigned char *p = spki;
    unsigned char md[32];
    EVP_PKEY *pub = NULL;
    char *tp = NULL;
    int ok = 0;

    memset(sg, 0, sizeof(*sg));
    sg->libctx = libctx;
    /* The public half in software (default provider): parameters to read. */
    pub = d2i_PUBKEY_ex(NULL, &p, (long)spki_len, libctx, "?provider=default");
    if (pub == NULL) {
        cli_err_set_ossl(err, "the account key's public half cannot be decoded");
        goto done;
    }
    if (!make_jwk(sg, pub, err))
        goto done;
    if (!EVP_Q_digest(libctx, "SHA256", NULL, sg->jwk, strlen(sg->jwk), md, NULL) ||
        (tp = acme_b64url(md, sizeof(md))) == NULL) {
        cli_err_set_ossl(err, "cannot hash the account key's JWK");
        goto done;
    }
    snprintf(sg->thumbprint, sizeof(sg->thumbprint), "%s", tp);
    if (!EVP_PKEY_up_ref(pkey)) {
        cli_err_set_ossl(err, "cannot hold the account key");
        goto done;
    }
    sg->pkey = pkey;
    ok = 1;
done:
    free(tp);
    EVP_PKEY_free(pub);
    if (!ok)
        acme_signer_clear(sg);
    return ok;
}

void acme_signer_clear(acme_signer *sg)
{
    EVP_PKEY_free(sg->pkey);
    free(sg->jwk);
    memset(sg, 0, sizeof(*sg));
}

/* An ECDSA DER signature as JWS wants it: r || s, each ec_size bytes. */
static int ecdsa_raw(const unsigned char *der, size_t len, size_t size, unsigned char *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)len);
    const BIGNUM *r, *s;
    int ok;

    if (sig == NULL)
        return 0;
    ECDSA_SIG_get0(sig, &r, &s);
    ok = BN_bn2binpad(r, out, (int)size) == (int)size &&
         BN_bn2binpad(s, out + size, (int)size) == (int)size;
    ECDSA_SIG_free(sig);
    return ok;
}

/* The signature over `input`, base64url; malloc'd. One hardware signature. */
static char *sign_b64(acme_signer *sg, const char *input, cli_err *err)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *sig = NULL, raw[132];
    size_t siglen = 0;
    char *out = NULL;

    if (md == NULL ||
        EVP_DigestSignInit_ex(md, NULL, sg->digest, sg->libctx, NULL, sg->pkey, NULL) != 1 ||
        EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, strlen(input)) != 1 ||
        (sig = OPENSSL_malloc(siglen)) == NULL ||
        EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) != 1) {
        cli_err_set_ossl(err, "the account key cannot sign (%s)", sg->alg);
        goto done;
    }
    sg->signatures++;
    if (sg->ec_size > 0) {
        if (!ecdsa_raw(sig, siglen, sg->ec_size, raw)) {
            cli_err_set(err, "the account key's ECDSA signature is malformed");
            goto done;
        }
        out = acme_b64url(raw, 2 * sg->ec_size);
    } else {
        out = acme_b64url(sig, siglen);
    }
    if (out == NULL)
        cli_err_set(err, "out of memory");
done:
    OPENSSL_free(sig);
    EVP_MD_CTX_free(md);
    return out;
}

/* A JSON string literal for s (URLs, nonces and kids are plain ASCII, but a
 * CA's URL could hold a quote). */
static char *json_quote(const char *s)
{
    size_t n = strlen(s), i;
    char *out = malloc(2 * n + 3), *w = out;

    if (out == NULL)
        return NULL;
    *w++ = '"';
    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            *w++ = '\\';
        *w++ = (unsigned char)s[i] < 0x20 ? ' ' : s[i];
    }
    *w++ = '"';
    *w = '\0';
    return out;
}

int acme_jws(acme_signer *sg, const char *kid, const char *nonce, const char *url,
             const char *payload, char **out, cli_err *err)
{
    char *hdr = NULL, *hdr64 = NULL, *pay64 = NULL, *input = NULL, *sig = NULL;
    char *qkid = NULL, *qnonce = NULL, *qurl = NULL;
    int ok = 0;

    *out = NULL;
    qnonce = json_quote(nonce);
    qurl = json_quote(url);
    qkid = kid != NULL ? json_quote(kid) : NULL;
    if (qnonce == NULL || qurl == NULL || (kid != NULL && qkid == NULL))
        goto oom;
    if ((kid != NULL ? asprintf(&hdr, "{\"alg\":\"%s\",\"kid\":%s,\"nonce\":%s,\"url\":%s}",
                                sg->alg, qkid, qnonce, qurl)
                     : asprintf(&hdr, "{\"alg\":\"%s\",\"jwk\":%s,\"nonce\":%s,\"url\":%s}",
                                sg->alg, sg->jwk, qnonce, qurl)) < 0) {
        hdr = NULL;
        goto oom;
    }
    hdr64 = acme_b64url((const unsigned char *)hdr, strlen(hdr));
    pay64 =
        payload != NULL ? acme_b64url((const unsigned char *)payload, strlen(payload)) : strdup("");
    if (hdr64 == NULL || pay64 == NULL || asprintf(&input, "%s.%s", hdr64, pay64) < 0) {
        input = NULL;
        goto oom;
    }
    sig = sign_b64(sg, input, err);
    if (sig == NULL)
        goto done;
    if (asprintf(out, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", hdr64,
                 pay64, sig) < 0) {
        *out = NULL;
        goto oom;
    }
    ok = 1;
    goto done;
oom:
    cli_err_set(err, "out of memory");
done:
    free(hdr);
    free(hdr64);
    free(pay64);
    free(input);
    free(sig);
    free(qkid);
    free(qnonce);
    free(qurl);
    return ok;
}

int acme_eab_jws(const char *kid, const unsigned char *mac, size_t mac_len, const char *account_jwk,
                 const char *url, char **out, cli_err *err)
{
    char *hdr = NULL, *hdr64 = NULL, *pay64 = NULL, *input = NULL, *sig64 = NULL;
    char *qkid = json_quote(kid), *qurl = json_quote(url);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = 0;

    *out = NULL;
    if (qkid == NULL || qurl == NULL ||
        asprintf(&hdr, "{\"alg\":\"HS256\",\"kid\":%s,\"url\":%s}", qkid, qurl) < 0) {
        hdr = NULL;
        goto oom;
    }
    hdr64 = acme_b64url((const unsigned char *)hdr, strlen(hdr));
    pay64 = acme_b64url((const unsigned char *)account_jwk, strlen(account_jwk));
    if (hdr64 == NULL || pay64 == NULL || asprintf(&input, "%s.%s", hdr64, pay64) < 0) {
        input = NULL;
        goto oom;
    }
    /* The MAC key is a shared secret, not a hardware key: software HMAC. */
    if (HMAC(EVP_sha256(), mac, (int)mac_len, (const unsigned char *)input, strlen(input), md,
             &mdlen) == NULL) {
        cli_err_set_ossl(err, "cannot compute the external account binding's HMAC");
        goto done;
    }
    sig64 = acme_b64url(md, mdlen);
    if (sig64 == NULL ||
        asprintf(out, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", hdr64,
                 pay64, sig64) < 0) {
        *out = NULL;
        goto oom;
    }
    ok = 1;
    goto done;
oom:
    cli_err_set(err, "out of memory");
done:
    OPENSSL_cleanse(md, sizeof(md));
    free(hdr);
    free(hdr64);
    free(pay64);
    free(input);
    free(sig64);
    free(qkid);
    free(qurl);
    return ok;
}
