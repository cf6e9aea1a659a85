/*
 * mtls-keystore delete: removes the key pair labelled NAME from its token,
 * with its certificates and the CA certificates stored for it (NAME.chain).
 * It lists what it will destroy and asks on the terminal first; without a
 * terminal it refuses unless --yes says so, because a deleted token key
 * cannot be brought back.
 *
 * delete --tpm --handle H evicts a persistent TPM key the same way. A key
 * that is not persistent lives only in its key file: removing the file is
 * deleting it (the TPM keeps nothing of it).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "lifecycle.h"

#define CMD "delete"

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

/* Asks on the terminal ("Delete WHAT? ..."); 1 for yes. */
static int confirm(const char *what)
{
    char line[32];

    fprintf(stderr, "Delete %s? This cannot be undone. [y/N] ", what);
    fflush(stderr);
    if (fgets(line, sizeof(line), stdin) == NULL)
        return 0;
    line[strcspn(line, "\r\n")] = '\0';
    return strcasecmp(line, "y") == 0 || strcasecmp(line, "yes") == 0;
}

static int destroy(cli_session *s, const char *token_uri, const char *label, const char *type,
                   size_t *count)
{
    char *uri = cli_object_uri(token_uri, label, NULL, 0, type);
    size_t n = 0;
    mks_rv rv;

    if (uri == NULL) {
        cli_fail(CMD, "out of memory");
        return 0;
    }
    rv = mks_objects_destroy(s->ks, uri, MKS_OBJ_ANY, &s->pin_ui, &n);
    *count += n;
    if (rv != MKS_OK)
        cli_fail_ks(CMD, rv, "cannot destroy %s (%zu destroyed before)", uri, *count);
    free(uri);
    return rv == MKS_OK;
}

/* delete --tpm --handle H, after the options were checked. */
static int delete_tpm(cli_globals *g, uint32_t handle, int yes)
{
    mks_tpm_persistent *keys = NULL;
    size_t n = 0, i;
    cli_session s;
    char what[64];
    int ret = CLI_EXIT_FAIL;
    mks_rv rv;

    if (!cli_session_open(&s, g, CMD))
        return CLI_EXIT_FAIL;
    rv = mks_tpm_list_persistent(s.ks, &keys, &n);
    if (rv != MKS_OK) {
        cli_session_fail_tpm(&s, rv, "cannot list the TPM's persistent keys");
        goto done;
    }
    for (i = 0; i < n && keys[i].handle != handle; i++)
        ;
    if (i == n) {
        cli_fail(CMD, "no persistent key at 0x%08x in the TPM at %s (see '%s list --tpm')", handle,
                 cli_session_tcti(&s), CLI_PROGRAM);
        goto done;
    }
    if (keys[i].type == MKS_KEY_RSA)
        snprintf(what, sizeof(what), "rsa %d", keys[i].bits);
    else
        snprintf(what, sizeof(what), "ec %s", keys[i].curve);
    fprintf(stderr, "In the TPM at %s:\n  %s  %s\n", cli_session_tcti(&s), keys[i].uri, what);
    snprintf(what, sizeof(what), "the persistent key 0x%08x", handle);
    if (!yes && !confirm(what)) {
        fprintf(stderr, "Nothing deleted.\n");
        goto done;
    }
    rv = mks_tpm_evict(s.ks, handle);
    if (rv != MKS_OK) {
        cli_session_fail_tpm(&s, rv, "cannot remove the persistent key 0x%08x", handle);
        goto done;
    }
    printf("deleted: tpmkey:handle=0x%08x (key files made with it no longer name a key)\n", handle);
    ret = CLI_EXIT_OK;
done:
    free(keys);
    cli_session_close(&s);
    return ret;
}

