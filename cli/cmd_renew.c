/*
 * mtls-keystore renew: the first half of a key rotation. Makes the pending
 * key pair NAME.next (same type, same token) beside the serving pair NAME
 * and writes a CSR signed by it that carries the subject, the SANs and the
 * usage of NAME's certificate. Nothing that serves changes: NAME's key and
 * certificate stay as they are, and `pkcs11:object=NAME;type=private`
 * still names exactly one key. import-cert of the issued certificate does
 * the second half (see lifecycle.h and cmd_import_cert.c).
 *
 * Run again, renew reuses the pending key (a CSR lost, or asked for
 * again, costs no new key); `delete --label NAME.next` starts over.
 * --same-key renews the certificate only: the CSR is signed by NAME itself.
 *
 * renew --tpm: a TPM key has no label and no stored certificate, so the
 * current certificate is named (--cert); the new key is made in the TPM and
 * written to --key-out; import-cert --tpm puts the issued certificate and
 * the new key file in place of the current ones.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/acme.h"
#include "cli.h"
#include "csr.h"
#include "lifecycle.h"
#include "parse.h"

#define CMD "renew"

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

/* What renew was asked, for the TPM path. */
typedef struct renew_opts {
    const char *out, *key_type, *cert, *key, *key_out, *password_source;
    int same_key, force;
} renew_opts;

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

/* The request renew makes: what the current certificate says. */
static int req_from_cert(X509 *x, cli_csr_req *req)
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

    if (!cli_find_objects(s, token_uri, label, id, id_len, "cert", MKS_OBJ_CERTIFICATE, &objs, &n))
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
    char *uri = cli_object_uri(token_uri, label, NULL, 0, "private");
    mks_rv rv;

    *key = NULL;
    if (uri == NULL) {
        cli_fail(CMD, "out of memory");
        return MKS_ERR_NOMEM;
    }
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
    free(uri);
    return rv;
}

/* "ec:P-256", "rsa:2048" etc.: the key type of a certificate's key, in buf. */
static const char *key_type_of(X509 *x, char *buf, size_t size)
{
    unsigned char *der = NULL;
    size_t len = 0;
    cli_cert_info ci;
    cli_err err;

    buf[0] = '\0';
    if (cli_x509_der(x, &der, &len) && cli_cert_info_get(der, len, 0, &ci, &err)) {
        if (strcmp(ci.key_type, "ec") == 0)
            snprintf(buf, size, "ec:%s", ci.curve);
        else if (strcmp(ci.key_type, "rsa") == 0)
            snprintf(buf, size, "rsa:%d", ci.key_bits);
        cli_cert_info_clear(&ci);
    }
    OPENSSL_free(der);
    return buf;
}

