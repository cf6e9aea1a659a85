/*
 * mtls-keystore import-cert: stores an issued certificate in the token
 * next to its key, with the key's CKA_ID and label, so that
 * "pkcs11:...;object=NAME;type=cert" loads it. A certificate for another
 * key is refused.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"
#include "parse.h"

#define CMD "import-cert"

static void import_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s import-cert --label NAME [--token LABEL] CERT.pem\n"
            "\n"
            "Stores the certificate (PEM or DER) in the token that holds the private key\n"
            "labelled NAME, under the same label and id, and prints its URI. A\n"
            "certificate whose public key is not that key's is refused.\n"
            "\n"
            "  --label NAME     the key's label (as given to 'enroll --label')\n"
            "  --token LABEL    the token to look in (default: every token)\n"
            "\n"
            "Global options (--config, --module, --pin-source) are accepted here too.\n",
            CLI_PROGRAM);
}

enum { OPT_LABEL = 0x100, OPT_TOKEN };

/* The first certificate in a PEM or DER file, as DER. */
static int read_cert(const char *path, unsigned char **der, size_t *der_len, cli_err *err)
{
    unsigned char *data = NULL, *out = NULL;
    const unsigned char *p;
    size_t len = 0;
    BIO *bio = NULL;
    X509 *x = NULL;
    int n, ok = 0;

    *der = NULL;
    *der_len = 0;
    if (!cli_read_file(path, 1 << 20, &data, &len, err))
        return 0;
    bio = BIO_new_mem_buf(data, (int)len);
    if (bio != NULL)
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) {
        p = data;
        x = d2i_X509(NULL, &p, (long)len);
    }
    ERR_clear_error();
    if (x == NULL) {
        cli_err_set(err, "%s holds no X.509 certificate (PEM or DER)", path);
        goto done;
    }
    n = i2d_X509(x, &out);
    if (n <= 0) {
        cli_err_set_ossl(err, "cannot encode the certificate in %s", path);
        goto done;
    }
    *der = out;
    *der_len = (size_t)n;
    ok = 1;
done:
    X509_free(x);
    BIO_free(bio);
    free(data);
    return ok;
}

/* "PREFIX;object=NAME;type=TYPE" with NAME percent-encoded; malloc'd. */
static char *object_uri(const char *prefix, const char *label, const char *type)
{
    char *esc = cli_uri_escape(label);
    char *uri = NULL;
    size_t n;

    if (esc == NULL)
        return NULL;
    n = strlen(prefix) + strlen(esc) + strlen(type) + 32;
    uri = malloc(n);
    if (uri != NULL)
        snprintf(uri, n, "%s%sobject=%s;type=%s", prefix, strcmp(prefix, "pkcs11:") == 0 ? "" : ";",
                 esc, type);
    free(esc);
    return uri;
}

/* The URI of the certificate just stored, found the way programs will find it. */
static char *find_cert_uri(cli_session *s, mks_key *key, const char *label,
                           const unsigned char *der, size_t der_len)
{
    char *tok = cli_uri_escape(mks_key_get0_token_label(key));
    char *prefix = NULL, *query = NULL, *found = NULL;
    mks_object *objs = NULL;
    size_t n = 0, i, len;

    if (tok == NULL)
        goto done;
    len = strlen(tok) + 16;
    prefix = malloc(len);
    if (prefix == NULL)
        goto done;
    snprintf(prefix, len, "pkcs11:token=%s", tok);
    query = object_uri(prefix, label, "cert");
    if (query == NULL)
        goto done;
    if (mks_objects_find(s->ks, query, MKS_OBJ_CERTIFICATE, &s->pin_ui, &objs, &n) != MKS_OK) {
        objs = NULL;
        n = 0;
    }
    for (i = 0; i < n; i++) {
        if (objs[i].der_len == der_len && memcmp(objs[i].der, der, der_len) == 0 &&
            objs[i].uri != NULL) {
            found = strdup(objs[i].uri);
            break;
        }
    }
    if (found == NULL) {
        cli_fail(CMD, "warning: stored, but %s does not find it", query);
        found = query;
        query = NULL;
    }
done:
    mks_objects_free(objs, n);
    free(query);
    free(prefix);
    free(tok);
    return found;
}

