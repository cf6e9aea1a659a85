/*
 * The key cache: each private key in use signs with a session-object copy
 * of itself (C_CopyObject with CKA_TOKEN=FALSE), made once per login.
 *
 * Why: SoftHSM 2.6.1 re-reads a token object's file (open, lock, read) at
 * every use of the key, and networked HSMs fetch token objects again; a
 * session object lives in the token's memory. pkcs11-provider's cache-keys
 * does the same. A copy lives as long as the session that made it and the
 * login: it belongs to one generation of the token's handles (p11.h), and a
 * fork, a new login, a session the token forgot or a removed token make it
 * again. The copy must keep the key as protected as the original: it is
 * checked once made and destroyed unless CKA_SENSITIVE is TRUE,
 * CKA_EXTRACTABLE FALSE and CKA_TOKEN FALSE. A token or key that refuses
 * (no C_CopyObject, CKA_COPYABLE FALSE, attributes it will not set) signs
 * with the token object, and is not asked again.
 */
#include "p11.h"

/* What a lost session, login or handle looks like: the caller recovers. */
static int is_loss(CK_RV crv)
{
    switch (crv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
        return 1;
    default:
        return 0;
    }
}

CK_OBJECT_HANDLE p11_cache_pick_locked(const p11_key_cache *kc, const p11_token *tok,
                                       unsigned long gen, CK_OBJECT_HANDLE obj, int *make)
{
    *make = 0;
    if (kc->copy != CK_INVALID_HANDLE && kc->gen == gen)
        return kc->copy;
    *make = tok->mod->key_cache && !kc->refused && !atomic_load(&tok->copy_refused);
    return obj;
}

/* Reads the copy's protection: *good when it keeps the key as protected as
 * the token object. */
static CK_RV copy_checked(p11_token *tok, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE copy, int *good)
{
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, token = CK_TRUE;
    CK_ATTRIBUTE a[3] = {{CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
                         {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
                         {CKA_TOKEN, &token, sizeof(token)}};
    CK_RV crv = P11(tok->mod, C_GetAttributeValue, s, copy, a, 3);

    *good = crv == CKR_OK && sensitive == CK_TRUE && extractable == CK_FALSE && token == CK_FALSE;
    return crv;
}

CK_RV p11_cache_make_locked(p11_key_cache *kc, p11_token *tok, CK_SESSION_HANDLE s,
                            unsigned long gen, CK_OBJECT_HANDLE obj, CK_OBJECT_HANDLE *h)
{
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE session_object = {CKA_TOKEN, &no, sizeof(no)};
    CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
    CK_RV crv;
    int good = 0;

    *h = obj;
    /* A copy of an older generation is not destroyed: its handle may name
     * another object by now (a module initialised again after fork numbers
     * its objects anew), and a lost session or login took it along. */
    kc->copy = CK_INVALID_HANDLE;
    crv = P11(tok->mod, C_CopyObject, s, obj, &session_object, 1, &copy);
    if (crv == CKR_OK) {
        crv = copy_checked(tok, s, copy, &good);
        if (!good && !is_loss(crv))
            /* Just made by us: whatever it is, it goes. */
            P11(tok->mod, C_DestroyObject, s, copy);
    }
    if (is_loss(crv))
        return crv;
    if (crv == CKR_OK && good) {
        kc->copy = copy;
        kc->gen = gen;
        *h = copy;
        return CKR_OK;
    }
    /* Refused: sign with the token object from now on. A token without
     * C_CopyObject, or one that will not make session objects of keys,
     * refuses for every key. */
    kc->refused = 1;
    if (crv == CKR_FUNCTION_NOT_SUPPORTED || crv == CKR_ATTRIBUTE_READ_ONLY ||
        crv == CKR_TEMPLATE_INCONSISTENT)
        atomic_store(&tok->copy_refused, 1);
    return CKR_OK;
}

void p11_cache_forget_locked(p11_key_cache *kc)
{
    kc->copy = CK_INVALID_HANDLE;
    kc->gen = 0;
}

/* The copy destroyed on a session of the token, if it is still ours. */
typedef struct destroy_copy_op {
    p11_op op;
    p11_key_cache *kc;
} destroy_copy_op;

static mks_rv destroy_copy_run(p11_op *op, p11_token *tok, CK_SESSION_HANDLE s)
{
    p11_key_cache *kc = ((destroy_copy_op *)op)->kc;
    CK_BBOOL token = CK_TRUE;
    CK_ATTRIBUTE a = {CKA_TOKEN, &token, sizeof(token)};

    /* Only our copy of this generation, and never a token object. */
    if (op->gen == kc->gen && P11(tok->mod, C_GetAttributeValue, s, kc->copy, &a, 1) == CKR_OK &&
        token == CK_FALSE)
        P11(tok->mod, C_DestroyObject, s, kc->copy);
    return MKS_OK;
}

void p11_cache_destroy(p11_key_cache *kc, p11_token *tok)
{
    destroy_copy_op d = {.op = {.login = 0, .run = destroy_copy_run, .no_retry = 1}, .kc = kc};

    if (kc->copy != CK_INVALID_HANDLE && p11_module_callable(tok->mod))
        (void)p11_session_run(tok, &d.op);
    p11_cache_forget_locked(kc);
}
