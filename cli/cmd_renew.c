/*
 * mtls-keystore renew: the first half of a key rotation. Makes the pending
 * key pair NAME.next (same type, same token) beside the serving pair NAME
 * and writes a CSR signed by it that carries the subject, the SANs and the
 * usage of NAME's certificate. Nothing that serves changes: NAME's key and
 * certificate stay as they are, and `pkcs11:object=NAME;type=private`
 * still names exactly one key. import-cert of the issued certificate does
 * the second half (see lifecycle.h, cli_handover, and import_token.c).
 *
 * Run again, renew reuses the pending key (a CSR lost, or asked for
 * again, costs no new key); `delete --label NAME.next` starts over.
 * --same-key renews the certificate only: the CSR is signed by NAME itself.
 *
 * renew --tpm renews a TPM key (renew_tpm.c).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/acme.h"
#include "lifecycle.h"
#include "parse.h"
#include "renew.h"

static void renew_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s renew --label NAME [--same-key] [--state-dir DIR]   (ACME-enrolled)\n"
            "       %s renew --label NAME --out FILE.csr [--token LABEL] [--same-key]\n"
            "         [--key-type TYPE] [--force]\n"
            "       %s renew --tpm --cert CERT.pem --out FILE.csr --key-out NEXT.key.pem\n"
            "         [--key-type TYPE] [--password-source file:PATH] [--force]\n"
            "       %s renew --tpm --cert CERT.pem --out FILE.csr --same-key --key KEY\n"
            "         [--password-source file:PATH] [--force]\n"
            "\n"
            "Makes a new key pair for the key labelled NAME in the same token, labelled\n"
            "NAME.next, and a CSR signed by it with the subject, subjectAltNames and\n"
            "usage (serverAuth/clientAuth) of NAME's certificate. The current key and\n"
            "certificate keep serving, unchanged, until 'import-cert --label NAME' stores\n"
            "the new certificate: that makes the new pair NAME and keeps the old one as\n"
            "NAME.old. Run again, renew reuses the pending key NAME.next.\n"
            "\n"
            "  --label NAME     the key to renew (as given to 'enroll --label')\n"
            "  --out FILE.csr   where the CSR (PEM) goes\n"
            "  --token LABEL    the token that holds NAME (default: the one that does)\n"
            "  --same-key       no new key: a CSR signed by NAME itself (certificate\n"
            "                   renewal only)\n"
            "  --key-type TYPE  type of the new key (default: the current key's):\n"
            "                   ec:P-256, ec:P-384, rsa:2048, rsa:3072, rsa:4096\n"
            "  --force          overwrite --out (and --key-out) if it exists\n"
            "\n"
            "With --tpm the key is a TPM key, which has no label and no stored certificate:\n"
            "--cert names its current certificate, and the new key (same type as the\n"
            "certificate's, or --key-type) is made in the TPM and written to --key-out as\n"
            "a TSS2 PRIVATE KEY file (mode 0600). --password-source gives the new key's\n"
            "password (default: asked twice on a terminal, none without one). With\n"
            "--same-key, --key names the current key (its file or tpmkey:handle=), which\n"
            "must be the certificate's, and --password-source its password.\n"
            "\n"
            "Without --out, renew renews a certificate that 'enroll --acme' enrolled, from its\n"
            "ACME CA, unattended ('%s renew --label NAME --help' says more).\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM, CLI_PROGRAM, CLI_PROGRAM, CLI_PROGRAM);
}

enum {
    OPT_LABEL = 0x100,
    OPT_OUT,
    OPT_TOKEN,
    OPT_SAME_KEY,
    OPT_KEY_TYPE,
    OPT_FORCE,
    OPT_TPM,
    OPT_CERT,
    OPT_KEY,
    OPT_KEY_OUT,
    OPT_PASSWORD_SOURCE,
};

/* The usage a certificate's extendedKeyUsage asks for; *other when it has more. */
static cli_usage usage_of(X509 *x, int *other)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    unsigned u = 0;
    int i;

    *other = 0;
    for (i = 0; eku != NULL && i < sk_ASN1_OBJECT_num(eku); i++) {
        int nid = OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i));

        if (nid == NID_server_auth)
            u |= CLI_USAGE_SERVER;
        else if (nid == NID_client_auth)
            u |= CLI_USAGE_CLIENT;
        else
            *other = 1;
    }
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    return u == 0 ? CLI_USAGE_BOTH : (cli_usage)u;
}

