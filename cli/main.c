/*
 * mtls-keystore: makes keys in hardware tokens, CSRs for them, and stores
 * the certificates a CA issues next to the keys.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "cli.h"

#ifndef MTLSKS_VERSION
#define MTLSKS_VERSION "unknown"
#endif

static const struct command {
    const char *name;
    cli_cmd_fn *fn;
    const char *summary;
} commands[] = {
    {"list", cmd_list, "show the slots, tokens, keys and certificates the module sees"},
    {"enroll", cmd_enroll, "make a key pair in a token, a CSR signed by it and a key reference"},
    {"csr", cmd_csr, "make a new CSR for a key already in a token (renewal)"},
    {"import-cert", cmd_import_cert, "store an issued certificate next to its key in the token"},
    {"show", cmd_show, "show a key pair, its certificate and chain, and a renewal in progress"},
    {"check", cmd_check, "list certificates with the days they have left; exit 1 when one is due"},
    {"renew", cmd_renew, "make the next key pair of a key and its CSR; the current one serves on"},
    {"delete", cmd_delete, "remove a key pair and its certificates from the token"},
    {"revoke", cmd_revoke, "revoke an ACME-enrolled certificate at the CA that issued it"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
    size_t i;

    fprintf(f,
            "Usage: %s [OPTIONS] COMMAND [ARGS]\n"
            "\n"
            "Makes private keys for mutual TLS in a PKCS#11 token or a TPM 2.0 (--tpm),\n"
            "where they stay, and the CSRs and key references that servers and clients use\n"
            "them through.\n"
            "\n"
            "Commands:\n",
            CLI_PROGRAM);
    for (i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n"
               "Options (also accepted after the command):\n"
               "  --config FILE         openssl.cnf to read the mtlsks provider's section from\n"
               "                        (default: $OPENSSL_CONF, else OpenSSL's openssl.cnf)\n"
               "  --module PATH         PKCS#11 module (default: the config's pkcs11-module,\n"
               "                        else p11-kit-proxy: every module p11-kit knows)\n"
               "  --pin-source file:PATH  read the token PIN from the first line of PATH\n"
               "                        (default: the URI's pin-source, the config's\n"
               "                        pkcs11-pin-source, else a prompt on the terminal)\n"
               "  --tcti NAME[:CONF]    the TPM for --tpm keys, e.g. device:/dev/tpmrm0 or\n"
               "                        swtpm:host=127.0.0.1,port=2321 (default: the config's\n"
               "                        tpm2-tcti)\n"
               "  -h, --help            show this help; COMMAND --help shows a command's\n"
               "  --version             show the version\n"
               "\n"
               "Exit status: 0 done, 1 failed, 2 usage error.\n");
}

static const struct command *find_command(const char *name)
{
    size_t i;

    for (i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_GLOBAL_LONGOPTS,
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    cli_globals g = {0};
    const struct command *cmd;
    int c;

    /*
     * The default library context must not load openssl.cnf: it may load
     * mtlsks.so, a second copy of the provider next to the one built in.
     * The CLI reads the provider's section itself (config.c).
     */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);

    opterr = 0;
    while ((c = cli_getopt(argc, argv, "+:h", longopts)) != -1) {
        if (cli_globals_opt(&g, c, optarg))
            continue;
        switch (c) {
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        case 'V':
            printf("%s %s\n", CLI_PROGRAM, MTLSKS_VERSION);
            return CLI_EXIT_OK;
        default:
            return cli_usage_error(NULL, argv, c);
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[optind], "help") == 0) {
        char *help_argv[] = {argv[optind + 1], "--help", NULL};

        if (optind + 1 >= argc) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        cmd = find_command(argv[optind + 1]);
        if (cmd == NULL) {
            cli_fail(NULL, "unknown command '%s'; see '%s --help'", argv[optind + 1], CLI_PROGRAM);
            return CLI_EXIT_USAGE;
        }
        optind = 0;
        return cmd->fn(&g, 2, help_argv);
    }
    cmd = find_command(argv[optind]);
    if (cmd == NULL) {
        cli_fail(NULL, "unknown command '%s'; see '%s --help'", argv[optind], CLI_PROGRAM);
        return CLI_EXIT_USAGE;
    }
    argc -= optind;
    argv += optind;
    optind = 0; /* glibc: start over, with the command name as argv[0] */
    return cmd->fn(&g, argc, argv);
}
