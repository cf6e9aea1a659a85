/*
 * mtls-keystore csr: a new CSR for a key already in a token (renewal with
 * the same key), given as a pkcs11: URI or a key reference file.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "cli.h"
#include "csr.h"
#include "parse.h"

#define CMD "csr"

static void csr_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s csr --key URI|FILE --subject DN [--san NAME]... [--usage USAGE]\n"
            "         --out FILE.csr [--force]\n"
            "\n"
            "Makes a CSR for a key that is in a token already, signed by that key.\n"
            "\n"
            "  --key URI|FILE     a pkcs11: URI or a key reference file (PKCS#11 PROVIDER URI\n"
            "                     PEM, as 'enroll --key-ref' writes)\n"
            "  --subject DN       e.g. \"CN=web.example,O=Example\" (RFC 4514; escape ',' as\n"
            "                     '\\,')\n"
            "  --san NAME         DNS:NAME, IP:ADDRESS, URI:URI or email:ADDRESS; repeatable\n"
            "  --usage USAGE      client, server or both (default): extendedKeyUsage\n"
            "  --out FILE.csr     where the CSR (PEM) goes\n"
            "  --force            overwrite --out if it exists\n"
            "\n"
            "Global options (--config, --module, --pin-source) are accepted here too.\n",
            CLI_PROGRAM);
}

enum { OPT_KEY = 0x100, OPT_SUBJECT, OPT_SAN, OPT_USAGE, OPT_OUT, OPT_FORCE };

/*
 * The URI a --key argument names: the argument itself when it is a pkcs11:
 * URI, else the URI inside the key reference file it names. Returns 1 with
 * *uri (malloc'd), or 0 with err set.
 */
static int key_arg_uri(const char *arg, char **uri, cli_err *err)
{
    unsigned char *data = NULL, *der = NULL;
    char *name = NULL, *header = NULL;
    size_t len = 0;
    long der_len = 0;
    BIO *bio = NULL;
    cli_err rerr;
    int ok = 0;
    mks_rv rv;

    *uri = NULL;
    if (strncasecmp(arg, "pkcs11:", 7) == 0) {
        *uri = strdup(arg);
        if (*uri == NULL)
            cli_err_set(err, "out of memory");
        return *uri != NULL;
    }
    if (!cli_read_file(arg, 1 << 16, &data, &len, &rerr)) {
        cli_err_set(err,
                    "--key '%s' is neither a pkcs11: URI nor a readable key reference "
                    "file (%s)",
                    arg, rerr.msg);
        return 0;
    }
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio == NULL || !PEM_read_bio(bio, &name, &header, &der, &der_len)) {
        ERR_clear_error();
        cli_err_set(err,
                    "--key %s: not a PEM file (expected a key reference, '-----BEGIN %s-----')",
                    arg, MKS_KEYREF_PEM_LABEL);
        goto done;
    }
    if (strcmp(name, MKS_KEYREF_PEM_LABEL) != 0) {
        if (strcmp(name, "TSS2 PRIVATE KEY") == 0)
            cli_err_set(err, "--key %s: TPM 2.0 key files are not supported by this version", arg);
        else if (strstr(name, "PRIVATE KEY") != NULL)
            cli_err_set(err,
                        "--key %s holds a software private key (%s), not a reference to a "
                        "token key",
                        arg, name);
        else
            cli_err_set(err, "--key %s holds a %s, not a key reference (%s)", arg, name,
                        MKS_KEYREF_PEM_LABEL);
        goto done;
    }
    rv = mks_keyref_decode_der(der, (size_t)der_len, uri);
    if (rv != MKS_OK) {
        *uri = NULL;
        cli_err_set(err, "--key %s: a malformed key reference: %s", arg,
                    *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
        goto done;
    }
    ok = 1;
done:
    BIO_free(bio);
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    free(data);
    return ok;
}

int cmd_csr(cli_globals *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"key", required_argument, NULL, OPT_KEY},
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"san", required_argument, NULL, OPT_SAN},
        {"usage", required_argument, NULL, OPT_USAGE},
        {"out", required_argument, NULL, OPT_OUT},
        {"force", no_argument, NULL, OPT_FORCE},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    cli_csr_args args = {0};
    cli_csr_req req = {0};
    cli_session s;
    cli_err err;
    const char *key_arg = NULL, *out = NULL;
    char *uri = NULL, *pem = NULL;
    size_t pem_len = 0;
    mks_key *key = NULL;
    int c, force = 0, session = 0, ret = CLI_EXIT_USAGE;
    mks_rv rv;

    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        switch (c) {
        case OPT_KEY:
            key_arg = optarg;
            break;
        case OPT_SUBJECT:
            args.subject = optarg;
            break;
        case OPT_SAN:
            if (!cli_csr_args_add_san(&args, optarg)) {
                cli_fail(CMD, "out of memory");
                ret = CLI_EXIT_FAIL;
                goto done;
            }
            break;
        case OPT_USAGE:
            args.usage = optarg;
            break;
        case OPT_OUT:
            out = optarg;
            break;
        case OPT_FORCE:
            force = 1;
            break;
        case 'h':
            csr_usage(stdout);
            ret = CLI_EXIT_OK;
            goto done;
        default:
            ret = cli_usage_error(CMD, argv, c);
            goto done;
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
        goto done;
    }
    if (key_arg == NULL || *key_arg == '\0') {
        cli_fail(CMD, "--key URI|FILE is required");
        goto done;
    }
    if (out == NULL) {
        cli_fail(CMD, "--out FILE.csr is required");
        goto done;
    }
    if (!cli_globals_check(g, CMD))
        goto done;
    if (!cli_csr_req_from_args(&args, &req, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }

    ret = CLI_EXIT_FAIL;
    if (!key_arg_uri(key_arg, &uri, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    if (!cli_out_check(out, force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }

    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    rv = mks_key_open(s.ks, uri, &s.pin_ui, &key);
    if (rv != MKS_OK) {
        key = NULL;
        if (rv == MKS_ERR_NOT_FOUND)
            cli_fail(CMD, "no private key matches %s (see '%s list')", uri, CLI_PROGRAM);
        else
            cli_fail_ks(CMD, rv, "cannot open the key %s", uri);
        goto done;
    }
    if (!cli_session_make_csr(&s, key, &req, &pem, &pem_len))
        goto done;
    if (!cli_write_file_atomic(out, pem, pem_len, 0644, force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    printf("key:     %s\n", mks_key_get0_uri(key));
    printf("csr:     %s\n", out);
    ret = CLI_EXIT_OK;
done:
    if (key != NULL)
        mks_key_free(key);
    free(pem);
    free(uri);
    cli_csr_req_clear(&req);
    cli_csr_args_clear(&args);
    if (session)
        cli_session_close(&s);
    return ret;
}
