/*
 * libmtlsks: one C API over the hardware that holds mTLS private keys.
 *
 * The keystore knows tokens, keys and certificates. It knows nothing of
 * OpenSSL's provider API; the provider (provider/) and the CLI (cli/) are its
 * two users. Private keys never leave the hardware: the API has no call that
 * returns private key material.
 *
 * Conventions:
 * - Every fallible function returns an mks_rv. On failure a message naming
 *   what failed and where ("C_Login failed: CKR_PIN_INCORRECT (token 'web')")
 *   is left for the calling thread in mks_last_error().
 * - _new/_free pairs own; get0 borrows (valid while the owner lives); up_ref
 *   takes a reference that the caller releases with _free.
 * - All objects are thread-safe unless a comment says otherwise.
 * - After fork() a child may keep using a context and keys it inherited: the
 *   keystore initialises the module again, reopens sessions, logs in again with
 *   the PIN it was given and finds the key objects again, on first use.
 */
#ifndef MTLSKS_KEYSTORE_H
#define MTLSKS_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MKS_WUR __attribute__((warn_unused_result))
#else
#define MKS_WUR
#endif

typedef enum mks_rv {
    MKS_OK = 0,
    MKS_ERR_GENERAL,       /* anything not below; see mks_last_error() */
    MKS_ERR_NOMEM,         /* out of memory */
    MKS_ERR_ARG,           /* malformed input: URI, parameter, file content */
    MKS_ERR_NOT_FOUND,     /* no such slot, token or object */
    MKS_ERR_AMBIGUOUS,     /* a URI that must name one object names several */
    MKS_ERR_EXISTS,        /* an object with that label exists already */
    MKS_ERR_MISMATCH,      /* certificate does not belong to the key */
    MKS_ERR_PIN_REQUIRED,  /* login needed and no PIN could be obtained */
    MKS_ERR_PIN_INCORRECT, /* the token rejected the PIN (never retried) */
    MKS_ERR_PIN_LOCKED,    /* PIN locked, or the token reports the final try */
    MKS_ERR_TOKEN,         /* a token call failed (device error, ...) */
    MKS_ERR_TOKEN_ABSENT,  /* token removed / not present */
    MKS_ERR_NO_SPACE,      /* the token has no room for new objects */
    MKS_ERR_UNSUPPORTED,   /* key type, mechanism or parameter not supported */
    MKS_ERR_IO,            /* reading or writing a file failed */
} mks_rv;

/* Short stable name of a return code, e.g. "MKS_ERR_PIN_INCORRECT". */
const char *mks_rv_name(mks_rv rv);

/*
 * The message describing the last failure on the calling thread. Never NULL
 * (empty string when none). Never contains a PIN. Valid until the next
 * keystore call on this thread.
 */
const char *mks_last_error(void);

/* ------------------------------------------------------------------------ */
/* Context                                                                   */

typedef struct mks_ctx mks_ctx;

typedef struct mks_config {
    /* PKCS#11 module path; NULL = p11-kit-proxy (every module p11-kit knows). */
    const char *pkcs11_module;
    /* Where the user PIN comes from when a URI does not say: "file:PATH". NULL = none. */
    const char *pin_source;
    /* TPM TCTI string ("device:/dev/tpmrm0", "swtpm:host=...,port=..."). NULL = default. */
    const char *tpm2_tcti;
    /* Whether a loaded TPM key stays loaded between operations: "auto" (NULL:
     * yes behind a resource manager -- tabrmd, /dev/tpmrmN -- else each
     * operation loads and flushes it), "yes", "no". */
    const char *tpm2_hold_objects;
    /* HMAC sessions: "auto" (NULL: for keys with a password), "always". */
    const char *tpm2_sessions;
    /* 1: sign and decrypt with the token objects themselves. 0 (default):
     * after each login, each private key in use is copied into a session
     * object (C_CopyObject, CKA_TOKEN=FALSE) where the token allows it, and
     * the copy signs: SoftHSM re-reads a token object's file at every use,
     * networked HSMs fetch it again. */
    int no_key_cache;
} mks_config;

