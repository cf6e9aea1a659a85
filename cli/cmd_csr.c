/*
 * mtls-keystore csr: a new CSR for a key already in a token or a TPM
 * (renewal with the same key), given as a pkcs11: URI, a key reference
 * file, a tpmkey: URI or a TPM key file (TSS2 PRIVATE KEY, ours or
 * tpm2-openssl's).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "csr.h"
#include "parse.h"

#define CMD "csr"

static void csr_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s csr --key URI|FILE --subject DN [--san NAME]... [--usage USAGE]\n"
            "         --out FILE.csr [--password-source file:PATH] [--force]\n"
            "\n"
            "Makes a CSR for a key that is in a token or a TPM already, signed by that key.\n"
            "\n"
            "  --key URI|FILE     a pkcs11: URI or a key reference file (PKCS#11 PROVIDER URI\n"
            "                     PEM, as 'enroll --key-ref' writes); a TPM key: its file\n"
            "                     (TSS2 PRIVATE KEY PEM, from 'enroll --tpm' or tpm2-openssl)\n"
            "                     or tpmkey:handle=0x81... for a persistent one\n"
            "  --subject DN       e.g. \"CN=web.example,O=Example\" (RFC 4514; escape ',' as\n"
            "                     '\\,')\n"
            "  --san NAME         DNS:NAME, IP:ADDRESS, URI:URI or email:ADDRESS; repeatable\n"
            "  --usage USAGE      client, server or both (default): extendedKeyUsage\n"
            "  --out FILE.csr     where the CSR (PEM) goes\n"
            "  --password-source file:PATH\n"
            "                     a TPM key's password: the first line of PATH (default: asked\n"
            "                     on the terminal when the key has one)\n"
            "  --force            overwrite --out if it exists\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM);
}

enum { OPT_KEY = 0x100, OPT_SUBJECT, OPT_SAN, OPT_USAGE, OPT_OUT, OPT_FORCE, OPT_PASSWORD_SOURCE };

typedef struct csr_opts {
    cli_csr_args args;
    const char *key_arg, *out, *password_source;
    int force;
} csr_opts;

/* Reads and checks the options; 0 with *exit_now when the command ends here. */
static int read_options(cli_globals *g, int argc, char **argv, csr_opts *o, int *exit_now)
{
    static const struct option longopts[] = {
        {"key", required_argument, NULL, OPT_KEY},
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"san", required_argument, NULL, OPT_SAN},
        {"usage", required_argument, NULL, OPT_USAGE},
        {"out", required_argument, NULL, OPT_OUT},
        {"force", no_argument, NULL, OPT_FORCE},
        {"password-source", required_argument, NULL, OPT_PASSWORD_SOURCE},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, csr_usage, exit_now)) > 0) {
        switch (c) {
        case OPT_KEY:
            o->key_arg = optarg;
            break;
        case OPT_SUBJECT:
            o->args.subject = optarg;
            break;
        case OPT_SAN:
            if (!cli_csr_args_add_san(&o->args, optarg)) {
                cli_fail(CMD, "out of memory");
                *exit_now = CLI_EXIT_FAIL;
                return 0;
            }
            break;
        case OPT_USAGE:
            o->args.usage = optarg;
            break;
        case OPT_OUT:
            o->out = optarg;
            break;
        case OPT_FORCE:
            o->force = 1;
            break;
        case OPT_PASSWORD_SOURCE:
            o->password_source = optarg;
            break;
        }
    }
    if (c == CLI_OPT_EXIT || !cli_no_operands(CMD, argc, argv))
        return 0;
    if (o->key_arg == NULL || *o->key_arg == '\0') {
        cli_fail(CMD, "--key URI|FILE is required");
        return 0;
    }
    if (o->out == NULL) {
        cli_fail(CMD, "--out FILE.csr is required");
        return 0;
    }
    return cli_globals_check(g, CMD) && cli_password_source_check(CMD, o->password_source);
}

int cmd_csr(cli_globals *g, int argc, char **argv)
{
    csr_opts o = {0};
    cli_csr_req req = {0};
    cli_session s;
    cli_err err;
    cli_key_arg ka = {0};
    char *pem = NULL;
    size_t pem_len = 0;
    mks_key *key = NULL;
    int session = 0, ret;

    if (!read_options(g, argc, argv, &o, &ret))
        goto done;
    ret = CLI_EXIT_USAGE;
    if (!cli_csr_req_from_args(&o.args, &req, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }

    ret = CLI_EXIT_FAIL;
    if (!cli_key_arg_parse(o.key_arg, &ka, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    if (!cli_out_check(o.out, o.force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }

    if (o.password_source != NULL && ka.kind == CLI_KEY_PKCS11) {
        cli_fail(CMD, "--password-source is for TPM keys; a token's PIN comes from --pin-source");
        ret = CLI_EXIT_USAGE;
        goto done;
    }

    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    s.tpm_auth.source = o.password_source;
    if (!cli_session_open_key(&s, &ka, &key))
        goto done;
    if (!cli_session_make_csr(&s, key, &req, &pem, &pem_len))
        goto done;
    if (!cli_write_file_atomic(o.out, pem, pem_len, 0644, o.force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    if (ka.kind == CLI_KEY_TPM_FILE)
        printf("key:     TPM key %s (%s)\n", ka.arg, cli_session_tcti(&s));
    else if (ka.kind == CLI_KEY_TPM_HANDLE)
        printf("key:     %s (%s)\n", mks_key_get0_uri(key), cli_session_tcti(&s));
    else
        printf("key:     %s\n", mks_key_get0_uri(key));
    printf("csr:     %s\n", o.out);
    ret = CLI_EXIT_OK;
done:
    if (key != NULL)
        mks_key_free(key);
    free(pem);
    cli_key_arg_clear(&ka);
    cli_csr_req_clear(&req);
    cli_csr_args_clear(&o.args);
    if (session)
        cli_session_close(&s);
    return ret;
}
