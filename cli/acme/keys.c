/*
 * The keys of an ACME enrollment and what happens to the certificate.
 *
 * The account key signs every request to the CA. By default it is an EC
 * P-256 key labelled acme-account in the token that holds the certificate
 * key (for a TPM key: a TPM key file acme-account.key.pem in the state
 * directory), made the first time it is needed; --acme-account-key names
 * any other hardware key. Like the certificate key it never leaves the
 * hardware: it is loaded through the mtlsks provider.
 *
 * An issued certificate is installed by import-cert, run in this process
 * on the certificate written to the state directory, so that enrollment,
 * renewal (the NAME.next hand-over) and a manual import are one code path.
 */
#include "acme.h"

#include <errno.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cli.h"
#include "lifecycle.h"
#include "parse.h"

extern char **environ;

/* The account key in the token: opened, or made (EC P-256) at first use. */
static int token_account_key(cli_session *s, const char *token_uri, char **uri, cli_err *err)
{
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", ACME_ACCOUNT_LABEL};
    mks_key *key = NULL;
    mks_rv rv;

    *uri = NULL;
    if (mks_uri_object(token_uri, ACME_ACCOUNT_LABEL, NULL, 0, MKS_OBJ_PRIVATE_KEY, uri) !=
        MKS_OK) {
        cli_err_set(err, "out of memory");
        return 0;
    }
    rv = mks_key_open(s->ks, *uri, &s->pin_ui, &key);
    if (rv == MKS_ERR_NOT_FOUND) {
        rv = mks_keygen(s->ks, token_uri, &kp, &s->pin_ui, &key);
        if (rv == MKS_OK)
            fprintf(stderr, "%s: made the ACME account key '%s' (ec:P-256) in the token\n",
                    CLI_PROGRAM, ACME_ACCOUNT_LABEL);
    }
    if (rv != MKS_OK) {
        cli_err_set(err, "the ACME account key %s: %s", *uri,
                    *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
        mks_free(*uri);
        *uri = NULL;
        return 0;
    }
    mks_key_free(key);
    return 1;
}

/* The account key of TPM enrollments: a TPM key file beside the state. */
static int tpm_account_key(cli_session *s, const char *state_dir, char **path, cli_err *err)
{
    mks_keygen_params kp = {MKS_KEY_EC, 0, "P-256", NULL};
    char *pem = NULL;
    size_t len = 0;
    mks_key *key = NULL;
    cli_tpm_auth saved = s->tpm_auth;
    cli_err werr;
    int ok = 0;

    if (asprintf(path, "%s/%s", state_dir, ACME_ACCOUNT_TPM_FILE) < 0) {
        *path = NULL;
        cli_err_set(err, "out of memory");
        return 0;
    }
    if (access(*path, F_OK) == 0)
        return 1;
    /* No password: the key signs unattended, and is exempt from the lockout. */
    s->tpm_auth.have = 0;
    ok = cli_session_tpm_keygen(s, &kp, 0, &pem, &len, &key);
    s->tpm_auth = saved;
    OPENSSL_cleanse(&saved, sizeof(saved));
    if (!ok) {
        cli_err_set(err, "cannot make the ACME account key in the TPM (see above)");
        goto done;
    }
    ok = 0;
    if (!acme_state_dir_make(state_dir, err))
        goto done;
    if (!cli_write_file_atomic(*path, pem, len, 0600, 0, &werr)) {
        cli_err_set(err, "the ACME account key: %s", werr.msg);
        goto done;
    }
    fprintf(stderr, "%s: made the ACME account key %s (ec:P-256, in the TPM)\n", CLI_PROGRAM,
            *path);
    ok = 1;
done:
    if (key != NULL)
        mks_key_free(key);
    if (pem != NULL)
        OPENSSL_clear_free(pem, len);
    if (!ok) {
        free(*path);
        *path = NULL;
    }
    return ok;
}

int acme_account_key(cli_session *s, acme_state *st, const char *state_dir, const char *token_uri,
                     acme_signer *sg, cli_err *err)
{
    cli_key_arg ka = {0};
    mks_key *key = NULL;
    EVP_PKEY *pkey = NULL;
    const unsigned char *spki;
    size_t spki_len = 0;
    char *made = NULL;
    int ok = 0;

    if (st->account_key == NULL) {
        if (!(st->tpm ? tpm_account_key(s, state_dir, &made, err)
                      : token_account_key(s, token_uri, &made, err)))
            return 0;
        st->account_key = made;
    }
    if (!cli_key_arg_parse(st->account_key, &ka, err))
        goto done;
    /* The public half from the keystore, the signer from the provider. */
    if (!cli_session_open_key(s, &ka, &key)) {
        cli_err_set(err, "cannot open the ACME account key %s (see above)", st->account_key);
        goto done;
    }
    if (!(ka.kind == CLI_KEY_TPM_FILE ? cli_session_decode_tpm_pkey(s, ka.pem, ka.pem_len, &pkey)
                                      : cli_session_load_pkey(s, ka.uri, &pkey))) {
        cli_err_set(err, "cannot load the ACME account key %s (see above)", st->account_key);
        goto done;
    }
    spki = mks_key_get0_spki(key, &spki_len);
    if (!acme_signer_init(sg, s->libctx, pkey, spki, spki_len, err))
        goto done;
    ok = 1;
done:
    EVP_PKEY_free(pkey);
    if (key != NULL)
        mks_key_free(key);
    cli_key_arg_clear(&ka);
    return ok;
}

int acme_token_key(cli_session *s, const char *token_uri, const char *label,
                   const mks_keygen_params *kp, mks_key **out, int *made, cli_err *err)
{
    char *uri = NULL;
    mks_keygen_params gp;
    mks_rv rv;
    int ret = 0;

    *out = NULL;
    *made = 0;
    if (mks_uri_object(token_uri, label, NULL, 0, MKS_OBJ_PRIVATE_KEY, &uri) != MKS_OK) {
        cli_err_set(err, "cannot name key '%s' on the token as a pkcs11: URI", label);
        return 0;
    }
    rv = mks_key_open(s->ks, uri, &s->pin_ui, out);
    if (rv == MKS_ERR_NOT_FOUND && kp == NULL) {
        ret = -1;
    } else if (rv == MKS_ERR_NOT_FOUND) {
        gp = *kp;
        gp.label = label;
        rv = mks_keygen(s->ks, token_uri, &gp, &s->pin_ui, out);
        *made = rv == MKS_OK;
    }
    if (rv == MKS_OK) {
        ret = 1;
    } else if (ret == 0) {
        *out = NULL;
        cli_err_set(err, "%s '%s': %s",
                    kp != NULL ? "cannot make the key pair" : "cannot open the key", label,
                    *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
    }
    mks_free(uri);
    return ret;
}

int acme_tpm_key(cli_session *s, const char *path, const char *key_type, mks_key **out, int *made,
                 cli_err *err)
{
    mks_keygen_params kp = {0};
    cli_key_arg ka = {0};
    char *pem = NULL;
    size_t len = 0;
    cli_err kerr;
    int ok = 0;

    *out = NULL;
    *made = 0;
    s->tpm_auth.key_name = path;
    if (access(path, F_OK) == 0) {
        if (!cli_key_arg_parse(path, &ka, &kerr) || ka.kind != CLI_KEY_TPM_FILE) {
            cli_err_set(err, "%s exists and is not a TPM key file: choose another file", path);
            goto done;
        }
        if (!cli_session_open_key(s, &ka, out)) {
            cli_err_set(err, "cannot open the TPM key %s (see above)", path);
            goto done;
        }
        ok = 1;
        goto done;
    }
    if (!cli_parse_tpm_key_type(key_type != NULL ? key_type : "ec:P-256", &kp, &kerr) ||
        !cli_session_tpm_keygen(s, &kp, 0, &pem, &len, out)) {
        cli_err_set(err, "cannot make a TPM key (see above)");
        goto done;
    }
    if (!cli_write_file_atomic(path, pem, len, 0600, 0, &kerr)) {
        cli_err_set(err, "%s; the new TPM key is lost (it existed only in that file)", kerr.msg);
        goto done;
    }
    *made = 1;
    ok = 1;
done:
    if (!ok && *out != NULL) {
        mks_key_free(*out);
        *out = NULL;
    }
    if (pem != NULL)
        OPENSSL_clear_free(pem, len);
    cli_key_arg_clear(&ka);
    return ok;
}

/* The request's subject: CN = the first DNS name when it fits, else empty
 * (ACME CAs take the names from the SANs). */
static X509_NAME *csr_subject(const acme_state *st)
{
    X509_NAME *n = X509_NAME_new();
    size_t i;

    for (i = 0; n != NULL && i < st->nsans; i++) {
        const char *v = st->sans[i] + 4;

        if (strncasecmp(st->sans[i], "DNS:", 4) != 0 || strlen(v) > 64)
            continue;
        if (!X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)v, -1, -1,
                                        0)) {
            X509_NAME_free(n);
            n = NULL;
        }
        break;
    }
    return n;
}

