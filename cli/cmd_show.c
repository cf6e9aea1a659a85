/*
 * mtls-keystore show: one key pair and what belongs to it: the key's type
 * and URI, its certificate (subject, SANs, issuer, validity, usages), the
 * CA certificates of its chain, and a renewal in progress (NAME.next) or
 * the pair a renewal retired (NAME.old).
 *
 * show --tpm shows a TPM key (show_tpm.c).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>

#include "json.h"
#include "lifecycle.h"
#include "show.h"

static void show_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s show --label NAME [--token LABEL] [--json]\n"
            "       %s show --tpm --key FILE|tpmkey:handle=H [--cert CERT.pem] [--json]\n"
            "\n"
            "Shows the key pair labelled NAME: key type, id and URI; its certificate's\n"
            "subject, subjectAltNames, issuer, serial, validity (days left), key usages\n"
            "and SHA-256 fingerprint; the CA certificates stored with --chain (NAME.chain);\n"
            "a pending renewal (NAME.next) and a retired pair (NAME.old). The private key\n"
            "is shown when a PIN is available; its public key and certificate always.\n"
            "\n"
            "With --tpm, shows a TPM key (its key file or persistent handle): key type,\n"
            "where it lives, whether the file says it has a password, and its public\n"
            "key's SHA-256; with --cert, that certificate too, and whether it certifies\n"
            "this key. A TPM stores no certificates and no labels.\n"
            "\n"
            "  --token LABEL  the token that holds NAME (default: the one that does)\n"
            "  --tpm          show a TPM key (--key, --cert)\n"
            "  --json         one JSON object (fields in mtls-keystore(1))\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM);
}

enum { OPT_LABEL = 0x100, OPT_TOKEN, OPT_JSON, OPT_TPM, OPT_KEY, OPT_CERT };

/* The objects labelled with one label. */
typedef struct group {
    const char *label;
    mks_object *objs;
    size_t n;
} group;

static int by_class(const void *a, const void *b)
{
    const mks_object *x = a, *y = b;

    return ((int)x->cls > (int)y->cls) - ((int)x->cls < (int)y->cls);
}

