/*
 * The mtlsks provider: init, parameters, the algorithm tables, teardown and
 * the one error helper every dispatch function reports through.
 *
 * Every algorithm is registered when the provider loads: libssl reads a
 * provider's algorithms once, at SSL_CTX_new. No RAND, digests or TLS groups:
 * a provider that offers them takes them over from the default provider.
 */
#include "prov.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/obj_mac.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#ifndef MTLSKS_VERSION
#define MTLSKS_VERSION "0.1.0"
#endif

/* openssl.cnf keys of the provider's section. */
#define MKS_CONF_PKCS11_MODULE "pkcs11-module"
#define MKS_CONF_PIN_SOURCE "pkcs11-pin-source"
#define MKS_CONF_TPM2_TCTI "tpm2-tcti"
#define MKS_CONF_TPM2_HOLD "tpm2-hold-objects"
#define MKS_CONF_TPM2_SESSIONS "tpm2-sessions"
#define MKS_CONF_CACHE_KEYS "pkcs11-cache-keys"
#define MKS_CONF_ASYNC_WORKERS "async-workers"

static OSSL_FUNC_provider_teardown_fn mks_teardown;
static OSSL_FUNC_provider_gettable_params_fn mks_gettable_params;
static OSSL_FUNC_provider_get_params_fn mks_get_params;
static OSSL_FUNC_provider_query_operation_fn mks_query_operation;
static OSSL_FUNC_provider_get_reason_strings_fn mks_get_reason_strings;

/* Set by the CLI before OSSL_PROVIDER_load of the builtin provider. */
static mks_ctx *builtin_ks;

/* ---- errors ------------------------------------------------------------- */

static const OSSL_ITEM reason_strings[] = {
    {MKS_R_KEYSTORE, "keystore error"},
    {MKS_R_NOMEM, "out of memory"},
    {MKS_R_BAD_ARGUMENT, "invalid argument"},
    {MKS_R_NOT_FOUND, "object not found"},
    {MKS_R_AMBIGUOUS, "URI names more than one object"},
    {MKS_R_PIN_REQUIRED, "PIN required"},
    {MKS_R_PIN_INCORRECT, "PIN incorrect"},
    {MKS_R_PIN_LOCKED, "PIN locked"},
    {MKS_R_TOKEN, "token error"},
    {MKS_R_TOKEN_ABSENT, "token not present"},
    {MKS_R_UNSUPPORTED, "operation not supported"},
    {MKS_R_IO, "I/O error"},
    {MKS_R_PRIVATE_KEY_EXPORT, "private key cannot leave the hardware"},
    {MKS_R_NO_PRIVATE_KEY, "key has no private half"},
    {MKS_R_WRONG_KEY_TYPE, "wrong key type"},
    {MKS_R_BUFFER_TOO_SMALL, "output buffer too small"},
    {MKS_R_BAD_KEYREF, "malformed key reference"},
    {MKS_R_OPENSSL, "OpenSSL call failed"},
    {MKS_R_CONFIG, "configuration error"},
    {MKS_R_BAD_STATE, "operation not initialised"},
    {0, NULL},
};

static const OSSL_ITEM *mks_get_reason_strings(void *provctx)
{
    return reason_strings;
}

static void raise_v(const mks_prov *prov, const char *file, int line, const char *func, int reason,
                    const char *fmt, va_list ap)
{
    if (prov == NULL || prov->core_new_error == NULL || prov->core_vset_error == NULL)
        return;
    prov->core_new_error(prov->handle);
    if (prov->core_set_error_debug != NULL)
        prov->core_set_error_debug(prov->handle, file, line, func);
    prov->core_vset_error(prov->handle, (uint32_t)reason, fmt, ap);
}

void mks_raise_at(const mks_prov *prov, const char *file, int line, const char *func, int reason,
                  const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    raise_v(prov, file, line, func, reason, fmt, ap);
    va_end(ap);
}

