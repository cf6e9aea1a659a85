/*
 * mtls-keystore renew --label NAME of an ACME-enrolled certificate: the
 * enrollment repeated with what the state file recorded, unattended. The
 * new key is the pending key the hand-over knows (NAME.next in the token,
 * KEY.next beside a TPM key file); import-cert hands over, so the current
 * key and certificate serve until the new pair is complete. A renewal that
 * fails leaves the pending key in place, and the next run continues with it.
 * --same-key renews the certificate only.
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "acme.h"
#include "cli.h"
#include "lifecycle.h"
#include "parse.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: %s renew --label NAME [--same-key] [--state-dir DIR]\n"
            "\n"
            "Renews a certificate that 'enroll --acme' enrolled, from the same ACME CA with\n"
            "what was recorded then (SANs, challenge, account, files): a new key made in\n"
            "the same hardware, the certificate ordered and handed over as import-cert\n"
            "does (the old pair serves until the new one is in place), the deploy hook\n"
            "run. A renewal that fails is continued by the next run. For certificates\n"
            "from other CAs, renew takes --out FILE.csr (see '%s renew --help').\n"
            "\n"
            "  --label NAME     the enrollment to renew\n"
            "  --same-key       keep the key; renew the certificate only\n"
            "  --state-dir DIR  where enroll recorded it (default: $MTLSKS_STATE_DIR, else %s)\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM, ACME_DEFAULT_STATE_DIR);
}

typedef struct renew_run {
    cli_globals *g;
    const char *cmd, *dir;
    acme_state st;
    int same_key;
    char *next_file;  /* TPM: KEY.next */
    char *next_label; /* token: NAME.next */
    int pending;      /* a new key exists */
    acme_renewal *res;
} renew_run;

static void fail(renew_run *r, const char *fmt, ...) CLI_PRINTF(2, 3);
static void fail(renew_run *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->res->err.msg, sizeof(r->res->err.msg), fmt, ap);
    va_end(ap);
    acme_status_clear();
    cli_fail(r->cmd, "%s", r->res->err.msg);
}

/* The key the new certificate is for, in the token: NAME itself, the
 * pending NAME.next of an earlier run, or a new NAME.next like NAME. */
static int token_cert_key(renew_run *r, cli_session *s, const char *token_uri, mks_key **out)
{
    mks_keygen_params kp = {0};
    mks_key *cur = NULL;
    cli_err err;
    int rc, made = 0;

    rc = acme_token_key(s, token_uri, r->same_key ? r->st.label : r->next_label, NULL, out, &made,
                        &err);
    if (rc == 1 && !r->same_key) {
        r->pending = 1;
        fprintf(stderr, "%s %s: continuing with the pending key '%s' an earlier run made\n",
                CLI_PROGRAM, r->cmd, r->next_label);
    }
    if (rc == 1)
        return 1;
    /* No pending key: a new one like the current. */
    if (rc == -1 && !r->same_key)
        rc = acme_token_key(s, token_uri, r->st.label, NULL, &cur, &made, &err);
    if (rc != 1 || cur == NULL) {
        if (rc == 0)
            fail(r, "token '%s': %s", r->st.token, err.msg);
        else
            fail(r, "no private key labelled '%s' in token '%s' (see '%s list')", r->st.label,
                 r->st.token, CLI_PROGRAM);
        return 0;
    }
    kp.type = mks_key_get_type(cur);
    kp.bits = kp.type == MKS_KEY_RSA ? mks_key_get_bits(cur) : 0;
    kp.curve = mks_key_get0_curve(cur);
    rc = acme_token_key(s, token_uri, r->next_label, &kp, out, &made, &err);
    mks_key_free(cur);
    if (rc != 1) {
        fail(r, "token '%s': %s", r->st.token, err.msg);
        return 0;
    }
    r->pending = 1;
    return 1;
}

/* The same for a TPM key: its file, KEY.next from an earlier run, or a new KEY.next. */
static int tpm_cert_key(renew_run *r, cli_session *s, mks_key **out)
{
    const char *path = r->same_key ? r->st.key_ref : r->next_file;
    cli_err err;
    int made = 0;

    if (r->same_key && access(path, F_OK) != 0) {
        fail(r, "the TPM key file %s is gone", path);
        return 0;
    }
    if (!acme_tpm_key(s, path, r->st.key_type, out, &made, &err)) {
        fail(r, "%s", err.msg);
        return 0;
    }
    r->pending = !r->same_key;
    if (r->pending && !made)
        fprintf(stderr, "%s %s: continuing with the pending TPM key %s\n", CLI_PROGRAM, r->cmd,
                path);
    return 1;
}

