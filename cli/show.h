/*
 * What the two halves of show share: cmd_show.c reads the options and shows
 * token keys; show_tpm.c shows TPM keys, with a certificate printed the way
 * a token's is.
 */
#ifndef MTLSKS_CLI_SHOW_H
#define MTLSKS_CLI_SHOW_H

#include <time.h>

#include "cli.h"

#define CMD "show"

/* A certificate object as text: every fact, or (brief) subject and expiry. */
void show_cert_text(const mks_object *o, time_t now, int brief);

/* show --tpm, after the options were checked. */
int show_tpm(cli_globals *g, const char *key_arg, const char *cert_path, int json);

#endif
