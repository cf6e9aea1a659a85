/*
 * mtls-keystore delete: removes the key pair labelled NAME from its token,
 * with its certificates and the CA certificates stored for it (NAME.chain).
 * It lists what it will destroy and asks on the terminal first; without a
 * terminal it refuses unless --yes says so, because a deleted token key
 * cannot be brought back.
 *
 * delete --tpm --handle H evicts a persistent TPM key the same way
 * (delete_tpm.c).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "delete.h"
#include "lifecycle.h"

static void delete_usage(FILE *f)
{
    fprintf(f,
            "Usage: %s delete --label NAME [--token LABEL] [--yes]\n"
            "       %s delete --tpm --handle HANDLE [--yes]\n"
            "\n"
            "Destroys the private key, public key and certificates labelled NAME on its\n"
            "token, and the CA certificates stored for it (NAME.chain). Lists them and\n"
            "asks for confirmation on the terminal; without a terminal it refuses unless\n"
            "--yes is given. A pending renewal (NAME.next) and a retired pair (NAME.old)\n"
            "are separate: delete them by those labels. The private key cannot be\n"
            "recovered afterwards.\n"
            "\n"
            "With --tpm, removes the persistent TPM key at HANDLE (0x81000000 to\n"
            "0x81FFFFFF, as 'list --tpm' shows them). A TPM key that is not persistent\n"
            "exists only in its key file: delete the file.\n"
            "\n"
            "  --label NAME     the key pair to delete\n"
            "  --token LABEL    the token that holds NAME (default: the one that does)\n"
            "  --tpm            delete a persistent TPM key\n"
            "  --handle HANDLE  its persistent handle\n"
            "  --yes            do not ask\n"
            "\n"
            "Global options (--config, --module, --pin-source, --tcti) are accepted here too.\n",
            CLI_PROGRAM, CLI_PROGRAM);
}

enum { OPT_LABEL = 0x100, OPT_TOKEN, OPT_YES, OPT_TPM, OPT_HANDLE };

static void print_objects(const mks_object *objs, size_t n, time_t now)
{
    size_t i;
    char desc[32];

    for (i = 0; i < n; i++) {
        const mks_object *o = &objs[i];
        char *id = cli_hex(o->id, o->id_len);

        if (o->cls == MKS_OBJ_CERTIFICATE) {
            cli_cert_info ci;
            cli_err err;

            if (cli_cert_info_get(o->der, o->der_len, now, &ci, &err)) {
                fprintf(stderr, "  certificate  '%s'  %s, expires %s\n", o->label, ci.subject,
                        ci.not_after);
                cli_cert_info_clear(&ci);
            } else {
                fprintf(stderr, "  certificate  '%s'  (unreadable)\n", o->label);
            }
        } else {
            fprintf(stderr, "  %-12s '%s'  %s, id %s\n",
                    o->cls == MKS_OBJ_PRIVATE_KEY ? "private key" : "public key", o->label,
                    cli_key_desc(o, desc, sizeof(desc)), id != NULL ? id : "?");
        }
        free(id);
    }
}

/* 1 when --yes was given or there is a terminal to ask on; otherwise says so.
 * Checked before anything is touched. */
static int can_ask(int yes, const char *what)
{
    if (yes || isatty(STDIN_FILENO))
        return 1;
    cli_fail(CMD,
             "standard input is not a terminal, so there is no one to ask: add --yes to delete "
             "%s without confirmation",
             what);
    return 0;
}

int delete_confirm(const char *what)
{
    char line[32];

    fprintf(stderr, "Delete %s? This cannot be undone. [y/N] ", what);
    fflush(stderr);
    if (fgets(line, sizeof(line), stdin) == NULL)
        return 0;
    line[strcspn(line, "\r\n")] = '\0';
    return strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0;
}

static int destroy(cli_session *s, const char *token_uri, const char *label, unsigned type,
                   size_t *count)
{
    char *uri = cli_uri_object(CMD, token_uri, label, NULL, 0, type);
    size_t n = 0;
    mks_rv rv;

    if (uri == NULL)
        return 0;
    rv = mks_objects_destroy(s->ks, uri, MKS_OBJ_ANY, &s->pin_ui, &n);
    *count += n;
    if (rv != MKS_OK)
        cli_fail_ks(CMD, rv, "cannot destroy %s (%zu destroyed before)", uri, *count);
    mks_free(uri);
    return rv == MKS_OK;
}

typedef struct delete_opts {
    const char *label, *token, *handle_arg;
    int yes, tpm;
} delete_opts;

/* Reads the options into o; 0 with *exit_now when the command ends here. */
static int read_options(cli_globals *g, int argc, char **argv, delete_opts *o, int *exit_now)
{
    static const struct option longopts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"yes", no_argument, NULL, OPT_YES},
        {"tpm", no_argument, NULL, OPT_TPM},
        {"handle", required_argument, NULL, OPT_HANDLE},
        {"help", no_argument, NULL, 'h'},
        CLI_GLOBAL_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    int c;

    while ((c = cli_next_opt(g, argc, argv, longopts, CMD, delete_usage, exit_now)) > 0) {
        switch (c) {
        case OPT_LABEL:
            o->label = optarg;
            break;
        case OPT_TOKEN:
            o->token = optarg;
            break;
        case OPT_YES:
            o->yes = 1;
            break;
        case OPT_TPM:
            o->tpm = 1;
            break;
        case OPT_HANDLE:
            o->handle_arg = optarg;
            break;
        }
    }
    if (c == CLI_OPT_EXIT || !cli_no_operands(CMD, argc, argv))
        return 0;
    return 1;
}

