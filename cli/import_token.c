/*
 * import-cert of a token key's certificate: stored in the token next to its
 * key, with the key's CKA_ID and label (see lifecycle.h for the labels).
 *
 * - The certificate is for the pending key NAME.next (renew): a hand-over.
 *   The certificate is stored with the new key's id, labelled NAME.next;
 *   then cli_handover makes the new pair NAME (rewriting --key-ref and
 *   --cert-out, each atomically, on the way) and the old one NAME.old.
 *   Run again after an interruption, import-cert finds where it stopped.
 *
 * - The certificate is for NAME's key, which has a certificate already
 *   (renew --same-key): the new certificate is stored as NAME.next, the
 *   old one destroyed (the key is unchanged, so nothing that runs needs
 *   it), and the new one relabelled NAME.
 *
 * --chain stores CA certificates as NAME.chain; --cert-out writes the
 * certificate and its chain where servers read them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "import_cert.h"
#include "lifecycle.h"

typedef struct import_state {
    const import_opts *o;
    cli_session s;
    int session;
    char *token_uri;
    char token_label[33];
    char *next_label, *old_label, *chain_label;
    import_input in;
    mks_object *keys[2]; /* private keys labelled NAME and NAME.next */
    size_t nkeys[2];
    const mks_object *match; /* the key the certificate is for */
    mks_key *key;
    int handover;
} import_state;

/* The private keys labelled NAME and NAME.next, and the one the certificate is for. */
static int find_key(const import_opts *o, import_state *st)
{
    const char *labels[2] = {o->label, st->next_label};
    size_t i, k;

    for (k = 0; k < 2; k++) {
        if (!cli_find_objects(&st->s, st->token_uri, labels[k], NULL, 0, MKS_OBJ_PRIVATE_KEY,
                              MKS_OBJ_PRIVATE_KEY, &st->keys[k], &st->nkeys[k]))
            return 0;
        for (i = 0; i < st->nkeys[k] && st->match == NULL; i++)
            if (cli_same_public_key(st->keys[k][i].der, st->keys[k][i].der_len, st->in.spki,
                                    st->in.spki_len))
                st->match = &st->keys[k][i];
    }
    if (st->match != NULL)
        return 1;
    if (st->nkeys[0] == 0 && st->nkeys[1] == 0)
        cli_fail(CMD, "no private key labelled '%s' on token '%s' (see '%s list')", o->label,
                 st->token_label, CLI_PROGRAM);
    else
        cli_fail(CMD,
                 "the certificate's public key is not the key %s's%s%s%s (token '%s'); "
                 "refusing",
                 o->label, st->nkeys[1] > 0 ? " nor the pending key " : "",
                 st->nkeys[1] > 0 ? st->next_label : "", st->nkeys[1] > 0 ? "'s" : "",
                 st->token_label);
    return 0;
}

/* A hand-over: the key is the pending one, or NAME is another key's. */
static int is_handover(const import_state *st)
{
    size_t i;

    if (cli_label_role(st->match->label) == CLI_ROLE_PENDING)
        return 1;
    for (i = 0; i < st->nkeys[0]; i++)
        if (&st->keys[0][i] != st->match &&
            !cli_same_id(&st->keys[0][i], st->match->id, st->match->id_len))
            return 1;
    return 0;
}

/* Opens the matched key by its id and current label. */
static int open_match(import_state *st, const char *label)
{
    char *uri = cli_uri_object(CMD, st->token_uri, label, st->match->id, st->match->id_len,
                               MKS_OBJ_PRIVATE_KEY);
    mks_rv rv;

    if (st->key != NULL) {
        mks_key_free(st->key);
        st->key = NULL;
    }
    if (uri == NULL)
        return 0;
    rv = mks_key_open(st->s.ks, uri, &st->s.pin_ui, &st->key);
    if (rv != MKS_OK) {
        st->key = NULL;
        cli_fail_ks(CMD, rv, "cannot open the key %s", uri);
    }
    mks_free(uri);
    return rv == MKS_OK;
}

/* import_warn_lost_extensions with the previous certificate: one labelled NAME on the token. */
static void warn_lost_extensions(const import_opts *o, import_state *st)
{
    mks_object *objs = NULL;
    const mks_object *prev = NULL;
    size_t n = 0, i;

    if (!cli_find_objects(&st->s, st->token_uri, o->label, NULL, 0, MKS_OBJ_CERTIFICATE,
                          MKS_OBJ_CERTIFICATE, &objs, &n))
        n = 0;
    for (i = 0; i < n && prev == NULL; i++)
        if (objs[i].der != NULL && (objs[i].der_len != st->in.der_len ||
                                    memcmp(objs[i].der, st->in.der, st->in.der_len) != 0))
            prev = &objs[i];
    import_warn_lost_extensions(o, &st->in, prev != NULL ? prev->der : NULL,
                                prev != NULL ? prev->der_len : 0);
    mks_objects_free(objs, n);
}

