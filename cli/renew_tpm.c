/*
 * renew --tpm: a TPM key has no label and no stored certificate, so the
 * current certificate is named (--cert); the new key is made in the TPM and
 * written to --key-out; import-cert --tpm puts the issued certificate and
 * the new key file in place of the current ones. --same-key signs the CSR
 * with the current key (--key) instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"
#include "parse.h"
#include "renew.h"

/* What renew --tpm reads before it touches the TPM. */
typedef struct tpm_renewal {
    STACK_OF(X509) * certs;
    X509 *cert; /* the current certificate, the first in --cert */
    cli_csr_req req;
    cli_key_arg ka;       /* --same-key: the current key */
    mks_keygen_params kp; /* else the new key's type */
    const char *type;     /* that type as given or as the certificate's key has it */
    char cert_type[32];
} tpm_renewal;

static void tpm_renewal_clear(tpm_renewal *r)
{
    cli_key_arg_clear(&r->ka);
    cli_csr_req_clear(&r->req);
    sk_X509_pop_free(r->certs, X509_free);
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

/* The certificate, the request it makes, the key or key type and the output
 * files, checked; CLI_EXIT_OK, or the exit code after printing why not. */
static int read_inputs(const renew_opts *o, tpm_renewal *r)
{
    cli_err err;

    if (!cli_read_certs(o->cert, &r->certs, &err)) {
        cli_fail(CMD, "--cert: %s", err.msg);
        return CLI_EXIT_FAIL;
    }
    r->cert = sk_X509_value(r->certs, 0);
    if (!renew_req_from_cert(r->cert, &r->req)) {
        cli_fail_ossl(CMD, "cannot copy the subject of %s", o->cert);
        return CLI_EXIT_FAIL;
    }
    if (o->same_key && !cli_key_arg_parse(o->key, &r->ka, &err)) {
        cli_fail(CMD, "--key: %s", err.msg);
        return CLI_EXIT_FAIL;
    }
    if (o->same_key && r->ka.kind == CLI_KEY_PKCS11) {
        cli_fail(CMD, "--key %s is not a TPM key; renew a token key with --label", o->key);
        return CLI_EXIT_USAGE;
    }
    if (!o->same_key) {
        r->type = o->key_type;
        if (r->type == NULL)
            r->type = key_type_of(r->cert, r->cert_type, sizeof(r->cert_type));
        if (!cli_parse_tpm_key_type(r->type, &r->kp, &err)) {
            if (o->key_type != NULL)
                cli_fail(CMD, "--key-type: %s", err.msg);
            else
                cli_fail(CMD,
                         "the key in %s (%s) is of a type TPM keys are not made in; give "
                         "--key-type (ec:P-256, ec:P-384, rsa:2048, rsa:3072)",
                         o->cert, *r->type != '\0' ? r->type : "unknown");
            return CLI_EXIT_USAGE;
        }
        if (!cli_out_check(o->key_out, o->force, &err)) {
            cli_fail(CMD, "%s", err.msg);
            return CLI_EXIT_FAIL;
        }
    }
    if (!cli_out_check(o->out, o->force, &err)) {
        cli_fail(CMD, "%s", err.msg);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

/* --same-key: the current key, which must be the certificate's. */
static int open_current_key(cli_session *s, const renew_opts *o, const tpm_renewal *r,
                            mks_key **key)
{
    const unsigned char *spki;
    size_t spki_len = 0;

    if (!cli_session_open_key(s, &r->ka, key))
        return 0;
    spki = mks_key_get0_spki(*key, &spki_len);
    if (!cli_cert_certifies(r->cert, spki, spki_len)) {
        cli_fail(CMD, "%s is not the key of %s: the certificate certifies another key", o->key,
                 o->cert);
        return 0;
    }
    return 1;
}

/* The new key, made in the TPM and written to --key-out; *written once it is. */
static int make_next_key(cli_session *s, const renew_opts *o, const tpm_renewal *r, mks_key **key,
                         int *written)
{
    char *pem = NULL;
    size_t len = 0;
    cli_err err;
    int ok = 0;

    s->tpm_auth.key_name = o->key_out;
    if (!cli_tpm_auth_new_password(&s->tpm_auth, CMD) ||
        !cli_session_tpm_keygen(s, &r->kp, 0, &pem, &len, key))
        goto done;
    /* The key exists only in this file: written first, and kept if the CSR
     * cannot be (csr --key makes it again from the file). */
    if (!cli_write_file_atomic(o->key_out, pem, len, 0600, o->force, &err)) {
        cli_fail(CMD, "%s; the new key is lost (it existed only in that file)", err.msg);
        goto done;
    }
    *written = 1;
    ok = 1;
done:
    if (pem != NULL) {
        mks_cleanse(pem, len);
        mks_free(pem);
    }
    return ok;
}

static void print_result(const cli_session *s, const renew_opts *o, const tpm_renewal *r)
{
    if (o->same_key)
        printf("key:     %s (same key)\n", o->key);
    else
        printf("pending: TPM key in %s, %s%s (%s)\n", o->key_out, r->type,
               s->tpm_auth.have ? ", with a password" : "", cli_session_tcti(s));
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
}

int renew_tpm(cli_globals *g, const renew_opts *o)
{
    tpm_renewal r = {0};
    mks_key *key = NULL;
    char *csr_pem = NULL;
    size_t csr_len = 0;
    int session = 0, key_written = 0, ret;
    cli_session s;
    cli_err err;

    ret = read_inputs(o, &r);
    if (ret != CLI_EXIT_OK)
        goto done;
    ret = CLI_EXIT_FAIL;
    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    s.tpm_auth.source = o->password_source;
    if (o->same_key ? !open_current_key(&s, o, &r, &key)
                    : !make_next_key(&s, o, &r, &key, &key_written))
        goto done;
    if (!cli_session_make_csr(&s, key, &r.req, &csr_pem, &csr_len) ||
        !cli_write_file_atomic(o->out, csr_pem, csr_len, 0644, o->force, &err)) {
        if (csr_pem != NULL)
            cli_fail(CMD, "%s", err.msg);
        if (key_written)
            cli_fail(CMD, "the new key is in %s; make its CSR with '%s csr --key %s'", o->key_out,
                     CLI_PROGRAM, o->key_out);
        goto done;
    }
    print_result(&s, o, &r);
    ret = CLI_EXIT_OK;
done:
    if (key != NULL)
        mks_key_free(key);
    free(csr_pem);
    tpm_renewal_clear(&r);
    if (session)
        cli_session_close(&s);
    return ret;
}