/*
 * Creates a keystore context. The strings in cfg are copied (cfg may be
 * NULL: every default). Nothing is loaded or opened here: the PKCS#11
 * module is loaded and initialised by the first call that needs a token
 * (mks_slots_list, mks_objects_find, mks_key_open, mks_keygen, ...), which
 * then reports MKS_ERR_NOT_FOUND (module missing) or MKS_ERR_TOKEN
 * (C_Initialize failed); the TPM is reached at the first TPM call. A
 * process that uses only TPM keys never loads the module.
 * Errors: MKS_ERR_NOMEM, MKS_ERR_GENERAL (OpenSSL's default provider
 * cannot be loaded into the context's own library context).
 */
MKS_WUR mks_rv mks_ctx_new(const mks_config *cfg, mks_ctx **out);

/*
 * Frees the context once the last key holding it is freed. While the process
 * exits (atexit handlers running) it leaves the module alone: SoftHSM 2.6.1
 * crashes when C_CloseSession/C_Finalize run after its own destructors.
 */
void mks_ctx_free(mks_ctx *ctx);

/* ------------------------------------------------------------------------ */
/* PIN                                                                       */

/*
 * Asks for a PIN. Writes at most bufsize-1 bytes into buf (NUL-terminated),
 * stores the length in *len. token_label names the token for a prompt, or is
 * MKS_PIN_FOR_TPM_KEY when a TPM key's password is asked for.
 * Returns 1 with a PIN, 0 when none can be had (no terminal, cancelled),
 * MKS_PIN_EMPTY when the user was asked and answered with an empty line (the
 * error then says so instead of suggesting a terminal).
 */
typedef int mks_pin_cb(char *buf, size_t bufsize, size_t *len, const char *token_label, void *arg);

#define MKS_PIN_EMPTY (-1)

#define MKS_PIN_FOR_TPM_KEY "TPM key"

typedef struct mks_pin_ui {
    mks_pin_cb *cb;
    void *arg;
} mks_pin_ui;

/*
 * PIN sources, in order: the URI's pin-source, the config's pin_source, the
 * pin_ui callback (may be NULL). The PIN, once accepted, is kept by the token
 * in memory that is wiped when the context is freed, so that the keystore can
 * log in again after fork() or after the token drops the login.
 */

/* ------------------------------------------------------------------------ */
/* Slots and tokens                                                          */

typedef struct mks_slot_info {
    /* Index that --slot takes: counts usable slots (token present, initialised,
     * writable) in a stable order. -1 for slots that cannot hold keys. */
    int index;
    unsigned long slot_id;
    char module[256]; /* module path or library description */
    char slot_description[65];
    int token_present;
    int token_initialized;
    int write_protected;
    int login_required;
    char token_label[33]; /* blank-trimmed, NUL-terminated */
    char token_manufacturer[33];
    char token_model[17];
    char token_serial[17];
    char *token_uri; /* "pkcs11:model=...;manufacturer=...;serial=...;token=..." or NULL */
} mks_slot_info;

/* Lists every slot of the module. Caller frees with mks_slots_free. */
MKS_WUR mks_rv mks_slots_list(mks_ctx *ctx, mks_slot_info **out, size_t *count);
void mks_slots_free(mks_slot_info *slots, size_t count);

/* ------------------------------------------------------------------------ */
/* Objects                                                                   */

typedef enum mks_obj_class {
    MKS_OBJ_PRIVATE_KEY = 1,
    MKS_OBJ_PUBLIC_KEY = 2,
    MKS_OBJ_CERTIFICATE = 4,
} mks_obj_class;

#define MKS_OBJ_ANY (MKS_OBJ_PRIVATE_KEY | MKS_OBJ_PUBLIC_KEY | MKS_OBJ_CERTIFICATE)

typedef enum mks_key_type {
    MKS_KEY_NONE = 0,
    MKS_KEY_RSA,
    MKS_KEY_EC,
} mks_key_type;

