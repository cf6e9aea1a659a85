/*
 * mtls-keystore import-cert: stores an issued certificate in the token
 * next to its key, with the key's CKA_ID and label, so that
 * "pkcs11:...;object=NAME;type=cert" loads it (import_token.c). A
 * certificate for another key is refused. A certificate for the pending key
 * NAME.next that renew made finishes the renewal with the hand-over
 * (cli_handover, lifecycle.h).
 *
 * import-cert --tpm: a TPM keeps no certificates, so the files are all there
 * is (import_tpm.c).
 *
 * This file reads the options, the certificate and the chain, which both
 * share.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "import_cert.h"
#include "lifecycle.h"

static void import_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s import-cert --label NAME [--token LABEL] [--key-ref FILE]\n"
            "         [--chain FILE] [--cert-out FILE] CERT.pem\n"
            "       %s import-cert --tpm --key-ref KEY.pem [--next NEXT.key.pem]\n"
            "         --cert-out FILE [--chain FILE] CERT.pem\n"
            "\n"
            "Stores the certificate (PEM or DER) in the token that holds the private key\n"
            "labelled NAME, under the same label and id, and prints its URI. A\n"
            "certificate whose public key is not that key's is refused.\n"
            "\n"
            "A certificate for the pending key NAME.next that 'renew' made finishes the\n"
            "renewal: the new key pair becomes NAME and the old one NAME.old (running\n"
            "servers keep signing with it until they reload; 'delete --label NAME.old'\n"
            "removes it). A certificate for NAME's own key replaces NAME's certificate.\n"
            "Interrupted, run it again: it continues where it stopped.\n"
            "\n"
            "  --label NAME     the key's label (as given to 'enroll --label')\n"
            "  --token LABEL    the token to look in (default: the one that holds NAME)\n"
            "  --key-ref FILE   write (or rewrite) the key reference FILE to name the key\n"
            "                   the certificate is for, atomically, mode 0600. After a\n"
            "                   renewal the old key reference names the retired key: pass\n"
            "                   every key reference file a server reads\n"
            "  --chain FILE     the CA certificates (PEM) between the certificate and the\n"
            "                   root: stored on the token as NAME.chain (replacing an older\n"
            "                   chain), and added to --cert-out\n"
            "  --cert-out FILE  write the certificate followed by its chain (--chain, else\n"
            "                   the NAME.chain certificates on the token), PEM, atomically:\n"
            "                   the file a server reads (nginx ssl_certificate)\n"
            "\n"
            "With --tpm (a TPM stores no certificates): --key-ref is the TPM key file a\n"
            "server reads and --cert-out its certificate file. A certificate for --next\n"
            "(the key 'renew --tpm --key-out' made) hands over: KEY.pem and the\n"
            "certificate file are kept as KEY.pem.old and FILE.old, the certificate is\n"
            "written, and NEXT.key.pem replaces KEY.pem. A certificate for KEY.pem's own\n"
            "key replaces the certificate file only.\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM);
}

enum { OPT_LABEL = 0x100, OPT_TOKEN, OPT_KEY_REF, OPT_CHAIN, OPT_CERT_OUT, OPT_TPM, OPT_NEXT };

int import_read_input(const import_opts *o, import_input *in)
{
    STACK_OF(X509) *sk = NULL;
    unsigned char *p = NULL;
    cli_err err;
    int i, n;

    if (!cli_read_certs(o->cert_path, &sk, &err)) {
        cli_fail(CMD, "%s", err.msg);
        return 0;
    }
    in->x = sk_X509_shift(sk);
    sk_X509_pop_free(sk, X509_free);
    if (!cli_x509_der(in->x, &in->der, &in->der_len) ||
        (n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(in->x), &p)) <= 0) {
        cli_fail_ossl(CMD, "cannot encode the certificate in %s", o->cert_path);
        return 0;
    }
    in->spki = p;
    in->spki_len = (size_t)n;
    if (o->chain == NULL)
        return 1;
    if (!cli_read_certs(o->chain, &in->chain, &err)) {
        cli_fail(CMD, "--chain: %s", err.msg);
        return 0;
    }
    for (i = 0; i < sk_X509_num(in->chain); i++) {
        X509 *c = sk_X509_value(in->chain, i);

        if (X509_cmp(c, in->x) == 0) {
            cli_fail(CMD,
                     "--chain %s holds the certificate itself; give only the CA "
                     "certificates above it",
                     o->chain);
            return 0;
        }
        if (X509_check_ca(c) == 0) {
            char *dn = X509_NAME_oneline(X509_get_subject_name(c), NULL, 0);

            cli_fail(CMD, "--chain %s: certificate %d (%s) is not a CA certificate", o->chain,
                     i + 1, dn != NULL ? dn : "?");
            OPENSSL_free(dn);
            return 0;
        }
    }
    return 1;
}

void import_input_clear(import_input *in)
{
    X509_free(in->x);
    OPENSSL_free(in->der);
    OPENSSL_free(in->spki);
    sk_X509_pop_free(in->chain, X509_free);
    memset(in, 0, sizeof(*in));
}

static int strlist_has(const cli_strlist *l, const char *v)
{
    size_t i;

    for (i = 0; i < l->n; i++)
        if (strcmp(l->v[i], v) == 0)
            return 1;
    return 0;
}

/* Appends to buf what `want` lists and `got` lacks (EKUs: TLS ones only). */
static void missing(const cli_strlist *want, const cli_strlist *got, int tls_only, char *buf,
                    size_t size)
{
    size_t i, n;

    for (i = 0; i < want->n; i++) {
        if (strlist_has(got, want->v[i]) || (tls_only && strcmp(want->v[i], "serverAuth") != 0 &&
                                             strcmp(want->v[i], "clientAuth") != 0))
            continue;
        n = strlen(buf);
        snprintf(buf + n, size - n, "%s%s", n > 0 ? ", " : "", want->v[i]);
    }
}

