/*
 * mtls-keystore enroll: a key pair made in the token, a CSR signed by it
 * through the mtlsks provider, and a key reference file naming it; with
 * --tpm, a key made in the TPM (enroll_tpm.c).
 *
 * Everything that can be checked without the token is checked first, so
 * bad input leaves nothing behind. Once the key pair exists, a failure says
 * so and tells how to finish (csr --key) or remove it.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "acme/acme.h"
#include "cli.h"
#include "csr.h"
#include "enroll.h"
#include "parse.h"

static void enroll_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s enroll (--slot N | --token LABEL) --label NAME\n"
            "         [--key-type TYPE] --subject DN [--san NAME]... [--usage USAGE]\n"
            "         --out FILE.csr --key-ref FILE.pem [--force]\n"
            "       %s enroll --tpm [--label NAME] [--key-type TYPE] [--persist HANDLE]\n"
            "         [--password-source file:PATH] --subject DN [--san NAME]...\n"
            "         [--usage USAGE] --out FILE.csr --key-ref FILE.pem [--force]\n"
            "       %s enroll --acme DIRECTORY_URL ...   (see '%s enroll --acme URL --help')\n"
            "\n"
            "Makes a key pair in the token (the private key is sensitive and never\n"
            "extractable), writes a CSR signed by it and a key reference file that\n"
            "OpenSSL programs load the key through, and prints the key's URI.\n"
            "With --tpm the key is made in the TPM (reached through the TCTI of --tcti or\n"
            "the config's tpm2-tcti), and --key-ref gets its TSS2 PRIVATE KEY file: the key\n"
            "wrapped by the TPM, useless without it, loadable by OpenSSL programs through\n"
            "this provider or tpm2-openssl.\n"
            "\n"
            "  --slot N           the slot with index N in '%s list'\n"
            "  --token LABEL      the token with this label\n"
            "  --label NAME       label of the new key pair; an existing label is refused\n"
            "                     (TPM keys: optional, only printed: a TPM has no labels)\n"
            "  --tpm              make the key in the TPM instead of a token\n"
            "  --persist HANDLE   TPM: also make the key persistent at HANDLE (0x81000000 to\n"
            "                     0x81FFFFFF); it is then tpmkey:handle=HANDLE too\n"
            "  --password-source file:PATH\n"
            "                     TPM: the key's password is the first line of PATH (default:\n"
            "                     asked twice on a terminal, empty for none; none without a\n"
            "                     terminal). A key without a password is exempt from the\n"
            "                     TPM's dictionary-attack lockout.\n"
            "  --key-type TYPE    ec:P-256 (default), ec:P-384, rsa:2048, rsa:3072, rsa:4096\n"
            "                     (TPM: not rsa:4096)\n"
            "  --subject DN       e.g. \"CN=web.example,O=Example\" (RFC 4514; escape ',' as\n"
            "                     '\\,')\n"
            "  --san NAME         DNS:NAME, IP:ADDRESS, URI:URI or email:ADDRESS; repeatable\n"
            "  --usage USAGE      client, server or both (default): extendedKeyUsage\n"
            "  --out FILE.csr     where the CSR (PEM) goes\n"
            "  --key-ref FILE.pem where the key reference (TPM: the key file) goes (mode 0600)\n"
            "  --force            overwrite --out and --key-ref if they exist\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM, CLI_PROGRAM, CLI_PROGRAM, CLI_PROGRAM);
}

enum {
    OPT_SLOT = 0x100,
    OPT_TOKEN,
    OPT_LABEL,
    OPT_KEY_TYPE,
    OPT_SUBJECT,
    OPT_SAN,
    OPT_USAGE,
    OPT_OUT,
    OPT_KEY_REF,
    OPT_FORCE,
    OPT_TPM,
    OPT_PERSIST,
    OPT_PASSWORD_SOURCE
};

void enroll_print_csr_args(const enroll_opts *o)
{
    size_t i;

    fputs(" --subject ", stderr);
    cli_shell_quote(stderr, o->csr.subject);
    for (i = 0; i < o->csr.nsans; i++) {
        fputs(" --san ", stderr);
        cli_shell_quote(stderr, o->csr.sans[i]);
    }
    if (o->csr.usage != NULL) {
        fputs(" --usage ", stderr);
        cli_shell_quote(stderr, o->csr.usage);
    }
    fputs(" --out ", stderr);
    cli_shell_quote(stderr, o->out);
    if (o->force)
        fputs(" --force", stderr);
}

/*
 * After a failure with the key pair in the token: name it, tell how to
 * finish from where we are, and how to remove it instead.
 */
