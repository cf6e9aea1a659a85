/*
 * The keystore context and its life: configuration, the private OpenSSL
 * library context, the registry of live contexts that fork() walks, the fork
 * generation, and the state of each backend (both made with the context;
 * each connects at first use). The only file that knows both backends.
 */
#include "internal.h"
#include "pkcs11/p11.h"
#include "tpm2/tpm2.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/provider.h>

struct mks_ctx {
    atomic_int refs;
    OSSL_LIB_CTX *libctx;    /* our own, so our crypto never loops into the provider */
    OSSL_PROVIDER *deflt;    /* the default provider, loaded into libctx */
    p11_module *p11;         /* module loaded at first use (p11_module_ready) */
    struct tpm2_state *tpm2; /* its settings; the TPM is reached at first use */
    struct mks_async *async; /* worker threads (async.c), started at first use */
    struct mks_ctx *next_registered;
};

/* ---- process-wide state: fork generation, registry of contexts ---------- */

static atomic_ulong fork_generation = 1;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mks_ctx *registry;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* fork() waits until no thread is inside the PKCS#11 module (p11_call.c), and
 * no context comes or goes while the child copies the registry. */
static void atfork_prepare(void)
{
    p11_fork_prepare();
    pthread_mutex_lock(&registry_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&registry_lock);
    p11_fork_parent();
}

static void atfork_child(void)
{
    mks_ctx *ctx;

    atomic_fetch_add(&fork_generation, 1);
    for (ctx = registry; ctx != NULL; ctx = ctx->next_registered) {
        /* Other parent threads may have held the inherited locks. */
        p11_module_after_fork(ctx->p11);
        tpm2_state_after_fork(ctx->tpm2);
    }
    pthread_mutex_init(&registry_lock, NULL);
    p11_fork_guard_init();
}

static void once_init(void)
{
    p11_fork_guard_init();
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

unsigned long mks_fork_generation(void)
{
    return atomic_load(&fork_generation);
}

/* ---- the context ----------------------------------------------------------- */

static void ctx_release(mks_ctx *ctx)
{
    /* First: the workers are idle (every operation holds a reference). */
    mks_async_free(ctx->async);
    p11_module_free(ctx->p11);
    /* The TPM connection is closed at exit too: a bare TPM keeps what a
     * process leaves loaded. */
    tpm2_state_free(ctx->tpm2, 1);
    OSSL_PROVIDER_unload(ctx->deflt);
    OSSL_LIB_CTX_free(ctx->libctx);
    free(ctx);
}

mks_rv mks_ctx_new(const mks_config *cfg, mks_ctx **out)
{
    static const mks_config none = {0};
    mks_rv rv = MKS_ERR_NOMEM;
    mks_ctx *ctx = NULL;

    *out = NULL;
    pthread_once(&once, once_init);
    if (cfg == NULL)
        cfg = &none;
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    atomic_init(&ctx->refs, 1);
    if (p11_module_new(cfg->pkcs11_module, cfg->pin_source, !cfg->no_key_cache, &ctx->p11) !=
            MKS_OK ||
        mks_async_new(&ctx->async) != MKS_OK)
        goto done;
    /* Settings the TPM backend refuses fail here, when the context is made. */
    rv = tpm2_state_new(cfg, &ctx->tpm2);
    if (rv != MKS_OK)
        goto done;
    ctx->libctx = OSSL_LIB_CTX_new();
    if (ctx->libctx == NULL || (ctx->deflt = OSSL_PROVIDER_load(ctx->libctx, "default")) == NULL) {
        rv = mks_error(MKS_ERR_GENERAL, "cannot set up OpenSSL's default provider");
        goto done;
    }
    /* Neither the PKCS#11 module nor the TPM is touched here: a process that
     * only uses TPM keys, or never touches a key, does not load the module. */
    registry_add(ctx);
    *out = ctx;
    ctx = NULL;
    rv = MKS_OK;
done:
    if (ctx != NULL)
        ctx_release(ctx);
    return rv;
}

void mks_ctx_free(mks_ctx *ctx)
{
    if (ctx == NULL || atomic_fetch_sub(&ctx->refs, 1) != 1)
        return;
    registry_remove(ctx);
    ctx_release(ctx);
}

void mks_ctx_up_ref(mks_ctx *ctx)
{
    atomic_fetch_add(&ctx->refs, 1);
}

OSSL_LIB_CTX *mks_ctx_libctx(mks_ctx *ctx)
{
    return ctx->libctx;
}

struct mks_async *mks_ctx_async(mks_ctx *ctx)
{
    return ctx->async;
}

p11_module *mks_ctx_p11(mks_ctx *ctx)
{
    return ctx->p11;
}

mks_rv mks_ctx_tpm2(mks_ctx *ctx, struct tpm2_state **out)
{
    *out = ctx->tpm2;
    return MKS_OK;
}