int mks_reason_of(mks_rv rv)
{
    switch (rv) {
    case MKS_ERR_NOMEM:
        return MKS_R_NOMEM;
    case MKS_ERR_ARG:
        return MKS_R_BAD_ARGUMENT;
    case MKS_ERR_NOT_FOUND:
        return MKS_R_NOT_FOUND;
    case MKS_ERR_AMBIGUOUS:
        return MKS_R_AMBIGUOUS;
    case MKS_ERR_PIN_REQUIRED:
        return MKS_R_PIN_REQUIRED;
    case MKS_ERR_PIN_INCORRECT:
        return MKS_R_PIN_INCORRECT;
    case MKS_ERR_PIN_LOCKED:
        return MKS_R_PIN_LOCKED;
    case MKS_ERR_TOKEN:
        return MKS_R_TOKEN;
    case MKS_ERR_TOKEN_ABSENT:
        return MKS_R_TOKEN_ABSENT;
    case MKS_ERR_UNSUPPORTED:
        return MKS_R_UNSUPPORTED;
    case MKS_ERR_IO:
        return MKS_R_IO;
    default:
        return MKS_R_KEYSTORE;
    }
}

void mks_raise_ks_at(const mks_prov *prov, const char *file, int line, const char *func, mks_rv rv)
{
    const char *msg = mks_last_error();

    mks_raise_at(prov, file, line, func, mks_reason_of(rv), "%s",
                 msg != NULL && *msg != '\0' ? msg : mks_rv_name(rv));
}

/* ---- PIN bridge ---------------------------------------------------------- */

/* mks_pin_cb over OpenSSL's passphrase callback (the application's prompt,
 * or the UI method given to OSSL_STORE_open / the pem_password_cb). */
static int pin_from_passphrase(char *buf, size_t bufsize, size_t *len, const char *token_label,
                               void *arg)
{
    mks_pw *pw = arg;
    char info[128];
    OSSL_PARAM params[2];
    size_t n = 0;

    if (pw == NULL || pw->cb == NULL || bufsize < 2)
        return 0;
    if (token_label != NULL && strcmp(token_label, MKS_PIN_FOR_TPM_KEY) == 0)
        snprintf(info, sizeof(info), "TPM key");
    else
        snprintf(info, sizeof(info), "PKCS#11 token '%s'", token_label != NULL ? token_label : "");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PASSPHRASE_PARAM_INFO, info, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!pw->cb(buf, bufsize - 1, &n, params, pw->arg) || n == 0 || n > bufsize - 1) {
        /* An empty answer is no PIN: never spend a login attempt on it. */
        OPENSSL_cleanse(buf, bufsize);
        return 0;
    }
    buf[n] = '\0';
    *len = n;
    return 1;
}

mks_pin_ui mks_pin_ui_from_pw(mks_pw *pw)
{
    mks_pin_ui ui;

    ui.cb = pw != NULL && pw->cb != NULL ? pin_from_passphrase : NULL;
    ui.arg = pw;
    return ui;
}

/* ---- digests ------------------------------------------------------------- */

static const struct {
    const char *name;
    mks_hash hash;
    int nid;
    const char *aliases[3]; /* the names OpenSSL and applications use */
} md_table[MKS_MD_COUNT] = {
    [MKS_MD_SHA1] = {"SHA1", MKS_HASH_SHA1, NID_sha1, {"SHA-1", "SSL3-SHA1", NULL}},
    [MKS_MD_SHA224] = {"SHA2-224", MKS_HASH_SHA224, NID_sha224, {"SHA224", "SHA-224", NULL}},
    [MKS_MD_SHA256] = {"SHA2-256", MKS_HASH_SHA256, NID_sha256, {"SHA256", "SHA-256", NULL}},
    [MKS_MD_SHA384] = {"SHA2-384", MKS_HASH_SHA384, NID_sha384, {"SHA384", "SHA-384", NULL}},
    [MKS_MD_SHA512] = {"SHA2-512", MKS_HASH_SHA512, NID_sha512, {"SHA512", "SHA-512", NULL}},
};

/* ASCII case-insensitive equality: digest names are ASCII, and this runs for
 * every signature. */
static int name_eq(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++) {
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;

        if (x != y && ((x | 0x20) != (y | 0x20) || (x | 0x20) < 'a' || (x | 0x20) > 'z'))
            return 0;
    }
    return *a == *b;
}

/* The cache slot for a digest name, by a plain string compare: EVP_MD_is_a
 * takes OpenSSL's name map lock, which every signature would pay. */
