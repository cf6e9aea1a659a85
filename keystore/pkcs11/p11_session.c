/*
 * Sessions of a token: the pool, login with a PIN that is never retried,
 * and p11_session_run, through which every operation on a token takes its
 * session and recovers, once for each kind of loss, from a session the
 * token forgot, a login it dropped, an object handle gone stale or a module
 * that lost its connection (p11_reconnect.c).
 */
#include "p11.h"

#include <stdlib.h>
#include <string.h>

/* Obtains the PIN into tok->pin, from what the token kept, the URI, the config
 * or the caller's callback, in that order. */
static mks_rv obtain_pin_locked(p11_token *tok, const char *uri_pin_source,
                                const mks_pin_ui *pin_ui)
{
    mks_rv rv;

    if (tok->pin_len > 0)
        return MKS_OK;
    if (uri_pin_source != NULL || tok->mod->pin_source != NULL) {
        const char *src = uri_pin_source != NULL ? uri_pin_source : tok->mod->pin_source;
        rv = mks_pin_from_source(src, tok->pin, sizeof(tok->pin), &tok->pin_len);
        if (rv != MKS_OK)
            mks_error_prefix("token '%s'", tok->label);
        return rv;
    }
    if (pin_ui != NULL && pin_ui->cb != NULL) {
        size_t len = 0;
        int got = pin_ui->cb(tok->pin, sizeof(tok->pin), &len, tok->label, pin_ui->arg);

        if (got == 1 && len > 0 && len < sizeof(tok->pin)) {
            tok->pin_len = len;
            return MKS_OK;
        }
        mks_cleanse(tok->pin, sizeof(tok->pin));
        if (got == MKS_PIN_EMPTY)
            return mks_error(MKS_ERR_PIN_REQUIRED,
                             "token '%s' needs a PIN and the PIN typed at the prompt was empty "
                             "(nothing was sent to the token)",
                             tok->label);
    }
    return mks_error(MKS_ERR_PIN_REQUIRED,
                     "token '%s' needs a PIN and none was given (set pkcs11-pin-source "
                     "in openssl.cnf, pin-source in the URI, or run on a terminal)",
                     tok->label);
}

static mks_rv login_locked(p11_token *tok, CK_SESSION_HANDLE s, const char *uri_pin_source,
                           const mks_pin_ui *pin_ui)
{
    CK_TOKEN_INFO info;
    mks_rv rv;
    CK_RV crv;

    if (tok->logged_in || !p11_token_login_required(tok))
        return MKS_OK;
    if (tok->pin_rejected)
        return mks_error(MKS_ERR_PIN_INCORRECT,
                         "token '%s' rejected the PIN earlier in this process; not trying "
                         "it again (a second wrong PIN could lock the token)",
                         tok->label);
    crv = P11(tok->mod, C_GetTokenInfo, tok->slot, &info);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_GetTokenInfo", tok);
    if (info.flags & CKF_USER_PIN_LOCKED)
        return mks_error(MKS_ERR_PIN_LOCKED,
                         "token '%s': the user PIN is locked; reset it with the token's SO "
                         "PIN before use",
                         tok->label);
    if (info.flags & CKF_USER_PIN_FINAL_TRY)
        return mks_error(MKS_ERR_PIN_LOCKED,
                         "token '%s' reports one PIN try left; refusing to log in so a "
                         "wrong PIN cannot lock it (log in once with the token's own tool)",
                         tok->label);
    rv = obtain_pin_locked(tok, uri_pin_source, pin_ui);
    if (rv != MKS_OK)
        return rv;
    crv = P11(tok->mod, C_Login, s, CKU_USER, (CK_UTF8CHAR_PTR)tok->pin, (CK_ULONG)tok->pin_len);
    if (crv == CKR_OK || crv == CKR_USER_ALREADY_LOGGED_IN) {
        /* Private session objects of an earlier login (the keys' copies)
         * did not outlive it. */
        tok->logged_in = 1;
        tok->gen++;
        return MKS_OK;
    }
    /* Whatever went wrong, this PIN is not tried again automatically. */
    mks_cleanse(tok->pin, sizeof(tok->pin));
    tok->pin_len = 0;
    if (crv == CKR_PIN_INCORRECT) {
        tok->pin_rejected = 1;
        return mks_error(MKS_ERR_PIN_INCORRECT,
                         "C_Login failed: CKR_PIN_INCORRECT (token '%s' rejected the PIN; "
                         "it is not retried)",
                         tok->label);
    }
    return p11_fail(crv, "C_Login", tok);
}

