/*
 * The subcommands of mtls-keystore. Each parses its own options with
 * getopt_long (argv[0] is the command name) and returns an exit code:
 * CLI_EXIT_OK, CLI_EXIT_FAIL or CLI_EXIT_USAGE.
 */
#ifndef MTLSKS_CLI_CLI_H
#define MTLSKS_CLI_CLI_H

#include "session.h"

typedef int cli_cmd_fn(cli_globals *g, int argc, char **argv);

cli_cmd_fn cmd_list;
cli_cmd_fn cmd_enroll;
cli_cmd_fn cmd_csr;
cli_cmd_fn cmd_import_cert;
cli_cmd_fn cmd_show;
cli_cmd_fn cmd_check;
cli_cmd_fn cmd_renew;
cli_cmd_fn cmd_delete;
cli_cmd_fn cmd_revoke;

#endif
