#include "key_arg.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "session.h"

void cli_key_arg_clear(cli_key_arg *ka)
{
    free(ka->uri);
    free(ka->pem);
    if (ka->der != NULL)
        OPENSSL_clear_free(ka->der, ka->der_len);
    memset(ka, 0, sizeof(*ka));
}

/* One PEM block of der under label; *pem malloc'd and NUL-terminated. */
static int pem_block(const char *label, const unsigned char *der, size_t der_len, char **pem,
                     size_t *pem_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long n;
    int ok = 0;

    *pem = NULL;
    if (bio != NULL && PEM_write_bio(bio, label, "", der, (long)der_len) > 0 &&
        (n = BIO_get_mem_data(bio, &data)) > 0 && (*pem = strndup(data, (size_t)n)) != NULL) {
        *pem_len = (size_t)n;
        ok = 1;
    }
    BIO_free(bio);
    return ok;
}

int cli_key_arg_parse(const char *arg, cli_key_arg *out, cli_err *err)
{
    unsigned char *data = NULL, *der = NULL;
    char *name = NULL, *header = NULL;
    size_t len = 0;
    long der_len = 0;
    BIO *bio = NULL;
    mks_tss2_key tk = {0};
    cli_err rerr;
    uint32_t handle;
    int ok = 0;
    mks_rv rv;

    memset(out, 0, sizeof(*out));
    out->arg = arg;
    if (strncasecmp(arg, "pkcs11:", 7) == 0 ||
        strncasecmp(arg, MKS_TPM_URI_SCHEME, strlen(MKS_TPM_URI_SCHEME)) == 0) {
        out->kind = arg[0] == 'p' || arg[0] == 'P' ? CLI_KEY_PKCS11 : CLI_KEY_TPM_HANDLE;
        if (out->kind == CLI_KEY_TPM_HANDLE &&
            (strncmp(arg, MKS_TPM_URI_SCHEME "handle=", strlen(MKS_TPM_URI_SCHEME) + 7) != 0 ||
             mks_tpm_parse_handle(arg + strlen(MKS_TPM_URI_SCHEME) + 7, &handle) != MKS_OK)) {
            cli_err_set(err,
                        "--key %s: a TPM key URI is tpmkey:handle=HANDLE with a persistent "
                        "handle 0x81000000..0x81FFFFFF",
                        arg);
            return 0;
        }
        out->uri = strdup(arg);
        if (out->uri == NULL)
            cli_err_set(err, "out of memory");
        return out->uri != NULL;
    }
    if (!cli_read_file(arg, 1 << 16, &data, &len, &rerr)) {
        cli_err_set(err,
                    "--key '%s' is neither a pkcs11: or tpmkey: URI nor a readable key "
                    "reference or TPM key file (%s)",
                    arg, rerr.msg);
        return 0;
    }
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL || !PEM_read_bio(bio, &name, &header, &der, &der_len)) {
        ERR_clear_error();
        cli_err_set(err,
                    "--key %s: not a PEM file (expected a key reference, '-----BEGIN %s-----', "
                    "or a TPM key, '-----BEGIN %s-----')",
                    arg, MKS_KEYREF_PEM_LABEL, MKS_TSS2_PEM_LABEL);
        goto done;
    }
    if (strcmp(name, MKS_TSS2_PEM_LABEL) == 0) {
        rv = mks_tss2_decode_der(der, (size_t)der_len, &tk);
        if (rv != MKS_OK) {
            cli_err_set(err, "--key %s: a malformed TPM key file: %s", arg,
                        *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
            goto done;
        }
        out->kind = CLI_KEY_TPM_FILE;
        out->needs_password = !tk.empty_auth;
        /* The provider decodes the PEM again: hand it only this block. */
        if (!pem_block(MKS_TSS2_PEM_LABEL, der, (size_t)der_len, &out->pem, &out->pem_len)) {
            cli_err_set(err, "out of memory");
            goto done;
        }
        out->der = der;
        out->der_len = (size_t)der_len;
        der = NULL;
        ok = 1;
        goto done;
    }
    if (strcmp(name, MKS_KEYREF_PEM_LABEL) != 0) {
        if (strstr(name, "PRIVATE KEY") != NULL)
            cli_err_set(err,
                        "--key %s holds a software private key (%s), not a reference to a "
                        "token key or a TPM key",
                        arg, name);
        else
            cli_err_set(err, "--key %s holds a %s, not a key reference (%s) or a TPM key (%s)", arg,
                        name, MKS_KEYREF_PEM_LABEL, MKS_TSS2_PEM_LABEL);
        goto done;
    }
    out->kind = CLI_KEY_PKCS11;
    rv = mks_keyref_decode_der(der, (size_t)der_len, &out->uri);
    if (rv != MKS_OK) {
        out->uri = NULL;
        cli_err_set(err, "--key %s: a malformed key reference: %s", arg,
                    *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
        goto done;
    }
    ok = 1;
done:
    mks_tss2_key_clear(&tk);
    BIO_free(bio);
    OPENSSL_free(name);
    OPENSSL_free(header);
    if (der != NULL)
        OPENSSL_clear_free(der, (size_t)der_len);
    free(data);
    if (!ok)
        cli_key_arg_clear(out);
    return ok;
}

/*
 * One signature over a fixed digest with a TPM key the CLI just opened: it
 * checks, where the error can still name the key file, the password source
 * and the TCTI, what the provider would otherwise only find when it signs
 * (no TPM on the TCTI, a key file made under another TPM, a wrong password).
 */
static int tpm_key_check(cli_session *s, mks_key *key)
{
    unsigned char in[32], sig[512];
    mks_mech_params mp = {MKS_MECH_ECDSA, MKS_HASH_SHA256, MKS_HASH_NONE, 0, NULL, 0};
    size_t siglen = sizeof(sig);
    mks_rv rv;

    memset(in, 0, sizeof(in));
    if (mks_key_get_type(key) == MKS_KEY_RSA)
        mp.mech = MKS_MECH_RSA_PKCS1;
    rv = mks_key_sign(key, &mp, in, sizeof(in), sig, &siglen);
    if (rv != MKS_OK) {
        cli_session_fail_tpm(s, rv, "TPM key %s cannot sign", s->tpm_auth.key_name);
        return 0;
    }
    return 1;
}

int cli_session_open_key(cli_session *s, const cli_key_arg *ka, mks_key **out)
{
    mks_key *key = NULL;
    mks_rv rv;

    *out = NULL;
    if (ka->kind == CLI_KEY_PKCS11) {
        rv = mks_key_open(s->ks, ka->uri, &s->pin_ui, &key);
        if (rv != MKS_OK) {
            if (rv == MKS_ERR_NOT_FOUND)
                cli_fail(s->cmd, "no private key matches %s (see '%s list')", ka->uri, CLI_PROGRAM);
            else
                cli_fail_ks(s->cmd, rv, "cannot open the key %s", ka->uri);
            return 0;
        }
        *out = key;
        return 1;
    }

    s->tpm_auth.key_name = ka->arg;
    if ((ka->kind == CLI_KEY_TPM_HANDLE || ka->needs_password) &&
        !cli_tpm_auth_load(&s->tpm_auth, s->cmd))
        return 0;
    if (ka->kind == CLI_KEY_TPM_HANDLE) {
        rv = mks_tpm_key_open_uri(s->ks, ka->uri, &s->tpm_ui, &key);
    } else {
        rv = mks_tpm_key_open_der(s->ks, ka->der, ka->der_len, &s->tpm_ui, &key);
    }
    if (rv != MKS_OK) {
        if (rv == MKS_ERR_NOT_FOUND)
            cli_session_fail_tpm(s, rv, "no key at %s (see '%s list --tpm')", ka->uri, CLI_PROGRAM);
        else
            cli_session_fail_tpm(s, rv, "cannot open TPM key %s", ka->arg);
        return 0;
    }
    if (!tpm_key_check(s, key)) {
        mks_key_free(key);
        return 0;
    }
    if (ka->kind == CLI_KEY_TPM_FILE) {
        free(s->tpm_pem);
        s->tpm_pem = strndup(ka->pem, ka->pem_len);
        if (s->tpm_pem == NULL) {
            cli_fail(s->cmd, "out of memory");
            mks_key_free(key);
            return 0;
        }
        s->tpm_pem_len = ka->pem_len;
    }
    *out = key;
    return 1;
}
