/*
 * ENCODER: writing a hardware key's private half out, refused with a reason.
 *
 * `openssl pkey -in KEY -out FILE` and PEM_write_PrivateKey() ask for the
 * private key as PrivateKeyInfo (or EncryptedPrivateKeyInfo, or the
 * type-specific form) in PEM or DER. Without an encoder of ours, OpenSSL
 * offers the key to the default provider's encoders, the export they need is
 * refused, and the program fails without a word. These encoders come first
 * for our keys (OpenSSL prefers the key's own provider) and fail with what
 * the user can do instead. Public-key encodings (the public half of a CSR,
 * -pubout) never reach them: they claim private-key selections only.
 */
#include "prov.h"

#include <string.h>

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>

static OSSL_FUNC_encoder_newctx_fn mks_encoder_newctx;
static OSSL_FUNC_encoder_freectx_fn mks_encoder_freectx;
static OSSL_FUNC_encoder_does_selection_fn mks_encoder_does_selection;
static OSSL_FUNC_encoder_encode_fn mks_private_encoder_encode;

static void *mks_encoder_newctx(void *provctx)
{
    return provctx;
}

static void mks_encoder_freectx(void *ctx)
{
}

static int mks_encoder_does_selection(void *provctx, int selection)
{
    return (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0;
}

static int mks_private_encoder_encode(void *ctx, OSSL_CORE_BIO *out, const void *obj,
                                      const OSSL_PARAM obj_abstract[], int selection,
                                      OSSL_PASSPHRASE_CALLBACK *cb, void *cbarg)
{
    mks_prov *prov = ctx;
    const mks_keyobj *k = obj;
    const char *name;

    if (k == NULL || !mks_keyobj_usable(k))
        return 0;
    name = mks_keyobj_name(k);
    if (!mks_keyobj_has_private(k))
        mks_raise(prov, MKS_R_NO_PRIVATE_KEY, "%s has no private key to write out", name);
    else if (strncmp(name, "pkcs11:", 7) == 0)
        mks_raise(prov, MKS_R_PRIVATE_KEY_EXPORT,
                  "the private key %s stays in its token and cannot be written out; programs "
                  "use it by this URI or by a key reference file (mtls-keystore enroll or "
                  "import-cert --key-ref FILE)",
                  name);
    else
        mks_raise(prov, MKS_R_PRIVATE_KEY_EXPORT,
                  "the private key%s%s stays in the TPM and cannot be written out; programs "
                  "use it by its TSS2 PRIVATE KEY file (what mtls-keystore enroll --tpm "
                  "--key-ref wrote; useless without this TPM) or by its tpmkey:handle= name "
                  "when it is persistent",
                  strncmp(name, "tpmkey:", 7) == 0 ? " " : "",
                  strncmp(name, "tpmkey:", 7) == 0 ? name : "");
    return 0;
}

const OSSL_DISPATCH mks_private_key_encoder_functions[] = {
    {OSSL_FUNC_ENCODER_NEWCTX, (void (*)(void))mks_encoder_newctx},
    {OSSL_FUNC_ENCODER_FREECTX, (void (*)(void))mks_encoder_freectx},
    {OSSL_FUNC_ENCODER_DOES_SELECTION, (void (*)(void))mks_encoder_does_selection},
    {OSSL_FUNC_ENCODER_ENCODE, (void (*)(void))mks_private_encoder_encode},
    {0, NULL},
};