static int md_index(const char *name)
{
    int i, j;

    for (i = 0; i < MKS_MD_COUNT; i++) {
        if (name_eq(name, md_table[i].name))
            return i;
        for (j = 0; j < 3 && md_table[i].aliases[j] != NULL; j++)
            if (name_eq(name, md_table[i].aliases[j]))
                return i;
    }
    return -1;
}

EVP_MD *mks_md_fetch(mks_prov *prov, const char *name, const char *props)
{
    EVP_MD *md = NULL;
    int i;

    if (props == NULL || *props == '\0') {
        i = md_index(name);
        if (i >= 0 && prov->md[i] != NULL && EVP_MD_up_ref(prov->md[i]))
            return prov->md[i];
    }
    ERR_set_mark();
    md = EVP_MD_fetch(prov->libctx, name, props);
    ERR_pop_to_mark();
    if (md == NULL)
        mks_raise(prov, MKS_R_UNSUPPORTED, "unknown digest '%s'", name);
    return md;
}

mks_hash mks_md_to_hash(const EVP_MD *md)
{
    int i, nid;

    if (md == NULL)
        return MKS_HASH_NONE;
    nid = EVP_MD_get_type(md);
    for (i = 0; i < MKS_MD_COUNT; i++)
        if (md_table[i].nid == nid)
            return md_table[i].hash;
    return MKS_HASH_NONE;
}

/* ---- algorithm tables ----------------------------------------------------- */

static const OSSL_ALGORITHM store_algs[] = {
    {"pkcs11", MKS_PROPS, mks_pkcs11_store_functions, "PKCS#11 URIs (RFC 7512)"},
    {"tpmkey", MKS_PROPS, mks_tpmkey_store_functions, "persistent TPM keys (tpmkey:handle=)"},
    {NULL, NULL, NULL, NULL},
};

#define RSA_NAMES "RSA:rsaEncryption:1.2.840.113549.1.1.1"
#define EC_NAMES "EC:id-ecPublicKey:1.2.840.10045.2.1"

/*
 * Two decoding steps, as OpenSSL 3.0's chains need them (see decoder.c):
 * PEM -> DER for our two PEM labels (named "DER", so the file: store picks
 * it up), then DER with our data structure -> key object, RSA or EC. Two
 * decoders only: each one costs every certificate parse in the process.
 */
static const OSSL_ALGORITHM decoder_algs[] = {
    {"DER", MKS_PROPS ",input=pem", mks_key_pem_decoder_functions,
     "PKCS#11 PROVIDER URI and TSS2 PRIVATE KEY PEM to DER"},
    {"EC", MKS_PROPS ",input=der,structure=" MKS_KEY_STRUCTURE, mks_key_der_decoder_functions,
     "key references and TPM keys, RSA and EC"},
    {NULL, NULL, NULL, NULL},
};

/*
 * Private-key encodings of our keys, each refused with a reason (encoder.c):
 * the output types and structures PEM_write_PrivateKey, i2d_PrivateKey and
 * openssl pkey/pkcs8 ask for.
 */
#define PRIVATE_ENCODER(names, output, structure)                                                  \
    {                                                                                              \
        names, MKS_PROPS ",output=" output ",structure=" structure,                                \
            mks_private_key_encoder_functions, "refuses to write out a private key in hardware"    \
    }
#define PRIVATE_ENCODERS(names)                                                                    \
    PRIVATE_ENCODER(names, "pem", "PrivateKeyInfo"),                                               \
        PRIVATE_ENCODER(names, "der", "PrivateKeyInfo"),                                           \
        PRIVATE_ENCODER(names, "pem", "EncryptedPrivateKeyInfo"),                                  \
        PRIVATE_ENCODER(names, "der", "EncryptedPrivateKeyInfo"),                                  \
        PRIVATE_ENCODER(names, "pem", "type-specific"),                                            \
        PRIVATE_ENCODER(names, "der", "type-specific")
