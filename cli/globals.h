/*
 * The global options (--config, --module, --pin-source, --tcti): given
 * before the command or among its own options, checked once for every
 * command.
 */
#ifndef MTLSKS_CLI_GLOBALS_H
#define MTLSKS_CLI_GLOBALS_H

#include <getopt.h>
#include <stdio.h>

typedef struct cli_globals {
    const char *config;     /* --config FILE */
    const char *module;     /* --module PATH */
    const char *pin_source; /* --pin-source file:PATH */
    const char *tcti;       /* --tcti STRING: the TPM's TCTI */
} cli_globals;

/* getopt_long values of the global options inside a command's table. */
enum { CLI_OPT_CONFIG = 0x1000, CLI_OPT_MODULE, CLI_OPT_PIN_SOURCE, CLI_OPT_TCTI };

#define CLI_GLOBAL_LONGOPTS                                                                        \
    {"config", required_argument, NULL, CLI_OPT_CONFIG},                                           \
        {"module", required_argument, NULL, CLI_OPT_MODULE},                                       \
        {"pin-source", required_argument, NULL, CLI_OPT_PIN_SOURCE},                               \
    {                                                                                              \
        "tcti", required_argument, NULL, CLI_OPT_TCTI                                              \
    }

/* The TCTI when neither --tcti nor the config's tpm2-tcti names one. */
#define CLI_DEFAULT_TCTI "device:/dev/tpmrm0"

/* Stores a global option met while parsing a command's options; 1 when c was one. */
int cli_globals_opt(cli_globals *g, int c, const char *arg);

/* What cli_next_opt returns besides one of the command's own options. */
enum { CLI_OPT_DONE = -1, CLI_OPT_EXIT = 0 };

struct option;

/*
 * The next of a command's own options (cli_getopt with ":h" and longopts,
 * which has "help" as 'h'): global options are stored in g and skipped;
 * --help prints usage on stdout and ends the command with *exit_now
 * CLI_EXIT_OK; an unknown option or a missing value is reported and ends it
 * (CLI_EXIT_USAGE). Returns the option's value, CLI_OPT_DONE after the last
 * option (operands start at optind), or CLI_OPT_EXIT when the command ends.
 * *exit_now is CLI_EXIT_USAGE unless --help, so that a caller's own usage
 * errors need not set it.
 */
int cli_next_opt(cli_globals *g, int argc, char **argv, const struct option *longopts,
                 const char *cmd, void (*usage)(FILE *), int *exit_now);

/* 1 when no operand follows the options; else says so for cmd. */
int cli_no_operands(const char *cmd, int argc, char **argv);

/* Checks the global options' values (usage errors); 1 when fine. */
int cli_globals_check(const cli_globals *g, const char *cmd);

/* "  mtls-keystore [global options]" on stderr as the user gave them, shell-quoted:
 * the start of a command line a message suggests. */
void cli_globals_print_prog(const cli_globals *g);

#endif