int acme_csr(cli_session *s, mks_key *key, const acme_state *st, unsigned char **der, size_t *len)
{
    cli_csr_req req = {0};
    char *pem = NULL;
    size_t pem_len = 0, i;
    BIO *bio = NULL;
    X509_REQ *x = NULL;
    unsigned char *p = NULL;
    cli_err err;
    int n, ok = 0;

    *der = NULL;
    req.usage = CLI_USAGE_BOTH;
    req.subject = csr_subject(st);
    req.sans = sk_GENERAL_NAME_new_null();
    if (req.subject == NULL || req.sans == NULL ||
        (st->usage != NULL && !cli_parse_usage(st->usage, &req.usage, &err))) {
        cli_fail(s->cmd, "cannot build the CSR's subject and usage");
        goto done;
    }
    for (i = 0; i < st->nsans; i++) {
        GENERAL_NAME *gn = NULL;

        if (!cli_parse_san(st->sans[i], &gn, &err) || !sk_GENERAL_NAME_push(req.sans, gn)) {
            GENERAL_NAME_free(gn);
            cli_fail(s->cmd, "--san %s: %s", st->sans[i], err.msg);
            goto done;
        }
    }
    if (!cli_session_make_csr(s, key, &req, &pem, &pem_len))
        goto done;
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    x = bio != NULL ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
    if (x == NULL || (n = i2d_X509_REQ(x, &p)) <= 0) {
        cli_fail_ossl(s->cmd, "cannot encode the CSR");
        goto done;
    }
    *der = p;
    *len = (size_t)n;
    ok = 1;
done:
    X509_REQ_free(x);
    BIO_free(bio);
    free(pem);
    cli_csr_req_clear(&req);
    return ok;
}

