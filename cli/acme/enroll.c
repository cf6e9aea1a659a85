/*
 * mtls-keystore enroll --acme: the whole enrollment without a person. The
 * key is made in hardware as enroll makes it, the CSR signed by it, the
 * account registered (or found again), the order placed and its challenges
 * answered, the chain downloaded and checked against the key, stored
 * beside the key and written to --cert-out, and what was done recorded in
 * the state directory for renew and check --renew.
 *
 * Interrupted or refused, the key stays under its label (the token's
 * NAME, or the --key-ref file of a TPM key) and the same command run again
 * continues with it; nothing is ever left unnamed.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "acme.h"
#include "cli.h"
#include "lifecycle.h"
#include "parse.h"

#define CMD "enroll"

static void usage(FILE *f)
{
    fprintf(
        f,
        "Usage: %s enroll --acme DIRECTORY_URL (--slot N | --token LABEL | --tpm)\n"
        "         --label NAME --san DNS:NAME|IP:ADDRESS [--san ...] [--key-type TYPE]\n"
        "         [--usage USAGE] (--http-01 ADDR:PORT | --webroot DIR | --dns-01-hook CMD)\n"
        "         --cert-out FILE --key-ref FILE [--chain-out FILE] [--contact mailto:...]\n"
        "         [--acme-ca-bundle FILE] [--acme-account-key URI|FILE]\n"
        "         [--acme-eab-kid KID --acme-eab-hmac-file FILE] [--deploy-hook CMD]\n"
        "         [--state-dir DIR] [--acme-timeout SECONDS]\n"
        "\n"
        "Enrolls from an ACME CA (RFC 8555): makes the key in hardware, registers or\n"
        "reuses the ACME account (its key in hardware too), orders a certificate for\n"
        "the SANs, answers the CA's challenges, finalizes with a CSR signed in\n"
        "hardware, checks that the certificate is for the key, stores it beside the\n"
        "key and writes --cert-out (certificate and intermediates) and --key-ref.\n"
        "What was done is recorded in the state directory: 'renew --label NAME' and\n"
        "'check --renew' repeat it unattended.\n"
        "\n"
        "  --acme URL             the CA's ACME directory (https://)\n"
        "  --slot N, --token LABEL, --tpm   where the key is made (as for enroll)\n"
        "  --label NAME           the key's label; also names the enrollment\n"
        "  --san DNS:NAME|IP:ADDRESS  the names to certify (repeatable; IP per RFC 8738)\n"
        "  --key-type TYPE        ec:P-256 (default), ec:P-384, rsa:2048, rsa:3072, rsa:4096\n"
        "  --usage USAGE          client, server or both (default): what the CSR asks for\n"
        "  --http-01 ADDR:PORT    answer http-01 with a built-in responder on ADDR:PORT\n"
        "                         (e.g. 0.0.0.0:80), only while the order is pending\n"
        "  --webroot DIR          answer http-01 with files in DIR/.well-known/acme-challenge/\n"
        "                         of a running web server (removed afterwards)\n"
        "  --dns-01-hook CMD      answer dns-01: 'CMD add NAME VALUE' sets the TXT record,\n"
        "                         'CMD remove NAME VALUE' removes it (run by /bin/sh)\n"
        "  --cert-out FILE        the certificate and its intermediates (PEM), atomically\n"
        "  --key-ref FILE         the key reference (TPM: the key file), mode 0600\n"
        "  --chain-out FILE       the intermediates alone (PEM)\n"
        "  --contact mailto:ADDR  the account's contact\n"
        "  --acme-ca-bundle FILE  the CAs that the directory's TLS certificate chains to\n"
        "                         (default: the system's)\n"
        "  --acme-account-key URI|FILE  the account key (default: ec:P-256 '%s' in\n"
        "                         the token, or %s in the state directory\n"
        "                         for --tpm; made at first use)\n"
        "  --acme-eab-kid KID, --acme-eab-hmac-file FILE  external account binding: the\n"
        "                         key id and the file holding the MAC key (base64url)\n"
        "  --deploy-hook CMD      run by renew and check --renew after a new certificate is\n"
        "                         in place, with MTLSKS_LABEL, MTLSKS_CERT, MTLSKS_KEY_REF\n"
        "  --state-dir DIR        where the state goes (default: $MTLSKS_STATE_DIR, else %s)\n"
        "  --acme-timeout SECONDS for each request to the CA (default %d)\n"
        "\n"
        "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
        CLI_PROGRAM, ACME_ACCOUNT_LABEL, ACME_ACCOUNT_TPM_FILE, ACME_DEFAULT_STATE_DIR,
        ACME_DEFAULT_TIMEOUT);
}

typedef struct enroll_args {
    int slot;
    const char *token;
    const char *state_dir;
    int nchal;
} enroll_args;

enum {
    OPT_ACME = 0x100,
    OPT_SLOT,
    OPT_TOKEN,
    OPT_TPM,
    OPT_LABEL,
    OPT_SAN,
    OPT_KEY_TYPE,
    OPT_USAGE,
    OPT_HTTP01,
    OPT_WEBROOT,
    OPT_DNS01,
    OPT_CERT_OUT,
    OPT_KEY_REF,
    OPT_CHAIN_OUT,
    OPT_CONTACT,
    OPT_CA_BUNDLE,
    OPT_ACCOUNT_KEY,
    OPT_EAB_KID,
    OPT_EAB_HMAC,
    OPT_DEPLOY_HOOK,
    OPT_STATE_DIR,
    OPT_TIMEOUT,
};

static int set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = strdup(v);
    return *dst != NULL;
}

static int add_san(acme_state *st, const char *v)
{
    char **n = realloc(st->sans, (st->nsans + 1) * sizeof(*n));

    if (n == NULL)
        return 0;
    st->sans = n;
    if ((n[st->nsans] = strdup(v)) == NULL)
        return 0;
    st->nsans++;
    return 1;
}

/* Stores one option in st or a; 0 on a bad value or no memory (printed). */
static int take_option(int c, const char *v, acme_state *st, enroll_args *a)
{
    char **dst = NULL;

    switch (c) {
    case OPT_SLOT:
        if (!cli_parse_uint(v, &a->slot)) {
            cli_fail(CMD, "--slot '%s': expected an index from '%s list'", v, CLI_PROGRAM);
            return 0;
        }
        return 1;
    case OPT_TOKEN:
        a->token = v;
        return set_str(&st->token, v);
    case OPT_TPM:
        st->tpm = 1;
        return 1;
    case OPT_SAN:
        return add_san(st, v);
    case OPT_HTTP01:
    case OPT_WEBROOT:
    case OPT_DNS01:
        a->nchal++;
        st->chal = c == OPT_HTTP01    ? ACME_CHAL_HTTP01
                   : c == OPT_WEBROOT ? ACME_CHAL_WEBROOT
                                      : ACME_CHAL_DNS01;
        return set_str(&st->chal_value, v);
    case OPT_STATE_DIR:
        a->state_dir = v;
        return 1;
    case OPT_TIMEOUT:
        if (!cli_parse_uint(v, &st->timeout) || st->timeout < 1 || st->timeout > 3600) {
            cli_fail(CMD, "--acme-timeout '%s': expected seconds, 1 to 3600", v);
            return 0;
        }
        return 1;
    case OPT_ACME:
        dst = &st->directory;
        break;
    case OPT_LABEL:
        dst = &st->label;
        break;
    case OPT_KEY_TYPE:
        dst = &st->key_type;
        break;
    case OPT_USAGE:
        dst = &st->usage;
        break;
    case OPT_CERT_OUT:
        dst = &st->cert_out;
        break;
    case OPT_KEY_REF:
        dst = &st->key_ref;
        break;
    case OPT_CHAIN_OUT:
        dst = &st->chain_out;
        break;
    case OPT_CONTACT:
        dst = &st->contact;
        break;
    case OPT_CA_BUNDLE:
        dst = &st->ca_bundle;
        break;
    case OPT_ACCOUNT_KEY:
        dst = &st->account_key;
        break;
    case OPT_EAB_KID:
        dst = &st->eab_kid;
        break;
    case OPT_EAB_HMAC:
        dst = &st->eab_hmac_file;
        break;
    case OPT_DEPLOY_HOOK:
        dst = &st->deploy_hook;
        break;
    default:
        break;
    }
    return dst != NULL && set_str(dst, v);
}