/* What a renewal left beside NAME is not deleted with it; says so. */
static void note_renewal_pairs(cli_session *s, const char *token_uri, const char *label)
{
    size_t k;

    for (k = 0; k < 2; k++) {
        char *other = cli_label_join(label, k == 0 ? CLI_SUFFIX_NEXT : CLI_SUFFIX_OLD);
        mks_object *objs = NULL;
        size_t n = 0;

        if (other != NULL &&
            cli_find_objects(s, token_uri, other, NULL, 0, 0,
                             MKS_OBJ_PUBLIC_KEY | MKS_OBJ_CERTIFICATE, &objs, &n) &&
            n > 0)
            printf("note:    '%s' (%s) is still on the token; '%s delete --label %s' removes "
                   "it\n",
                   other, k == 0 ? "a pending renewal" : "a retired pair", CLI_PROGRAM, other);
        mks_objects_free(objs, n);
        free(other);
    }
}

/* delete of a token key pair, after the options were checked. */
static int delete_token(cli_globals *g, const delete_opts *o)
{
    const char *label = o->label;
    const char *labels[] = {o->label};
    char *token_uri = NULL, *chain_label = NULL;
    char what[300];
    char token_label[33] = "";
    mks_object *priv = NULL, *pub = NULL, *chain = NULL;
    size_t npriv = 0, npub = 0, nchain = 0, total, destroyed = 0;
    int session = 0, ret = CLI_EXIT_FAIL;
    cli_session s;
    time_t now = time(NULL);

    chain_label = cli_label_join(label, CLI_SUFFIX_CHAIN);
    if (chain_label == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    session = cli_session_open(&s, g, CMD);
    if (!session ||
        !cli_find_label_token(&s, labels, 1, MKS_OBJ_ANY, o->token, &token_uri, token_label))
        goto done;
    /* Private keys on their own: that search logs in, or fails without a PIN,
     * so that no private key is left behind unseen. */
    if (!cli_find_objects(&s, token_uri, label, NULL, 0, MKS_OBJ_PRIVATE_KEY, MKS_OBJ_PRIVATE_KEY,
                          &priv, &npriv) ||
        !cli_find_objects(&s, token_uri, label, NULL, 0, 0,
                          MKS_OBJ_PUBLIC_KEY | MKS_OBJ_CERTIFICATE, &pub, &npub) ||
        !cli_find_objects(&s, token_uri, chain_label, NULL, 0, MKS_OBJ_CERTIFICATE,
                          MKS_OBJ_CERTIFICATE, &chain, &nchain))
        goto done;
    total = npriv + npub + nchain;
    if (total == 0) {
        cli_fail(CMD, "nothing labelled '%s' on token '%s'", label, token_label);
        goto done;
    }
    fprintf(stderr, "On token '%s':\n", token_label);
    print_objects(priv, npriv, now);
    print_objects(pub, npub, now);
    print_objects(chain, nchain, now);
    snprintf(what, sizeof(what), "these %zu object%s from token '%s'", total, total == 1 ? "" : "s",
             token_label);
    if (!o->yes && !delete_confirm(what)) {
        fprintf(stderr, "Nothing deleted.\n");
        goto done;
    }
    if (!destroy(&s, token_uri, label, 0, &destroyed) ||
        (nchain > 0 && !destroy(&s, token_uri, chain_label, MKS_OBJ_CERTIFICATE, &destroyed)))
        goto done;
    printf("deleted: %zu object%s labelled '%s'%s from token '%s'\n", destroyed,
           destroyed == 1 ? "" : "s", label, nchain > 0 ? " (and its chain)" : "", token_label);
    note_renewal_pairs(&s, token_uri, label);
    ret = CLI_EXIT_OK;
done:
    mks_objects_free(priv, npriv);
    mks_objects_free(pub, npub);
    mks_objects_free(chain, nchain);
    free(token_uri);
    free(chain_label);
    if (session)
        cli_session_close(&s);
    return ret;
}

int cmd_delete(cli_globals *g, int argc, char **argv)
{
    delete_opts o = {0};
    uint32_t handle = 0;
    char what[300];
    int exit_now;

    if (!read_options(g, argc, argv, &o, &exit_now))
        return exit_now;
    if (o.tpm || o.handle_arg != NULL) {
        if (!o.tpm || o.label != NULL || o.token != NULL) {
            cli_fail(CMD, "--tpm --handle HANDLE deletes a persistent TPM key; --label and "
                          "--token name token keys");
            return CLI_EXIT_USAGE;
        }
        if (o.handle_arg == NULL || mks_tpm_parse_handle(o.handle_arg, &handle) != MKS_OK) {
            cli_fail(CMD,
                     "--tpm needs --handle HANDLE, a persistent handle 0x81000000 to "
                     "0x81FFFFFF (see '%s list --tpm')",
                     CLI_PROGRAM);
            return CLI_EXIT_USAGE;
        }
        snprintf(what, sizeof(what), "the key at 0x%08x", handle);
        if (!cli_globals_check(g, CMD) || !can_ask(o.yes, what))
            return CLI_EXIT_USAGE;
        return delete_tpm(g, handle, o.yes);
    }
    if (o.label == NULL || *o.label == '\0') {
        cli_fail(CMD, "--label NAME is required: the key pair to delete");
        return CLI_EXIT_USAGE;
    }
    if (o.token != NULL && *o.token == '\0') {
        cli_fail(CMD, "--token: empty label");
        return CLI_EXIT_USAGE;
    }
    snprintf(what, sizeof(what), "'%s'", o.label);
    if (!cli_globals_check(g, CMD) || !can_ask(o.yes, what))
        return CLI_EXIT_USAGE;
    return delete_token(g, &o);
}