/* The label (NAME or NAME.next) the certificate carries on the token with the
 * key's id, if it is stored already. */
static int stored_label(const import_opts *o, import_state *st, char **label)
{
    mks_object *objs = NULL;
    size_t n = 0, i;

    *label = NULL;
    if (!cli_find_objects(&st->s, st->token_uri, NULL, st->match->id, st->match->id_len,
                          MKS_OBJ_CERTIFICATE, MKS_OBJ_CERTIFICATE, &objs, &n))
        return 0;
    for (i = 0; i < n && *label == NULL; i++)
        if (objs[i].der_len == st->in.der_len &&
            memcmp(objs[i].der, st->in.der, st->in.der_len) == 0 && objs[i].label != NULL &&
            (strcmp(objs[i].label, o->label) == 0 || strcmp(objs[i].label, st->next_label) == 0))
            *label = strdup(objs[i].label);
    mks_objects_free(objs, n);
    return 1;
}

static int store_cert(const import_opts *o, import_state *st, const char *label)
{
    mks_rv rv = mks_cert_import(st->key, label, st->in.der, st->in.der_len);

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

/* --chain: the token's NAME.chain certificates become the given ones. */
static int store_chain(import_state *st)
{
    mks_object *objs = NULL;
    size_t n = 0, i;
    int k, same, ok = 0;

    if (!cli_find_objects(&st->s, st->token_uri, st->chain_label, NULL, 0, MKS_OBJ_CERTIFICATE,
                          MKS_OBJ_CERTIFICATE, &objs, &n))
        return 0;
    same = n == (size_t)sk_X509_num(st->in.chain);
    for (i = 0; same && i < n; i++) {
        int found = 0;

        for (k = 0; !found && k < sk_X509_num(st->in.chain); k++) {
            unsigned char *der = NULL;
            size_t len = 0;

            if (cli_x509_der(sk_X509_value(st->in.chain, k), &der, &len))
                found = len == objs[i].der_len && memcmp(der, objs[i].der, len) == 0;
            OPENSSL_free(der);
        }
        same = found;
    }
    mks_objects_free(objs, n);
    if (same)
        return 1;
    /* Nothing that runs reads the chain from the token after starting: replace it. */
    if (n > 0 &&
        !cli_relabel(&st->s, st->token_uri, st->chain_label, NULL, 0, MKS_OBJ_CERTIFICATE, NULL))
        return 0;
    for (k = 0; k < sk_X509_num(st->in.chain); k++) {
        unsigned char *der = NULL;
        size_t len = 0;
        mks_rv rv;

        if (!cli_x509_der(sk_X509_value(st->in.chain, k), &der, &len)) {
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
    X509 *cur = st->in.x;
    int k;

    if (pool == NULL || out == NULL)
        goto fail;
    if (st->in.chain != NULL) {
        for (k = 0; k < sk_X509_num(st->in.chain); k++)
            if (!X509_up_ref(sk_X509_value(st->in.chain, k)) ||
                !sk_X509_push(out, sk_X509_value(st->in.chain, k)))
                goto fail;
        sk_X509_free(pool);
        return out;
    }
    if (!cli_find_objects(&st->s, st->token_uri, st->chain_label, NULL, 0, MKS_OBJ_CERTIFICATE,
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
            mks_free(pem);
            return 0;
        }
        mks_free(pem);
    }
    if (o->cert_out != NULL) {
        STACK_OF(X509) *chain = chain_for_file(st);
        int ok;

        if (chain != NULL) {
            ok = cli_write_certs(CMD, o->cert_out, st->in.x, chain);
        } else {
            cli_fail_ossl(CMD, "cannot write the certificate as PEM");
            ok = 0;
        }
        sk_X509_pop_free(chain, X509_free);
        if (!ok)
            return 0;
    }
    return 1;
}

static void print_result(const import_opts *o, import_state *st, size_t nretired)
{
    char *cert_uri = NULL;
    mks_object *objs = NULL;
    size_t n = 0, i;

    if (cli_find_objects(&st->s, st->token_uri, o->label, st->match->id, st->match->id_len,
                         MKS_OBJ_CERTIFICATE, MKS_OBJ_CERTIFICATE, &objs, &n)) {
        for (i = 0; i < n && cert_uri == NULL; i++)
            if (objs[i].der_len == st->in.der_len &&
                memcmp(objs[i].der, st->in.der, st->in.der_len) == 0)
                cert_uri = objs[i].uri;
    }
    printf("certificate: %s\n", cert_uri != NULL ? cert_uri : "(stored; no URI)");
    printf("key:         %s\n", mks_key_get0_uri(st->key));
    if (st->in.chain != NULL)
        printf("chain:       %d CA certificate%s labelled '%s'\n", sk_X509_num(st->in.chain),
               sk_X509_num(st->in.chain) == 1 ? "" : "s", st->chain_label);
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

/* cli_handover's step 2: the key reference and certificate file name the new key. */
static int handover_files(void *arg)
{
    import_state *st = arg;

    return open_match(st, st->o->label) && write_files(st->o, st);
}

/*
 * The certificate on the token with the key's id (step 1 of a hand-over):
 * labelled NAME.next for a hand-over or when NAME has a certificate already,
 * else NAME. *have is the label it carries (malloc'd), also when an earlier
 * run stored it.
 */
static int store_step(const import_opts *o, import_state *st, char **have)
{
    mks_object *objs = NULL;
    size_t n = 0;
    const char *label = st->next_label;

    if (!stored_label(o, st, have))
        return 0;
    if (*have != NULL)
        return 1;
    if (!st->handover) {
        if (!cli_find_objects(&st->s, st->token_uri, o->label, NULL, 0, MKS_OBJ_CERTIFICATE,
                              MKS_OBJ_CERTIFICATE, &objs, &n))
            return 0;
        mks_objects_free(objs, n);
        if (n == 0)
            label = o->label;
    }
    if (!store_cert(o, st, label))
        return 0;
    *have = strdup(label);
    if (*have == NULL) {
        cli_fail(CMD, "out of memory");
        return 0;
    }
    return 1;
}

int import_token(cli_globals *g, const import_opts *o)
{
    import_state st = {0};
    const char *labels[2];
    char *have = NULL;
    size_t nretired = 0;
    cli_err err;
    int ret = CLI_EXIT_FAIL;

    st.o = o;
    st.next_label = cli_label_join(o->label, CLI_SUFFIX_NEXT);
    st.old_label = cli_label_join(o->label, CLI_SUFFIX_OLD);
    st.chain_label = cli_label_join(o->label, CLI_SUFFIX_CHAIN);
    if (st.next_label == NULL || st.old_label == NULL || st.chain_label == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    if (!import_read_input(o, &st.in))
        goto done;
    if ((o->key_ref != NULL && !cli_out_check(o->key_ref, 1, &err)) ||
        (o->cert_out != NULL && !cli_out_check(o->cert_out, 1, &err))) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    st.session = cli_session_open(&st.s, g, CMD);
    if (!st.session)
        goto done;
    labels[0] = o->label;
    labels[1] = st.next_label;
    if (!cli_find_label_token(&st.s, labels, 2, MKS_OBJ_PRIVATE_KEY, o->token, &st.token_uri,
                              st.token_label) ||
        !find_key(o, &st) || !open_match(&st, st.match->label))
        goto done;
    st.handover = is_handover(&st);

    warn_lost_extensions(o, &st);
    if (!store_step(o, &st, &have) || (st.in.chain != NULL && !store_chain(&st)))
        goto done;
    if (st.handover) {
        if (!cli_handover(&st.s, st.token_uri, o->label, st.match->id, st.match->id_len,
                          handover_files, &st, &nretired))
            goto done;
    } else {
        /* Same key, new certificate: the old one is of no use to anything that runs. */
        if (strcmp(have, st.next_label) == 0 &&
            (!cli_relabel(&st.s, st.token_uri, o->label, st.match->id, st.match->id_len,
                          MKS_OBJ_CERTIFICATE, NULL) ||
             !cli_relabel(&st.s, st.token_uri, st.next_label, st.match->id, st.match->id_len,
                          MKS_OBJ_CERTIFICATE, o->label)))
            goto done;
        if (!write_files(o, &st))
            goto done;
    }
    print_result(o, &st, nretired);
    ret = CLI_EXIT_OK;
done:
    if (st.key != NULL)
        mks_key_free(st.key);
    mks_objects_free(st.keys[0], st.nkeys[0]);
    mks_objects_free(st.keys[1], st.nkeys[1]);
    free(have);
    import_input_clear(&st.in);
    free(st.token_uri);
    free(st.next_label);
    free(st.old_label);
    free(st.chain_label);
    if (st.session)
        cli_session_close(&st.s);
    return ret;
}
