/*
 * mtls-keystore check: every certificate on the tokens (and in the files
 * given with --cert) with the days it has left; exit 1 when one expires
 * within --days, 3 when a token, a file or the hook could not be read. Meant for monitoring probes
 * and for the daily mtls-keystore-renew.timer, which runs a renewal hook for each certificate that
 * is due.
 *
 * Certificates are public objects: check needs no PIN and never logs in.
 * The hooks run in check_hook.c.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "acme/acme.h"
#include "check.h"
#include "json.h"
#include "parse.h"

static void check_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s check [--days N] [--token LABEL] [--cert FILE]... [--no-tokens]\n"
            "         [--json | --quiet] [--hook PROGRAM]\n"
            "       %s check --renew [--renew-before 33%%|30d|12h|600s] [--json]\n"
            "         (renews what 'enroll --acme' enrolled; '%s check --renew --help')\n"
            "\n"
            "Lists every certificate on the tokens that can hold keys, and in the files\n"
            "given with --cert, with the days it has left (a day that has begun counts).\n"
            "Retired certificates (labels ending in '.old', kept by import-cert after a\n"
            "renewal) are listed but never fail the check. No PIN is needed.\n"
            "\n"
            "Exit status:\n"
            "  0  every certificate was read and none expires within N days\n"
            "  1  one does (each is named); with --hook: a hook failed\n"
            "  2  usage error\n"
            "  3  a token, a --cert file or the hook could not be read (what could be\n"
            "     read is still listed, and hooks still run); wins over 1\n"
            "\n"
            "  --days N        the warning threshold in days (default 30)\n"
            "  --token LABEL   only this token\n"
            "  --cert FILE     also check the certificates in FILE (PEM or DER; the first\n"
            "                  is the leaf, the rest its chain); repeatable. The CLI keeps\n"
            "                  no record of TPM keys and their certificates: name the\n"
            "                  certificate files of TPM keys (and any other) this way\n"
            "  --no-tokens     check only the --cert files; do not load the PKCS#11 module\n"
            "  --json          one JSON object (fields in mtls-keystore(1))\n"
            "  --quiet         print only the certificates that expire (nothing when none)\n"
            "  --hook PROGRAM  run PROGRAM NAME for each key whose certificate expires\n"
            "                  within N days (not for chain or retired certificates), with\n"
            "                  MTLSKS_LABEL, MTLSKS_TOKEN, MTLSKS_CERT_URI, MTLSKS_CERT_FILE,\n"
            "                  MTLSKS_NOT_AFTER, MTLSKS_DAYS_LEFT and MTLSKS_RENEWAL_PENDING\n"
            "                  in its environment. The exit status is then 0 when every\n"
            "                  hook exited 0 (and everything was read)\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM, CLI_PROGRAM);
}

enum {
    OPT_DAYS = 0x100,
    OPT_TOKEN,
    OPT_CERT,
    OPT_NO_TOKENS,
    OPT_JSON,
    OPT_QUIET,
    OPT_HOOK,
};

static check_entry *entry_add(check_run *r)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        check_entry *v = realloc(r->v, cap * sizeof(*v));

        if (v == NULL)
            return NULL;
        r->v = v;
        r->cap = cap;
    }
    memset(&r->v[r->n], 0, sizeof(r->v[0]));
    return &r->v[r->n++];
}

/* Records a failure: printed at once, listed in --json, and makes the exit 3. */
static void run_error(check_run *r, const char *fmt, ...) CLI_PRINTF(2, 3);
static void run_error(check_run *r, const char *fmt, ...)
{
    char buf[1024];
    char **v;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    cli_fail(CMD, "%s", buf);
    v = realloc(r->errors, (r->nerrors + 1) * sizeof(*v));
    if (v == NULL)
        return;
    r->errors = v;
    if ((v[r->nerrors] = strdup(buf)) != NULL)
        r->nerrors++;
}

static void run_clear(check_run *r)
{
    size_t i;

    for (i = 0; i < r->n; i++) {
        free(r->v[i].token);
        free(r->v[i].token_uri);
        free(r->v[i].label);
        free(r->v[i].uri);
        cli_cert_info_clear(&r->v[i].ci);
    }
    free(r->v);
    for (i = 0; i < r->nerrors; i++)
        free(r->errors[i]);
    free(r->errors);
}

static void set_status(const check_run *r, check_entry *e)
{
    if (e->ci.seconds_left <= 0)
        e->status = ST_EXPIRED;
    else if (e->ci.seconds_left <= (long long)r->days * 86400)
        e->status = ST_EXPIRING;
    else
        e->status = ST_OK;
}

