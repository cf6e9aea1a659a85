/*
 * DECODER for key files that name a key in hardware:
 *   "PKCS#11 PROVIDER URI"  SEQUENCE { VisibleString desc, UTF8String uri },
 *                           the key reference pkcs11-provider writes;
 *   "TSS2 PRIVATE KEY"      draft-bottomley-tpm2-keys, what tpm2-openssl and
 *                           openssl_tpm2_engine read and write.
 * Programs that only read key files (PEM_read_bio_PrivateKey,
 * SSL_CTX_use_PrivateKey_file, curl, nginx, Python) get the hardware key.
 *
 * Two steps, because OpenSSL 3.0 builds its decoder chains by name:
 *   "DER" input=pem: the first PEM block, when it has one of our labels,
 *         -> its DER, with data structure "pk11uri" or "mtlsks-tss2". Named
 *         "DER" so that the file: store (openssl pkey -in FILE), which
 *         collects only decoders named after input types it knows, has it.
 *   "RSA"/"EC" input=der, structure=...: DER -> the key, passed on as an
 *         object reference exactly as the store does.
 * Anything else is passed over (return 1 without calling back), so other
 * decoders try it. Once input is ours, a failure stops the decoding (return
 * 0): trying on would only ask the token again, and a PIN the token
 * rejected must never be tried twice.
 */
#include "prov.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/err.h>
#include <openssl/params.h>

/* Our key files are at most a few KiB; a cap keeps stray big inputs cheap. */
#define MKS_DECODE_MAX (64 * 1024)

static OSSL_FUNC_decoder_newctx_fn mks_decoder_newctx;
static OSSL_FUNC_decoder_freectx_fn mks_decoder_freectx;
static OSSL_FUNC_decoder_does_selection_fn mks_key_pem_decoder_does_selection;
static OSSL_FUNC_decoder_decode_fn mks_key_pem_decoder_decode;
static OSSL_FUNC_decoder_does_selection_fn mks_key_decoder_does_selection;
static OSSL_FUNC_decoder_decode_fn mks_rsa_keyref_decoder_decode;
static OSSL_FUNC_decoder_decode_fn mks_ec_keyref_decoder_decode;
static OSSL_FUNC_decoder_decode_fn mks_rsa_tss2_decoder_decode;
static OSSL_FUNC_decoder_decode_fn mks_ec_tss2_decoder_decode;
static OSSL_FUNC_decoder_export_object_fn mks_decoder_export_object;

/* The PEM labels we take, and the data structure each DER is passed on with. */
static const struct {
    const char *label;
    const char *structure;
} pem_kinds[] = {
    [MKS_PEM_KEYREF] = {MKS_KEYREF_PEM_LABEL, MKS_KEYREF_STRUCTURE},
    [MKS_PEM_TSS2] = {MKS_TSS2_PEM_LABEL, MKS_TSS2_STRUCTURE},
};

/* ---- PEM parsing (pure) ----------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict base64 with whitespace between groups; '=' only at the end. */
static int b64_decode(const char *in, size_t inlen, unsigned char *out, size_t *outlen)
{
    unsigned int acc = 0;
    size_t i, n = 0, o = 0, pad = 0;

    for (i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        int v;

        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '=') {
            pad++;
            if (pad > 2)
                return 0;
            continue;
        }
        if (pad > 0)
            return 0; /* data after padding */
        v = b64_value(c);
        if (v < 0)
            return 0;
        acc = (acc << 6) | (unsigned int)v;
        n++;
        if (n % 4 == 0) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            acc = 0;
        }
    }
    if ((n + pad) % 4 != 0)
        return 0;
    switch (n % 4) {
    case 0:
        if (pad != 0)
            return 0;
        break;
    case 2:
        if (pad != 2)
            return 0;
        out[o++] = (unsigned char)(acc >> 4);
        break;
    case 3:
        if (pad != 1)
            return 0;
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
        break;
    default:
        return 0;
    }
    *outlen = o;
    return 1;
}

