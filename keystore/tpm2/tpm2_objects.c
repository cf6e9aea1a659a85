/*
 * What stays loaded in the TPM, and for how long.
 *
 * A TPM has a few transient object slots (three on swtpm and many chips).
 * Behind a resource manager (the kernel's /dev/tpmrm0, tpm2-abrmd) each
 * client's objects are swapped out between its commands and flushed when it
 * disconnects, so a key loaded once can stay: a signature is one TPM2_Sign.
 * Without one (/dev/tpm0, swtpm, mssim) an object stays loaded until someone
 * flushes it, also after the process that loaded it died of a signal or left
 * through _exit (a forking server's children): three such processes and the
 * TPM refuses every other load. There a key is kept as a saved context
 * (TPM2_ContextSave: the key wrapped by the TPM, held in our memory, no TPM
 * slot) and each operation runs ContextLoad, the command, FlushContext under
 * the ESYS lock, with termination signals held back meanwhile.
 */
#include "tpm2.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tss2/tss2_mu.h>

#define TPM2_OWNER 0x40000001u
/* How long an operation waits for a free slot, in milliseconds. */
#define RETRY_BUDGET_MS 2000

/* The storage primary tpm2-openssl, openssl_tpm2_engine and tpm2-tss-engine
 * create under the owner hierarchy: keys wrapped by one load under the
 * others. */
static const TPM2B_PUBLIC primary_template = {
    .publicArea =
        {
            .type = TPM2_ALG_ECC,
            .nameAlg = TPM2_ALG_SHA256,
            .objectAttributes = TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED |
                                TPMA_OBJECT_DECRYPT | TPMA_OBJECT_NODA | TPMA_OBJECT_FIXEDTPM |
                                TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN,
            .parameters.eccDetail =
                {
                    .symmetric = {.algorithm = TPM2_ALG_AES,
                                  .keyBits.aes = 128,
                                  .mode.aes = TPM2_ALG_CFB},
                    .scheme = {.scheme = TPM2_ALG_NULL},
                    .curveID = TPM2_ECC_NIST_P256,
                    .kdf = {.scheme = TPM2_ALG_NULL},
                },
        },
};

/* ---- which TCTI has a resource manager ---------------------------------------- */

int tpm2_tcti_has_rm(const char *conf)
{
    const char *colon = strchr(conf, ':');
    size_t n = colon != NULL ? (size_t)(colon - conf) : strlen(conf);
    const char *name = conf, *dot;

    /* tctildr takes "NAME", "libtss2-tcti-NAME.so.0" or a path to one. */
    if (memchr(conf, '/', n) != NULL) {
        const char *slash = conf;
        while (memchr(slash, '/', n - (size_t)(slash - conf)) != NULL)
            slash = (const char *)memchr(slash, '/', n - (size_t)(slash - conf)) + 1;
        name = slash;
    }
    if (strncmp(name, "libtss2-tcti-", 13) == 0)
        name += 13;
    n -= (size_t)(name - conf);
    dot = memchr(name, '.', n);
    if (dot != NULL)
        n = (size_t)(dot - name);
    if (n == 6 && strncmp(name, "tabrmd", 6) == 0)
        return 1;
    if (n == 4 && strncmp(name, "pcap", 4) == 0)
        return colon != NULL && tpm2_tcti_has_rm(colon + 1);
    /* The device TCTI's own default is /dev/tpmrm0 only from tpm2-tss 4 on:
     * without a path, assume the bare device. */
    if (n == 6 && strncmp(name, "device", 6) == 0)
        return colon != NULL && strstr(colon + 1, "/dev/tpmrm") != NULL;
    /* swtpm, mssim, cmd and anything else: no resource manager we know of. */
    return 0;
}

mks_rv tpm2_hold_parse(const char *value, const char *tcti_conf, int *hold)
{
    if (value == NULL || strcmp(value, "auto") == 0)
        *hold = tpm2_tcti_has_rm(tcti_conf);
    else if (strcmp(value, "yes") == 0)
        *hold = 1;
    else if (strcmp(value, "no") == 0)
        *hold = 0;
    else
        return mks_error(MKS_ERR_ARG,
                         "tpm2-hold-objects = '%s' is not a choice: auto (hold keys behind a "
                         "resource manager only), yes or no",
                         value);
    return MKS_OK;
}