static void explain_leftover_key(const cli_globals *g, const enroll_opts *o, mks_key *key,
                                 int key_ref_written)
{
    const char *token = mks_key_get0_token_label(key);

    cli_fail(CMD, "the key pair '%s' was made in token '%s' and is still there:", o->label, token);
    fprintf(stderr, "  %s\n", mks_key_get0_uri(key));
    fprintf(stderr, "To finish, make its CSR:\n");
    cli_globals_print_prog(g);
    fputs(" csr --key ", stderr);
    cli_shell_quote(stderr, key_ref_written ? o->key_ref : mks_key_get0_uri(key));
    enroll_print_csr_args(o);
    fputc('\n', stderr);
    if (!key_ref_written) {
        fprintf(stderr, "  (its key reference file is not written: once the CA has issued the\n"
                        "  certificate, import it and write the file with\n");
        cli_globals_print_prog(g);
        fputs(" import-cert --label ", stderr);
        cli_shell_quote(stderr, o->label);
        fputs(" --token ", stderr);
        cli_shell_quote(stderr, token);
        fputs(" --key-ref ", stderr);
        cli_shell_quote(stderr, o->key_ref);
        fputs(" CERT.pem\n  or point programs at the URI)\n", stderr);
    }
    fprintf(stderr, "Or remove it:\n");
    cli_globals_print_prog(g);
    fputs(" delete --label ", stderr);
    cli_shell_quote(stderr, o->label);
    fputs(" --token ", stderr);
    cli_shell_quote(stderr, token);
    fputs(" --yes\n", stderr);
}

static int check_options(const cli_globals *g, enroll_opts *o);

static int parse_options(cli_globals *g, int argc, char **argv, enroll_opts *o, int *exit_now)
{
    static const struct option longopts[] = {
        {"slot", required_argument, NULL, OPT_SLOT},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"label", required_argument, NULL, OPT_LABEL},
        {"key-type", required_argument, NULL, OPT_KEY_TYPE},
        {"subject", required_argument, NULL, OPT_SUBJECT},
        {"san", required_argument, NULL, OPT_SAN},
        {"usage", required_argument, NULL, OPT_USAGE},
        {"out", required_argument, NULL, OPT_OUT},
        {"key-ref", required_argument, NULL, OPT_KEY_REF},
        {"force", no_argument, NULL, OPT_FORCE},
        {"tpm", no_argument, NULL, OPT_TPM},
        {"persist", required_argument, NULL, OPT_PERSIST},
        {"password-source", required_argument, NULL, OPT_PASSWORD_SOURCE},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, enroll_usage, exit_now)) > 0) {
        switch (c) {
        case OPT_SLOT:
            if (!cli_parse_uint(optarg, &o->slot)) {
                cli_fail(CMD, "--slot '%s': expected an index from '%s list' (0, 1, ...)", optarg,
                         CLI_PROGRAM);
                return 0;
            }
            break;
        case OPT_TOKEN:
            o->token = optarg;
            break;
        case OPT_LABEL:
            o->label = optarg;
            break;
        case OPT_KEY_TYPE:
            o->key_type = optarg;
            break;
        case OPT_SUBJECT:
            o->csr.subject = optarg;
            break;
        case OPT_SAN:
            if (!cli_csr_args_add_san(&o->csr, optarg)) {
                cli_fail(CMD, "out of memory");
                *exit_now = CLI_EXIT_FAIL;
                return 0;
            }
            break;
        case OPT_USAGE:
            o->csr.usage = optarg;
            break;
        case OPT_OUT:
            o->out = optarg;
            break;
        case OPT_KEY_REF:
            o->key_ref = optarg;
            break;
        case OPT_FORCE:
            o->force = 1;
            break;
        case OPT_TPM:
            o->tpm = 1;
            break;
        case OPT_PERSIST:
            o->persist = optarg;
            break;
        case OPT_PASSWORD_SOURCE:
            o->password_source = optarg;
            break;
        }
    }
    if (c == CLI_OPT_EXIT || !cli_no_operands(CMD, argc, argv))
        return 0;
    return check_options(g, o);
}

/* What the options say together: a token or the TPM, a label, two files. */
static int check_options(const cli_globals *g, enroll_opts *o)
{
    if (o->tpm) {
        if (o->slot >= 0 || o->token != NULL) {
            cli_fail(CMD, "--tpm makes the key in the TPM: --slot and --token name a token");
            return 0;
        }
        if (o->persist != NULL && mks_tpm_parse_handle(o->persist, &o->handle) != MKS_OK) {
            cli_fail(CMD,
                     "--persist '%s': expected a persistent TPM handle, 0x81000000 to "
                     "0x81FFFFFF",
                     o->persist);
            return 0;
        }
        if (!cli_password_source_check(CMD, o->password_source))
            return 0;
    } else {
        if (o->persist != NULL || o->password_source != NULL) {
            cli_fail(CMD, "%s is for TPM keys (--tpm); a token's PIN comes from --pin-source",
                     o->persist != NULL ? "--persist" : "--password-source");
            return 0;
        }
        if ((o->slot >= 0) == (o->token != NULL)) {
            cli_fail(CMD,
                     "give the token with either --slot N or --token LABEL (see '%s list'), or "
                     "--tpm for a TPM key",
                     CLI_PROGRAM);
            return 0;
        }
    }
    if (o->token != NULL && *o->token == '\0') {
        cli_fail(CMD, "--token: empty label");
        return 0;
    }
    if (o->tpm ? o->label != NULL && *o->label == '\0' : o->label == NULL || *o->label == '\0') {
        cli_fail(CMD, "--label NAME is required: the key pair's label in the token");
        return 0;
    }
    if (o->out == NULL || o->key_ref == NULL) {
        cli_fail(CMD, "--out FILE.csr and --key-ref FILE.pem are required");
        return 0;
    }
    if (cli_same_file(o->out, o->key_ref)) {
        cli_fail(CMD, "--out and --key-ref name the same file %s", o->out);
        return 0;
    }
    return cli_globals_check(g, CMD);
}

