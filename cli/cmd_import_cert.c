/*
 * mtls-keystore import-cert: stores an issued certificate in the token
 * next to its key, with the key's CKA_ID and label, so that
 * "pkcs11:...;object=NAME;type=cert" loads it. A certificate for another
 * key is refused.
 *
 * It also finishes renewals (see lifecycle.h for the labels):
 *
 * - The certificate is for the pending key NAME.next (renew): a hand-over.
 *   1. the certificate is stored with the new key's id, labelled NAME.next;
 *   2. the new key pair and certificate are relabelled NAME. For a moment
 *      two pairs carry NAME, told apart by their ids: key references
 *      (which name id and label) keep finding the key they named, and a
 *      URI by label alone is ambiguous, which fails closed;
 *   3. the key reference (--key-ref) and certificate file (--cert-out) are
 *      rewritten, each atomically;
 *   4. the old pair and certificate are relabelled NAME.old (a previous
 *      NAME.old is destroyed first). Servers still running with the old
 *      key find it by its id and keep signing until they reload.
 *   Each step can be repeated: run again after an interruption, import-cert
 *   finds where it stopped. Until step 2 the old pair serves alone.
 *
 * - The certificate is for NAME's key, which has a certificate already
 *   (renew --same-key): the new certificate is stored as NAME.next, the
 *   old one destroyed (the key is unchanged, so nothing that runs needs
 *   it), and the new one relabelled NAME.
 *
 * --chain stores CA certificates as NAME.chain; --cert-out writes the
 * certificate and its chain where servers read them.
 *
 * import-cert --tpm: a TPM keeps no certificates, so the files are all there
 * is. A certificate for the pending key file (--next, from renew --tpm) is a
 * hand-over: the current key file and certificate are kept as FILE.old, the
 * certificate (and --chain) is written to --cert-out, then the pending key
 * replaces --key-ref, each file atomically. Run again after an interruption,
 * it finishes the hand-over without overwriting the .old copies with the
 * new pair. A certificate for --key-ref's own key only replaces --cert-out.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"
#include "lifecycle.h"
#include "parse.h"

#define CMD "import-cert"

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

typedef struct import_opts {
    const char *label, *token, *key_ref, *chain, *cert_out, *cert_path;
    const char *next; /* --tpm: the pending key file */
    int tpm;
} import_opts;

typedef struct import_state {
    cli_session s;
    int session;
    char *token_uri;
    char token_label[33];
    char *next_label, *old_label, *chain_label;
    X509 *x;
    unsigned char *der, *spki;
    size_t der_len, spki_len;
    STACK_OF(X509) * chain; /* --chain, in file order */
    mks_object *keys;       /* private keys labelled NAME and NAME.next */
    size_t nkeys;
    const mks_object *match; /* the key the certificate is for */
    mks_key *key;
    int handover;
} import_state;

