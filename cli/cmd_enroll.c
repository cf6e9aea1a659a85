/*
 * mtls-keystore enroll: a key pair made in the token, a CSR signed by it
 * through the mtlsks provider, and a key reference file naming it; with
 * --tpm, a key made in the TPM, its TSS2 PRIVATE KEY file and a CSR signed
 * in the TPM through the provider's decoder for that file.
 *
 * Everything that can be checked without the token is checked first, so
 * bad input leaves nothing behind. Once the key pair exists, a failure says
 * so and tells how to finish (csr --key) or remove it.
 *
 * A TPM keeps no labels: for TPM keys --label is optional and only names the
 * key in what enroll prints; the key file (or the tpmkey: URI of a
 * persistent key) is the key's name.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "acme/acme.h"
#include "cli.h"
#include "csr.h"
#include "parse.h"

#define CMD "enroll"

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

typedef struct enroll_opts {
    int slot;          /* -1 = not given */
    const char *token; /* NULL = not given */
    const char *label;
    const char *key_type;
    cli_csr_args csr;
    const char *out;
    const char *key_ref;
    int force;
    int tpm;
    const char *persist; /* --persist HANDLE as given */
    uint32_t handle;     /* parsed; 0 = not persistent */
    const char *password_source;
} enroll_opts;

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

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;

    if (strcmp(a, b) == 0)
        return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* "mtls-keystore [global options] " as the user ran it, for suggested commands. */
static void print_prog(const cli_globals *g)
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

/* " --subject ... --out FILE [--force]" of the csr command that finishes an enroll. */
static void print_csr_args(const enroll_opts *o)
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
    print_prog(g);
    fputs(" csr --key ", stderr);
    cli_shell_quote(stderr, key_ref_written ? o->key_ref : mks_key_get0_uri(key));
    print_csr_args(o);
    fputc('\n', stderr);
    if (!key_ref_written) {
        fprintf(stderr, "  (its key reference file is not written: once the CA has issued the\n"
                        "  certificate, import it and write the file with\n");
        print_prog(g);
        fputs(" import-cert --label ", stderr);
        cli_shell_quote(stderr, o->label);
        fputs(" --token ", stderr);
        cli_shell_quote(stderr, token);
        fputs(" --key-ref ", stderr);
        cli_shell_quote(stderr, o->key_ref);
        fputs(" CERT.pem\n  or point programs at the URI)\n", stderr);
    }
    fprintf(stderr, "Or remove it:\n");
    print_prog(g);
    fputs(" delete --label ", stderr);
    cli_shell_quote(stderr, o->label);
    fputs(" --token ", stderr);
    cli_shell_quote(stderr, token);
    fputs(" --yes\n", stderr);
}

/*
 * The same for a TPM key: a key that is not persistent exists only in its
 * key file, so without the file nothing is left; a persistent one stays at
 * its handle until evicted.
 */
static void explain_leftover_tpm_key(const cli_session *s, const cli_globals *g,
                                     const enroll_opts *o, int key_ref_written)
{
    if (!key_ref_written && o->handle == 0) {
        cli_fail(CMD, "nothing is left behind: the TPM key existed only in the key file, which "
                      "was not written; run enroll again");
        return;
    }
    if (o->handle != 0)
        cli_fail(CMD, "the TPM key is persistent at tpmkey:handle=0x%08x and is still there",
                 o->handle);
    else
        cli_fail(CMD, "the TPM key is in %s", o->key_ref);
    fprintf(stderr, "To finish, make its CSR:\n");
    print_prog(g);
    fputs(" csr --key ", stderr);
    if (key_ref_written) {
        cli_shell_quote(stderr, o->key_ref);
    } else {
        fprintf(stderr, "tpmkey:handle=0x%08x", o->handle);
    }
    if (o->password_source != NULL) {
        fputs(" --password-source ", stderr);
        cli_shell_quote(stderr, o->password_source);
    }
    print_csr_args(o);
    fputc('\n', stderr);
    if (o->handle != 0) {
        fprintf(stderr, "Or remove it:\n  tpm2_evictcontrol -C o -c 0x%08x -T ", o->handle);
        cli_shell_quote(stderr, cli_session_tcti(s));
        fputc('\n', stderr);
    }
}

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

    *exit_now = -1;
    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
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
        case 'h':
            enroll_usage(stdout);
            *exit_now = CLI_EXIT_OK;
            return 0;
        default:
            *exit_now = cli_usage_error(CMD, argv, c);
            return 0;
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
        return 0;
    }
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
    if (same_file(o->out, o->key_ref)) {
        cli_fail(CMD, "--out and --key-ref name the same file %s", o->out);
        return 0;
    }
    return cli_globals_check(g, CMD);
}

/* The key type, label and password of a new TPM key, as enroll prints them. */
static void print_tpm_key(const cli_session *s, const enroll_opts *o)
{
    printf("key:     ");
    if (o->handle != 0)
        printf("tpmkey:handle=0x%08x (persistent; also in %s)", o->handle, o->key_ref);
    else
        printf("TPM key in %s", o->key_ref);
    printf(", %s", o->key_type != NULL ? o->key_type : "ec:P-256");
    if (o->label != NULL)
        printf(", label '%s' (printed only: a TPM stores no labels)", o->label);
    printf("\n");
    printf("tcti:    %s\n", cli_session_tcti(s));
    if (s->tpm_auth.have)
        printf("auth:    password (%s%s)\n",
               o->password_source != NULL ? "from " : "typed at the prompt",
               o->password_source != NULL ? o->password_source : "");
    else
        printf("auth:    none (the key is exempt from dictionary-attack lockout)\n");
}