int check_entry_fails(const check_entry *e)
{
    return e->status != ST_OK && e->role != CLI_ROLE_RETIRED;
}

static int by_label(const void *a, const void *b)
{
    const mks_object *x = a, *y = b;

    return strcmp(x->label != NULL ? x->label : "", y->label != NULL ? y->label : "");
}

static void check_token(check_run *r, cli_session *s, const mks_slot_info *si)
{
    mks_object *objs = NULL;
    size_t n = 0, i, k;
    mks_rv rv;

    /* No PIN callback: certificates and public keys are public. */
    rv = mks_objects_find(s->ks, si->token_uri, MKS_OBJ_CERTIFICATE | MKS_OBJ_PUBLIC_KEY, NULL,
                          &objs, &n);
    if (rv != MKS_OK) {
        run_error(r, "cannot list the certificates of token '%s': %s", si->token_label,
                  *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
        return;
    }
    if (n > 1)
        qsort(objs, n, sizeof(*objs), by_label);
    for (i = 0; i < n; i++) {
        const mks_object *o = &objs[i];
        check_entry *e;
        cli_err err;
        char *next;

        if (o->cls != MKS_OBJ_CERTIFICATE)
            continue;
        e = entry_add(r);
        if (e == NULL) {
            run_error(r, "out of memory");
            break;
        }
        e->token = strdup(si->token_label);
        e->token_uri = strdup(si->token_uri);
        e->label = strdup(o->label != NULL ? o->label : "");
        e->uri = o->uri != NULL ? strdup(o->uri) : NULL;
        e->role = cli_label_role(e->label);
        if (!cli_cert_info_get(o->der, o->der_len, r->now, &e->ci, &err)) {
            run_error(r, "certificate '%s' on token '%s': %s", e->label, si->token_label, err.msg);
            free(e->token);
            free(e->token_uri);
            free(e->label);
            free(e->uri);
            r->n--;
            continue;
        }
        set_status(r, e);
        /* The pending key of a renewal shows as its public key NAME.next. */
        next = e->label != NULL ? cli_label_join(e->label, CLI_SUFFIX_NEXT) : NULL;
        for (k = 0; next != NULL && k < n; k++)
            if (objs[k].label != NULL && strcmp(objs[k].label, next) == 0)
                e->pending = 1;
        if (e->role == CLI_ROLE_PENDING)
            e->pending = 1;
        free(next);
    }
    mks_objects_free(objs, n);
}

static void check_tokens(check_run *r, cli_session *s, const char *token)
{
    mks_slot_info *slots = NULL;
    size_t count = 0, i;
    int seen = 0;
    mks_rv rv;

    rv = mks_slots_list(s->ks, &slots, &count);
    if (rv != MKS_OK) {
        run_error(r, "cannot list the slots of %s: %s", cli_session_module(s),
                  *mks_last_error() != '\0' ? mks_last_error() : mks_rv_name(rv));
        return;
    }
    /* Slots in index order, the order 'list' shows. */
    for (int idx = 0; idx < (int)count; idx++) {
        for (i = 0; i < count; i++) {
            if (slots[i].index != idx || slots[i].token_uri == NULL)
                continue;
            if (token != NULL && strcmp(slots[i].token_label, token) != 0)
                continue;
            seen = 1;
            check_token(r, s, &slots[i]);
        }
    }
    if (token != NULL && !seen)
        run_error(r, "no token labelled '%s' that can hold keys in %s", token,
                  cli_session_module(s));
    mks_slots_free(slots, count);
}

static void check_file(check_run *r, const char *path)
{
    STACK_OF(X509) *sk = NULL;
    cli_err err;
    int i;

    if (!cli_read_certs(path, &sk, &err)) {
        run_error(r, "%s", err.msg);
        return;
    }
    for (i = 0; i < sk_X509_num(sk); i++) {
        unsigned char *der = NULL;
        size_t len = 0;
        check_entry *e = entry_add(r);

        if (e == NULL || !cli_x509_der(sk_X509_value(sk, i), &der, &len)) {
            if (e != NULL)
                r->n--;
            run_error(r, "%s: out of memory", path);
            break;
        }
        e->from_file = 1;
        e->file = path;
        e->file_index = i;
        e->role = i == 0 ? CLI_ROLE_CURRENT : CLI_ROLE_CHAIN;
        if (!cli_cert_info_get(der, len, r->now, &e->ci, &err)) {
            r->n--;
            run_error(r, "%s: certificate %d: %s", path, i + 1, err.msg);
        } else {
            set_status(r, e);
        }
        OPENSSL_free(der);
    }
    sk_X509_pop_free(sk, X509_free);
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

static const char *status_name(const check_entry *e)
{
    if (e->role == CLI_ROLE_RETIRED)
        return "retired";
    switch (e->status) {
    case ST_EXPIRING:
        return "expiring";
    case ST_EXPIRED:
        return "expired";
    case ST_OK:
        break;
    }
    return "ok";
}

/* "api" or "/etc/mtls/tpm.pem" or "/etc/mtls/tpm.pem#2" (its chain). */
static void entry_name(const check_entry *e, char *buf, size_t size)
{
    if (!e->from_file)
        snprintf(buf, size, "%s", e->label);
    else if (e->file_index == 0)
        snprintf(buf, size, "%s", e->file);
    else
        snprintf(buf, size, "%s#%d", e->file, e->file_index + 1);
}

static void print_text_entry(const check_entry *e)
{
    char name[1100], where[80];
    const char *st = status_name(e);

    entry_name(e, name, sizeof(name));
    if (e->from_file)
        snprintf(where, sizeof(where), "file");
    else
        snprintf(where, sizeof(where), "token '%s'", e->token);
    printf("%-9s %-20s %5lld %-4s  %s  %s  %s%s\n",
           check_entry_fails(e) ? (e->status == ST_EXPIRED ? "EXPIRED" : "EXPIRING") : st, name,
           e->ci.days_left, cli_days_word(e->ci.days_left), e->ci.not_after, where, e->ci.subject,
           e->pending && e->role != CLI_ROLE_RETIRED ? "  (renewal pending)" : "");
}

static void print_text(const check_run *r, int quiet)
{
    size_t i, k, nfail = 0;
    char name[1100];

    for (i = 0; i < r->n; i++) {
        if (check_entry_fails(&r->v[i]))
            nfail++;
        if (!quiet || check_entry_fails(&r->v[i]))
            print_text_entry(&r->v[i]);
    }
    if (quiet)
        return;
    if (nfail == 0) {
        printf("%s check: OK: %zu certificate%s, none expires within %d %s\n", CLI_PROGRAM, r->n,
               r->n == 1 ? "" : "s", r->days, cli_days_word(r->days));
        return;
    }
    printf("%s check: %zu of %zu certificate%s expire%s within %d %s:", CLI_PROGRAM, nfail, r->n,
           r->n == 1 ? "" : "s", nfail == 1 ? "s" : "", r->days, cli_days_word(r->days));
    for (i = 0, k = 0; i < r->n; i++) {
        if (!check_entry_fails(&r->v[i]))
            continue;
        entry_name(&r->v[i], name, sizeof(name));
        printf("%s %s (%s%s%s, %lld %s)", k++ > 0 ? "," : "", name,
               r->v[i].from_file ? "file" : "token '", r->v[i].from_file ? "" : r->v[i].token,
               r->v[i].from_file ? "" : "'", r->v[i].ci.days_left,
               cli_days_word(r->v[i].ci.days_left));
    }
    printf("\n");
}

static void print_json(const check_run *r)
{
    cli_json j;
    char now[24];
    struct tm tm;
    size_t i, nfail = 0;

    gmtime_r(&r->now, &tm);
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
    for (i = 0; i < r->n; i++)
        nfail += check_entry_fails(&r->v[i]);
    cli_json_init(&j, stdout);
    cli_json_obj_begin(&j, NULL);
    cli_json_int(&j, "days", r->days);
    cli_json_string(&j, "now", now);
    cli_json_bool(&j, "ok", nfail == 0 && r->nerrors == 0);
    cli_json_int(&j, "expiring", (long long)nfail);
    cli_json_arr_begin(&j, "certificates");
    for (i = 0; i < r->n; i++) {
        const check_entry *e = &r->v[i];

        cli_json_obj_begin(&j, NULL);
        cli_json_string(&j, "status", status_name(e));
        cli_json_bool(&j, "fails", check_entry_fails(e));
        cli_json_string(&j, "role", cli_role_name(e->role));
        cli_json_string(&j, "source", e->from_file ? "file" : "token");
        cli_json_string(&j, "token", e->from_file ? NULL : e->token);
        cli_json_string(&j, "label", e->from_file ? NULL : e->label);
        cli_json_string(&j, "uri", e->from_file ? NULL : e->uri);
        cli_json_string(&j, "file", e->from_file ? e->file : NULL);
        cli_json_bool(&j, "renewal_pending", e->pending);
        cli_cert_info_json(&j, &e->ci);
        cli_json_obj_end(&j);
    }
    cli_json_arr_end(&j);
    cli_json_arr_begin(&j, "errors");
    for (i = 0; i < r->nerrors; i++)
        cli_json_string(&j, NULL, r->errors[i]);
    cli_json_arr_end(&j);
    cli_json_obj_end(&j);
    cli_json_end(&j);
}

typedef struct check_opts {
    const char **files; /* --cert, in order */
    size_t nfiles;
    const char *token, *hook;
    int days, json, quiet, no_tokens;
} check_opts;

/* Reads the options into o; 0 with *exit_now when the command ends here. */
static int read_options(cli_globals *g, int argc, char **argv, check_opts *o, int *exit_now)
{
    static const struct option longopts[] = {
        {"days", required_argument, NULL, OPT_DAYS},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"cert", required_argument, NULL, OPT_CERT},
        {"no-tokens", no_argument, NULL, OPT_NO_TOKENS},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"hook", required_argument, NULL, OPT_HOOK},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, check_usage, exit_now)) > 0) {
        switch (c) {
        case OPT_DAYS:
            if (!cli_parse_uint(optarg, &o->days) || o->days > 36500) {
                cli_fail(CMD, "--days '%s': expected a number of days (0 to 36500)", optarg);
                return 0;
            }
            break;
        case OPT_TOKEN:
            o->token = optarg;
            break;
        case OPT_CERT: {
            const char **v = realloc(o->files, (o->nfiles + 1) * sizeof(*v));

            if (v == NULL) {
                cli_fail(CMD, "out of memory");
                *exit_now = CLI_EXIT_FAIL;
                return 0;
            }
            o->files = v;
            o->files[o->nfiles++] = optarg;
            break;
        }
        case OPT_NO_TOKENS:
            o->no_tokens = 1;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case OPT_QUIET:
            o->quiet = 1;
            break;
        case OPT_HOOK:
            o->hook = optarg;
            break;
        }
    }
    if (c == CLI_OPT_EXIT || !cli_no_operands(CMD, argc, argv))
        return 0;
    return 1;
}