void import_warn_lost_extensions(const import_opts *o, const import_input *in,
                                 const unsigned char *prev_der, size_t prev_len)
{
    cli_cert_info now, prev;
    char lost[512] = "";
    int have_prev = 0;
    cli_err err;

    if (!cli_cert_info_get(in->der, in->der_len, 0, &now, &err))
        return;
    have_prev = prev_der != NULL && cli_cert_info_get(prev_der, prev_len, 0, &prev, &err);
    if (have_prev) {
        missing(&prev.sans, &now.sans, 0, lost, sizeof(lost));
        missing(&prev.ext_key_usage, &now.ext_key_usage, 1, lost, sizeof(lost));
        cli_cert_info_clear(&prev);
    } else if (now.ext_key_usage.n == 0) {
        snprintf(lost, sizeof(lost), "extendedKeyUsage%s",
                 now.sans.n == 0 ? ", and subjectAltName if the CSR had SANs" : "");
    }
    if (*lost != '\0')
        cli_fail(CMD,
                 "warning: %s lacks what the key's CSR asked for (%s; %s): the CA did not copy "
                 "the CSR's extensions, and a renewal copies only what the certificate has. "
                 "Have it issued again with 'openssl x509 -req ... -copy_extensions copy' (or "
                 "'openssl ca ... -copy_extensions copy', or the CA's equivalent)",
                 o->cert_path, lost,
                 have_prev ? "renew asks for the previous certificate's SANs and usages"
                           : "mtls-keystore's CSRs always ask for an extendedKeyUsage");
    cli_cert_info_clear(&now);
}

static int check_tpm_options(const cli_globals *g, const import_opts *o);
static int check_token_options(const cli_globals *g, const import_opts *o);