/* ---- the storage primary ----------------------------------------------------------- */

void tpm2_flush_locked(tpm2_state *st, ESYS_TR h)
{
    if (h != ESYS_TR_NONE)
        (void)TPM2(Esys_FlushContext, st->esys, h);
}

static mks_rv create_primary_locked(tpm2_state *st, ESYS_TR *out)
{
    TPM2B_SENSITIVE_CREATE sens = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TSS2_RC rc;

    rc = TPM2(Esys_CreatePrimary, st->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
              ESYS_TR_NONE, &sens, &primary_template, &outside, &pcrs, out, NULL, NULL, NULL, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        *out = ESYS_TR_NONE;
        return tpm2_fail(rc, "TPM2_CreatePrimary (owner hierarchy storage key)");
    }
    return MKS_OK;
}

mks_rv tpm2_primary_get_locked(tpm2_state *st, int save, ESYS_TR *h)
{
    TSS2_RC rc;
    mks_rv rv;

    if (*h != ESYS_TR_NONE)
        return MKS_OK;
    if (st->primary_ctx != NULL) {
        rc = TPM2(Esys_ContextLoad, st->esys, st->primary_ctx, h);
        if (rc == TSS2_RC_SUCCESS)
            return MKS_OK;
        *h = ESYS_TR_NONE;
        if (tpm2_rc_is_transient(rc))
            return tpm2_fail(rc, "TPM2_ContextLoad (storage key)");
        /* The TPM was reset since: make the primary again. */
        Esys_Free(st->primary_ctx);
        st->primary_ctx = NULL;
    }
    rv = create_primary_locked(st, h);
    if (rv != MKS_OK || !save || st->hold)
        return rv;
    /* Not saved is only slower: the next operation makes it again. */
    if (TPM2(Esys_ContextSave, st->esys, *h, &st->primary_ctx) != TSS2_RC_SUCCESS)
        st->primary_ctx = NULL;
    return MKS_OK;
}

void tpm2_primary_put_locked(tpm2_state *st, ESYS_TR *h)
{
    tpm2_flush_locked(st, *h);
    *h = ESYS_TR_NONE;
}

/* ---- loading keys ------------------------------------------------------------------ */

/* 1 when loading the key needs its parent, the storage primary. */
static int needs_primary(const tpm2_state *st, const tpm2_key *tk)
{
    if (tk->persistent != 0 || tk->file.parent != TPM2_OWNER)
        return 0;
    return st->hold ? tk->gen != st->gen : tk->saved == NULL;
}

/* Loads a key file's blobs under its parent: the storage primary (*primary,
 * loaded here when not yet) or a persistent key. */
static mks_rv load_file_locked(tpm2_state *st, tpm2_key *tk, ESYS_TR *primary, ESYS_TR *out)
{
    TPM2B_PUBLIC pub2b = {0};
    TPM2B_PRIVATE priv2b = {0};
    ESYS_TR parent = ESYS_TR_NONE;
    size_t off = 0;
    mks_rv rv;
    TSS2_RC rc;

    if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(tk->file.pub, tk->file.pub_len, &off, &pub2b) !=
        TSS2_RC_SUCCESS)
        return mks_error(MKS_ERR_ARG, "TSS2 key: malformed public part");
    off = 0;
    if (Tss2_MU_TPM2B_PRIVATE_Unmarshal(tk->file.priv, tk->file.priv_len, &off, &priv2b) !=
        TSS2_RC_SUCCESS)
        return mks_error(MKS_ERR_ARG, "TSS2 key: malformed private part");
    if (tk->file.parent == TPM2_OWNER) {
        rv = tpm2_primary_get_locked(st, 0, primary);
        if (rv != MKS_OK)
            return rv;
        parent = *primary;
    } else {
        rc = TPM2(Esys_TR_FromTPMPublic, st->esys, tk->file.parent, ESYS_TR_NONE, ESYS_TR_NONE,
                  ESYS_TR_NONE, &parent);
        if (rc != TSS2_RC_SUCCESS) {
            rv = tpm2_fail(rc, "TPM2_ReadPublic");
            mks_error_prefix("parent key 0x%08x", tk->file.parent);
            return rv;
        }
    }
    rc = TPM2(Esys_Load, st->esys, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &priv2b,
              &pub2b, out);
    mks_cleanse(&priv2b, sizeof(priv2b));
    if (tk->file.parent != TPM2_OWNER)
        Esys_TR_Close(st->esys, &parent);
    if (rc != TSS2_RC_SUCCESS) {
        *out = ESYS_TR_NONE;
        rv = tpm2_fail(rc, "TPM2_Load");
        if ((rc & 0xfff) == TPM2_RC_OBJECT_MEMORY)
            mks_error_prefix("the TPM has no free object slot (a TPM without a resource "
                             "manager holds 3; use /dev/tpmrm0)");
        else
            mks_error_prefix("the key file was not made under this TPM's storage key");
        return rv;
    }
    return MKS_OK;
}

