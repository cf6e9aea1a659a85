/*
 * PKCS#11 module, slots and tokens: loading through p11-kit, the per-token
 * session pool, login with a PIN that is never retried, and recovery after
 * fork().
 */
#include "p11.h"
#include "../tpm2/tpm2.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>

#include <openssl/crypto.h>
#include <openssl/provider.h>

/* ---- process-wide state: fork generation, exit, registry of contexts ----- */

static atomic_ulong fork_generation = 1;
static atomic_int process_exiting;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mks_ctx *registry;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void on_exit_handler(void)
{
    atomic_store(&process_exiting, 1);
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

/*
 * The fork guard: every call into the module holds it for reading, fork()
 * takes it for writing. A thread forking while another is inside C_Sign
 * would otherwise hand the child the module's internal locks held, and the
 * child would deadlock in its first call. Writers are preferred, so a busy
 * signing loop cannot starve a fork.
 */
static pthread_rwlock_t fork_guard;

static void fork_guard_init(void)
{
    pthread_rwlockattr_t attr;

    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&fork_guard, &attr);
    pthread_rwlockattr_destroy(&attr);
}

void p11_fork_guard_enter(void)
{
    pthread_rwlock_rdlock(&fork_guard);
}

CK_RV p11_fork_guard_leave(CK_RV rv)
{
    pthread_rwlock_unlock(&fork_guard);
    return rv;
}

static void atfork_prepare(void)
{
    pthread_rwlock_wrlock(&fork_guard);
    pthread_mutex_lock(&registry_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&registry_lock);
    pthread_rwlock_unlock(&fork_guard);
}

static void atfork_child(void)
{
    mks_ctx *ctx;
    p11_token *tok;

    atomic_fetch_add(&fork_generation, 1);
    for (ctx = registry; ctx != NULL; ctx = ctx->next_registered) {
        pthread_mutex_init(&ctx->lock, NULL);
        tpm2_state_after_fork(ctx->tpm2);
        for (tok = ctx->tokens; tok != NULL; tok = tok->next)
            reset_token_after_fork(tok);
    }
    pthread_mutex_init(&registry_lock, NULL);
    fork_guard_init();
}