/* The start of the first line of buf[from..len) that begins with `prefix`. */
static const char *find_line(const char *buf, size_t len, size_t from, const char *prefix)
{
    size_t plen = strlen(prefix), i = from;

    while (i < len) {
        if (len - i >= plen && memcmp(buf + i, prefix, plen) == 0)
            return buf + i;
        while (i < len && buf[i] != '\n')
            i++;
        i++; /* past the newline */
    }
    return NULL;
}

/* The body of "-----BEGIN label-----" at b, or NULL when the line is not that. */
static const char *begin_line(const char *b, const char *end, const char *label)
{
    size_t n = strlen(label);

    if ((size_t)(end - b) < 11 + n + 5 || memcmp(b, "-----BEGIN ", 11) != 0 ||
        memcmp(b + 11, label, n) != 0 || memcmp(b + 11 + n, "-----", 5) != 0)
        return NULL;
    return b + 11 + n + 5;
}

int mks_key_pem_parse(const char *buf, size_t len, int *kind, unsigned char **der, size_t *der_len)
{
    const char *b, *body = NULL, *e, *after, *end = buf + len;
    const char *label;
    unsigned char *out = NULL;
    size_t out_len = 0, i, n;
    int k;

    *der = NULL;
    *der_len = 0;
    /* Only the first PEM block counts, as for every PEM reader. */
    b = find_line(buf, len, 0, "-----BEGIN ");
    if (b == NULL)
        return 0;
    for (k = 0; k < (int)(sizeof(pem_kinds) / sizeof(pem_kinds[0])); k++)
        if ((body = begin_line(b, end, pem_kinds[k].label)) != NULL)
            break;
    if (body == NULL)
        return 0;
    *kind = k;
    label = pem_kinds[k].label;
    n = strlen(label);
    /* The rest of the BEGIN line must be blank. */
    while (body < end && (*body == ' ' || *body == '\t' || *body == '\r'))
        body++;
    if (body >= end || *body != '\n')
        return -1;
    body++;
    e = find_line(buf, len, (size_t)(body - buf), "-----END ");
    if (e == NULL || (size_t)(end - e) < 9 + n + 5 || memcmp(e + 9, label, n) != 0 ||
        memcmp(e + 9 + n, "-----", 5) != 0)
        return -1;
    after = e + 9 + n + 5;
    if (after < end && *after != '\n' && *after != '\r' && *after != ' ')
        return -1;
    /* PEM headers (Proc-Type: ...) would mean PEM encryption: not our formats. */
    for (i = 0; body + i < e; i++)
        if (body[i] == ':')
            return -1;
    out = OPENSSL_malloc((size_t)(e - body) / 4 * 3 + 3);
    if (out == NULL)
        return -1;
    if (!b64_decode(body, (size_t)(e - body), out, &out_len) || out_len == 0) {
        OPENSSL_free(out);
        return -1;
    }
    *der = out;
    *der_len = out_len;
    return 1;
}

/* ---- reading the core BIO ------------------------------------------------------ */

/* 1 once buf holds a complete first PEM block (BEGIN line ... END line). */
static int pem_block_complete(const char *buf, size_t len)
{
    const char *b = find_line(buf, len, 0, "-----BEGIN ");
    const char *e;

    if (b == NULL)
        return 0;
    e = find_line(buf, len, (size_t)(b - buf) + 1, "-----END ");
    return e != NULL && memchr(e, '\n', (size_t)(buf + len - e)) != NULL;
}

/*
 * Reads the input (up to MKS_DECODE_MAX bytes); with stop_at_pem, stops
 * once the first PEM block is complete. Returns 0 on a read error.
 */
static int read_input(mks_prov *prov, OSSL_CORE_BIO *cin, int stop_at_pem, unsigned char **out,
                      size_t *out_len)
{
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0;

    for (;;) {
        size_t n = 0;

        if (len == cap) {
            unsigned char *nb;

            if (cap >= MKS_DECODE_MAX)
                break;
            cap = cap == 0 ? 4096 : cap * 2;
            nb = OPENSSL_realloc(buf, cap + 1);
            if (nb == NULL) {
                OPENSSL_free(buf);
                return 0;
            }
            buf = nb;
        }
        if (!prov->core_bio_read_ex(cin, buf + len, cap - len, &n) || n == 0)
            break;
        len += n;
        if (stop_at_pem && pem_block_complete((const char *)buf, len))
            break;
    }
    if (buf == NULL)
        return 0;
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 1;
}

