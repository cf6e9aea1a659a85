/*
 * A module that lost its connection. p11-kit-client.so reaches a token
 * through a p11-kit server on a socket; when that server goes away
 * (restarted, its host rebooted) every call of ours answers
 * CKR_DEVICE_ERROR, and keeps doing so after the server is back: only a new
 * C_Initialize connects again. A token's own device error leaves the
 * module-level calls working, a lost connection does not: after a call
 * failed with CKR_DEVICE_ERROR, C_GetInfo tells the two apart.
 *
 * The next operation then finalises and initialises the module again (with
 * no thread inside it), and every token starts over: idle sessions and the
 * login dropped, object handles found again, one C_Login with the kept PIN.
 * While the server is still away, p11-kit-client initialises "without a
 * connection" and every call fails at once, so a server process's
 * handshakes fail fast with the module named; each operation tries to
 * connect again until one gets through.
 */
#include "p11.h"

#include <string.h>

/* Initialised again after a loss, and no operation has worked since. */
static int reconnecting(const p11_module *mod)
{
    return atomic_load(&((p11_module *)mod)->reconnected) != 0;
}

int p11_module_lost(p11_module *mod, CK_RV crv)
{
    CK_INFO info;

    if (crv == CKR_OK || mod->fl == NULL)
        return 0;
    if (reconnecting(mod)) {
        atomic_store(&mod->lost, 1);
        return P11_LOST_AGAIN;
    }
    if (crv != CKR_DEVICE_ERROR || P11(mod, C_GetInfo, &info) == CKR_OK)
        return 0;
    atomic_store(&mod->lost, 1);
    return P11_LOST;
}

void p11_module_answered(p11_module *mod)
{
    if (reconnecting(mod))
        atomic_store(&mod->reconnected, 0);
}

mks_rv p11_module_say_lost(const p11_module *mod, mks_rv rv)
{
    if (rv != MKS_OK && (atomic_load(&((p11_module *)mod)->lost) || reconnecting(mod)))
        mks_error_prefix("PKCS#11 module '%s' lost its connection (it is tried again at the "
                         "next use)",
                         mod->module_path != NULL ? mod->module_path : MKS_P11KIT_PROXY);
    return rv;
}

/* Sessions and logins first: after the new C_Initialize an idle session's
 * handle would name nothing, or another thread's new session. Sessions in
 * use come back failing and are dropped then (p11_session.c). */
static void tokens_start_over(p11_module *mod)
{
    p11_token *tok;

    for (tok = mod->tokens; tok != NULL; tok = tok->next) {
        pthread_mutex_lock(&tok->lock);
        tok->nopen -= tok->nfree;
        tok->nfree = 0;
        tok->logged_in = 0;
        tok->gen++;
        pthread_mutex_unlock(&tok->lock);
    }
}

mks_rv p11_module_reconnect_locked(p11_module *mod)
{
    CK_C_INITIALIZE_ARGS args;
    CK_RV crv;

    tokens_start_over(mod);
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    /* Taken as fork() takes it: waits until no thread is inside the module,
     * and keeps others out while it is finalised and initialised. */
    p11_fork_prepare();
    p11_trace(P11_FN_C_Finalize, mod->fl->C_Finalize(NULL));
    crv = p11_trace(P11_FN_C_Initialize, mod->fl->C_Initialize(&args));
    p11_fork_parent();
    atomic_store(&mod->lost, 0);
    atomic_store(&mod->reconnected, 1);
    if (crv != CKR_OK && crv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return p11_fail(crv, "C_Initialize", NULL);
    return MKS_OK;
}