typedef struct mks_object {
    mks_obj_class cls;
    mks_key_type key_type; /* keys; for certificates the subject key's type */
    int bits;              /* RSA modulus bits or EC field bits; 0 unknown */
    char curve[16];        /* EC: "P-256", "P-384", "P-521"; "" otherwise */
    char *label;           /* CKA_LABEL, may be "" */
    unsigned char *id;     /* CKA_ID */
    size_t id_len;
    char *uri; /* a URI naming exactly this object (with type=) */
    char token_label[33];
    /* Certificates: the certificate DER. Keys: SubjectPublicKeyInfo DER when
     * the public half is known (private keys: from the key, the matching
     * public key object or certificate), else NULL. */
    unsigned char *der;
    size_t der_len;
    int sensitive;   /* private keys: CKA_SENSITIVE; -1 unknown */
    int extractable; /* private keys: CKA_EXTRACTABLE; -1 unknown */
} mks_object;

/*
 * Finds the objects a pkcs11: URI names, limited to the classes in `classes`
 * (and the URI's type= when present). Private keys need a login: when one
 * is needed and no PIN can be had, private keys are left out when
 * `classes` also asks for other classes, and MKS_ERR_PIN_REQUIRED is returned
 * when only private keys were asked for.
 * Errors: MKS_ERR_ARG (malformed URI), MKS_ERR_PIN_*, MKS_ERR_TOKEN.
 * Zero matches is MKS_OK with *count = 0.
 */
MKS_WUR mks_rv mks_objects_find(mks_ctx *ctx, const char *uri, unsigned classes,
                                const mks_pin_ui *pin, mks_object **out, size_t *count);
void mks_objects_free(mks_object *objs, size_t count);

/* Frees what one object holds (label, id, uri, der) and zeroes it; the
 * object itself, an element of an array from mks_objects_find, stays. */
void mks_object_clear(mks_object *obj);

/*
 * Moves the nmore objects of `more` (an array from mks_objects_find) to the
 * end of *objs (NULL or an array from mks_objects_find or this function)
 * and adds nmore to *count. `more` is consumed in every case; on
 * MKS_ERR_NOMEM its objects are freed and *objs and *count are unchanged.
 */
MKS_WUR mks_rv mks_objects_append(mks_object **objs, size_t *count, mks_object *more, size_t nmore);

/* ------------------------------------------------------------------------ */
/* pkcs11: URIs (RFC 7512)                                                   */

/*
 * URIs are built and read by p11-kit's formatter and parser, the ones
 * mks_objects_find and mks_key_open read them with: a label holding ';',
 * '%', '/', spaces or non-ASCII bytes comes back as exactly that label, and
 * the keystore and its callers never escape by hand. Strings these
 * functions return are malloc'd; free them with mks_free.
 */

/*
 * The URI of the token that `uri` names or names objects on: its token
 * attributes (model=, manufacturer=, serial=, token=) and slot and library
 * attributes, without id=, object=, type= and without query attributes
 * (pin-source=, pin-value=, module-name=, module-path=). "pkcs11:" when
 * the URI names no token. Errors: MKS_ERR_ARG (not a pkcs11: URI,
 * malformed, or an attribute the keystore does not know), MKS_ERR_NOMEM.
 */
MKS_WUR mks_rv mks_uri_token(const char *uri, char **out);

/*
 * A URI naming objects on the token token_uri names (NULL: "pkcs11:", any
 * token): token_uri with id= replaced by `id` (none when id_len is 0),
 * object= by `label` (none when NULL; "" is an empty label) and type= by
 * `cls` (MKS_OBJ_PRIVATE_KEY "private", MKS_OBJ_PUBLIC_KEY "public",
 * MKS_OBJ_CERTIFICATE "cert"; 0 for none). Query attributes of token_uri
 * (pin-source=) are kept. Errors: MKS_ERR_ARG (token_uri as for
 * mks_uri_token, cls not one class), MKS_ERR_NOMEM.
 */
MKS_WUR mks_rv mks_uri_object(const char *token_uri, const char *label, const unsigned char *id,
                              size_t id_len, unsigned cls, char **out);

/* What a pkcs11: URI says, as mks_uri_parse reads it; mks_uri_parts_clear frees. */
typedef struct mks_uri_parts {
    char *token_uri;      /* mks_uri_token of the URI; never NULL after success */
    char token_label[33]; /* token=, "" when absent */
    char *label;          /* object=, NULL when absent */
    unsigned char *id;    /* id=, NULL when absent */
    size_t id_len;
    unsigned cls;     /* type= as one MKS_OBJ_* class, 0 when absent */
    char *pin_source; /* pin-source=, NULL when absent */
} mks_uri_parts;