static const OSSL_ALGORITHM encoder_algs[] = {
    PRIVATE_ENCODERS(RSA_NAMES),
    PRIVATE_ENCODERS(EC_NAMES),
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM keymgmt_algs[] = {
    {RSA_NAMES, MKS_PROPS, mks_rsa_keymgmt_functions, "RSA key in hardware"},
    {EC_NAMES, MKS_PROPS, mks_ec_keymgmt_functions, "EC key in hardware"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM signature_algs[] = {
    {RSA_NAMES, MKS_PROPS, mks_rsa_signature_functions,
     "RSA PKCS#1 v1.5 and PSS signatures in hardware"},
    {"ECDSA", MKS_PROPS, mks_ecdsa_signature_functions, "ECDSA signatures in hardware"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM asym_cipher_algs[] = {
    {RSA_NAMES, MKS_PROPS, mks_rsa_asym_cipher_functions, "RSA decryption in hardware"},
    {NULL, NULL, NULL, NULL},
};

static const OSSL_ALGORITHM *mks_query_operation(void *provctx, int operation_id, int *no_cache)
{
    *no_cache = 0;
    switch (operation_id) {
    case OSSL_OP_STORE:
        return store_algs;
    case OSSL_OP_DECODER:
        return decoder_algs;
    case OSSL_OP_ENCODER:
        return encoder_algs;
    case OSSL_OP_KEYMGMT:
        return keymgmt_algs;
    case OSSL_OP_SIGNATURE:
        return signature_algs;
    case OSSL_OP_ASYM_CIPHER:
        return asym_cipher_algs;
    default:
        return NULL;
    }
}

/* ---- parameters ------------------------------------------------------------ */

static const OSSL_PARAM provider_param_types[] = {
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_NAME, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_VERSION, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_BUILDINFO, OSSL_PARAM_UTF8_PTR, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_PROV_PARAM_STATUS, OSSL_PARAM_INTEGER, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *mks_gettable_params(void *provctx)
{
    return provider_param_types;
}

static int mks_get_params(void *provctx, OSSL_PARAM params[])
{
    OSSL_PARAM *p;

    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, "mtls-keystore provider (" MKS_PROVIDER_NAME ")"))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, MTLSKS_VERSION))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_BUILDINFO);
    if (p != NULL && !OSSL_PARAM_set_utf8_ptr(p, MTLSKS_VERSION " (" OPENSSL_VERSION_TEXT ")"))
        return 0;
    p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
    if (p != NULL && !OSSL_PARAM_set_int(p, 1))
        return 0;
    return 1;
}

/* ---- init and teardown ----------------------------------------------------- */

static void prov_free(mks_prov *prov)
{
    int i;

    if (prov == NULL)
        return;
    for (i = 0; i < MKS_MD_COUNT; i++)
        EVP_MD_free(prov->md[i]);
    /* The keystore leaves the module alone while the process exits. */
    if (prov->ks_owned && prov->ks != NULL)
        mks_ctx_free(prov->ks);
    CRYPTO_THREAD_lock_free(prov->ks_lock);
    OPENSSL_free((char *)prov->cfg.pkcs11_module);
    OPENSSL_free((char *)prov->cfg.pin_source);
    OPENSSL_free((char *)prov->cfg.tpm2_tcti);
    OPENSSL_free((char *)prov->cfg.tpm2_hold_objects);
    OPENSSL_free((char *)prov->cfg.tpm2_sessions);
    OSSL_PROVIDER_unload(prov->deflt);
    OSSL_LIB_CTX_free(prov->libctx);
    OPENSSL_clear_free(prov, sizeof(*prov));
}

static void mks_teardown(void *provctx)
{
    prov_free(provctx);
}

static const OSSL_DISPATCH provider_functions[] = {
    {OSSL_FUNC_PROVIDER_TEARDOWN, (void (*)(void))mks_teardown},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, (void (*)(void))mks_gettable_params},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, (void (*)(void))mks_get_params},
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))mks_query_operation},
    {OSSL_FUNC_PROVIDER_GET_REASON_STRINGS, (void (*)(void))mks_get_reason_strings},
    {0, NULL},
};

/* A configuration value, copied; NULL when unset or empty. */
static int conf_dup(const char *value, const char **out)
{
    *out = NULL;
    if (value == NULL || *value == '\0')
        return 1;
    *out = OPENSSL_strdup(value);
    return *out != NULL;
}