/* Relative paths become absolute: renewals run from another directory. */
static int absolute(char **path)
{
    char *cwd, *abs = NULL;

    if (*path == NULL || **path == '/')
        return 1;
    cwd = realpath(".", NULL);
    if (cwd == NULL || asprintf(&abs, "%s/%s", cwd, *path) < 0) {
        free(cwd);
        return 0;
    }
    free(cwd);
    free(*path);
    *path = abs;
    return 1;
}

/* Checks the SANs: DNS names and IP addresses only, each valid. */
static int check_sans(const acme_state *st)
{
    size_t i;
    cli_err err;

    if (st->nsans == 0) {
        cli_fail(CMD, "--san DNS:NAME or --san IP:ADDRESS is required: what the CA certifies");
        return 0;
    }
    for (i = 0; i < st->nsans; i++) {
        GENERAL_NAME *gn = NULL;
        const char *s = st->sans[i];

        if (strncasecmp(s, "DNS:", 4) != 0 && strncasecmp(s, "IP:", 3) != 0) {
            cli_fail(CMD, "--san %s: ACME certifies DNS: names and IP: addresses only", s);
            return 0;
        }
        if (!cli_parse_san(s, &gn, &err)) {
            cli_fail(CMD, "--san: %s", err.msg);
            return 0;
        }
        GENERAL_NAME_free(gn);
        if (st->chal != ACME_CHAL_DNS01 && strncmp(s + 4, "*.", 2) == 0) {
            cli_fail(CMD, "--san %s: a wildcard can only be validated by dns-01 (--dns-01-hook)",
                     s);
            return 0;
        }
        if (st->chal == ACME_CHAL_DNS01 && strncasecmp(s, "IP:", 3) == 0) {
            cli_fail(CMD,
                     "--san %s: an IP address cannot be validated by dns-01; use --http-01 "
                     "or --webroot",
                     s);
            return 0;
        }
    }
    return 1;
}