static mks_rv open_session_locked(p11_token *tok, CK_SESSION_HANDLE *out)
{
    CK_RV crv;

    crv = P11(tok->mod, C_OpenSession, tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
              out);
    if (crv == CKR_TOKEN_WRITE_PROTECTED || crv == CKR_SESSION_READ_ONLY)
        crv = P11(tok->mod, C_OpenSession, tok->slot, CKF_SERIAL_SESSION, NULL, NULL, out);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_OpenSession", tok);
    tok->nopen++;
    return MKS_OK;
}

static mks_rv session_get(p11_token *tok, int login, const char *uri_pin_source,
                          const mks_pin_ui *pin_ui, CK_SESSION_HANDLE *out, unsigned long *gen)
{
    mks_rv rv;
    CK_SESSION_HANDLE s;

    rv = p11_module_ready(tok->mod);
    if (rv != MKS_OK)
        return rv;
    pthread_mutex_lock(&tok->lock);
    while (tok->nfree == 0 && tok->nopen >= tok->max_sessions)
        pthread_cond_wait(&tok->cond, &tok->lock);
    if (tok->nfree > 0) {
        s = tok->pool[--tok->nfree];
    } else {
        rv = open_session_locked(tok, &s);
        if (rv != MKS_OK)
            goto done;
    }
    if (login) {
        rv = login_locked(tok, s, uri_pin_source, pin_ui);
        if (rv != MKS_OK) {
            tok->pool[tok->nfree++] = s;
            pthread_cond_signal(&tok->cond);
            goto done;
        }
    }
    *out = s;
    if (gen != NULL)
        *gen = tok->gen;
done:
    pthread_mutex_unlock(&tok->lock);
    return rv;
}

static void session_put(p11_token *tok, CK_SESSION_HANDLE s, CK_RV last)
{
    pthread_mutex_lock(&tok->lock);
    if (tok->nopen == 0) {
        /* Taken before fork(): it belongs to the parent. */
        pthread_mutex_unlock(&tok->lock);
        return;
    }
    switch (last) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
        /* The token forgot this session, and the session objects made in
         * it; so may it have the others. */
        tok->nopen--;
        tok->gen++;
        break;
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
        /* Every session and the login are gone with the token. Idle sessions
         * are closed; those in use are dropped as they come back. */
        while (tok->nfree > 0) {
            P11(tok->mod, C_CloseSession, tok->pool[--tok->nfree]);
            tok->nopen--;
        }
        P11(tok->mod, C_CloseSession, s);
        tok->nopen--;
        tok->logged_in = 0;
        tok->gen++;
        break;
    case CKR_USER_NOT_LOGGED_IN:
        tok->logged_in = 0;
        tok->pool[tok->nfree++] = s;
        break;
    default:
        tok->pool[tok->nfree++] = s;
        break;
    }
    pthread_cond_signal(&tok->cond);
    pthread_mutex_unlock(&tok->lock);
}

/* What a failed call lost, as a bit: each kind of loss is recovered from
 * once per operation (a token that was reset loses its sessions and its
 * login: two recoveries); 0 for failures that are not recovered from. The
 * module's lost connection is bit 8 (p11_module_lost). */
static unsigned recovery_kind(CK_RV crv)
{
    switch (crv) {
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
        return 1;
    case CKR_USER_NOT_LOGGED_IN:
        return 2;
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
        return 4;
    default:
        return 0;
    }
}

mks_rv p11_session_run(p11_token *tok, p11_op *op)
{
    unsigned recovered = 0, kind;
    CK_SESSION_HANDLE s;
    mks_rv rv;
    CK_RV crv;

    for (;;) {
        p11_take_fail();
        rv = session_get(tok, op->login, op->pin_source, op->pin, &s, &op->gen);
        if (rv == MKS_ERR_PIN_REQUIRED && op->login && op->login_optional) {
            op->login = 0;
            rv = session_get(tok, 0, NULL, NULL, &s, &op->gen);
        }
        if (rv != MKS_OK) {
            /* A module that lost its connection is connected again once. */
            if (p11_module_lost(tok->mod, p11_take_fail()) == P11_LOST && !(recovered & 8)) {
                recovered |= 8;
                continue;
            }
            return p11_module_say_lost(tok->mod, rv);
        }
        p11_take_fail();
        rv = op->run(op, tok, s);
        /* The session goes back marked with what the token said, so that a
         * session it forgot is dropped and a lost login noted. */
        crv = rv == MKS_OK ? CKR_OK : p11_take_fail();
        session_put(tok, s, crv);
        kind = recovery_kind(crv);
        if (rv == MKS_OK)
            p11_module_answered(tok->mod);
        else if (kind == 0 && p11_module_lost(tok->mod, crv) == P11_LOST)
            kind = 8;
        if (rv == MKS_OK || op->no_retry || kind == 0 || (recovered & kind) != 0)
            return p11_module_say_lost(tok->mod, rv);
        recovered |= kind;
    }
}
