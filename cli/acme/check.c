/*
 * mtls-keystore check --renew: renews every ACME-enrolled certificate that
 * is due, unattended (the systemd timer runs it). Due: less than a third of
 * its lifetime left, or what --renew-before says (a share of the lifetime,
 * or a time: 30d, 12h, 600s); also a certificate that was revoked or whose
 * --cert-out cannot be read. Each renewal runs in turn with its own
 * keystore session, and one that fails does not stop the others; it is
 * tried again at the next run.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "acme.h"
#include "cli.h"
#include "json.h"
#include "lifecycle.h"

#define CMD "check"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: %s check --renew [--renew-before 33%%|30d|12h|600s] [--label NAME]\n"
            "         [--state-dir DIR] [--json]\n"
            "\n"
            "Renews each certificate that 'enroll --acme' recorded and that is due, as\n"
            "'renew --label NAME' does (a new key, the hand-over, the deploy hook), and\n"
            "reports each one's outcome. Due: less than a third of its lifetime left\n"
            "(default), or less than --renew-before: a share of the lifetime (33%%) or a\n"
            "time (30d, 12h, 600s). A revoked certificate is due at once.\n"
            "\n"
            "Exit status: 0 nothing failed, 1 a renewal failed (the next run tries it again),\n"
            "2 usage error.\n"
            "\n"
            "  --renew-before T  when a certificate is due (default 33%%)\n"
            "  --label NAME      only this enrollment\n"
            "  --state-dir DIR   the enrollments (default: $MTLSKS_STATE_DIR, else %s)\n"
            "  --json            one JSON object: each certificate's outcome\n",
            CLI_PROGRAM, ACME_DEFAULT_STATE_DIR);
}

typedef struct renew_before {
    int percent;       /* 1..100, or 0 */
    long long seconds; /* when percent is 0 */
} renew_before;

static int parse_before(const char *s, renew_before *rb)
{
    char *end;
    long long v = strtoll(s, &end, 10);

    memset(rb, 0, sizeof(*rb));
    if (end == s || v < 0 || end[0] == '\0' || end[1] != '\0')
        return 0;
    switch (*end) {
    case '%':
        if (v < 1 || v > 100)
            return 0;
        rb->percent = (int)v;
        return 1;
    case 'd':
        rb->seconds = v * 86400;
        return v <= 36500;
    case 'h':
        rb->seconds = v * 3600;
        return v <= 876000;
    case 's':
        rb->seconds = v;
        return 1;
    default:
        return 0;
    }
}

typedef struct entry {
    char *label;
    const char *status; /* "renewed", "not-due", "failed" */
    char not_after[24];
    long long seconds_left;
    char reason[96]; /* why it was due */
    acme_renewal res;
} entry;

/* Whether the certificate of a state is due, and why, into e. */
static int due(const acme_state *st, const renew_before *rb, time_t now, entry *e)
{
    STACK_OF(X509) *sk = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    cli_cert_info ci;
    cli_err err;
    long long life, before;
    int is_due = 1;

    if (st->revoked_serial != NULL) {
        snprintf(e->reason, sizeof(e->reason), "revoked");
        return 1;
    }
    if (!cli_read_certs(st->cert_out, &sk, &err) ||
        !cli_x509_der(sk_X509_value(sk, 0), &der, &len) ||
        !cli_cert_info_get(der, len, now, &ci, &err)) {
        snprintf(e->reason, sizeof(e->reason), "%s cannot be read", st->cert_out);
        goto done;
    }
    snprintf(e->not_after, sizeof(e->not_after), "%s", ci.not_after);
    e->seconds_left = ci.seconds_left;
    {
        struct tm a = {0}, b = {0};

        strptime(ci.not_before, "%Y-%m-%dT%H:%M:%SZ", &a);
        strptime(ci.not_after, "%Y-%m-%dT%H:%M:%SZ", &b);
        life = (long long)timegm(&b) - (long long)timegm(&a);
    }
    before = rb->percent > 0 ? life * rb->percent / 100 : rb->seconds;
    is_due = ci.seconds_left <= before;
    if (is_due)
        snprintf(e->reason, sizeof(e->reason), "%lld s left of %lld s", ci.seconds_left, life);
    cli_cert_info_clear(&ci);
done:
    OPENSSL_free(der);
    sk_X509_pop_free(sk, X509_free);
    return is_due;
}

/* Renews e's certificate when it is due; 0 when something failed. */
static int check_one(cli_globals *g, const char *dir, const renew_before *rb, entry *e)
{
    acme_state st;
    cli_err err;
    char *path = acme_state_path(dir, e->label);
    int ok, rc = path != NULL ? acme_state_load(path, &st, &err) : 0;

    free(path);
    e->status = "failed";
    if (rc <= 0) {
        snprintf(e->res.err.msg, sizeof(e->res.err.msg), "%s",
                 path == NULL ? "out of memory" : err.msg);
        cli_fail(CMD, "%s", e->res.err.msg);
        return 0;
    }
    if (!due(&st, rb, time(NULL), e)) {
        e->status = "not-due";
        acme_state_clear(&st);
        return 1;
    }
    acme_state_clear(&st);
    printf("renewing:    '%s' (%s)\n", e->label, e->reason);
    fflush(stdout);
    ok = acme_renew_label(g, CMD, dir, e->label, 0, &e->res);
    /* Renewed but the deploy hook failed: in place, and still a failure. */
    if (e->res.renewed) {
        e->status = "renewed";
        snprintf(e->not_after, sizeof(e->not_after), "%s", e->res.not_after);
    }
    return ok;
}