/* The checks that need nothing but the options. */
static int check_options(cli_globals *g, acme_state *st, const enroll_args *a)
{
    mks_keygen_params kp;
    cli_err err;
    cli_usage u;

    if (strncmp(st->directory, "https://", 8) != 0) {
        cli_fail(CMD, "--acme %s: an ACME directory is an https:// URL", st->directory);
        return 0;
    }
    if (st->tpm ? a->slot >= 0 || a->token != NULL : (a->slot >= 0) == (a->token != NULL)) {
        cli_fail(CMD, "give exactly one of --slot N, --token LABEL and --tpm");
        return 0;
    }
    if (st->label == NULL || *st->label == '\0' || cli_label_role(st->label) != CLI_ROLE_CURRENT ||
        strcmp(st->label, ACME_ACCOUNT_LABEL) == 0) {
        cli_fail(CMD,
                 "--label NAME is required (not ending in .next, .old or .chain, and not "
                 "'%s', the account key's)",
                 ACME_ACCOUNT_LABEL);
        return 0;
    }
    if (a->nchal != 1) {
        cli_fail(CMD, "give one way to answer the CA's challenges: --http-01 ADDR:PORT, "
                      "--webroot DIR or --dns-01-hook CMD");
        return 0;
    }
    if (st->chal == ACME_CHAL_HTTP01 && !acme_http01_addr_check(st->chal_value, &err)) {
        cli_fail(CMD, "%s", err.msg);
        return 0;
    }
    if (!check_sans(st))
        return 0;
    if (st->key_ref == NULL || st->cert_out == NULL) {
        cli_fail(CMD, "--cert-out FILE and --key-ref FILE are required");
        return 0;
    }
    if (!(st->tpm ? cli_parse_tpm_key_type : cli_parse_key_type)(
            st->key_type != NULL ? st->key_type : "ec:P-256", &kp, &err)) {
        cli_fail(CMD, "--key-type: %s", err.msg);
        return 0;
    }
    if (st->usage != NULL && !cli_parse_usage(st->usage, &u, &err)) {
        cli_fail(CMD, "--usage: %s", err.msg);
        return 0;
    }
    if ((st->eab_kid != NULL) != (st->eab_hmac_file != NULL)) {
        cli_fail(CMD, "external account binding needs both --acme-eab-kid KID and "
                      "--acme-eab-hmac-file FILE");
        return 0;
    }
    if (st->contact != NULL && strncmp(st->contact, "mailto:", 7) != 0) {
        cli_fail(CMD, "--contact %s: expected mailto:ADDRESS", st->contact);
        return 0;
    }
    if (!absolute(&st->key_ref) || !absolute(&st->cert_out) || !absolute(&st->chain_out) ||
        !absolute(&st->ca_bundle) || !absolute(&st->eab_hmac_file) ||
        (st->chal == ACME_CHAL_WEBROOT && !absolute(&st->chal_value)) ||
        (st->account_key != NULL && strncmp(st->account_key, "pkcs11:", 7) != 0 &&
         strncmp(st->account_key, MKS_TPM_URI_SCHEME, strlen(MKS_TPM_URI_SCHEME)) != 0 &&
         !absolute(&st->account_key))) {
        cli_fail(CMD, "cannot make the file names absolute (current directory gone?)");
        return 0;
    }
    return cli_globals_check(g, CMD);
}

