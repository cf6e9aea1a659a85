/*
 * Keystore internals shared between the front (ctx.c, keystore.c, keyref.c,
 * tss2key.c, spki.c) and the backends (pkcs11/, tpm2/). Not installed.
 */
#ifndef MTLSKS_INTERNAL_H
#define MTLSKS_INTERNAL_H

#include <mtlsks/keystore.h>

#include <stdarg.h>
#include <stdatomic.h>

#include <openssl/types.h>

#if defined(__GNUC__) || defined(__clang__)
#define MKS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MKS_PRINTF(a, b)
#endif

/*
 * Records the calling thread's error message and returns rv, so that a
 * failure reads `return mks_error(MKS_ERR_ARG, "bad id in '%s'", uri);`.
 * The message must never contain a PIN.
 */
mks_rv mks_error(mks_rv rv, const char *fmt, ...) MKS_PRINTF(2, 3);

/* Prefixes the current error message with "what: " (adds context on the way up). */
void mks_error_prefix(const char *fmt, ...) MKS_PRINTF(1, 2);

/* Clears the calling thread's error message. */
void mks_error_clear(void);

/* Writes DER as one PEM block with the given label; *pem is malloc'd and
 * NUL-terminated, *pem_len (may be NULL) its length. */
mks_rv mks_pem_encode(const char *label, const unsigned char *der, size_t der_len, char **pem,
                      size_t *pem_len);

/* Copies a blank-padded PKCS#11 string field into a NUL-terminated C string. */
void mks_copy_padded(char *dst, size_t dstsize, const unsigned char *src, size_t srclen);

/*
 * A key, whichever backend holds it. The front (keystore.c) owns the common
 * fields and the accessors; the backend fills them in and keeps its own state
 * behind `be`, reached through `ops`.
 */
typedef struct mks_key_ops {
    const char *backend; /* "pkcs11", "tpm2" */
    mks_backend kind;
    mks_rv (*sign)(mks_key *key, const mks_mech_params *p, const unsigned char *in, size_t inlen,
                   unsigned char *out, size_t *outlen);
    mks_rv (*decrypt)(mks_key *key, const mks_mech_params *p, const unsigned char *in, size_t inlen,
                      unsigned char *out, size_t *outlen);
    mks_rv (*destroy)(mks_key *key);
    mks_rv (*cert_import)(mks_key *key, const char *label, const unsigned char *der,
                          size_t der_len);
    void (*free_be)(mks_key *key); /* frees `be` */
} mks_key_ops;

struct mks_key {
    atomic_int refs;
    mks_ctx *ctx; /* holds a reference */
    const mks_key_ops *ops;
    void *be;
    int is_private;
    mks_key_type type;
    int bits;
    char curve[16];
    size_t sig_len; /* RSA: modulus bytes; EC: 2 * field bytes (r||s) */
    int can_decrypt;
    unsigned char *spki; /* OPENSSL_malloc'd */
    size_t spki_len;
    unsigned char *id;
    size_t id_len;
    char *label;
    char *uri;
    char token_label[64];
};

/* A zeroed key with one reference, holding a reference on ctx. */
mks_key *mks_key_alloc(mks_ctx *ctx, const mks_key_ops *ops);

/* ---- ctx.c: the context ---------------------------------------------------- */

/* Takes a reference on the context (for backends). */
void mks_ctx_up_ref(mks_ctx *ctx);

/* The context's own OpenSSL library context (default provider only). */
OSSL_LIB_CTX *mks_ctx_libctx(mks_ctx *ctx);

/* Bumped in the child by an atfork handler: state from an older generation
 * (sessions, TPM connections, handles) belongs to the parent. */
unsigned long mks_fork_generation(void);

/* The context's worker threads (async.c): made with the context (no thread
 * starts before the first mks_key_sign_start), freed with it. */
struct mks_async;
mks_rv mks_async_new(struct mks_async **out);
void mks_async_free(struct mks_async *a);
struct mks_async *mks_ctx_async(mks_ctx *ctx);

/* The context's TPM state, created on first use from the configured TCTI. */
struct tpm2_state;
mks_rv mks_ctx_tpm2(mks_ctx *ctx, struct tpm2_state **out);

/* ---- algs.c: digests and curves ------------------------------------------ */

#define MKS_DIGEST_INFO_MAX (19 + 64) /* the longest DigestInfo: SHA-512's */

typedef struct mks_hash_def {
    mks_hash hash;
    const char *name; /* OpenSSL's name: "SHA256" */
    size_t size;      /* digest bytes */
    size_t prefix_len;
    unsigned char prefix[19]; /* DigestInfo DER up to the digest (RFC 8017 9.2) */
} mks_hash_def;

/* The facts of a digest; NULL for MKS_HASH_NONE. */
const mks_hash_def *mks_hash_get(mks_hash h);
/* The digest of that size (20: SHA-1, 28: SHA-224, 32, 48, 64); NULL for none. */
const mks_hash_def *mks_hash_by_size(size_t size);
/* The digest whose DigestInfo `in` is (prefix and digest, nothing more); NULL
 * when in is not one (for callers that built the DigestInfo themselves). */
const mks_hash_def *mks_digest_info_split(const unsigned char *in, size_t inlen);
/* DigestInfo { hd's algorithm, hash } into out. MKS_ERR_ARG when hlen is not
 * the digest's size. */
mks_rv mks_digest_info(const mks_hash_def *hd, const unsigned char *hash, size_t hlen,
                       unsigned char out[MKS_DIGEST_INFO_MAX], size_t *outlen);

typedef struct mks_curve_def {
    const char *name;  /* ours: "P-256" */
    const char *group; /* OpenSSL's group name: "prime256v1" */
    int nid;
    int bits; /* field bits */
} mks_curve_def;

/* A curve by our name or OpenSSL's group name; NULL for one we do not know. */
const mks_curve_def *mks_curve_by_name(const char *name);
const mks_curve_def *mks_curve_by_nid(int nid);

/* SubjectPublicKeyInfo helpers shared by the backends (spki.c). */
mks_rv mks_spki_rsa(OSSL_LIB_CTX *libctx, const unsigned char *n, size_t nlen,
                    const unsigned char *e, size_t elen, unsigned char **spki, size_t *len,
                    int *bits);
mks_rv mks_spki_ec(OSSL_LIB_CTX *libctx, const char *curve, const unsigned char *point, size_t plen,
                   unsigned char **spki, size_t *len);
/* CKA_ID-style key id: SHA-1 of the subjectPublicKey bits. */
mks_rv mks_spki_id(OSSL_LIB_CTX *libctx, const unsigned char *spki, size_t len,
                   unsigned char id[20]);

#endif
