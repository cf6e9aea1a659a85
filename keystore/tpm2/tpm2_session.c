/*
 * HMAC sessions for keys with a password.
 *
 * With a password session the password itself crosses the TPM interface
 * with every command: whoever reads the bus (an interposer on the LPC/SPI
 * lines, the hypervisor in front of a vTPM) has it. An HMAC session proves
 * knowledge of the password with an HMAC over the command instead, keyed
 * with the session key and the password. The session is salted with the
 * storage primary: the salt travels encrypted to the primary's public key
 * (ECDH), so the session key, and with it the HMAC key and the AES-128-CFB
 * key that encrypts the first parameter of a command (a new key's password
 * in TPM2_Create) or of a response (the plaintext of TPM2_RSA_Decrypt), is
 * known only to us and the TPM. Nobody who records the traffic can check
 * password guesses against it offline.
 *
 * Behind a resource manager one session per connection is started and
 * reused (continueSession): one command more per process, none per
 * signature. On a bare TPM a session left open by a process that died would
 * take one of the TPM's few session slots for good, so each operation
 * starts its own and the TPM closes it after the command.
 */
#include "tpm2.h"

#include <string.h>

mks_rv tpm2_sessions_parse(const char *value, int *always)
{
    if (value == NULL || strcmp(value, "auto") == 0)
        *always = 0;
    else if (strcmp(value, "always") == 0)
        *always = 1;
    else
        return mks_error(MKS_ERR_ARG,
                         "tpm2-sessions = '%s' is not a choice: auto (HMAC sessions for keys "
                         "with a password) or always",
                         value);
    return MKS_OK;
}

static mks_rv start_locked(tpm2_state *st, ESYS_TR *primary, ESYS_TR *s)
{
    const TPMT_SYM_DEF sym = {
        .algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
    mks_rv rv;
    TSS2_RC rc;

    rv = tpm2_primary_get_locked(st, 1, primary);
    if (rv != MKS_OK)
        return rv;
    rc = TPM2(Esys_StartAuthSession, st->esys, *primary, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
              ESYS_TR_NONE, NULL, TPM2_SE_HMAC, &sym, TPM2_ALG_SHA256, s);
    if (rc != TSS2_RC_SUCCESS) {
        *s = ESYS_TR_NONE;
        return tpm2_fail(rc, "TPM2_StartAuthSession (HMAC session salted with the storage key)");
    }
    return MKS_OK;
}

mks_rv tpm2_session_get_locked(tpm2_state *st, ESYS_TR *primary, TPMA_SESSION attrs, ESYS_TR *s)
{
    TPMA_SESSION want = attrs;
    mks_rv rv;
    TSS2_RC rc;

    *s = ESYS_TR_PASSWORD;
    if (st->hold) {
        if (st->session == ESYS_TR_NONE || st->session_gen != st->gen) {
            st->session = ESYS_TR_NONE;
            rv = start_locked(st, primary, &st->session);
            if (rv != MKS_OK)
                return rv;
            st->session_gen = st->gen;
        }
        *s = st->session;
        want |= TPMA_SESSION_CONTINUESESSION;
    } else {
        rv = start_locked(st, primary, s);
        if (rv != MKS_OK) {
            *s = ESYS_TR_PASSWORD;
            return rv;
        }
    }
    /* Bookkeeping in ESYS, no TPM command (so not counted). */
    rc = Esys_TRSess_SetAttributes(st->esys, *s, want, 0xff);
    if (rc != TSS2_RC_SUCCESS) {
        tpm2_session_put_locked(st, s, 0);
        return tpm2_fail(rc, "Esys_TRSess_SetAttributes");
    }
    return MKS_OK;
}

void tpm2_session_put_locked(tpm2_state *st, ESYS_TR *s, int ok)
{
    TPMA_SESSION attrs = 0;

    if (*s == ESYS_TR_PASSWORD || *s == ESYS_TR_NONE)
        return;
    if (st->hold && *s == st->session) {
        /* A failure may have left it out of step with the TPM (or the TPM
         * dropped it): start a new one next time. */
        if (!ok)
            tpm2_session_forget_locked(st, 1);
    } else if (ok && Esys_TRSess_GetAttributes(st->esys, *s, &attrs) == TSS2_RC_SUCCESS &&
               !(attrs & TPMA_SESSION_CONTINUESESSION)) {
        /* The TPM closed it after the command; ESYS keeps its record. */
        Esys_TR_Close(st->esys, s);
    } else if (TPM2(Esys_FlushContext, st->esys, *s) != TSS2_RC_SUCCESS) {
        /* The TPM keeps a session whose command failed: flushed above,
         * unless it is gone anyway. */
        Esys_TR_Close(st->esys, s);
    }
    *s = ESYS_TR_PASSWORD;
}

void tpm2_session_forget_locked(tpm2_state *st, int touch_tpm)
{
    if (st->session != ESYS_TR_NONE && st->session_gen == st->gen && st->esys != NULL) {
        if (!touch_tpm || TPM2(Esys_FlushContext, st->esys, st->session) != TSS2_RC_SUCCESS)
            Esys_TR_Close(st->esys, &st->session);
    }
    st->session = ESYS_TR_NONE;
}