static int parse(cli_globals *g, int argc, char **argv, acme_state *st, enroll_args *a,
                 int *exit_now)
{
    static const struct option longopts[] = {
        {"acme", required_argument, NULL, OPT_ACME},
        {"slot", required_argument, NULL, OPT_SLOT},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"tpm", no_argument, NULL, OPT_TPM},
        {"label", required_argument, NULL, OPT_LABEL},
        {"san", required_argument, NULL, OPT_SAN},
        {"key-type", required_argument, NULL, OPT_KEY_TYPE},
        {"usage", required_argument, NULL, OPT_USAGE},
        {"http-01", required_argument, NULL, OPT_HTTP01},
        {"webroot", required_argument, NULL, OPT_WEBROOT},
        {"dns-01-hook", required_argument, NULL, OPT_DNS01},
        {"cert-out", required_argument, NULL, OPT_CERT_OUT},
        {"key-ref", required_argument, NULL, OPT_KEY_REF},
        {"chain-out", required_argument, NULL, OPT_CHAIN_OUT},
        {"contact", required_argument, NULL, OPT_CONTACT},
        {"acme-ca-bundle", required_argument, NULL, OPT_CA_BUNDLE},
        {"acme-account-key", required_argument, NULL, OPT_ACCOUNT_KEY},
        {"acme-eab-kid", required_argument, NULL, OPT_EAB_KID},
        {"acme-eab-hmac-file", required_argument, NULL, OPT_EAB_HMAC},
        {"deploy-hook", required_argument, NULL, OPT_DEPLOY_HOOK},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"acme-timeout", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    *exit_now = CLI_EXIT_USAGE;
    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        if (c == 'h') {
            usage(stdout);
            *exit_now = CLI_EXIT_OK;
            return 0;
        }
        if (c == '?' || c == ':' || c == CLI_OPT_ABBREVIATED) {
            *exit_now = cli_usage_error(CMD, argv, c);
            return 0;
        }
        if (!take_option(c, optarg, st, a)) {
            if (c == OPT_SAN || c == OPT_TOKEN)
                cli_fail(CMD, "out of memory");
            return 0;
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
        return 0;
    }
    return check_options(g, st, a);
}

/* ---- the certificate key -------------------------------------------------------- */

/* The token key NAME: made, or (an earlier run stopped before its
 * certificate) reused. A key that has a certificate is enrolled already. */
static int token_key(cli_session *s, const acme_state *st, const char *token_uri, mks_key **key)
{
    mks_keygen_params kp = {0};
    mks_object *certs = NULL;
    size_t n = 0;
    int made = 0;
    cli_err err;

    if (!cli_parse_key_type(st->key_type != NULL ? st->key_type : "ec:P-256", &kp, &err) ||
        acme_token_key(s, token_uri, st->label, &kp, key, &made, &err) != 1) {
        cli_fail(CMD, "token '%s': %s", st->token, err.msg);
        return 0;
    }
    if (made)
        return 1;
    if (!cli_find_objects(s, token_uri, st->label, NULL, 0, MKS_OBJ_CERTIFICATE,
                          MKS_OBJ_CERTIFICATE, &certs, &n))
        goto refuse;
    mks_objects_free(certs, n);
    if (n > 0) {
        cli_fail(CMD,
                 "'%s' on token '%s' has a certificate already: renew it with '%s renew "
                 "--label %s', or choose another --label",
                 st->label, st->token, CLI_PROGRAM, st->label);
        goto refuse;
    }
    fprintf(stderr, "%s: continuing with the key '%s' that an earlier enroll made\n", CLI_PROGRAM,
            st->label);
    return 1;
refuse:
    mks_key_free(*key);
    *key = NULL;
    return 0;
}

/* The TPM key: made and written to --key-ref at once, or the one an
 * earlier run wrote there. */