int renew_req_from_cert(X509 *x, cli_csr_req *req)
{
    GENERAL_NAMES *sans;
    int other;

    memset(req, 0, sizeof(*req));
    req->subject = X509_NAME_dup(X509_get_subject_name(x));
    if (req->subject == NULL)
        return 0;
    sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    req->sans = sans; /* NULL when the certificate has none */
    req->usage = usage_of(x, &other);
    if (other)
        cli_fail(CMD, "note: the certificate has extended key usages other than serverAuth and "
                      "clientAuth; the CSR asks for those two only, the CA adds what it adds");
    return 1;
}

/* The newest certificate (latest notAfter) labelled NAME with the key's id. */
static X509 *current_cert(cli_session *s, const char *token_uri, const char *label, mks_key *key)
{
    mks_object *objs = NULL;
    size_t n = 0, i, id_len = 0;
    const unsigned char *id = mks_key_get0_id(key, &id_len);
    X509 *best = NULL;

    if (!cli_find_objects(s, token_uri, label, id, id_len, MKS_OBJ_CERTIFICATE, MKS_OBJ_CERTIFICATE,
                          &objs, &n))
        return NULL;
    for (i = 0; i < n; i++) {
        const unsigned char *p = objs[i].der;
        X509 *x = p != NULL ? d2i_X509(NULL, &p, (long)objs[i].der_len) : NULL;

        if (x == NULL)
            continue;
        if (best == NULL ||
            ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(best)) > 0) {
            X509_free(best);
            best = x;
        } else {
            X509_free(x);
        }
    }
    mks_objects_free(objs, n);
    if (best == NULL)
        cli_fail(CMD,
                 "no certificate labelled '%s' for the key on token '%s': renew copies the "
                 "subject and SANs from it (import it first, or make a CSR with '%s csr --key')",
                 label, mks_key_get0_token_label(key), CLI_PROGRAM);
    return best;
}

/* Opens the key labelled `label` on the token; MKS_ERR_NOT_FOUND is returned quietly. */
static mks_rv open_label(cli_session *s, const char *token_uri, const char *label, mks_key **key)
{
    char *uri = cli_uri_object(CMD, token_uri, label, NULL, 0, MKS_OBJ_PRIVATE_KEY);
    mks_rv rv;

    *key = NULL;
    if (uri == NULL)
        return MKS_ERR_NOMEM;
    rv = mks_key_open(s->ks, uri, &s->pin_ui, key);
    if (rv != MKS_OK) {
        *key = NULL;
        if (rv == MKS_ERR_AMBIGUOUS)
            cli_fail(CMD,
                     "several private keys are labelled '%s' on the token: a hand-over "
                     "was interrupted; finish it with '%s import-cert --label NAME CERT.pem' "
                     "(the new certificate)",
                     label, CLI_PROGRAM);
        else if (rv != MKS_ERR_NOT_FOUND)
            cli_fail_ks(CMD, rv, "cannot open the key %s", uri);
    }
    mks_free(uri);
    return rv;
}

/*
 * The pending key NAME.next: the one a previous run made (*reused), else a
 * new one of --key-type or the current key's type. Prints why not.
 */
static int pending_key(cli_session *s, const char *token_uri, const char *token_label,
                       const renew_opts *o, const char *next_label, mks_keygen_params *kp,
                       mks_key *key, mks_key **next, int *reused)
{
    mks_rv rv = open_label(s, token_uri, next_label, next);

    if (rv == MKS_OK) {
        *reused = 1;
        if (o->key_type != NULL &&
            !(mks_key_get_type(*next) == kp->type &&
              (kp->type == MKS_KEY_RSA ? mks_key_get_bits(*next) == kp->bits
                                       : strcmp(mks_key_get0_curve(*next), kp->curve) == 0))) {
            cli_fail(CMD,
                     "a pending key '%s' of another type is on token '%s'; remove it "
                     "first ('%s delete --label %s') to make a %s key",
                     next_label, token_label, CLI_PROGRAM, next_label, o->key_type);
            return 0;
        }
        return 1;
    }
    if (rv != MKS_ERR_NOT_FOUND)
        return 0;
    if (o->key_type == NULL) {
        kp->type = mks_key_get_type(key);
        kp->bits = kp->type == MKS_KEY_RSA ? mks_key_get_bits(key) : 0;
        kp->curve = mks_key_get0_curve(key);
    }
    kp->label = next_label;
    rv = mks_keygen(s->ks, token_uri, kp, &s->pin_ui, next);
    if (rv == MKS_OK)
        return 1;
    *next = NULL;
    if (rv == MKS_ERR_EXISTS)
        cli_fail(CMD,
                 "an object labelled '%s' (not a private key) is on token '%s'; "
                 "remove it first ('%s delete --label %s')",
                 next_label, token_label, CLI_PROGRAM, next_label);
    else
        cli_fail_ks(CMD, rv,
                    "cannot make the new key pair '%s' in token '%s' (use "
                    "--key-type for another type, or --same-key)",
                    next_label, token_label);
    return 0;
}

