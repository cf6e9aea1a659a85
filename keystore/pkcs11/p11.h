/*
 * PKCS#11 backend internals.
 *
 * Locking: ctx->lock guards the token list and module (re)initialisation;
 * token->lock guards the token's session pool, login state and cached PIN.
 * No lock is held across C_Sign/C_Decrypt, so concurrent operations run on
 * separate sessions in parallel. Functions named _locked expect the named
 * lock held by the caller.
 *
 * Fork: an atfork child handler (p11_token.c) marks every context stale and
 * re-creates its locks; the first call in the child initialises the module
 * again and each token then reopens sessions, logs in again with the PIN it
 * kept, and each key finds its object again.
 */
#ifndef MTLSKS_P11_H
#define MTLSKS_P11_H

#include "../internal.h"

#include <pthread.h>
#include <stdatomic.h>

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

#include <openssl/types.h>

#define P11_MAX_PIN 256
#define P11_POOL_MAX 32

typedef struct p11_token p11_token;

struct mks_ctx {
    atomic_int refs;
    char *module_path; /* NULL: p11-kit-proxy */
    char *pin_source;
    char *tpm2_tcti;
    CK_FUNCTION_LIST *fl;
    void *dl;             /* dlopen handle when the module is not loaded through p11-kit */
    OSSL_LIB_CTX *libctx; /* our own, so our crypto never loops into the provider */
    OSSL_PROVIDER *deflt; /* the default provider, loaded into libctx */
    pthread_mutex_t lock;
    unsigned long fork_gen; /* generation the module was initialised in */
    atomic_ulong ready_gen; /* fork_gen once the module is ready; 0 before */
    int initialized;
    p11_token *tokens;
    struct tpm2_state *tpm2; /* NULL until a TPM key is used */
    struct mks_async *async; /* worker threads (async.c) */
    struct mks_ctx *next_registered;
};

struct p11_token {
    mks_ctx *ctx;
    CK_SLOT_ID slot;
    CK_TOKEN_INFO info;
    char label[33];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    CK_SESSION_HANDLE pool[P11_POOL_MAX];
    size_t nfree; /* sessions idle in pool[0..nfree) */
    size_t nopen; /* sessions open, idle or in use */
    size_t max_sessions;
    unsigned long gen; /* bumped whenever sessions/handles become invalid */
    int logged_in;
    int pin_rejected; /* the token said CKR_PIN_INCORRECT: never try again */
    char pin[P11_MAX_PIN];
    size_t pin_len;
    p11_token *next;
};

/* ---- p11_call.c: the one place that calls into the module ---------------- */

/* Name of a CKR_ code ("CKR_PIN_INCORRECT"), or "CKR_0x...". Thread-safe. */
const char *p11_ckr_name(CK_RV rv);

/* Maps a CKR to the keystore's return code. */
mks_rv p11_rv_map(CK_RV rv);

/* Records "<call> failed: CKR_x (token 'label')" and returns the mapped mks_rv. */
mks_rv p11_fail(CK_RV rv, const char *call, const p11_token *tok);
/* The CK_RV of this thread's last p11_fail (CKR_OK: none since the last take). */
CK_RV p11_take_fail(void);

/* Every C_* call goes through P11: it counts and, with MTLSKS_DEBUG=1, traces
 * calls, and it holds the fork guard for the duration of the call: fork()
 * waits until no thread is inside the module, so a child never inherits the
 * module's own locks held (p11_token.c). */
#define P11_COUNTED(X)                                                                             \
    X(C_Initialize)                                                                                \
    X(C_Finalize)                                                                                  \
    X(C_GetSlotList)                                                                               \
    X(C_GetSlotInfo)                                                                               \
    X(C_GetTokenInfo)                                                                              \
    X(C_OpenSession)                                                                               \
    X(C_CloseSession)                                                                              \
    X(C_Login)                                                                                     \
    X(C_FindObjectsInit)                                                                           \
    X(C_FindObjects)                                                                               \
    X(C_FindObjectsFinal)                                                                          \
    X(C_GetAttributeValue)                                                                         \
    X(C_SignInit)                                                                                  \
    X(C_Sign)                                                                                      \
    X(C_DecryptInit)                                                                               \
    X(C_Decrypt)                                                                                   \
    X(C_GenerateKeyPair)                                                                           \
    X(C_CreateObject)                                                                              \
    X(C_DestroyObject)                                                                             \
    X(C_SetAttributeValue)                                                                         \
    X(C_GetInfo)                                                                                   \
    X(C_GetMechanismInfo)                                                                          \
    X(C_CloseAllSessions)