static int parse_options(cli_globals *g, int argc, char **argv, import_opts *o, int *exit_now)
{
    static const struct option longopts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"key-ref", required_argument, NULL, OPT_KEY_REF},
        {"chain", required_argument, NULL, OPT_CHAIN},
        {"cert-out", required_argument, NULL, OPT_CERT_OUT},
        {"tpm", no_argument, NULL, OPT_TPM},
        {"next", required_argument, NULL, OPT_NEXT},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, import_usage, exit_now)) > 0) {
        switch (c) {
        case OPT_LABEL:
            o->label = optarg;
            break;
        case OPT_TOKEN:
            o->token = optarg;
            break;
        case OPT_KEY_REF:
            o->key_ref = optarg;
            break;
        case OPT_CHAIN:
            o->chain = optarg;
            break;
        case OPT_CERT_OUT:
            o->cert_out = optarg;
            break;
        case OPT_TPM:
            o->tpm = 1;
            break;
        case OPT_NEXT:
            o->next = optarg;
            break;
        }
    }
    if (c == CLI_OPT_EXIT)
        return 0;
    if (optind + 1 != argc) {
        if (optind >= argc)
            cli_fail(CMD, "the certificate file is missing (import-cert --label NAME CERT.pem)");
        else
            cli_fail(CMD, "unexpected argument '%s' (one certificate file at a time)",
                     argv[optind + 1]);
        return 0;
    }
    o->cert_path = argv[optind];
    return o->tpm || o->next != NULL ? check_tpm_options(g, o) : check_token_options(g, o);
}

/* The options of import-cert --tpm, together (usage errors). */
static int check_tpm_options(const cli_globals *g, const import_opts *o)
{
    if (!o->tpm || o->label != NULL || o->token != NULL) {
        cli_fail(CMD, "--tpm imports a TPM key's certificate into files (--key-ref, --next, "
                      "--cert-out); --label and --token name token keys");
        return 0;
    }
    if (o->key_ref == NULL || *o->key_ref == '\0' || o->cert_out == NULL || *o->cert_out == '\0' ||
        (o->next != NULL && *o->next == '\0') || (o->chain != NULL && *o->chain == '\0')) {
        cli_fail(CMD, "--tpm needs --key-ref KEY.pem and --cert-out FILE (and --next "
                      "NEXT.key.pem for a renewed key)");
        return 0;
    }
    if (cli_same_file(o->key_ref, o->cert_out) ||
        (o->next != NULL &&
         (cli_same_file(o->next, o->key_ref) || cli_same_file(o->next, o->cert_out)))) {
        cli_fail(CMD, "--key-ref, --next and --cert-out must be three files");
        return 0;
    }
    return cli_globals_check(g, CMD);
}

/* The options of import-cert for a token key, together (usage errors). */
static int check_token_options(const cli_globals *g, const import_opts *o)
{
    if (o->label == NULL || *o->label == '\0') {
        cli_fail(CMD, "--label NAME is required: the label of the key the certificate is for");
        return 0;
    }
    if (cli_label_role(o->label) != CLI_ROLE_CURRENT) {
        cli_fail(CMD,
                 "--label %s: give the key's own label; import-cert finds the pending key of "
                 "a renewal itself",
                 o->label);
        return 0;
    }
    if (o->token != NULL && *o->token == '\0') {
        cli_fail(CMD, "--token: empty label");
        return 0;
    }
    if ((o->key_ref != NULL && *o->key_ref == '\0') ||
        (o->cert_out != NULL && *o->cert_out == '\0') || (o->chain != NULL && *o->chain == '\0')) {
        cli_fail(CMD, "--key-ref, --chain and --cert-out take a file name");
        return 0;
    }
    if (o->key_ref != NULL && o->cert_out != NULL && cli_same_file(o->key_ref, o->cert_out)) {
        cli_fail(CMD, "--key-ref and --cert-out name the same file %s", o->key_ref);
        return 0;
    }
    return cli_globals_check(g, CMD);
}

int cmd_import_cert(cli_globals *g, int argc, char **argv)
{
    import_opts o = {0};
    int exit_now;

    if (!parse_options(g, argc, argv, &o, &exit_now))
        return exit_now;
    return o.tpm ? import_tpm(g, &o) : import_token(g, &o);
}
