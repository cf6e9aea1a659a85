/*
 * mtls-keystore revoke: asks the ACME CA that issued an enrolled
 * certificate to revoke it (RFC 8555 section 7.6), signed by the account
 * key in hardware. The state records the revocation, so the next
 * `check --renew` replaces the certificate (with a new key).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "acme/acme.h"
#include "cli.h"
#include "lifecycle.h"

#define CMD "revoke"

static const char *const reasons[] = {
    "unspecified",   "keyCompromise",        "cACompromise",    "affiliationChanged",
    "superseded",    "cessationOfOperation", "certificateHold", NULL, /* 7 is unused */
    "removeFromCRL", "privilegeWithdrawn",   "aACompromise",
};
#define NREASONS (sizeof(reasons) / sizeof(reasons[0]))

static void usage(FILE *f)
{
    size_t i;

    fprintf(f,
            "Usage: %s revoke --label NAME [--reason REASON] [--state-dir DIR]\n"
            "\n"
            "Revokes the certificate that 'enroll --acme' (or a renewal) put in NAME's\n"
            "--cert-out, at the ACME CA that issued it, signed by the ACME account key.\n"
            "The next 'check --renew' replaces it, with a new key; remove NAME's state\n"
            "file to stop renewing it.\n"
            "\n"
            "  --label NAME     the enrollment\n"
            "  --reason REASON  the RFC 5280 reason (default unspecified):",
            CLI_PROGRAM);
    for (i = 0; i < NREASONS; i++)
        if (reasons[i] != NULL)
            fprintf(f, "%s%s", i % 4 == 0 ? "\n                   " : " ", reasons[i]);
    fprintf(f,
            "\n"
            "  --state-dir DIR  where enroll recorded it (default: $MTLSKS_STATE_DIR, else %s)\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            ACME_DEFAULT_STATE_DIR);
}

static int reason_code(const char *s)
{
    size_t i;

    for (i = 0; i < NREASONS; i++)
        if (reasons[i] != NULL && strcmp(reasons[i], s) == 0)
            return (int)i;
    return -1;
}

/* The leaf of --cert-out: DER, and its serial in hex. */
static int read_leaf(const acme_state *st, unsigned char **der, size_t *len, char **serial)
{
    STACK_OF(X509) *sk = NULL;
    cli_cert_info ci;
    cli_err err;
    int ok = 0;

    *der = NULL;
    *serial = NULL;
    if (!cli_read_certs(st->cert_out, &sk, &err)) {
        cli_fail(CMD, "the certificate of '%s': %s", st->label, err.msg);
        return 0;
    }
    if (!cli_x509_der(sk_X509_value(sk, 0), der, len) ||
        !cli_cert_info_get(*der, *len, 0, &ci, &err)) {
        cli_fail(CMD, "cannot read the certificate in %s", st->cert_out);
        goto done;
    }
    *serial = strdup(ci.serial);
    cli_cert_info_clear(&ci);
    ok = *serial != NULL;
done:
    sk_X509_pop_free(sk, X509_free);
    return ok;
}

/* The revokeCert request, as the account; once more after re-registering
 * when the CA has forgotten the account. */
static int post_revoke(acme_client *c, const unsigned char *der, size_t len, int reason,
                       cli_err *err)
{
    char *cert64 = acme_b64url(der, len), *payload = NULL;
    acme_resp r = {0};
    int attempt, ok = 0;

    if (cert64 == NULL ||
        asprintf(&payload, "{\"certificate\":\"%s\",\"reason\":%d}", cert64, reason) < 0) {
        payload = NULL;
        cli_err_set(err, "out of memory");
        goto done;
    }
    if (c->revoke_cert == NULL) {
        cli_err_set(err, "the CA's directory has no revokeCert: it does not revoke over ACME");
        goto done;
    }
    for (attempt = 0; attempt < 2 && !ok; attempt++) {
        if (c->account_url == NULL && !acme_account(c, err))
            break;
        ok = acme_post(c, c->account, 0, c->revoke_cert, payload, NULL, "revoking the certificate",
                       &r, err);
        if (ok || !c->account_gone)
            break;
        free(c->account_url);
        c->account_url = NULL;
    }
done:
    acme_resp_clear(&r);
    free(payload);
    free(cert64);
    return ok;
}

static int revoke(cli_globals *g, const char *dir, const char *label, int reason)
{
    acme_state st;
    acme_signer sg = {0};
    acme_client c = {0};
    cli_session s;
    unsigned char *der = NULL;
    size_t len = 0;
    char *path = acme_state_path(dir, label), *serial = NULL;
    int rc, session = 0, ok = 0;
    cli_err err;

    rc = path != NULL ? acme_state_load(path, &st, &err) : 0;
    if (rc <= 0) {
        cli_fail(CMD, "%s",
                 rc < 0         ? "no ACME enrollment of that label is recorded there"
                 : path == NULL ? "out of memory"
                                : err.msg);
        free(path);
        return 0;
    }
    if (!read_leaf(&st, &der, &len, &serial))
        goto done;
    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    if (!acme_client_open(&c, &st, &sg, &err) || !acme_account_key(&s, &st, dir, NULL, &sg, &err) ||
        !post_revoke(&c, der, len, reason, &err)) {
        acme_status_clear();
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    acme_status_clear();
    free(st.revoked_serial);
    st.revoked_serial = strdup(serial);
    free(st.account_url);
    st.account_url = c.account_url != NULL ? strdup(c.account_url) : NULL;
    if (!acme_state_save(dir, &st, &err))
        cli_fail(CMD, "warning: %s", err.msg);
    printf("revoked:     '%s', serial %s (%s), at %s\n", label, serial, reasons[reason],
           st.directory);
    printf("next:        'check --renew' replaces it with a new key and certificate\n");
    ok = 1;
done:
    acme_client_close(&c);
    acme_signer_clear(&sg);
    if (session)
        cli_session_close(&s);
    OPENSSL_free(der);
    free(serial);
    free(path);
    acme_state_clear(&st);
    return ok;
}

int cmd_revoke(cli_globals *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"label", required_argument, NULL, 'l'},
        {"reason", required_argument, NULL, 'r'},
        {"state-dir", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *label = NULL, *dir = NULL;
    int c, reason = 0;

    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        switch (c) {
        case 'l':
            label = optarg;
            break;
        case 'r':
            reason = reason_code(optarg);
            if (reason < 0) {
                cli_fail(CMD,
                         "--reason '%s': expected one of the RFC 5280 reasons (see '%s "
                         "revoke --help')",
                         optarg, CLI_PROGRAM);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'd':
            dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return CLI_EXIT_OK;
        default:
            return cli_usage_error(CMD, argv, c);
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (label == NULL || *label == '\0') {
        cli_fail(CMD, "--label NAME is required: the enrollment whose certificate to revoke");
        return CLI_EXIT_USAGE;
    }
    if (!cli_globals_check(g, CMD))
        return CLI_EXIT_USAGE;
    return revoke(g, acme_state_dir(dir), label, reason) ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}