static void once_init(void)
{
    fork_guard_init();
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void registry_add(mks_ctx *ctx)
{
    pthread_mutex_lock(&registry_lock);
    ctx->next_registered = registry;
    registry = ctx;
    pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(mks_ctx *ctx)
{
    mks_ctx **pp;

    pthread_mutex_lock(&registry_lock);
    for (pp = &registry; *pp != NULL; pp = &(*pp)->next_registered)
        if (*pp == ctx) {
            *pp = ctx->next_registered;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- context ----------------------------------------------------------- */

/*
 * Loads the module so that this context initialises and finalises it on its
 * own, whoever else in the process uses it (the provider, the CLI, another
 * library): p11-kit manages modules for that, and p11-kit-proxy (which
 * p11-kit will not manage) hands every C_GetFunctionList caller a list of
 * its own.
 */
static mks_rv module_load(mks_ctx *ctx, const char *path)
{
    const char *base = strrchr(path, '/');
    CK_C_GetFunctionList get_list;
    CK_RV crv;

    base = base != NULL ? base + 1 : path;
    if (strncmp(base, "p11-kit-proxy", 13) != 0) {
        ctx->fl = p11_kit_module_load(path, 0);
        return MKS_OK; /* ctx->fl == NULL is reported by the caller */
    }
    ctx->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (ctx->dl == NULL)
        return mks_error(MKS_ERR_NOT_FOUND, "cannot load PKCS#11 module '%s': %s", path, dlerror());
    get_list = (CK_C_GetFunctionList)dlsym(ctx->dl, "C_GetFunctionList");
    if (get_list == NULL)
        return mks_error(MKS_ERR_NOT_FOUND, "'%s' is not a PKCS#11 module (no C_GetFunctionList)",
                         path);
    crv = get_list(&ctx->fl);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_GetFunctionList", NULL);
    return MKS_OK;
}

static void module_release(mks_ctx *ctx)
{
    if (ctx->dl != NULL)
        dlclose(ctx->dl);
    else if (ctx->fl != NULL)
        p11_kit_module_release(ctx->fl);
    ctx->dl = NULL;
    ctx->fl = NULL;
}

static mks_rv module_initialize_locked(mks_ctx *ctx)
{
    CK_C_INITIALIZE_ARGS args;
    CK_RV rv;

    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    rv = P11(ctx, C_Initialize, &args);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        return p11_fail(rv, "C_Initialize", NULL);
    ctx->initialized = 1;
    ctx->fork_gen = atomic_load(&fork_generation);
    return MKS_OK;
}

mks_rv mks_ctx_new(const mks_config *cfg, mks_ctx **out)
{
    mks_rv rv = MKS_ERR_NOMEM;
    mks_ctx *ctx = NULL;

    *out = NULL;
    pthread_once(&once, once_init);
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    atomic_init(&ctx->refs, 1);
    pthread_mutex_init(&ctx->lock, NULL);
    if (cfg != NULL) {
        if ((cfg->pkcs11_module != NULL && *cfg->pkcs11_module != '\0' &&
             (ctx->module_path = strdup(cfg->pkcs11_module)) == NULL) ||
            (cfg->pin_source != NULL && (ctx->pin_source = strdup(cfg->pin_source)) == NULL) ||
            (cfg->tpm2_tcti != NULL && (ctx->tpm2_tcti = strdup(cfg->tpm2_tcti)) == NULL))
            goto done;
    }
    ctx->libctx = OSSL_LIB_CTX_new();
    if (ctx->libctx == NULL || (ctx->deflt = OSSL_PROVIDER_load(ctx->libctx, "default")) == NULL) {
        rv = mks_error(MKS_ERR_GENERAL, "cannot set up OpenSSL's default provider");
        goto done;
    }
    rv = mks_async_new(&ctx->async);
    if (rv != MKS_OK)
        goto done;

    /* The PKCS#11 module is loaded at first use (p11_ctx_ready): a process
     * that only uses TPM keys, or never touches a key, does not load it. */
    registry_add(ctx);
    *out = ctx;
    ctx = NULL;
    rv = MKS_OK;
done:
    if (ctx != NULL) {
        mks_async_free(ctx->async);
        module_release(ctx);
        OSSL_PROVIDER_unload(ctx->deflt);
        OSSL_LIB_CTX_free(ctx->libctx);
        free(ctx->module_path);
        free(ctx->pin_source);
        free(ctx->tpm2_tcti);
        pthread_mutex_destroy(&ctx->lock);
        free(ctx);
    }
    return rv;
}

static void token_free(p11_token *tok, int touch_module)
{
    size_t i;

    if (touch_module)
        for (i = 0; i < tok->nfree; i++)
            P11(tok->ctx, C_CloseSession, tok->pool[i]);
    mks_cleanse(tok->pin, sizeof(tok->pin));
    pthread_mutex_destroy(&tok->lock);
    pthread_cond_destroy(&tok->cond);
    free(tok);
}

void mks_ctx_free(mks_ctx *ctx)
{
    p11_token *tok, *next;
    int touch_module;

    if (ctx == NULL || atomic_fetch_sub(&ctx->refs, 1) != 1)
        return;
    registry_remove(ctx);
    /* First: the workers are idle (every operation holds a reference). */
    mks_async_free(ctx->async);
    /* At exit the module's destructors may have run already (SoftHSM 2.6.1
     * crashes in C_CloseSession then); in a child after fork the sessions
     * are the parent's. In both cases leave the module alone. */
    touch_module = !atomic_load(&process_exiting) && ctx->initialized && ctx->fl != NULL &&
                   ctx->fork_gen == atomic_load(&fork_generation);
    for (tok = ctx->tokens; tok != NULL; tok = next) {
        next = tok->next;
        token_free(tok, touch_module);
    }
    /* The TPM connection is closed at exit too: a bare TPM keeps what a
     * process leaves loaded. */
    tpm2_state_free(ctx->tpm2, 1);
    if (touch_module) {
        P11(ctx, C_Finalize, NULL);
        module_release(ctx);
    }
    OSSL_PROVIDER_unload(ctx->deflt);
    OSSL_LIB_CTX_free(ctx->libctx);
    free(ctx->module_path);
    free(ctx->pin_source);
    free(ctx->tpm2_tcti);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

/* Loads and initialises the module; ctx->lock held. */
static mks_rv module_open_locked(mks_ctx *ctx)
{
    const char *path = ctx->module_path != NULL ? ctx->module_path : MKS_P11KIT_PROXY;
    mks_rv rv;

    if (access(path, R_OK) != 0)
        return mks_error(MKS_ERR_NOT_FOUND, "PKCS#11 module '%s' not found%s", path,
                         ctx->module_path != NULL ? " (check pkcs11-module in openssl.cnf)"
                                                  : " (install p11-kit-modules or set "
                                                    "pkcs11-module)");
    rv = module_load(ctx, path);
    if (rv != MKS_OK)
        return rv;
    if (ctx->fl == NULL)
        return mks_error(MKS_ERR_NOT_FOUND, "cannot load PKCS#11 module '%s': %s", path,
                         p11_kit_message() != NULL ? p11_kit_message() : "unknown error");
    rv = module_initialize_locked(ctx);
    if (rv != MKS_OK) {
        module_release(ctx);
        mks_error_prefix("PKCS#11 module '%s'", path);
        return rv;
    }
    /* Registered after the module's own destructors (loaded just now), so
     * it runs before them and mks_ctx_free can tell the process is exiting. */
    atexit(on_exit_handler);
    return MKS_OK;
}

mks_rv p11_ctx_ready(mks_ctx *ctx)
{
    mks_rv rv = MKS_OK;

    if (atomic_load(&ctx->ready_gen) == atomic_load(&fork_generation))
        return MKS_OK;
    pthread_mutex_lock(&ctx->lock);
    if (ctx->fl == NULL)
        rv = module_open_locked(ctx);
    else if (ctx->fork_gen != atomic_load(&fork_generation))
        rv = module_initialize_locked(ctx);
    if (rv == MKS_OK)
        atomic_store(&ctx->ready_gen, ctx->fork_gen);
    pthread_mutex_unlock(&ctx->lock);
    return rv;
}

/* ---- slots ------------------------------------------------------------- */

static mks_rv get_slots(mks_ctx *ctx, CK_BBOOL present, CK_SLOT_ID **out, CK_ULONG *n)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG count = 0;
    CK_RV rv;
    int tries;

    *out = NULL;
    *n = 0;
    for (tries = 0; tries < 4; tries++) {
        rv = P11(ctx, C_GetSlotList, present, NULL, &count);
        if (rv != CKR_OK)
            return p11_fail(rv, "C_GetSlotList", NULL);
        free(slots);
        slots = calloc(count + 1, sizeof(*slots));
        if (slots == NULL)
            return mks_error(MKS_ERR_NOMEM, "out of memory");
        rv = P11(ctx, C_GetSlotList, present, slots, &count);
        if (rv == CKR_BUFFER_TOO_SMALL)
            continue; /* a slot appeared in between */
        if (rv != CKR_OK) {
            free(slots);
            return p11_fail(rv, "C_GetSlotList", NULL);
        }
        *out = slots;
        *n = count;
        return MKS_OK;
    }
    free(slots);
    return mks_error(MKS_ERR_TOKEN, "C_GetSlotList kept changing size");
}

/* A blank (all spaces) field becomes unset, which p11_kit_uri_format leaves out. */
static void blank_unset(unsigned char *field, size_t len)
{
    size_t i;

    for (i = 0; i < len && field[i] == ' '; i++)
        ;
    if (i == len)
        memset(field, 0, len);
}

/* The token's URI, naming only the attributes the token has: an uninitialised
 * token's blank label and serial give no empty "serial=;token=". */
char *p11_token_uri(const CK_TOKEN_INFO *info)
{
    P11KitUri *uri = p11_kit_uri_new();
    CK_TOKEN_INFO *ti;
    char *s = NULL;

    if (uri == NULL)
        return NULL;
    ti = p11_kit_uri_get_token_info(uri);
    memcpy(ti, info, sizeof(*info));
    blank_unset(ti->label, sizeof(ti->label));
    blank_unset(ti->manufacturerID, sizeof(ti->manufacturerID));
    blank_unset(ti->model, sizeof(ti->model));
    blank_unset(ti->serialNumber, sizeof(ti->serialNumber));
    if (p11_kit_uri_format(uri, P11_KIT_URI_FOR_TOKEN, &s) != P11_KIT_URI_OK)
        s = NULL;
    p11_kit_uri_free(uri);
    return s;
}

mks_rv mks_slots_list(mks_ctx *ctx, mks_slot_info **out, size_t *count)
{
    mks_rv rv;
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0, i;
    mks_slot_info *info = NULL;
    char *name;
    int index = 0;

    *out = NULL;
    *count = 0;
    rv = p11_ctx_ready(ctx);
    if (rv != MKS_OK)
        return rv;
    rv = get_slots(ctx, CK_FALSE, &slots, &n);
    if (rv != MKS_OK)
        return rv;
    info = calloc(n + 1, sizeof(*info));
    if (info == NULL) {
        rv = mks_error(MKS_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < n; i++) {
        mks_slot_info *si = &info[i];
        CK_SLOT_INFO sinfo;
        CK_TOKEN_INFO tinfo;
        CK_RV crv;

        si->index = -1;
        si->slot_id = slots[i];
        crv = P11(ctx, C_GetSlotInfo, slots[i], &sinfo);
        if (crv != CKR_OK)
            continue;
        mks_copy_padded(si->slot_description, sizeof(si->slot_description), sinfo.slotDescription,
                        sizeof(sinfo.slotDescription));
        mks_copy_padded(si->module, sizeof(si->module), sinfo.manufacturerID,
                        sizeof(sinfo.manufacturerID));
        name = p11_kit_module_get_filename(ctx->fl);
        if (name != NULL) {
            snprintf(si->module, sizeof(si->module), "%s", name);
            free(name);
        }
        si->token_present = (sinfo.flags & CKF_TOKEN_PRESENT) != 0;
        if (!si->token_present)
            continue;
        crv = P11(ctx, C_GetTokenInfo, slots[i], &tinfo);
        if (crv != CKR_OK) {
            si->token_present = 0;
            continue;
        }
        si->token_initialized = (tinfo.flags & CKF_TOKEN_INITIALIZED) != 0;
        si->write_protected = (tinfo.flags & CKF_WRITE_PROTECTED) != 0;
        si->login_required = (tinfo.flags & CKF_LOGIN_REQUIRED) != 0;
        mks_copy_padded(si->token_label, sizeof(si->token_label), tinfo.label, sizeof(tinfo.label));
        mks_copy_padded(si->token_manufacturer, sizeof(si->token_manufacturer),
                        tinfo.manufacturerID, sizeof(tinfo.manufacturerID));
        mks_copy_padded(si->token_model, sizeof(si->token_model), tinfo.model, sizeof(tinfo.model));
        mks_copy_padded(si->token_serial, sizeof(si->token_serial), tinfo.serialNumber,
                        sizeof(tinfo.serialNumber));
        si->token_uri = p11_token_uri(&tinfo);
        /* Only writable, initialised tokens can hold new keys; they get the
         * index --slot takes, in the module's slot order. */
        if (si->token_initialized && !si->write_protected)
            si->index = index++;
    }
    *out = info;
    *count = n;
    info = NULL;
    rv = MKS_OK;
done:
    free(slots);
    free(info);
    return rv;
}

void mks_slots_free(mks_slot_info *slots, size_t count)
{
    size_t i;

    if (slots == NULL)
        return;
    for (i = 0; i < count; i++)
        free(slots[i].token_uri);
    free(slots);
}

mks_rv p11_match_slots(mks_ctx *ctx, P11KitUri *uri, CK_SLOT_ID **out, size_t *count)
{
    mks_rv rv;
    CK_SLOT_ID *slots = NULL;
    CK_ULONG n = 0, i;
    size_t m = 0;

    *out = NULL;
    *count = 0;
    rv = p11_ctx_ready(ctx);
    if (rv != MKS_OK)
        return rv;
    rv = get_slots(ctx, CK_TRUE, &slots, &n);
    if (rv != MKS_OK)
        return rv;
    for (i = 0; i < n; i++) {
        CK_SLOT_INFO sinfo;
        CK_TOKEN_INFO tinfo;

        if (P11(ctx, C_GetTokenInfo, slots[i], &tinfo) != CKR_OK)
            continue;
        if (!(tinfo.flags & CKF_TOKEN_INITIALIZED))
            continue;
        if (uri != NULL) {
            if (!p11_kit_uri_match_token_info(uri, &tinfo))
                continue;
            if (P11(ctx, C_GetSlotInfo, slots[i], &sinfo) != CKR_OK ||
                !p11_kit_uri_match_slot_info(uri, &sinfo))
                continue;
            if (p11_kit_uri_get_slot_id(uri) != (CK_SLOT_ID)-1 &&
                p11_kit_uri_get_slot_id(uri) != slots[i])
                continue;
        }
        slots[m++] = slots[i];
    }
    *out = slots;
    *count = m;
    return MKS_OK;
}

/* ---- tokens ------------------------------------------------------------ */

static int same_token(const CK_TOKEN_INFO *a, const CK_TOKEN_INFO *b)
{
    return memcmp(a->label, b->label, sizeof(a->label)) == 0 &&
           memcmp(a->serialNumber, b->serialNumber, sizeof(a->serialNumber)) == 0 &&
           memcmp(a->manufacturerID, b->manufacturerID, sizeof(a->manufacturerID)) == 0 &&
           memcmp(a->model, b->model, sizeof(a->model)) == 0;
}

mks_rv p11_token_for_slot(mks_ctx *ctx, CK_SLOT_ID slot, const CK_TOKEN_INFO *info, p11_token **out)
{
    p11_token *tok;

    pthread_mutex_lock(&ctx->lock);
    for (tok = ctx->tokens; tok != NULL; tok = tok->next)
        if (tok->slot == slot && same_token(&tok->info, info))
            break;
    if (tok == NULL) {
        tok = calloc(1, sizeof(*tok));
        if (tok == NULL) {
            pthread_mutex_unlock(&ctx->lock);
            return mks_error(MKS_ERR_NOMEM, "out of memory");
        }
        tok->ctx = ctx;
        tok->slot = slot;
        tok->info = *info;
        tok->gen = 1;
        mks_copy_padded(tok->label, sizeof(tok->label), info->label, sizeof(info->label));
        tok->max_sessions = P11_POOL_MAX;
        if (info->ulMaxSessionCount != CK_EFFECTIVELY_INFINITE &&
            info->ulMaxSessionCount != CK_UNAVAILABLE_INFORMATION && info->ulMaxSessionCount > 0 &&
            info->ulMaxSessionCount < tok->max_sessions)
            tok->max_sessions = info->ulMaxSessionCount;
        pthread_mutex_init(&tok->lock, NULL);
        pthread_cond_init(&tok->cond, NULL);
        tok->next = ctx->tokens;
        ctx->tokens = tok;
    }
    pthread_mutex_unlock(&ctx->lock);
    *out = tok;
    return MKS_OK;
}

int p11_token_login_required(const p11_token *tok)
{
    return (tok->info.flags & CKF_LOGIN_REQUIRED) != 0;
}

int p11_token_pin_available(p11_token *tok, const char *uri_pin_source)
{
    int yes;

    pthread_mutex_lock(&tok->lock);
    yes = tok->pin_len > 0 || uri_pin_source != NULL || tok->ctx->pin_source != NULL;
    pthread_mutex_unlock(&tok->lock);
    return yes;
}

/* Obtains the PIN into tok->pin, from what the token kept, the URI, the config
 * or the caller's callback, in that order. */
static mks_rv obtain_pin_locked(p11_token *tok, const char *uri_pin_source,
                                const mks_pin_ui *pin_ui)
{
    mks_rv rv;

    if (tok->pin_len > 0)
        return MKS_OK;
    if (uri_pin_source != NULL || tok->ctx->pin_source != NULL) {
        const char *src = uri_pin_source != NULL ? uri_pin_source : tok->ctx->pin_source;
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
    mks_ctx *ctx = tok->ctx;
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
    crv = P11(ctx, C_GetTokenInfo, tok->slot, &info);
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
    crv = P11(ctx, C_Login, s, CKU_USER, (CK_UTF8CHAR_PTR)tok->pin, (CK_ULONG)tok->pin_len);
    if (crv == CKR_OK || crv == CKR_USER_ALREADY_LOGGED_IN) {
        tok->logged_in = 1;
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

    crv = P11(tok->ctx, C_OpenSession, tok->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
              out);
    if (crv == CKR_TOKEN_WRITE_PROTECTED || crv == CKR_SESSION_READ_ONLY)
        crv = P11(tok->ctx, C_OpenSession, tok->slot, CKF_SERIAL_SESSION, NULL, NULL, out);
    if (crv != CKR_OK)
        return p11_fail(crv, "C_OpenSession", tok);
    tok->nopen++;
    return MKS_OK;
}

mks_rv p11_session_get(p11_token *tok, int login, const char *uri_pin_source,
                       const mks_pin_ui *pin_ui, CK_SESSION_HANDLE *out, unsigned long *gen)
{
    mks_rv rv;
    CK_SESSION_HANDLE s;

    rv = p11_ctx_ready(tok->ctx);
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

void p11_session_put(p11_token *tok, CK_SESSION_HANDLE s, CK_RV last)
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
        /* The token forgot this session; so may it have the others. */
        tok->nopen--;
        break;
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
        /* Every session and the login are gone with the token. Idle sessions
         * are closed; those in use are dropped as they come back. */
        while (tok->nfree > 0) {
            P11(tok->ctx, C_CloseSession, tok->pool[--tok->nfree]);
            tok->nopen--;
        }
        P11(tok->ctx, C_CloseSession, s);
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

void mks_ctx_up_ref(mks_ctx *ctx)
{
    atomic_fetch_add(&ctx->refs, 1);
}

struct mks_async *mks_ctx_async(mks_ctx *ctx)
{
    return ctx->async;
}

OSSL_LIB_CTX *mks_ctx_libctx(mks_ctx *ctx)
{
    return ctx->libctx;
}

unsigned long mks_fork_generation(void)
{
    return atomic_load(&fork_generation);
}

mks_rv mks_ctx_tpm2(mks_ctx *ctx, struct tpm2_state **out)
{
    mks_rv rv = MKS_OK;

    pthread_mutex_lock(&ctx->lock);
    if (ctx->tpm2 == NULL)
        rv = tpm2_state_new(ctx->tpm2_tcti, &ctx->tpm2);
    *out = ctx->tpm2;
    pthread_mutex_unlock(&ctx->lock);
    return rv;
}