static int load_group(cli_session *s, const char *token_uri, const char *label, unsigned classes,
                      group *gr)
{
    gr->label = label;
    if (!cli_find_objects(s, token_uri, label, NULL, 0, 0, classes, &gr->objs, &gr->n))
        return 0;
    if (gr->n > 1)
        qsort(gr->objs, gr->n, sizeof(*gr->objs), by_class);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Text                                                                      */

static void print_list(const char *title, const cli_strlist *l)
{
    size_t i;

    if (l->n == 0)
        return;
    printf("    %-11s", title);
    for (i = 0; i < l->n; i++)
        printf("%s%s", i > 0 ? ", " : "", l->v[i]);
    printf("\n");
}

void show_cert_text(const mks_object *o, time_t now, int brief)
{
    cli_cert_info ci;
    cli_err err;

    if (!cli_cert_info_get(o->der, o->der_len, now, &ci, &err)) {
        printf("  %-12s (unreadable: %s)\n", "certificate", err.msg);
        return;
    }
    if (brief) {
        printf("  %-12s %s, expires %s (%lld %s left)\n", "certificate", ci.subject, ci.not_after,
               ci.days_left, cli_days_word(ci.days_left));
        cli_cert_info_clear(&ci);
        return;
    }
    printf("  %-12s %s\n", "certificate", ci.subject);
    printf("    %-11s%s\n", "issuer", ci.issuer);
    printf("    %-11s%s\n", "serial", ci.serial);
    printf("    %-11s%s to %s (%s%lld %s left)\n", "valid", ci.not_before, ci.not_after,
           ci.seconds_left <= 0 ? "EXPIRED, " : "", ci.days_left, cli_days_word(ci.days_left));
    print_list("SANs", &ci.sans);
    print_list("key usage", &ci.key_usage);
    print_list("ext. usage", &ci.ext_key_usage);
    printf("    %-11s%s\n", "sha256", ci.sha256);
    if (o->uri != NULL) /* NULL: read from a file */
        printf("    %-11s%s\n", "uri", o->uri);
    cli_cert_info_clear(&ci);
}

static void print_group_text(const group *gr, time_t now, int brief)
{
    size_t i;
    char desc[32];

    for (i = 0; i < gr->n; i++) {
        const mks_object *o = &gr->objs[i];
        char *id = cli_hex(o->id, o->id_len);

        if (o->cls == MKS_OBJ_CERTIFICATE) {
            show_cert_text(o, now, brief);
        } else {
            printf("  %-12s %s, id %s\n",
                   o->cls == MKS_OBJ_PRIVATE_KEY ? "private key" : "public key",
                   cli_key_desc(o, desc, sizeof(desc)), id != NULL && *id != '\0' ? id : "(none)");
            if (!brief)
                printf("    %-11s%s\n", "uri", o->uri != NULL ? o->uri : "(none)");
        }
        free(id);
    }
}

static void print_text(const group *cur, const group *chain, const group *next, const group *old,
                       const char *token_label, time_t now)
{
    size_t i;
    int have_private = 0;

    printf("%s  (token '%s')\n", cur->label, token_label);
    for (i = 0; i < cur->n; i++)
        have_private |= cur->objs[i].cls == MKS_OBJ_PRIVATE_KEY;
    if (cur->n == 0)
        printf("  (nothing labelled '%s')\n", cur->label);
    print_group_text(cur, now, 0);
    if (!have_private && cur->n > 0)
        printf("  (private key not listed: no PIN available, or none on the token)\n");
    for (i = 0; i < chain->n; i++) {
        cli_cert_info ci;
        cli_err err;

        if (!cli_cert_info_get(chain->objs[i].der, chain->objs[i].der_len, now, &ci, &err))
            continue;
        printf("  %-12s %s, expires %s (%lld %s left)\n", "chain", ci.subject, ci.not_after,
               ci.days_left, cli_days_word(ci.days_left));
        cli_cert_info_clear(&ci);
    }
    if (next->n > 0) {
        printf("renewal pending: '%s' (import its certificate with 'import-cert --label %s')\n",
               next->label, cur->label);
        print_group_text(next, now, 1);
    }
    if (old->n > 0) {
        printf("retired: '%s' (kept for servers that have not reloaded; remove with 'delete "
               "--label %s')\n",
               old->label, old->label);
        print_group_text(old, now, 1);
    }
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */

static void json_object(cli_json *j, const mks_object *o, time_t now)
{
    char *id = cli_hex(o->id, o->id_len);

    cli_json_obj_begin(j, NULL);
    cli_json_string(j, "class", cli_class_name(o->cls));
    cli_json_string(j, "label", o->label != NULL ? o->label : "");
    cli_json_string(j, "id", id != NULL ? id : "");
    cli_json_string(j, "uri", o->uri);
    if (o->cls == MKS_OBJ_CERTIFICATE) {
        cli_cert_info ci;
        cli_err err;

        if (cli_cert_info_get(o->der, o->der_len, now, &ci, &err)) {
            cli_cert_info_json(j, &ci);
            cli_cert_info_clear(&ci);
        } else {
            cli_json_string(j, "error", err.msg);
        }
    } else {
        cli_json_key_type(j, cli_key_type_name(o->key_type), o->curve, o->bits);
    }
    cli_json_obj_end(j);
    free(id);
}

static void json_objects(cli_json *j, const char *key, const group *gr, int certs, time_t now)
{
    size_t i;

    cli_json_arr_begin(j, key);
    for (i = 0; i < gr->n; i++)
        if ((gr->objs[i].cls == MKS_OBJ_CERTIFICATE) == certs)
            json_object(j, &gr->objs[i], now);
    cli_json_arr_end(j);
}

static void json_group(cli_json *j, const char *key, const group *gr, time_t now)
{
    if (gr->n == 0) {
        cli_json_null(j, key);
        return;
    }
    cli_json_obj_begin(j, key);
    cli_json_string(j, "label", gr->label);
    json_objects(j, "keys", gr, 0, now);
    json_objects(j, "certificates", gr, 1, now);
    cli_json_obj_end(j);
}

static void print_json(const group *cur, const group *chain, const group *next, const group *old,
                       const char *token_label, const char *token_uri, time_t now)
{
    cli_json j;

    cli_json_init(&j, stdout);
    cli_json_obj_begin(&j, NULL);
    cli_json_string(&j, "label", cur->label);
    cli_json_string(&j, "token", token_label);
    cli_json_string(&j, "token_uri", token_uri);
    json_objects(&j, "keys", cur, 0, now);
    json_objects(&j, "certificates", cur, 1, now);
    json_objects(&j, "chain", chain, 1, now);
    json_group(&j, "pending", next, now);
    json_group(&j, "retired", old, now);
    cli_json_obj_end(&j);
    cli_json_end(&j);
}

typedef struct show_opts {
    const char *label, *token, *key_arg, *cert_path;
    int json, tpm;
} show_opts;

/* Reads the options into o; 0 with *exit_now when the command ends here. */
static int read_options(cli_globals *g, int argc, char **argv, show_opts *o, int *exit_now)
{
    static const struct option longopts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"json", no_argument, NULL, OPT_JSON},
        {"tpm", no_argument, NULL, OPT_TPM},
        {"key", required_argument, NULL, OPT_KEY},
        {"cert", required_argument, NULL, OPT_CERT},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, show_usage, exit_now)) > 0) {
        switch (c) {
        case OPT_LABEL:
            o->label = optarg;
            break;
        case OPT_TOKEN:
            o->token = optarg;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case OPT_TPM:
            o->tpm = 1;
            break;
        case OPT_KEY:
            o->key_arg = optarg;
            break;
        case OPT_CERT:
            o->cert_path = optarg;
            break;
        }
    }
    if (c == CLI_OPT_EXIT || !cli_no_operands(CMD, argc, argv))
        return 0;
    return 1;
}