/* ---- decoders ----------------------------------------------------------------- */

static void *mks_decoder_newctx(void *provctx)
{
    /* Stateless: the provider context is all a decode needs. */
    return provctx;
}

static void mks_decoder_freectx(void *ctx)
{
}

static int mks_key_pem_decoder_does_selection(void *provctx, int selection)
{
    /* Key references name private keys: a public-key parse (every certificate)
     * need not set up these decoders. */
    return selection == 0 || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

static int mks_key_decoder_does_selection(void *provctx, int selection)
{
    return mks_key_pem_decoder_does_selection(provctx, selection);
}

static int mks_key_pem_decoder_decode(void *ctx, OSSL_CORE_BIO *cin, int selection,
                                      OSSL_CALLBACK *data_cb, void *data_cbarg,
                                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    mks_prov *prov = ctx;
    unsigned char *in = NULL, *der = NULL;
    size_t in_len = 0, der_len = 0;
    OSSL_PARAM params[3];
    int ret = 1, r, kind = 0;

    if (!read_input(prov, cin, 1, &in, &in_len))
        goto done; /* nothing to read: not ours */
    r = mks_key_pem_parse((const char *)in, in_len, &kind, &der, &der_len);
    if (r == 0)
        goto done;
    if (r < 0) {
        mks_raise(prov, MKS_R_BAD_KEYREF, "malformed '%s' PEM block", pem_kinds[kind].label);
        ret = 0;
        goto done;
    }
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, der, der_len);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_STRUCTURE,
                                                 (char *)pem_kinds[kind].structure, 0);
    params[2] = OSSL_PARAM_construct_end();
    ret = data_cb(params, data_cbarg);
done:
    OPENSSL_free(der);
    OPENSSL_free(in);
    return ret;
}

/* Cheap check that der starts SEQUENCE { VisibleString MKS_KEYREF_DESC, ... }. */
static int looks_like_keyref(const unsigned char *der, size_t len)
{
    static const char desc[] = MKS_KEYREF_DESC;
    size_t i = 2;

    if (len < 2 || der[0] != 0x30)
        return 0;
    if (der[1] & 0x80)
        i += der[1] & 0x7f;
    return len >= i + 2 + sizeof(desc) - 1 && der[i] == 0x1a && der[i + 1] == sizeof(desc) - 1 &&
           memcmp(der + i + 2, desc, sizeof(desc) - 1) == 0;
}

/* Cheap check that der starts SEQUENCE { OID 2.23.133.10.1.3 (loadable key), ... }. */
static int looks_like_tss2(const unsigned char *der, size_t len)
{
    static const unsigned char oid[] = {0x06, 0x06, 0x67, 0x81, 0x05, 0x0a, 0x01, 0x03};
    size_t i = 2;

    if (len < 2 || der[0] != 0x30)
        return 0;
    if (der[1] & 0x80)
        i += der[1] & 0x7f;
    return len >= i + sizeof(oid) && memcmp(der + i, oid, sizeof(oid)) == 0;
}

/* The key type in a marshalled TPM2B_PUBLIC (size, then TPMT_PUBLIC.type). */
static mks_key_type tpm_public_type(const unsigned char *pub, size_t len)
{
    unsigned int alg;

    if (pub == NULL || len < 4)
        return MKS_KEY_NONE;
    alg = ((unsigned int)pub[2] << 8) | pub[3];
    return alg == 0x0001 ? MKS_KEY_RSA : alg == 0x0023 ? MKS_KEY_EC : MKS_KEY_NONE;
}

/* Hands an opened key on, typed as what it is: a key reference does not say
 * whether it names an RSA or an EC key, and whichever of the two decoders
 * runs first opens it once for both (the data type picks the KEYMGMT). */
