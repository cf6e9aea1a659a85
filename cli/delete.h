/*
 * What the two halves of delete share: cmd_delete.c reads the options and
 * deletes token keys; delete_tpm.c evicts persistent TPM keys.
 */
#ifndef MTLSKS_CLI_DELETE_H
#define MTLSKS_CLI_DELETE_H

#include <stdint.h>

#include "cli.h"

#define CMD "delete"

/* Asks on the terminal ("Delete WHAT? ..."); 1 for yes. */
int delete_confirm(const char *what);

/* delete --tpm --handle H, after the options were checked. */
int delete_tpm(cli_globals *g, uint32_t handle, int yes);

#endif