/* renew --tpm, after the options were checked. */
static int renew_tpm(cli_globals *g, const renew_opts *o)
{
    STACK_OF(X509) *certs = NULL;
    X509 *cert;
    cli_csr_req req = {0};
    cli_key_arg ka = {0};
    mks_keygen_params kp = {0};
    const char *type = o->key_type;
    mks_key *key = NULL;
    char *key_pem = NULL, *csr_pem = NULL;
    size_t key_len = 0, csr_len = 0;
    const unsigned char *spki;
    char cert_type[32];
    size_t spki_len = 0;
    int session = 0, key_written = 0, ret = CLI_EXIT_FAIL;
    cli_session s;
    cli_err err;

    if (!cli_read_certs(o->cert, &certs, &err)) {
        cli_fail(CMD, "--cert: %s", err.msg);
        goto done;
    }
    cert = sk_X509_value(certs, 0);
    if (!req_from_cert(cert, &req)) {
        cli_fail_ossl(CMD, "cannot copy the subject of %s", o->cert);
        goto done;
    }
    if (o->same_key && !cli_key_arg_parse(o->key, &ka, &err)) {
        cli_fail(CMD, "--key: %s", err.msg);
        goto done;
    }
    if (o->same_key && ka.kind == CLI_KEY_PKCS11) {
        cli_fail(CMD, "--key %s is not a TPM key; renew a token key with --label", o->key);
        ret = CLI_EXIT_USAGE;
        goto done;
    }
    if (!o->same_key) {
        if (type == NULL)
            type = key_type_of(cert, cert_type, sizeof(cert_type));
        if (!cli_parse_tpm_key_type(type, &kp, &err)) {
            if (o->key_type != NULL)
                cli_fail(CMD, "--key-type: %s", err.msg);
            else
                cli_fail(CMD,
                         "the key in %s (%s) is of a type TPM keys are not made in; give "
                         "--key-type (ec:P-256, ec:P-384, rsa:2048, rsa:3072)",
                         o->cert, *type != '\0' ? type : "unknown");
            ret = CLI_EXIT_USAGE;
            goto done;
        }
        if (!cli_out_check(o->key_out, o->force, &err)) {
            cli_fail(CMD, "%s", err.msg);
            goto done;
        }
    }
    if (!cli_out_check(o->out, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }

    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    s.tpm_auth.source = o->password_source;
    if (o->same_key) {
        if (!cli_session_open_key(&s, &ka, &key))
            goto done;
        spki = mks_key_get0_spki(key, &spki_len);
        if (!cli_cert_certifies(cert, spki, spki_len)) {
            cli_fail(CMD, "%s is not the key of %s: the certificate certifies another key", o->key,
                     o->cert);
            goto done;
        }
    } else {
        s.tpm_auth.key_name = o->key_out;
        if (!cli_session_tpm_new_password(&s) ||
            !cli_session_tpm_keygen(&s, &kp, 0, &key_pem, &key_len, &key))
            goto done;
        /* The key exists only in this file: written first, and kept if the CSR
         * cannot be (csr --key makes it again from the file). */
        if (!cli_write_file_atomic(o->key_out, key_pem, key_len, 0600, o->force, &err)) {
            cli_fail(CMD, "%s; the new key is lost (it existed only in that file)", err.msg);
            goto done;
        }
        key_written = 1;
    }
    if (!cli_session_make_csr(&s, key, &req, &csr_pem, &csr_len) ||
        !cli_write_file_atomic(o->out, csr_pem, csr_len, 0644, o->force, &err)) {
        if (csr_pem != NULL)
            cli_fail(CMD, "%s", err.msg);
        if (key_written)
            cli_fail(CMD, "the new key is in %s; make its CSR with '%s csr --key %s'", o->key_out,
                     CLI_PROGRAM, o->key_out);
        goto done;
    }

    if (o->same_key)
        printf("key:     %s (same key)\n", o->key);
    else
        printf("pending: TPM key in %s, %s%s (%s)\n", o->key_out, type,
               s.tpm_auth.have ? ", with a password" : "", cli_session_tcti(&s));
    printf("csr:     %s\n", o->out);
    printf("next:    have the CA sign %s, then run\n", o->out);
    if (o->same_key)
        printf("           %s import-cert --tpm --key-ref %s --cert-out %s CERT.pem\n", CLI_PROGRAM,
               o->key, o->cert);
    else
        printf("           %s import-cert --tpm --key-ref KEY.pem --next %s --cert-out %s "
               "CERT.pem\n"
               "         (KEY.pem: the key file servers read; it is kept as KEY.pem.old)\n",
               CLI_PROGRAM, o->key_out, o->cert);
    ret = CLI_EXIT_OK;
done:
    if (key != NULL)
        mks_key_free(key);
    if (key_pem != NULL) {
        OPENSSL_cleanse(key_pem, key_len);
        free(key_pem);
    }
    free(csr_pem);
    cli_key_arg_clear(&ka);
    cli_csr_req_clear(&req);
    sk_X509_pop_free(certs, X509_free);
    if (session)
        cli_session_close(&s);
    return ret;
}

int cmd_renew(cli_globals *g, int argc, char **argv)
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
    renew_opts t = {0};
    int tpm = 0;
    const char *label = NULL, *out = NULL, *token = NULL, *key_type = NULL;
    char *token_uri = NULL, *next_label = NULL, *csr_pem = NULL;
    char token_label[33] = "";
    size_t csr_len = 0;
    int c, same_key = 0, force = 0, session = 0, reused = 0, ret = CLI_EXIT_USAGE;
    mks_keygen_params kp = {0};
    mks_key *key = NULL, *next = NULL;
    cli_csr_req req = {0};
    X509 *cert = NULL;
    cli_session s;
    cli_err err;
    mks_rv rv;

    if (acme_renew_wanted(argc, argv))
        return acme_cmd_renew(g, argc, argv);
    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        switch (c) {
        case OPT_LABEL:
            label = optarg;
            break;
        case OPT_OUT:
            out = optarg;
            break;
        case OPT_TOKEN:
            token = optarg;
            break;
        case OPT_SAME_KEY:
            same_key = 1;
            break;
        case OPT_KEY_TYPE:
            key_type = optarg;
            break;
        case OPT_FORCE:
            force = 1;
            break;
        case OPT_TPM:
            tpm = 1;
            break;
        case OPT_CERT:
            t.cert = optarg;
            break;
        case OPT_KEY:
            t.key = optarg;
            break;
        case OPT_KEY_OUT:
            t.key_out = optarg;
            break;
        case OPT_PASSWORD_SOURCE:
            t.password_source = optarg;
            break;
        case 'h':
            renew_usage(stdout);
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
    if (tpm) {
        t.out = out;
        t.key_type = key_type;
        t.same_key = same_key;
        t.force = force;
        if (label != NULL || token != NULL) {
            cli_fail(CMD, "--tpm renews a TPM key, which has no label: give --cert (and, with "
                          "--same-key, --key) instead of --label and --token");
        } else if (t.cert == NULL || *t.cert == '\0') {
            cli_fail(CMD, "--tpm needs --cert CERT.pem, the current certificate");
        } else if (out == NULL) {
            cli_fail(CMD, "--out FILE.csr is required");
        } else if (same_key && (t.key == NULL || *t.key == '\0')) {
            cli_fail(CMD, "--same-key needs --key, the TPM key of %s", t.cert);
        } else if (same_key && (t.key_out != NULL || key_type != NULL)) {
            cli_fail(CMD, "--same-key makes no key: --key-out and --key-type do not go with it");
        } else if (!same_key && t.key != NULL) {
            cli_fail(CMD, "--key is for --same-key; the new key goes to --key-out");
        } else if (!same_key && (t.key_out == NULL || *t.key_out == '\0')) {
            cli_fail(CMD, "--key-out NEXT.key.pem is required: where the new TPM key goes");
        } else if (!same_key && (strcmp(t.key_out, out) == 0 || strcmp(t.key_out, t.cert) == 0)) {
            cli_fail(CMD, "--key-out %s is also --out or --cert", t.key_out);
        } else if (cli_globals_check(g, CMD) && cli_password_source_check(CMD, t.password_source)) {
            ret = renew_tpm(g, &t);
        }
        goto done;
    }
    if (t.cert != NULL || t.key != NULL || t.key_out != NULL || t.password_source != NULL) {
        cli_fail(CMD, "--cert, --key, --key-out and --password-source are for TPM keys (--tpm)");
        goto done;
    }
    if (label == NULL || *label == '\0') {
        cli_fail(CMD, "--label NAME is required: the key to renew");
        goto done;
    }
    if (cli_label_role(label) != CLI_ROLE_CURRENT) {
        cli_fail(CMD, "'%s' is a pending, retired or chain label; renew the key it belongs to",
                 label);
        goto done;
    }
    if (out == NULL) {
        cli_fail(CMD, "--out FILE.csr is required");
        goto done;
    }
    if (token != NULL && *token == '\0') {
        cli_fail(CMD, "--token: empty label");
        goto done;
    }
    if (key_type != NULL && same_key) {
        cli_fail(CMD, "--key-type and --same-key do not go together");
        goto done;
    }
    if (key_type != NULL && !cli_parse_key_type(key_type, &kp, &err)) {
        cli_fail(CMD, "--key-type: %s", err.msg);
        goto done;
    }
    if (!cli_globals_check(g, CMD))
        goto done;

    ret = CLI_EXIT_FAIL;
    if (!cli_out_check(out, force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    next_label = cli_label_join(label, CLI_SUFFIX_NEXT);
    if (next_label == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    {
        const char *labels[] = {label};

        if (!cli_find_label_token(&s, labels, 1, MKS_OBJ_ANY, token, &token_uri, token_label))
            goto done;
    }
    rv = open_label(&s, token_uri, label, &key);
    if (rv == MKS_ERR_NOT_FOUND)
        cli_fail(CMD, "no private key labelled '%s' on token '%s' (see '%s list')", label,
                 token_label, CLI_PROGRAM);
    if (rv != MKS_OK)
        goto done;
    cert = current_cert(&s, token_uri, label, key);
    if (cert == NULL)
        goto done;
    if (!req_from_cert(cert, &req)) {
        cli_fail_ossl(CMD, "cannot copy the certificate's subject");
        goto done;
    }

    if (!same_key) {
        rv = open_label(&s, token_uri, next_label, &next);
        if (rv == MKS_OK) {
            reused = 1;
            if (key_type != NULL &&
                !(mks_key_get_type(next) == kp.type &&
                  (kp.type == MKS_KEY_RSA ? mks_key_get_bits(next) == kp.bits
                                          : strcmp(mks_key_get0_curve(next), kp.curve) == 0))) {
                cli_fail(CMD,
                         "a pending key '%s' of another type is on token '%s'; remove it "
                         "first ('%s delete --label %s') to make a %s key",
                         next_label, token_label, CLI_PROGRAM, next_label, key_type);
                goto done;
            }
        } else if (rv != MKS_ERR_NOT_FOUND) {
            goto done;
        } else {
            if (key_type == NULL) {
                kp.type = mks_key_get_type(key);
                kp.bits = kp.type == MKS_KEY_RSA ? mks_key_get_bits(key) : 0;
                kp.curve = mks_key_get0_curve(key);
            }
            kp.label = next_label;
            rv = mks_keygen(s.ks, token_uri, &kp, &s.pin_ui, &next);
            if (rv != MKS_OK) {
                next = NULL;
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
                goto done;
            }
        }
    }

    if (!cli_session_make_csr(&s, same_key ? key : next, &req, &csr_pem, &csr_len)) {
        if (next != NULL)
            cli_fail(CMD, "the pending key '%s' stays on token '%s'; run renew again to retry",
                     next_label, token_label);
        goto done;
    }
    if (!cli_write_file_atomic(out, csr_pem, csr_len, 0644, force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        if (next != NULL)
            cli_fail(CMD, "the pending key '%s' stays on token '%s'; run renew again to retry",
                     next_label, token_label);
        goto done;
    }

    if (same_key) {
        printf("key:     %s (same key)\n", mks_key_get0_uri(key));
    } else {
        printf("pending: %s%s\n", mks_key_get0_uri(next), reused ? " (made earlier; reused)" : "");
        printf("current: %s (keeps serving until the new certificate is imported)\n",
               mks_key_get0_uri(key));
    }
    printf("csr:     %s\n", out);
    printf("next:    have the CA sign %s, then run\n", out);
    printf("           %s import-cert --label %s%s%s --key-ref KEY-REF.pem --cert-out SERVER.crt "
           "CERT.pem\n"
           "         (CERT.pem: the certificate the CA issued; KEY-REF.pem and SERVER.crt: the\n"
           "         key reference and certificate files servers read, rewritten together)\n",
           CLI_PROGRAM, label, token != NULL ? " --token " : "", token != NULL ? token : "");
    if (!same_key)
        printf("         (it makes the new key '%s' and rewrites the key reference files\n"
               "         given with --key-ref; servers pick the new key up when they reload)\n",
               label);
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