static int tpm_key(cli_session *s, const acme_state *st, mks_key **key)
{
    int made = 0;
    cli_err err;

    if (!acme_tpm_key(s, st->key_ref, st->key_type, key, &made, &err)) {
        cli_fail(CMD, "--key-ref: %s", err.msg);
        return 0;
    }
    if (!made)
        fprintf(stderr, "%s: continuing with the TPM key in %s\n", CLI_PROGRAM, st->key_ref);
    return 1;
}

/* ---- the run ---------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Key, CSR, account, order: everything that needs the session. */
static int obtain(cli_globals *g, acme_state *st, const enroll_args *a, const char *dir,
                  acme_issued *is, int *key_exists)
{
    cli_session s;
    char *token_uri = NULL, token_label[33] = "";
    mks_key *key = NULL;
    acme_client c = {0};
    cli_err err;
    int ok = 0;

    if (!cli_session_open(&s, g, CMD))
        return 0;
    /* The CA first: unreachable, it costs no key. */
    if (!acme_client_open(&c, st, NULL, &err)) {
        acme_status_clear();
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    if (!st->tpm) {
        if (!cli_session_find_token(&s, a->slot, a->token, 1, &token_uri, token_label) ||
            !set_str(&st->token, token_label) || !token_key(&s, st, token_uri, &key))
            goto done;
    } else if (!tpm_key(&s, st, &key)) {
        goto done;
    }
    *key_exists = 1;
    if (!acme_issue(&s, &c, st, dir, token_uri, key, is, &err)) {
        key = NULL;
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    key = NULL;
    printf("acme:        %s, account %s%s, %lu requests (%lu nonces rejected and retried)\n",
           st->directory, c.account_url, c.account_created ? " (new)" : "", c.requests,
           c.bad_nonces);
    ok = 1;
done:
    acme_client_close(&c);
    if (key != NULL)
        mks_key_free(key);
    free(token_uri);
    cli_session_close(&s);
    return ok;
}

/* What is left after a failure, and how to continue. */
static void explain_leftover(const acme_state *st)
{
    if (st->tpm)
        cli_fail(CMD,
                 "the TPM key is in %s; run the same command again to continue with it "
                 "(or remove the file to start over)",
                 st->key_ref);
    else
        cli_fail(CMD,
                 "the key '%s' stays in token '%s' without a certificate; run the same "
                 "command again to continue with it, or remove it with '%s delete --label "
                 "%s --token %s --yes'",
                 st->label, st->token, CLI_PROGRAM, st->label, st->token);
}

int acme_cmd_enroll(cli_globals *g, int argc, char **argv)
{
    acme_state st = {0};
    enroll_args a = {.slot = -1};
    acme_issued is = {0};
    char *path = NULL;
    const char *dir;
    double t0 = now_s();
    int exit_now, key_exists = 0, ret = CLI_EXIT_USAGE;
    cli_err err;

    st.timeout = ACME_DEFAULT_TIMEOUT;
    if (!parse(g, argc, argv, &st, &a, &exit_now)) {
        ret = exit_now;
        goto done;
    }
    ret = CLI_EXIT_FAIL;
    dir = acme_state_dir(a.state_dir);
    path = acme_state_path(dir, st.label);
    if (path == NULL || !acme_state_dir_make(dir, &err)) {
        cli_fail(CMD, "%s", path == NULL ? "out of memory" : err.msg);
        goto done;
    }
    if (access(path, F_OK) == 0) {
        cli_fail(CMD,
                 "'%s' is enrolled already (%s): renew it with '%s renew --label %s', or "
                 "remove that file to enroll it again",
                 st.label, path, CLI_PROGRAM, st.label);
        goto done;
    }
    if (!cli_out_check(st.cert_out, 1, &err) || !cli_out_check(path, 1, &err) ||
        (!st.tpm && !cli_out_check(st.key_ref, 1, &err))) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    if (!obtain(g, &st, &a, dir, &is, &key_exists)) {
        if (key_exists)
            explain_leftover(&st);
        goto done;
    }
    if (!acme_install(g, &st, dir, NULL, is.chain_pem))
        goto done;
    /* Recorded once the certificate is in place: until then a rerun enrolls. */
    if (!acme_state_save(dir, &st, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    printf("state:       %s\n", path);
    printf("enrolled:    in %.2f s, %lu signatures in hardware (%lu by the account key, 1 CSR)\n",
           now_s() - t0, is.signatures, is.signatures - 1);
    ret = CLI_EXIT_OK;
done:
    acme_issued_clear(&is);
    free(path);
    acme_state_clear(&st);
    return ret;
}