static void print_token_result(const renew_opts *o, mks_key *key, mks_key *next, int reused)
{
    if (o->same_key) {
        printf("key:     %s (same key)\n", mks_key_get0_uri(key));
    } else {
        printf("pending: %s%s\n", mks_key_get0_uri(next), reused ? " (made earlier; reused)" : "");
        printf("current: %s (keeps serving until the new certificate is imported)\n",
               mks_key_get0_uri(key));
    }
    printf("csr:     %s\n", o->out);
    printf("next:    have the CA sign %s, then run\n", o->out);
    printf("           %s import-cert --label %s%s%s --key-ref KEY-REF.pem --cert-out SERVER.crt "
           "CERT.pem\n"
           "         (CERT.pem: the certificate the CA issued; KEY-REF.pem and SERVER.crt: the\n"
           "         key reference and certificate files servers read, rewritten together)\n",
           CLI_PROGRAM, o->label, o->token != NULL ? " --token " : "",
           o->token != NULL ? o->token : "");
    if (!o->same_key)
        printf("         (it makes the new key '%s' and rewrites the key reference files\n"
               "         given with --key-ref; servers pick the new key up when they reload)\n",
               o->label);
}

/* renew of a token key, after the options were checked. */
static int renew_token(cli_globals *g, const renew_opts *o, mks_keygen_params *kp)
{
    char *token_uri = NULL, *next_label = NULL, *csr_pem = NULL;
    char token_label[33] = "";
    const char *labels[] = {o->label};
    size_t csr_len = 0;
    int session = 0, reused = 0, ret = CLI_EXIT_FAIL;
    mks_key *key = NULL, *next = NULL;
    cli_csr_req req = {0};
    X509 *cert = NULL;
    cli_session s;
    cli_err err;
    mks_rv rv;

    if (!cli_out_check(o->out, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    next_label = cli_label_join(o->label, CLI_SUFFIX_NEXT);
    if (next_label == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    session = cli_session_open(&s, g, CMD);
    if (!session ||
        !cli_find_label_token(&s, labels, 1, MKS_OBJ_ANY, o->token, &token_uri, token_label))
        goto done;
    rv = open_label(&s, token_uri, o->label, &key);
    if (rv == MKS_ERR_NOT_FOUND)
        cli_fail(CMD, "no private key labelled '%s' on token '%s' (see '%s list')", o->label,
                 token_label, CLI_PROGRAM);
    if (rv != MKS_OK)
        goto done;
    cert = current_cert(&s, token_uri, o->label, key);
    if (cert == NULL)
        goto done;
    if (!renew_req_from_cert(cert, &req)) {
        cli_fail_ossl(CMD, "cannot copy the certificate's subject");
        goto done;
    }
    if (!o->same_key &&
        !pending_key(&s, token_uri, token_label, o, next_label, kp, key, &next, &reused))
        goto done;

    if (!cli_session_make_csr(&s, o->same_key ? key : next, &req, &csr_pem, &csr_len) ||
        !cli_write_file_atomic(o->out, csr_pem, csr_len, 0644, o->force, &err)) {
        if (csr_pem != NULL)
            cli_fail(CMD, "%s", err.msg);
        if (next != NULL)
            cli_fail(CMD, "the pending key '%s' stays on token '%s'; run renew again to retry",
                     next_label, token_label);
        goto done;
    }
    print_token_result(o, key, next, reused);
    ret = CLI_EXIT_OK;
done:
    if (next != NULL)
        mks_key_free(next);
    if (key != NULL)
        mks_key_free(key);
    X509_free(cert);
    cli_csr_req_clear(&req);
    free(csr_pem);
    free(next_label);
    free(token_uri);
    if (session)
        cli_session_close(&s);
    return ret;
}

/* Reads the options into o; 0 with *exit_now when the command ends here. */
static int read_options(cli_globals *g, int argc, char **argv, renew_opts *o, int *exit_now)
{
    static const struct option longopts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"out", required_argument, NULL, OPT_OUT},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"same-key", no_argument, NULL, OPT_SAME_KEY},
        {"key-type", required_argument, NULL, OPT_KEY_TYPE},
        {"force", no_argument, NULL, OPT_FORCE},
        {"tpm", no_argument, NULL, OPT_TPM},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"key-out", required_argument, NULL, OPT_KEY_OUT},
        {"password-source", required_argument, NULL, OPT_PASSWORD_SOURCE},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, renew_usage, exit_now)) > 0) {
        switch (c) {
        case OPT_LABEL:
            o->label = optarg;
            break;
        case OPT_OUT:
            o->out = optarg;
            break;
        case OPT_TOKEN:
            o->token = optarg;
            break;
        case OPT_SAME_KEY:
            o->same_key = 1;
            break;
        case OPT_KEY_TYPE:
            o->key_type = optarg;
            break;
        case OPT_FORCE:
            o->force = 1;
            break;
        case OPT_TPM:
            o->tpm = 1;
            break;
        case OPT_CERT:
            o->cert = optarg;
            break;
        case OPT_KEY:
            o->key = optarg;
            break;
        case OPT_KEY_OUT:
            o->key_out = optarg;
            break;
        case OPT_PASSWORD_SOURCE:
            o->password_source = optarg;
            break;
        }
    }
    if (c == CLI_OPT_EXIT || !cli_no_operands(CMD, argc, argv))
        return 0;
    return 1;
}

