/*
 * The PIN prompt: the last of the PIN sources (the URI's pin-source and the
 * configured pin source come first, inside the keystore). It asks on the
 * terminal with echo off, only when standard input is a terminal, and
 * remembers the PIN it was given for the token so that the keystore and the
 * provider, which share one keystore context, never ask twice. A PIN the
 * token rejected is never offered again: the keystore fails and the command
 * ends.
 */
#ifndef MTLSKS_CLI_PIN_H
#define MTLSKS_CLI_PIN_H

#include <stddef.h>

#include <openssl/ui.h>

#include <mtlsks/keystore.h>

#define CLI_PIN_MAX 256

typedef struct cli_pin {
    int interactive; /* may prompt (stdin is a terminal) */
    int asked;       /* the callback was called at least once */
    int declined;    /* it was called and had no PIN to give */
    int have;        /* pin/len/token hold a PIN */
    char token[33];
    char pin[CLI_PIN_MAX];
    size_t len;
} cli_pin;

/* Sets up st; interactive when standard input is a terminal. */
void cli_pin_init(cli_pin *st);

/* Wipes the remembered PIN. */
void cli_pin_wipe(cli_pin *st);

/* mks_pin_cb; arg is a cli_pin. */
int cli_pin_cb(char *buf, size_t bufsize, size_t *len, const char *token_label, void *arg);

/*
 * A UI_METHOD that answers OpenSSL's passphrase requests (OSSL_STORE_open_ex
 * and the decoder in the CLI's library context) from the mks_pin_ui given as
 * ui_data: the same callback the keystore asks (cli_pin_cb on a cli_pin, or
 * a TPM key's password), so nothing is asked twice. Free with
 * UI_destroy_method.
 */
UI_METHOD *cli_pin_ui_method_new(void);

#endif
