/*
 * Internals shared by the files of the mtlsks provider. Not installed.
 *
 * The provider translates OpenSSL's dispatch calls into keystore calls. One
 * file per operation (store.c, decoder.c, keymgmt.c, signature.c,
 * asym_cipher.c), each with its dispatch tables; provider.c holds init, the
 * algorithm tables and the error helper.
 */
#ifndef MTLSKS_PROV_H
#define MTLSKS_PROV_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/provider.h>

#include <mtlsks/keystore.h>

#include "mtlsks_provider.h"

#if defined(__GNUC__) || defined(__clang__)
#define MKS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MKS_PRINTF(a, b)
#endif

/* Property string of every algorithm we register. */
#define MKS_PROPS "provider=" MKS_PROVIDER_NAME

/* The data structure our PEM stage gives the DER it passes on, key
 * references and TPM keys alike (our own name, so that peers' decoders and
 * ours do not take each other's halves). */
#define MKS_KEY_STRUCTURE "mtlsks-key"

/* Digests the signature and cipher code needs again and again, fetched once. */
enum { MKS_MD_SHA1, MKS_MD_SHA224, MKS_MD_SHA256, MKS_MD_SHA384, MKS_MD_SHA512, MKS_MD_COUNT };

/* The provider context. */
typedef struct mks_prov {
    const OSSL_CORE_HANDLE *handle;
    /* Private library context with only the default provider: every piece of
     * software crypto (digests, public keys, verify, encrypt) runs here so
     * that nothing loops back into this provider. */
    OSSL_LIB_CTX *libctx;
    OSSL_PROVIDER *deflt; /* the default provider in libctx */
    /* The keystore: given by the CLI (builtin variant, not owned), or opened
     * from `cfg` at first use (see mks_prov_keystore). */
    mks_ctx *ks;
    int ks_owned;
    CRYPTO_RWLOCK *ks_lock;
    mks_config cfg;    /* strings owned */
    int async_workers; /* async-workers; -1: unset */
    EVP_MD *md[MKS_MD_COUNT];

    OSSL_FUNC_core_new_error_fn *core_new_error;
    OSSL_FUNC_core_set_error_debug_fn *core_set_error_debug;
    OSSL_FUNC_core_vset_error_fn *core_vset_error;
    OSSL_FUNC_BIO_read_ex_fn *core_bio_read_ex;
} mks_prov;

/*
 * The keystore, opened on first use with the configuration read at init
 * (the PKCS#11 module is not loaded before a key is asked for: a module that
 * itself initialises OpenSSL would otherwise re-enter its own C_Initialize
 * through this provider). NULL with an error raised when it cannot be opened.
 */
mks_ctx *mks_prov_keystore(mks_prov *prov);

/* ---- errors ------------------------------------------------------------- */

/* Reason codes (the strings are in provider.c). */
enum {
    MKS_R_KEYSTORE = 1, /* keystore failure without a closer reason */
    MKS_R_NOMEM,
    MKS_R_BAD_ARGUMENT,
    MKS_R_NOT_FOUND,
    MKS_R_AMBIGUOUS,
    MKS_R_PIN_REQUIRED,
    MKS_R_PIN_INCORRECT,
    MKS_R_PIN_LOCKED,
    MKS_R_TOKEN,
    MKS_R_TOKEN_ABSENT,
    MKS_R_UNSUPPORTED,
    MKS_R_IO,
    MKS_R_PRIVATE_KEY_EXPORT,
    MKS_R_NO_PRIVATE_KEY,
    MKS_R_WRONG_KEY_TYPE,
    MKS_R_BUFFER_TOO_SMALL,
    MKS_R_BAD_KEYREF,
    MKS_R_OPENSSL,
    MKS_R_CONFIG,
    MKS_R_BAD_STATE,
};

/* Raises one error with a reason and a message through the core. */
void mks_raise_at(const mks_prov *prov, const char *file, int line, const char *func, int reason,
                  const char *fmt, ...) MKS_PRINTF(6, 7);
#define mks_raise(prov, reason, ...)                                                               \
    mks_raise_at((prov), __FILE__, __LINE__, __func__, (reason), __VA_ARGS__)

/* The reason code for a keystore return code. */
int mks_reason_of(mks_rv rv);

/*
 * Raises the keystore's failure `rv` with its mks_last_error() text.
 *
 * Every keystore call runs between ERR_set_mark() and ERR_pop_to_mark(): the
 * keystore and the PKCS#11 module (SoftHSM) use OpenSSL themselves and leave
 * errors on the thread's queue that mean nothing to our caller, and a stale
 * error makes SSL_get_error() report a failed handshake. The keystore's own
 * message is what we raise.
 */
void mks_raise_ks_at(const mks_prov *prov, const char *file, int line, const char *func, mks_rv rv);
#define mks_raise_ks(prov, rv) mks_raise_ks_at((prov), __FILE__, __LINE__, __func__, (rv))

/* ---- token calls, in ASYNC jobs on a worker (async.c) ---------------------- */

/*
 * mks_key_sign and mks_key_decrypt for the dispatch functions: inside an
 * OpenSSL ASYNC job (SSL_MODE_ASYNC) the token call runs on a keystore
 * worker while the job is paused; elsewhere it is that call.
 */
mks_rv mks_prov_key_sign(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                         size_t inlen, unsigned char *sig, size_t *siglen);
mks_rv mks_prov_key_decrypt(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                            size_t inlen, unsigned char *out, size_t *outlen);

