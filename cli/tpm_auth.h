/*
 * A TPM key's password (its auth value). It comes from --password-source
 * file:PATH or an echo-off prompt on the terminal, is asked for once per
 * run and remembered, so that the keystore and the provider (which opens the
 * key again to sign) do not ask twice, and is wiped when the run ends.
 */
#ifndef MTLSKS_CLI_TPM_AUTH_H
#define MTLSKS_CLI_TPM_AUTH_H

#include <stddef.h>

#include "pin.h"

typedef struct cli_tpm_auth {
    const char *source;   /* --password-source file:PATH; NULL = prompt */
    const char *key_name; /* names the key in the prompt and in messages */
    int interactive;      /* may prompt (standard input is a terminal) */
    int asked;            /* the keystore or provider asked for it */
    int have;             /* pw/len hold the password */
    char pw[CLI_PIN_MAX];
    size_t len;
} cli_tpm_auth;

/* Sets up a; interactive when standard input is a terminal. */
void cli_tpm_auth_init(cli_tpm_auth *a);

/* Wipes the password and everything else in a. */
void cli_tpm_auth_wipe(cli_tpm_auth *a);

/*
 * mks_pin_cb for TPM keys; arg is the cli_tpm_auth. It gives the password
 * read before (cli_tpm_auth_load), else asks on the terminal once.
 */
int cli_tpm_auth_cb(char *buf, size_t bufsize, size_t *len, const char *what, void *arg);

/* Reads the password from a->source, unless it is there already or there is
 * no source. Prints the error for cmd; returns 1, or 0. */
int cli_tpm_auth_load(cli_tpm_auth *a, const char *cmd);

/*
 * The password for a new TPM key: read from a->source, or asked twice on the
 * terminal with echo off (an empty answer means no password). Without either
 * there is none. Returns 1 (a->have says whether there is a password), or 0
 * after printing why not for cmd.
 */
int cli_tpm_auth_new_password(cli_tpm_auth *a, const char *cmd);

/* Checks a --password-source value (file:PATH only; usage error otherwise). */
int cli_password_source_check(const char *cmd, const char *source);

#endif