int acme_issue(cli_session *s, acme_client *c, acme_state *st, const char *state_dir,
               const char *token_uri, mks_key *key, acme_issued *is, cli_err *err)
{
    unsigned char *csr = NULL, spki[2048];
    size_t csr_len = 0, spki_len = 0;
    const unsigned char *sp = mks_key_get0_spki(key, &spki_len);
    acme_signer sg = {0};
    int ok = 0;

    if (spki_len > sizeof(spki) || !acme_csr(s, key, st, &csr, &csr_len)) {
        cli_err_set(err, "cannot make the CSR (see above)");
        mks_key_free(key);
        return 0;
    }
    memcpy(spki, sp, spki_len);
    mks_key_free(key);
    if (!acme_account_key(s, st, state_dir, token_uri, &sg, err))
        goto done;
    c->account = &sg;
    if (!acme_order(c, csr, csr_len, spki, spki_len, is, err))
        goto done;
    free(st->account_url);
    st->account_url = strdup(c->account_url);
    if (st->account_url == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    is->signatures = sg.signatures + 1;
    ok = 1;
done:
    c->account = NULL;
    acme_status_clear();
    acme_signer_clear(&sg);
    OPENSSL_free(csr);
    return ok;
}

/* ---- installing what the CA issued ------------------------------------------ */

/* DIR/LABEL.<suffix> (the label escaped as for the state file). */
static char *state_file(const char *dir, const char *label, const char *suffix)
{
    char *json = acme_state_path(dir, label), *out = NULL;
    size_t n;

    if (json == NULL)
        return NULL;
    n = strlen(json) - strlen(".json");
    if (asprintf(&out, "%.*s%s", (int)n, json, suffix) < 0)
        out = NULL;
    free(json);
    return out;
}

/* Splits the PEM chain: leaf and CA certificates, PEM each. */
static int split_chain(const char *chain, char **leaf, char **cas, cli_err *err)
{
    BIO *in = BIO_new_mem_buf(chain, -1), *a = BIO_new(BIO_s_mem()), *b = BIO_new(BIO_s_mem());
    X509 *x;
    char *data;
    long n;
    int k = 0, ok = 0;

    *leaf = *cas = NULL;
    if (in == NULL || a == NULL || b == NULL)
        goto done;
    while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
        int w = PEM_write_bio_X509(k++ == 0 ? a : b, x);

        X509_free(x);
        if (!w)
            goto done;
    }
    ERR_clear_error();
    n = BIO_get_mem_data(a, &data);
    *leaf = strndup(data, (size_t)n);
    n = BIO_get_mem_data(b, &data);
    *cas = strndup(data, (size_t)n);
    ok = *leaf != NULL && *cas != NULL && k > 0;
done:
    if (!ok)
        cli_err_set(err, "cannot read the certificate chain the CA sent");
    BIO_free(in);
    BIO_free(a);
    BIO_free(b);
    return ok;
}

