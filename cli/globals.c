#include "globals.h"

#include <stdio.h>
#include <string.h>

#include "util.h"

int cli_globals_opt(cli_globals *g, int c, const char *arg)
{
    switch (c) {
    case CLI_OPT_CONFIG:
        g->config = arg;
        return 1;
    case CLI_OPT_MODULE:
        g->module = arg;
        return 1;
    case CLI_OPT_PIN_SOURCE:
        g->pin_source = arg;
        return 1;
    case CLI_OPT_TCTI:
        g->tcti = arg;
        return 1;
    default:
        return 0;
    }
}

int cli_next_opt(cli_globals *g, int argc, char **argv, const struct option *longopts,
                 const char *cmd, void (*usage)(FILE *), int *exit_now)
{
    int c;

    *exit_now = CLI_EXIT_USAGE;
    opterr = 0;
    do
        c = cli_getopt(argc, argv, ":h", longopts);
    while (c != -1 && cli_globals_opt(g, c, optarg));
    switch (c) {
    case -1:
        return CLI_OPT_DONE;
    case 'h':
        usage(stdout);
        *exit_now = CLI_EXIT_OK;
        return CLI_OPT_EXIT;
    case '?':
    case ':':
    case CLI_OPT_ABBREVIATED:
        *exit_now = cli_usage_error(cmd, argv, c);
        return CLI_OPT_EXIT;
    default:
        return c;
    }
}

int cli_no_operands(const char *cmd, int argc, char **argv)
{
    if (optind >= argc)
        return 1;
    cli_fail(cmd, "unexpected argument '%s'", argv[optind]);
    return 0;
}

int cli_globals_check(const cli_globals *g, const char *cmd)
{
    if (g->config != NULL && *g->config == '\0') {
        cli_fail(cmd, "--config: empty file name");
        return 0;
    }
    if (g->module != NULL && *g->module == '\0') {
        cli_fail(cmd, "--module: empty path");
        return 0;
    }
    /* Only file:PATH: a bare word may be a PIN typed in the wrong place, and
     * it is not echoed back. */
    if (g->pin_source != NULL &&
        (strncmp(g->pin_source, "file:", 5) != 0 || g->pin_source[5] == '\0')) {
        cli_fail(cmd, "--pin-source takes file:PATH, a file whose first line is the PIN "
                      "(no option takes the PIN itself)");
        return 0;
    }
    if (g->tcti != NULL && *g->tcti == '\0') {
        cli_fail(cmd, "--tcti: empty TCTI (e.g. %s or swtpm:host=127.0.0.1,port=2321)",
                 CLI_DEFAULT_TCTI);
        return 0;
    }
    return 1;
}

void cli_globals_print_prog(const cli_globals *g)
{
    fputs("  " CLI_PROGRAM, stderr);
    if (g->config != NULL) {
        fputs(" --config ", stderr);
        cli_shell_quote(stderr, g->config);
    }
    if (g->module != NULL) {
        fputs(" --module ", stderr);
        cli_shell_quote(stderr, g->module);
    }
    if (g->pin_source != NULL) {
        fputs(" --pin-source ", stderr);
        cli_shell_quote(stderr, g->pin_source);
    }
    if (g->tcti != NULL) {
        fputs(" --tcti ", stderr);
        cli_shell_quote(stderr, g->tcti);
    }
}
