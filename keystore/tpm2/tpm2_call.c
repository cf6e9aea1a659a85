/*
 * The connection to the TPM: TCTI loading, the ESYS lock, fork recovery, the
 * command counter and error decoding.
 */
#include "tpm2.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <tss2/tss2_rc.h>

static atomic_ulong tpm_commands;
static _Thread_local TSS2_RC last_rc;

/* The parent's TCTI in a child after fork(): left open, never finalised. */
static TSS2_TCTI_CONTEXT *inherited_tcti;

unsigned long mks_tpm_command_count(void)
{
    return atomic_load(&tpm_commands);
}

TSS2_RC tpm2_trace(const char *name, TSS2_RC rc)
{
    /* Esys_TR_* are bookkeeping in ESYS, except FromTPMPublic (one ReadPublic). */
    if (strncmp(name, "Esys_TR_", 8) != 0 || strcmp(name, "Esys_TR_FromTPMPublic") == 0)
        atomic_fetch_add_explicit(&tpm_commands, 1, memory_order_relaxed);
    if (rc != TSS2_RC_SUCCESS && strcmp(name, "Esys_FlushContext") != 0)
        last_rc = rc;
    if (getenv("MTLSKS_DEBUG") != NULL && rc != TSS2_RC_SUCCESS)
        fprintf(stderr, "mtlsks: %s -> 0x%x %s\n", name, rc, Tss2_RC_Decode(rc));
    return rc;
}

TSS2_RC tpm2_last_rc(void)
{
    return last_rc;
}

void tpm2_clear_last_rc(void)
{
    last_rc = TSS2_RC_SUCCESS;
}

int tpm2_rc_is_transient(TSS2_RC rc)
{
    /* Warnings (format zero, 0x900 set) carry no handle or session number. */
    switch (rc) {
    case TPM2_RC_OBJECT_MEMORY:
    case TPM2_RC_SESSION_MEMORY:
    case TPM2_RC_MEMORY:
    case TPM2_RC_OBJECT_HANDLES:
    case TPM2_RC_SESSION_HANDLES:
    case TPM2_RC_RETRY:
    case TPM2_RC_YIELDED:
    case TPM2_RC_TESTING:
        return 1;
    default:
        return 0;
    }
}

mks_rv tpm2_fail(TSS2_RC rc, const char *call)
{
    TSS2_RC base = rc & 0xfff;
    mks_rv rv = MKS_ERR_TOKEN;

    /* Format-one codes carry the parameter/handle/session number in 0xf00
     * (and 0x040 for parameters); the error itself is in the low bits. */
    if (rc & TPM2_RC_FMT1)
        base = (rc & 0x3f) | TPM2_RC_FMT1;
    if ((rc & 0xfff0000) == 0) {
        if (base == TPM2_RC_AUTH_FAIL || base == TPM2_RC_BAD_AUTH)
            rv = MKS_ERR_PIN_INCORRECT;
        else if (base == TPM2_RC_LOCKOUT)
            rv = MKS_ERR_PIN_LOCKED;
        else if (base == TPM2_RC_NV_DEFINED)
            rv = MKS_ERR_EXISTS;
        else if (base == TPM2_RC_OBJECT_MEMORY || base == TPM2_RC_SESSION_MEMORY)
            rv = MKS_ERR_NO_SPACE;
        else if ((rc & TPM2_RC_FMT1) && ((rc & 0x3f) == (TPM2_RC_HANDLE & 0x3f)))
            rv = MKS_ERR_NOT_FOUND;
    } else if ((rc & TSS2_RC_LAYER_MASK) == TSS2_TCTI_RC_LAYER) {
        rv = MKS_ERR_TOKEN_ABSENT;
    }
    return mks_error(rv, "%s failed: 0x%x %s", call, rc, Tss2_RC_Decode(rc));
}

mks_rv tpm2_state_new(const mks_config *cfg, tpm2_state **out)
{
    const char *tcti_conf = cfg != NULL ? cfg->tpm2_tcti : NULL;
    tpm2_state *st = calloc(1, sizeof(*st));
    mks_rv rv;

    if (st == NULL)
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    st->tcti_default = tcti_conf == NULL;
    st->tcti_conf = strdup(tcti_conf != NULL ? tcti_conf : "device:/dev/tpmrm0");
    if (st->tcti_conf == NULL) {
        free(st);
        return mks_error(MKS_ERR_NOMEM, "out of memory");
    }
    rv = tpm2_hold_parse(cfg != NULL ? cfg->tpm2_hold_objects : NULL, st->tcti_conf, &st->hold);
    if (rv == MKS_OK)
        rv = tpm2_sessions_parse(cfg != NULL ? cfg->tpm2_sessions : NULL, &st->sessions_always);
    if (rv != MKS_OK) {
        free(st->tcti_conf);
        free(st);
        return rv;
    }
    pthread_mutex_init(&st->lock, NULL);
    st->gen = 1;
    st->session = ESYS_TR_NONE;
    *out = st;
    return MKS_OK;
}