/* Writes the issued certificate's files in the state directory. */
static int write_issued(const acme_state *st, const char *dir, const char *chain, char **leaf_path,
                        char **ca_path, char **cas, cli_err *err)
{
    char *leaf = NULL;
    int ok = 0;

    *leaf_path = state_file(dir, st->label, ".crt.pem");
    *ca_path = state_file(dir, st->label, ".chain.pem");
    if (*leaf_path == NULL || *ca_path == NULL) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    if (!split_chain(chain, &leaf, cas, err) ||
        !cli_write_file_atomic(*leaf_path, leaf, strlen(leaf), 0644, 1, err) ||
        (**cas != '\0' && !cli_write_file_atomic(*ca_path, *cas, strlen(*cas), 0644, 1, err)))
        goto done;
    ok = 1;
done:
    free(leaf);
    return ok;
}

int acme_install(cli_globals *g, const acme_state *st, const char *state_dir,
                 const char *next_key_file, const char *chain_pem)
{
    char *leaf = NULL, *ca = NULL, *cas = NULL;
    char *argv[16];
    int argc = 0, rc = CLI_EXIT_FAIL;
    cli_err err;

    if (!write_issued(st, state_dir, chain_pem, &leaf, &ca, &cas, &err)) {
        cli_fail(NULL, "%s", err.msg);
        goto done;
    }
    argv[argc++] = "import-cert";
    if (st->tpm) {
        argv[argc++] = "--tpm";
        if (next_key_file != NULL) {
            argv[argc++] = "--next";
            argv[argc++] = (char *)next_key_file;
        }
    } else {
        argv[argc++] = "--label";
        argv[argc++] = st->label;
        argv[argc++] = "--token";
        argv[argc++] = st->token;
    }
    argv[argc++] = "--key-ref";
    argv[argc++] = st->key_ref;
    argv[argc++] = "--cert-out";
    argv[argc++] = st->cert_out;
    if (*cas != '\0') {
        argv[argc++] = "--chain";
        argv[argc++] = ca;
    }
    argv[argc++] = leaf;
    argv[argc] = NULL;
    optind = 0; /* glibc: a new getopt scan */
    rc = cmd_import_cert(g, argc, argv);
    if (rc != CLI_EXIT_OK) {
        cli_fail(NULL,
                 "the issued certificate is kept in %s; once the cause is fixed, run the "
                 "same command again",
                 leaf);
        goto done;
    }
    if (st->chain_out != NULL &&
        !cli_write_file_atomic(st->chain_out, cas, strlen(cas), 0644, 1, &err)) {
        cli_fail(NULL, "--chain-out: %s", err.msg);
        rc = CLI_EXIT_FAIL;
        goto done;
    }
    if (st->chain_out != NULL)
        printf("chain-out:   %s\n", st->chain_out);
done:
    free(leaf);
    free(ca);
    free(cas);
    return rc == CLI_EXIT_OK;
}

