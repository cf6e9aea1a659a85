#include "tpm_auth.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "util.h"

void cli_tpm_auth_init(cli_tpm_auth *a)
{
    memset(a, 0, sizeof(*a));
    a->interactive = isatty(STDIN_FILENO);
}

void cli_tpm_auth_wipe(cli_tpm_auth *a)
{
    OPENSSL_cleanse(a, sizeof(*a));
}

int cli_password_source_check(const char *cmd, const char *source)
{
    /* As for --pin-source: a bare word may be the password typed in the
     * wrong place, and it is not echoed back. */
    if (source != NULL && (strncmp(source, "file:", 5) != 0 || source[5] == '\0')) {
        cli_fail(cmd, "--password-source takes file:PATH, a file whose first line is the TPM "
                      "key's password (no option takes the password itself)");
        return 0;
    }
    return 1;
}

int cli_tpm_auth_load(cli_tpm_auth *a, const char *cmd)
{
    mks_rv rv;

    if (a->have || a->source == NULL)
        return 1;
    rv = mks_pin_from_source(a->source, a->pw, sizeof(a->pw), &a->len);
    if (rv != MKS_OK) {
        cli_fail(cmd, "--password-source %s: cannot read the TPM key's password: %s", a->source,
                 mks_last_error());
        return 0;
    }
    a->have = 1;
    return 1;
}

/* Asks on the terminal (echo off; twice with verify): 1 with a password in
 * a, 0 for an empty answer, -1 when the prompt failed or the answers differ. */
static int tpm_auth_prompt(cli_tpm_auth *a, int verify)
{
    char prompt[160];
    int rc;

    if (verify)
        snprintf(prompt, sizeof(prompt), "New password for TPM key %s (empty: none): ",
                 a->key_name != NULL ? a->key_name : "");
    else
        snprintf(prompt, sizeof(prompt),
                 "Password for TPM key %s: ", a->key_name != NULL ? a->key_name : "");
    rc = EVP_read_pw_string_min(a->pw, 0, (int)sizeof(a->pw) - 1, prompt, verify);
    ERR_clear_error();
    if (rc != 0) {
        OPENSSL_cleanse(a->pw, sizeof(a->pw));
        return -1;
    }
    a->len = strlen(a->pw);
    a->have = a->len > 0;
    return a->have;
}

int cli_tpm_auth_cb(char *buf, size_t bufsize, size_t *len, const char *what, void *arg)
{
    cli_tpm_auth *a = arg;

    (void)what;
    a->asked = 1;
    if (!a->have && (a->source != NULL || !a->interactive || tpm_auth_prompt(a, 0) != 1))
        return 0; /* a source is read before the keystore asks (cli_tpm_auth_load) */
    if (a->len + 1 > bufsize)
        return 0;
    memcpy(buf, a->pw, a->len);
    buf[a->len] = '\0';
    *len = a->len;
    return 1;
}

int cli_tpm_auth_new_password(cli_tpm_auth *a, const char *cmd)
{
    if (a->source != NULL)
        return cli_tpm_auth_load(a, cmd);
    if (a->interactive && tpm_auth_prompt(a, 1) < 0) {
        cli_fail(cmd, "no password for the new TPM key: the two answers differ, or the "
                      "prompt failed");
        return 0;
    }
    return 1;
}