static void close_connection(tpm2_state *st)
{
    if (st->esys != NULL)
        Esys_Finalize(&st->esys);
    if (st->tcti != NULL)
        Tss2_TctiLdr_Finalize(&st->tcti);
    st->esys = NULL;
    st->tcti = NULL;
}

void tpm2_state_free(tpm2_state *st, int touch_tpm)
{
    if (st == NULL)
        return;
    if (touch_tpm && st->fork_gen == mks_fork_generation()) {
        tpm2_session_forget_locked(st, 1);
        close_connection(st);
    }
    if (st->primary_ctx != NULL) {
        mks_cleanse(st->primary_ctx, sizeof(*st->primary_ctx));
        Esys_Free(st->primary_ctx);
    }
    pthread_mutex_destroy(&st->lock);
    free(st->tcti_conf);
    free(st);
}

void tpm2_state_after_fork(tpm2_state *st)
{
    if (st == NULL)
        return;
    pthread_mutex_init(&st->lock, NULL);
}

/*
 * 1 when the TCTI library that tctildr would load for the name of conf
 * ("NAME" or "NAME:CONFIG") can be loaded; lib gets the name it tried.
 */
static int tcti_loadable(const char *conf, char *lib, size_t size)
{
    static const char *const forms[] = {"libtss2-tcti-%.*s.so.0", "libtss2-tcti-%.*s.so", "%.*s"};
    int n = (int)strcspn(conf, ":");
    size_t i;

    for (i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        void *h;

        snprintf(lib, size, forms[i], n, conf);
        h = dlopen(lib, RTLD_LAZY | RTLD_LOCAL);
        if (h != NULL) {
            dlclose(h);
            return 1;
        }
    }
    snprintf(lib, size, forms[0], n, conf);
    return 0;
}

/* Why Tss2_TctiLdr_Initialize failed, as a user can act on it. */
static mks_rv tcti_error(const tpm2_state *st, TSS2_RC rc)
{
    char lib[256];
    int n = (int)strcspn(st->tcti_conf, ":");

    /* tctildr says only "Functionality not supported" for a name it cannot load. */
    if (n > 0 && !tcti_loadable(st->tcti_conf, lib, sizeof(lib)))
        return mks_error(MKS_ERR_TOKEN_ABSENT,
                         "there is no TCTI named '%.*s' in TCTI '%s' (%s cannot be loaded); "
                         "TCTIs are device, swtpm, mssim or tabrmd, e.g. device:/dev/tpmrm0 or "
                         "swtpm:host=127.0.0.1,port=2321",
                         n, st->tcti_conf, st->tcti_conf, lib);
    return mks_error(MKS_ERR_TOKEN_ABSENT, "cannot reach the TPM through TCTI '%s': %s%s",
                     st->tcti_conf, Tss2_RC_Decode(rc),
                     st->tcti_default ? " (the default: no tpm2-tcti is set)" : "");
}

static mks_rv open_connection_locked(tpm2_state *st)
{
    TSS2_RC rc;

    if (st->esys != NULL) {
        /* ESYS was given our TCTI, so finalising it frees memory and sends
         * nothing. The TCTI is kept: its finalisers end the session on the
         * socket the parent still uses. */
        Esys_Finalize(&st->esys);
        inherited_tcti = st->tcti;
    }
    st->esys = NULL;
    st->tcti = NULL;
    if (getenv("TSS2_LOG") == NULL)
        setenv("TSS2_LOG", "all+none", 0); /* tpm2-tss logs to stderr otherwise */
    rc = Tss2_TctiLdr_Initialize(st->tcti_conf, &st->tcti);
    if (rc != TSS2_RC_SUCCESS) {
        st->tcti = NULL;
        return tcti_error(st, rc);
    }
    rc = Esys_Initialize(&st->esys, st->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        Tss2_TctiLdr_Finalize(&st->tcti);
        st->tcti = NULL;
        st->esys = NULL;
        return mks_error(MKS_ERR_TOKEN_ABSENT, "Esys_Initialize failed on TCTI '%s': %s",
                         st->tcti_conf, Tss2_RC_Decode(rc));
    }
    st->fork_gen = mks_fork_generation();
    st->gen++;
    return MKS_OK;
}

static _Thread_local OSSL_LIB_CTX *saved_default;

mks_rv tpm2_lock(mks_ctx *ctx, tpm2_state **out)
{
    tpm2_state *st;
    mks_rv rv;

    rv = mks_ctx_tpm2(ctx, &st);
    if (rv != MKS_OK)
        return rv;
    pthread_mutex_lock(&st->lock);
    if (st->esys == NULL || st->fork_gen != mks_fork_generation()) {
        rv = open_connection_locked(st);
        if (rv != MKS_OK) {
            pthread_mutex_unlock(&st->lock);
            return rv;
        }
    }
    saved_default = OSSL_LIB_CTX_set0_default(mks_ctx_libctx(ctx));
    *out = st;
    return MKS_OK;
}

void tpm2_unlock(tpm2_state *st)
{
    OSSL_LIB_CTX_set0_default(saved_default);
    saved_default = NULL;
    pthread_mutex_unlock(&st->lock);
}
