/*
 * PKCS#11 backend internals.
 *
 * Locking: mod->lock guards the token list and module (re)initialisation;
 * token->lock guards the token's session pool, login state and cached PIN.
 * No lock is held across C_Sign/C_Decrypt, so concurrent operations run on
 * separate sessions in parallel. Functions named _locked expect the named
 * lock held by the caller.
 *
 * Fork: an atfork child handler (ctx.c) marks every module stale and
 * re-creates its locks; the first call in the child initialises the module
 * again and each token then reopens sessions, logs in again with the PIN it
 * kept, and each key finds its object again and copies it again into a
 * session object (p11_cache.c).
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

/* The PKCS#11 state of a keystore context, made with it (p11_module_new);
 * the module itself is loaded at first use (p11_module_ready). */
typedef struct p11_module {
    char *module_path; /* NULL: p11-kit-proxy */
    char *pin_source;
    CK_FUNCTION_LIST *fl;
    void *dl; /* dlopen handle when the module is not loaded through p11-kit */
    pthread_mutex_t lock;
    unsigned long fork_gen; /* generation the module was initialised in */
    atomic_ulong ready_gen; /* fork_gen once the module is ready; 0 before */
    int initialized;
    int key_cache; /* sign with session-object copies of the keys (p11_cache.c) */
    p11_token *tokens;
    /* Its connection is gone (p11_reconnect.c): initialised again at the
     * next use; reconnected: since then, no operation has worked. */
    atomic_int lost, reconnected;
} p11_module;

/* The context's PKCS#11 state (ctx.c). */
p11_module *mks_ctx_p11(mks_ctx *ctx);

