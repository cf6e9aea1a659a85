/*
 * The PKCS#11 module of a keystore context: its configuration, loading
 * through p11-kit at first use, initialisation (again in a child after
 * fork()), and leaving it alone while the process exits.
 */
#include "p11.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>

static atomic_int process_exiting;

static void on_exit_handler(void)
{
    atomic_store(&process_exiting, 1);
}

mks_rv p11_module_new(const char *module_path, const char *pin_source, int key_cache,
                      p11_module **out)
{
    p11_module *mod = calloc(1, sizeof(*mod));

    *out = NULL;
    if (mod == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    if ((module_path != NULL && *module_path != '\0' &&
         (mod->module_path = strdup(module_path)) == NULL) ||
        (pin_source != NULL && (mod->pin_source = strdup(pin_source)) == NULL)) {
        free(mod->module_path);
        free(mod);
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    }
    mod->key_cache = key_cache;
    pthread_mutex_init(&mod->lock, NULL);
    *out = mod;
    return MKS_OK;
}

/*
 * Loads the module so that this context initialises and finalises it on its
 * own, whoever else in the process uses it (the provider, the CLI, another
 * library): p11-kit manages modules for that, and p11-kit-proxy (which
 * p11-kit will not manage) hands every C_GetFunctionList caller a list of
 * its own.
 */
static mks_rv module_load(p11_module *mod, const char *path)
{
    const char *base = strrchr(path, '/');
    CK_C_GetFunctionList get_list;
    CK_RV crv;

    base = base != NULL ? base + 1 : path;
    if (strncmp(base, "p11-kit-proxy", 13) != 0) {
        mod->fl = p11_kit_module_load(path, 0);
        return MKS_OK; /* mod->fl == NULL is reported by the caller */
    }
    mod->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (mod->dl == NULL)
        return mks_error(MKS_ERR_NOT_FOUND, "cannot load PKCS#11 module '%s': %s", path, dlerror());
    get_list = (CK_C_GetFunctionList)dlsym(mod->dl, "C_GetFunctionList");
    if (get_list == NULL)
        return mks_error(MKS_ERR_NOT_FOUND, "'%s' is not a PKCS#11 module (no C_GetFunctionList)",
                         path);
    crv = get_list(&mod->fl);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_GetFunctionList", NULL);
    return MKS_OK;
}

static void module_release(p11_module *mod)
{
    if (mod->dl != NULL)
        dlclose(mod->dl);
    else if (mod->fl != NULL)
        p11_kit_module_release(mod->fl);
    mod->dl = NULL;
    mod->fl = NULL;
}

static mks_rv module_initialize_locked(p11_module *mod)
{
    CK_C_INITIALIZE_ARGS args;
    CK_RV rv;

    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    rv = P11(mod, C_Initialize, &args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return p11_fail(rv, "C_Initialize", NULL);
    mod->initialized = 1;
    mod->fork_gen = mks_fork_generation();
    return MKS_OK;
}

static void token_free(p11_token *tok, int touch_module)
{
    size_t i;

    if (touch_module)
        for (i = 0; i < tok->nfree; i++)
            P11(tok->mod, C_CloseSession, tok->pool[i]);
    mks_cleanse(tok->pin, sizeof(tok->pin));
    pthread_mutex_destroy(&tok->lock);
    pthread_cond_destroy(&tok->cond);
    free(tok);
}

int p11_module_callable(const p11_module *mod)
{
    return !atomic_load(&process_exiting) && mod->initialized && mod->fl != NULL &&
           mod->fork_gen == mks_fork_generation();
}

void p11_module_free(p11_module *mod)
{
    p11_token *tok, *next;
    int touch_module;

    if (mod == NULL)
        return;
    /* At exit the module's destructors may have run already (SoftHSM 2.6.1
     * crashes in C_CloseSession then); in a child after fork the sessions
     * are the parent's. In both cases leave the module alone. */
    touch_module = p11_module_callable(mod);
    for (tok = mod->tokens; tok != NULL; tok = next) {
        next = tok->next;
        token_free(tok, touch_module);
    }
    if (touch_module) {
        P11(mod, C_Finalize, NULL);
        module_release(mod);
    }
    free(mod->module_path);
    free(mod->pin_source);
    pthread_mutex_destroy(&mod->lock);
    free(mod);
}

static void reset_token_after_fork(p11_token *tok)
{
    /* The child inherits copies of locks that other parent threads may have
     * held: make new ones. Sessions and login belong to the parent. */
    pthread_mutex_init(&tok->lock, NULL);
    pthread_cond_init(&tok->cond, NULL);
    tok->nfree = 0;
    tok->nopen = 0;
    tok->logged_in = 0;
    tok->gen++;
}

void p11_module_after_fork(p11_module *mod)
{
    p11_token *tok;

    pthread_mutex_init(&mod->lock, NULL);
    for (tok = mod->tokens; tok != NULL; tok = tok->next)
        reset_token_after_fork(tok);
}

/* Loads and initialises the module; mod->lock held. */
static mks_rv module_open_locked(p11_module *mod)
{
    const char *path = mod->module_path != NULL ? mod->module_path : MKS_P11KIT_PROXY;
    mks_rv rv;

    if (access(path, R_OK) != 0)
        return mks_error(MKS_ERR_NOT_FOUND, "PKCS#11 module '%s' not found%s", path,
                         mod->module_path != NULL ? " (check pkcs11-module in openssl.cnf)"
                                                  : " (install p11-kit-modules or set "
                                                    "pkcs11-module)");
    rv = module_load(mod, path);
    if (rv != MKS_OK)
        return rv;
    if (mod->fl == NULL)
        return mks_error(MKS_ERR_NOT_FOUND, "cannot load PKCS#11 module '%s': %s", path,
                         p11_kit_message() != NULL ? p11_kit_message() : "unknown error");
    rv = module_initialize_locked(mod);
    if (rv != MKS_OK) {
        module_release(mod);
        mks_error_prefix("PKCS#11 module '%s'", path);
        return rv;
    }
    /* Registered after the module's own destructors (loaded just now), so
     * it runs before them and p11_module_free can tell the process is exiting. */
    atexit(on_exit_handler);
    return MKS_OK;
}

mks_rv p11_module_ready(p11_module *mod)
{
    mks_rv rv = MKS_OK;

    if (atomic_load(&mod->ready_gen) == mks_fork_generation() && !atomic_load(&mod->lost))
        return MKS_OK;
    pthread_mutex_lock(&mod->lock);
    if (mod->fl == NULL)
        rv = module_open_locked(mod);
    else if (mod->fork_gen != mks_fork_generation())
        rv = module_initialize_locked(mod);
    else if (atomic_load(&mod->lost))
        rv = p11_module_reconnect_locked(mod);
    if (rv == MKS_OK)
        atomic_store(&mod->ready_gen, mod->fork_gen);
    pthread_mutex_unlock(&mod->lock);
    return rv;
}
