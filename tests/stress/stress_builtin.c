#include "stress_builtin.h"
#include "stress_ossl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/provider.h>

#include "mtlsks_provider.h"

/* Every function of PKCS#11 2.40, so that a call the keystore starts to make
 * one day is counted too (mks_pkcs11_call_count answers 0 for the others). */
static const char *const p11_funcs[STRESS_P11_FUNCS] = {
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
    "C_WrapKey",
    "C_UnwrapKey",
    "C_DeriveKey",
    "C_SeedRandom",
    "C_GenerateRandom",
    "C_GetFunctionStatus",
    "C_CancelFunction",
    "C_WaitForSlotEvent",
};

void stress_builtin_init(stress_builtin *b, const stress_token *t)
{
    mks_config cfg = {.pkcs11_module = stress_softhsm_module(), .pin_source = t->pin_source};

    memset(b, 0, sizeof(*b));
    if (mks_ctx_new(&cfg, &b->ks) != MKS_OK)
        stress_fail("mks_ctx_new: %s", mks_last_error());
    b->libctx = OSSL_LIB_CTX_new();
    if (b->libctx == NULL)
        stress_fail("OSSL_LIB_CTX_new failed");
    mks_provider_builtin_set_keystore(b->ks);
    if (!OSSL_PROVIDER_add_builtin(b->libctx, MKS_PROVIDER_NAME, mks_provider_builtin_init) ||
        (b->deflt = OSSL_PROVIDER_load(b->libctx, "default")) == NULL ||
        (b->mtlsks = OSSL_PROVIDER_load(b->libctx, MKS_PROVIDER_NAME)) == NULL) {
        stress_print_errors("provider");
        stress_fail("cannot load the default and the built-in %s provider", MKS_PROVIDER_NAME);
    }
}

void stress_builtin_free(stress_builtin *b)
{
    OSSL_PROVIDER_unload(b->mtlsks);
    OSSL_PROVIDER_unload(b->deflt);
    OSSL_LIB_CTX_free(b->libctx);
    mks_provider_builtin_set_keystore(NULL);
    mks_ctx_free(b->ks);
    memset(b, 0, sizeof(*b));
}

char *stress_builtin_keygen(stress_builtin *b, const stress_token *t, const char *label)
{
    mks_slot_info *slots = NULL;
    size_t n = 0, i;
    char *token_uri = NULL, *uri;
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", label};
    mks_key *key = NULL;

    if (mks_slots_list(b->ks, &slots, &n) != MKS_OK)
        stress_fail("mks_slots_list: %s", mks_last_error());
    for (i = 0; i < n && token_uri == NULL; i++)
        if (strcmp(slots[i].token_label, t->label) == 0 && slots[i].token_uri != NULL)
            token_uri = strdup(slots[i].token_uri);
    mks_slots_free(slots, n);
    if (token_uri == NULL)
        stress_fail("no token labelled %s", t->label);
    if (mks_keygen(b->ks, token_uri, &kp, NULL, &key) != MKS_OK)
        stress_fail("mks_keygen %s: %s", label, mks_last_error());
    uri = strdup(mks_key_get0_uri(key));
    mks_key_free(key);
    free(token_uri);
    if (uri == NULL)
        stress_fail("out of memory");
    return uri;
}

void stress_p11_calls_snapshot(unsigned long snap[STRESS_P11_FUNCS])
{
    size_t i;

    for (i = 0; i < STRESS_P11_FUNCS; i++)
        snap[i] = mks_pkcs11_call_count(p11_funcs[i]);
}

unsigned long stress_p11_calls_total(void)
{
    unsigned long snap[STRESS_P11_FUNCS], sum = 0;
    size_t i;

    stress_p11_calls_snapshot(snap);
    for (i = 0; i < STRESS_P11_FUNCS; i++)
        sum += snap[i];
    return sum;
}

int stress_p11_calls_diff(const unsigned long before[STRESS_P11_FUNCS], char *buf, size_t buflen)
{
    unsigned long now[STRESS_P11_FUNCS];
    size_t i, used = 0;
    int n = 0;

    stress_p11_calls_snapshot(now);
    if (buflen > 0)
        buf[0] = '\0';
    for (i = 0; i < STRESS_P11_FUNCS; i++) {
        if (now[i] == before[i])
            continue;
        n++;
        if (used < buflen)
            used += (size_t)snprintf(buf + used, buflen - used, "%s%s=+%lu", n > 1 ? " " : "",
                                     p11_funcs[i], now[i] - before[i]);
    }
    return n;
}
