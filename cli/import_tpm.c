/*
 * import-cert --tpm: a TPM keeps no certificates, so the files are all there
 * is. A certificate for the pending key file (--next, from renew --tpm) is a
 * hand-over: the current key file and certificate are kept as FILE.old, the
 * certificate (and --chain) is written to --cert-out, then the pending key
 * replaces --key-ref, each file atomically. Run again after an interruption,
 * it finishes the hand-over without overwriting the .old copies with the
 * new pair. A certificate for --key-ref's own key only replaces --cert-out.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "import_cert.h"
#include "lifecycle.h"

/* import_warn_lost_extensions with the previous certificate: --cert-out's first. */
static void warn_lost_extensions(const import_opts *o, const import_input *in)
{
    STACK_OF(X509) *sk = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    cli_err err;

    if (access(o->cert_out, F_OK) == 0 && cli_read_certs(o->cert_out, &sk, &err) &&
        !cli_x509_der(sk_X509_value(sk, 0), &der, &len))
        der = NULL;
    if (der != NULL && len == in->der_len && memcmp(der, in->der, len) == 0) {
        OPENSSL_free(der); /* the same certificate again: nothing to compare */
        der = NULL;
    }
    import_warn_lost_extensions(o, in, der, len);
    OPENSSL_free(der);
    sk_X509_pop_free(sk, X509_free);
}

/* The public key (SubjectPublicKeyInfo DER) of a TPM key file; NULL with the
 * error printed. */
static unsigned char *tpm_file_spki(cli_session *s, const char *path, size_t *len)
{
    cli_key_arg ka = {0};
    cli_err err;
    mks_key *key = NULL;
    const unsigned char *spki;
    unsigned char *copy = NULL;

    if (!cli_key_arg_parse(path, &ka, &err)) {
        cli_fail(CMD, "%s", err.msg);
        return NULL;
    }
    if (ka.kind != CLI_KEY_TPM_FILE)
        cli_fail(CMD, "%s is not a TPM key file (TSS2 PRIVATE KEY)", path);
    else if (cli_session_open_key(s, &ka, &key) && (spki = mks_key_get0_spki(key, len)) != NULL &&
             (copy = malloc(*len)) != NULL)
        memcpy(copy, spki, *len);
    if (key != NULL)
        mks_key_free(key);
    cli_key_arg_clear(&ka);
    return copy;
}

/* 1 when the first certificate in path certifies the key whose SPKI is given. */
static int file_cert_certifies(const char *path, const unsigned char *spki, size_t len)
{
    STACK_OF(X509) *sk = NULL;
    cli_err err;
    int same;

    if (!cli_read_certs(path, &sk, &err))
        return 0;
    same = cli_cert_certifies(sk_X509_value(sk, 0), spki, len);
    sk_X509_pop_free(sk, X509_free);
    return same;
}

/* Copies a file to FILE.old (atomically, its mode kept). */
static int keep_old(const char *path)
{
    unsigned char *data = NULL;
    size_t len = 0;
    char *old = NULL;
    struct stat sb;
    cli_err err;
    int ok = 0;

    old = malloc(strlen(path) + sizeof(".old"));
    if (old == NULL) {
        cli_fail(CMD, "out of memory");
        return 0;
    }
    sprintf(old, "%s.old", path);
    if (stat(path, &sb) != 0)
        cli_fail(CMD, "cannot keep %s as %s: %s", path, old, strerror(errno));
    else if (!cli_read_file(path, 1 << 20, &data, &len, &err))
        cli_fail(CMD, "cannot keep %s as %s: %s", path, old, err.msg);
    else
        ok = cli_write_replacing(CMD, old, data, len, sb.st_mode & 0644);
    if (data != NULL)
        OPENSSL_cleanse(data, len);
    free(data);
    free(old);
    return ok;
}

int import_tpm(cli_globals *g, const import_opts *o)
{
    import_input in = {0};
    unsigned char *cur = NULL, *next = NULL, *next_pem = NULL;
    size_t cur_len = 0, next_len = 0, next_pem_len = 0;
    int handover, session = 0, ret = CLI_EXIT_FAIL;
    cli_session s;
    cli_err err;

    if (!import_read_input(o, &in))
        goto done;
    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    if (o->next != NULL && access(o->next, F_OK) == 0 &&
        (next = tpm_file_spki(&s, o->next, &next_len)) == NULL)
        goto done;
    if ((cur = tpm_file_spki(&s, o->key_ref, &cur_len)) == NULL)
        goto done;
    handover = next != NULL && cli_same_public_key(next, next_len, in.spki, in.spki_len);
    if (!handover && !cli_same_public_key(cur, cur_len, in.spki, in.spki_len)) {
        cli_fail(CMD, "%s certifies neither %s%s%s", o->cert_path, o->key_ref,
                 next != NULL ? " nor " : "", next != NULL ? o->next : "");
        goto done;
    }

    warn_lost_extensions(o, &in);
    if (handover) {
        /* The pair that serves now, kept; the certificate file only while it
         * is still the current key's (an earlier, interrupted run may have
         * written the new one already). */
        if (!keep_old(o->key_ref) ||
            (access(o->cert_out, F_OK) == 0 && file_cert_certifies(o->cert_out, cur, cur_len) &&
             !keep_old(o->cert_out)))
            goto done;
        if (!cli_read_file(o->next, 1 << 20, &next_pem, &next_pem_len, &err)) {
            cli_fail(CMD, "%s", err.msg);
            goto done;
        }
    }
    if (!cli_write_certs(CMD, o->cert_out, in.x, in.chain))
        goto done;
    if (handover) {
        if (!cli_write_replacing(CMD, o->key_ref, next_pem, next_pem_len, 0600))
            goto done;
        if (unlink(o->next) != 0)
            cli_fail(CMD, "warning: %s is in place as %s, but cannot be removed: %s", o->next,
                     o->key_ref, strerror(errno));
        printf("key:         %s (the renewed key, from %s)\n", o->key_ref, o->next);
        printf("retired:     %s.old (and the certificate it had, if it was still in %s)\n",
               o->key_ref, o->cert_out);
    } else {
        printf("key:         %s (unchanged: the certificate is for this key)\n", o->key_ref);
    }
    printf("cert-out:    %s%s\n", o->cert_out,
           sk_X509_num(in.chain) > 0 ? " (with its chain)" : "");
    printf("next:        reload the services that use %s\n", o->key_ref);
    ret = CLI_EXIT_OK;
done:
    free(cur);
    free(next);
    if (next_pem != NULL)
        OPENSSL_clear_free(next_pem, next_pem_len);
    import_input_clear(&in);
    if (session)
        cli_session_close(&s);
    return ret;
}