/* The key's handle for one operation: loaded (or, held, kept loaded) and
 * given its password. */
static mks_rv key_get_locked(tpm2_state *st, tpm2_key *tk, ESYS_TR *primary, ESYS_TR *out)
{
    TPM2B_AUTH auth = {0};
    ESYS_TR h = ESYS_TR_NONE;
    mks_rv rv;
    TSS2_RC rc;

    *out = ESYS_TR_NONE;
    if (tk->persistent != 0 || st->hold) {
        if (tk->gen == st->gen) {
            *out = tk->handle;
            return MKS_OK;
        }
        tk->loaded = 0;
    }
    if (tk->persistent != 0) {
        rc = TPM2(Esys_TR_FromTPMPublic, st->esys, tk->persistent, ESYS_TR_NONE, ESYS_TR_NONE,
                  ESYS_TR_NONE, &h);
        if (rc != TSS2_RC_SUCCESS) {
            rv = tpm2_fail(rc, "TPM2_ReadPublic");
            mks_error_prefix("persistent key 0x%08x", tk->persistent);
            return rv;
        }
    } else if (!st->hold && tk->saved != NULL) {
        rc = TPM2(Esys_ContextLoad, st->esys, tk->saved, &h);
        if (rc != TSS2_RC_SUCCESS) {
            h = ESYS_TR_NONE;
            if (tpm2_rc_is_transient(rc))
                return tpm2_fail(rc, "TPM2_ContextLoad");
            /* The TPM was reset since: load the key from its file again. */
            Esys_Free(tk->saved);
            tk->saved = NULL;
        }
    }
    if (h == ESYS_TR_NONE) {
        rv = load_file_locked(st, tk, primary, &h);
        if (rv != MKS_OK)
            return rv;
        /* Not saved is only slower: the next operation loads the file again. */
        if (!st->hold && TPM2(Esys_ContextSave, st->esys, h, &tk->saved) != TSS2_RC_SUCCESS)
            tk->saved = NULL;
        tk->loaded = st->hold;
    }
    if (tk->auth_len > 0) {
        auth.size = (UINT16)tk->auth_len;
        memcpy(auth.buffer, tk->auth, tk->auth_len);
    }
    rc = TPM2(Esys_TR_SetAuth, st->esys, h, &auth);
    mks_cleanse(&auth, sizeof(auth));
    if (rc != TSS2_RC_SUCCESS) {
        if (tk->persistent == 0)
            tpm2_flush_locked(st, h);
        tk->loaded = 0;
        return tpm2_fail(rc, "Esys_TR_SetAuth");
    }
    if (tk->persistent != 0 || st->hold) {
        tk->handle = h;
        tk->gen = st->gen;
    }
    *out = h;
    return MKS_OK;
}

/* Ends the operation's use of the key: flushed unless held. */
static void key_put_locked(tpm2_state *st, tpm2_key *tk, ESYS_TR h)
{
    if (tk->persistent == 0 && !st->hold)
        tpm2_flush_locked(st, h);
}

void tpm2_key_forget(mks_ctx *ctx, tpm2_key *tk)
{
    tpm2_state *st;

    /* Flush what we loaded, unless it was loaded by the parent of a fork. */
    if (tk->loaded && tpm2_lock(ctx, &st) == MKS_OK) {
        if (tk->gen == st->gen)
            tpm2_flush_locked(st, tk->handle);
        tpm2_unlock(st);
    }
    tk->loaded = 0;
    if (tk->saved != NULL) {
        mks_cleanse(tk->saved, sizeof(*tk->saved));
        Esys_Free(tk->saved);
        tk->saved = NULL;
    }
}