static int pass_key(mks_prov *prov, mks_key *key, const char *desc, OSSL_CALLBACK *data_cb,
                    void *data_cbarg)
{
    mks_keyobj *k = mks_keyobj_from_key(prov, key);

    if (k == NULL)
        return 0;
    return mks_objref_pass(k, desc, data_cb, data_cbarg);
}

/* Hands on a key that could not be opened, so that KEYMGMT load raises why
 * (see mks_keyobj_failed). */
static int pass_failure(mks_prov *prov, mks_key_type want, mks_rv rv, const char *desc,
                        OSSL_CALLBACK *data_cb, void *data_cbarg)
{
    mks_keyobj *k = mks_keyobj_failed(prov, want, rv, mks_last_error());

    if (k == NULL) {
        mks_raise_ks(prov, rv);
        return 0;
    }
    return mks_objref_pass(k, desc, data_cb, data_cbarg);
}

static int keyref_decode(mks_prov *prov, mks_key_type want, OSSL_CORE_BIO *cin,
                         OSSL_CALLBACK *data_cb, void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                         void *pw_cbarg)
{
    mks_pw pw = {pw_cb, pw_cbarg};
    mks_pin_ui ui = mks_pin_ui_from_pw(&pw);
    unsigned char *der = NULL;
    size_t der_len = 0;
    char *uri = NULL;
    mks_key *key = NULL;
    mks_ctx *ks;
    mks_rv rv;
    int ret = 1;

    if (!read_input(prov, cin, 0, &der, &der_len) || !looks_like_keyref(der, der_len))
        goto done; /* not ours */
    ERR_set_mark();
    rv = mks_keyref_decode_der(der, der_len, &uri);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        /* A decoder error below the PEM layer is dropped by OpenSSL 3.0's
         * file store ("unsupported"): the stand-in carries the reason. */
        ret = pass_failure(prov, want, rv, "key reference", data_cb, data_cbarg);
        goto done;
    }
    ks = mks_prov_keystore(prov);
    if (ks == NULL) {
        /* A setting of the provider's section the keystore refused: the
         * stand-in carries the reason, as above. */
        ret = pass_failure(prov, want, MKS_ERR_ARG, "provider configuration", data_cb, data_cbarg);
        goto done;
    }
    ERR_set_mark();
    rv = mks_key_open(ks, uri, &ui, &key);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        ret = pass_failure(prov, want, rv, uri, data_cb, data_cbarg);
        goto done;
    }
    ret = pass_key(prov, key, uri, data_cb, data_cbarg);
done:
    free(uri);
    OPENSSL_free(der);
    return ret;
}

static int tss2_decode(mks_prov *prov, mks_key_type want, OSSL_CORE_BIO *cin,
                       OSSL_CALLBACK *data_cb, void *data_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                       void *pw_cbarg)
{
    mks_pw pw = {pw_cb, pw_cbarg};
    mks_pin_ui ui = mks_pin_ui_from_pw(&pw);
    mks_tss2_key file = {0};
    unsigned char *der = NULL;
    size_t der_len = 0;
    mks_key *key = NULL;
    mks_ctx *ks;
    mks_rv rv;
    int ret = 1;

    if (!read_input(prov, cin, 0, &der, &der_len) || !looks_like_tss2(der, der_len))
        goto done; /* not ours */
    ERR_set_mark();
    rv = mks_tss2_decode_der(der, der_len, &file);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        ret = pass_failure(prov, want, rv, "TPM key", data_cb, data_cbarg);
        goto done;
    }
    /* Loading a key into the TPM costs commands and maybe a password
     * prompt: look at its type first. */
    if (tpm_public_type(file.pub, file.pub_len) != want)
        goto done;
    ks = mks_prov_keystore(prov);
    if (ks == NULL) {
        ret = pass_failure(prov, want, MKS_ERR_ARG, "provider configuration", data_cb, data_cbarg);
        goto done;
    }
    ERR_set_mark();
    rv = mks_tpm_key_open_der(ks, der, der_len, &ui, &key);
    ERR_pop_to_mark();
    if (rv != MKS_OK) {
        ret = pass_failure(prov, want, rv, "TPM key", data_cb, data_cbarg);
        goto done;
    }
    ret = pass_key(prov, key, "TPM key", data_cb, data_cbarg);