/* The options of renew --tpm, together (usage errors). */
static int check_tpm_options(const cli_globals *g, const renew_opts *o)
{
    if (o->label != NULL || o->token != NULL)
        cli_fail(CMD, "--tpm renews a TPM key, which has no label: give --cert (and, with "
                      "--same-key, --key) instead of --label and --token");
    else if (o->cert == NULL || *o->cert == '\0')
        cli_fail(CMD, "--tpm needs --cert CERT.pem, the current certificate");
    else if (o->out == NULL)
        cli_fail(CMD, "--out FILE.csr is required");
    else if (o->same_key && (o->key == NULL || *o->key == '\0'))
        cli_fail(CMD, "--same-key needs --key, the TPM key of %s", o->cert);
    else if (o->same_key && (o->key_out != NULL || o->key_type != NULL))
        cli_fail(CMD, "--same-key makes no key: --key-out and --key-type do not go with it");
    else if (!o->same_key && o->key != NULL)
        cli_fail(CMD, "--key is for --same-key; the new key goes to --key-out");
    else if (!o->same_key && (o->key_out == NULL || *o->key_out == '\0'))
        cli_fail(CMD, "--key-out NEXT.key.pem is required: where the new TPM key goes");
    else if (!o->same_key && (strcmp(o->key_out, o->out) == 0 || strcmp(o->key_out, o->cert) == 0))
        cli_fail(CMD, "--key-out %s is also --out or --cert", o->key_out);
    else
        return cli_globals_check(g, CMD) && cli_password_source_check(CMD, o->password_source);
    return 0;
}

/* The options of renew for a token key, together; the new key's type into kp. */
static int check_token_options(const cli_globals *g, const renew_opts *o, mks_keygen_params *kp)
{
    cli_err err;

    if (o->cert != NULL || o->key != NULL || o->key_out != NULL || o->password_source != NULL)
        cli_fail(CMD, "--cert, --key, --key-out and --password-source are for TPM keys (--tpm)");
    else if (o->label == NULL || *o->label == '\0')
        cli_fail(CMD, "--label NAME is required: the key to renew");
    else if (cli_label_role(o->label) != CLI_ROLE_CURRENT)
        cli_fail(CMD, "'%s' is a pending, retired or chain label; renew the key it belongs to",
                 o->label);
    else if (o->out == NULL)
        cli_fail(CMD, "--out FILE.csr is required");
    else if (o->token != NULL && *o->token == '\0')
        cli_fail(CMD, "--token: empty label");
    else if (o->key_type != NULL && o->same_key)
        cli_fail(CMD, "--key-type and --same-key do not go together");
    else if (o->key_type != NULL && !cli_parse_key_type(o->key_type, kp, &err))
        cli_fail(CMD, "--key-type: %s", err.msg);
    else
        return cli_globals_check(g, CMD);
    return 0;
}

int cmd_renew(cli_globals *g, int argc, char **argv)
{
    renew_opts o = {0};
    mks_keygen_params kp = {0};
    int exit_now;

    if (acme_renew_wanted(argc, argv))
        return acme_cmd_renew(g, argc, argv);
    if (!read_options(g, argc, argv, &o, &exit_now))
        return exit_now;
    if (o.tpm)
        return check_tpm_options(g, &o) ? renew_tpm(g, &o) : CLI_EXIT_USAGE;
    if (!check_token_options(g, &o, &kp))
        return CLI_EXIT_USAGE;
    return renew_token(g, &o, &kp);
}