static void print_json(const entry *v, size_t n, int ok)
{
    cli_json j;
    size_t i;

    cli_json_init(&j, stdout);
    cli_json_obj_begin(&j, NULL);
    cli_json_bool(&j, "ok", ok);
    cli_json_arr_begin(&j, "certificates");
    for (i = 0; i < n; i++) {
        cli_json_obj_begin(&j, NULL);
        cli_json_string(&j, "label", v[i].label);
        cli_json_string(&j, "status", v[i].status);
        cli_json_string(&j, "due_because", v[i].reason[0] != '\0' ? v[i].reason : NULL);
        cli_json_string(&j, "not_after", v[i].not_after[0] != '\0' ? v[i].not_after : NULL);
        cli_json_string(&j, "error", v[i].res.err.msg[0] != '\0' ? v[i].res.err.msg : NULL);
        cli_json_obj_end(&j);
    }
    cli_json_arr_end(&j);
    cli_json_obj_end(&j);
    cli_json_end(&j);
}

static void print_text(const entry *v, size_t n)
{
    size_t i, nren = 0, nfail = 0;

    for (i = 0; i < n; i++) {
        nren += strcmp(v[i].status, "renewed") == 0;
        nfail += strcmp(v[i].status, "failed") == 0;
        printf("%-9s %-20s %s%s\n", strcmp(v[i].status, "failed") == 0 ? "FAILED" : v[i].status,
               v[i].label, v[i].not_after[0] != '\0' ? "until " : "", v[i].not_after);
    }
    printf("%s check --renew: %zu enrollment%s, %zu renewed, %zu failed\n", CLI_PROGRAM, n,
           n == 1 ? "" : "s", nren, nfail);
}

int acme_cmd_check_renew(cli_globals *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"renew", no_argument, NULL, 'r'},
        {"renew-before", required_argument, NULL, 'b'},
        {"label", required_argument, NULL, 'l'},
        {"state-dir", required_argument, NULL, 'd'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    renew_before rb = {33, 0};
    const char *dir = NULL, *only = NULL;
    char **labels = NULL;
    size_t n = 0, i;
    entry *v = NULL;
    int c, json = 0, ok = 1, ret = CLI_EXIT_USAGE, saved_stdout = -1;
    cli_err err;

    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        switch (c) {
        case 'r':
            break;
        case 'b':
            if (!parse_before(optarg, &rb)) {
                cli_fail(CMD,
                         "--renew-before '%s': expected a share of the lifetime (33%%) or "
                         "a time (30d, 12h, 600s)",
                         optarg);
                goto done;
            }
            break;
        case 'l':
            only = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            usage(stdout);
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
    if (!cli_globals_check(g, CMD))
        goto done;
    ret = CLI_EXIT_FAIL;
    dir = acme_state_dir(dir);
    if (!acme_state_list(dir, &labels, &n, &err)) {
        cli_fail(CMD, "%s", err.msg);
        goto done;
    }
    v = calloc(n > 0 ? n : 1, sizeof(*v));
    if (v == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    /* With --json, stdout is the document: what renewals print goes to stderr. */
    fflush(stdout);
    if (json &&
        ((saved_stdout = dup(STDOUT_FILENO)) < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0)) {
        cli_fail(CMD, "cannot set the output aside: %s", strerror(errno));
        goto done;
    }
    for (i = 0; i < n; i++) {
        v[i].label = labels[i];
        v[i].status = "not-due";
        if (only != NULL && strcmp(only, labels[i]) != 0) {
            v[i].status = NULL;
            continue;
        }
        ok &= check_one(g, dir, &rb, &v[i]);
    }
    fflush(stdout);
    if (saved_stdout >= 0) {
        dup2(saved_stdout, STDOUT_FILENO);
        close(saved_stdout);
        saved_stdout = -1;
    }
    {
        size_t k = 0;

        for (i = 0; i < n; i++)
            if (v[i].status != NULL)
                v[k++] = v[i];
        if (only != NULL && k == 0) {
            cli_fail(CMD, "no ACME enrollment '%s' in %s", only, dir);
            ok = 0;
        }
        if (json)
            print_json(v, k, ok);
        else
            print_text(v, k);
    }
    ret = ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
done:
    if (saved_stdout >= 0) {
        fflush(stdout);
        dup2(saved_stdout, STDOUT_FILENO);
        close(saved_stdout);
    }
    free(v);
    acme_strv_free(labels, n);
    return ret;
}