int cmd_delete(cli_globals *g, int argc, char **argv)
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
    const char *label = NULL, *token = NULL, *handle_arg = NULL;
    char *token_uri = NULL, *chain_label = NULL;
    int tpm = 0;
    uint32_t handle = 0;
    char what[300];
    char token_label[33] = "";
    mks_object *priv = NULL, *pub = NULL, *chain = NULL;
    size_t npriv = 0, npub = 0, nchain = 0, total, destroyed = 0, k;
    int c, yes = 0, session = 0, ret = CLI_EXIT_USAGE;
    cli_session s;
    time_t now = time(NULL);

    opterr = 0;
    while ((c = cli_getopt(argc, argv, ":h", longopts)) != -1) {
        if (cli_globals_opt(g, c, optarg))
            continue;
        switch (c) {
        case OPT_LABEL:
            label = optarg;
            break;
        case OPT_TOKEN:
            token = optarg;
            break;
        case OPT_YES:
            yes = 1;
            break;
        case OPT_TPM:
            tpm = 1;
            break;
        case OPT_HANDLE:
            handle_arg = optarg;
            break;
        case 'h':
            delete_usage(stdout);
            return CLI_EXIT_OK;
        default:
            return cli_usage_error(CMD, argv, c);
        }
    }
    if (optind < argc) {
        cli_fail(CMD, "unexpected argument '%s'", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    if (tpm || handle_arg != NULL) {
        if (!tpm || label != NULL || token != NULL) {
            cli_fail(CMD, "--tpm --handle HANDLE deletes a persistent TPM key; --label and "
                          "--token name token keys");
            return CLI_EXIT_USAGE;
        }
        if (handle_arg == NULL || mks_tpm_parse_handle(handle_arg, &handle) != MKS_OK) {
            cli_fail(CMD,
                     "--tpm needs --handle HANDLE, a persistent handle 0x81000000 to "
                     "0x81FFFFFF (see '%s list --tpm')",
                     CLI_PROGRAM);
            return CLI_EXIT_USAGE;
        }
        snprintf(what, sizeof(what), "the key at 0x%08x", handle);
        if (!cli_globals_check(g, CMD) || !can_ask(yes, what))
            return CLI_EXIT_USAGE;
        return delete_tpm(g, handle, yes);
    }
    if (label == NULL || *label == '\0') {
        cli_fail(CMD, "--label NAME is required: the key pair to delete");
        return CLI_EXIT_USAGE;
    }
    if (token != NULL && *token == '\0') {
        cli_fail(CMD, "--token: empty label");
        return CLI_EXIT_USAGE;
    }
    snprintf(what, sizeof(what), "'%s'", label);
    if (!cli_globals_check(g, CMD) || !can_ask(yes, what))
        return CLI_EXIT_USAGE;

    ret = CLI_EXIT_FAIL;
    chain_label = cli_label_join(label, CLI_SUFFIX_CHAIN);
    if (chain_label == NULL) {
        cli_fail(CMD, "out of memory");
        goto done;
    }
    session = cli_session_open(&s, g, CMD);
    if (!session)
        goto done;
    {
        const char *labels[] = {label};

        if (!cli_find_label_token(&s, labels, 1, MKS_OBJ_ANY, token, &token_uri, token_label))
            goto done;
    }
    /* Private keys on their own: that search logs in, or fails without a PIN,
     * so that no private key is left behind unseen. */
    if (!cli_find_objects(&s, token_uri, label, NULL, 0, "private", MKS_OBJ_PRIVATE_KEY, &priv,
                          &npriv) ||
        !cli_find_objects(&s, token_uri, label, NULL, 0, NULL,
                          MKS_OBJ_PUBLIC_KEY | MKS_OBJ_CERTIFICATE, &pub, &npub) ||
        !cli_find_objects(&s, token_uri, chain_label, NULL, 0, "cert", MKS_OBJ_CERTIFICATE, &chain,
                          &nchain))
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
    if (!yes && !confirm(what)) {
        fprintf(stderr, "Nothing deleted.\n");
        goto done;
    }
    if (!destroy(&s, token_uri, label, NULL, &destroyed) ||
        (nchain > 0 && !destroy(&s, token_uri, chain_label, "cert", &destroyed)))
        goto done;
    printf("deleted: %zu object%s labelled '%s'%s from token '%s'\n", destroyed,
           destroyed == 1 ? "" : "s", label, nchain > 0 ? " (and its chain)" : "", token_label);
    /* What a renewal left beside it is not deleted with it; say so. */
    for (k = 0; k < 2; k++) {
        char *other = cli_label_join(label, k == 0 ? CLI_SUFFIX_NEXT : CLI_SUFFIX_OLD);
        mks_object *objs = NULL;
        size_t n = 0;

        if (other != NULL &&
            cli_find_objects(&s, token_uri, other, NULL, 0, NULL,
                             MKS_OBJ_PUBLIC_KEY | MKS_OBJ_CERTIFICATE, &objs, &n) &&
            n > 0)
            printf("note:    '%s' (%s) is still on the token; '%s delete --label %s' removes "
                   "it\n",
                   other, k == 0 ? "a pending renewal" : "a retired pair", CLI_PROGRAM, other);
        mks_objects_free(objs, n);
        free(other);
    }
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