/* ---- one operation --------------------------------------------------------------- */

/* SIGTERM and the like wait while an object is loaded that only this
 * operation would flush. (Other threads of the process may still take one;
 * single-threaded servers, the usual case, are covered.) */
static void hold_signals(sigset_t *old)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Sleeps 1, 2, 4 ... up to 64 ms, plus up to as much again at random so
 * that processes that collided do not collide again. */
static void back_off(unsigned attempt, unsigned *seed)
{
    long ms = 1L << (attempt < 6 ? attempt : 6);
    struct timespec ts;

    ms += rand_r(seed) % (ms + 1);
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

mks_rv tpm2_run(mks_ctx *ctx, tpm2_attempt *attempt, void *arg)
{
    struct timespec t0;
    unsigned tries = 0, seed;
    tpm2_state *st;
    mks_rv rv;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    seed = (unsigned)t0.tv_nsec ^ (unsigned)getpid();
    rv = tpm2_lock(ctx, &st);
    if (rv != MKS_OK)
        return rv;
    for (;;) {
        sigset_t old;

        tpm2_clear_last_rc();
        if (!st->hold)
            hold_signals(&old);
        rv = attempt(st, arg);
        if (!st->hold)
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rv == MKS_OK || !tpm2_rc_is_transient(tpm2_last_rc()) ||
            elapsed_ms(&t0) >= RETRY_BUDGET_MS)
            break;
        /* Unlocked meanwhile: this process's other threads go on. */
        tpm2_unlock(st);
        back_off(tries++, &seed);
        rv = tpm2_lock(ctx, &st);
        if (rv != MKS_OK)
            return rv;
    }
    tpm2_unlock(st);
    return rv;
}

/* One attempt: key (and session) in, op, out again. */
static mks_rv run_once_locked(tpm2_state *st, tpm2_key *tk, TPMA_SESSION attrs, tpm2_key_op *op,
                              void *arg, const char *what)
{
    ESYS_TR primary = ESYS_TR_NONE, key = ESYS_TR_NONE, session = ESYS_TR_PASSWORD;
    mks_rv rv = MKS_OK;
    TSS2_RC rc;

    if (tk->auth_len > 0 || st->sessions_always)
        rv = tpm2_session_get_locked(st, &primary, attrs, &session);
    /* Free the primary's slot before the key takes one, when the key can do
     * without it. */
    if (rv == MKS_OK && !needs_primary(st, tk))
        tpm2_primary_put_locked(st, &primary);
    if (rv == MKS_OK)
        rv = key_get_locked(st, tk, &primary, &key);
    tpm2_primary_put_locked(st, &primary);
    if (rv == MKS_OK) {
        rc = op(st->esys, key, session, arg);
        rv = rc == TSS2_RC_SUCCESS ? MKS_OK : tpm2_fail(rc, what);
    }
    tpm2_session_put_locked(st, &session, rv == MKS_OK);
    if (key != ESYS_TR_NONE)
        key_put_locked(st, tk, key);
    return rv;
}

typedef struct key_job {
    tpm2_key *tk;
    TPMA_SESSION attrs;
    tpm2_key_op *op;
    void *arg;
    const char *what;
} key_job;

static mks_rv key_attempt(tpm2_state *st, void *arg)
{
    key_job *j = arg;
    mks_rv rv = run_once_locked(st, j->tk, j->attrs, j->op, j->arg, j->what);

    /* A held handle that went stale (the TPM was reset, or another client
     * flushed it) is loaded again once. */
    if (rv == MKS_ERR_NOT_FOUND || (tpm2_last_rc() & 0xfff) == TPM2_RC_REFERENCE_H0) {
        j->tk->gen = 0;
        tpm2_clear_last_rc();
        rv = run_once_locked(st, j->tk, j->attrs, j->op, j->arg, j->what);
    }
    return rv;
}

mks_rv tpm2_key_run(mks_ctx *ctx, tpm2_key *tk, TPMA_SESSION attrs, tpm2_key_op *op, void *arg,
                    const char *what)
{
    key_job job = {tk, attrs, op, arg, what};

    return tpm2_run(ctx, key_attempt, &job);
}