/*
 * Parses a pkcs11: URI into its parts (*out is overwritten; clear it with
 * mks_uri_parts_clear after success; after failure it holds nothing).
 * Errors: MKS_ERR_ARG (not a pkcs11: URI, malformed, an attribute the
 * keystore does not know), MKS_ERR_UNSUPPORTED (type= names a class the
 * keystore does not keep: data, secret-key), MKS_ERR_NOMEM.
 */
MKS_WUR mks_rv mks_uri_parse(const char *uri, mks_uri_parts *out);
void mks_uri_parts_clear(mks_uri_parts *parts);

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */

typedef struct mks_key mks_key;

/*
 * Opens the one private key a URI names (logging in as needed). The key holds
 * a reference on ctx. Errors: MKS_ERR_ARG (malformed URI), MKS_ERR_NOT_FOUND,
 * MKS_ERR_AMBIGUOUS (several keys match; the message lists how to narrow),
 * MKS_ERR_PIN_*, MKS_ERR_TOKEN, MKS_ERR_UNSUPPORTED (key type not RSA or EC).
 */
MKS_WUR mks_rv mks_key_open(mks_ctx *ctx, const char *uri, const mks_pin_ui *pin, mks_key **out);

/* Public-key-only handle (a CKO_PUBLIC_KEY object or a certificate's key):
 * same accessors, but sign/decrypt fail with MKS_ERR_UNSUPPORTED. */
MKS_WUR mks_rv mks_pubkey_open(mks_ctx *ctx, const char *uri, mks_key **out);

MKS_WUR mks_rv mks_key_up_ref(mks_key *key);
void mks_key_free(mks_key *key);

/* Which hardware holds a key. */
typedef enum mks_backend {
    MKS_BACKEND_PKCS11 = 1, /* a PKCS#11 token */
    MKS_BACKEND_TPM,        /* a TPM 2.0 (key file or persistent handle) */
} mks_backend;

mks_backend mks_key_backend(const mks_key *key);
int mks_key_is_private(const mks_key *key);
mks_key_type mks_key_get_type(const mks_key *key);
int mks_key_get_bits(const mks_key *key);
/* Curve name "P-256"/"P-384"/"P-521" for EC keys, NULL otherwise. */
const char *mks_key_get0_curve(const mks_key *key);
/* SubjectPublicKeyInfo DER of the key (EC with the named curve). Never NULL. */
const unsigned char *mks_key_get0_spki(const mks_key *key, size_t *len);
/* A URI naming exactly this key: for PKCS#11 keys token identity, id, object,
 * type=private; for persistent TPM keys tpmkey:handle=...; NULL for TPM keys
 * from a file (the file is their name). */
const char *mks_key_get0_uri(const mks_key *key);
const char *mks_key_get0_label(const mks_key *key);
const unsigned char *mks_key_get0_id(const mks_key *key, size_t *len);
const char *mks_key_get0_token_label(const mks_key *key);
/* 1 when the key may decrypt (RSA with CKA_DECRYPT). */
int mks_key_can_decrypt(const mks_key *key);

typedef enum mks_hash {
    MKS_HASH_NONE = 0,
    MKS_HASH_SHA1,
    MKS_HASH_SHA224,
    MKS_HASH_SHA256,
    MKS_HASH_SHA384,
    MKS_HASH_SHA512,
} mks_hash;

typedef enum mks_mech {
    MKS_MECH_ECDSA,     /* in: the hash; out: r||s, each the field size */
    MKS_MECH_RSA_PKCS1, /* in: the hash, params.hash its digest (the keystore signs its
                         * DigestInfo); with MKS_HASH_NONE, what is signed as it is
                         * (a DigestInfo the caller built); out: signature */
    MKS_MECH_RSA_PSS,   /* in: the hash; params below */
    MKS_MECH_RSA_OAEP,  /* decrypt only; params below */
} mks_mech;