done:
    mks_tss2_key_clear(&file);
    OPENSSL_free(der);
    return ret;
}

static int mks_rsa_keyref_decoder_decode(void *ctx, OSSL_CORE_BIO *cin, int selection,
                                         OSSL_CALLBACK *data_cb, void *data_cbarg,
                                         OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    return keyref_decode(ctx, MKS_KEY_RSA, cin, data_cb, data_cbarg, pw_cb, pw_cbarg);
}

static int mks_ec_keyref_decoder_decode(void *ctx, OSSL_CORE_BIO *cin, int selection,
                                        OSSL_CALLBACK *data_cb, void *data_cbarg,
                                        OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    return keyref_decode(ctx, MKS_KEY_EC, cin, data_cb, data_cbarg, pw_cb, pw_cbarg);
}

static int mks_rsa_tss2_decoder_decode(void *ctx, OSSL_CORE_BIO *cin, int selection,
                                       OSSL_CALLBACK *data_cb, void *data_cbarg,
                                       OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    return tss2_decode(ctx, MKS_KEY_RSA, cin, data_cb, data_cbarg, pw_cb, pw_cbarg);
}

static int mks_ec_tss2_decoder_decode(void *ctx, OSSL_CORE_BIO *cin, int selection,
                                      OSSL_CALLBACK *data_cb, void *data_cbarg,
                                      OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    return tss2_decode(ctx, MKS_KEY_EC, cin, data_cb, data_cbarg, pw_cb, pw_cbarg);
}

static int mks_decoder_export_object(void *ctx, const void *objref, size_t objref_sz,
                                     OSSL_CALLBACK *export_cb, void *export_cbarg)
{
    return mks_objref_export(ctx, objref, objref_sz, export_cb, export_cbarg);
}

const OSSL_DISPATCH mks_key_pem_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))mks_decoder_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))mks_decoder_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))mks_key_pem_decoder_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))mks_key_pem_decoder_decode},
    {0, NULL},
};

const OSSL_DISPATCH mks_rsa_keyref_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))mks_decoder_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))mks_decoder_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))mks_key_decoder_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))mks_rsa_keyref_decoder_decode},
    {OSSL_FUNC_DECODER_EXPORT_OBJECT, (void (*)(void))mks_decoder_export_object},
    {0, NULL},
};

const OSSL_DISPATCH mks_ec_keyref_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))mks_decoder_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))mks_decoder_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))mks_key_decoder_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))mks_ec_keyref_decoder_decode},
    {OSSL_FUNC_DECODER_EXPORT_OBJECT, (void (*)(void))mks_decoder_export_object},
    {0, NULL},
};

const OSSL_DISPATCH mks_rsa_tss2_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))mks_decoder_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))mks_decoder_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))mks_key_decoder_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))mks_rsa_tss2_decoder_decode},
    {OSSL_FUNC_DECODER_EXPORT_OBJECT, (void (*)(void))mks_decoder_export_object},
    {0, NULL},
};

const OSSL_DISPATCH mks_ec_tss2_decoder_functions[] = {
    {OSSL_FUNC_DECODER_NEWCTX, (void (*)(void))mks_decoder_newctx},
    {OSSL_FUNC_DECODER_FREECTX, (void (*)(void))mks_decoder_freectx},
    {OSSL_FUNC_DECODER_DOES_SELECTION, (void (*)(void))mks_key_decoder_does_selection},
    {OSSL_FUNC_DECODER_DECODE, (void (*)(void))mks_ec_tss2_decoder_decode},
    {OSSL_FUNC_DECODER_EXPORT_OBJECT, (void (*)(void))mks_decoder_export_object},
    {0, NULL},
};
