/*
 * The TPM commands that make a key: TPM2_Create under the storage primary
 * and, for a persistent key, TPM2_Load and TPM2_EvictControl.
 *
 * A new key's password is TPM2_Create's first parameter: under an HMAC
 * session with the decrypt attribute it crosses the interface encrypted.
 * Load and EvictControl carry only the empty authorisations of the storage
 * primary and the owner hierarchy, so they keep the empty password session
 * (an HMAC session when sessions are always on).
 */
#include "tpm2.h"

/* One attempt; everything it loaded is flushed again. */
static mks_rv create_once_locked(tpm2_state *st, const TPM2B_SENSITIVE_CREATE *sens,
                                 const TPM2B_PUBLIC *tmpl, uint32_t persist, TPM2B_PRIVATE **priv,
                                 TPM2B_PUBLIC **pub)
{
    const TPM2B_DATA outside = {0};
    const TPML_PCR_SELECTION pcrs = {0};
    ESYS_TR primary = ESYS_TR_NONE, session = ESYS_TR_PASSWORD, loaded = ESYS_TR_NONE;
    ESYS_TR persisted = ESYS_TR_NONE;
    mks_rv rv = MKS_OK;
    TSS2_RC rc;

    if (sens->sensitive.userAuth.size > 0 || st->sessions_always)
        rv = tpm2_session_get_locked(st, &primary, TPMA_SESSION_DECRYPT, &session);
    if (rv == MKS_OK)
        rv = tpm2_primary_get_locked(st, 0, &primary);
    if (rv != MKS_OK)
        goto done;
    rc = TPM2(Esys_Create, st->esys, primary, session, ESYS_TR_NONE, ESYS_TR_NONE, sens, tmpl,
              &outside, &pcrs, priv, pub, NULL, NULL, NULL);
    tpm2_session_put_locked(st, &session, rc == TSS2_RC_SUCCESS);
    if (rc != TSS2_RC_SUCCESS) {
        rv = tpm2_fail(rc, "TPM2_Create");
        goto done;
    }
    if (persist != 0) {
        rc = TPM2(Esys_Load, st->esys, primary, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, *priv,
                  *pub, &loaded);
        if (rc == TSS2_RC_SUCCESS)
            rc = TPM2(Esys_EvictControl, st->esys, ESYS_TR_RH_OWNER, loaded, ESYS_TR_PASSWORD,
                      ESYS_TR_NONE, ESYS_TR_NONE, persist, &persisted);
        if (rc != TSS2_RC_SUCCESS) {
            rv = tpm2_fail(rc, "TPM2_EvictControl");
            if (rv == MKS_ERR_EXISTS)
                mks_error_prefix("TPM handle 0x%08x is taken", persist);
            goto done;
        }
        Esys_TR_Close(st->esys, &persisted);
    }
done:
    tpm2_session_put_locked(st, &session, 0);
    tpm2_flush_locked(st, loaded);
    tpm2_primary_put_locked(st, &primary);
    if (rv != MKS_OK) {
        Esys_Free(*priv);
        Esys_Free(*pub);
        *priv = NULL;
        *pub = NULL;
    }
    return rv;
}

typedef struct create_job {
    const TPM2B_SENSITIVE_CREATE *sens;
    const TPM2B_PUBLIC *tmpl;
    uint32_t persist;
    TPM2B_PRIVATE **priv;
    TPM2B_PUBLIC **pub;
} create_job;

static mks_rv create_attempt(tpm2_state *st, void *arg)
{
    create_job *j = arg;

    return create_once_locked(st, j->sens, j->tmpl, j->persist, j->priv, j->pub);
}

mks_rv tpm2_create_key(mks_ctx *ctx, const TPM2B_SENSITIVE_CREATE *sens, const TPM2B_PUBLIC *tmpl,
                       uint32_t persist, TPM2B_PRIVATE **priv, TPM2B_PUBLIC **pub)
{
    create_job job = {sens, tmpl, persist, priv, pub};

    *priv = NULL;
    *pub = NULL;
    return tpm2_run(ctx, create_attempt, &job);
}
