/*
 * show --tpm --key FILE|tpmkey:handle=H: a TPM key (type, where it lives,
 * whether it has a password, its public key's SHA-256) and, with --cert,
 * its certificate and whether the certificate is that key's. A TPM stores
 * no certificates and no labels.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "json.h"
#include "lifecycle.h"
#include "show.h"

/* What show --tpm prints. */
typedef struct tpm_view {
    const char *key_arg, *cert_path;
    cli_key_arg ka;
    mks_key *key;
    STACK_OF(X509) * certs; /* --cert */
    mks_object cert;        /* its first certificate, for show_cert_text; der OPENSSL_free'd */
    char *fp;               /* SHA-256 of the public key, hex */
    char where[48], type[24];
    int matches; /* the certificate certifies the key; -1 without --cert */
} tpm_view;

static void tpm_view_clear(tpm_view *v)
{
    if (v->key != NULL)
        mks_key_free(v->key);
    free(v->fp);
    OPENSSL_free(v->cert.der);
    sk_X509_pop_free(v->certs, X509_free);
    cli_key_arg_clear(&v->ka);
}

/* --cert's first certificate; prints why not. */
static int read_cert(tpm_view *v)
{
    unsigned char *der = NULL;
    cli_err err;
    int n;

    if (!cli_read_certs(v->cert_path, &v->certs, &err)) {
        cli_fail(CMD, "--cert: %s", err.msg);
        return 0;
    }
    n = i2d_X509(sk_X509_value(v->certs, 0), &der);
    if (n <= 0) {
        cli_fail_ossl(CMD, "cannot encode the certificate of %s", v->cert_path);
        return 0;
    }
    v->cert.cls = MKS_OBJ_CERTIFICATE;
    v->cert.der = der;
    v->cert.der_len = (size_t)n;
    return 1;
}

/* The key's fingerprint, type and place, and whether --cert certifies it. */
static int describe_key(tpm_view *v)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const unsigned char *spki;
    size_t spki_len = 0;

    spki = mks_key_get0_spki(v->key, &spki_len);
    if (spki == NULL || !EVP_Digest(spki, spki_len, md, &mdlen, EVP_sha256(), NULL) ||
        (v->fp = cli_hex(md, mdlen)) == NULL) {
        cli_fail_ossl(CMD, "cannot hash the public key of %s", v->key_arg);
        return 0;
    }
    if (v->cert.der != NULL)
        v->matches = cli_cert_certifies(sk_X509_value(v->certs, 0), spki, spki_len);
    if (mks_key_get_type(v->key) == MKS_KEY_RSA)
        snprintf(v->type, sizeof(v->type), "rsa %d", mks_key_get_bits(v->key));
    else
        snprintf(v->type, sizeof(v->type), "ec %s", mks_key_get0_curve(v->key));
    if (v->ka.kind == CLI_KEY_TPM_HANDLE)
        snprintf(v->where, sizeof(v->where), "persistent (%s)", v->ka.uri);
    else
        snprintf(v->where, sizeof(v->where), "only in its key file");
    return 1;
}

/* 0 when the certificate cannot be read (printed; the JSON is left unfinished). */
static int print_json(const cli_session *s, const tpm_view *v, time_t now)
{
    mks_key *key = v->key;
    cli_json j;
    cli_err err;

    cli_json_init(&j, stdout);
    cli_json_obj_begin(&j, NULL);
    cli_json_string(&j, "key", v->key_arg);
    cli_json_string(&j, "tcti", cli_session_tcti(s));
    cli_json_string(&j, "key_type", mks_key_get_type(key) == MKS_KEY_RSA ? "rsa" : "ec");
    cli_json_string(&j, "curve",
                    mks_key_get_type(key) == MKS_KEY_EC ? mks_key_get0_curve(key) : NULL);
    cli_json_int(&j, "bits", mks_key_get_bits(key));
    cli_json_string(&j, "persistent", v->ka.kind == CLI_KEY_TPM_HANDLE ? v->ka.uri : NULL);
    if (v->ka.kind == CLI_KEY_TPM_FILE)
        cli_json_bool(&j, "password", v->ka.needs_password);
    else
        cli_json_null(&j, "password");
    cli_json_string(&j, "public_key_sha256", v->fp);
    if (v->cert.der != NULL) {
        cli_cert_info ci;

        if (!cli_cert_info_get(v->cert.der, v->cert.der_len, now, &ci, &err)) {
            cli_fail(CMD, "%s: %s", v->cert_path, err.msg);
            return 0;
        }
        cli_json_obj_begin(&j, "certificate");
        cli_json_string(&j, "file", v->cert_path);
        cli_cert_info_json(&j, &ci);
        cli_json_bool(&j, "certifies_key", v->matches);
        cli_json_obj_end(&j);
        cli_cert_info_clear(&ci);
    } else {
        cli_json_null(&j, "certificate");
    }
    cli_json_obj_end(&j);
    cli_json_end(&j);
    return 1;
}

static void print_text(const cli_session *s, const tpm_view *v, time_t now)
{
    printf("%s  (TPM at %s)\n", v->key_arg, cli_session_tcti(s));
    printf("  %-12s %s, %s\n", "private key", v->type, v->where);
    printf("    %-11s%s\n", "password",
           v->ka.kind == CLI_KEY_TPM_HANDLE ? "(not recorded for a persistent key)"
           : v->ka.needs_password           ? "yes"
                                            : "none (exempt from dictionary-attack lockout)");
    printf("    %-11s%s\n", "pub sha256", v->fp);
    if (v->cert.der != NULL) {
        show_cert_text(&v->cert, now, 0);
        printf("    %-11s%s\n", "key",
               v->matches ? "this key" : "ANOTHER KEY: the certificate does not certify it");
    }
}

int show_tpm(cli_globals *g, const char *key_arg, const char *cert_path, int json)
{
    tpm_view v = {.key_arg = key_arg, .cert_path = cert_path, .matches = -1};
    cli_session s;
    cli_err err;
    int session = 0, ret = CLI_EXIT_FAIL;
    time_t now = time(NULL);

    if (!cli_key_arg_parse(key_arg, &v.ka, &err)) {
        cli_fail(CMD, "--key: %s", err.msg);
        goto done;
    }
    if (v.ka.kind == CLI_KEY_PKCS11) {
        cli_fail(CMD, "--key %s is not a TPM key; show a token key with --label", key_arg);
        ret = CLI_EXIT_USAGE;
        goto done;
    }
    if (cert_path != NULL && !read_cert(&v))
        goto done;
    session = cli_session_open(&s, g, CMD);
    if (!session || !cli_session_open_key(&s, &v.ka, &v.key) || !describe_key(&v))
        goto done;
    if (json) {
        if (!print_json(&s, &v, now))
            goto done;
    } else {
        print_text(&s, &v, now);
    }
    ret = CLI_EXIT_OK;
done:
    tpm_view_clear(&v);
    if (session)
        cli_session_close(&s);
    return ret;
}