/* pkcs11-cache-keys: yes (the default) or no. */
static int conf_cache_keys(mks_prov *prov, const char *value)
{
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                "off", "0"};
    size_t i;

    for (i = 0; value != NULL && i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (OPENSSL_strcasecmp(value, yes[i]) == 0)
            return 1;
        if (OPENSSL_strcasecmp(value, no[i]) == 0) {
            prov->cfg.no_key_cache = 1;
            return 1;
        }
    }
    if (value == NULL || *value == '\0')
        return 1;
    mks_raise(prov, MKS_R_CONFIG,
              "%s = '%s' in the provider's section of openssl.cnf: use yes or no",
              MKS_CONF_CACHE_KEYS, value);
    return 0;
}

/*
 * async-workers = N: worker threads for token calls made inside OpenSSL
 * ASYNC jobs (provider/async.c); 0 makes every call in its caller's thread.
 * Unset (-1): the keystore's default, MKS_ASYNC_WORKERS_DEFAULT. A bad value
 * stops the provider from loading, and says so on stderr as well: OpenSSL
 * 3.0 drops the errors of a provider that fails to load from openssl.cnf,
 * and the user would read only "unregistered scheme" later.
 */
static int conf_workers(mks_prov *prov, const char *value, int *out)
{
    char *end = NULL;
    long n;

    *out = -1;
    if (value == NULL || *value == '\0')
        return 1;
    errno = 0;
    n = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || n < 0 || n > MKS_ASYNC_WORKERS_MAX) {
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "%s = '%.64s' in the provider's section of openssl.cnf is not a number from 0 "
                 "(token calls in the caller's thread) to %d",
                 MKS_CONF_ASYNC_WORKERS, value, MKS_ASYNC_WORKERS_MAX);
        fprintf(stderr, "mtlsks: %s; the provider is not loaded\n", msg);
        mks_raise(prov, MKS_R_CONFIG, "%s", msg);
        return 0;
    }
    *out = (int)n;
    return 1;
}

/* Reads our section of openssl.cnf. */
static int read_config(mks_prov *prov, OSSL_FUNC_core_get_params_fn *core_get_params)
{
    char *module = NULL, *pin_source = NULL, *tcti = NULL, *hold = NULL, *sessions = NULL;
    char *cache_keys = NULL, *workers = NULL;
    OSSL_PARAM params[8];

    params[0] = OSSL_PARAM_construct_utf8_ptr(MKS_CONF_PKCS11_MODULE, &module, 0);
    params[1] = OSSL_PARAM_construct_utf8_ptr(MKS_CONF_PIN_SOURCE, &pin_source, 0);
    params[2] = OSSL_PARAM_construct_utf8_ptr(MKS_CONF_TPM2_TCTI, &tcti, 0);
    params[3] = OSSL_PARAM_construct_utf8_ptr(MKS_CONF_TPM2_HOLD, &hold, 0);
    params[4] = OSSL_PARAM_construct_utf8_ptr(MKS_CONF_TPM2_SESSIONS, &sessions, 0);
    params[5] = OSSL_PARAM_construct_utf8_ptr(MKS_CONF_CACHE_KEYS, &cache_keys, 0);
    params[6] = OSSL_PARAM_construct_utf8_ptr(MKS_CONF_ASYNC_WORKERS, &workers, 0);
    params[7] = OSSL_PARAM_construct_end();
    if (core_get_params == NULL || !core_get_params(prov->handle, params)) {
        mks_raise(prov, MKS_R_CONFIG, "cannot read the provider's configuration");
        return 0;
    }
    if (!conf_cache_keys(prov, cache_keys) || !conf_workers(prov, workers, &prov->async_workers))
        return 0;
    if (!conf_dup(module, &prov->cfg.pkcs11_module) ||
        !conf_dup(pin_source, &prov->cfg.pin_source) || !conf_dup(tcti, &prov->cfg.tpm2_tcti) ||
        !conf_dup(hold, &prov->cfg.tpm2_hold_objects) ||
        !conf_dup(sessions, &prov->cfg.tpm2_sessions)) {
        mks_raise(prov, MKS_R_NOMEM, "cannot copy the provider's configuration");
        return 0;
    }
    return 1;
}