typedef struct mks_mech_params {
    mks_mech mech;
    mks_hash hash;              /* PKCS#1/PSS/OAEP: the message hash */
    mks_hash mgf1_hash;         /* PSS/OAEP: MGF1 hash */
    size_t salt_len;            /* PSS: salt length in bytes */
    const unsigned char *label; /* OAEP label, may be NULL */
    size_t label_len;
} mks_mech_params;

/*
 * Signs `in` with the key in one C_SignInit+C_Sign on a pooled session. When
 * sig is NULL, stores the maximum signature size in *siglen and returns
 * MKS_OK. Otherwise *siglen holds the size of sig on entry and the length
 * written on return. Recovers from a lost session or login once; never
 * retries a PIN. Errors: MKS_ERR_UNSUPPORTED (mechanism), MKS_ERR_TOKEN,
 * MKS_ERR_TOKEN_ABSENT, MKS_ERR_PIN_*, MKS_ERR_ARG (buffer too small).
 */
MKS_WUR mks_rv mks_key_sign(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                            size_t inlen, unsigned char *sig, size_t *siglen);

/* RSA decryption (MKS_MECH_RSA_PKCS1 or MKS_MECH_RSA_OAEP); buffers as for sign. */
MKS_WUR mks_rv mks_key_decrypt(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                               size_t inlen, unsigned char *out, size_t *outlen);

/* ------------------------------------------------------------------------ */
/* Operations on worker threads (asynchronous signing)                       */

/*
 * A slow token (a network HSM answers in 1-20 ms) need not hold up the
 * thread that asked: an operation can run on one of the context's worker
 * threads while its caller does other work, and the caller collects the
 * result when the worker says it is ready. The provider does this for
 * OpenSSL ASYNC jobs (SSL_MODE_ASYNC); anything else calls mks_key_sign.
 *
 * Workers start on first use, up to mks_ctx_set_async_workers of them, and
 * stop when the context is freed. A forked child has none of its parent's
 * (no thread crosses fork()) and starts its own on first use; an operation
 * its parent had in flight at the fork ends in the child with
 * MKS_ERR_GENERAL.
 */
typedef struct mks_async_op mks_async_op;

/* As many workers as a token's session pool holds sessions: a worker holds
 * one session while the token answers. */
#define MKS_ASYNC_WORKERS_DEFAULT 32
#define MKS_ASYNC_WORKERS_MAX 256

/*
 * Sets how many workers the context may run (the provider's async-workers):
 * 0 for none, so that mks_key_sign_start refuses and every operation runs
 * in its caller; default MKS_ASYNC_WORKERS_DEFAULT. Workers above a lowered
 * limit leave; operations already started finish.
 * Errors: MKS_ERR_ARG (outside 0..MKS_ASYNC_WORKERS_MAX).
 */
MKS_WUR mks_rv mks_ctx_set_async_workers(mks_ctx *ctx, int workers);

/* Called on the worker thread once an operation's result is ready; it must
 * be short and must not block (it wakes the caller: writes an eventfd,
 * queues a job). */
typedef void mks_async_notify_fn(void *arg);

/*
 * Starts mks_key_sign (or, for the _decrypt_ variant, mks_key_decrypt) on a
 * worker and returns at once. `p` (with its OAEP label) and `in` are copied;
 * the result will hold at most outsize bytes. notify(arg) (notify may be
 * NULL) is called once, on the worker, when the result is ready. *out is
 * the caller's to give back with mks_async_op_finish or _abandon; the
 * operation holds a reference on key meanwhile.
 * Errors: MKS_ERR_UNSUPPORTED when the context has no workers (set to 0)
 * or none could be started: the caller then runs the
 * operation itself; MKS_ERR_NOMEM; MKS_ERR_ARG (outsize 0).
 */
MKS_WUR mks_rv mks_key_sign_start(mks_key *key, const mks_mech_params *p, const unsigned char *in,
                                  size_t inlen, size_t outsize, mks_async_notify_fn *notify,
                                  void *arg, mks_async_op **out);
MKS_WUR mks_rv mks_key_decrypt_start(mks_key *key, const mks_mech_params *p,
                                     const unsigned char *in, size_t inlen, size_t outsize,
                                     mks_async_notify_fn *notify, void *arg, mks_async_op **out);