/* ---- PIN through OpenSSL's passphrase callback --------------------------- */

typedef struct mks_pw {
    OSSL_PASSPHRASE_CALLBACK *cb;
    void *arg;
} mks_pw;

/* An mks_pin_ui that asks `pw` (may have a NULL cb: no prompt possible). */
mks_pin_ui mks_pin_ui_from_pw(mks_pw *pw);

/* ---- digests ------------------------------------------------------------ */

/* The EVP_MD for name in the private libctx, one new reference (free with
 * EVP_MD_free). Common digests without properties come from the provider's
 * cache. NULL when unknown (error raised). */
EVP_MD *mks_md_fetch(mks_prov *prov, const char *name, const char *props);

/* The keystore's name for md's algorithm; MKS_HASH_NONE when it has none. */
mks_hash mks_md_to_hash(const EVP_MD *md);

/* ---- key objects (keymgmt.c) -------------------------------------------- */

/*
 * The provider's key object. Immutable once made (by load or import), and
 * refcounted, so that dup and operation contexts share it.
 */
typedef struct mks_keyobj mks_keyobj;

/* Wraps an opened keystore key (taking ownership of key, also on failure). */
mks_keyobj *mks_keyobj_from_key(mks_prov *prov, mks_key *key);

/*
 * A key object that stands for a key that could not be opened: KEYMGMT load
 * raises `rv`'s reason with `msg` and fails. Decoders hand this on instead
 * of raising the error themselves, because OpenSSL 3.0's file store throws
 * away errors raised while decoding and reports only "unsupported". The
 * object loads, and every use of it raises the failure (mks_keyobj_usable),
 * where the user sees it.
 */
mks_keyobj *mks_keyobj_failed(mks_prov *prov, mks_key_type type, mks_rv rv, const char *msg);

/* 0, with the failure raised, for a key that could not be opened; else 1. */
int mks_keyobj_usable(const mks_keyobj *k);
mks_keyobj *mks_keyobj_up_ref(mks_keyobj *k);
void mks_keyobj_free(mks_keyobj *k);

mks_key_type mks_keyobj_type(const mks_keyobj *k);
/* The keystore key; NULL for a public key imported from software. */
mks_key *mks_keyobj_key(const mks_keyobj *k);
/* 1 when the private half is in hardware and usable. */
int mks_keyobj_has_private(const mks_keyobj *k);
/* The public half as an EVP_PKEY of the private libctx (borrowed). */
EVP_PKEY *mks_keyobj_pub(const mks_keyobj *k);
/* RSA modulus bits or EC field bits. */
int mks_keyobj_bits(const mks_keyobj *k);
/* Where a name in error messages comes from: the URI, or "software public key". */
const char *mks_keyobj_name(const mks_keyobj *k);

/*
 * Object references: how a store or decoder hands a key object to KEYMGMT
 * load. The reference is an mks_objref (deliberately not pointer-sized, so
 * that no other provider's load() mistakes it for its own pointer). load()
 * takes the key out of it; whoever made the reference frees what was not
 * taken.
 */
typedef struct mks_objref {
    uint64_t magic;
    mks_keyobj *key;
} mks_objref;

/*
 * Passes `key` (owned; consumed) to cb as an OSSL_OBJECT_PKEY reference with
 * the right data type, and frees it unless KEYMGMT load took it. Returns
 * what cb returns.
 */
int mks_objref_pass(mks_keyobj *key, const char *desc, OSSL_CALLBACK *cb, void *cbarg);

/* export_object for stores and decoders: public keys only. */
int mks_objref_export(mks_prov *prov, const void *ref, size_t ref_sz, OSSL_CALLBACK *cb,
                      void *cbarg);

/* ---- key file PEM (decoder.c) ------------------------------------------- */

enum { MKS_PEM_KEYREF, MKS_PEM_TSS2 };

/*
 * Looks at the first PEM block in buf[0..len). Returns 1 when it is one of
 * ours (*kind: MKS_PEM_KEYREF for "PKCS#11 PROVIDER URI", MKS_PEM_TSS2 for
 * "TSS2 PRIVATE KEY"), with its base64-decoded body in *der
 * (OPENSSL_malloc'd); 0 when it is not (or there is no PEM at all); -1 when
 * it is ours but malformed or memory ran out (*kind set). Pure function: no
 * I/O, no error queue; fuzz/fuzz_key_pem.c exercises it.
 */
int mks_key_pem_parse(const char *buf, size_t len, int *kind, unsigned char **der, size_t *der_len);

/* ---- dispatch tables ---------------------------------------------------- */

extern const OSSL_DISPATCH mks_pkcs11_store_functions[];
extern const OSSL_DISPATCH mks_tpmkey_store_functions[];
extern const OSSL_DISPATCH mks_key_pem_decoder_functions[];
extern const OSSL_DISPATCH mks_key_der_decoder_functions[];
extern const OSSL_DISPATCH mks_private_key_encoder_functions[];
extern const OSSL_DISPATCH mks_rsa_keymgmt_functions[];
extern const OSSL_DISPATCH mks_ec_keymgmt_functions[];
extern const OSSL_DISPATCH mks_ecdsa_signature_functions[];
extern const OSSL_DISPATCH mks_rsa_signature_functions[];
extern const OSSL_DISPATCH mks_rsa_asym_cipher_functions[];

#endif