/* What the options say together, and a hook that can run; 0 with *exit_now. */
static int check_options(const cli_globals *g, const check_opts *o, int *exit_now)
{
    *exit_now = CLI_EXIT_USAGE;
    if (o->json && o->quiet) {
        cli_fail(CMD, "--json and --quiet do not go together");
        return 0;
    }
    if (o->token != NULL && (*o->token == '\0' || o->no_tokens)) {
        cli_fail(CMD, *o->token == '\0' ? "--token: empty label"
                                        : "--token and --no-tokens do not go together");
        return 0;
    }
    if (o->no_tokens && o->nfiles == 0) {
        cli_fail(CMD, "--no-tokens leaves nothing to check: add --cert FILE");
        return 0;
    }
    if (!cli_globals_check(g, CMD))
        return 0;
    if (o->hook != NULL && o->hook[0] != '/') {
        cli_fail(CMD, "--hook %s: give the program's absolute path", o->hook);
        return 0;
    }
    if (o->hook != NULL && access(o->hook, X_OK) != 0) {
        cli_fail(CMD, "--hook %s: %s", o->hook, strerror(errno));
        *exit_now = CHECK_EXIT_UNREADABLE;
        return 0;
    }
    return 1;
}

/* Reads every certificate, prints them, runs the hooks; the exit status. */
static int run_check(cli_globals *g, const check_opts *o)
{
    check_run r = {.days = o->days};
    size_t i, nfail = 0;
    cli_session s;
    int ret;

    r.now = time(NULL);
    /* The session ends before the hooks run: a hook may use the token itself (renew). */
    if (!o->no_tokens) {
        if (cli_session_open(&s, g, CMD)) {
            check_tokens(&r, &s, o->token);
            cli_session_close(&s);
        } else {
            run_error(&r, "cannot check the tokens");
        }
    }
    for (i = 0; i < o->nfiles; i++)
        check_file(&r, o->files[i]);

    if (o->json)
        print_json(&r);
    else
        print_text(&r, o->quiet);
    fflush(stdout);
    for (i = 0; i < r.n; i++)
        nfail += check_entry_fails(&r.v[i]);
    if (o->hook != NULL)
        ret = check_run_hooks(&r, o->hook) ? CLI_EXIT_OK : CHECK_EXIT_DUE;
    else
        ret = nfail == 0 ? CLI_EXIT_OK : CHECK_EXIT_DUE;
    if (r.nerrors > 0)
        ret = CHECK_EXIT_UNREADABLE;
    run_clear(&r);
    return ret;
}

int cmd_check(cli_globals *g, int argc, char **argv)
{
    check_opts o = {.days = 30};
    int ret;

    if (acme_check_renew_wanted(argc, argv))
        return acme_cmd_check_renew(g, argc, argv);
    if (read_options(g, argc, argv, &o, &ret) && check_options(g, &o, &ret))
        ret = run_check(g, &o);
    free(o.files);
    return ret;
}