/* The new key, its CSR, the order: everything that needs the session. */
static int obtain(renew_run *r, acme_issued *is)
{
    cli_session s;
    char *token_uri = NULL, token_label[33];
    mks_key *key = NULL;
    acme_client c = {0};
    cli_err err;
    int ok = 0;

    if (!cli_session_open(&s, r->g, r->cmd)) {
        fail(r, "cannot open the keystore (see above)");
        return 0;
    }
    /* The CA first: unreachable, it costs no key. */
    if (!acme_client_open(&c, &r->st, NULL, &err)) {
        fail(r, "%s", err.msg);
        goto done;
    }
    if (!r->st.tpm) {
        if (!cli_session_find_token(&s, -1, r->st.token, 0, &token_uri, token_label)) {
            fail(r, "token '%s' of '%s' is not there (see above)", r->st.token, r->st.label);
            goto done;
        }
        if (!token_cert_key(r, &s, token_uri, &key))
            goto done;
    } else if (!tpm_cert_key(r, &s, &key)) {
        goto done;
    }
    ok = acme_issue(&s, &c, &r->st, r->dir, token_uri, key, is, &err);
    key = NULL;
    if (!ok)
        fail(r, "%s", err.msg);
done:
    acme_client_close(&c);
    if (key != NULL)
        mks_key_free(key);
    free(token_uri);
    cli_session_close(&s);
    return ok;
}

/* The new certificate's notAfter, ISO 8601, from --cert-out. */
static void read_not_after(const acme_state *st, char buf[24])
{
    STACK_OF(X509) *sk = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    cli_cert_info ci;
    cli_err err;

    buf[0] = '\0';
    if (cli_read_certs(st->cert_out, &sk, &err) && cli_x509_der(sk_X509_value(sk, 0), &der, &len) &&
        cli_cert_info_get(der, len, 0, &ci, &err)) {
        snprintf(buf, 24, "%s", ci.not_after);
        cli_cert_info_clear(&ci);
    }
    OPENSSL_free(der);
    sk_X509_pop_free(sk, X509_free);
}

int acme_renew_label(cli_globals *g, const char *cmd, const char *dir, const char *label,
                     int same_key, acme_renewal *res)
{
    renew_run r = {g, cmd, dir, {0}, same_key, NULL, NULL, 0, res};
    acme_issued is = {0};
    char *path = acme_state_path(dir, label);
    cli_err err;
    int rc, ok = 0;

    memset(res, 0, sizeof(*res));
    if (path == NULL) {
        fail(&r, "out of memory");
        goto done;
    }
    rc = acme_state_load(path, &r.st, &err);
    if (rc <= 0) {
        if (rc < 0)
            fail(&r,
                 "no ACME enrollment of '%s' is recorded in %s (enroll --acme records it; "
                 "for a CA without ACME, renew takes --out FILE.csr)",
                 label, dir);
        else
            fail(&r, "%s", err.msg);
        goto done;
    }
    r.next_label = cli_label_join(r.st.label, CLI_SUFFIX_NEXT);
    r.next_file = cli_label_join(r.st.key_ref, CLI_SUFFIX_NEXT);
    if (r.next_label == NULL || r.next_file == NULL) {
        fail(&r, "out of memory");
        goto done;
    }
    if (!obtain(&r, &is)) {
        if (r.pending)
            cli_fail(cmd, "the new key %s stays; the next renew of '%s' continues with it",
                     r.st.tpm ? r.next_file : r.next_label, label);
        goto done;
    }
    if (!acme_install(g, &r.st, dir, r.st.tpm && !same_key ? r.next_file : NULL, is.chain_pem)) {
        fail(&r, "the new certificate could not be put in place (see above)");
        goto done;
    }
    free(r.st.revoked_serial);
    r.st.revoked_serial = NULL;
    if (!acme_state_save(dir, &r.st, &err))
        cli_fail(cmd, "warning: %s", err.msg);
    res->renewed = 1;
    read_not_after(&r.st, res->not_after);
    printf("renewed:     '%s', %s, valid until %s\n", label, same_key ? "same key" : "new key",
           res->not_after);
    if (!acme_deploy_hook(&r.st, &err)) {
        fail(&r, "the deploy hook failed: %s (the new certificate is in place)", err.msg);
        goto done;
    }
    ok = 1;
done:
    acme_issued_clear(&is);
    free(r.next_label);
    free(r.next_file);
    free(path);
    acme_state_clear(&r.st);
    return ok;
}

int acme_cmd_renew(cli_globals *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"label", required_argument, NULL, 'l'},
        {"same-key", no_argument, NULL, 's'},
        {"state-dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *label = NULL, *dir = NULL;
    acme_renewal res;
    int c, same_key = 0;

    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        switch (c) {
        case 'l':
            label = optarg;
            break;
        case 's':
            same_key = 1;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        default:
            return cli_usage_error("renew", argv, c);
        }
    }
    if (optind < argc) {
        cli_fail("renew", "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (label == NULL || *label == '\0') {
        cli_fail("renew", "--label NAME is required: the enrollment to renew");
        return CLI_EXIT_USAGE;
    }
    if (!cli_globals_check(g, "renew"))
        return CLI_EXIT_USAGE;
    return acme_renew_label(g, "renew", acme_state_dir(dir), label, same_key, &res) ? CLI_EXIT_OK
                                                                                    : CLI_EXIT_FAIL;
}