/* show of a token key pair, after the options were checked. */
static int show_token(cli_globals *g, const show_opts *o)
{
    char *token_uri = NULL, *next_label = NULL, *old_label = NULL, *chain_label = NULL;
    char token_label[33] = "";
    const char *labels[2];
    group cur = {0}, chain = {0}, next = {0}, old = {0};
    int session = 0, ret = CLI_EXIT_FAIL;
    cli_session s;
    time_t now;

    next_label = cli_label_join(o->label, CLI_SUFFIX_NEXT);
    old_label = cli_label_join(o->label, CLI_SUFFIX_OLD);
    chain_label = cli_label_join(o->label, CLI_SUFFIX_CHAIN);
    if (next_label == NULL || old_label == NULL || chain_label == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    session = cli_session_open(&s, g, CMD);
    labels[0] = o->label;
    labels[1] = next_label;
    if (!session ||
        !cli_find_label_token(&s, labels, 2, MKS_OBJ_ANY, o->token, &token_uri, token_label))
        goto done;
    if (!load_group(&s, token_uri, o->label, MKS_OBJ_ANY, &cur) ||
        !load_group(&s, token_uri, chain_label, MKS_OBJ_CERTIFICATE, &chain) ||
        !load_group(&s, token_uri, next_label, MKS_OBJ_ANY, &next) ||
        !load_group(&s, token_uri, old_label, MKS_OBJ_ANY, &old))
        goto done;
    if (cur.n == 0 && next.n == 0) {
        cli_fail(CMD, "nothing labelled '%s' on token '%s' (see '%s list')", o->label, token_label,
                 CLI_PROGRAM);
        goto done;
    }
    now = time(NULL);
    if (o->json)
        print_json(&cur, &chain, &next, &old, token_label, token_uri, now);
    else
        print_text(&cur, &chain, &next, &old, token_label, now);
    ret = CLI_EXIT_OK;
done:
    mks_objects_free(cur.objs, cur.n);
    mks_objects_free(chain.objs, chain.n);
    mks_objects_free(next.objs, next.n);
    mks_objects_free(old.objs, old.n);
    free(token_uri);
    free(next_label);
    free(old_label);
    free(chain_label);
    if (session)
        cli_session_close(&s);
    return ret;
}

int cmd_show(cli_globals *g, int argc, char **argv)
{
    show_opts o = {0};
    int exit_now;

    if (!read_options(g, argc, argv, &o, &exit_now))
        return exit_now;
    if (o.tpm || o.key_arg != NULL || o.cert_path != NULL) {
        if (!o.tpm || o.label != NULL || o.token != NULL) {
            cli_fail(CMD, "--tpm --key FILE|tpmkey:handle=H [--cert CERT] shows a TPM key; "
                          "--label and --token name token keys");
            return CLI_EXIT_USAGE;
        }
        if (o.key_arg == NULL || *o.key_arg == '\0') {
            cli_fail(CMD, "--tpm needs --key, the TPM key's file or tpmkey:handle=");
            return CLI_EXIT_USAGE;
        }
        if (!cli_globals_check(g, CMD))
            return CLI_EXIT_USAGE;
        return show_tpm(g, o.key_arg, o.cert_path, o.json);
    }
    if (o.label == NULL || *o.label == '\0') {
        cli_fail(CMD, "--label NAME is required");
        return CLI_EXIT_USAGE;
    }
    if (o.token != NULL && *o.token == '\0') {
        cli_fail(CMD, "--token: empty label");
        return CLI_EXIT_USAGE;
    }
    if (!cli_globals_check(g, CMD))
        return CLI_EXIT_USAGE;
    return show_token(g, &o);
}