/* enroll --tpm, after the options were checked. */
static int enroll_tpm(cli_globals *g, enroll_opts *o, const mks_keygen_params *kp,
                      const cli_csr_req *req)
{
    cli_session s;
    cli_err err;
    char *csr_pem = NULL, *key_pem = NULL;
    size_t csr_len = 0, key_len = 0;
    mks_key *key = NULL;
    int ret = CLI_EXIT_FAIL, ref_written = 0;

    if (!cli_session_open(&s, g, CMD))
        return CLI_EXIT_FAIL;
    s.tpm_auth.source = o->password_source;
    s.tpm_auth.key_name = o->key_ref;
    if (!cli_session_tpm_new_password(&s))
        goto done;
    if (!cli_session_tpm_keygen(&s, kp, o->handle, &key_pem, &key_len, &key))
        goto done;

    /* From here on the key exists: every failure explains what is left. */
    if (!cli_write_file_atomic(o->key_ref, key_pem, key_len, 0600, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto leftover;
    }
    ref_written = 1;
    if (!cli_session_make_csr(&s, key, req, &csr_pem, &csr_len))
        goto leftover;
    if (!cli_write_file_atomic(o->out, csr_pem, csr_len, 0644, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto leftover;
    }
    print_tpm_key(&s, o);
    printf("csr:     %s\n", o->out);
    printf("key-ref: %s\n", o->key_ref);
    ret = CLI_EXIT_OK;
    goto done;

leftover:
    explain_leftover_tpm_key(&s, g, o, ref_written);
done:
    if (key != NULL)
        mks_key_free(key);
    if (key_pem != NULL)
        OPENSSL_clear_free(key_pem, key_len);
    free(csr_pem);
    cli_session_close(&s);
    return ret;
}

int cmd_enroll(cli_globals *g, int argc, char **argv)
{
    enroll_opts o = {.slot = -1};
    mks_keygen_params kp = {0};
    cli_csr_req req = {0};
    cli_session s;
    cli_err err;
    char *token_uri = NULL, *csr_pem = NULL, *ref_pem = NULL;
    char token_label[33] = "";
    size_t csr_len = 0, ref_len = 0;
    mks_key *key = NULL;
    int exit_now, ret = CLI_EXIT_FAIL, ref_written = 0, session = 0;
    mks_rv rv;

    if (acme_argv_has(argc, argv, "acme"))
        return acme_cmd_enroll(g, argc, argv);
    if (!parse_options(g, argc, argv, &o, &exit_now)) {
        ret = exit_now >= 0 ? exit_now : CLI_EXIT_USAGE;
        goto done;
    }
    if (!(o.tpm ? cli_parse_tpm_key_type
                : cli_parse_key_type)(o.key_type != NULL ? o.key_type : "ec:P-256", &kp, &err)) {
        cli_fail(CMD, "--key-type: %s", err.msg);
        ret = CLI_EXIT_USAGE;
        goto done;
    }
    kp.label = o.label;
    if (!cli_csr_req_from_args(&o.csr, &req, &err)) {
        cli_fail(CMD, "%s", err.msg);
        ret = CLI_EXIT_USAGE;
        goto done;
    }
    if (!cli_out_check(o.out, o.force, &err) || !cli_out_check(o.key_ref, o.force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    if (o.tpm) {
        ret = enroll_tpm(g, &o, &kp, &req);
        goto done;
    }

    /* Input is good; now the token. */
    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    if (!cli_session_find_token(&s, o.slot, o.token, 1, &token_uri, token_label))
        goto done;

    rv = mks_keygen(s.ks, token_uri, &kp, &s.pin_ui, &key);
    if (rv != MKS_OK) {
        key = NULL;
        if (rv == MKS_ERR_EXISTS)
            cli_fail(CMD,
                     "a key labelled '%s' exists on token '%s'; choose another --label or use "
                     "'%s csr --key URI' for the existing key",
                     o.label, token_label, CLI_PROGRAM);
        else if (rv == MKS_ERR_NO_SPACE)
            cli_fail_ks(CMD, rv, "token '%s' has no room for a new key pair", token_label);
        else
            cli_fail_ks(CMD, rv, "cannot make a %s key pair '%s' in token '%s'",
                        o.key_type != NULL ? o.key_type : "ec:P-256", o.label, token_label);
        goto done;
    }

    /* From here on the key pair exists: every failure explains what is left. */
    if (!cli_session_make_csr(&s, key, &req, &csr_pem, &csr_len))
        goto leftover;
    rv = mks_keyref_encode_pem(mks_key_get0_uri(key), &ref_pem, &ref_len);
    if (rv != MKS_OK) {
        cli_fail_ks(CMD, rv, "cannot encode the key reference");
        ref_pem = NULL;
        goto leftover;
    }
    /* The key reference first: with it, 'csr --key FILE' can redo a lost CSR. */
    if (!cli_write_file_atomic(o.key_ref, ref_pem, ref_len, 0600, o.force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto leftover;
    }
    ref_written = 1;
    if (!cli_write_file_atomic(o.out, csr_pem, csr_len, 0644, o.force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto leftover;
    }

    printf("key:     %s\n", mks_key_get0_uri(key));
    printf("csr:     %s\n", o.out);
    printf("key-ref: %s\n", o.key_ref);
    ret = CLI_EXIT_OK;
    goto done;

leftover:
    explain_leftover_key(g, &o, key, ref_written);
done:
    if (key != NULL)
        mks_key_free(key);
    free(ref_pem);
    free(csr_pem);
    free(token_uri);
    cli_csr_req_clear(&req);
    cli_csr_args_clear(&o.csr);
    if (session)
        cli_session_close(&s);
    return ret;
}
