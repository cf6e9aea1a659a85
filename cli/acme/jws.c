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
#include <openssl/x509.h>

/* base64url is base64 with '-' for '+', '_' for '/' and no padding
 * (RFC 7515 appendix C): OpenSSL's base64, translated. */
char *acme_b64url(const unsigned char *p, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    int n, i;

    if (out == NULL)
        return NULL;
    n = EVP_EncodeBlock((unsigned char *)out, p, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

int acme_b64url_decode(const char *s, unsigned char **out, size_t *len)
{
    size_t n = strlen(s), k = 0, i;
    char *b64 = malloc(n + 4);
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    int m, pad, ok = 0;

    *out = NULL;
    *len = 0;
    if (b64 == NULL || buf == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        char c = s[i];

        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '=')
            continue;
        if (c == '+' || c == '/')
            goto done; /* base64, not base64url */
        b64[k++] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    if (k % 4 == 1)
        goto done;
    pad = (int)((4 - k % 4) % 4);
    for (i = 0; i < (size_t)pad; i++)
        b64[k++] = '=';
    m = EVP_DecodeBlock(buf, (unsigned char *)b64, (int)k);
    if (m < 0)
        goto done;
    *out = buf;
    *len = (size_t)m - (size_t)pad; /* EVP_DecodeBlock counts the padding's zero bytes */
    buf = NULL;
    ok = 1;
done:
    if (b64 != NULL)
        OPENSSL_clear_free(b64, n + 4);
    if (buf != NULL)
        OPENSSL_clear_free(buf, n / 4 * 3 + 3);
    return ok;
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

/* A signature of the JWS signing input, base64url (malloc'd), or NULL with err. */
typedef char *jws_sign_fn(const char *input, void *arg, cli_err *err);

/* The flattened JWS JSON of header hdr over payload (NULL: empty), signed by sign. */
static int jws_make(const char *hdr, const char *payload, jws_sign_fn *sign, void *arg, char **out,
                    cli_err *err)
{
    char *hdr64 = acme_b64url((const unsigned char *)hdr, strlen(hdr)), *input = NULL, *sig = NULL;
    char *pay64 =
        payload != NULL ? acme_b64url((const unsigned char *)payload, strlen(payload)) : strdup("");
    int ok = 0;

    *out = NULL;
    if (hdr64 == NULL || pay64 == NULL || asprintf(&input, "%s.%s", hdr64, pay64) < 0) {
        input = NULL;
        cli_err_set(err, "out of memory");
        goto done;
    }
    sig = sign(input, arg, err);
    if (sig == NULL)
        goto done;
    if (asprintf(out, "{\"protected\":\"%s\",\"payload\":\"%s\",\"signature\":\"%s\"}", hdr64,
                 pay64, sig) < 0) {
        *out = NULL;
        cli_err_set(err, "out of memory");
        goto done;
    }
    ok = 1;
done:
    free(hdr64);
    free(pay64);
    free(input);
    free(sig);
    return ok;
}

static char *sign_account(const char *input, void *arg, cli_err *err)
{
    return sign_b64(arg, input, err);
}

int acme_jws(acme_signer *sg, const char *kid, const char *nonce, const char *url,
             const char *payload, char **out, cli_err *err)
{
    char *hdr = NULL, *qkid = NULL, *qnonce = json_quote(nonce), *qurl = json_quote(url);
    int ok = 0;

    *out = NULL;
    qkid = kid != NULL ? json_quote(kid) : NULL;
    if (qnonce == NULL || qurl == NULL || (kid != NULL && qkid == NULL) ||
        (kid != NULL ? asprintf(&hdr, "{\"alg\":\"%s\",\"kid\":%s,\"nonce\":%s,\"url\":%s}",
                                sg->alg, qkid, qnonce, qurl)
                     : asprintf(&hdr, "{\"alg\":\"%s\",\"jwk\":%s,\"nonce\":%s,\"url\":%s}",
                                sg->alg, sg->jwk, qnonce, qurl)) < 0) {
        hdr = NULL;
        cli_err_set(err, "out of memory");
        goto done;
    }
    ok = jws_make(hdr, payload, sign_account, sg, out, err);
done:
    free(hdr);
    free(qkid);
    free(qnonce);
    free(qurl);
    return ok;
}

typedef struct mac_key {
    const unsigned char *key;
    size_t len;
} mac_key;

/* HS256: the MAC key is a shared secret, not a hardware key; software HMAC. */
static char *sign_hmac(const char *input, void *arg, cli_err *err)
{
    const mac_key *k = arg;
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen = 0;
    char *sig = NULL;

    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, k->key, k->len, (const unsigned char *)input,
                  strlen(input), md, sizeof(md), &mdlen) == NULL)
        cli_err_set_ossl(err, "cannot compute the external account binding's HMAC");
    else if ((sig = acme_b64url(md, mdlen)) == NULL)
        cli_err_set(err, "out of memory");
    OPENSSL_cleanse(md, sizeof(md));
    return sig;
}

int acme_eab_jws(const char *kid, const unsigned char *mac, size_t mac_len, const char *account_jwk,
                 const char *url, char **out, cli_err *err)
{
    char *hdr = NULL, *qkid = json_quote(kid), *qurl = json_quote(url);
    mac_key k = {mac, mac_len};
    int ok = 0;

    *out = NULL;
    if (qkid == NULL || qurl == NULL ||
        asprintf(&hdr, "{\"alg\":\"HS256\",\"kid\":%s,\"url\":%s}", qkid, qurl) < 0) {
        hdr = NULL;
        cli_err_set(err, "out of memory");
        goto done;
    }
    ok = jws_make(hdr, account_jwk, sign_hmac, &k, out, err);
done:
    free(hdr);
    free(qkid);
    free(qurl);
    return ok;
}