/* 1 when the key's context may run operations on workers (async-workers is
 * not 0): a caller can skip setting up its wait otherwise. */
int mks_key_async_possible(const mks_key *key);

/* 1 once the result is ready. */
int mks_async_op_done(const mks_async_op *op);

/*
 * Waits for the result (at once when it is ready), copies it to out (*outlen
 * holds out's size on entry, the length written on return) and frees op.
 * Returns what the operation returned, with its message in
 * mks_last_error(). When it returns, notify has returned too.
 */
MKS_WUR mks_rv mks_async_op_finish(mks_async_op *op, unsigned char *out, size_t *outlen);

/*
 * Gives op up without waiting: the result is dropped. notify is not called
 * once this returns (a call running meanwhile is waited for), so whatever
 * notify's argument points to may be freed. The worker still waits for the
 * token's answer; the session then goes back to the pool and op is freed.
 */
void mks_async_op_abandon(mks_async_op *op);

/* Operations started and not yet freed, and worker threads running, in this
 * process (for tests). */
void mks_async_counts(unsigned long *ops, unsigned long *workers);

/* ------------------------------------------------------------------------ */
/* Key generation, certificates                                              */

typedef struct mks_keygen_params {
    mks_key_type type;
    int bits;          /* RSA: 2048, 3072, 4096 */
    const char *curve; /* EC: "P-256" or "P-384" */
    const char *label; /* CKA_LABEL of the new key pair; required */
} mks_keygen_params;

/*
 * Generates a key pair in the token that token_uri names (exactly one token).
 * Private key: CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, !CKA_EXTRACTABLE,
 * CKA_SIGN (CKA_DECRYPT for RSA). CKA_ID is derived from the public key
 * (SHA-1 of the subjectPublicKey bits, as X.509's subjectKeyIdentifier).
 * Errors: MKS_ERR_EXISTS (a key or certificate already has the label),
 * MKS_ERR_NO_SPACE, MKS_ERR_UNSUPPORTED, MKS_ERR_NOT_FOUND (token),
 * MKS_ERR_PIN_*, MKS_ERR_TOKEN.
 */
MKS_WUR mks_rv mks_keygen(mks_ctx *ctx, const char *token_uri, const mks_keygen_params *params,
                          const mks_pin_ui *pin, mks_key **out);

/* Destroys the key pair (private and public objects with the key's CKA_ID)
 * in the token. `key` must still be freed by the caller. */
MKS_WUR mks_rv mks_key_destroy(mks_key *key);

/*
 * Stores an X.509 certificate (DER) on the key's token, with the key's CKA_ID
 * and the given label. Errors: MKS_ERR_ARG (not a certificate),
 * MKS_ERR_MISMATCH (its public key is not the key's), MKS_ERR_EXISTS (a
 * certificate with this label and id is there already), MKS_ERR_NO_SPACE,
 * MKS_ERR_TOKEN.
 */
MKS_WUR mks_rv mks_cert_import(mks_key *key, const char *label, const unsigned char *der,
                               size_t der_len);

/* ------------------------------------------------------------------------ */
/* Key reference files                                                       */

/* PEM label and DER description of pkcs11-provider's key reference format. */
#define MKS_KEYREF_PEM_LABEL "PKCS#11 PROVIDER URI"
#define MKS_KEYREF_DESC "PKCS#11 Provider URI v1.0"

/*
 * Encodes a URI as a key reference PEM (SEQUENCE { VisibleString desc,
 * UTF8String uri }). *pem is malloc'd, NUL-terminated; free with free().
 */
MKS_WUR mks_rv mks_keyref_encode_pem(const char *uri, char **pem, size_t *pem_len);

/*
 * Decodes the DER body of a key reference into the URI it holds.
 * *uri is malloc'd; free with free(). MKS_ERR_ARG for anything malformed.
 */
MKS_WUR mks_rv mks_keyref_decode_der(const unsigned char *der, size_t der_len, char **uri);

/* ------------------------------------------------------------------------ */
/* TPM 2.0                                                                   */