/* ---- hooks ------------------------------------------------------------------- */

int acme_run_sh(const char *cmd, char *const args[], char *const extra_env[], cli_err *err)
{
    size_t nargs = 0, nenv = 0, nextra = 0, i, k = 0;
    char **argv = NULL, **env = NULL, *script = NULL;
    pid_t pid;
    int rc, status = 0, ok = 0;

    while (args != NULL && args[nargs] != NULL)
        nargs++;
    while (environ[nenv] != NULL)
        nenv++;
    while (extra_env != NULL && extra_env[nextra] != NULL)
        nextra++;
    /* sh -c 'CMD "$@"' sh ARGS...: CMD may carry its own arguments; ours
     * (names and values from the CA) are never parsed by the shell. */
    argv = calloc(nargs + 5, sizeof(*argv));
    env = calloc(nenv + nextra + 1, sizeof(*env));
    if (argv == NULL || env == NULL || asprintf(&script, "%s \"$@\"", cmd) < 0) {
        script = NULL;
        cli_err_set(err, "out of memory");
        goto done;
    }
    argv[0] = "sh";
    argv[1] = "-c";
    argv[2] = script;
    argv[3] = "sh";
    for (i = 0; i < nargs; i++)
        argv[4 + i] = args[i];
    for (i = 0; i < nenv; i++) {
        size_t j;
        int replaced = 0;

        for (j = 0; j < nextra && !replaced; j++) {
            const char *eq = strchr(extra_env[j], '=');

            replaced = eq != NULL &&
                       strncmp(environ[i], extra_env[j], (size_t)(eq - extra_env[j] + 1)) == 0;
        }
        if (!replaced)
            env[k++] = environ[i];
    }
    for (i = 0; i < nextra; i++)
        env[k++] = extra_env[i];
    acme_status_clear();
    fflush(stdout);
    fflush(stderr);
    rc = posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, env);
    if (rc != 0) {
        cli_err_set(err, "cannot run /bin/sh: %s", strerror(rc));
        goto done;
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            cli_err_set(err, "waiting for '%s': %s", cmd, strerror(errno));
            goto done;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        ok = 1;
    else if (WIFEXITED(status))
        cli_err_set(err, "'%s' exited with %d", cmd, WEXITSTATUS(status));
    else
        cli_err_set(err, "'%s' was killed by signal %d", cmd,
                    WIFSIGNALED(status) ? WTERMSIG(status) : 0);
done:
    free(script);
    free(argv);
    free(env);
    return ok;
}

int acme_deploy_hook(const acme_state *st, cli_err *err)
{
    char *env[5] = {NULL, NULL, NULL, NULL, NULL};
    int ok = 0;

    if (st->deploy_hook == NULL)
        return 1;
    if (asprintf(&env[0], "MTLSKS_LABEL=%s", st->label) < 0 ||
        asprintf(&env[1], "MTLSKS_CERT=%s", st->cert_out) < 0 ||
        asprintf(&env[2], "MTLSKS_KEY_REF=%s", st->key_ref) < 0 ||
        asprintf(&env[3], "MTLSKS_CHAIN=%s", st->chain_out != NULL ? st->chain_out : "") < 0) {
        cli_err_set(err, "out of memory");
        goto done;
    }
    ok = acme_run_sh(st->deploy_hook, NULL, env, err);
done:
    free(env[0]);
    free(env[1]);
    free(env[2]);
    free(env[3]);
    return ok;
}
