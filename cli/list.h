/*
 * The two halves of list: cmd_list.c reads the options and lists the
 * PKCS#11 module's slots; list_tpm.c lists the TPM's persistent keys.
 */
#ifndef MTLSKS_CLI_LIST_H
#define MTLSKS_CLI_LIST_H

#include "cli.h"

#define CMD "list"

/* list --tpm [--json] on the session's TPM; the exit status. */
int list_tpm(cli_session *s, int json);

#endif