int cmd_import_cert(cli_globals *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *label = NULL, *token = NULL, *cert_path;
    char *token_uri = NULL, *key_uri = NULL, *cert_uri = NULL;
    char token_label[33] = "";
    unsigned char *der = NULL;
    size_t der_len = 0;
    mks_key *key = NULL;
    cli_session s;
    cli_err err;
    int c, session = 0, ret = CLI_EXIT_USAGE;
    mks_rv rv;

    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        switch (c) {
        case OPT_LABEL:
            label = optarg;
            break;
        case OPT_TOKEN:
            token = optarg;
            break;
        case 'h':
            import_usage(stdout);
            return CLI_EXIT_OK;
        default:
            return cli_usage_error(CMD, argv, c);
        }
    }
    if (optind + 1 != argc) {
        if (optind >= argc)
            cli_fail(CMD, "the certificate file is missing (import-cert --label NAME CERT.pem)");
        else
            cli_fail(CMD, "unexpected argument '%s' (one certificate file at a time)",
                     argv[optind + 1]);
        return CLI_EXIT_USAGE;
    }
    cert_path = argv[optind];
    if (label == NULL || *label == '\0') {
        cli_fail(CMD, "--label NAME is required: the label of the key the certificate is for");
        return CLI_EXIT_USAGE;
    }
    if (token != NULL && *token == '\0') {
        cli_fail(CMD, "--token: empty label");
        return CLI_EXIT_USAGE;
    }
    if (!cli_globals_check(g, CMD))
        return CLI_EXIT_USAGE;

    ret = CLI_EXIT_FAIL;
    if (!read_cert(cert_path, &der, &der_len, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    if (token != NULL && !cli_session_find_token(&s, -1, token, &token_uri, token_label))
        goto done;
    key_uri = object_uri(token_uri != NULL ? token_uri : "pkcs11:", label, "private");
    if (key_uri == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }

    rv = mks_key_open(s.ks, key_uri, &s.pin_ui, &key);
    if (rv != MKS_OK) {
        key = NULL;
        if (rv == MKS_ERR_NOT_FOUND)
            cli_fail(CMD, "no private key labelled '%s'%s%s%s (see '%s list')", label,
                     token != NULL ? " on token '" : "", token != NULL ? token : "",
                     token != NULL ? "'" : "", CLI_PROGRAM);
        else if (rv == MKS_ERR_AMBIGUOUS && token == NULL)
            cli_fail_ks(CMD, rv, "several keys are labelled '%s'; choose with --token LABEL",
                        label);
        else
            cli_fail_ks(CMD, rv, "cannot open the key %s", key_uri);
        goto done;
    }
    rv = mks_cert_import(key, label, der, der_len);
    if (rv != MKS_OK) {
        if (rv == MKS_ERR_MISMATCH)
            cli_fail(CMD,
                     "the certificate's public key is not the key %s's (token '%s'); "
                     "refusing",
                     label, mks_key_get0_token_label(key));
        else if (rv == MKS_ERR_EXISTS)
            cli_fail_ks(CMD, rv, "a certificate labelled '%s' is on token '%s' already", label,
                        mks_key_get0_token_label(key));
        else if (rv == MKS_ERR_ARG)
            cli_fail_ks(CMD, rv, "%s is not a certificate the token takes", cert_path);
        else if (rv == MKS_ERR_NO_SPACE)
            cli_fail_ks(CMD, rv, "token '%s' has no room for the certificate",
                        mks_key_get0_token_label(key));
        else
            cli_fail_ks(CMD, rv, "cannot store the certificate on token '%s'",
                        mks_key_get0_token_label(key));
        goto done;
    }
    cert_uri = find_cert_uri(&s, key, label, der, der_len);
    printf("certificate: %s\n", cert_uri != NULL ? cert_uri : "(stored; no URI)");
    printf("key:         %s\n", mks_key_get0_uri(key));
    ret = CLI_EXIT_OK;
done:
    if (key != NULL)
        mks_key_free(key);
    free(cert_uri);
    free(key_uri);
    free(token_uri);
    free(der);
    if (session)
        cli_session_close(&s);
    return ret;
}