#define P11_FN_ENUM(fn) P11_FN_##fn,
typedef enum { P11_COUNTED(P11_FN_ENUM) P11_FN_COUNT } p11_fn;
#undef P11_FN_ENUM

CK_RV p11_trace(p11_fn fn, CK_RV rv);
void p11_fork_guard_enter(void);
CK_RV p11_fork_guard_leave(CK_RV rv);
/* A function missing from P11_COUNTED does not compile. */
#define P11(ctx, fn, ...)                                                                          \
    p11_trace(P11_FN_##fn,                                                                         \
              (p11_fork_guard_enter(), p11_fork_guard_leave((ctx)->fl->fn(__VA_ARGS__))))

/* Number of calls made to `name` ("C_Sign") in this process, for tests and benches. */
unsigned long p11_call_count(const char *name);

/* ---- p11_token.c: module, slots, tokens, sessions, login ----------------- */

/* Makes sure the module is initialised in this process (re-initialises after fork). */
mks_rv p11_ctx_ready(mks_ctx *ctx);

/* Finds (or creates) the token object for a slot. ctx->lock must not be held. */
mks_rv p11_token_for_slot(mks_ctx *ctx, CK_SLOT_ID slot, const CK_TOKEN_INFO *info,
                          p11_token **out);

/* Slots whose token matches the URI (NULL uri: all with a token). Caller frees *slots. */
mks_rv p11_match_slots(mks_ctx *ctx, P11KitUri *uri, CK_SLOT_ID **slots, size_t *count);

/* Takes a session from the token's pool (opening one if needed), logged in when
 * `login` is set (PIN from the URI's pin_source, the config, or pin_ui).
 * *gen (may be NULL) receives the token's handle generation: object handles
 * found in an older generation must be found again. */
mks_rv p11_session_get(p11_token *tok, int login, const char *uri_pin_source,
                       const mks_pin_ui *pin_ui, CK_SESSION_HANDLE *out, unsigned long *gen);

/* Gives a session back. `rv` is the result of the last call made on it: a
 * session the token no longer knows is dropped instead of pooled, and a lost
 * login or token is recorded so the next get recovers. */
void p11_session_put(p11_token *tok, CK_SESSION_HANDLE s, CK_RV rv);

/* Token needs a login (CKF_LOGIN_REQUIRED). */
int p11_token_login_required(const p11_token *tok);

/* Whether a PIN can be had without asking the user (kept, URI or config). */
int p11_token_pin_available(p11_token *tok, const char *uri_pin_source);

/* URI naming the token: model, manufacturer, serial, token label. malloc'd. */
char *p11_token_uri(const CK_TOKEN_INFO *info);

/* ---- p11_key.c: objects ---------------------------------------------------- */

/* The one initialised token a URI names (MKS_ERR_NOT_FOUND for none,
 * MKS_ERR_AMBIGUOUS for several). With uri_out, the parsed URI is handed
 * over too (free with p11_kit_uri_free). */
mks_rv p11_one_token(mks_ctx *ctx, const char *uristr, P11KitUri **uri_out, p11_token **out);

/* Reads an attribute of any length into a malloc'd buffer. */
mks_rv p11_get_attr(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type,
                    unsigned char **val, size_t *len);

/* The same, for p11_manage.c: a URI parsed as mks_objects_find parses it
 * (unknown attributes refused; free with p11_kit_uri_free), the tokens it
 * matches (*out malloc'd, free()), and one C_FindObjects round (at most max
 * handles). */
mks_rv p11_uri_parse(const char *s, P11KitUri **out);
mks_rv p11_uri_tokens(mks_ctx *ctx, P11KitUri *uri, p11_token ***out, size_t *count);
mks_rv p11_find_objects(p11_token *tok, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                        CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *count);

#endif