/* Makes the key pair in the token; prints why not. */
static int make_key(cli_session *s, const char *token_uri, const char *token_label,
                    const enroll_opts *o, const mks_keygen_params *kp, mks_key **key)
{
    mks_rv rv = mks_keygen(s->ks, token_uri, kp, &s->pin_ui, key);

    if (rv == MKS_OK)
        return 1;
    *key = NULL;
    if (rv == MKS_ERR_EXISTS)
        cli_fail(CMD,
                 "a key labelled '%s' exists on token '%s'; choose another --label or use "
                 "'%s csr --key URI' for the existing key",
                 o->label, token_label, CLI_PROGRAM);
    else if (rv == MKS_ERR_NO_SPACE)
        cli_fail_ks(CMD, rv, "token '%s' has no room for a new key pair", token_label);
    else
        cli_fail_ks(CMD, rv, "cannot make a %s key pair '%s' in token '%s'",
                    o->key_type != NULL ? o->key_type : "ec:P-256", o->label, token_label);
    return 0;
}

/* enroll in a token: the key pair, its CSR and its key reference file. */
static int enroll_token(cli_globals *g, const enroll_opts *o, const mks_keygen_params *kp,
                        const cli_csr_req *req)
{
    cli_session s;
    cli_err err;
    char *token_uri = NULL, *csr_pem = NULL, *ref_pem = NULL;
    char token_label[33] = "";
    size_t csr_len = 0, ref_len = 0;
    mks_key *key = NULL;
    int ret = CLI_EXIT_FAIL, ref_written = 0;
    mks_rv rv;

    /* Input is good; now the token. */
    if (!cli_session_open(&s, g, CMD))
        return CLI_EXIT_FAIL;
    if (!cli_session_find_token(&s, o->slot, o->token, 1, &token_uri, token_label) ||
        !make_key(&s, token_uri, token_label, o, kp, &key))
        goto done;

    /* From here on the key pair exists: every failure explains what is left. */
    if (!cli_session_make_csr(&s, key, req, &csr_pem, &csr_len))
        goto done;
    rv = mks_keyref_encode_pem(mks_key_get0_uri(key), &ref_pem, &ref_len);
    if (rv != MKS_OK) {
        cli_fail_ks(CMD, rv, "cannot encode the key reference");
        ref_pem = NULL;
        goto done;
    }
    /* The key reference first: with it, 'csr --key FILE' can redo a lost CSR. */
    if (!cli_write_file_atomic(o->key_ref, ref_pem, ref_len, 0600, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    ref_written = 1;
    if (!cli_write_file_atomic(o->out, csr_pem, csr_len, 0644, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }

    printf("key:     %s\n", mks_key_get0_uri(key));
    printf("csr:     %s\n", o->out);
    printf("key-ref: %s\n", o->key_ref);
    ret = CLI_EXIT_OK;
done:
    if (ret != CLI_EXIT_OK && key != NULL)
        explain_leftover_key(g, o, key, ref_written);
    if (key != NULL)
        mks_key_free(key);
    mks_free(ref_pem);
    free(csr_pem);
    free(token_uri);
    cli_session_close(&s);
    return ret;
}

int cmd_enroll(cli_globals *g, int argc, char **argv)
{
    enroll_opts o = {.slot = -1};
    mks_keygen_params kp = {0};
    cli_csr_req req = {0};
    cli_err err;
    int exit_now, ret = CLI_EXIT_USAGE;

    if (acme_argv_has(argc, argv, "acme"))
        return acme_cmd_enroll(g, argc, argv);
    if (!parse_options(g, argc, argv, &o, &exit_now)) {
        ret = exit_now;
        goto done;
    }
    if (!(o.tpm ? cli_parse_tpm_key_type
                : cli_parse_key_type)(o.key_type != NULL ? o.key_type : "ec:P-256", &kp, &err)) {
        cli_fail(CMD, "--key-type: %s", err.msg);
        goto done;
    }
    kp.label = o.label;
    if (!cli_csr_req_from_args(&o.csr, &req, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    ret = CLI_EXIT_FAIL;
    if (!cli_out_check(o.out, o.force, &err) || !cli_out_check(o.key_ref, o.force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    ret = o.tpm ? enroll_tpm(g, &o, &kp, &req) : enroll_token(g, &o, &kp, &req);
done:
    cli_csr_req_clear(&req);
    cli_csr_args_clear(&o.csr);
    return ret;
}