mks_ctx *mks_prov_keystore(mks_prov *prov)
{
    mks_ctx *ks = NULL;
    mks_rv rv;

    if (!CRYPTO_THREAD_write_lock(prov->ks_lock)) {
        mks_raise(prov, MKS_R_OPENSSL, "cannot take the keystore lock");
        return NULL;
    }
    if (prov->ks == NULL) {
        /* Not remembered on failure: the module may appear later. */
        ERR_set_mark();
        rv = mks_ctx_new(&prov->cfg, &prov->ks);
        if (rv == MKS_OK && prov->async_workers >= 0 &&
            (rv = mks_ctx_set_async_workers(prov->ks, prov->async_workers)) != MKS_OK) {
            mks_ctx_free(prov->ks);
            prov->ks = NULL;
        }
        ERR_pop_to_mark();
        if (rv == MKS_OK)
            prov->ks_owned = 1;
        else
            mks_raise_ks(prov, rv);
    }
    ks = prov->ks;
    CRYPTO_THREAD_unlock(prov->ks_lock);
    return ks;
}

static int provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                         const OSSL_DISPATCH **out, void **provctx, mks_ctx *shared_ks)
{
    OSSL_FUNC_core_get_params_fn *core_get_params = NULL;
    mks_prov *prov = NULL;
    int ok = 0, i;

    prov = OPENSSL_zalloc(sizeof(*prov));
    if (prov == NULL)
        goto done;
    prov->handle = handle;
    prov->async_workers = -1;
    for (; in->function_id != 0; in++) {
        switch (in->function_id) {
        case OSSL_FUNC_CORE_GET_PARAMS:
            core_get_params = OSSL_FUNC_core_get_params(in);
            break;
        case OSSL_FUNC_CORE_NEW_ERROR:
            prov->core_new_error = OSSL_FUNC_core_new_error(in);
            break;
        case OSSL_FUNC_CORE_SET_ERROR_DEBUG:
            prov->core_set_error_debug = OSSL_FUNC_core_set_error_debug(in);
            break;
        case OSSL_FUNC_CORE_VSET_ERROR:
            prov->core_vset_error = OSSL_FUNC_core_vset_error(in);
            break;
        case OSSL_FUNC_BIO_READ_EX:
            prov->core_bio_read_ex = OSSL_FUNC_BIO_read_ex(in);
            break;
        default:
            break;
        }
    }
    if (prov->core_bio_read_ex == NULL) {
        mks_raise(prov, MKS_R_CONFIG, "the OpenSSL core offers no BIO reading");
        goto done;
    }

    /* A library context of our own, with nothing but the default provider. It
     * loads no openssl.cnf, so it can never load this provider again. */
    prov->libctx = OSSL_LIB_CTX_new();
    if (prov->libctx == NULL ||
        (prov->deflt = OSSL_PROVIDER_load(prov->libctx, "default")) == NULL) {
        mks_raise(prov, MKS_R_OPENSSL,
                  "cannot load the default provider into a private "
                  "library context");
        goto done;
    }
    for (i = 0; i < MKS_MD_COUNT; i++) {
        prov->md[i] = EVP_MD_fetch(prov->libctx, md_table[i].name, NULL);
        if (prov->md[i] == NULL) {
            mks_raise(prov, MKS_R_OPENSSL, "cannot fetch %s", md_table[i].name);
            goto done;
        }
    }

    prov->ks_lock = CRYPTO_THREAD_lock_new();
    if (prov->ks_lock == NULL) {
        mks_raise(prov, MKS_R_NOMEM, "cannot create a lock");
        goto done;
    }
    if (shared_ks != NULL) {
        prov->ks = shared_ks;
        prov->ks_owned = 0;
    } else if (!read_config(prov, core_get_params)) {
        goto done;
    }

    *out = provider_functions;
    *provctx = prov;
    prov = NULL;
    ok = 1;
done:
    prov_free(prov);
    return ok;
}

__attribute__((visibility("default"))) int OSSL_provider_init(const OSSL_CORE_HANDLE *handle,
                                                              const OSSL_DISPATCH *in,
                                                              const OSSL_DISPATCH **out,
                                                              void **provctx)
{
    return provider_init(handle, in, out, provctx, NULL);
}

int mks_provider_builtin_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
                              const OSSL_DISPATCH **out, void **provctx)
{
    if (builtin_ks == NULL)
        return 0; /* mks_provider_builtin_set_keystore() was not called */
    return provider_init(handle, in, out, provctx, builtin_ks);
}

void mks_provider_builtin_set_keystore(mks_ctx *ks)
{
    builtin_ks = ks;
}
