#include "session.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/store.h>

#include "mtlsks_provider.h"

/* The library context that signs: default provider for hashing and verifying,
 * mtlsks for the token key, both built in, nothing read from openssl.cnf. */
static int session_provider(cli_session *s)
{
    if (s->libctx != NULL)
        return 1;
    s->libctx = OSSL_LIB_CTX_new();
    if (s->libctx == NULL) {
        cli_fail_ossl(s->cmd, "cannot create an OpenSSL library context");
        return 0;
    }
    mks_provider_builtin_set_keystore(s->ks);
    if (!OSSL_PROVIDER_add_builtin(s->libctx, MKS_PROVIDER_NAME, mks_provider_builtin_init)) {
        cli_fail_ossl(s->cmd, "cannot register the %s provider", MKS_PROVIDER_NAME);
        return 0;
    }
    s->prov_default = OSSL_PROVIDER_load(s->libctx, "default");
    if (s->prov_default == NULL) {
        cli_fail_ossl(s->cmd, "cannot load OpenSSL's default provider");
        return 0;
    }
    s->prov_mks = OSSL_PROVIDER_load(s->libctx, MKS_PROVIDER_NAME);
    if (s->prov_mks == NULL) {
        cli_fail_ossl(s->cmd, "cannot load the %s provider", MKS_PROVIDER_NAME);
        return 0;
    }
    s->ui_method = cli_pin_ui_method_new();
    if (s->ui_method == NULL) {
        cli_fail_ossl(s->cmd, "cannot set up the PIN prompt");
        return 0;
    }
    return 1;
}

int cli_session_load_pkey(cli_session *s, const char *uri, EVP_PKEY **out)
{
    OSSL_STORE_CTX *sc = NULL;
    EVP_PKEY *pkey = NULL;
    int n = 0, guard, tpm, ok = 0;

    *out = NULL;
    if (!session_provider(s))
        return 0;
    ERR_clear_error();
    tpm = strncasecmp(uri, MKS_TPM_URI_SCHEME, strlen(MKS_TPM_URI_SCHEME)) == 0;
    sc = OSSL_STORE_open_ex(uri, s->libctx, "?provider=" MKS_PROVIDER_NAME, s->ui_method,
                            tpm ? &s->tpm_ui : &s->pin_ui, NULL, NULL, NULL);
    if (sc == NULL) {
        cli_fail_ossl(s->cmd, "the %s provider cannot open %s", MKS_PROVIDER_NAME, uri);
        goto done;
    }
    if (!OSSL_STORE_expect(sc, OSSL_STORE_INFO_PKEY)) {
        cli_fail_ossl(s->cmd, "cannot ask the store for private keys only");
        goto done;
    }
    for (guard = 0; guard < 1000 && !OSSL_STORE_eof(sc); guard++) {
        OSSL_STORE_INFO *info = OSSL_STORE_load(sc);

        if (info == NULL) {
            if (OSSL_STORE_error(sc)) {
                cli_fail_ossl(s->cmd, "the %s provider cannot load %s", MKS_PROVIDER_NAME, uri);
                goto done;
            }
            continue;
        }
        if (OSSL_STORE_INFO_get_type(info) == OSSL_STORE_INFO_PKEY) {
            n++;
            if (pkey == NULL)
                pkey = OSSL_STORE_INFO_get1_PKEY(info);
        }
        OSSL_STORE_INFO_free(info);
    }
    if (n == 0 || pkey == NULL) {
        cli_fail_ossl(s->cmd, "the %s provider found no private key for %s", MKS_PROVIDER_NAME,
                      uri);
        goto done;
    }
    if (n > 1) {
        cli_fail(s->cmd, "the %s provider found %d private keys for %s; expected one",
                 MKS_PROVIDER_NAME, n, uri);
        goto done;
    }
    *out = pkey;
    pkey = NULL;
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    OSSL_STORE_close(sc);
    return ok;
}

int cli_session_decode_tpm_pkey(cli_session *s, const char *pem, size_t pem_len, EVP_PKEY **out)
{
    OSSL_DECODER_CTX *dctx = NULL;
    EVP_PKEY *pkey = NULL;
    const unsigned char *p = (const unsigned char *)pem;
    size_t len = pem_len;
    int ok = 0;

    *out = NULL;
    if (!session_provider(s))
        return 0;
    ERR_clear_error();
    /* OSSL_STORE has no scheme for a file's content; the provider's decoder
     * takes the TSS2 PEM (as it does for any program reading the file). */
    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, OSSL_KEYMGMT_SELECT_PRIVATE_KEY,
                                         s->libctx, "?provider=" MKS_PROVIDER_NAME);
    if (dctx == NULL || !OSSL_DECODER_CTX_set_passphrase_ui(dctx, s->ui_method, &s->tpm_ui)) {
        cli_fail_ossl(s->cmd, "cannot set up a decoder for TPM key %s", s->tpm_auth.key_name);
        goto done;
    }
    if (!OSSL_DECODER_from_data(dctx, &p, &len) || pkey == NULL) {
        cli_fail_ossl(s->cmd, "the %s provider cannot load TPM key %s", MKS_PROVIDER_NAME,
                      s->tpm_auth.key_name);
        goto done;
    }
    *out = pkey;
    pkey = NULL;
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    OSSL_DECODER_CTX_free(dctx);
    return ok;
}

/* The name of a key in messages: its label and token, or the TPM key's name. */
static void key_display_name(const cli_session *s, mks_key *key, char *buf, size_t size)
{
    const char *uri = mks_key_get0_uri(key);

    if (mks_key_backend(key) == MKS_BACKEND_TPM || uri == NULL)
        snprintf(buf, size, "TPM key %s",
                 s->tpm_auth.key_name != NULL ? s->tpm_auth.key_name
                 : uri != NULL                ? uri
                                              : "");
    else
        snprintf(buf, size, "key '%s' (token '%s')", mks_key_get0_label(key),
                 mks_key_get0_token_label(key));
}

int cli_session_make_csr(cli_session *s, mks_key *key, const cli_csr_req *req, char **pem,
                         size_t *pem_len)
{
    EVP_PKEY *pkey = NULL;
    const unsigned char *spki;
    size_t spki_len = 0;
    char name[300];
    cli_err err;
    int ok = 0;

    *pem = NULL;
    *pem_len = 0;
    key_display_name(s, key, name, sizeof(name));
    spki = mks_key_get0_spki(key, &spki_len);
    if (spki == NULL || spki_len == 0) {
        cli_fail(s->cmd, "the keystore knows no public key for %s", name);
        return 0;
    }
    if (mks_key_get0_uri(key) != NULL) {
        if (!cli_session_load_pkey(s, mks_key_get0_uri(key), &pkey))
            return 0;
    } else if (s->tpm_pem != NULL) {
        if (!cli_session_decode_tpm_pkey(s, s->tpm_pem, s->tpm_pem_len, &pkey))
            return 0;
    } else {
        cli_fail(s->cmd, "%s has no URI and no key file the provider could load it from", name);
        return 0;
    }
    if (!cli_csr_make(s->libctx, req, spki, spki_len, pkey,
                      cli_csr_digest(mks_key_get_type(key), mks_key_get0_curve(key)), pem, pem_len,
                      &err)) {
        cli_fail(s->cmd, "CSR for %s: %s", name, err.msg);
        goto done;
    }
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    return ok;
}