/*
 * TPM keys live in TSS2 PRIVATE KEY files (draft-bottomley-tpm2-keys, the
 * loadable-key form that tpm2-openssl and openssl_tpm2_engine read and
 * write), wrapped by the TPM's storage key so they are useless elsewhere, or
 * at a persistent handle, named by a URI of the form
 *     tpmkey:handle=0x81000100
 * (a scheme of its own: tpm2-openssl's handle: and object: are not claimed).
 * The TPM is reached through the TCTI of mks_config.tpm2_tcti. All TPM
 * commands of a context run under one lock; transient objects are flushed
 * as soon as they are not needed. Behind a resource manager a loaded key
 * stays loaded while its mks_key lives (a signature costs one TPM2_Sign);
 * on a bare TPM each operation loads the key from its saved context and
 * flushes it again (three commands), so that a process killed by a signal
 * leaves nothing behind (mks_config.tpm2_hold_objects). Keys with a password
 * are used through HMAC sessions salted with the storage key
 * (mks_config.tpm2_sessions): the password never crosses the interface.
 */

#define MKS_TSS2_PEM_LABEL "TSS2 PRIVATE KEY"
#define MKS_TPM_URI_SCHEME "tpmkey:"

typedef struct mks_tpm_keygen_params {
    mks_keygen_params key; /* type, bits/curve; label is optional (unused by the TPM) */
    const char *auth;      /* key password, NULL or "" for none (key gets noDA then) */
    size_t auth_len;
    uint32_t persist; /* 0x81000000..0x81FFFFFF to make the key persistent, 0 not */
} mks_tpm_keygen_params;

/*
 * Creates a key in the TPM under the owner hierarchy's standard ECC P-256
 * storage primary. Writes the TSS2 PRIVATE KEY PEM to *pem (malloc'd; free()).
 * Errors: MKS_ERR_UNSUPPORTED, MKS_ERR_EXISTS (persist handle taken),
 * MKS_ERR_TOKEN (TPM failure, message decoded), MKS_ERR_TOKEN_ABSENT (no TPM).
 */
MKS_WUR mks_rv mks_tpm_keygen(mks_ctx *ctx, const mks_tpm_keygen_params *params, char **pem,
                              size_t *pem_len, mks_key **out);

/* Opens a key from the DER of a TSS2 PRIVATE KEY. The key password, if the
 * file says one is needed, comes from pin (a prompt or file). */
MKS_WUR mks_rv mks_tpm_key_open_der(mks_ctx *ctx, const unsigned char *der, size_t der_len,
                                    const mks_pin_ui *pin, mks_key **out);

/* Opens a persistent key by its tpmkey: URI. */
MKS_WUR mks_rv mks_tpm_key_open_uri(mks_ctx *ctx, const char *uri, const mks_pin_ui *pin,
                                    mks_key **out);

/* Persistent handles holding keys in the owner range, with their key types.
 * *handles is malloc'd (free()). */
typedef struct mks_tpm_persistent {
    uint32_t handle;
    mks_key_type type;
    int bits;
    char curve[16];
    char uri[32];
} mks_tpm_persistent;
MKS_WUR mks_rv mks_tpm_list_persistent(mks_ctx *ctx, mks_tpm_persistent **out, size_t *count);

/* Removes a persistent key (TPM2_EvictControl). */
MKS_WUR mks_rv mks_tpm_evict(mks_ctx *ctx, uint32_t handle);

/* TPM commands this process has sent, for tests and benchmarks. */
unsigned long mks_tpm_command_count(void);

/* Parses "0x81000100" (or decimal) into a persistent handle; MKS_ERR_ARG otherwise. */
MKS_WUR mks_rv mks_tpm_parse_handle(const char *s, uint32_t *handle);