static int read_input(const import_opts *o, import_state *st)
{
    STACK_OF(X509) *sk = NULL;
    unsigned char *p = NULL;
    cli_err err;
    int i, n;

    if (!cli_read_certs(o->cert_path, &sk, &err)) {
        cli_fail(CMD, "%s", err.msg);
        return 0;
    }
    st->x = sk_X509_shift(sk);
    sk_X509_pop_free(sk, X509_free);
    if (!cli_x509_der(st->x, &st->der, &st->der_len) ||
        (n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(st->x), &p)) <= 0) {
        cli_fail_ossl(CMD, "cannot encode the certificate in %s", o->cert_path);
        return 0;
    }
    st->spki = p;
    st->spki_len = (size_t)n;
    if (o->chain == NULL)
        return 1;
    if (!cli_read_certs(o->chain, &st->chain, &err)) {
        cli_fail(CMD, "--chain: %s", err.msg);
        return 0;
    }
    for (i = 0; i < sk_X509_num(st->chain); i++) {
        X509 *c = sk_X509_value(st->chain, i);

        if (X509_cmp(c, st->x) == 0) {
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

/* The private keys labelled NAME and NAME.next, and the one the certificate is for. */
static int find_key(const import_opts *o, import_state *st)
{
    const char *labels[2] = {o->label, st->next_label};
    size_t i, k, n;
    mks_object *objs;
    int have_name = 0, have_next = 0;

    for (k = 0; k < 2; k++) {
        if (!cli_find_objects(&st->s, st->token_uri, labels[k], NULL, 0, "private",
                              MKS_OBJ_PRIVATE_KEY, &objs, &n))
            return 0;
        if (n > 0) {
            mks_object *v = realloc(st->keys, (st->nkeys + n) * sizeof(*v));

            if (v == NULL) {
                mks_objects_free(objs, n);
                cli_fail(CMD, "out of memory");
                return 0;
            }
            st->keys = v;
            memcpy(st->keys + st->nkeys, objs, n * sizeof(*objs));
            st->nkeys += n;
            free(objs); /* the members now belong to st->keys */
        } else {
            mks_objects_free(objs, n);
        }
    }
    for (i = 0; i < st->nkeys; i++) {
        const mks_object *kobj = &st->keys[i];

        if (strcmp(kobj->label, o->label) == 0)
            have_name = 1;
        else
            have_next = 1;
        if (st->match == NULL &&
            cli_same_public_key(kobj->der, kobj->der_len, st->spki, st->spki_len))
            st->match = kobj;
    }
    if (st->match != NULL)
        return 1;
    if (!have_name && !have_next)
        cli_fail(CMD, "no private key labelled '%s' on token '%s' (see '%s list')", o->label,
                 st->token_label, CLI_PROGRAM);
    else
        cli_fail(CMD,
                 "the certificate's public key is not the key %s's%s%s%s (token '%s'); "
                 "refusing",
                 o->label, have_next ? " nor the pending key " : "",
                 have_next ? st->next_label : "", have_next ? "'s" : "", st->token_label);
    return 0;
}

/* Opens the matched key by its id and current label. */
static int open_match(import_state *st, const char *label)
{
    char *uri = cli_object_uri(st->token_uri, label, st->match->id, st->match->id_len, "private");
    mks_rv rv;

    if (st->key != NULL) {
        mks_key_free(st->key);
        st->key = NULL;
    }
    if (uri == NULL) {
        cli_fail(CMD, "out of memory");
        return 0;
    }
    rv = mks_key_open(st->s.ks, uri, &st->s.pin_ui, &st->key);
    if (rv != MKS_OK) {
        st->key = NULL;
        cli_fail_ks(CMD, rv, "cannot open the key %s", uri);
    }
    free(uri);
    return rv == MKS_OK;
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

/*
 * The CSR itself is not kept, so import-cert compares with what it knows the
 * CSR asked for: renew's CSR copies the SANs and TLS usages of the current
 * certificate (`prev`: NAME's on the token, or --cert-out's with --tpm), so
 * a new certificate must have them; a first certificate (prev NULL) must
 * have an extendedKeyUsage, which every CSR mtls-keystore makes asks for. A
 * certificate that lacks them was issued without the CSR's extensions: said,
 * with the CA step's fix. The certificate is imported all the same.
 */
static void warn_lost_extensions(const import_opts *o, const import_state *st,
                                 const unsigned char *prev_der, size_t prev_len)
{
    cli_cert_info now, prev;
    char lost[512] = "";
    int have_prev = 0;
    cli_err err;

    if (!cli_cert_info_get(st->der, st->der_len, 0, &now, &err))
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

/* The same, with the previous certificate: one labelled NAME on the token. */
static void warn_lost_extensions_token(const import_opts *o, import_state *st)
{
    mks_object *objs = NULL;
    const mks_object *prev = NULL;
    size_t n = 0, i;

    if (!cli_find_objects(&st->s, st->token_uri, o->label, NULL, 0, "cert", MKS_OBJ_CERTIFICATE,
                          &objs, &n))
        n = 0;
    for (i = 0; i < n && prev == NULL; i++)
        if (objs[i].der != NULL &&
            (objs[i].der_len != st->der_len || memcmp(objs[i].der, st->der, st->der_len) != 0))
            prev = &objs[i];
    warn_lost_extensions(o, st, prev != NULL ? prev->der : NULL, prev != NULL ? prev->der_len : 0);
    mks_objects_free(objs, n);
}

/* The same, with the previous certificate: --cert-out's first (--tpm). */
static void warn_lost_extensions_file(const import_opts *o, const import_state *st)
{
    STACK_OF(X509) *sk = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    cli_err err;

    if (access(o->cert_out, F_OK) == 0 && cli_read_certs(o->cert_out, &sk, &err) &&
        !cli_x509_der(sk_X509_value(sk, 0), &der, &len))
        der = NULL;
    if (der != NULL && len == st->der_len && memcmp(der, st->der, len) == 0) {
        OPENSSL_free(der); /* the same certificate again: nothing to compare */
        der = NULL;
    }
    warn_lost_extensions(o, st, der, len);
    OPENSSL_free(der);
    sk_X509_pop_free(sk, X509_free);
}

/* The label (NAME or NAME.next) the certificate carries on the token with the
 * key's id, if it is stored already. */
static int stored_label(const import_opts *o, import_state *st, char **label)
{
    mks_object *objs = NULL;
    size_t n = 0, i;

    *label = NULL;
    if (!cli_find_objects(&st->s, st->token_uri, NULL, st->match->id, st->match->id_len, "cert",
                          MKS_OBJ_CERTIFICATE, &objs, &n))
        return 0;
    for (i = 0; i < n && *label == NULL; i++)
        if (objs[i].der_len == st->der_len && memcmp(objs[i].der, st->der, st->der_len) == 0 &&
            objs[i].label != NULL &&
            (strcmp(objs[i].label, o->label) == 0 || strcmp(objs[i].label, st->next_label) == 0))
            *label = strdup(objs[i].label);
    mks_objects_free(objs, n);
    return 1;
}

static int store_cert(const import_opts *o, import_state *st, const char *label)
{
    mks_rv rv = mks_cert_import(st->key, label, st->der, st->der_len);

    if (rv == MKS_OK)
        return 1;
    if (rv == MKS_ERR_MISMATCH)
        cli_fail(CMD, "the certificate's public key is not the key %s's (token '%s'); refusing",
                 o->label, st->token_label);
    else if (rv == MKS_ERR_EXISTS)
        cli_fail_ks(CMD, rv, "a certificate labelled '%s' is on token '%s' already", label,
                    st->token_label);
    else if (rv == MKS_ERR_ARG)
        cli_fail_ks(CMD, rv, "%s is not a certificate the token takes", o->cert_path);
    else if (rv == MKS_ERR_NO_SPACE)
        cli_fail_ks(CMD, rv, "token '%s' has no room for the certificate", st->token_label);
    else
        cli_fail_ks(CMD, rv, "cannot store the certificate on token '%s'", st->token_label);
    return 0;
}

/* mks_objects_set_label / _destroy on a URI built from the parts; prints errors. */
static int relabel(import_state *st, const char *label, const unsigned char *id, size_t id_len,
                   const char *type, const char *new_label)
{
    char *uri = cli_object_uri(st->token_uri, label, id, id_len, type);
    mks_rv rv;

    if (uri == NULL) {
        cli_fail(CMD, "out of memory");
        return 0;
    }
    if (new_label != NULL)
        rv = mks_objects_set_label(st->s.ks, uri, MKS_OBJ_ANY, new_label, &st->s.pin_ui, NULL);
    else
        rv = mks_objects_destroy(st->s.ks, uri, MKS_OBJ_ANY, &st->s.pin_ui, NULL);
    if (rv != MKS_OK)
        cli_fail_ks(CMD, rv, "cannot %s %s (run import-cert again to continue)",
                    new_label != NULL ? "relabel" : "destroy", uri);
    free(uri);
    return rv == MKS_OK;
}

/* --chain: the token's NAME.chain certificates become the given ones. */
static int store_chain(import_state *st)
{
    mks_object *objs = NULL;
    size_t n = 0, i;
    int k, same, ok = 0;

    if (!cli_find_objects(&st->s, st->token_uri, st->chain_label, NULL, 0, "cert",
                          MKS_OBJ_CERTIFICATE, &objs, &n))
        return 0;
    same = n == (size_t)sk_X509_num(st->chain);
    for (i = 0; same && i < n; i++) {
        int found = 0;

        for (k = 0; !found && k < sk_X509_num(st->chain); k++) {
            unsigned char *der = NULL;
            size_t len = 0;

            if (cli_x509_der(sk_X509_value(st->chain, k), &der, &len))
                found = len == objs[i].der_len && memcmp(der, objs[i].der, len) == 0;
            OPENSSL_free(der);
        }
        same = found;
    }
    mks_objects_free(objs, n);
    if (same)
        return 1;
    /* Nothing that runs reads the chain from the token after starting: replace it. */
    if (n > 0 && !relabel(st, st->chain_label, NULL, 0, "cert", NULL))
        return 0;
    for (k = 0; k < sk_X509_num(st->chain); k++) {
        unsigned char *der = NULL;
        size_t len = 0;
        mks_rv rv;

        if (!cli_x509_der(sk_X509_value(st->chain, k), &der, &len)) {
            cli_fail_ossl(CMD, "cannot encode chain certificate %d", k + 1);
            goto done;
        }
        rv = mks_cert_store_authority(st->s.ks, st->token_uri, st->chain_label, der, len,
                                      &st->s.pin_ui);
        OPENSSL_free(der);
        if (rv != MKS_OK) {
            cli_fail_ks(CMD, rv, "cannot store chain certificate %d on token '%s'", k + 1,
                        st->token_label);
            goto done;
        }
    }
    ok = 1;
done:
    return ok;
}

/* The chain for --cert-out: --chain, else the token's NAME.chain certificates
 * in issuing order (each one's subject the previous one's issuer). */
static STACK_OF(X509) * chain_for_file(import_state *st)
{
    STACK_OF(X509) *pool = sk_X509_new_null(), *out = sk_X509_new_null();
    mks_object *objs = NULL;
    size_t n = 0, i;
    X509 *cur = st->x;
    int k;

    if (pool == NULL || out == NULL)
        goto fail;
    if (st->chain != NULL) {
        for (k = 0; k < sk_X509_num(st->chain); k++)
            if (!X509_up_ref(sk_X509_value(st->chain, k)) ||
                !sk_X509_push(out, sk_X509_value(st->chain, k)))
                goto fail;
        sk_X509_free(pool);
        return out;
    }
    if (!cli_find_objects(&st->s, st->token_uri, st->chain_label, NULL, 0, "cert",
                          MKS_OBJ_CERTIFICATE, &objs, &n))
        goto fail;
    for (i = 0; i < n; i++) {
        const unsigned char *p = objs[i].der;
        X509 *c = p != NULL ? d2i_X509(NULL, &p, (long)objs[i].der_len) : NULL;

        if (c != NULL && !sk_X509_push(pool, c))
            X509_free(c);
    }
    mks_objects_free(objs, n);
    while (sk_X509_num(pool) > 0) {
        int next = 0;

        for (k = 0; k < sk_X509_num(pool); k++)
            if (X509_NAME_cmp(X509_get_subject_name(sk_X509_value(pool, k)),
                              X509_get_issuer_name(cur)) == 0) {
                next = k;
                break;
            }
        cur = sk_X509_delete(pool, next);
        if (!sk_X509_push(out, cur)) {
            X509_free(cur);
            goto fail;
        }
    }
    sk_X509_free(pool);
    return out;
fail:
    cli_fail(CMD, "cannot collect the chain for --cert-out");
    sk_X509_pop_free(pool, X509_free);
    sk_X509_pop_free(out, X509_free);
    return NULL;
}

static int write_files(const import_opts *o, import_state *st)
{
    if (o->key_ref != NULL) {
        char *pem = NULL;
        size_t len = 0;
        mks_rv rv = mks_keyref_encode_pem(mks_key_get0_uri(st->key), &pem, &len);

        if (rv != MKS_OK) {
            cli_fail_ks(CMD, rv, "cannot encode the key reference");
            return 0;
        }
        if (!cli_write_replacing(CMD, o->key_ref, pem, len, 0600)) {
            free(pem);
            return 0;
        }
        free(pem);
    }
    if (o->cert_out != NULL) {
        STACK_OF(X509) *chain = chain_for_file(st);
        BIO *bio = BIO_new(BIO_s_mem());
        char *data;
        long len;
        int k, ok;

        ok = chain != NULL && bio != NULL && PEM_write_bio_X509(bio, st->x);
        for (k = 0; ok && k < sk_X509_num(chain); k++)
            ok = PEM_write_bio_X509(bio, sk_X509_value(chain, k));
        if (ok) {
            len = BIO_get_mem_data(bio, &data);
            ok = cli_write_replacing(CMD, o->cert_out, data, (size_t)len, 0644);
        } else {
            cli_fail_ossl(CMD, "cannot write the certificate as PEM");
        }
        sk_X509_pop_free(chain, X509_free);
        BIO_free(bio);
        if (!ok)
            return 0;
    }
    return 1;
}

/* The ids (other than the new key's) that objects labelled NAME carry. */
static int old_ids(const import_opts *o, import_state *st, mks_object **out, size_t *n)
{
    mks_object *objs = NULL;
    size_t m = 0, i, j, k = 0;

    if (!cli_find_objects(&st->s, st->token_uri, o->label, NULL, 0, NULL, MKS_OBJ_ANY, &objs, &m))
        return 0;
    /* Keep one object per distinct id other than the new key's, first come. */
    for (i = 0; i < m; i++) {
        int dup = cli_same_id(&objs[i], st->match->id, st->match->id_len) || objs[i].id_len == 0;

        for (j = 0; !dup && j < k; j++)
            dup = cli_same_id(&objs[j], objs[i].id, objs[i].id_len);
        if (dup) {
            free(objs[i].label);
            free(objs[i].id);
            free(objs[i].uri);
            free(objs[i].der);
            continue;
        }
        objs[k++] = objs[i];
    }
    *out = objs;
    *n = k;
    return 1;
}

/* Steps 2 to 4 of a hand-over (step 1 is done). */
static int handover(const import_opts *o, import_state *st, size_t *nretired)
{
    mks_object *old = NULL;
    size_t nold = 0, i;
    int ok = 0;

    *nretired = 0;
    if (!relabel(st, st->next_label, st->match->id, st->match->id_len, NULL, o->label))
        return 0;
    if (!open_match(st, o->label) || !write_files(o, st))
        return 0;
    if (!old_ids(o, st, &old, &nold))
        return 0;
    if (nold > 0 && !relabel(st, st->old_label, NULL, 0, NULL, NULL))
        goto done;
    for (i = 0; i < nold; i++)
        if (!relabel(st, o->label, old[i].id, old[i].id_len, NULL, st->old_label))
            goto done;
    *nretired = nold;
    ok = 1;
done:
    mks_objects_free(old, nold);
    return ok;
}

static void print_result(const import_opts *o, import_state *st, size_t nretired)
{
    char *cert_uri = NULL;
    mks_object *objs = NULL;
    size_t n = 0, i;

    if (cli_find_objects(&st->s, st->token_uri, o->label, st->match->id, st->match->id_len, "cert",
                         MKS_OBJ_CERTIFICATE, &objs, &n)) {
        for (i = 0; i < n && cert_uri == NULL; i++)
            if (objs[i].der_len == st->der_len && memcmp(objs[i].der, st->der, st->der_len) == 0)
                cert_uri = objs[i].uri;
    }
    printf("certificate: %s\n", cert_uri != NULL ? cert_uri : "(stored; no URI)");
    printf("key:         %s\n", mks_key_get0_uri(st->key));
    if (st->chain != NULL)
        printf("chain:       %d CA certificate%s labelled '%s'\n", sk_X509_num(st->chain),
               sk_X509_num(st->chain) == 1 ? "" : "s", st->chain_label);
    if (o->key_ref != NULL)
        printf("key-ref:     %s\n", o->key_ref);
    if (o->cert_out != NULL)
        printf("cert-out:    %s\n", o->cert_out);
    if (o->key_ref != NULL && o->cert_out == NULL)
        cli_fail(CMD,
                 "warning: --key-ref without --cert-out: certificate files that servers read "
                 "with %s still hold the previous certificate, and a server restarted with them "
                 "fails ('key values mismatch'); write them with '%s import-cert --label %s "
                 "--key-ref %s --cert-out FILE %s' (safe to repeat)",
                 o->key_ref, CLI_PROGRAM, o->label, o->key_ref, o->cert_path);
    if (nretired > 0) {
        printf("retired:     the previous key pair is now labelled '%s'; servers that still\n"
               "             run with it keep signing until they reload. Once all have\n"
               "             reloaded: %s delete --label %s --token %s\n",
               st->old_label, CLI_PROGRAM, st->old_label, st->token_label);
        if (o->key_ref == NULL)
            cli_fail(CMD,
                     "warning: key reference files that name the previous key find no key "
                     "once their server reloads: rewrite each with '%s import-cert --label "
                     "%s --key-ref FILE %s' (safe to repeat)",
                     CLI_PROGRAM, o->label, o->cert_path);
    }
    mks_objects_free(objs, n);
}

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

    *exit_now = CLI_EXIT_USAGE;
    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
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
        case 'h':
            import_usage(stdout);
            *exit_now = CLI_EXIT_OK;
            return 0;
        default:
            *exit_now = cli_usage_error(CMD, argv, c);
            return 0;
        }
    }
    if (optind + 1 != argc) {
        if (optind >= argc)
            cli_fail(CMD, "the certificate file is missing (import-cert --label NAME CERT.pem)");
        else
            cli_fail(CMD, "unexpected argument '%s' (one certificate file at a time)",
                     argv[optind + 1]);
        return 0;
    }
    o->cert_path = argv[optind];
    if (o->tpm || o->next != NULL) {
        if (!o->tpm || o->label != NULL || o->token != NULL) {
            cli_fail(CMD, "--tpm imports a TPM key's certificate into files (--key-ref, --next, "
                          "--cert-out); --label and --token name token keys");
            return 0;
        }
        if (o->key_ref == NULL || *o->key_ref == '\0' || o->cert_out == NULL ||
            *o->cert_out == '\0' || (o->next != NULL && *o->next == '\0') ||
            (o->chain != NULL && *o->chain == '\0')) {
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

/* ------------------------------------------------------------------------ */
/* TPM key files                                                             */

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

static int import_tpm(cli_globals *g, const import_opts *o)
{
    import_state st = {0};
    unsigned char *cur = NULL, *next = NULL, *next_pem = NULL;
    size_t cur_len = 0, next_len = 0, next_pem_len = 0;
    BIO *bio = NULL;
    char *data;
    long len;
    int k, ok, handover, ret = CLI_EXIT_FAIL;
    cli_err err;

    if (!read_input(o, &st))
        goto done;
    st.session = cli_session_open(&st.s, g, CMD);
    if (!st.session)
        goto done;
    if (o->next != NULL && access(o->next, F_OK) == 0 &&
        (next = tpm_file_spki(&st.s, o->next, &next_len)) == NULL)
        goto done;
    if ((cur = tpm_file_spki(&st.s, o->key_ref, &cur_len)) == NULL)
        goto done;
    handover = next != NULL && cli_same_public_key(next, next_len, st.spki, st.spki_len);
    if (!handover && !cli_same_public_key(cur, cur_len, st.spki, st.spki_len)) {
        cli_fail(CMD, "%s certifies neither %s%s%s", o->cert_path, o->key_ref,
                 next != NULL ? " nor " : "", next != NULL ? o->next : "");
        goto done;
    }

    warn_lost_extensions_file(o, &st);
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
    bio = BIO_new(BIO_s_mem());
    ok = bio != NULL && PEM_write_bio_X509(bio, st.x);
    for (k = 0; ok && k < sk_X509_num(st.chain); k++)
        ok = PEM_write_bio_X509(bio, sk_X509_value(st.chain, k));
    if (!ok) {
        cli_fail_ossl(CMD, "cannot write the certificate as PEM");
        goto done;
    }
    len = BIO_get_mem_data(bio, &data);
    if (!cli_write_replacing(CMD, o->cert_out, data, (size_t)len, 0644))
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
           sk_X509_num(st.chain) > 0 ? " (with its chain)" : "");
    printf("next:        reload the services that use %s\n", o->key_ref);
    ret = CLI_EXIT_OK;
done:
    BIO_free(bio);
    free(cur);
    free(next);
    if (next_pem != NULL) {
        OPENSSL_cleanse(next_pem, next_pem_len);
        free(next_pem);
    }
    X509_free(st.x);
    OPENSSL_free(st.der);
    OPENSSL_free(st.spki);
    sk_X509_pop_free(st.chain, X509_free);
    if (st.session)
        cli_session_close(&st.s);
    return ret;
}

int cmd_import_cert(cli_globals *g, int argc, char **argv)
{
    import_opts o = {0};
    import_state st = {0};
    char *have = NULL;
    size_t nretired = 0;
    cli_err err;
    int ret, exit_now;

    if (!parse_options(g, argc, argv, &o, &exit_now))
        return exit_now;
    if (o.tpm)
        return import_tpm(g, &o);

    ret = CLI_EXIT_FAIL;
    st.next_label = cli_label_join(o.label, CLI_SUFFIX_NEXT);
    st.old_label = cli_label_join(o.label, CLI_SUFFIX_OLD);
    st.chain_label = cli_label_join(o.label, CLI_SUFFIX_CHAIN);
    if (st.next_label == NULL || st.old_label == NULL || st.chain_label == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    if (!read_input(&o, &st))
        goto done;
    if ((o.key_ref != NULL && !cli_out_check(o.key_ref, 1, &err)) ||
        (o.cert_out != NULL && !cli_out_check(o.cert_out, 1, &err))) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    st.session = cli_session_open(&st.s, g, CMD);
    if (!st.session)
        goto done;
    {
        const char *labels[2] = {o.label, st.next_label};

        if (!cli_find_label_token(&st.s, labels, 2, MKS_OBJ_PRIVATE_KEY, o.token, &st.token_uri,
                                  st.token_label)) {
            goto done;
        }
    }
    if (!find_key(&o, &st) || !open_match(&st, st.match->label))
        goto done;
    {
        size_t i;

        st.handover = cli_label_role(st.match->label) == CLI_ROLE_PENDING;
        for (i = 0; i < st.nkeys; i++)
            if (&st.keys[i] != st.match && strcmp(st.keys[i].label, o.label) == 0 &&
                !cli_same_id(&st.keys[i], st.match->id, st.match->id_len))
                st.handover = 1;
    }

    warn_lost_extensions_token(&o, &st);
    /* Step 1: the certificate on the token, with the key's id. */
    if (!stored_label(&o, &st, &have))
        goto done;
    if (have == NULL) {
        mks_object *objs = NULL;
        size_t n = 0;
        const char *label = st.next_label;

        if (!st.handover) {
            if (!cli_find_objects(&st.s, st.token_uri, o.label, NULL, 0, "cert",
                                  MKS_OBJ_CERTIFICATE, &objs, &n))
                goto done;
            mks_objects_free(objs, n);
            if (n == 0)
                label = o.label;
        }
        if (!store_cert(&o, &st, label))
            goto done;
        have = strdup(label);
        if (have == NULL) {
            cli_fail(CMD, "out of memory");
            goto done;
        }
    }
    if (st.chain != NULL && !store_chain(&st))
        goto done;

    if (st.handover) {
        if (!handover(&o, &st, &nretired))
            goto done;
    } else {
        if (strcmp(have, st.next_label) == 0) {
            /* Same key, new certificate: the old one is of no use to anything that runs. */
            if (!relabel(&st, o.label, st.match->id, st.match->id_len, "cert", NULL) ||
                !relabel(&st, st.next_label, st.match->id, st.match->id_len, "cert", o.label))
                goto done;
        }
        if (!write_files(&o, &st))
            goto done;
    }
    print_result(&o, &st, nretired);
    ret = CLI_EXIT_OK;
done:
    if (st.key != NULL)
        mks_key_free(st.key);
    mks_objects_free(st.keys, st.nkeys);
    free(have);
    X509_free(st.x);
    OPENSSL_free(st.der);
    OPENSSL_free(st.spki);
    sk_X509_pop_free(st.chain, X509_free);
    free(st.token_uri);
    free(st.next_label);
    free(st.old_label);
    free(st.chain_label);
    if (st.session)
        cli_session_close(&st.s);
    return ret;
}