struct p11_token {
    mks_ctx *ctx; /* the keys found on the token hold references on it */
    p11_module *mod;
    CK_SLOT_ID slot;
    CK_TOKEN_INFO info;
    char label[33];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    CK_SESSION_HANDLE pool[P11_POOL_MAX];
    size_t nfree; /* sessions idle in pool[0..nfree) */
    size_t nopen; /* sessions open, idle or in use */
    size_t max_sessions;
    /* Bumped whenever object handles or session objects may have become
     * invalid: fork, a login (a lost one gone with its private session
     * objects), a session the token forgot, a token removed. Handles found
     * and copies made in an older generation are found and made again. */
    unsigned long gen;
    atomic_int copy_refused; /* the token has no C_CopyObject: no copies */
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
 * module's own locks held. */
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
    X(C_CopyObject)                                                                                \
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
#define P11(mod, fn, ...)                                                                          \
    p11_trace(P11_FN_##fn,                                                                         \
              (p11_fork_guard_enter(), p11_fork_guard_leave((mod)->fl->fn(__VA_ARGS__))))

/* The fork guard's part of the atfork handlers (ctx.c): prepare waits for
 * every call to leave the module; init makes the guard, once and in the child. */
void p11_fork_guard_init(void);
void p11_fork_prepare(void);
void p11_fork_parent(void);

/* Number of calls made to `name` ("C_Sign") in this process, for tests and benches. */
unsigned long p11_call_count(const char *name);

/* ---- p11_module.c: the module's life ------------------------------------ */

/* Takes the configuration (strings copied; an empty module_path is the
 * default); loads nothing. */
mks_rv p11_module_new(const char *module_path, const char *pin_source, int key_cache,
                      p11_module **out);
/* Whether calls into the module are allowed now: not in a child that has not
 * initialised it again, not while the process exits (SoftHSM 2.6.1 crashes
 * in calls made after its destructors ran). */
int p11_module_callable(const p11_module *mod);
/* Closes the sessions and finalises the module, except while the process
 * exits or in a child after fork (then the module is left alone). */
void p11_module_free(p11_module *mod);
/* Atfork child handler part: new locks, sessions and login dropped. */
void p11_module_after_fork(p11_module *mod);
/* Makes sure the module is initialised in this process (re-initialises after fork). */
mks_rv p11_module_ready(p11_module *mod);

/* ---- p11_reconnect.c: a module that lost its connection ------------------ */

#define P11_LOST 1       /* the connection was lost just now */
#define P11_LOST_AGAIN 2 /* initialised again, and still not answering */

/* After an operation failed with crv: whether the module lost its
 * connection (p11-kit-client.so without its server), 0 when not; then the
 * next p11_module_ready initialises it again. */
int p11_module_lost(p11_module *mod, CK_RV crv);
/* An operation worked: the module is connected. */
void p11_module_answered(p11_module *mod);
/* rv, with the error prefixed by the module's name when it lost its connection. */
mks_rv p11_module_say_lost(const p11_module *mod, mks_rv rv);
/* Finalises and initialises the module again; mod->lock held. */
mks_rv p11_module_reconnect_locked(p11_module *mod);

/* ---- p11_token.c: slots, tokens, sessions, login -------------------------- */

/* Finds (or creates) the token object for a slot. mod->lock must not be held. */
mks_rv p11_token_for_slot(mks_ctx *ctx, CK_SLOT_ID slot, const CK_TOKEN_INFO *info,
                          p11_token **out);

/* Slots whose token matches the URI (NULL uri: all with a token). Caller frees *slots. */
mks_rv p11_match_slots(mks_ctx *ctx, P11KitUri *uri, CK_SLOT_ID **slots, size_t *count);

/* Token needs a login (CKF_LOGIN_REQUIRED). */
int p11_token_login_required(const p11_token *tok);

/* Whether a PIN can be had without asking the user (kept, URI or config). */
int p11_token_pin_available(p11_token *tok, const char *uri_pin_source);

/* URI naming the token: model, manufacturer, serial, token label. malloc'd. */
char *p11_token_uri(const CK_TOKEN_INFO *info);

/* ---- p11_session.c: sessions, login, operations on a session ------------- */

/*
 * One operation on a token, run on a session from its pool. The caller
 * embeds this in a struct of its own (first member) and sets login,
 * pin_source, pin and run; run reports a failed call through p11_fail, which
 * is how p11_session_run learns the CK_RV.
 */
typedef struct p11_op p11_op;
struct p11_op {
    int login;              /* log in first (PIN from pin_source, the config, pin) */
    int login_optional;     /* no PIN to be had: go on without login (login is then 0) */
    const char *pin_source; /* the URI's pin-source=, or NULL */
    const mks_pin_ui *pin;
    mks_rv (*run)(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s);
    /* Set for run: the token's handle generation when the session was
     * taken; object handles found in an older one must be found again. */
    unsigned long gen;
    /* Set by run: what it changed on the token makes a second run wrong. */
    int no_retry;
};

/*
 * Takes a session (logged in when op->login), calls op->run on it, gives it
 * back marked with the CK_RV of the call that failed, and runs op->run again
 * on a fresh session when that call lost the session
 * (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED), the login
 * (CKR_USER_NOT_LOGGED_IN: logged in again with the kept PIN) or an object
 * handle (CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID) or the
 * module's connection (p11_module_lost: initialised again): once for each
 * kind of loss, so at most five runs. A failed login is never retried.
 * Returns run's result, or why no session could be had.
 */
mks_rv p11_session_run(p11_token *tok, p11_op *op);

/* ---- p11_cache.c: session-object copies of private keys --------------------- */

/* A key's copy; guarded by the key's lock. */
typedef struct p11_key_cache {
    CK_OBJECT_HANDLE copy; /* CK_INVALID_HANDLE: none */
    unsigned long gen;     /* the token generation the copy belongs to */
    int refused;           /* this key is not copied (token or key said no) */
} p11_key_cache;

/* The handle to sign with in generation gen: the copy when there is one for
 * gen, else obj (the token object). *make is set when a copy should be made
 * first (p11_cache_make_locked). */
CK_OBJECT_HANDLE p11_cache_pick_locked(const p11_key_cache *kc, const p11_token *tok,
                                       unsigned long gen, CK_OBJECT_HANDLE obj, int *make);

/*
 * Copies obj (a private key allowed to be copied) into a session object in
 * session s and checks the copy: CKA_SENSITIVE TRUE, CKA_EXTRACTABLE FALSE,
 * CKA_TOKEN FALSE, else it is destroyed. *h gets the copy, or obj when the
 * token refused (remembered: this key, or every key of a token without
 * C_CopyObject, is not tried again). Returns CKR_OK, or the CKR of a lost
 * session, login or handle for the caller to recover from (nothing is
 * remembered then).
 */
CK_RV p11_cache_make_locked(p11_key_cache *kc, p11_token *tok, CK_SESSION_HANDLE s,
                            unsigned long gen, CK_OBJECT_HANDLE obj, CK_OBJECT_HANDLE *h);

/* The copy's handle is no longer valid (the token said so). */
void p11_cache_forget_locked(p11_key_cache *kc);

/* Destroys the copy when it belongs to this process's current generation of
 * the token (never a token object), and forgets it. Runs on a session of its
 * own: call it on a copy of the key's cache taken under the key's lock, not
 * holding it. */
void p11_cache_destroy(p11_key_cache *kc, p11_token *tok);

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