/* TSS2 PRIVATE KEY codec (also used by the provider's decoder). */
typedef struct mks_tss2_key {
    int empty_auth;     /* 1: no password */
    uint32_t parent;    /* 0x40000001 (owner: the standard primary) or a persistent handle */
    unsigned char *pub; /* marshalled TPM2B_PUBLIC */
    size_t pub_len;
    unsigned char *priv; /* marshalled TPM2B_PRIVATE */
    size_t priv_len;
} mks_tss2_key;
MKS_WUR mks_rv mks_tss2_decode_der(const unsigned char *der, size_t der_len, mks_tss2_key *out);
MKS_WUR mks_rv mks_tss2_encode_pem(const mks_tss2_key *key, char **pem, size_t *pem_len);
void mks_tss2_key_clear(mks_tss2_key *key);

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* Reads a PIN from a pin-source ("file:PATH" or a plain path): the first
 * line, without its line ending. buf is wiped on failure. A regular file open
 * to group or others is still read, with a warning on stderr. */
MKS_WUR mks_rv mks_pin_from_source(const char *source, char *buf, size_t bufsize, size_t *len);

/* How often this process has called the PKCS#11 function `name` ("C_Sign"),
 * for tests and benchmarks that check what an operation costs the token. */
unsigned long mks_pkcs11_call_count(const char *name);

/* Wipes len bytes in a way the compiler does not drop. */
void mks_cleanse(void *p, size_t len);

/* Frees a string or buffer a keystore function returned as malloc'd (URIs,
 * PEM, lists); NULL is ignored. The same as free(), named so that callers
 * need not know how the keystore allocates. */
void mks_free(void *p);

/* ------------------------------------------------------------------------ */
/* Managing objects: relabel, destroy, CA certificates (renewal, deletion)   */

/*
 * Sets CKA_LABEL to new_label on every object the URI names, limited to the
 * classes in `classes` (and the URI's type= when present), on every token
 * the URI matches. Objects are changed in the order private keys, public
 * keys, certificates; the change is not atomic across objects, so on
 * failure the objects before the failing one carry new_label already (each
 * object's label is always one or the other). Logs in to the token (PIN as
 * for mks_objects_find; private keys cannot be found without it).
 * The URI must carry id= or object=: a URI naming only tokens is refused,
 * so that a mistake cannot relabel a whole token. *count (may be NULL)
 * receives the number of objects changed; no match is MKS_OK with 0.
 * Errors: MKS_ERR_ARG (malformed URI, no id=/object=, empty new_label),
 * MKS_ERR_PIN_*, MKS_ERR_TOKEN (e.g. CKR_ATTRIBUTE_READ_ONLY for an object
 * whose CKA_MODIFIABLE is false; the message names the object).
 */
MKS_WUR mks_rv mks_objects_set_label(mks_ctx *ctx, const char *uri, unsigned classes,
                                     const char *new_label, const mks_pin_ui *pin, size_t *count);

/*
 * Destroys every object the URI names, limited to `classes` (and type=),
 * on every token the URI matches, in the order private keys, public keys,
 * certificates, so that an interrupted call leaves no private key without
 * the objects that describe it. Same login, URI rule (id= or object=
 * required), *count and errors as mks_objects_set_label. Keys opened
 * earlier (mks_key) stay allocated but fail to sign once their object is
 * gone.
 */
MKS_WUR mks_rv mks_objects_destroy(mks_ctx *ctx, const char *uri, unsigned classes,
                                   const mks_pin_ui *pin, size_t *count);

/*
 * Stores a CA certificate (DER; an intermediate of a key's chain) on the one
 * token token_uri names, as a public token object with
 * CKA_CERTIFICATE_CATEGORY 2 (authority), the given label, and CKA_ID set to
 * the certificate's subjectKeyIdentifier when it has one (never a key's
 * CKA_ID, so that no tool takes it for a key's own certificate). When an
 * identical certificate carries the label already, nothing is stored and
 * MKS_OK is returned (so callers may repeat an interrupted import).
 * Errors: MKS_ERR_ARG (not one DER certificate, empty label),
 * MKS_ERR_NOT_FOUND / MKS_ERR_AMBIGUOUS (token_uri names no / several
 * tokens), MKS_ERR_NO_SPACE, MKS_ERR_PIN_*, MKS_ERR_TOKEN.
 */
MKS_WUR mks_rv mks_cert_store_authority(mks_ctx *ctx, const char *token_uri, const char *label,
                                        const unsigned char *der, size_t der_len,
                                        const mks_pin_ui *pin);

#ifdef __cplusplus
}
#endif
#endif
